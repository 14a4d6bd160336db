"""Loading multimodal LMs from local folders, strictly: every checkpoint key is used or named.

Supported folders (see checkpoints/README.md):
- LISA-7B-v1 as published: a LLaVA-v1 `LlavaLlamaForCausalLM` subclass saved with `save_pretrained`
  (keys model.embed_tokens / model.layers.* / model.norm / lm_head, model.mm_projector.*, optionally
  model.vision_tower.vision_tower.vision_model.*, model.visual_model.* (SAM ViT-H: ignored, GLUS uses SAM-2),
  model.text_hidden_fcs.0.{0,2}.*); the CLIP tower, when not saved inside, comes from `mm_vision_tower`.
- LLaVA-1.5 in transformers' layout (`LlavaForConditionalGeneration`, old and new key names).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPVisionConfig, CLIPVisionModel, LlamaConfig

from glus.model.errors import CheckpointError, load_strict
from glus.model.mllm.model import MultimodalLM, VisionLanguageConfig
from glus.model.mllm.tokenizer import add_glus_tokens

LISA_LAYOUT = """expected a LISA-7B-v1 folder (HF format, LLaVA-v1 layout):
  config.json               LLaMA fields + mm_vision_tower, mm_hidden_size, mm_vision_select_layer, mm_use_im_start_end
  tokenizer files           tokenizer.json or tokenizer.model (+ tokenizer_config.json, special_tokens_map.json)
  weights                   model.safetensors, model-*-of-*.safetensors (+ index), or pytorch_model*.bin
  CLIP tower                inside the weights (model.vision_tower.vision_tower.vision_model.*) or a folder named by
                            mm_vision_tower, e.g. checkpoints/clip-vit-large-patch14 (transformers CLIPVisionModel)"""
IGNORED_PREFIXES = ("model.visual_model.",)  # LISA's SAM ViT-H: GLUS replaces it by SAM-2


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise CheckpointError(f"no weight files in {folder}\n{LISA_LAYOUT}")
    state = {}
    for f in files:
        state.update(load_file(str(f)) if f.suffix == ".safetensors"
                     else torch.load(f, map_location="cpu", weights_only=True))
    return state


def _read_config(folder: Path) -> dict:
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {folder}\n{LISA_LAYOUT}")
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing\n{LISA_LAYOUT}")
    return json.loads(path.read_text())


def _clip_folder(cfg: dict, clip_folder: str | None, checkpoints: Path) -> Path:
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


def load_lisa(folder: str | Path, clip_folder: str | None = None, checkpoints: str | Path = "checkpoints",
              vl: VisionLanguageConfig | None = None, dtype: torch.dtype = torch.float32):
    """(MultimodalLM, tokenizer, text_hidden_fcs state) from a LISA-7B-v1-layout folder."""
    folder = Path(folder)
    cfg = _read_config(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    add_glus_tokens(tokenizer)
    ours, clip_state, seg_fc, unexpected = split_lisa_state(read_weights(folder))
    if unexpected:
        raise CheckpointError(f"{folder}: {len(unexpected)} unexpected key(s): {sorted(unexpected)[:20]}")
    clip_dir = _clip_folder(cfg, clip_folder, Path(checkpoints))
    if clip_state:
        if not (clip_dir / "config.json").is_file():
            raise CheckpointError(f"the CLIP tower's weights are in {folder} but its config is not: expected "
                                  f"{clip_dir}/config.json (set clip_folder)\n{LISA_LAYOUT}")
        vision = CLIPVisionModel(CLIPVisionConfig.from_pretrained(str(clip_dir)))
        load_strict(vision, normalize_vision_keys(clip_state, vision), f"CLIP tower in {folder}")
    else:
        if not clip_dir.is_dir():
            raise CheckpointError(f"CLIP tower folder not found: {clip_dir}\n{LISA_LAYOUT}")
        vision = CLIPVisionModel.from_pretrained(str(clip_dir), local_files_only=True)
    llama_cfg = LlamaConfig.from_dict({k: v for k, v in cfg.items() if k not in ("architectures", "model_type")})
    lm = AutoModelForCausalLM.from_config(llama_cfg)
    vl = vl or VisionLanguageConfig(select_layer=cfg.get("mm_vision_select_layer", -2), projector="linear")
    mllm = MultimodalLM(vision, lm, vl)
    # the vision tower is loaded above; everything else of ours must come from the checkpoint, exactly
    expected = {k: v for k, v in mllm.state_dict().items() if not k.startswith("vision_tower.")}
    missing = sorted(set(expected) - set(ours))
    extra = sorted(set(ours) - set(expected))
    if missing or extra:
        from glus.model.errors import format_key_mismatch

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
    _read_config(folder)
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
