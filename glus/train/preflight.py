"""Check a recipe's inputs before any heavy work: one message lists every missing path and where it comes from."""
from __future__ import annotations

from pathlib import Path

from glus.errors import MissingInputs  # raised here, defined with the other errors (glus.eval uses it too)

DATA_HOW = {
    "mevis": "download MeViS by hand (data_prep/README.md), or `glus data synth --out ROOT` for synthetic data",
    "mevis2": "download MeViS v2 by hand (data_prep/README.md)",
    "refytvos": "download Ref-YouTube-VOS by hand (data_prep/README.md)",
    "refdavis": "convert Ref-DAVIS-17 to the Ref-YouTube-VOS layout (data_prep/README.md)",
    "revos": "download ReVOS by hand (data_prep/README.md)",
    "lvvis": "convert LV-VIS to the meta_expressions / mask_dict form (data_prep/README.md)",
    "reasonvos": "download ReasonVOS by hand (data_prep/README.md)",
}


def required_inputs(config: dict) -> list[tuple[str, str]]:
    """(path, how to get it) from a fit config (LightningCLI's dict form)."""
    from glus.data.formats import parse_split
    from glus.model.build.tiny import STAGE_TARGETS, stage_hint

    out = []
    builder = config.get("model", {}).get("init_args", {}).get("builder", {})
    paths = builder.get("init_args", {}) if isinstance(builder, dict) else {}
    how_w = "put it in place by hand: see checkpoints/README.md"
    for key in ("lisa_folder", "sam_checkpoint", "clip_folder"):
        if paths.get(key):
            out.append((paths[key], how_w))
    if paths.get("init_from"):  # the key-frame selector from a GLUS export, the VOS path from the segmenter stage
        hint = STAGE_TARGETS.get(Path(paths["init_from"]).name, "make train (the synthetic GLUS export)")
        out.append((paths["init_from"], hint))
    for key in ("segmenter_init", "mllm_init"):  # the tiny GLUS starts from the stages' exports
        if paths.get(key):
            out.append((paths[key], stage_hint(paths[key])))
    data = config.get("data", {}).get("init_args", {})
    if data.get("labels"):  # the key-frame selector's pseudo-labels
        out.append((data["labels"], "run `glus pseudolabel ...` first (make pseudolabel)"))
        if data.get("root"):
            out.append((data["root"], "the data root the pseudo-labels were made from (data_prep/README.md, or "
                                      "`glus data synth --out ROOT` for synthetic data)"))
    # the VOS data: one split, or streamed scenes (no data read)
    splits = list(data.get("mix") or {}) + ([data["split"]] if data.get("split") and not data.get("stream") else [])
    for split in splits:
        fmt, _ = parse_split(split)
        out.append((str(Path(data["root"]) / fmt), DATA_HOW[fmt]))
    evaluation = config.get("model", {}).get("init_args", {}).get("evaluation") or {}
    if evaluation.get("root") and evaluation.get("split"):
        fmt, _ = parse_split(evaluation["split"])
        out.append((str(Path(evaluation["root"]) / fmt), DATA_HOW[fmt]))
    return out


def check_inputs(config: dict) -> None:
    missing = [(p, how) for p, how in dict.fromkeys(required_inputs(config)) if not Path(p).exists()]
    if missing:
        lines = [f"  {p}\n      -> {how}" for p, how in missing]
        raise MissingInputs(f"{len(missing)} input(s) of this recipe are missing:\n" + "\n".join(lines))
