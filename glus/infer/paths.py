"""Output paths built from benchmark metadata, which must never escape the output folder."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from glus.errors import GlusError

PARTIAL = ".partial"


class UnsafePathError(GlusError, ValueError):
    pass


def safe_join(root: str | Path, relative: str, what: str = "path") -> Path:
    """root / relative, refusing absolute paths, '..', empty parts and backslashes (video and expression names
    come from the metadata: a crafted name must not write or zip anything outside `root`). '/' is allowed:
    ReVOS and ReasonVOS video ids hold one."""
    rel = str(relative)
    parts = rel.split("/")
    if (not rel or rel.startswith("/") or "\\" in rel or "\0" in rel
            or any(p in ("", ".", "..") for p in parts) or Path(rel).is_absolute()):
        raise UnsafePathError(f"unsafe {what} {rel!r} in the metadata: names must be relative, without '..', "
                              f"empty parts or backslashes")
    return Path(root) / Path(*parts)


def partial_dir(final: Path) -> Path:
    return final.with_name(final.name + PARTIAL)


def start_partial(final: Path) -> Path:
    """A fresh temporary folder beside `final` (a leftover from a killed run is discarded)."""
    tmp = partial_dir(final)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit_partial(final: Path) -> None:
    """Move a complete temporary folder into place (rename: atomic on one file system)."""
    os.replace(partial_dir(final), final)
