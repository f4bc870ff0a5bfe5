"""The one factory for frozen representation encoders (generative metrics, REPA, VA-VAE, RAE).

``FrozenEncoder`` wraps any timm-style net (``forward_features``/``forward_head``, as every timm
model and every ``zoo.nets.backbones`` net) and returns ``(tokens [B, N, D], pooled [B, D])``.
Its parameters never train and it stays in eval mode; gradients still flow to the input, so
guidance can differentiate a reward through it. Builders: ``timm`` (a timm model by name, with
pretrained or local weights), ``zoo`` (the backbone of a checkpoint the zoo trained, e.g. MoCo's
query backbone: the offline default), ``random`` (an untrained net, for tests and baselines).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.models import create_model
from torch import Tensor, nn

from zoo.loading import Has, load_method
from zoo.nets.backbones import feature_tokens


class FrozenEncoder(nn.Module):
    """A frozen, always-eval encoder: ``forward(x) -> (tokens [B, N, D], pooled [B, D])``.

    ``x`` is in the zoo's range [-1, 1]. Before encoding it is resized to ``input_size``
    (``(H, W)``; ``None`` keeps it), a 1-channel image is repeated to ``in_chans`` channels, and
    with ``mean``/``std`` given (per channel, for [0, 1] images, e.g. ImageNet's) it is mapped to
    [0, 1] and standardised.
    """

    def __init__(
        self,
        backbone: nn.Module,
        input_size: Sequence[int] | None = None,
        in_chans: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if not (hasattr(backbone, "forward_features") and hasattr(backbone, "forward_head")):
            raise ValueError(
                f"{type(backbone).__name__} is not a timm-style net: FrozenEncoder needs forward_features and "
                "forward_head (any timm model or zoo.nets.backbones net)"
            )
        if (mean is None) != (std is None):
            raise ValueError("FrozenEncoder normalises with both mean and std or neither; pass both")
        self.backbone = backbone.requires_grad_(False)
        self.input_size = tuple(input_size) if input_size is not None else None
        self.in_chans = in_chans
        self.dim = int(backbone.num_features)
        self.register_buffer(
            "mean", None if mean is None else torch.tensor(mean).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", None if std is None else torch.tensor(std).view(1, -1, 1, 1), persistent=False
        )
        self.train(False)

    def train(self, mode: bool = True) -> FrozenEncoder:
        """Stays in eval mode whatever ``mode`` says (BN statistics and dropout stay frozen)."""
        return super().train(False)

    def prepare(self, x: Tensor, input_size: Sequence[int] | None = None) -> Tensor:
        """Resize (to ``input_size``, default the encoder's own), repeat gray to color, and normalise ``x``
        as the encoder expects."""
        size = self.input_size if input_size is None else tuple(input_size)
        if size is not None and tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        if self.in_chans is not None and x.shape[1] != self.in_chans:
            if x.shape[1] != 1:
                raise ValueError(
                    f"the encoder takes {self.in_chans}-channel images but got {x.shape[1]} channels; "
                    "only 1-channel images are expanded"
                )
            x = x.expand(-1, self.in_chans, -1, -1)
        if self.mean is not None:
            x = ((x + 1) / 2 - self.mean) / self.std
        return x

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.backbone.forward_features(self.prepare(x))
        return feature_tokens(self.backbone, features), self.backbone.forward_head(features, pre_logits=True)

    def feature_map(self, x: Tensor, stage: int | None = None, input_size: Sequence[int] | None = None) -> Tensor:
        """The spatial features ``[B, D, h, w]`` after ``stage``: an index of timm's ``forward_intermediates``
        (a ResNet's 0 = stem, 1-4 = layer1-4; a ViT's block, prefix tokens dropped; None = the last).

        An earlier stage keeps a finer grid (a ResNet's last map is 1x1 on 8 px digits); ``input_size``
        replaces the encoder's own input size, as REPA resizes the image to match token grids.
        """
        if not hasattr(self.backbone, "forward_intermediates"):
            raise ValueError(
                f"{type(self.backbone).__name__} has no forward_intermediates, so its stages cannot be read as "
                "token grids; use a timm model or a zoo.nets.backbones net as the encoder"
            )
        x = self.prepare(x, input_size)
        index = -1 if stage is None else stage
        [features] = self.backbone.forward_intermediates(x, indices=[index], intermediates_only=True)
        return features


def timm(
    name: str,
    pretrained: bool = False,
    weights_path: str | None = None,
    input_size: int | None = None,
    normalize: bool = True,
    **kwargs,
) -> FrozenEncoder:
    """A timm model by ``name`` (``timm.create_model`` with ``kwargs``), frozen.

    Weights: from ``weights_path`` if given (a state dict file, ``.safetensors`` or a ``.pth`` loaded with
    ``weights_only=True``, through timm's own loader: its checkpoint filter resamples the position embedding to
    the ``img_size`` asked for and converts the original DINOv2 files), else timm's pretrained weights if
    ``pretrained`` (the Hugging Face cache or a download), else random. ``input_size`` resizes inputs to that side (224 for most
    pretrained models); ``normalize`` applies the model's pretrained mean/std.
    """
    if weights_path is not None:
        if not Path(weights_path).is_file():
            raise FileNotFoundError(
                f"encoder.weights_path={weights_path}: no such file; download the weights of timm's {name!r} "
                f"(huggingface-cli download timm/{name} model.safetensors --local-dir <folder>) and pass "
                "encoder.weights_path=<folder>/model.safetensors"
            )
        model = create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(weights_path)}, **kwargs)
    elif pretrained:
        try:
            model = create_model(name, pretrained=True, **kwargs)
        except OSError as error:
            raise RuntimeError(
                f"encoder.pretrained=true: the pretrained weights of timm model {name!r} are not in the local "
                f"cache and could not be downloaded ({type(error).__name__}); with no network, fetch them "
                "elsewhere and pass encoder.weights_path=<state dict file>"
            ) from error
    else:
        model = create_model(name, **kwargs)
    model.reset_classifier(0)
    config = model.pretrained_cfg
    return FrozenEncoder(
        model,
        input_size=None if input_size is None else (input_size, input_size),
        in_chans=kwargs.get("in_chans", config.get("input_size", (3,))[0]),
        mean=config.get("mean") if normalize else None,
        std=config.get("std") if normalize else None,
    )


def zoo(ckpt: str | Path) -> FrozenEncoder:
    """The backbone of a zoo checkpoint (MoCo: the query backbone), inputs resized to the run's image size.

    The method is rebuilt by ``zoo.loading.load_method`` (weights only), which refuses a checkpoint
    of a method without a ``backbone``.
    """
    method = load_method(
        ckpt,
        expect=Has("backbone"),
        expected="the checkpoint of a representation method with a `backbone`, e.g. "
        "logs/moco/.../checkpoints/last.ckpt from `python run.py method=moco`",
        setting="encoder.ckpt",
    )
    shape = list(method.run_config["shape"])
    return FrozenEncoder(method.backbone, input_size=shape[1:] if len(shape) == 3 else None, in_chans=shape[0])


def random(net: nn.Module, input_size: int | None = None) -> FrozenEncoder:
    """``net`` as built, untrained and frozen: a test fixture and a random-features baseline."""
    return FrozenEncoder(net, input_size=None if input_size is None else (input_size, input_size))
