"""An MAE-style ViT decoder from a grid of tokens to pixels (He et al., "Masked Autoencoders Are Scalable
Vision Learners", CVPR 2022, Sec. 3; RAE's decoder, Zheng, Ma, Tong, Xie 2025, Sec. 3).

Tokens ``[B, g*g, D]`` are embedded linearly at ``width``, given fixed 2-D sin-cos positions, passed
through ``depth`` timm ``Block``s and a LayerNorm, and each token predicts one ``p x p`` pixel patch
(``p = patch_size``), so the image side is ``g * p``. No mask tokens: every token is present.
"""

from __future__ import annotations

from timm.models.vision_transformer import Block
from torch import Tensor, nn

from zoo.nets.dit import check_heads, sincos_positions, unpatchify


class ViTDecoder(nn.Module):
    """``forward(tokens [B, grid*grid, token_dim]) -> image [B, out_channels, image_size, image_size]``.

    ``patch_size`` null is ``image_size // grid``; any other value must tile the image with the token
    grid (``grid * patch_size == image_size``), else a ValueError names the patch size that does.
    """

    def __init__(
        self,
        grid: int,
        token_dim: int,
        image_size: int,
        out_channels: int,
        patch_size: int | None = None,
        width: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if grid < 1 or image_size % grid:
            raise ValueError(
                f"the encoder's {grid}x{grid} token grid does not tile the {image_size} px image: no decoder patch "
                "size maps it back to pixels; use an encoder whose patch size divides the image side"
            )
        patch_size = image_size // grid if patch_size is None else patch_size
        if grid * patch_size != image_size:
            raise ValueError(
                f"method.decoder.patch_size={patch_size} does not tile the {grid}x{grid} token grid onto the "
                f"{image_size} px image ({grid} x {patch_size} != {image_size}); use "
                f"method.decoder.patch_size={image_size // grid} (or null)"
            )
        check_heads(width, heads, name="method.decoder.width")
        self.grid, self.patch_size, self.out_channels = grid, patch_size, out_channels
        self.embed = nn.Linear(token_dim, width)
        self.register_buffer("pos_embed", sincos_positions(grid, width).unsqueeze(0), persistent=False)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, qkv_bias=True) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.pred = nn.Linear(width, patch_size * patch_size * out_channels)

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 3 or tokens.shape[1] != self.grid * self.grid:
            raise ValueError(
                f"tokens of shape {tuple(tokens.shape)}: this decoder takes [B, {self.grid * self.grid}, D]"
            )
        x = self.embed(tokens) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return unpatchify(self.pred(self.norm(x)), self.patch_size, self.out_channels)
