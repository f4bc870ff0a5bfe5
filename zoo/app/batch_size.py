"""``${per_device_batch:<global batch>}``: a paper's batch as each process's ``data.batch_size``.

A paper states the batch of one optimizer step over all its GPUs; under Lightning's DDP every process loads
``data.batch_size`` of its own. The paper recipes (``conf/experiment/cifar10/``, ``imagenet256/``) set
``global_batch_size`` and ``data.batch_size: ${per_device_batch:${global_batch_size}}``, which divides it by
``trainer.devices * trainer.num_nodes * trainer.accumulate_grad_batches``: ``trainer=ddp trainer.devices=8`` trains
with the paper's batch, 1/8 of it on each GPU.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

RESOLVER = "per_device_batch"


def per_device_batch(total: int, *, _root_: DictConfig) -> int:
    """``total`` over the run's devices, nodes and accumulated batches; a ValueError naming the fix if it does not split."""
    trainer = _root_.trainer
    devices, nodes, accumulate = trainer.devices, trainer.get("num_nodes", 1), trainer.get("accumulate_grad_batches", 1)
    if not isinstance(devices, int) or devices < 1:
        raise ValueError(
            f"global_batch_size={total} is split over trainer.devices, which is {devices!r}: give the number of "
            "devices (trainer.devices=8), or data.batch_size per device"
        )
    share = devices * nodes * accumulate
    if total % share:
        raise ValueError(
            f"global_batch_size={total} does not split over trainer.devices={devices} x trainer.num_nodes={nodes} x "
            f"trainer.accumulate_grad_batches={accumulate} = {share}: use a device count that divides it, or set "
            "data.batch_size per device"
        )
    return total // share


def register() -> None:
    """Make ``${per_device_batch:...}`` resolvable (once per process)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, per_device_batch)
