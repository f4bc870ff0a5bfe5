"""Low-dimensional data embedded in D dimensions: the toy of JiT (Li & He, arXiv 2511.13720, §3.3).

An intrinsic point ``z`` in R^d (a spiral, a swiss roll, concentric circles or a Gaussian mixture)
is embedded as ``x = P z`` by a fixed random column-orthogonal ``P`` (D x d, PᵀP = I), optionally
plus isotropic ambient Gaussian noise. Every intrinsic set lies in the unit ball of R^d, so the
clean ``x`` lie in the unit ball of R^D and in [-1, 1]^D; noisy ``x`` can leave it by about the
noise std (they are not clipped, which would bias the off-manifold noise).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.base import TensorSamples, ZooDataModule
from datamodules.splits import split_indices

_SPIRAL_ANGLES = (1.5 * math.pi, 4.5 * math.pi)
_POLYLINE_VERTICES = 8192
_GMM_STD = 0.08
_GMM_TRUNCATION = 3.0


class _Spiral:
    """``arms`` Archimedean arms ``r = θ / 4.5π`` for θ in [1.5π, 4.5π] (1.5 turns, r in [1/3, 1]),
    arm ``k`` rotated by ``2πk / arms``; the label is the arm. θ is drawn uniformly.

    The distance to the curve is the distance to a polyline of 8192 vertices per arm (nearest
    vertex from a k-d tree, then the exact distance to its two segments); the polyline deviates
    from the curve by under 1e-6.
    """

    subspace_dim, intrinsic_dim = 2, 1

    def __init__(self, arms: int) -> None:
        self.arms = arms
        theta = torch.linspace(*_SPIRAL_ANGLES, _POLYLINE_VERTICES, dtype=torch.float64)
        self.num_classes = arms
        self.vertices = torch.cat(
            [self.points(theta, torch.full_like(theta, k)) for k in range(arms)]
        ).numpy()
        self.tree = cKDTree(self.vertices)

    def points(self, theta: Tensor, arm: Tensor) -> Tensor:
        angle = theta + 2 * math.pi * arm / self.arms
        return (theta / _SPIRAL_ANGLES[1]).unsqueeze(-1) * torch.stack([angle.cos(), angle.sin()], -1)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        arm = torch.randint(self.arms, (n,), generator=generator)
        low, high = _SPIRAL_ANGLES
        theta = low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)
        return self.points(theta, arm.double()), arm

    def distance(self, z: Tensor) -> Tensor:
        return torch.from_numpy(self._polyline_distance(z.double().cpu().numpy()))

    def _polyline_distance(self, query: np.ndarray) -> np.ndarray:
        _, nearest = self.tree.query(query)
        position = nearest % _POLYLINE_VERTICES
        best = np.full(len(query), np.inf)
        for step, valid in ((-1, position > 0), (1, position < _POLYLINE_VERTICES - 1)):
            start = self.vertices[nearest]
            end = self.vertices[np.where(valid, nearest + step, nearest)]
            best = np.minimum(best, _segment_distance(query, start, end))
        return best


class _SwissRoll:
    """The swiss roll: the 1-arm spiral (cross-section) times a height in [-1, 1], scaled by 1/√2
    into the unit ball of R^3; coordinates (spiral x, height, spiral y). Unlabeled.

    The roll is a product of a curve and an interval in orthogonal coordinates, so the squared
    distance to it is the squared distance to the curve plus the squared distance to the interval.
    """

    subspace_dim, intrinsic_dim = 3, 2

    def __init__(self) -> None:
        self.num_classes = 0
        self.cross_section = _Spiral(arms=1)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        curve, _ = self.cross_section.sample(n, generator)
        height = 2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1
        z = torch.stack([curve[:, 0], height, curve[:, 1]], -1) / math.sqrt(2)
        return z, torch.full((n,), -1, dtype=torch.long)

    def distance(self, z: Tensor) -> Tensor:
        unscaled = z.double().cpu() * math.sqrt(2)
        to_curve = self.cross_section.distance(unscaled[:, [0, 2]])
        to_interval = (unscaled[:, 1].abs() - 1).clamp(min=0)
        return torch.hypot(to_curve, to_interval) / math.sqrt(2)


class _Circles:
    """``count`` concentric circles of radii ``(k + 1) / count``; the label is the circle."""

    subspace_dim, intrinsic_dim = 2, 1

    def __init__(self, count: int) -> None:
        self.num_classes = count
        self.radii = torch.arange(1, count + 1, dtype=torch.float64) / count

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        circle = torch.randint(len(self.radii), (n,), generator=generator)
        angle = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
        return self.radii[circle].unsqueeze(-1) * torch.stack([angle.cos(), angle.sin()], -1), circle

    def distance(self, z: Tensor) -> Tensor:
        norm = z.double().cpu().norm(dim=-1, keepdim=True)
        return (norm - self.radii).abs().min(dim=-1).values


class _TruncatedGaussianMixture:
    """``count`` isotropic Gaussians (std 0.08) with means on the circle of radius 0.76, each
    truncated at 3 std (resampled beyond), so the support is a union of disks inside the unit disk;
    the label is the component. A plain Gaussian's support is the whole plane, which would make the
    in-plane distance always 0; the truncation gives the mixture a compact support, and the
    distance to it is exact: ``max(0, min_k ||z - mu_k|| - 3 std)``.
    """

    subspace_dim, intrinsic_dim = 2, 2

    def __init__(self, count: int) -> None:
        self.num_classes = count
        angle = 2 * math.pi * torch.arange(count, dtype=torch.float64) / count
        self.means = (1 - _GMM_TRUNCATION * _GMM_STD) * torch.stack([angle.cos(), angle.sin()], -1)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        component = torch.randint(len(self.means), (n,), generator=generator)
        offset = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        outside = offset.norm(dim=-1) > _GMM_TRUNCATION
        while outside.any():
            offset[outside] = torch.randn(int(outside.sum()), 2, generator=generator, dtype=torch.float64)
            outside = offset.norm(dim=-1) > _GMM_TRUNCATION
        return self.means[component] + _GMM_STD * offset, component

    def distance(self, z: Tensor) -> Tensor:
        to_means = torch.cdist(z.double().cpu(), self.means).min(dim=-1).values
        return (to_means - _GMM_TRUNCATION * _GMM_STD).clamp(min=0)


_DEFAULT_CLASSES = {"spiral": 2, "circles": 2, "gmm": 8}
KINDS = ("spiral", "swiss_roll", "circles", "gmm")


class Manifold(ZooDataModule):
    """``n_samples`` points of ``kind`` embedded in ``ambient_dim`` dims (JiT §3.3), split 80/10/10.

    ``kind``: ``spiral`` (2-D, ``n_classes`` arms, default 2), ``swiss_roll`` (3-D, unlabeled:
    ``num_classes`` 0, labels -1), ``circles`` (2-D, ``n_classes`` concentric circles, default 2)
    or ``gmm`` (2-D, ``n_classes`` truncated Gaussian components, default 8). ``noise`` is the
    std of isotropic Gaussian noise added in the ambient space. ``P`` (D x d, PᵀP = I) is drawn
    from ``seed``, the samples from ``seed + 1``, so each is fixed by the seed alone.
    ``subspace_dim`` is d, ``intrinsic_dim`` the manifold's own dimension (1 for curves).
    """

    def __init__(
        self,
        kind: str = "spiral",
        ambient_dim: int = 2,
        n_samples: int = 10000,
        noise: float = 0.0,
        n_classes: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.kind = kind
        self.intrinsic_set = _intrinsic_set(kind, n_classes)
        self.subspace_dim = self.intrinsic_set.subspace_dim
        self.intrinsic_dim = self.intrinsic_set.intrinsic_dim
        if ambient_dim < self.subspace_dim:
            raise ValueError(
                f"data.ambient_dim={ambient_dim} is below the {self.subspace_dim} dims of kind={kind!r}; "
                f"set data.ambient_dim >= {self.subspace_dim}"
            )
        if noise < 0:
            raise ValueError(f"data.noise={noise} is a standard deviation; set it >= 0")
        if n_samples < 10:
            raise ValueError(f"data.n_samples={n_samples}: the 80/10/10 split needs at least 10 samples")
        self.ambient_dim, self.n_samples, self.noise = ambient_dim, n_samples, noise
        self.P = column_orthogonal(ambient_dim, self.subspace_dim, self.seed)
        self.shape = (ambient_dim,)
        self.num_classes = self.intrinsic_set.num_classes

    def _splits(self) -> tuple[Dataset, Dataset, Dataset]:
        generator = torch.Generator().manual_seed(self.seed + 1)
        z, y = self.intrinsic_set.sample(self.n_samples, generator)
        x = z @ self.P.double().T
        if self.noise:
            x = x + self.noise * torch.randn(x.shape, generator=generator, dtype=torch.float64)
        x01 = ((x + 1) / 2).float()
        return tuple(TensorSamples(x01[i], y[i]) for i in split_indices(self.n_samples, self.seed))

    def distance_to_manifold(self, x: Tensor) -> Tensor:
        """Euclidean distance of each ambient point ``x`` (``..., D``, the batches' [-1, 1] scale)
        to the clean data manifold ``P M``: ``sqrt(||(I - PPᵀ)x||² + dist(Pᵀx, M)²)``, the metric of
        JiT's toy (arXiv 2511.13720, §3.3, Fig. 2). Returns float32 ``...`` on ``x``'s device.
        """
        if x.shape[-1] != self.ambient_dim:
            raise ValueError(f"points of dim {x.shape[-1]} given to a manifold in {self.ambient_dim} dims")
        flat = x.reshape(-1, self.ambient_dim).double()
        projection = self.P.to(flat.device, torch.float64)
        z = flat @ projection
        off_subspace = (flat - z @ projection.T).norm(dim=-1).cpu()
        within = self.intrinsic_set.distance(z)
        return torch.hypot(off_subspace, within).float().reshape(x.shape[:-1]).to(x.device)


def column_orthogonal(rows: int, cols: int, seed: int) -> Tensor:
    """A random ``rows x cols`` matrix with orthonormal columns (QR of a Gaussian), fixed by ``seed``."""
    gaussian = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    return (q * torch.sign(torch.diagonal(r))).float()


def _intrinsic_set(
    kind: str, n_classes: int | None
) -> _Spiral | _SwissRoll | _Circles | _TruncatedGaussianMixture:
    if kind not in KINDS:
        raise ValueError(f"data.kind={kind!r} is not a known manifold; use one of {list(KINDS)}")
    if kind == "swiss_roll":
        if n_classes is not None:
            raise ValueError("data.n_classes: the swiss roll is unlabeled; set data.n_classes=null")
        return _SwissRoll()
    count = _DEFAULT_CLASSES[kind] if n_classes is None else n_classes
    if count < 1:
        raise ValueError(
            f"data.n_classes={n_classes}: {kind} needs at least 1 class; set it >= 1 or null for {_DEFAULT_CLASSES[kind]}"
        )
    return {"spiral": _Spiral, "circles": _Circles, "gmm": _TruncatedGaussianMixture}[kind](count)


def _segment_distance(point: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    direction = end - start
    length2 = np.maximum((direction**2).sum(-1), 1e-300)
    along = np.clip(((point - start) * direction).sum(-1) / length2, 0.0, 1.0)
    return np.linalg.norm(point - start - along[:, None] * direction, axis=-1)
