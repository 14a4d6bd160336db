"""Loading multimodal LMs from local folders, strictly: every checkpoint key is used or named.

Supported folders (see checkpoints/README.md):
- LISA-7B-v1 as published: a LLaVA-v1 `LlavaLlamaForCausalLM` subclass saved with `save_pretrained`
  (keys model.embed_tokens / model.layers.* / model.norm / lm_head, model.mm_projector.*, optionally
  model.vision_tower.vision_tower.vision_model.*, model.visual_model.* (SAM ViT-H: ignored, GLUS uses SAM-2),
  model.text_hidden_fcs.0.{0,2}.*); the CLIP tower, when not saved inside, comes from `mm_vision_tower`.
- LLaVA-1.5 in transformers' layout (`LlavaForConditionalGeneration`, old and new key names).
Released GLUS folders (SAM-2 under model.visual_model.*) are loaded by glus.model.weights.released.

Weights: one file or shards with their index (`model.safetensors.index.json`, `pytorch_model.bin.index.json`);
every shard the index lists must exist and hold exactly the keys the index assigns to it.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPVisionConfig, CLIPVisionModel, LlamaConfig

from glus.model.errors import CheckpointError, format_key_mismatch, load_strict
from glus.model.mllm.model import MultimodalLM, VisionLanguageConfig
from glus.model.mllm.tokenizer import add_glus_tokens

LISA_LAYOUT = """expected a LISA-7B-v1 folder (HF format, LLaVA-v1 layout):
  config.json               LLaMA fields + mm_vision_tower, mm_hidden_size, mm_vision_select_layer, mm_use_im_start_end
  tokenizer files           tokenizer.json or tokenizer.model (+ tokenizer_config.json, special_tokens_map.json)
  weights                   model.safetensors, model-*-of-*.safetensors (+ index), or pytorch_model*.bin
  CLIP tower                inside the weights (model.vision_tower.vision_tower.vision_model.*) or a folder named by
                            mm_vision_tower, e.g. checkpoints/clip-vit-large-patch14 (transformers CLIPVisionModel)"""
IGNORED_PREFIXES = ("model.visual_model.",)  # LISA's SAM ViT-H: GLUS replaces it by SAM-2
# transformers <= 4.31 (LISA's and GLUS' pinned version) saved LLaMA's rotary frequencies in every layer; newer
# versions compute them from the config. Such keys are checked against our values, then dropped.
ROTARY_KEY = re.compile(r"^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$")

INDEX_FILES = {".safetensors": "model.safetensors.index.json", ".bin": "pytorch_model.bin.index.json"}
SHARD_NAME = re.compile(r"-(\d+)-of-(\d+)\.(?:safetensors|bin)$")


def weight_files(folder: Path, layout: str = LISA_LAYOUT, check: bool = True) -> tuple[list[Path], dict | None]:
    """The weight files of a transformers folder and, when it has an index, the index's weight_map
    ({key: file}). safetensors first, then pytorch_model*.bin; with `check`, every shard must be present."""
    for suffix, pattern in ((".safetensors", "*.safetensors"), (".bin", "pytorch_model*.bin")):
        index = folder / INDEX_FILES[suffix]
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError, TypeError) as err:
                raise CheckpointError(f"{index} is not a transformers index ({{\"weight_map\": {{key: file}}}}): "
                                      f"{err!r}") from err
            files = [folder / name for name in sorted(set(weight_map.values()))]
            absent = [f.name for f in files if not f.is_file()]
            if check and absent:
                raise CheckpointError(f"{index} names shard file(s) missing from {folder}: {absent} "
                                      "(download every file the index lists)")
            return files, weight_map
        files = sorted(folder.glob(pattern))
        if files:
            if check:
                _check_shard_series(files)
            return files, None
    raise CheckpointError(f"no weight files in {folder}\n{layout}")


def _check_shard_series(files: list[Path]) -> None:
    """Shards named like model-00001-of-00003.safetensors without an index: every number must be there."""
    series = [SHARD_NAME.search(f.name) for f in files]
    if not any(series):
        return
    total = int(next(m for m in series if m).group(2))
    found = {int(m.group(1)) for m in series if m}
    absent = sorted(set(range(1, total + 1)) - found)
    if absent:
        raise CheckpointError(f"{files[0].parent}: shard(s) {absent} of {total} are missing "
                              f"(found {[f.name for f in files]})")


def read_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # the pre-1.6 (non-zip) format cannot be memory-mapped
        return torch.load(path, map_location="cpu", weights_only=True)


def file_keys(path: Path) -> list[str]:
    """The tensor names of one weight file; safetensors and zip-format .bin files are not read in full."""
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    return list(read_file(path))


def check_shard(path: Path, keys, weight_map: dict | None) -> None:
    """A shard must hold exactly the keys its index assigns to it."""
    if weight_map is None:
        return
    listed = {k for k, name in weight_map.items() if name == path.name}
    absent, unlisted = sorted(listed - set(keys)), sorted(set(keys) - listed)
    if absent or unlisted:
        raise CheckpointError(format_key_mismatch(f"{path} against its index", absent, unlisted)
                              + "\n(the shard and the index file come from different saves: download both again)")


def iter_weights(folder: Path, layout: str = LISA_LAYOUT):
    """(file, {key: tensor}) per weight file, each checked against the index: one shard in memory at a time."""
    files, weight_map = weight_files(folder, layout)
    for path in files:
        part = read_file(path)
        check_shard(path, part, weight_map)
        yield path, part


def read_weights(folder: Path, layout: str = LISA_LAYOUT) -> dict[str, torch.Tensor]:
    state = {}
    for _, part in iter_weights(folder, layout):
        state.update(part)
    return state


def read_config(folder: Path, layout: str = LISA_LAYOUT) -> dict:
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {folder}\n{layout}")
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing\n{layout}")
    return json.loads(path.read_text())


def clip_folder_for(cfg: dict, clip_folder: str | None, checkpoints: Path) -> Path:
    if clip_folder:
        return Path(clip_folder)
    name = cfg.get("mm_vision_tower") or "openai/clip-vit-large-patch14"
    return Path(name) if Path(name).is_dir() else checkpoints / Path(name).name


def normalize_vision_keys(state: dict, module) -> dict:
    """Checkpoints name CLIP weights `vision_model.*`; transformers 5 modules drop that level."""
    own = set(module.state_dict())
    return {(k[len("vision_model."):] if k not in own and k.startswith("vision_model.") else k): v
            for k, v in state.items()}


def split_lisa_state(state: dict) -> tuple[dict, dict, dict, list[str]]:
    """LISA keys -> (MultimodalLM keys, CLIP-tower keys, text_hidden_fcs keys, unexpected keys)."""
    ours, clip, seg_fc, unexpected = {}, {}, {}, []
    for key, value in state.items():
        if key.startswith(IGNORED_PREFIXES):
            continue
        if key.startswith("model.mm_projector."):
            ours["projector.0." + key[len("model.mm_projector."):]] = value
        elif key.startswith("model.vision_tower.vision_tower."):
            clip[key[len("model.vision_tower.vision_tower."):]] = value
        elif key.startswith("model.text_hidden_fcs."):
            seg_fc[key[len("model."):]] = value
        elif key.startswith("model.") or key == "lm_head.weight":
            ours["language_model." + key] = value
        else:
            unexpected.append(key)
    return ours, clip, seg_fc, unexpected


def rotary_keys(keys, lm) -> list[str]:
    """The saved per-layer rotary frequencies among `keys` that `lm` does not hold as state (see ROTARY_KEY)."""
    own = set(lm.state_dict())
    return [k for k in keys if ROTARY_KEY.match(k) and k not in own]


def check_rotary(key: str, value: torch.Tensor, lm) -> str | None:
    """None when a saved rotary frequency vector equals `lm`'s (to the precision it was saved in), else why not."""
    ours = next((b for n, b in lm.named_buffers() if n.endswith("rotary_emb.inv_freq")), None)
    if ours is None or ours.shape != value.shape:
        return f"{key}: shape {tuple(value.shape)}, the model's is {None if ours is None else tuple(ours.shape)}"
    tol = 1e-6 if value.dtype == torch.float32 else 1e-2
    if not torch.allclose(value.float(), ours.float().cpu(), rtol=tol, atol=0):
        return f"{key}: differs from the frequencies of config.json's rope_theta (rope scaling in the checkpoint?)"
    return None


