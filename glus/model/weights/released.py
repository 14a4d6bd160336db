"""Released GLUS checkpoints (Swindl/GLUS-S, GLUS-S-partial, GLUS-A): load them strictly; write ours in their layout.

A released folder is what the published `merge_lora_weights_and_save_hf_model.py` writes: `GLUSForCausalLM` (a
LLaVA-v1 `LlavaLlamaForCausalLM` subclass) with its LoRA merged, saved by transformers' `save_pretrained` (4.31
writes sharded `pytorch_model-0000x-of-0000y.bin` + `pytorch_model.bin.index.json`; a safetensors conversion with
`model.safetensors.index.json` loads the same way), and the tokenizer. Released key -> our key:

  model.embed_tokens, model.layers.*, model.norm, lm_head     -> mllm.language_model.<same>
  model.mm_projector.{weight,bias}                             -> mllm.projector.0.*
  model.vision_tower.vision_tower.vision_model.<k> (optional)  -> mllm.vision_tower.<k>
  model.visual_model.<k>  (SAM-2: a SAM2Base)                  -> segmenter.sam.<k>
  model.text_hidden_fcs.0.{0,2}.*                              -> text_hidden_fcs.0.{0,2}.*
  model.layers.<i>.self_attn.rotary_emb.inv_freq (optional)    checked against config.json, then dropped

What else a released state dict could hold, read from the published repository (commit 8fd138b):
- No CLIP tower: the merge script keeps only keys without "vision_tower" (merge_lora_weights_and_save_hf_model.py
  line 156) and `inference_iter.py` rebuilds the tower from config.json's `vision_tower`. A tower saved inside
  (as LISA folders may hold) is accepted all the same.
- `model.visual_model` is `build_sam2(sam_config)` of the vendored SAM-2 1.0 (model/GLUS.py line 95), with
  `sam2_hiera_l.yaml` in every published script. Built from the vendored code and from the sam2 1.1.0 package,
  `sam2_hiera_l` has the same 900 state keys with the same shapes: no modified prompt encoder, decoder or memory.
  The folder does not record its SAM-2 config, hence `sam_config` (default "sam2_hiera_l").
- The object-contrastive module of GLUS-S (`ContrastiveLoss`, utils/contrastive_loss.py, created at model/GLUS.py
  line 183) has no parameters or buffers (its bank is a deque, utils/seg_token_bank.py line 8) and the merge script
  does not create it. Nor do `transform` (SAM2Transforms: scripted Resize + Normalize, model/GLUS.py line 174), the
  memory bank (a dict, line 178) or LLaVA's `downsample_layer` (nn.AvgPool1d, model/llava/model/llava_arch.py
  line 37) add state. Anything else in a folder is named as unexpected.
- transformers 4.31 (requirements.txt) may have saved LLaMA's per-layer rotary frequencies (see loading.ROTARY_KEY).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoTokenizer

from glus.model.errors import CheckpointError, format_key_mismatch
from glus.model.build.published import published_glus
from glus.model.glus import GLUS
from glus.model.weights.lisa import (check_rotary, clip_folder_for, file_keys, iter_weights,
                                     language_model_from_config, read_config, rotary_keys, vision_tower_for,
                                     weight_files)
from glus.model.mllm.model import MultimodalLM, VisionLanguageConfig
from glus.model.mllm.tokenizer import SPECIAL_TOKENS, add_glus_tokens

RELEASED_LAYOUT = """expected a released GLUS folder (Swindl/GLUS-S, -S-partial, -A; transformers save_pretrained):
  config.json      LLaMA fields + mm_vision_tower, mm_hidden_size, mm_vision_select_layer, mm_use_im_start_end, out_dim
  tokenizer files  tokenizer.model or tokenizer.json (+ tokenizer_config.json ...), holding [SEG], <im_start>, <im_end>
  weights          pytorch_model-0000x-of-0000y.bin + pytorch_model.bin.index.json, or model-*.safetensors (+ index):
                   model.embed_tokens, model.layers.*, model.norm, lm_head, model.mm_projector.*,
                   model.visual_model.* (SAM-2 Hiera-L), model.text_hidden_fcs.0.{0,2}.*
  CLIP tower       a folder named by mm_vision_tower, e.g. checkpoints/clip-vit-large-patch14 (or pass clip_folder)"""
CLIP_PREFIX = "model.vision_tower.vision_tower."
SAM_PREFIX = "model.visual_model."
SEG_FC_PREFIX = "model.text_hidden_fcs."
SAM2_MARKER = SAM_PREFIX + "sam_mask_decoder."  # LISA's SAM ViT-H names its decoder mask_decoder
SAM1_MARKERS = (SAM_PREFIX + "mask_decoder.", SAM_PREFIX + "prompt_encoder.")
RENAMES = (("mllm.projector.0.", "model.mm_projector."), ("segmenter.sam.", SAM_PREFIX),
           ("text_hidden_fcs.", SEG_FC_PREFIX))
INDEX = {"safetensors": ("model", "model.safetensors.index.json"),  # format -> (file stem, index file)
         "bin": ("pytorch_model", "pytorch_model.bin.index.json")}


# ---- names ------------------------------------------------------------------------------------------------

def released_name(ours: str, clip_inside: bool) -> str | None:
    """The released key of one of our state keys: None for a CLIP key kept outside the folder, "" if it has none."""
    if ours.startswith("mllm.language_model."):
        rest = ours[len("mllm.language_model."):]
        return rest if rest.startswith(("model.", "lm_head.")) else ""
    if ours.startswith("mllm.vision_tower."):
        if not clip_inside:
            return None
        rest = ours[len("mllm.vision_tower."):]  # LISA's naming: transformers 4's CLIPVisionModel.vision_model.*
        return CLIP_PREFIX + (rest if rest.startswith("vision_model.") else "vision_model." + rest)
    for prefix, released in RENAMES:
        if ours.startswith(prefix):
            return released + ours[len(prefix):]
    return ""


def released_names(model: GLUS, clip_inside: bool) -> dict[str, str]:
    """{released key: our key} for every tensor of `model`'s state, generated from its module tree."""
    names, foreign = {}, []
    for ours in model.state_dict():
        name = released_name(ours, clip_inside)
        if name == "":
            foreign.append(ours)
        elif name is not None:
            names[name] = ours
    if foreign:
        lora = any("lora_" in k or "base_layer" in k for k in foreign)
        raise CheckpointError(f"{len(foreign)} tensor(s) of the model have no place in the published layout: "
                              f"{foreign[:10]}" + (" (a LoRA-wrapped LM: merge it first, model.mllm.language_model = "
                                                   "model.mllm.language_model.merge_and_unload())" if lora else ""))
    return names


