"""DiT on a latent token grid, RAE's stage 2 (Zheng, Ma, Tong, Xie 2025, Sec. 4): ``zoo.nets.dit.DiT``
built with a warning when it is narrower than the tokens it denoises.

RAE's finding (Sec. 4.1, Fig. 3): on tokens of dimension ``n`` a DiT of width ``d < n`` cannot fit the
diffusion loss even on a single image; the loss plateaus until ``d >= n``. The wide shallow DDT head
(DiT-DH: ``head_depth`` blocks at ``head_width``) supplies that width cheaply.
"""

from __future__ import annotations

import warnings

from zoo.nets.dit import DiT

WIDTH_FINDING = (
    "RAE (Zheng et al. 2025, Sec. 4.1) finds that a DiT narrower than the token dimension cannot fit the "
    "diffusion loss on high-dimensional tokens (the loss plateaus)"
)


def check_width(width: int, token_dim: int, head_depth: int = 0, head_width: int | None = None) -> None:
    """Warn (not an error) when neither the DiT body nor its DDT head is as wide as a token."""
    widest = max(width, head_width or width) if head_depth else width
    if widest < token_dim:
        warnings.warn(
            f"net.width={width} is below the token dimension {token_dim} and no DDT head is wider: "
            f"{WIDTH_FINDING}; set net.width >= {token_dim}, or add the wide shallow head "
            f"net.head_depth=2 net.head_width={max(token_dim, 2 * width)} (DiT-DH)",
            stacklevel=2,
        )


def token_dit(image_size: int, in_channels: int, patch_size: int = 1, **kwargs) -> DiT:
    """A ``DiT`` on an ``in_channels x image_size x image_size`` token grid, checked by ``check_width``.

    A token of a ``p x p`` patch has ``p * p * in_channels`` numbers; ``kwargs`` go to ``DiT``.
    """
    check_width(
        kwargs.get("width", 64),
        patch_size * patch_size * in_channels,
        kwargs.get("head_depth", 0),
        kwargs.get("head_width"),
    )
    return DiT(image_size=image_size, in_channels=in_channels, patch_size=patch_size, **kwargs)