def vision_tower_for(cfg: dict, folder: Path, clip_folder: str | None, checkpoints: str | Path,
                     weights_inside: bool, layout: str = LISA_LAYOUT) -> CLIPVisionModel:
    """The CLIP tower of a LLaVA-v1-layout folder: its config from the CLIP folder, and its weights from there too
    unless the checkpoint holds them (`weights_inside`: the caller loads them, the tower is returned initialised)."""
    clip_dir = clip_folder_for(cfg, clip_folder, Path(checkpoints))
    if weights_inside:
        if not (clip_dir / "config.json").is_file():
            raise CheckpointError(f"the CLIP tower's weights are in {folder} but its config is not: expected "
                                  f"{clip_dir}/config.json (set clip_folder)\n{layout}")
        return CLIPVisionModel(CLIPVisionConfig.from_pretrained(str(clip_dir)))
    if not clip_dir.is_dir():
        raise CheckpointError(f"CLIP tower folder not found: {clip_dir} (config.json's mm_vision_tower is "
                              f"{cfg.get('mm_vision_tower')!r}; set clip_folder)\n{layout}")
    return CLIPVisionModel.from_pretrained(str(clip_dir), local_files_only=True)


def language_model_from_config(cfg: dict, dtype: torch.dtype | None = None):
    """The LLaMA of a LLaVA-v1-layout config.json (its LLaVA fields are ignored), initialised, not loaded."""
    llama_cfg = LlamaConfig.from_dict({k: v for k, v in cfg.items() if k not in ("architectures", "model_type")})
    return AutoModelForCausalLM.from_config(llama_cfg, **({"dtype": dtype} if dtype is not None else {}))


