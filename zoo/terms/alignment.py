"""REPA's representation alignment as a loss term of the diffusion method (Yu et al. 2024, arXiv 2410.06940).

The hidden tokens ``h_n`` after block ``k`` of a transformer denoiser are mapped per token by a projector MLP
``h_phi`` to the token dim of a frozen encoder, and pulled toward that encoder's patch tokens ``y*_n`` of the
clean image: ``L_proj = -(1/N) sum_n cos(y*_n, h_phi(h_n))`` (REPA Eq. 8), averaged over the batch; the
method adds ``lambda L_proj`` to its denoising loss (``weight``, REPA's lambda = 0.5).

Token grids must match: the encoder's feature map at ``stage`` (a ResNet's ``layer3``, a ViT's last block)
is either taken as it is (``match="exact"``), computed from the image resized so that the encoder's grid
equals the denoiser's (``"resize"``, as REPA feeds DINOv2 224 px for SiT/2's 16x16 tokens), or bilinearly
resized to the denoiser's grid (``"interpolate"``). Every mismatch is refused at construction.

Two controls keep the encoder's features and remove their spatial layout (``layout``), to tell spatial
structure from global semantics as the carrier of REPA's gain (iREPA, Singh et al. 2025, arXiv 2512.10794,
finds spatial structure, not the encoder's accuracy, predicts it): ``"permuted"`` shuffles each image's
target tokens over the grid with a fresh permutation every step (the same token set, no position); ``"pooled"``
gives every token the image's mean token (semantics, no spatial variation). ``"spatial"`` is REPA.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.encoders import FrozenEncoder
from zoo.terms.base import LossTerm, TermInputs

MATCHES = ("interpolate", "resize", "exact")
"""How the encoder's token grid is made to equal the denoiser's (``method.terms.align.match``)."""

LAYOUTS = ("spatial", "permuted", "pooled")
"""Where each target token sits (``method.terms.align.layout``): REPA's, or a control without spatial structure."""


def projector(width: int, hidden: int, out: int) -> nn.Sequential:
    """REPA's per-token projector ``Linear-SiLU-Linear-SiLU-Linear`` (``models/sit.py``: 1152-2048-2048-768)."""
    return nn.Sequential(
        nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, out)
    )


def token_cosine(target: Tensor, predicted: Tensor) -> Tensor:
    """``cos(target_n, predicted_n)`` per token, ``[B, N]``, for token sets ``[B, N, D]``."""
    return F.cosine_similarity(target, predicted, dim=-1, eps=1e-8)


def alignment_loss(target: Tensor, predicted: Tensor) -> Tensor:
    """``L_proj = -mean_{b, n} cos(y*_{b,n}, h_phi(h_{b,n}))`` (REPA Eq. 8): -1 for identical token sets."""
    return -token_cosine(target, predicted).mean()


def centred_cosine(target: Tensor, predicted: Tensor) -> Tensor:
    """The mean token cosine after subtracting each set's mean token over the batch and the grid.

    ReLU feature maps have a large positive mean, so the raw cosine is high from the start; this one is
    about 0 for a projector that only predicts the mean.
    """
    target = target - target.mean(dim=(0, 1), keepdim=True)
    predicted = predicted - predicted.mean(dim=(0, 1), keepdim=True)
    return token_cosine(target, predicted).mean()


def placed(tokens: Tensor, layout: str) -> Tensor:
    """Target tokens ``[B, N, D]`` as ``layout`` places them: as they are (``"spatial"``), shuffled over the
    grid per image (``"permuted"``, a fresh draw of the global RNG each call) or each image's mean token at
    every position (``"pooled"``)."""
    if layout == "permuted":
        order = torch.rand(tokens.shape[:2], device=tokens.device).argsort(dim=1)
        return tokens.gather(1, order.unsqueeze(-1).expand_as(tokens))
    if layout == "pooled":
        return tokens.mean(dim=1, keepdim=True).expand_as(tokens)
    return tokens


