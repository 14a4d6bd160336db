"""glus study ablation-table on hand-made run folders (no training): means and half ranges over seeds, the markdown cells,
the change from the previous measured row, the order of rows with pending ones among them, the chart, and a missing
run refused before anything is written."""
import json

import pytest

from glus.cli import main
from glus.errors import GlusError
from glus.studies.ablation import AblationRow, ablation_table
from glus.errors import MissingInputs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def metrics(jf, j, f, kinds):
    """metrics.json as glus fit writes it; kinds: {kind: (jf, count)}."""
    return {"j": j, "f": f, "jf": jf, "count": 80, "steps": 100,
            "by_kind": {k: {"j": v - 0.01, "f": v + 0.01, "jf": v, "count": c} for k, (v, c) in kinds.items()}}


def write_run(folder, m):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(m))
    return str(folder)


@pytest.fixture
def rows(tmp_path):
    """Row A: two run folders. Row B: a run folder and a JSON file from another command (its motion count differs:
    the first row's is shown). A pending row sits between them."""
    a0 = write_run(tmp_path / "query_s0", metrics(0.40, 0.38, 0.42, {"motion": (0.30, 50), "static": (0.50, 30)}))
    a1 = write_run(tmp_path / "query_s1", metrics(0.60, 0.56, 0.64, {"motion": (0.50, 50), "static": (0.70, 30)}))
    b0 = write_run(tmp_path / "context_s0", metrics(0.55, 0.50, 0.60, {"motion": (0.45, 52), "static": (0.65, 30),
                                                                       "counting": (0.20, 20)}))
    b1 = tmp_path / "context_s1.json"
    b1.write_text(json.dumps(metrics(0.53, 0.49, 0.57, {"motion": (0.47, 50), "static": (0.61, 30),
                                                        "counting": (0.30, 20)})))
    return [AblationRow("query frames only", [a0, a1]),
            AblationRow("+ key-frame selection", pending="selector not trained yet"),
            AblationRow("+ context frames", [b0, str(b1)])]


def stats(entry):
    return pytest.approx(entry["mean"]), pytest.approx(entry["spread"])


def test_json_holds_means_and_half_ranges_in_row_order(rows, tmp_path):
    ablation_table(rows, tmp_path / "out" / "ablation", title="synthetic ablation")
    report = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert report["title"] == "synthetic ablation" and report["spread"] == "half range"
    a, pending, b = report["rows"]
    assert [a["name"], pending["name"], b["name"]] == ["query frames only", "+ key-frame selection",
                                                      "+ context frames"]
    assert pending == {"name": "+ key-frame selection", "pending": "selector not trained yet"}
    assert a["seeds"] == b["seeds"] == 2
    assert (a["jf"]["mean"], a["jf"]["spread"]) == stats({"mean": 0.50, "spread": 0.10})
    assert a["jf"]["values"] == [0.40, 0.60]
    assert (a["j"]["mean"], a["j"]["spread"]) == stats({"mean": 0.47, "spread": 0.09})
    assert (a["f"]["mean"], a["f"]["spread"]) == stats({"mean": 0.53, "spread": 0.11})
    assert (b["jf"]["mean"], b["jf"]["spread"]) == stats({"mean": 0.54, "spread": 0.01})
    assert (b["by_kind"]["counting"]["mean"], b["by_kind"]["counting"]["spread"]) == stats({"mean": 0.25,
                                                                                          "spread": 0.05})
    assert b["by_kind"]["motion"]["count"] == 52  # the row's first source's count
    assert set(a["by_kind"]) == {"motion", "static"}
    assert b["sources"][1].endswith("context_s1.json")


def test_markdown_cells_previous_row_column_and_kind_counts(rows, tmp_path):
    table = ablation_table(rows, tmp_path / "ablation", title="synthetic ablation")
    assert (tmp_path / "ablation.md").read_text() == table + "\n"
    lines = table.splitlines()
    assert lines[0] == "## synthetic ablation"
    head = [c.strip() for c in lines[2].strip("|").split("|")]
    # kinds: the union over rows, sorted, with the first count seen over the rows (row A's motion: 50)
    assert head == ["row", "seeds", "J&F", "J", "F", "counting (20)", "motion (50)", "static (30)", "vs previous row"]
    body = [[c.strip() for c in line.strip("|").split("|")] for line in lines[4:7]]
    assert body[0] == ["query frames only", "2", "0.500 ± 0.100", "0.470 ± 0.090", "0.530 ± 0.110", "-",
                       "0.400 ± 0.100", "0.600 ± 0.100", ""]
    assert body[1] == ["+ key-frame selection", "", "selector not trained yet", "", "", "", "", "", ""]
    # compared with the last measured row, the pending one skipped: 0.54 - 0.50
    assert body[2] == ["+ context frames", "2", "0.540 ± 0.010", "0.495 ± 0.005", "0.585 ± 0.015", "0.250 ± 0.050",
                       "0.460 ± 0.010", "0.630 ± 0.020", "+0.040"]
    assert "± is half the range over the seeds" in lines[-1]


