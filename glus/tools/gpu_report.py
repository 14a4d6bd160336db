"""`glus tools gpu-check`'s markdown table (OUT/gpu.md) from its report (OUT/gpu.json)."""
from __future__ import annotations


def _gib(n) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


def _num(x, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _sig(x) -> str:
    return "-" if x is None else f"{x:.3g}"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def format_report(report: dict) -> str:
    parts = report["parts"]
    recipe = report.get("settings", {}).get("recipe", "")
    lines = [f"# glus tools gpu-check on {report['device']} (torch {report['torch']}), shapes: {report['shapes']}", ""]
    if "train" in parts:
        t = parts["train"]
        lines += [f"## Training: random weights, the settings of {recipe} ({t['strategy']}, {t['precision']})", "",
                  "| s/step | clips/s | expressions/s | model TFLOP/step | achieved TFLOP/s | MFU | peak memory |",
                  "|---|---|---|---|---|---|---|",
                  f"| {_num(t['seconds_per_step'], 3)} | {_num(t['clips_per_s'])} | {_num(t['expressions_per_s'])} | "
                  f"{_sig(t['model_tflop_per_step'])} | {_sig(t['achieved_tflops'])} | "
                  f"{_pct(t['mfu'])} | "
                  f"{_gib(t['peak_memory_bytes'])} |", ""]
    if "infer" in parts:
        i = parts["infer"]
        lines += [f"## Inference: {i['frames']} frames at {i['size'][0]}x{i['size'][1]}, {i['expressions']} "
                  "expressions", "", "| mode | expression-frames/s | peak memory |", "|---|---|---|"]
        lines += [f"| {m} | {_num(i[m]['expression_frames_per_s'])} | {_gib(i[m]['peak_memory_bytes'])} |"
                  for m in ("engine", "faithful")]
        lines += ["", f"Engine speed-up {_num(i['speedup'])}x; masks agree at IoU mean {_num(i['iou_mean'], 4)}, "
                  f"min {_num(i['iou_min'], 4)} (foreground share {_num(i['foreground_share'], 3)}).", ""]
    if "stream" in parts:
        lines += ["## Streaming (the engine, one expression)", "",
                  "| size | frames | frames/s | peak memory after N frames | peak memory at the end | growth |",
                  "|---|---|---|---|---|---|"]
        for label, s in parts["stream"].items():
            lines.append(f"| {label} ({s['size'][0]}x{s['size'][1]}) | {s['frames']} | {_num(s['frames_per_s'])} | "
                         f"{_gib(s['peak_memory_at_mark_bytes'])} (N={s['mark']}) | {_gib(s['peak_memory_bytes'])} | "
                         f"{_num(s['growth'], 3)} |")
        lines.append("")
    if "compile" in parts:
        c = parts["compile"]
        lines += ["## The engine with `glus predict --compile`", "",
                  f"Backend {c['backend']}: {_num(c['expression_frames_per_s'])} expression-frames/s against "
                  f"{_num(c['uncompiled_expression_frames_per_s'])} uncompiled ({_num(c['speedup'])}x), after a "
                  f"first pass of {_num(c['first_pass_seconds'], 1)} s; masks agree with the uncompiled engine at IoU "
                  f"mean {_num(c['iou_mean'], 4)}, min {_num(c['iou_min'], 4)}.", ""]
    for part, error in report["errors"].items():
        lines += [f"**{part} failed**: `{error.strip().splitlines()[-1] if error.strip() else error}`", ""]
    return "\n".join(lines)
