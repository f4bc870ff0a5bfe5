"""The autoencoder net of ``method=vae``: diffusers' ``AutoencoderKL`` (Rombach et al. CVPR 2022, LDM's KL-f*)
sized for small images.

``len(block_out_channels)`` levels downsample by ``f = 2 ** (levels - 1)``: ``(16, 32, 32)`` is f4
(16 px -> 4 x 4 latents), ``(32, 64)`` f2. The mid-block attention is off by default: at 2 x 2 to 8 x 8
latents a convolution already sees the whole grid.
"""

from __future__ import annotations

from collections.abc import Sequence

from diffusers import AutoencoderKL


def autoencoder_kl(
    in_channels: int,
    image_size: int | None,
    latent_channels: int = 4,
    block_out_channels: Sequence[int] = (16, 32, 32),
    layers_per_block: int = 1,
    norm_groups: int = 16,
    mid_attention: bool = False,
) -> AutoencoderKL:
    """An ``AutoencoderKL`` with ``latent_channels`` latent channels at ``image_size / 2**(levels - 1)``."""
    if image_size is None:
        raise ValueError(
            "method=vae encodes images C, H, W, but the data have no image size (vectors); use image data "
            "(data=digits, data=mnist, ...)"
        )
    levels = len(block_out_channels)
    factor = 2 ** (levels - 1)
    if levels < 1 or image_size % factor:
        raise ValueError(
            f"method.net.block_out_channels={list(block_out_channels)} downsamples by {factor}, which does not "
            f"divide the image size {image_size}; use fewer levels (e.g. [16, 32] for f2)"
        )
    if any(width % norm_groups for width in block_out_channels):
        raise ValueError(
            f"method.net.norm_groups={norm_groups} must divide every width of block_out_channels="
            f"{list(block_out_channels)}"
        )
    if latent_channels < 1:
        raise ValueError(f"method.net.latent_channels={latent_channels}: the latent needs at least one channel")
    return AutoencoderKL(
        in_channels=in_channels,
        out_channels=in_channels,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        latent_channels=latent_channels,
        norm_num_groups=norm_groups,
        sample_size=image_size,
        mid_block_add_attention=mid_attention,
    )