def weight_keys(folder: Path, check: bool = True) -> dict[str, str]:
    """{key: file} from the index, else from the files' headers (safetensors) or lazily mapped .bin files."""
    files, weight_map = weight_files(folder, RELEASED_LAYOUT, check=check)
    return weight_map if weight_map is not None else {k: f.name for f in files for k in file_keys(f)}


def is_released_folder(path: str | Path) -> bool:
    """A folder with config.json whose weights hold SAM-2 under model.visual_model.* and model.text_hidden_fcs.*
    (LISA-7B-v1 holds SAM ViT-H there instead: not a released GLUS). Reads the index or the files' headers only."""
    folder = Path(path)
    if not (folder / "config.json").is_file():
        return False
    try:
        keys = weight_keys(folder, check=False)
    except (CheckpointError, OSError, RuntimeError, ValueError):
        return False
    return any(k.startswith(SAM2_MARKER) for k in keys) and any(k.startswith(SEG_FC_PREFIX) for k in keys)


# ---- loading ----------------------------------------------------------------------------------------------

def load_released(folder: str | Path, sam_config: str = "sam2_hiera_l", sam_image_size: int = 1024,
                  clip_folder: str | None = None, checkpoints: str | Path = "checkpoints",
                  dtype: torch.dtype = torch.float32):
    """(GLUS in eval mode, tokenizer, info) from a released GLUS folder. Strict: every key of the folder is used and
    every tensor of the model comes from it (the CLIP tower from its own folder when the weights lack it)."""
    folder = Path(folder)
    cfg = read_config(folder, RELEASED_LAYOUT)
    keys = weight_keys(folder)
    _check_is_glus(folder, keys)
    _check_config(folder, cfg)
    tokenizer = _released_tokenizer(folder, cfg)
    clip_inside = any(k.startswith(CLIP_PREFIX) for k in keys)
    vision = vision_tower_for(cfg, folder, clip_folder, checkpoints, clip_inside, RELEASED_LAYOUT)
    lm = _uninitialised_language_model(cfg, dtype)
    vl = VisionLanguageConfig(select_layer=cfg.get("mm_vision_select_layer", -2), projector="linear")
    model = published_glus(MultimodalLM(vision, lm, vl), sam_config, sam_image_size)
    _check_out_dim(folder, cfg, model, sam_config)
    names = released_names(model, clip_inside)
    rotary = set(rotary_keys(keys, lm))
    missing, unexpected = sorted(set(names) - set(keys)), sorted(set(keys) - set(names) - rotary)
    if missing or unexpected:
        raise CheckpointError(format_key_mismatch(f"released GLUS folder {folder}", missing, unexpected)
                              + _sam_hint(missing + unexpected, sam_config) + "\n" + RELEASED_LAYOUT)
    _copy_weights(model, folder, names, lm, sam_config)
    info = {"folder": str(folder), "files": sorted(set(keys.values())), "tensors": len(names),
            "rotary_buffers_checked": len(rotary), "sam_config": sam_config, "sam_image_size": sam_image_size,
            "clip": "inside the folder" if clip_inside else str(clip_folder_for(cfg, clip_folder, Path(checkpoints)))}
    return model.to(dtype).eval(), tokenizer, info


