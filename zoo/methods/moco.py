"""Momentum Contrast, v2 and v3, on any backbone with ``forward(x) -> [B, F]`` and ``num_features``.

v2 (He et al. CVPR 2020, arXiv 1911.05722, Eq. 1-2 and Algorithm 1; Chen, Fan, Girshick, He
2020, arXiv 2003.04297): query encoder = backbone + MLP head, key encoder = its momentum copy,
InfoNCE of each query against its key and a FIFO queue of past keys, shuffle-BN across processes.
v3 (Chen, Xie, He, ICCV 2021, arXiv 2104.02057, Algorithm 1): no queue; BN-MLP projector and a
predictor on the query branch only, symmetric in-batch contrastive loss scaled by ``2T`` against
keys gathered from every process, momentum raised from ``m0`` to 1 on a cosine (BYOL's schedule).
The key encoder is the target of the base class's ``momentum_pairs``, which also does the update.
"""

from __future__ import annotations

import copy
from functools import partial

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from zoo.methods.base import Method

VARIANTS = ("v2", "v3")
MOMENTUM_SCHEDULE = {"v2": "constant", "v3": "cosine"}
SYNC_BN_DEVICES = ("cuda", "xpu", "hpu")


def infonce_v2(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """MoCo's InfoNCE (He et al. 2020, Eq. 1): cross-entropy of ``[q.k+, q.queue] / T`` with label 0.

    ``q``, ``k``: ``[B, D]`` queries and their positive keys; ``queue``: ``[K, D]`` negatives.
    ``q`` and ``k`` are L2-normalised here; the queue holds normalised keys already.
    """
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    positive = (q * k).sum(dim=1, keepdim=True)
    negative = q @ queue.t()
    logits = torch.cat([positive, negative], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def contrastive_v3(q: Tensor, k: Tensor, temperature: float, rank_offset: int = 0) -> Tensor:
    """MoCo v3's ``ctr(q, k)`` (Chen et al. 2021, Algorithm 1): ``CE(q k^T / T, labels) * 2T``.

    ``q``: ``[B, D]`` this process's queries; ``k``: ``[N, D]`` the keys of every process
    concatenated in rank order, so the positive of query ``i`` is key ``rank_offset + i``
    (``rank_offset = rank * B``). Both are L2-normalised here.
    """
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    labels = torch.arange(len(q), device=q.device) + rank_offset
    return F.cross_entropy(q @ k.t() / temperature, labels) * 2 * temperature


def mlp_v2(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """MoCo v2's head: Linear - ReLU - Linear (2048 -> 2048 -> 128 on a ResNet-50)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))


def mlp_v3(layers: int, in_dim: int, hidden: int, out_dim: int, last_bn: bool) -> nn.Sequential:
    """MoCo v3's projector/predictor: bias-free Linears with BN + ReLU between them.

    ``last_bn`` appends a BN without affine parameters after the last Linear (every MoCo v3 head
    except the ResNet predictor).
    """
    dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
    modules: list[nn.Module] = []
    for i in range(layers):
        modules.append(nn.Linear(dims[i], dims[i + 1], bias=False))
        if i < layers - 1:
            modules += [nn.BatchNorm1d(dims[i + 1]), nn.ReLU(inplace=True)]
        elif last_bn:
            modules.append(nn.BatchNorm1d(dims[i + 1], affine=False))
    return nn.Sequential(*modules)


def fifo_enqueue(queue: Tensor, pointer: Tensor, keys: Tensor) -> None:
    """Write ``keys`` into the ring buffer ``queue`` ``[K, D]`` at ``pointer``, oldest first, in place.

    Indices wrap around the end, so any batch size works (the datamodules keep a short last batch);
    the result is that of writing the keys one by one, so more than ``K`` keys leave the newest ``K``.
    """
    size, count = len(queue), len(keys)
    kept = keys[-size:]
    index = (pointer + count - len(kept) + torch.arange(len(kept), device=queue.device)) % size
    queue[index] = kept.to(queue.dtype)
    pointer.copy_((pointer + count) % size)


class MoCo(Method):
    """MoCo v2 or v3 (``variant``) around ``net``; ``embed`` is the query backbone's pooled feature.

    ``hidden`` is the heads' inner width (default: the backbone's ``num_features``). v2 uses
    ``queue_size`` (a multiple of ``batch_size``, the per-process ``data.batch_size``) and a constant
    ``momentum``; v3 starts its cosine momentum schedule at ``momentum`` and uses
    ``projector_layers`` and ``predictor_last_bn`` (ResNets: 2 and false, ViTs: 3 and true in the paper).

    Validation and test loaders carry no views (``datamodules.base``): there the loss scores each
    clean image against itself, an augmentation-free instance-discrimination loss, and the queue
    is left alone.

    Under DDP v2 shuffles the key encoder's batch across processes (shuffle-BN, MoCo Sec. 3.3) and
    enqueues the keys of every process; v3 converts BatchNorm to SyncBatchNorm on devices that
    support it (CUDA, XPU, HPU) and warns that BN statistics stay per-process elsewhere (CPU/gloo).
    """

    def __init__(
        self,
        net: nn.Module,
        variant: str = "v2",
        dim: int = 128,
        hidden: int | None = None,
        queue_size: int = 4096,
        batch_size: int | None = None,
        temperature: float = 0.2,
        momentum: float = 0.99,
        projector_layers: int = 2,
        predictor_last_bn: bool = False,
        **kwargs,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"method.variant={variant!r}: MoCo comes as {' or '.join(VARIANTS)}")
        super().__init__(momentum=momentum, momentum_schedule=MOMENTUM_SCHEDULE[variant], **kwargs)
        if temperature <= 0:
            raise ValueError(f"method.temperature={temperature}: the softmax temperature must be positive")
        if variant == "v2" and queue_size < 1:
            raise ValueError(f"method.queue_size={queue_size}: MoCo v2 needs a queue of at least one key")
        if variant == "v2" and batch_size is not None and queue_size % batch_size:
            raise ValueError(
                f"method.queue_size={queue_size} is not a multiple of data.batch_size={batch_size}; MoCo's FIFO "
                f"queue takes whole batches, e.g. method.queue_size={max(1, queue_size // batch_size) * batch_size}"
            )
        if variant == "v3" and projector_layers < 2:
            raise ValueError(
                f"method.projector_layers={projector_layers}: MoCo v3's projector has at least 2 layers (paper: 2 or 3)"
            )
        if not hasattr(net, "num_features"):
            raise ValueError(
                f"net {type(net).__name__} has no `num_features`; MoCo needs a backbone that returns pooled "
                "features [B, F], e.g. net=resnet or net=vit"
            )
        self.variant = variant
        self.temperature = temperature
        self.backbone = net
        features, hidden = net.num_features, hidden or net.num_features
        if variant == "v2":
            self.head = mlp_v2(features, hidden, dim)
            self.predictor = None
            self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
            self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long))
        else:
            self.head = mlp_v3(projector_layers, features, hidden, dim, last_bn=True)
            self.predictor = mlp_v3(2, dim, hidden, dim, last_bn=predictor_last_bn)
        self.momentum_backbone = copy.deepcopy(self.backbone).requires_grad_(False)
        self.momentum_head = copy.deepcopy(self.head).requires_grad_(False)

    @property
    def learnable_params(self) -> list[dict]:
        """Backbone, head and (v3) predictor; the momentum encoder follows by EMA, not by gradient."""
        groups = [
            {"name": "backbone", "params": list(self.backbone.parameters())},
            {"name": "head", "params": list(self.head.parameters())},
        ]
        if self.predictor is not None:
            groups.append({"name": "predictor", "params": list(self.predictor.parameters())})
        return groups

    @property
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """The key encoder follows the query encoder: backbone and head (He et al. 2020, Eq. 2)."""
        return [*super().momentum_pairs, (self.backbone, self.momentum_backbone), (self.head, self.momentum_head)]

    def embed(self, x: Tensor, **kw) -> Tensor:
        """The query backbone's pooled features ``[B, F]``, the representation MoCo learns."""
        return self.backbone(x)

    def queries(self, x: Tensor) -> Tensor:
        """Normalised queries: head(backbone(x)), then the predictor for v3."""
        z = self.head(self.backbone(x))
        return F.normalize(z if self.predictor is None else self.predictor(z), dim=1)

    @torch.no_grad()
    def keys(self, x: Tensor) -> Tensor:
        """Normalised keys from the momentum backbone and head, without gradient (no predictor)."""
        return F.normalize(self.momentum_head(self.momentum_backbone(x)), dim=1)

    def losses(self, batch: dict) -> dict[str, Tensor]:
        views = batch.get("views")
        if views is None:
            raise ValueError("MoCo needs two views: set data.views=mocov2 (or mocov3)")
        if len(views) != 2:
            raise ValueError(
                f"MoCo takes exactly two views per image, got {len(views)}; set data.views=mocov2"
            )
        if self.variant == "v2":
            return {"loss": self._loss_v2(*views)}
        return {"loss": self._loss_v3(*views)}

    def _loss_v2(self, x_q: Tensor, x_k: Tensor) -> Tensor:
        q = self.queries(x_q)
        k, all_keys = self._shuffled_keys(x_k)
        loss = infonce_v2(q, k, self.queue.clone(), self.temperature)
        if self.training:
            fifo_enqueue(self.queue, self.queue_pointer, all_keys)
        return loss

    def _loss_v3(self, x1: Tensor, x2: Tensor) -> Tensor:
        q1, q2 = self.queries(x1), self.queries(x2)
        k1, k2 = self._gather(self.keys(x1)), self._gather(self.keys(x2))
        ctr = partial(contrastive_v3, temperature=self.temperature, rank_offset=self.global_rank * len(x1))
        return ctr(q1, k2) + ctr(q2, k1)

    def _world_size(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    def _gather(self, x: Tensor) -> Tensor:
        """``x`` of every process concatenated in rank order (no gradient through other ranks)."""
        if self._world_size() == 1:
            return x
        return self.all_gather(x, sync_grads=False).flatten(0, 1)

    @torch.no_grad()
    def _shuffled_keys(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """This process's keys and every process's keys, computed with shuffle-BN (MoCo Sec. 3.3).

        The global batch is permuted with a permutation every process draws alike (seeded by the
        step), each process encodes its slice, and the keys are gathered and un-permuted, so BN
        statistics never mix a query's sample with its own key's.
        """
        world = self._world_size()
        if world == 1:
            keys = self.keys(x)
            return keys, keys
        images = self._gather(x)
        generator = torch.Generator().manual_seed(self.global_step)
        permutation = torch.randperm(len(images), generator=generator).to(images.device)
        mine = slice(self.global_rank * len(x), (self.global_rank + 1) * len(x))
        shuffled_keys = self._gather(self.keys(images[permutation][mine]))
        all_keys = torch.empty_like(shuffled_keys)
        all_keys[permutation] = shuffled_keys
        return all_keys[mine], all_keys

    def _clean_views(self, batch: dict) -> dict:
        return batch if "views" in batch else {**batch, "views": [batch["x"], batch["x"]]}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(self._clean_views(batch), "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._step(self._clean_views(batch), "test")

    def configure_model(self) -> None:
        """Under v3 DDP, BatchNorm becomes SyncBatchNorm where the device supports it (see class doc)."""
        if self.variant != "v3" or self._world_size() == 1:
            return
        device = self.trainer.strategy.root_device.type
        if device in SYNC_BN_DEVICES:
            nn.SyncBatchNorm.convert_sync_batchnorm(self)
        else:
            rank_zero_warn(
                f"MoCo v3 on {device} with {self._world_size()} processes: SyncBatchNorm needs a GPU, "
                "so BatchNorm statistics are per process"
            )
