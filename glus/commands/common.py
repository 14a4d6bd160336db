"""What several subcommands share: their argument groups (a model to load, a split, a shard, a prediction
folder) and the model load itself."""
from __future__ import annotations

import argparse
import os

from glus.errors import GlusError


def model_args(p: argparse.ArgumentParser, what: str = "an export folder (written by glus fit: "
               "runs/<recipe>/latest/export) or a released GLUS folder (GLUS-S, GLUS-S-partial, GLUS-A: see "
               "checkpoints/README.md)") -> None:
    p.add_argument("--ckpt", required=True, help=what)
    p.add_argument("--sam-config", default="sam2_hiera_l",
                   help="released folders only: the SAM-2 config they were trained with (published: sam2_hiera_l)")
    p.add_argument("--sam-image-size", type=int, default=1024, help="released folders only: SAM-2 input size")
    p.add_argument("--clip-folder", default=None,
                   help="released folders only: the CLIP tower folder (default: checkpoints/<mm_vision_tower name>)")
    p.add_argument("--device", default="auto", help="auto: cuda:LOCAL_RANK if available, else cpu")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto", help="auto: bf16 on GPU")


def shard_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shard", default=None, help="RANK/WORLD, e.g. 0/4 (default: torchrun's RANK and WORLD_SIZE; "
                   "each rank takes whole videos)")


def split_args(p: argparse.ArgumentParser, data_help: str) -> None:
    from glus.data.formats import SPLIT_NAMES

    p.add_argument("--data", required=True, help=f"{data_help} ({', '.join(SPLIT_NAMES)})")
    p.add_argument("--root", required=True, help="data root holding one folder per dataset")


def prediction_args(p: argparse.ArgumentParser, data_help: str = "the split the predictions are for") -> None:
    p.add_argument("--pred", required=True, help="a prediction folder written by glus predict")
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--root", required=True, help="data root holding one folder per dataset")


def load_for_inference(args, kind: str = "glus"):
    """(model, tokenizer, recipe) on the chosen device; `kind` the model the command needs ("glus" or "selector"),
    so that a selector export given to predict (or a GLUS export to keyframes) is named, not an AttributeError."""
    import torch

    from glus.model.weights.load import load_model

    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(args.device if args.device != "auto" else
                          (f"cuda:{local}" if torch.cuda.is_available() else "cpu"))
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16,
             "auto": torch.bfloat16 if device.type == "cuda" else torch.float32}[args.precision]
    model, tokenizer, recipe = load_model(args.ckpt, sam_config=args.sam_config, sam_image_size=args.sam_image_size,
                                          clip_folder=args.clip_folder, dtype=dtype)
    have = "selector" if hasattr(model, "score_head") else "glus" if hasattr(model, "mllm") else "vos"
    if have != kind:
        what = {"selector": "a key-frame selector export", "glus": "a GLUS model", "vos": "a plain VOS export"}
        use = {"selector": "glus keyframes", "glus": "glus predict / pseudolabel / keyframes-report",
               "vos": "glus vos / vos-eval, or glus predict --mode sparse --vos"}
        need = {"selector": "a key-frame selector export", "glus": "a GLUS export or released folder",
                "vos": "a plain VOS export (glus fit --config recipes/vos*.yaml)"}
        raise GlusError(f"--ckpt {args.ckpt} is {what[have]}: this command needs {need[kind]}. Fix: give it to "
                        f"{use[have]}, or pass the other export here")
    from glus.model.precision import for_inference

    return for_inference(model, device, dtype), tokenizer, recipe


def num_context(recipe: dict) -> int:
    return recipe.get("model", {}).get("init_args", {}).get("num_context", 4)
