"""Files that appear whole or not at all: written beside the target, then renamed (atomic on one file system),
so a job killed mid-write never leaves a truncated result behind."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path`, renamed onto it when the block succeeds and removed when it fails. It keeps
    the suffix (`.x.tmp.gif`), so writers that choose the format by extension (imageio, zip) still work."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the process id keeps writers of the same file apart (shards that finish together write one summary file)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(path: str | Path, obj, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent))


def tree_hash(folder: str | Path) -> str:
    """sha256 over a folder's files (relative paths and contents, sorted): names the weights a result came from."""
    import hashlib

    folder = Path(folder)
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
