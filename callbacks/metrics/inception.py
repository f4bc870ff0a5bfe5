"""The Inception-v3 of FID, built here and loaded from a local weights file: pool features and logits.

FID (Heusel et al., NeurIPS 2017) and the Inception Score (Salimans et al., NeurIPS 2016) are defined on
the TensorFlow graph ``inception-2015-12-05`` (pool_3, 2048 features; the 1008-way softmax). Its PyTorch
port, shared by pytorch-fid and torch-fidelity, is torchvision's Inception-v3 with four blocks changed to
match the graph: the average pools of Mixed_5b-5d, 6b-6e and 7b leave padding out of the mean, and
Mixed_7c pools with a max. Both projects publish the converted weights as the same file
(``…inception-2015-12-05-6726825d.pth``); this module builds that net and reads the file with
``torch.load(weights_only=True)`` (a state dict, never code), so nothing is downloaded and no pickle runs.

The net takes RGB images as floats in [0, 255] at 299×299 (how they get there is the convention's resize,
``callbacks.metrics.image_resize``) and scales them to [-1, 1] as the graph does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.inception import Inception3, InceptionA, InceptionC, InceptionE

INCEPTION_FILES = {
    "weights-inception-2015-12-05-6726825d.pth": "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
    "weights-inception-2015-12-05-6726825d.pth",
    "pt_inception-2015-12-05-6726825d.pth": "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth",
}
"""torch-fidelity's and pytorch-fid's file of the same converted weights, and where each is published."""

INPUT_SIZE = 299


def _average_without_padding(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max(x: Tensor) -> Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


def _with_graph_pool(block: type[nn.Module], pool: Callable[[Tensor], Tensor]) -> type[nn.Module]:
    """torchvision's Inception ``block`` whose pool branch reads ``pool(x)`` instead of a padded average."""

    class GraphBlock(block):
        def _forward(self, x: Tensor) -> list[Tensor]:
            outputs = super()._forward(x)
            outputs[-1] = self.branch_pool(pool(x))
            return outputs

    GraphBlock.__name__ = f"Graph{block.__name__}"
    return GraphBlock


_GRAPH_BLOCKS = {block: _with_graph_pool(block, _average_without_padding) for block in (InceptionA, InceptionC, InceptionE)}
_MAX_POOL_E = _with_graph_pool(InceptionE, _max)
_TRUNK = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2",
    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a",
    "Mixed_7b", "Mixed_7c",
)


class FIDInceptionV3(Inception3):
    """Inception-v3 as in the ``inception-2015-12-05`` graph: ``forward`` gives ``(pool N,2048, logits N,1008)``.

    The logits are the graph's ``softmax/logits`` without the bias, which the Inception Score reads (Salimans
    et al. 2016; the ADM evaluator and torch-fidelity's ``logits_unbiased``). The parameter names are the
    published file's. Weights are random until loaded; ``load_inception`` builds and loads in one step.
    """

    def __init__(self) -> None:
        super().__init__(num_classes=1008, aux_logits=False, init_weights=False)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7b"):
            block = getattr(self, name)
            block.__class__ = _GRAPH_BLOCKS[type(block)]
        self.Mixed_7c.__class__ = _MAX_POOL_E
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``images`` ``N,3,299,299`` in [0, 255] -> pool features ``N,2048`` and unbiased logits ``N,1008``."""
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(
                f"the Inception takes RGB images N,3,{INPUT_SIZE},{INPUT_SIZE}, got {tuple(images.shape)}; "
                "resize them with callbacks.metrics.image_resize first"
            )
        x = (images.float() - 128) / 128
        for name in _TRUNK:
            x = getattr(self, name)(x)
        pool = x.mean(dim=(2, 3))
        return pool, pool @ self.fc.weight.T


def inception_file(weights: str | Path | None) -> Path:
    """``weights``, or the published file in torch's hub cache; a missing file names what to download and where."""
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_file():
            return path
        where = f"fid.weights={weights} is not a file"
    else:
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        found = [folder / name for name in INCEPTION_FILES if (folder / name).is_file()]
        if found:
            return found[0]
        where = f"no Inception weights in {folder}"
    urls = " or ".join(INCEPTION_FILES.values())
    raise FileNotFoundError(
        f"{where}: download {urls} (the same weights) and pass fid.weights=<the file>, or put it in "
        f"{Path(torch.hub.get_dir()) / 'checkpoints'}; the zoo never downloads it"
    )


def load_inception(weights: str | Path | None) -> FIDInceptionV3:
    """The FID Inception with the converted ``inception-2015-12-05`` weights from a local file (weights only)."""
    path = inception_file(weights)
    net = FIDInceptionV3()
    missing, unexpected = net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=False)
    missing = [key for key in missing if not key.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(
            f"{path} is not the FID Inception's state dict (missing {missing[:3]}, unexpected {unexpected[:3]}): "
            f"use {' or '.join(INCEPTION_FILES)}"
        )
    return net
