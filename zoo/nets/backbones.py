"""timm backbones sized for small images (8-32 px), constructible from plain arguments.

Both are timm models (``forward_features``/``forward_head``/``num_features`` as in every timm
model), so ``zoo.encoders`` treats them like any other timm net. ``forward(x)`` is the pooled
feature ``[B, F]`` (``num_classes=0``); ``tokens(x)`` the spatial tokens ``[B, N, D]``.
"""

from __future__ import annotations

from collections.abc import Sequence

from timm.models.resnet import BasicBlock
from timm.models.resnet import ResNet as TimmResNet
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn


def feature_tokens(model: nn.Module, features: Tensor) -> Tensor:
    """Tokens ``[B, N, D]`` from a timm model's ``forward_features`` output.

    A feature map ``[B, C, H, W]`` becomes ``H*W`` tokens of width ``C``; a token sequence
    ``[B, P+N, D]`` loses its ``P = model.num_prefix_tokens`` class/register tokens.
    """
    if features.ndim == 4:
        return features.flatten(2).transpose(1, 2)
    if features.ndim == 3:
        return features[:, getattr(model, "num_prefix_tokens", 0) :]
    raise ValueError(
        f"{type(model).__name__}.forward_features gave shape {tuple(features.shape)}; "
        "expected a feature map [B, C, H, W] or tokens [B, N, D]"
    )


class ResNet(TimmResNet):
    """A CIFAR-style ResNet of BasicBlocks (He et al. 2016; ResNet-18 is ``layers=(2, 2, 2, 2)``).

    The ImageNet stem (7x7 stride-2 conv and max-pool) is replaced by a 3x3 stride-1 conv, so an
    8 px input keeps 8x8 -> 1x1 resolution through the three strided stages and 32 px ends at 4x4.
    Stem and stage widths are ``width * (1, 1, 2, 4, 8)``; ``num_features = 8 * width``.
    """

    def __init__(self, in_chans: int = 3, width: int = 64, layers: Sequence[int] = (2, 2, 2, 2)) -> None:
        if width < 2 or width % 2 or len(layers) != 4 or min(layers) < 1:
            raise ValueError(
                f"net.width={width}, net.layers={list(layers)}: need an even width >= 2 and four positive "
                "block counts, e.g. net.width=64 net.layers=[2,2,2,2] (ResNet-18)"
            )
        # timm's plain stem is always 64 wide; its deep stem is 2 * stem_width wide, so asking for a
        # deep stem of width / 2 makes the stages start from `width` channels. The stem is replaced below.
        super().__init__(
            BasicBlock,
            tuple(layers),
            num_classes=0,
            in_chans=in_chans,
            stem_type="deep",
            stem_width=width // 2,
            channels=tuple(width * m for m in (1, 2, 4, 8)),
            # Residual branches start live: with timm's zero-initialised last BN a fresh net would pass
            # only its strided 1x1 shortcuts and see one pixel in four, a degenerate random baseline.
            zero_init_last=False,
        )
        self.conv1 = nn.Conv2d(in_chans, width, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.maxpool = nn.Identity()

    def tokens(self, x: Tensor) -> Tensor:
        """The last stage's feature map as ``H*W`` tokens ``[B, N, 8 * width]``."""
        return feature_tokens(self, self.forward_features(x))


class ViT(VisionTransformer):
    """A small plain ViT (Dosovitskiy et al. 2021) without class token, mean-pooled.

    ``img_size / patch_size`` patches per side; ``num_features = embed_dim``. Mean pooling over
    patch tokens (timm ``global_pool="avg"``, with its ``fc_norm``) replaces the class token so
    ``tokens`` and the pooled feature come from the same sequence.
    """

    def __init__(
        self,
        img_size: int = 32,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 192,
        depth: int = 6,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
    ) -> None:
        if img_size % patch_size:
            raise ValueError(
                f"net.img_size={img_size} is not a multiple of net.patch_size={patch_size}; pick a patch size "
                "that divides the image side"
            )
        if embed_dim % num_heads:
            raise ValueError(f"net.embed_dim={embed_dim} is not divisible by net.num_heads={num_heads}")
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            num_classes=0,
            global_pool="avg",
            class_token=False,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
        )

    def tokens(self, x: Tensor) -> Tensor:
        """The patch tokens ``[B, (img_size / patch_size)^2, embed_dim]`` of the last block."""
        return feature_tokens(self, self.forward_features(x))