def _uninitialised_language_model(cfg: dict, dtype: torch.dtype):
    """Skips the random init of 7B parameters: every one is overwritten from the folder, and the strict key check
    runs before anything is used (non-persistent buffers such as the rotary frequencies are computed as usual)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        return language_model_from_config(cfg, dtype)


def _check_is_glus(folder: Path, keys) -> None:
    if any(k.startswith(SAM1_MARKERS) for k in keys):
        raise CheckpointError(f"{folder} holds SAM ViT-H ({SAM_PREFIX}mask_decoder.*): a LISA checkpoint, not a "
                              "released GLUS; train GLUS from it (LisaGLUSBuilder) instead")
    for prefix in (SAM2_MARKER, SEG_FC_PREFIX):
        if not any(k.startswith(prefix) for k in keys):
            raise CheckpointError(f"{folder}: no {prefix}* key in its weights: not a released GLUS folder\n"
                                  + RELEASED_LAYOUT)


def _check_config(folder: Path, cfg: dict) -> None:
    """Fields that change what the model computes, where we only implement the published value."""
    published = {"mm_use_im_start_end": True, "mm_vision_select_feature": "patch"}
    for field, value in published.items():
        if cfg.get(field, value) != value:
            raise CheckpointError(f"{folder}/config.json: {field} is {cfg[field]!r}; released GLUS models use "
                                  f"{value!r} and so does our prompt builder")


def _released_tokenizer(folder: Path, cfg: dict):
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{folder}: cannot read its tokenizer ({err})\n{RELEASED_LAYOUT}") from err
    added = add_glus_tokens(tokenizer)
    if added:
        raise CheckpointError(f"{folder}: the tokenizer lacks {tokenizer.convert_ids_to_tokens(added)}; a released "
                              f"GLUS tokenizer holds {list(SPECIAL_TOKENS)} with ids that index the saved embedding "
                              "rows (tokenizer files from another model?)")
    ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    if max(ids) >= cfg.get("vocab_size", 0):
        raise CheckpointError(f"{folder}: token ids {dict(zip(SPECIAL_TOKENS, ids))} do not fit config.json's "
                              f"vocab_size {cfg.get('vocab_size')}")
    return tokenizer


def _check_out_dim(folder: Path, cfg: dict, model: GLUS, sam_config: str) -> None:
    prompt_dim = model.segmenter.sam.sam_prompt_embed_dim
    if cfg.get("out_dim", prompt_dim) != prompt_dim:
        raise CheckpointError(f"{folder}/config.json: out_dim {cfg['out_dim']} (the [SEG] prompt size) but SAM-2 "
                              f"config {sam_config!r} takes {prompt_dim}-d prompts")


def _sam_hint(keys, sam_config: str) -> str:
    if not any(k.startswith(SAM_PREFIX) for k in keys):
        return ""
    return (f"\nSome of them are SAM-2 keys: a released folder does not record its SAM-2 config and this one does not "
            f"match sam_config={sam_config!r}. The published models use 'sam2_hiera_l' (SAM-2.0 Hiera-L, 1024 px).")


def _copy_weights(model: GLUS, folder: Path, names: dict, lm, sam_config: str) -> None:
    """Copy shard by shard (one shard in memory at a time); every shape and rotary buffer is checked."""
    own = model.state_dict()
    problems = []
    with torch.no_grad():
        for path, part in iter_weights(folder, RELEASED_LAYOUT):
            for key, value in part.items():
                if key not in names:  # a rotary buffer (every other key was matched before)
                    problem = check_rotary(key, value, lm)
                    if problem:
                        problems.append(problem)
                    continue
                target = own[names[key]]
                if target.shape != value.shape:
                    problems.append(f"{key} ({path.name}): shape {tuple(value.shape)}, the model's "
                                    f"{names[key]} is {tuple(target.shape)}")
                    continue
                target.copy_(value)
    if problems:
        more = f"\n  ... and {len(problems) - 40} more" if len(problems) > 40 else ""
        raise CheckpointError(f"released GLUS folder {folder}: {len(problems)} tensor(s) do not fit:\n  "
                              + "\n  ".join(problems[:40]) + more
                              + _sam_hint([p.split(" ")[0] for p in problems], sam_config))


# ---- writing ----------------------------------------------------------------------------------------------

def save_released_layout(model: GLUS, tokenizer, folder: str | Path, shards: int = 1, format: str = "safetensors",
                         clip_inside: bool = False, mm_vision_tower: str = "openai/clip-vit-large-patch14",
                         rotary_buffers: bool = False) -> Path:
    """Write `model` as the published code saves GLUS: keys from the model's own state, split into at most `shards`
    files ("bin" or "safetensors") with their index when there are several. `rotary_buffers` adds the per-layer
    rotary frequencies that transformers 4.31 saved. The published code then loads it with --version FOLDER."""
    if format not in INDEX:
        raise ValueError(f"format must be one of {sorted(INDEX)}, got {format!r}")
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} is not empty: write a released layout into a new folder")
    _check_publishable(model)
    names = released_names(model, clip_inside)
    own = model.state_dict()
    state = {name: own[ours] for name, ours in names.items()}
    if rotary_buffers:
        state.update(_rotary_state(model.mllm.base_lm))
    folder.mkdir(parents=True, exist_ok=True)
    _write_shards(state, folder, shards, format)
    (folder / "config.json").write_text(json.dumps(_published_config(model, mm_vision_tower), indent=2, default=str))
    tokenizer.save_pretrained(str(folder))
    return folder


def _check_publishable(model: GLUS) -> None:
    """The published code runs CLIP patch tokens, strip-pooled by 4, through one Linear: nothing else fits."""
    vl = model.mllm.config
    if (vl.pooling, vl.pool, vl.projector, model.mllm.drop_cls) != ("strip", 4, "linear", True):
        raise ValueError(f"the published GLUS runs pooling 'strip', pool 4, a 'linear' projector and drops CLS; this "
                         f"model has {vl.pooling!r}, {vl.pool}, {vl.projector!r}, drop_cls={model.mllm.drop_cls}")


def _rotary_state(lm) -> dict[str, torch.Tensor]:
    inv_freq = next(b for n, b in lm.named_buffers() if n.endswith("rotary_emb.inv_freq"))
    return {f"model.layers.{i}.self_attn.rotary_emb.inv_freq": inv_freq
            for i in range(len(lm.get_decoder().layers))}


def _split(items: list, shards: int) -> list[list]:
    """Consecutive groups of about equal bytes (fewer when one tensor outweighs a share)."""
    if not 1 <= shards <= len(items):
        raise ValueError(f"shards must be between 1 and {len(items)}, got {shards}")
    sizes = [v.numel() * v.element_size() for _, v in items]
    total, done = max(sum(sizes), 1), 0
    groups = [[] for _ in range(shards)]
    for item, size in zip(items, sizes):
        groups[min(shards - 1, done * shards // total)].append(item)
        done += size
    return [g for g in groups if g]


def _write_shards(state: dict, folder: Path, shards: int, format: str) -> None:
    from safetensors.torch import save_file

    stem, index_name = INDEX[format]
    groups = _split(list(state.items()), shards)
    n, weight_map = len(groups), {}
    for i, group in enumerate(groups, 1):
        name = f"{stem}.{format}" if n == 1 else f"{stem}-{i:05d}-of-{n:05d}.{format}"
        tensors = {k: v.detach().cpu().clone().contiguous() for k, v in group}
        if format == "safetensors":
            save_file(tensors, str(folder / name), metadata={"format": "pt"})
        else:
            torch.save(tensors, folder / name)
        weight_map.update(dict.fromkeys(tensors, name))
    if n > 1:
        total = sum(v.numel() * v.element_size() for v in state.values())
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (folder / index_name).write_text(json.dumps(index, indent=2))


def _published_config(model: GLUS, mm_vision_tower: str) -> dict:
    """config.json as GLUSForCausalLM saves it: the LLaMA config plus the LLaVA and GLUS fields it reads."""
    mllm = model.mllm
    cfg = mllm.lm_config.to_dict()
    cfg.update(architectures=["GLUSForCausalLM"], model_type="llava", mm_vision_tower=mm_vision_tower,
               vision_tower=mm_vision_tower, mm_hidden_size=mllm.vision_tower.config.hidden_size,
               mm_vision_select_layer=mllm.config.select_layer, mm_vision_select_feature="patch",
               mm_use_im_start_end=True, mm_use_im_patch_token=False, image_aspect_ratio="square",
               out_dim=model.segmenter.sam.sam_prompt_embed_dim, train_mask_decoder=True, use_cache=False)
    return cfg
