"""The joint for extra loss terms: what a term sees and what it returns.

A method with terms (``method.terms.<name>: {_target_: ..., weight: ...}``, dropped with
``~method.terms.<name>``) adds ``weight * term(inputs)`` to its main loss and logs each term's
unweighted value under ``<stage>/<name>``. A term is an ``nn.Module``: its parameters (a projector,
say) join the method's ``learnable_params``; a frozen encoder inside it stays frozen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from zoo.diffusion.denoiser import Denoiser
from zoo.diffusion.parameterization import true_value


@dataclass
class TermInputs:
    """One training batch as the denoising loss saw it.

    ``x`` is what the denoiser models (the pixels of ``batch["x"]``, or their latents), ``z = a x + b eps``
    at times ``t``, ``y`` the labels given to the net, ``out`` the raw net output and ``hidden`` the
    hidden states of the blocks the terms asked for (``LossTerm.blocks``).
    """

    batch: dict
    x: Tensor
    eps: Tensor
    t: Tensor
    z: Tensor
    y: Tensor | None
    out: Tensor
    hidden: dict[int, Tensor]
    denoiser: Denoiser

    def predicted(self, space: str) -> Tensor:
        """The net's estimate of ``space`` (x, eps, v or score), through the denoiser's clamps."""
        return self.denoiser.convert(self.out, space, self.z, self.t)

    def target(self, space: str) -> Tensor:
        """The true ``space`` value, through the same clamped map as ``predicted`` (as ``denoising_loss``)."""
        schedule = self.denoiser.schedule
        truth = true_value(self.denoiser.prediction, self.x, self.eps, self.t, schedule)
        return self.denoiser.convert(truth, space, self.z, self.t)


class LossTerm(nn.Module):
    """An extra loss: ``forward(inputs: TermInputs) -> scalar``, added to the loss times ``weight``.

    ``blocks``: the hidden states (block indices of the denoiser's net) the term reads from
    ``inputs.hidden``; the method computes them in the same forward pass as the loss. ``reads_images``: the term
    reads the batch's pixels ``inputs.batch["x"]`` (refused on batches of extracted latents, ``data=latents``).
    """

    reads_images: bool = False

    def __init__(self, weight: float = 1.0, blocks: Sequence[int] = ()) -> None:
        super().__init__()
        self.weight = float(weight)
        self.blocks = tuple(blocks)

    def forward(self, inputs: TermInputs) -> Tensor:
        raise NotImplementedError
