"""Every `glus` command the README, docs/ and the Makefile show exists and answers --help, and the former flat
spellings of the grouped commands still parse (hidden: not in the help listing)."""
import argparse
import re
from pathlib import Path

import pytest

from glus.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "checkpoints" / "README.md"]


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def command_path(words: list[str]) -> list[str]:
    """The longest run of words that names a (sub)command, from the top."""
    parser, path = build_parser(), []
    for word in words:
        children = subcommands(parser)
        if word not in children:
            break
        parser, path = children[word], path + [word]
    return path


def code_of(text: str) -> str:
    """Fenced blocks and inline code spans: where a document shows a command to type."""
    fenced = re.findall(r"```.*?```", text, flags=re.S)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return "\n".join(fenced + inline)


def documented() -> dict[str, str]:
    """'glus word word' -> the document showing it, for every glus command line in a code span or the Makefile."""
    found = {}
    sources = [(d, code_of(d.read_text())) for d in DOCUMENTS if d.is_file()]
    sources.append((ROOT / "Makefile", (ROOT / "Makefile").read_text()))
    for doc, code in sources:
        for match in re.finditer(r"(?:^|[\s`(/$])glus ((?:[a-z][a-z0-9-]*)(?: [a-z][a-z0-9-]*)?)", code, flags=re.M):
            found.setdefault(match.group(1), doc.relative_to(ROOT).as_posix())
    return found


DOCUMENTED = documented()


def test_the_documents_show_commands():
    assert len(DOCUMENTED) >= 15, DOCUMENTED
    assert {"fit", "predict", "evaluate", "study ablation-table", "tools bench"} <= {
        " ".join(command_path(c.split())) for c in DOCUMENTED}


@pytest.mark.parametrize("command", sorted(DOCUMENTED))
def test_every_documented_command_answers_help(command, capsys):
    path = command_path(command.split())
    assert path, f"{DOCUMENTED[command]} shows `glus {command}`, which is no glus command"
    parser = build_parser()
    for word in path:
        parser = subcommands(parser)[word]
    if len(command.split()) > len(path):  # a group (`glus data`) followed by a word it does not know: a typo
        assert not subcommands(parser), f"{DOCUMENTED[command]}: `glus {command}`: no such subcommand"
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([*path, "--help"])
    assert done.value.code == 0
    usage = capsys.readouterr().out.splitlines()[0]
    assert usage.startswith("usage: glus " + " ".join(path) + " "), \
        f"{DOCUMENTED[command]} shows the former spelling `glus {' '.join(path)}`: write {usage.split()[1:4]}"


@pytest.mark.parametrize("former,now", [(["ablation-table"], ["study", "ablation-table"]),
                                        (["vos-table"], ["study", "vos-table"]),
                                        (["keyframes-report"], ["study", "keyframes-report"]),
                                        (["motion-probe"], ["study", "motion-probe"]),
                                        (["runs", "compare"], ["study", "compare-runs"]),
                                        (["runs", "heldout"], ["study", "heldout"]),
                                        (["bench"], ["tools", "bench"]),
                                        (["gpu-check"], ["tools", "gpu-check"]),
                                        (["model", "cost"], ["tools", "model", "cost"])])
def test_former_spellings_parse_as_the_grouped_command_and_stay_hidden(former, now, capsys):
    parser = build_parser()
    for word in former:
        parser = subcommands(parser)[word]
    grouped = build_parser()
    for word in now:
        grouped = subcommands(grouped)[word]
    assert [a.dest for a in parser._actions] == [a.dest for a in grouped._actions]
    assert parser.get_default("func") is grouped.get_default("func")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    listing = capsys.readouterr().out
    assert re.search(rf"^\s+{former[0]}\s", listing, flags=re.M) is None, f"{former[0]} is listed in glus --help"
