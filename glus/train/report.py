"""Side-by-side figures of a run and its blank-text control (language must matter)."""
from __future__ import annotations

import json
from pathlib import Path

from glus.io import atomic_write_json


def merge_control(run_dir: str | Path, control_dir: str | Path) -> dict:
    run_dir, control_dir = Path(run_dir).resolve(), Path(control_dir).resolve()
    main = json.loads((run_dir / "metrics.json").read_text())
    control = json.loads((control_dir / "metrics.json").read_text())
    main["control_blank_text"] = {k: control[k] for k in ("j", "f", "jf", "count")} | {"run": str(control_dir)}
    atomic_write_json(run_dir / "metrics.json", main)
    rows = [("at initialisation", main.get("initial")), ("after training", main),
            ("control: text blanked", main["control_blank_text"])]
    print(f"{'':24} {'J':>6} {'F':>6} {'J&F':>6}")
    for label, m in rows:
        if m:
            print(f"{label:24} {m['j']:6.3f} {m['f']:6.3f} {m['jf']:6.3f}")
    print(f"metrics: {run_dir / 'metrics.json'}   overlays: {run_dir / 'overlays'}")
    return main
