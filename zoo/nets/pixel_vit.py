"""JiT's pixel ViT: "Back to Basics: Let Denoising Generative Models Denoise" (Li & He, arXiv 2511.13720).

A plain ViT on p x p pixel patches: a bottleneck patch embedding (p x p conv to ``bottleneck``
channels, then 1 x 1 to the width), fixed 2-D sin-cos positions, adaLN-Zero blocks with SwiGLU,
RMSNorm, 2-D axial RoPE and qk-norm, in-context class tokens inserted part-way through the stack,
and a final layer that predicts a whole patch per token.
"""

from __future__ import annotations

import torch
from timm.layers import RotaryEmbeddingCat
from torch import Tensor, nn

from zoo.nets.dit import (
    AdaLNFinalLayer,
    AdaLNZeroBlock,
    check_heads,
    check_image_input,
    check_patch_geometry,
    sincos_positions,
    unpatchify,
)
from zoo.nets.embeddings import LabelEmbedding, TimestepEmbedding, batch_time


class BottleneckPatchEmbed(nn.Module):
    """JiT's patch embedding ``Conv1x1(Conv_pxp(x))`` through ``bottleneck`` channels; one p x p conv if None.

    Returns tokens ``[B, N, width]`` in row-major patch order.
    """

    def __init__(self, patch_size: int, in_channels: int, width: int, bottleneck: int | None = 128) -> None:
        super().__init__()
        if bottleneck is None:
            self.proj = nn.Conv2d(in_channels, width, patch_size, stride=patch_size)
        else:
            if bottleneck < 1:
                raise ValueError(
                    f"net.bottleneck={bottleneck}: use a positive channel count, or null for none"
                )
            self.proj = nn.Sequential(
                nn.Conv2d(in_channels, bottleneck, patch_size, stride=patch_size, bias=False),
                nn.Conv2d(bottleneck, width, 1),
            )
        for conv in self.modules():
            if isinstance(conv, nn.Conv2d):
                nn.init.xavier_uniform_(conv.weight.view(conv.out_channels, -1))
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class PixelViT(nn.Module):
    """JiT (Li & He 2025): an adaLN-Zero ViT that denoises raw pixel patches.

    Conditioning ``c = t_emb (+ y_emb)`` drives every block's adaLN-Zero modulation. With
    ``in_context_tokens = n > 0`` (needs ``num_classes > 0``), ``n`` copies of the class embedding plus a
    learned per-token offset are prepended before block ``in_context_start`` (None: ``depth // 3``,
    JiT's 4 of 12) and dropped before the final layer; RoPE leaves them unrotated. ``bottleneck``
    None embeds patches with one p x p conv. ``rope``: 2-D axial rotary embedding on q/k (timm's
    ``RotaryEmbeddingCat`` on the patch grid, positions are patch indices, base 10000).

    ``forward(x, t, y=None, return_hidden=False)``: ``x`` ``[B, C, H, W]``, ``t`` float ``[B]`` (embedded
    as ``1000 t``), ``y`` long ``[B]`` or None. Returns ``x``'s shape, or ``(out, hiddens)`` with the
    ``[B, N, width]`` patch tokens after each block (in-context tokens removed; ``num_blocks = depth``).
    With ``num_classes > 0``, ``y`` None or negative is the null class; an unconditional net ignores ``y``.
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        patch_size: int = 4,
        width: int = 64,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        num_classes: int = 0,
        bottleneck: int | None = 128,
        swiglu: bool = True,
        rmsnorm: bool = True,
        rope: bool = True,
        qk_norm: bool = True,
        in_context_tokens: int = 0,
        in_context_start: int | None = None,
    ) -> None:
        super().__init__()
        check_patch_geometry(image_size, patch_size)
        check_heads(width, heads, multiple=4 if rope else 1)
        if depth < 1:
            raise ValueError(f"net.depth={depth}: need at least one block")
        if num_classes < 0:
            raise ValueError(f"net.num_classes={num_classes}: use 0 (unconditional) or the number of classes")
        if in_context_tokens < 0:
            raise ValueError(f"net.in_context_tokens={in_context_tokens}: use 0 (none) or a positive count")
        if in_context_tokens and not num_classes:
            raise ValueError(
                f"net.in_context_tokens={in_context_tokens} with net.num_classes={num_classes}: in-context "
                "tokens carry the class embedding, so they need net.num_classes > 0; "
                "set net.in_context_tokens=0 otherwise"
            )
        if in_context_start is not None and not in_context_tokens:
            raise ValueError(
                f"net.in_context_start={in_context_start} needs in-context tokens: "
                "set net.in_context_tokens > 0 or in_context_start null"
            )
        start = depth // 3 if in_context_start is None else in_context_start
        if in_context_tokens and not 0 <= start < depth:
            raise ValueError(
                f"net.in_context_start={in_context_start}: must lie in [0, {depth - 1}] (net.depth={depth})"
            )
        self.image_size, self.in_channels, self.patch_size = image_size, in_channels, patch_size
        self.input_shape = (in_channels, image_size, image_size)
        self.width, self.num_classes = width, num_classes
        self.in_context_tokens, self.in_context_start = in_context_tokens, start
        self.grid_size = image_size // patch_size
        self.num_blocks = depth

        self.time_embed = TimestepEmbedding(width)
        self.label_embed = LabelEmbedding(num_classes, width) if num_classes else None
        self.patch_embed = BottleneckPatchEmbed(patch_size, in_channels, width, bottleneck)
        self.register_buffer(
            "pos_embed", sincos_positions(self.grid_size, width).unsqueeze(0), persistent=False
        )
        if in_context_tokens:
            self.context_pos = nn.Parameter(0.02 * torch.randn(1, in_context_tokens, width))
        self.rotary = (
            RotaryEmbeddingCat(width // heads, in_pixels=False, feat_shape=[self.grid_size, self.grid_size])
            if rope
            else None
        )
        self.blocks = nn.ModuleList(
            AdaLNZeroBlock(
                width,
                heads,
                mlp_ratio,
                swiglu=swiglu,
                rmsnorm=rmsnorm,
                qk_norm=qk_norm,
                num_prefix_tokens=in_context_tokens if in_context_tokens and i >= start else 0,
            )
            for i in range(depth)
        )
        self.final_layer = AdaLNFinalLayer(width, patch_size * patch_size * in_channels, rmsnorm=rmsnorm)

    def forward(
        self, x: Tensor, t: Tensor, y: Tensor | None = None, return_hidden: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        check_image_input(x, self.in_channels, self.image_size)
        c = self.time_embed(batch_time(t, len(x)))
        if self.label_embed is not None:
            y_emb = self.label_embed(y, len(x))
            c = c + y_emb
        rope = None if self.rotary is None else self.rotary.get_embed()
        tokens = self.patch_embed(x) + self.pos_embed
        prefix = 0
        hiddens = []
        for i, block in enumerate(self.blocks):
            if self.in_context_tokens and i == self.in_context_start:
                context = y_emb.unsqueeze(1) + self.context_pos
                tokens = torch.cat([context, tokens], dim=1)
                prefix = self.in_context_tokens
            tokens = block(tokens, c, rope=rope)
            hiddens.append(tokens[:, prefix:])
        out = unpatchify(self.final_layer(tokens[:, prefix:], c), self.patch_size, self.in_channels)
        return (out, hiddens) if return_hidden else out