def test_a_drop_is_signed_and_the_chart_is_a_png(rows, tmp_path):
    table = ablation_table([rows[2], rows[0]], tmp_path / "ablation")
    assert table.splitlines()[5].rstrip(" |").endswith("-0.040")
    png = (tmp_path / "ablation.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 1000


def test_name_and_sources_pairs_are_rows_too(rows, tmp_path):
    pairs = [(r.name, r.sources) for r in rows if r.pending is None]
    assert ablation_table(pairs, tmp_path / "pairs") == ablation_table([rows[0], rows[2]], tmp_path / "dataclasses")
    with pytest.raises(GlusError, match="not both"):
        AblationRow("both", ["x"], pending="why")


def test_a_missing_run_is_named_and_nothing_is_written(rows, tmp_path):
    unfinished = tmp_path / "context_s2"
    unfinished.mkdir()
    rows[2].sources.append(str(unfinished))
    with pytest.raises(MissingInputs) as err:
        ablation_table(rows, tmp_path / "ablation")
    assert str(unfinished / "metrics.json") in str(err.value) and "has not finished" in str(err.value)
    assert not list(tmp_path.glob("ablation*"))


def test_cli_keeps_the_command_line_order(rows, tmp_path, capsys):
    (a0, a1), (b0, b1) = rows[0].sources, rows[2].sources
    out = tmp_path / "runs" / "ablation"
    argv = ["study", "ablation-table", "--row", "query frames only", a0, a1, "--pending", "+ key-frame selection",
            "selector not trained yet", "--row", "+ context frames", b0, b1, "--title", "cli ablation", "--out",
            str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| + context frames | 2 | 0.540 ± 0.010 |" in printed
    assert all(f"{out}.{suffix}" in printed for suffix in ("md", "json", "png"))
    names = [r["name"] for r in json.loads(out.with_suffix(".json").read_text())["rows"]]
    assert names == ["query frames only", "+ key-frame selection", "+ context frames"]

    # a row without any source is an argument error; a missing run is one `glus: error:` naming it, exit 2
    with pytest.raises(SystemExit):
        main(["study", "ablation-table", "--row", "lonely", "--out", str(out)])
    capsys.readouterr()
    assert main(["study", "ablation-table", "--row", "gone", str(tmp_path / "gone"), "--out", str(tmp_path / "t")]) == 2
    assert str(tmp_path / "gone" / "metrics.json") in capsys.readouterr().err


def test_versus_reads_a_row_against_the_named_one_and_refuses_a_name_not_above(rows, tmp_path, capsys):
    (a0, a1), (b0, b1) = rows[0].sources, rows[2].sources
    out = tmp_path / "versus"
    # the variant (B again) is read against A (0.54 - 0.50), the row after it against the variant, as before
    argv = ["study", "ablation-table", "--row", "A", a0, a1, "--row", "B", b0, b1, "--row", "variant", b0, b1,
            "--versus", "A", "--row", "after", a0, a1, "--out", str(out)]
    assert main(argv) == 0
    table = out.with_suffix(".md").read_text().splitlines()
    assert [line.rsplit("|", 2)[1].strip() for line in table[4:8]] == ["", "+0.040", "+0.040 (vs A)", "-0.040"]
    assert json.loads(out.with_suffix(".json").read_text())["rows"][2]["versus"] == "A"
    capsys.readouterr()
    with pytest.raises(GlusError, match="not a measured row above it"):  # below, or not a row at all
        ablation_table([AblationRow("A", [a0], versus="B"), AblationRow("B", [b0])], tmp_path / "bad")
    with pytest.raises(GlusError, match="not a measured row above it"):
        ablation_table([AblationRow("P", pending="later"), AblationRow("A", [a0], versus="P")], tmp_path / "bad")
    assert not list(tmp_path.glob("bad*"))
    with pytest.raises(SystemExit):  # --versus before any --row
        main(["study", "ablation-table", "--versus", "A", "--row", "A", a0, "--out", str(out)])
