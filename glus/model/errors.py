"""Errors about weights: a missing or incomplete checkpoint says what was expected where."""
from __future__ import annotations

from glus.errors import GlusError


class CheckpointError(GlusError, RuntimeError):
    """A checkpoint folder or file does not match what the loader expects."""


def format_key_mismatch(what: str, missing: list[str], unexpected: list[str], limit: int = 40) -> str:
    lines = [f"{what}: {len(missing)} missing and {len(unexpected)} unexpected key(s)"]
    for title, keys in (("missing", missing), ("unexpected", unexpected)):
        for k in sorted(keys)[:limit]:
            lines.append(f"  {title}: {k}")
        if len(keys) > limit:
            lines.append(f"  ... and {len(keys) - limit} more {title}")
    return "\n".join(lines)


def load_strict(module, state: dict, what: str) -> None:
    """load_state_dict(strict=True), with every missing and unexpected key named on failure."""
    own = set(module.state_dict())
    missing = sorted(own - set(state))
    unexpected = sorted(set(state) - own)
    if missing or unexpected:
        raise CheckpointError(format_key_mismatch(what, missing, unexpected))
    module.load_state_dict(state, strict=True)
