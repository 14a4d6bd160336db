"""A control, not a memory: nothing is remembered."""
from __future__ import annotations

from glus.model.memory.sam2_bank import SAM2MemoryBank


class NoMemory(SAM2MemoryBank):
    """Every frame is read as the first frame of a pass (SAM-2's no-memory embedding, the bank's own path for
    an empty state), so a frame's mask cannot depend on earlier frames nor on where the pass started. It
    measures what a trained model's memory contributes: `glus study keyframes-report`'s no-memory row."""

    def __init__(self):
        super().__init__(trainable=False)

    def write(self, state, frame_idx: int, *args, **kwargs) -> None:
        state.step(frame_idx)  # a frame outside the pass is still refused