def encoder_grid(
    encoder: FrozenEncoder, shape: Sequence[int], stage: int | None, input_size: Sequence[int] | None = None
) -> tuple[int, int, int]:
    """``(dim, h, w)`` of the encoder's feature map at ``stage`` for one image of the data's ``shape``."""
    with torch.no_grad():
        features = encoder.feature_map(torch.zeros(1, *shape), stage, input_size)
    _, dim, h, w = features.shape
    return int(dim), int(h), int(w)


class RepresentationAlignment(LossTerm):
    """REPA's ``L_proj`` between the denoiser's tokens after ``block`` and a frozen encoder's patch tokens.

    ``block`` is 1-indexed as in the paper (the hidden state after block 8 of SiT-XL's 28); None picks
    ``round(depth / 3)``. ``shape`` is what the denoiser sees (the data's, or an autoencoder's latents'),
    ``image_shape`` the images the encoder reads (null: ``shape``; latent diffusion: the pixels'), ``patch_size``,
    ``width`` and ``depth`` the denoiser's token geometry (None for a net without patch tokens, which is refused). ``stage`` selects the encoder's feature
    map (``FrozenEncoder.feature_map``), ``match`` how its grid meets the denoiser's (``MATCHES``), ``layout``
    the targets' placement (``LAYOUTS``: REPA's or a control), ``projector_dim`` the projector's hidden width.
    The encoder stays frozen; only the projector trains.
    """

    reads_images = True

    def __init__(
        self,
        encoder: FrozenEncoder | None,
        shape: Sequence[int],
        patch_size: int | None,
        width: int | None,
        depth: int | None,
        block: int | None = None,
        stage: int | None = None,
        match: str = "interpolate",
        projector_dim: int = 256,
        weight: float = 0.5,
        layout: str = "spatial",
        image_shape: Sequence[int] | None = None,
    ) -> None:
        if None in (patch_size, width, depth) or len(shape) != 3:
            raise ValueError(
                "method.terms.align (REPA) aligns the token hidden states of a transformer denoiser, but this "
                "net exposes no patch tokens (it has no net.patch_size, net.width and net.depth): use net=dit"
            )
        if encoder is None:
            raise ValueError(
                "method.terms.align (REPA) needs a frozen encoder, and encoder is null: pass "
                "encoder=zoo encoder.ckpt=<a MoCo run's checkpoints/last.ckpt> (offline), "
                "encoder=timm encoder.weights_path=<state dict file>, or encoder=random (a baseline)"
            )
        if not isinstance(encoder, FrozenEncoder):
            raise ValueError(
                f"method.terms.align.encoder is a {type(encoder).__name__}, not a zoo.encoders.FrozenEncoder; "
                "pass encoder=zoo, encoder=timm or encoder=random"
            )
        block = max(1, round(depth / 3)) if block is None else int(block)
        if not 1 <= block <= depth:
            raise ValueError(
                f"method.terms.align.block={block} is outside the DiT's {depth} blocks: blocks are 1-indexed as in "
                f"REPA, 1..{depth} (net.depth), e.g. {max(1, round(depth / 3))} (about depth / 3)"
            )
        if match not in MATCHES:
            raise ValueError(f"method.terms.align.match={match!r}: choose one of {', '.join(MATCHES)}")
        if layout not in LAYOUTS:
            raise ValueError(f"method.terms.align.layout={layout!r}: choose one of {', '.join(LAYOUTS)}")
        super().__init__(weight=weight, blocks=[block - 1])
        self.block, self.stage, self.match, self.layout = block, stage, match, layout
        self.encoder = encoder
        side = shape[1] // patch_size
        self.grid = (side, shape[2] // patch_size)
        image = tuple(shape if image_shape is None else image_shape)
        self.input_size = self._input_size(image, f"{shape[1]} px / net.patch_size={patch_size}")
        dim, *_ = encoder_grid(encoder, image, stage, self.input_size)
        self.projector = projector(width, projector_dim, dim)

    def _input_size(self, shape: tuple[int, ...], geometry: str) -> tuple[int, int] | None:
        """The encoder's input size under ``match`` for images of ``shape`` (None: its own), or a ValueError naming
        both grids (``geometry`` says where the DiT's comes from)."""
        own = encoder_grid(self.encoder, shape, self.stage)[1:]
        input_side = (self.encoder.input_size or shape[1:])[0]
        stage = "the last stage" if self.stage is None else f"stage {self.stage}"
        grids = (
            f"the encoder's token grid ({stage}, {input_side} px input) is {own[0]}x{own[1]} and the DiT's is "
            f"{self.grid[0]}x{self.grid[1]} ({geometry})"
        )
        if own == self.grid:
            return None
        if self.match == "exact":
            raise ValueError(
                f"method.terms.align.match=exact: {grids}; set method.terms.align.match=interpolate or resize, "
                "another method.terms.align.stage, or net.patch_size"
            )
        if self.match == "interpolate":
            if own == (1, 1):
                raise ValueError(
                    f"method.terms.align: {grids}; a 1x1 map has no spatial tokens to align: pick an earlier "
                    "method.terms.align.stage (e.g. 3, a ResNet's layer3) or method.terms.align.match=resize"
                )
            return None
        if input_side % own[0]:
            raise ValueError(
                f"method.terms.align.match=resize: {grids}, and {input_side} px is not a multiple of "
                f"{own[0]}, so no input size gives the DiT's grid; use method.terms.align.match=interpolate"
            )
        size = (self.grid[0] * input_side // own[0], self.grid[1] * input_side // own[0])
        try:
            resized = encoder_grid(self.encoder, shape, self.stage, size)[1:]
        except (AssertionError, RuntimeError, ValueError) as error:
            raise ValueError(
                f"method.terms.align.match=resize: {grids}; the encoder does not take {size[0]} px inputs "
                f"({type(error).__name__}: {str(error).splitlines()[0]}); use method.terms.align.match="
                "interpolate, or an encoder with dynamic input size (+encoder.dynamic_img_size=true for timm ViTs)"
            ) from None
        if resized != self.grid:
            raise ValueError(
                f"method.terms.align.match=resize: {grids}, and at {size[0]} px it is {resized[0]}x{resized[1]}; "
                "use method.terms.align.match=interpolate, another method.terms.align.stage, or net.patch_size"
            )
        return size

    @torch.no_grad()
    def targets(self, x: Tensor) -> Tensor:
        """The frozen encoder's patch tokens ``y*`` ``[B, N, D]`` of images ``x`` on the denoiser's grid, placed
        as ``layout`` says."""
        features = self.encoder.feature_map(x, self.stage, self.input_size)
        if tuple(features.shape[-2:]) != self.grid:
            features = F.interpolate(features, size=self.grid, mode="bilinear", antialias=True, align_corners=False)
        return placed(features.flatten(2).transpose(1, 2), self.layout)

    def pairs(self, inputs: TermInputs) -> tuple[Tensor, Tensor]:
        """``(y*, h_phi(h))``: the encoder's tokens of the clean images and the projected hidden tokens."""
        hidden = inputs.hidden[self.blocks[0]]
        tokens = self.grid[0] * self.grid[1]
        if hidden.dim() != 3 or hidden.shape[1] != tokens:
            raise ValueError(
                f"method.terms.align: block {self.block}'s hidden state has shape {list(hidden.shape)}, not "
                f"[B, {tokens}, width] tokens on the {self.grid[0]}x{self.grid[1]} grid; use net=dit"
            )
        return self.targets(inputs.batch["x"]), self.projector(hidden)

    def forward(self, inputs: TermInputs) -> Tensor:
        return alignment_loss(*self.pairs(inputs))
