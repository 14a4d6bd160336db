"""DeepSpeed under Lightning on the CPU backend (gloo), so that a CPU test runs a real ZeRO fit.

Lightning refuses DeepSpeed without CUDA (a device check and a device-index check); the engine itself runs
on DeepSpeed's CPU accelerator. Everything else is Lightning's own DeepSpeedStrategy, unchanged.
"""
from __future__ import annotations

import argparse
from contextlib import contextmanager

from lightning.fabric.utilities.seed import reset_seed
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    def __init__(self, stage: int = 2, **kwargs):
        kwargs.setdefault("process_group_backend", "gloo")
        super().__init__(stage=stage, **kwargs)

    def setup_environment(self) -> None:
        DDPStrategy.setup_environment(self)  # skips DeepSpeedStrategy's CUDA-only check

    def setup_distributed(self) -> None:
        # CPU devices carry no index, so Lightning's device-index validation does not apply
        reset_seed()
        self.set_world_ranks()
        with _without_shm_comm_op():
            self._init_deepspeed_distributed()

    def _setup_model_and_optimizer(self, model, optimizer, lr_scheduler=None):
        # as Lightning's, but DeepSpeed needs an integer device rank and CPU devices have no index
        import deepspeed

        engine, ds_optimizer, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=self.local_rank), config=self.config, model=model,
            model_parameters=[p for p in model.parameters() if p.requires_grad], optimizer=optimizer,
            lr_scheduler=lr_scheduler, dist_init_required=False)
        return engine, ds_optimizer


@contextmanager
def _without_shm_comm_op():
    """DeepSpeed's CPU backend JIT-compiles a shared-memory all-reduce op while it sets up communication.

    That op only speeds up all-reduce between processes on one node; gloo does the same job. The compile needs
    a C++ toolchain and compile time on every fresh machine, and torch waits forever on its lock file when an
    earlier compile was killed half-way (a timed-out test did that here). So it is switched off for this setup.
    """
    import deepspeed.ops
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder

    ops, name = deepspeed.ops.__compatible_ops__, ShareMemCommBuilder.NAME
    saved = ops.get(name, False)
    ops[name] = False
    try:
        yield
    finally:
        ops[name] = saved
