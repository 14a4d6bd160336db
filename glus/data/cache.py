"""Parsed split indexes cached with the `datasets` library (arrow files), rebuilt when a source file changes.

Parsing MeViS train means reading a large JSON and one image header per video; the cache makes every later
command start at once. The key is a hash of the split's source files (path, size, modification time) and of
the reader version, so editing or replacing a metadata file rebuilds the index.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from glus.data.errors import ProblemLog
from glus.data.formats import FORMATS, parse_split, read_dataset_dir
from glus.data.index import SplitIndex

READER_VERSION = 2  # 2: expressions carry kind and caption


def default_cache_dir() -> Path:
    return Path(os.environ.get("GLUS_CACHE", Path.home() / ".cache" / "glus")) / "index"


def fingerprint(dataset_dir: Path, fmt: str, split: str) -> str:
    h = hashlib.sha256(f"{READER_VERSION}|{dataset_dir.resolve()}|{fmt}|{split}".encode())
    for path in FORMATS[fmt].source_files(dataset_dir, split):
        st = path.stat() if path.exists() else None
        h.update(f"|{path}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1}".encode())
    return h.hexdigest()[:20]


def load_split(root: str | Path, name: str, on_error: str = "fail", cache_dir: Path | None = None,
               log: ProblemLog | None = None) -> SplitIndex:
    """The index of split `name` (e.g. "mevis/valid_u") under data root `root` (holding root/mevis/...)."""
    fmt, split = parse_split(name)
    dataset_dir = Path(root) / fmt
    log = ProblemLog(on_error) if log is None else log
    folder = (cache_dir or default_cache_dir()) / f"{fmt}-{split}-{fingerprint(dataset_dir, fmt, split)}"
    if (folder / "index.json").is_file():
        return _load(folder)
    before = len(log)
    index = read_dataset_dir(dataset_dir, fmt, split, log)
    if len(log) == before:  # an index with skipped items is not cached: its problems are reported every time
        _save(index, folder)
    return index


def _save(index: SplitIndex, folder: Path) -> None:
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # a few kB per split: a bar would only add noise

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    videos, exprs = index.to_rows()
    Dataset.from_list(videos).save_to_disk(str(tmp / "videos"))
    Dataset.from_list(exprs).save_to_disk(str(tmp / "expressions"))
    (tmp / "index.json").write_text(json.dumps({"name": index.name, "root": index.root, "extras": index.extras}))
    try:
        tmp.rename(folder)  # atomic: a reader sees the whole cache entry or none
    except OSError:  # another process finished the same entry first
        shutil.rmtree(tmp, ignore_errors=True)


def _load(folder: Path) -> SplitIndex:
    from datasets import load_from_disk

    head = json.loads((folder / "index.json").read_text())
    videos = load_from_disk(str(folder / "videos")).to_list() if (folder / "videos").exists() else []
    exprs = load_from_disk(str(folder / "expressions")).to_list() if (folder / "expressions").exists() else []
    return SplitIndex.from_rows(head["name"], head["root"], videos, exprs, head["extras"])
