"""Post-install check: the stack imports, and nothing on the machine breaks it.

Run by `make install`; exits non-zero with a message that says what to do.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys

REQUIRED = ("torch", "lightning", "transformers", "peft", "deepspeed", "datasets", "sam2", "pycocotools", "cv2")


def problems() -> list[str]:
    found: list[str] = []
    import torch

    if torch.version.cuda is None and importlib.util.find_spec("torchvision") is not None:
        found.append(
            "torchvision is installed next to a CPU torch: its wheel needs a CUDA torch and breaks the imports "
            "of lightning, peft and transformers. Fix: `.venv/bin/pip uninstall -y torchvision`."
        )
        return found  # the imports below would fail for that reason alone
    for name in REQUIRED:
        try:
            importlib.import_module(name)
        except Exception as err:  # report every broken import, not just the first
            found.append(f"`import {name}` fails: {type(err).__name__}: {err}")
    return found


def main() -> int:
    import torch

    found = problems()
    for line in found:
        print(f"install check: {line}", file=sys.stderr)
    if not found:
        device = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU"
        print(f"install check: ok (torch {torch.__version__}, {device}; no torchvision on a CPU torch)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
