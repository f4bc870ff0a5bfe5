"""DiT: a ViT on image patches with adaLN-Zero conditioning (Peebles & Xie, ICCV 2023, arXiv 2212.09748).

Also the pieces the pixel ViT (JiT) reuses: the geometry checks, the adaLN-Zero block and final
layer, fixed 2-D sin-cos positions and unpatchify. Optionally a DDT head as in RAE's DiT-DH
(Zheng, Ma, Tong, Xie 2025, "Diffusion Transformers with Representation Autoencoders"): a wide,
shallow stack of blocks on a fresh embedding of the input, conditioned per token on
``SiLU(t_emb + body_output)``.
"""

from __future__ import annotations

from timm.layers import AttentionRope, GELUTanh, Mlp, PatchEmbed, RmsNorm, SwiGLU, build_sincos2d_pos_embed
from torch import Tensor, nn

from zoo.nets.embeddings import LabelEmbedding, TimestepEmbedding, batch_time


def check_patch_geometry(image_size: int, patch_size: int) -> None:
    """ValueError unless ``patch_size`` divides ``image_size``; the message lists patch sizes that do."""
    if patch_size < 1 or image_size % patch_size:
        divisors = [p for p in range(1, image_size + 1) if image_size % p == 0]
        raise ValueError(
            f"net.patch_size={patch_size} does not divide data.image_size={image_size}: "
            f"use net.patch_size in {divisors}, or a data.image_size divisible by {patch_size}"
        )


