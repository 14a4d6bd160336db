"""`glus study ablation-table`: the paper's ablation rows, each trained over several seeds, as one table and one chart.

A single seed of a small run moves J&F by a few hundredths, as much as some ablation steps, so every figure is a
mean over seeds with its spread beside it: a step is only worth reading when it is larger than the spread.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from glus.errors import GlusError, MissingInputs
from glus.io import atomic_path, atomic_write_json, atomic_write_text

FIGURES = ("jf", "j", "f")
SPREAD_NOTE = "± is half the range over the seeds: (max - min) / 2."


@dataclass
class AblationRow:
    """One row: its result sources (one per seed), or the reason it has no figures yet. Rows and pending rows
    share one type so a table is one ordered list, printed in the order it was given."""

    name: str
    sources: list[str] = field(default_factory=list)
    pending: str | None = None
    versus: str | None = None  # the row its change is read against; None: the previous measured row

    def __post_init__(self):
        if bool(self.sources) == (self.pending is not None):
            raise GlusError(f"ablation row {self.name!r}: give either result sources (one per seed) or a pending "
                            "reason, not both and not neither")


def metrics_file(source: str | Path) -> Path:
    """A source is a run folder (its metrics.json, written by glus fit) or a JSON file with the same fields."""
    source = Path(source)
    return source if source.is_file() or source.suffix == ".json" else source / "metrics.json"


def check_versus(rows: list[AblationRow]) -> None:
    """A row read against another (a step measured under another protocol, a variant beside the published row)
    names a measured row above it: a name that is not there would silently fall back to another comparison."""
    measured_above: set[str] = set()
    for row in rows:
        if row.versus is not None and row.versus not in measured_above:
            raise GlusError(f"ablation row {row.name!r} is read against {row.versus!r}, which is not a measured row "
                            f"above it (those are: {sorted(measured_above)}). Fix: give --versus the exact name of "
                            "an earlier --row")
        if row.pending is None:
            measured_above.add(row.name)


def check_sources(rows: list[AblationRow]) -> None:
    """Every missing source in one message, before anything is read or written: a table made from the runs that
    happened to finish would silently compare different seeds."""
    missing = [(row.name, metrics_file(s)) for row in rows for s in row.sources if not metrics_file(s).is_file()]
    if missing:
        lines = [f"  {file}  (row {name!r})" for name, file in missing]
        raise MissingInputs(f"{len(missing)} result(s) of the ablation are missing: the run has not finished (glus "
                            "fit writes metrics.json after its final evaluation), or the path is wrong:\n"
                            + "\n".join(lines))


def read_source(source: str | Path) -> dict:
    file = metrics_file(source)
    try:
        metrics = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise GlusError(f"{file} is not JSON ({err}): give a run folder or a metrics JSON file") from None
    lacking = [k for k in FIGURES if k not in metrics] if isinstance(metrics, dict) else list(FIGURES)
    if lacking:
        raise GlusError(f"{file} lacks {lacking}: an ablation source needs j, f, jf (and by_kind for the kinds), "
                        "as in the metrics.json glus fit writes")
    return metrics


def spread_stats(values: list[float]) -> dict:
    """Half the range rather than a standard deviation: with two or three seeds it is what the seeds show,
    with no assumption about their distribution."""
    return {"mean": sum(values) / len(values), "spread": (max(values) - min(values)) / 2, "values": list(values)}


def kind_stats(metrics: list[dict]) -> dict:
    """{kind: stats of its J&F}, over the sources that report the kind; its count is the first source's."""
    out = {}
    for kind in sorted({k for m in metrics for k in m.get("by_kind") or {}}):
        reports = [m["by_kind"][kind] for m in metrics if kind in (m.get("by_kind") or {})]
        out[kind] = spread_stats([r["jf"] for r in reports]) | {"count": reports[0].get("count")}
    return out


def summarize(row: AblationRow) -> dict:
    """A row's JSON entry. Sources are stored resolved: `latest` moves with the next run, the folder it names
    does not."""
    if row.pending is not None:
        return {"name": row.name, "pending": row.pending}
    metrics = [read_source(s) for s in row.sources]
    out = {"name": row.name, "sources": [str(Path(s).resolve()) for s in row.sources], "seeds": len(metrics)}
    if row.versus is not None:
        out["versus"] = row.versus
    out |= {k: spread_stats([m[k] for m in metrics]) for k in FIGURES}
    return out | {"by_kind": kind_stats(metrics)}


