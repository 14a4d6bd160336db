"""The global batch a recipe states, and the gradient accumulation that follows from the machine.

The published GLUS trains with a global batch of 80 (4 GPUs x micro-batch 2 x accumulation 10). A recipe states
the global batch and the micro-batch; accumulation = global / (devices x nodes x micro-batch), so that one GPU
or eight train the same model. A global batch the machine cannot make exactly is an error, not a rounding.
"""
from __future__ import annotations

from dataclasses import dataclass

from glus.errors import GlusError


@dataclass(frozen=True)
class BatchPlan:
    global_batch: int
    micro_batch: int     # per device and forward
    world: int           # devices x nodes
    accumulation: int

    def describe(self) -> str:
        return (f"batch: global {self.global_batch} = {self.world} device(s) x micro-batch {self.micro_batch} "
                f"x accumulation {self.accumulation}")


def device_count(accelerator, devices, num_nodes: int = 1) -> int:
    """Devices x nodes of a Trainer setting ("auto", an int, a list of ids, "0,1" ...)."""
    if isinstance(devices, (list, tuple)):
        n = len(devices)
    elif isinstance(devices, int) and devices >= 0:
        n = devices
    elif isinstance(devices, str) and devices not in ("auto", "-1"):
        n = len([d for d in devices.split(",") if d.strip()]) if "," in devices else int(devices)
    else:  # "auto" / -1: every visible GPU, or one CPU process
        import torch

        gpu = str(accelerator) in ("gpu", "cuda", "auto") and torch.cuda.is_available()
        n = torch.cuda.device_count() if gpu else 1
    return max(1, n) * max(1, int(num_nodes or 1))


def plan_batch(global_batch: int | None, micro_batch: int, world: int) -> BatchPlan:
    if global_batch is None:
        return BatchPlan(micro_batch * world, micro_batch, world, 1)
    per_step = micro_batch * world
    if global_batch % per_step:
        raise GlusError(f"data.global_batch {global_batch} is not a multiple of {world} device(s) x micro-batch "
                        f"{micro_batch} = {per_step}. Fix: set data.global_batch to a multiple of {per_step}, or "
                        "change data.batch_size or trainer.devices")
    return BatchPlan(global_batch, micro_batch, world, global_batch // per_step)
