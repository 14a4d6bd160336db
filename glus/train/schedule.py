"""The published schedule: linear warm-up, then linear decay to zero at the last step."""
from __future__ import annotations


def warmup_linear(step: int, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return (step + 1) / max(1, warmup_steps)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