def table_kinds(summaries: list[dict]) -> dict[str, int | None]:
    """{kind: its expression count}, the union over rows, sorted; the count from the first row reporting it."""
    counts: dict[str, int | None] = {}
    for s in summaries:
        for kind, stats in s.get("by_kind", {}).items():
            counts.setdefault(kind, stats["count"])
    return dict(sorted(counts.items()))


def cell(stats: dict, seeds: int) -> str:
    text = f"{stats['mean']:.3f} ± {stats['spread']:.3f}"
    # a kind some seeds did not report: say over how many the figure is
    return text if len(stats["values"]) == seeds else f"{text} ({len(stats['values'])}/{seeds} seeds)"


def escape(text: str) -> str:
    return text.replace("|", "\\|")  # a `|` in a name or reason would split the markdown cell


def format_rows(summaries: list[dict], kinds: list[str]) -> list[str]:
    """The body: figures and the change of mean J&F from the previous row that has figures (pending ones skipped,
    so each step of the ablation is read against the last one that was measured), or from the row it names."""
    lines, previous, measured = [], None, {}
    for s in summaries:
        if "pending" in s:
            cells = [escape(s["name"]), "", escape(s["pending"]), "", "", *[""] * len(kinds), ""]
        else:
            n, jf = s["seeds"], s["jf"]["mean"]
            cells = [escape(s["name"]), str(n), *[cell(s[k], n) for k in FIGURES]]
            cells += [cell(s["by_kind"][k], n) if k in s["by_kind"] else "-" for k in kinds]
            if "versus" in s:
                cells.append(f"{jf - measured[s['versus']]:+.3f} (vs {escape(s['versus'])})")
            else:
                cells.append("" if previous is None else f"{jf - previous:+.3f}")
            previous = measured[s["name"]] = jf
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def format_table(title: str, summaries: list[dict]) -> str:
    kinds = table_kinds(summaries)
    head = ["row", "seeds", "J&F", "J", "F", *[k if c is None else f"{k} ({c})" for k, c in kinds.items()],
            "vs previous row"]
    lines = [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join([*lines, *format_rows(summaries, list(kinds)), "", SPREAD_NOTE])


def plot_ablation(path: Path, title: str, summaries: list[dict]) -> Path:
    """Grouped bars, one group per measured row: overall J&F and each kind's, the spread as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [s for s in summaries if "pending" not in s]
    series = [("J&F", lambda s: s["jf"])]
    series += [(kind, lambda s, kind=kind: s["by_kind"].get(kind)) for kind in table_kinds(measured)]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(10, 5))
    for i, (label, get) in enumerate(series):
        stats = [get(s) for s in measured]  # None: a row without this kind, drawn as no bar
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(measured))]
        ax.bar(xs, [st["mean"] if st else float("nan") for st in stats], width,
               yerr=[st["spread"] if st else 0.0 for st in stats], capsize=3, label=label)
    ax.set_xticks(range(len(measured)), [s["name"] for s in measured], rotation=20, ha="right")
    ax.set(ylim=(0, 1), ylabel="J&F (mean over seeds, ± half range)", title=title)
    ax.legend(fontsize="small", ncol=min(len(series), 4))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:  # the temporary name keeps .png: savefig picks the format from it
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def output_paths(out: str | Path) -> tuple[Path, Path, Path]:
    # appended, not with_suffix: a prefix such as runs/ablation_v1.2 must keep its dot
    return Path(f"{out}.md"), Path(f"{out}.json"), Path(f"{out}.png")


def ablation_table(rows: list[AblationRow | tuple[str, list[str]]], out: str | Path,
                   title: str = "GLUS ablation") -> str:
    """Writes OUT.md, OUT.json and OUT.png for the rows in their order and returns the markdown. Rows may be
    AblationRow (measured or pending) or (name, sources) pairs. Nothing is written unless every source is read."""
    rows = [r if isinstance(r, AblationRow) else AblationRow(r[0], list(r[1])) for r in rows]
    if not rows:
        raise GlusError("an ablation table needs at least one row")
    check_versus(rows)
    check_sources(rows)
    summaries = [summarize(r) for r in rows]
    table = format_table(title, summaries)
    md, js, png = output_paths(out)
    plot_ablation(png, title, summaries)
    atomic_write_json(js, {"title": title, "spread": "half range", "rows": summaries})
    atomic_write_text(md, table + "\n")
    return table
