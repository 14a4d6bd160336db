"""Side-by-side figures of a run and its blank-text control (language must matter), and of one export on
held-out data seeds (the same kinds must score alike)."""
from __future__ import annotations

import json
from pathlib import Path

from glus.io import atomic_write_json
from glus.errors import MissingInputs


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


def heldout_table(reference_dir: str | Path, heldout_dirs: list[str | Path], tolerance: float = 0.05,
                  out: str | Path | None = None) -> dict:
    """J&F per kind of one export on its own data seed's valid_u (the reference) and on other data seeds'
    (`glus validate` folders), with the largest change of each kind from the reference; a kind holds when
    every change is within `tolerance`. Prints the table; writes it as JSON to `out` when given."""
    ref = read_metrics(Path(reference_dir))
    held = [read_metrics(Path(d)) for d in heldout_dirs]
    kinds = {"all": ref} | ref.get("by_kind", {})
    rows = {}
    for kind, m in kinds.items():
        others = [h if kind == "all" else h.get("by_kind", {}).get(kind) for h in held]
        if any(o is None for o in others):
            missing = [str(d) for d, o in zip(heldout_dirs, others) if o is None]
            raise MissingInputs(f"kind {kind!r} is missing from {', '.join(missing)}/metrics.json: score every "
                                "data seed with the same glus validate (its valid_u must hold every kind)")
        change = max((o["jf"] - m["jf"] for o in others), key=abs)
        rows[kind] = {"reference": m["jf"], "heldout": [o["jf"] for o in others], "count": m["count"],
                      "largest_change": change, "within": abs(change) <= tolerance}
    header = " ".join(f"{Path(d).name:>12}" for d in heldout_dirs)
    print(f"{'J&F':12} {'count':>6} {Path(reference_dir).name:>12} {header} {'change':>7}  within {tolerance}")
    for kind, r in rows.items():
        cells = " ".join(f"{v:12.3f}" for v in r["heldout"])
        print(f"{kind:12} {r['count']:6d} {r['reference']:12.3f} {cells} {r['largest_change']:+7.3f}  "
              f"{'yes' if r['within'] else 'NO'}")
    result = {"reference": str(reference_dir), "heldout": [str(d) for d in heldout_dirs], "tolerance": tolerance,
              "kinds": rows}
    if out:
        atomic_write_json(Path(out), result)
    return result
