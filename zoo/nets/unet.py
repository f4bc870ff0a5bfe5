"""The DDPM U-Net (Ho et al. 2020, Appendix B; Dhariwal & Nichol 2021) as diffusers' ``UNet2DModel``."""

from __future__ import annotations

from collections.abc import Sequence

from diffusers import UNet2DModel
from torch import Tensor, nn

from zoo.nets.dit import check_image_input
from zoo.nets.embeddings import batch_time, null_labels


class UNet(nn.Module):
    """diffusers' ``UNet2DModel`` behind the zoo's denoiser interface.

    One resolution level per entry of ``block_out_channels``, each with ``layers_per_block`` ResNet
    blocks, self-attention where ``attention[level]`` is true (``None``: none), a mid block (with
    attention if ``mid_attention``), and the mirrored up path. The timestep ``t`` (the schedule's
    ``c_noise``, roughly in [0, 1]) enters as diffusers' float timestep ``1000 t``. With
    ``num_classes > 0`` diffusers' class embedding has ``num_classes + 1`` rows, the last the null class.

    ``forward(x, t, y=None, return_hidden=False)``: ``x`` ``[B, C, H, W]``, ``t`` float ``[B]``,
    ``y`` long ``[B]`` or None. Returns ``x``'s shape, or ``(out, hiddens)`` with the ``[B, C_l, H_l, W_l]``
    output of every block in execution order: each down block (after its downsampling), the mid
    block, each up block (after its upsampling); ``num_blocks = 2 * len(block_out_channels) + 1``.
    With ``num_classes > 0``, ``y`` None or negative is the null class; an unconditional net ignores ``y``.
    ``dropout``: in every ResNet block, as DDPM++ (EDM's CIFAR-10 net: 0.13).
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        out_channels: int | None = None,
        block_out_channels: Sequence[int] = (32, 64),
        layers_per_block: int = 1,
        attention: Sequence[bool] | None = None,
        mid_attention: bool = True,
        attention_head_dim: int = 8,
        norm_groups: int = 8,
        num_classes: int = 0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        levels = len(block_out_channels)
        attention = [False] * levels if attention is None else list(attention)
        if len(attention) != levels:
            raise ValueError(
                f"net.attention={attention} has {len(attention)} entries but net.block_out_channels="
                f"{list(block_out_channels)} has {levels} levels: give one true/false per level"
            )
        factor = 2 ** (levels - 1)
        if image_size % factor:
            raise ValueError(
                f"data.image_size={image_size}: a U-Net with {levels} levels (net.block_out_channels="
                f"{list(block_out_channels)}) halves the image {levels - 1} times, so the size must be a "
                f"multiple of {factor}; use fewer levels or a data.image_size divisible by {factor}"
            )
        if any(ch % norm_groups for ch in block_out_channels):
            raise ValueError(
                f"net.norm_groups={norm_groups} does not divide every entry of net.block_out_channels="
                f"{list(block_out_channels)}: pick a group count that divides all channel counts"
            )
        if num_classes < 0:
            raise ValueError(f"net.num_classes={num_classes}: use 0 (unconditional) or the number of classes")
        self.image_size, self.in_channels, self.num_classes = image_size, in_channels, num_classes
        self.input_shape = (in_channels, image_size, image_size)
        self.num_blocks = 2 * levels + 1
        self.model = UNet2DModel(
            sample_size=image_size,
            in_channels=in_channels,
            out_channels=in_channels if out_channels is None else out_channels,
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            attention_head_dim=attention_head_dim,
            norm_num_groups=norm_groups,
            add_attention=mid_attention,
            dropout=dropout,
            num_class_embeds=num_classes + 1 if num_classes else None,
        )
        self._captured: list[Tensor] | None = None
        for block in [*self.model.down_blocks, self.model.mid_block, *self.model.up_blocks]:
            block.register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, inputs: tuple, output: Tensor | tuple) -> None:
        """Forward hook (a bound method, so a deep copy such as an EMA copy hooks into the copy)."""
        if self._captured is not None:
            self._captured.append(output[0] if isinstance(output, tuple) else output)

    def forward(
        self, x: Tensor, t: Tensor, y: Tensor | None = None, return_hidden: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        check_image_input(x, self.in_channels, self.image_size)
        timesteps = 1000 * batch_time(t, len(x)).float()
        labels = null_labels(y, self.num_classes, len(x), x.device) if self.num_classes else None
        self._captured = [] if return_hidden else None
        try:
            out = self.model(x, timesteps, class_labels=labels).sample
            hiddens = self._captured
        finally:
            self._captured = None
        return (out, hiddens) if return_hidden else out