def check_heads(
    width: int, heads: int, name: str = "net.width", multiple: int = 1, heads_name: str = "net.heads"
) -> None:
    """ValueError unless ``heads`` divides ``width`` into head dims that are multiples of ``multiple``."""
    if heads < 1 or width % heads or (width // heads) % multiple:
        raise ValueError(
            f"{name}={width} with {heads_name}={heads}: the width must split into {heads} heads of a size "
            f"divisible by {multiple}; use {name} = a multiple of {heads * multiple}"
        )


def check_image_input(x: Tensor, channels: int, image_size: int) -> None:
    """ValueError unless ``x`` is ``B, channels, image_size, image_size``."""
    if x.dim() != 4 or tuple(x.shape[1:]) != (channels, image_size, image_size):
        raise ValueError(
            f"input of shape {tuple(x.shape)}: this net was built for "
            f"B x {channels} x {image_size} x {image_size}; "
            "build it with net.in_channels/net.image_size matching the data"
        )


def sincos_positions(grid: int, width: int) -> Tensor:
    """Fixed 2-D sin-cos position embedding ``[grid*grid, width]`` (MAE / DiT), from timm."""
    if width % 4:
        raise ValueError(f"net.width={width}: 2-D sin-cos positions need a width divisible by 4")
    return build_sincos2d_pos_embed([grid, grid], dim=width)


def unpatchify(tokens: Tensor, patch_size: int, channels: int) -> Tensor:
    """``[B, g*g, p*p*C]`` patch predictions -> image ``[B, C, g*p, g*p]`` (row-major patch order)."""
    batch, count, _ = tokens.shape
    grid = int(round(count**0.5))
    x = tokens.reshape(batch, grid, grid, patch_size, patch_size, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(batch, channels, grid * patch_size, grid * patch_size)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN's ``x (1 + scale) + shift`` (DiT Sec. 3.2); shift, scale are ``[B, D]`` or ``[B, N, D]``."""
    if shift.dim() == 2:
        shift, scale = shift.unsqueeze(1), scale.unsqueeze(1)
    return x * (1 + scale) + shift


def _gate(gate: Tensor) -> Tensor:
    return gate.unsqueeze(1) if gate.dim() == 2 else gate


def _xavier_linears(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def _token_norm(width: int, rmsnorm: bool) -> nn.Module:
    """The pre-modulation norm, RMSNorm (JiT) or LayerNorm (DiT); affine-free, adaLN gives scale and shift."""
    if rmsnorm:
        return RmsNorm(width, eps=1e-6, affine=False)
    return nn.LayerNorm(width, eps=1e-6, elementwise_affine=False)


class AdaLNZeroBlock(nn.Module):
    """A transformer block with adaLN-Zero conditioning (DiT Sec. 3.2, Fig. 3).

    ``x + gate_a * Attn(modulate(norm(x), shift_a, scale_a))``, then the same around the MLP; the six
    modulation vectors come from ``Linear(SiLU(c))``, zero-initialised so the block starts as the
    identity. Attention is timm's ``AttentionRope`` (plain multi-head attention when ``rope`` is None);
    the MLP is timm's GELU(tanh) ``Mlp`` or, with ``swiglu``, timm's ``SwiGLU`` at 2/3 the hidden width
    (parameter-matched, as in JiT). ``num_prefix_tokens`` leading tokens get no rotary embedding.
    """

    def __init__(
        self,
        width: int,
        heads: int,
        mlp_ratio: float = 4.0,
        swiglu: bool = False,
        rmsnorm: bool = False,
        qk_norm: bool = False,
        num_prefix_tokens: int = 0,
    ) -> None:
        super().__init__()
        self.norm1 = _token_norm(width, rmsnorm)
        self.attn = AttentionRope(
            width,
            num_heads=heads,
            qkv_bias=True,
            num_prefix_tokens=num_prefix_tokens,
            norm_layer=RmsNorm if rmsnorm else nn.LayerNorm,
            qk_norm=qk_norm,
        )
        self.norm2 = _token_norm(width, rmsnorm)
        hidden = int(width * mlp_ratio)
        self.mlp = SwiGLU(width, int(hidden * 2 / 3)) if swiglu else Mlp(width, hidden, act_layer=GELUTanh)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        _xavier_linears(self)
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, x: Tensor, c: Tensor, rope: Tensor | None = None) -> Tensor:
        """``x`` tokens ``[B, N, D]``; ``c`` the condition ``[B, D]`` or per token ``[B, N, D]``."""
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.modulation(c).chunk(6, dim=-1)
        x = x + _gate(gate_a) * self.attn(modulate(self.norm1(x), shift_a, scale_a), rope=rope)
        return x + _gate(gate_m) * self.mlp(modulate(self.norm2(x), shift_m, scale_m))


class AdaLNFinalLayer(nn.Module):
    """DiT's final layer ``Linear(modulate(norm(x), shift, scale))``, zero-initialised (output 0 at init)."""

    def __init__(self, width: int, out_features: int, rmsnorm: bool = False) -> None:
        super().__init__()
        self.norm = _token_norm(width, rmsnorm)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, out_features)
        for layer in (self.modulation[1], self.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


def _patch_embed(image_size: int, patch_size: int, in_channels: int, width: int) -> PatchEmbed:
    embed = PatchEmbed(image_size, patch_size, in_channels, width)
    nn.init.xavier_uniform_(embed.proj.weight.view(width, -1))
    nn.init.zeros_(embed.proj.bias)
    return embed


class DiT(nn.Module):
    """Diffusion Transformer (Peebles & Xie 2023) with an optional DDT head (RAE's DiT-DH).

    Body: timm ``PatchEmbed`` (p x p conv), positions (``"sincos"``: fixed 2-D sin-cos; ``"learned"``:
    a parameter initialised at the sin-cos values), ``depth`` adaLN-Zero blocks conditioned on
    ``c = t_emb (+ y_emb)``, final adaLN layer, unpatchify.
    DDT head (``head_depth > 0``): the input is patch-embedded again at ``head_width``; ``head_depth``
    adaLN-Zero blocks and the final layer are conditioned per token on
    ``s = Linear(SiLU(t_emb + body_output))`` (the Linear only when ``head_width != width``), with
    ``head_heads`` attention heads (null: ``heads``; RAE's DiT-DH-S: 6 in the body, 16 in the head).

    ``forward(x, t, y=None, return_hidden=False)``: ``x`` ``[B, C, H, W]``, ``t`` float ``[B]`` (the
    schedule's ``c_noise``, embedded as ``1000 t``), ``y`` long ``[B]`` or None. Returns ``x``'s shape,
    or ``(out, hiddens)``: the ``[B, N, D]`` tokens after each body block, then after each head block
    (``num_blocks = depth + head_depth``). With ``num_classes > 0``, ``y`` None or negative is the null
    class ``num_classes``; an unconditional net (``num_classes = 0``) ignores ``y``.
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        patch_size: int = 2,
        width: int = 64,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        num_classes: int = 0,
        pos_embed: str = "sincos",
        head_depth: int = 0,
        head_width: int | None = None,
        head_heads: int | None = None,
    ) -> None:
        super().__init__()
        check_patch_geometry(image_size, patch_size)
        check_heads(width, heads)
        if pos_embed not in ("sincos", "learned"):
            raise ValueError(f"net.pos_embed={pos_embed!r}: choose 'sincos' (fixed) or 'learned'")
        if depth < 1 or head_depth < 0:
            raise ValueError(
                f"net.depth={depth}, net.head_depth={head_depth}: need depth >= 1 and head_depth >= 0"
            )
        if num_classes < 0:
            raise ValueError(f"net.num_classes={num_classes}: use 0 (unconditional) or the number of classes")
        if head_width is not None and not head_depth:
            raise ValueError(
                f"net.head_width={head_width} needs a DDT head: set net.head_depth > 0 or head_width null"
            )
        head_width = width if head_width is None else head_width
        heads_name = "net.heads" if head_heads is None else "net.head_heads"
        head_heads = heads if head_heads is None else head_heads
        if head_depth:
            check_heads(head_width, head_heads, name="net.head_width", heads_name=heads_name)
        self.image_size, self.in_channels, self.patch_size = image_size, in_channels, patch_size
        self.input_shape = (in_channels, image_size, image_size)
        self.width, self.num_classes, self.head_depth = width, num_classes, head_depth
        self.grid_size = image_size // patch_size
        self.num_blocks = depth + head_depth

        self.time_embed = TimestepEmbedding(width)
        self.label_embed = LabelEmbedding(num_classes, width) if num_classes else None
        self.patch_embed = _patch_embed(image_size, patch_size, in_channels, width)
        positions = sincos_positions(self.grid_size, width).unsqueeze(0)
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(positions)
        else:
            self.register_buffer("pos_embed", positions, persistent=False)
        self.blocks = nn.ModuleList(AdaLNZeroBlock(width, heads, mlp_ratio) for _ in range(depth))
        out_features = patch_size * patch_size * in_channels
        if head_depth:
            self.head_embed = _patch_embed(image_size, patch_size, in_channels, head_width)
            self.head_condition = nn.Linear(width, head_width) if head_width != width else nn.Identity()
            self.head_blocks = nn.ModuleList(
                AdaLNZeroBlock(head_width, head_heads, mlp_ratio) for _ in range(head_depth)
            )
            self.final_layer = AdaLNFinalLayer(head_width, out_features)
        else:
            self.final_layer = AdaLNFinalLayer(width, out_features)

    def forward(
        self, x: Tensor, t: Tensor, y: Tensor | None = None, return_hidden: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        check_image_input(x, self.in_channels, self.image_size)
        t_emb = self.time_embed(batch_time(t, len(x)))
        c = t_emb if self.label_embed is None else t_emb + self.label_embed(y, len(x))
        tokens = self.patch_embed(x) + self.pos_embed
        hiddens = []
        for block in self.blocks:
            tokens = block(tokens, c)
            hiddens.append(tokens)
        if self.head_depth:
            c = self.head_condition(nn.functional.silu(t_emb.unsqueeze(1) + tokens))
            tokens = self.head_embed(x)
            for block in self.head_blocks:
                tokens = block(tokens, c)
                hiddens.append(tokens)
        out = unpatchify(self.final_layer(tokens, c), self.patch_size, self.in_channels)
        return (out, hiddens) if return_hidden else out