def load_lisa(folder: str | Path, clip_folder: str | None = None, checkpoints: str | Path = "checkpoints",
              vl: VisionLanguageConfig | None = None, dtype: torch.dtype = torch.float32):
    """(MultimodalLM, tokenizer, text_hidden_fcs state) from a LISA-7B-v1-layout folder."""
    folder = Path(folder)
    cfg = read_config(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    add_glus_tokens(tokenizer)
    ours, clip_state, seg_fc, unexpected = split_lisa_state(read_weights(folder))
    if unexpected:
        raise CheckpointError(f"{folder}: {len(unexpected)} unexpected key(s): {sorted(unexpected)[:20]}")
    vision = vision_tower_for(cfg, folder, clip_folder, checkpoints, weights_inside=bool(clip_state))
    if clip_state:
        load_strict(vision, normalize_vision_keys(clip_state, vision), f"CLIP tower in {folder}")
    lm = language_model_from_config(cfg)
    vl = vl or VisionLanguageConfig(select_layer=cfg.get("mm_vision_select_layer", -2), projector="linear")
    lm_keys = [k[len("language_model."):] for k in ours if k.startswith("language_model.")]
    for key in rotary_keys(lm_keys, lm):
        problem = check_rotary(key, ours.pop("language_model." + key), lm)
        if problem:
            raise CheckpointError(f"{folder}: {problem}")
    mllm = MultimodalLM(vision, lm, vl)
    # the vision tower is loaded above; everything else of ours must come from the checkpoint, exactly
    expected = {k: v for k, v in mllm.state_dict().items() if not k.startswith("vision_tower.")}
    missing = sorted(set(expected) - set(ours))
    extra = sorted(set(ours) - set(expected))
    if missing or extra:
        raise CheckpointError(format_key_mismatch(f"LISA checkpoint {folder}", missing, extra) + "\n" + LISA_LAYOUT)
    mllm.load_state_dict({**ours, **{k: v for k, v in mllm.state_dict().items() if k.startswith("vision_tower.")}},
                         strict=True)
    return mllm.to(dtype), tokenizer, seg_fc


def save_lisa_layout(mllm: MultimodalLM, tokenizer, folder: str | Path, seg_fc: dict | None = None,
                     clip_inside: bool = True, mm_vision_tower: str = "openai/clip-vit-large-patch14") -> None:
    """Write a folder in LISA-7B-v1's key layout (used by tests, and to hand a model to LISA's own code)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {}
    for key, value in mllm.state_dict().items():
        if key.startswith("language_model."):
            state[key[len("language_model."):]] = value
        elif key.startswith("projector.0."):
            state["model.mm_projector." + key[len("projector.0."):]] = value
        elif key.startswith("vision_tower.") and clip_inside:
            # LISA's own naming (transformers 4: CLIPVisionModel.vision_model.*)
            state["model.vision_tower.vision_tower.vision_model." + key[len("vision_tower."):]] = value
    for key, value in (seg_fc or {}).items():
        state["model." + key] = value
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    cfg = mllm.lm_config.to_dict()
    cfg.update(architectures=["LISAForCausalLM"], mm_vision_tower=mm_vision_tower,
               mm_vision_select_layer=mllm.config.select_layer,
               mm_hidden_size=mllm.vision_tower.config.hidden_size, mm_use_im_start_end=True, out_dim=256)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
    tokenizer.save_pretrained(str(folder))


LLAVA_RENAMES = (  # transformers' LlavaForConditionalGeneration, new (5.x) and old (4.x) key names -> ours
    ("model.language_model.", "language_model.model."), ("language_model.model.", "language_model.model."),
    ("language_model.lm_head.", "language_model.lm_head."), ("lm_head.", "language_model.lm_head."),
    ("model.vision_tower.", "vision_tower."), ("vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.linear_1.", "projector.0."), ("multi_modal_projector.linear_1.", "projector.0."),
    ("model.multi_modal_projector.linear_2.", "projector.2."), ("multi_modal_projector.linear_2.", "projector.2."),
)


def load_llava(folder: str | Path, vl: VisionLanguageConfig | None = None, dtype: torch.dtype = torch.float32):
    """(MultimodalLM, tokenizer) from a LLaVA-1.5 folder in transformers' layout. GLUS' tokens are added
    after loading (the embedding matrix grows by their rows)."""
    from transformers import AutoModel, LlavaConfig

    folder = Path(folder)
    read_config(folder)
    cfg = LlavaConfig.from_pretrained(str(folder))
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    vision = AutoModel.from_config(cfg.vision_config)
    lm = AutoModelForCausalLM.from_config(cfg.text_config)
    if cfg.vision_feature_select_strategy not in ("default", "full"):
        raise CheckpointError(f"{folder}: vision_feature_select_strategy {cfg.vision_feature_select_strategy!r}")
    vl = vl or VisionLanguageConfig(select_layer=cfg.vision_feature_layer, projector="mlp2x_gelu", pooling="2x2",
                                    drop_cls=cfg.vision_feature_select_strategy == "default")
    mllm = MultimodalLM(vision, lm, vl)
    ours, unexpected = {}, []
    for key, value in read_weights(folder).items():
        for old, new in LLAVA_RENAMES:
            if key.startswith(old):
                ours[new + key[len(old):]] = value
                break
        else:
            unexpected.append(key)
    vision_part = normalize_vision_keys({k[len("vision_tower."):]: v for k, v in ours.items()
                                         if k.startswith("vision_tower.")}, vision)
    ours = {k: v for k, v in ours.items() if not k.startswith("vision_tower.")}
    ours.update({"vision_tower." + k: v for k, v in vision_part.items()})
    if unexpected:
        raise CheckpointError(f"{folder}: {len(unexpected)} unexpected key(s): {sorted(unexpected)[:20]}")
    load_strict(mllm, ours, f"LLaVA checkpoint {folder}")
    new_ids = add_glus_tokens(tokenizer)
    if new_ids:
        mllm.base_lm.resize_token_embeddings(len(tokenizer))
    return mllm.to(dtype), tokenizer
