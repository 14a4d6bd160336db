"""Side-by-side figures of a run and its blank-text control (language must matter)."""
from __future__ import annotations

import json
from pathlib import Path

from glus.eval.metrics import aggregate_mean, by_kind  # noqa: F401 (by_kind: re-exported)
from glus.io import atomic_write_json
from glus.train.preflight import MissingInputs


def read_metrics(run_dir: Path) -> dict:
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise MissingInputs(f"{path} not found: pass folders of runs that finished (e.g. runs/synthetic/latest; "
                            "glus fit writes metrics.json after its final evaluation)")
    return json.loads(path.read_text())


def merge_control(run_dir: str | Path, control_dir: str | Path) -> dict:
    run_dir, control_dir = Path(run_dir).resolve(), Path(control_dir).resolve()
    main, control = read_metrics(run_dir), read_metrics(control_dir)
    keep = ("j", "f", "jf", "count", "by_kind")
    main["control_blank_text"] = {k: control[k] for k in keep if k in control} | {"run": str(control_dir)}
    atomic_write_json(run_dir / "metrics.json", main)
    rows = [("at initialisation", main.get("initial")), ("after training", main),
            ("control: text blanked", main["control_blank_text"])]
    print(f"{'':24} {'J':>6} {'F':>6} {'J&F':>6}")
    for label, m in rows:
        if m:
            print(f"{label:24} {m['j']:6.3f} {m['f']:6.3f} {m['jf']:6.3f}")
    kinds_run, kinds_control = main.get("by_kind", {}), main["control_blank_text"].get("by_kind", {})
    if kinds_run:
        print(f"\n{'J&F by kind':24} {'count':>6} {'run':>6} {'blank':>6}")
        for kind, m in kinds_run.items():
            blank = kinds_control.get(kind, {}).get("jf")
            print(f"{kind:24} {m['count']:6d} {m['jf']:6.3f} {'' if blank is None else f'{blank:6.3f}':>6}")
    print(f"metrics: {run_dir / 'metrics.json'}   overlays: {run_dir / 'overlays'}")
    return main
