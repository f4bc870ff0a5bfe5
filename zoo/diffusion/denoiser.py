"""The preconditioned denoiser: net + schedule + prediction + clamps, as one module.

The shape of EDM's ``EDMPrecond`` (Karras et al. 2022, Eq. 7 and Table 1) and k-diffusion's
``Denoiser``: the net sees ``c_in(t) z`` and ``c_noise(t)``; its raw output is read as
``prediction`` (x, eps or v) and turned into the clean estimate x̂ through the clamped conversion
(``min_b``, ``min_a``; JiT's ``max(1 - t, 0.05)``). The diffusion method holds one; a
consistency-distillation teacher and student, REPA's alignment term and latent diffusion reuse it.

A denoising net has ``forward(x, t, y=None, return_hidden=False)`` returning its output, or
``(output, hiddens)`` with one hidden state per block, ``num_blocks`` and ``input_shape`` (every net
in ``zoo.nets`` built for diffusion: ``unet``, ``dit``, ``jit_vit``, ``mlp``).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from zoo.diffusion.parameterization import check_space, convert
from zoo.diffusion.schedules import Schedule, append_dims

DENOISING_NETS = ("unet", "dit", "jit_vit", "mlp")
"""The ``net=`` choices that are denoising nets, named in the error for any other net."""


@dataclass
class DenoiserOutput:
    """One evaluation: the raw net output (read as the denoiser's ``prediction``) and the hidden
    states of the requested blocks, by the index they were asked for."""

    out: Tensor
    hidden: dict[int, Tensor] = field(default_factory=dict)


class Denoiser(nn.Module):
    """``forward(z, t, y) -> x̂``: a denoising net preconditioned by ``schedule`` and read as ``prediction``.

    ``output(z, t, y, blocks=...)`` gives the raw net output and the hidden states after the chosen
    blocks from one pass of the net. Block indices are 0-based positions in the net's block list
    (negative from the end), as in timm's ``forward_intermediates``.
    """

    def __init__(
        self,
        net: nn.Module,
        schedule: Schedule,
        prediction: str = "v",
        min_b: float = 0.0,
        min_a: float = 0.0,
        shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        check_space("method.prediction", prediction)
        check_denoising_net(net, shape)
        self.net = net
        self.schedule = schedule
        self.prediction = prediction
        self.min_b, self.min_a = min_b, min_a

    @property
    def num_blocks(self) -> int:
        return int(self.net.num_blocks)

    def block_index(self, index: int) -> int:
        """``index`` as a position in ``0..num_blocks - 1``, or a ValueError naming the valid range."""
        if not -self.num_blocks <= index < self.num_blocks:
            raise ValueError(
                f"block {index} is outside the net's {self.num_blocks} blocks "
                f"(0..{self.num_blocks - 1}, or negative from the end)"
            )
        return index % self.num_blocks

    def output(self, z: Tensor, t: Tensor, y: Tensor | None = None, blocks: Sequence[int] = ()) -> DenoiserOutput:
        """The raw net output at ``(z, t)`` and the hidden states after ``blocks``, from one forward pass."""
        net_input = append_dims(self.schedule.c_in(t), z.ndim) * z
        if not blocks:
            return DenoiserOutput(self.net(net_input, self.schedule.c_noise(t), y))
        positions = {index: self.block_index(index) for index in blocks}
        out, hiddens = self.net(net_input, self.schedule.c_noise(t), y, return_hidden=True)
        return DenoiserOutput(out, {index: hiddens[position] for index, position in positions.items()})

    def convert(self, out: Tensor, space: str, z: Tensor, t: Tensor) -> Tensor:
        """The raw output ``out`` read as the prediction and mapped to ``space`` (x, eps, v or score)."""
        return convert(out, self.prediction, space, z, t, self.schedule, self.min_b, self.min_a)

    def embed(self, x: Tensor, t: Tensor, y: Tensor | None = None, layer: int | None = None) -> Tensor:
        """Pooled hidden features of block ``layer`` (default: the middle one) for clean ``x`` noised to
        ``t`` with fresh noise: token grids and feature maps averaged over tokens/space (DDAE, Xiang et
        al. ICCV 2023)."""
        index = self.num_blocks // 2 if layer is None else layer
        if not -self.num_blocks <= index < self.num_blocks:
            raise ValueError(
                f"embed layer={layer}: the net has {self.num_blocks} hidden blocks (0..{self.num_blocks - 1})"
            )
        z = self.schedule.noise(x, t, torch.randn_like(x))
        hidden = self.output(z, t, y, blocks=[index]).hidden[index]
        return hidden.mean(dim=1) if hidden.dim() == 3 else hidden.flatten(2).mean(-1) if hidden.dim() == 4 else hidden

    def forward(self, z: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The clean estimate x̂(z, t): the one function samplers, probes and metrics use."""
        return self.convert(self.output(z, t, y).out, "x", z, t)

    def check_grid_ends(self) -> None:
        """Raise a ValueError if ``denoise`` is undefined where a sampler evaluates it.

        Samplers call ``denoise`` from the grid's first time ``t_min`` (pure noise for the flow and the
        cosine VP: a = 0) up to ``t_max``, which is skipped where b(t_max) = 0; the ends are where the
        conversion of the prediction to x can divide by zero (eps or score: ``x = (z - b eps)/a``).
        """
        ends = [self.schedule.t_min]
        if float(self.schedule.b(torch.tensor(self.schedule.t_max, dtype=torch.float64))) > 0:
            ends.append(self.schedule.t_max)
        one = torch.ones(1, dtype=torch.float64)
        for t in ends:
            times = torch.tensor([t], dtype=torch.float64)
            x_hat = self.convert(one, "x", one, times)
            if not torch.isfinite(x_hat).all():
                raise ValueError(
                    f"method.prediction={self.prediction!r} cannot be turned into a clean estimate at t={t}, "
                    f"an end of the sampling grid on {type(self.schedule).__name__}: x = (z - b eps) / a with "
                    "a = 0 (pure noise); set method.min_a > 0 (e.g. 0.05), start the grid later "
                    "(method.schedule.t_min > 0), or predict 'x' or 'v'"
                )


def check_denoising_net(net: nn.Module, shape: Sequence[int] | None = None) -> None:
    """Raise a ValueError naming the fix if ``net`` is not a denoising net, or not one for ``shape``."""
    parameters = inspect.signature(net.forward).parameters
    if not {"t", "return_hidden"} <= set(parameters) or not hasattr(net, "num_blocks"):
        raise ValueError(
            f"{type(net).__name__} is not a denoising net (forward(x, t, y, return_hidden), num_blocks): "
            f"a diffusion method needs one of net={', net='.join(DENOISING_NETS)}"
        )
    if shape is not None and tuple(net.input_shape) != tuple(shape):
        kind = "vectors" if len(shape) == 1 else "images"
        hint = "net=mlp" if kind == "vectors" else "an image net (net=unet, net=dit, net=jit_vit)"
        raise ValueError(
            f"net {type(net).__name__} takes inputs of shape {list(net.input_shape)} but the data are {kind} of "
            f"shape {list(shape)}: use {hint}"
        )
