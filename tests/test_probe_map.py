"""The layer x noise-level probe map: on a plain module (nothing from zoo), then on the real diffusion
configs (the default UNet and JiT) at tiny sizes."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from callbacks import ProbeMap
from callbacks.features import noise_averaged_features
from callbacks.probe_map import probe_map
from zoo.app.train import build

LEVELS = [0.2, 0.6, 0.9]


class Blobs(Dataset):
    """Three well-separated classes of 16-dim vectors."""

    def __init__(self, n: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 3
        self.x = torch.eye(3, 16)[self.y] * 3 + 0.3 * torch.randn(n, 16, generator=generator)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i]}


class BlobData(L.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        self.train, self.val = Blobs(90, 1), Blobs(60, 2)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=32)

    def probe_dataloaders(self) -> tuple[DataLoader, DataLoader]:
        return DataLoader(self.train, batch_size=32), DataLoader(self.val, batch_size=32)


class Layered(L.LightningModule):
    """``embed(x, t, layer)``: layer 0 sees ``t x + (1 - t) 4 eps``; layer 1 the same with the class signal
    scrambled by a fixed rotation of noise only (useless); layer 2 the clean input at every t."""

    num_blocks = 3

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        return None

    def embed(self, x: Tensor, t: float = 1.0, layer: int = 0) -> Tensor:
        noisy = t * x + (1 - t) * 4 * torch.randn_like(x)
        if layer == 1:
            return torch.randn_like(x)
        return x if layer == 2 else noisy


class NoLayer(Layered):
    def embed(self, x: Tensor, t: float = 1.0) -> Tensor:
        return x


def validate(tmp_path: Path, module: L.LightningModule, callback: ProbeMap) -> dict[str, float]:
    trainer = L.Trainer(
        logger=TensorBoardLogger(tmp_path),
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=[callback],
    )
    trainer.validate(module, datamodule=BlobData(), verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_the_map_finds_the_informative_block_and_level(tmp_path) -> None:
    callback = ProbeMap(levels=LEVELS, draws=2, k=5, figure_dir=str(tmp_path / "figures"))
    metrics = validate(tmp_path, Layered(), callback)
    assert callback.result is not None and callback.result.linear.shape == (3, 3)
    for layer in range(3):
        for t in LEVELS:
            assert 0 <= metrics[f"probe_map/linear_b{layer}_t{t:g}"] <= 1
            assert 0 <= metrics[f"probe_map/knn_b{layer}_t{t:g}"] <= 1
    # The useless block is at chance, the clean one perfect; ties at 1.0 go to the cleanest level, first block.
    assert max(metrics[f"probe_map/linear_b1_t{t:g}"] for t in LEVELS) < 0.6
    assert metrics["probe_map/linear_b2_t0.2"] == 1.0
    assert metrics["probe_map/linear_b0_t0.2"] < metrics["probe_map/linear_b0_t0.9"]
    assert metrics["probe_map/best_t"] == pytest.approx(0.9) and metrics["probe_map/best_linear_top1"] == 1.0
    assert metrics["probe_map/best_layer"] in (0.0, 2.0)
    assert (tmp_path / "figures" / "probe_map.png").is_file()
    events = EventAccumulator(str(next(tmp_path.glob("lightning_logs/*"))))
    events.Reload()
    assert "probe_map/map" in events.Tags()["images"]


def test_averaging_over_draws_shrinks_the_noise() -> None:
    loader = BlobData().probe_dataloaders()[0]
    one, _ = noise_averaged_features(Layered(), loader, 1, {"t": 0.5, "layer": 1})
    many, labels = noise_averaged_features(Layered(), loader, 16, {"t": 0.5, "layer": 1})
    assert many.std().item() == pytest.approx(one.std().item() / 4, rel=0.1)
    assert torch.equal(labels, BlobData().train.y)
    again, _ = noise_averaged_features(Layered(), loader, 16, {"t": 0.5, "layer": 1})
    assert torch.equal(many, again)


def test_the_map_refuses_bad_settings(tmp_path) -> None:
    with pytest.raises(ValueError, match="levels"):
        ProbeMap(levels=[0.5, 0.5])
    with pytest.raises(ValueError, match="layers"):
        ProbeMap(layers=[1, 1])
    with pytest.raises(ValueError, match="draws"):
        ProbeMap(draws=0)
    with pytest.raises(ValueError, match="select"):
        ProbeMap(select="auc")
    with pytest.raises(ValueError, match="remove them from embed_kwargs"):
        ProbeMap(embed_kwargs={"t": 0.5})
    with pytest.raises(ValueError, match="does not accept `layer`"):
        validate(tmp_path, NoLayer(), ProbeMap(levels=LEVELS))
    no_blocks = Layered()
    no_blocks.num_blocks = None
    with pytest.raises(ValueError, match="pass layers"):
        validate(tmp_path, no_blocks, ProbeMap(levels=LEVELS))
    with pytest.raises(ValueError, match="select"):
        probe_map(Layered(), BlobData().probe_dataloaders(), [0], LEVELS, select="auc")


TINY = [
    "callbacks=probe_map",
    "callbacks.probe_map.levels=[0.3,0.9]",
    "callbacks.probe_map.draws=2",
    "data.n_train=60",
    "~logger",
]


@pytest.mark.parametrize(
    "method",
    [
        [
            "method=diffusion",
            "net.block_out_channels=[8,16]",
            "net.norm_groups=4",
            "net.attention_head_dim=4",
        ],
        ["method=jit", "net.width=16", "net.depth=2", "net.heads=2", "net.bottleneck=8"],
    ],
    ids=["default_unet", "jit"],
)
def test_the_map_of_the_real_diffusion_configs_covers_every_block(make_config, tmp_path, method) -> None:
    built = build(make_config(*method, *TINY, output_dir=tmp_path / "run"))
    blocks = built.method.num_blocks
    built.trainer.validate(built.method, datamodule=built.datamodule, verbose=False)
    metrics = built.trainer.callback_metrics
    assert {f"probe_map/linear_b{b}_t{t:g}" for b in range(blocks) for t in (0.3, 0.9)} <= set(metrics)
    assert 0 <= float(metrics["probe_map/best_layer"]) < blocks
    assert min(abs(float(metrics["probe_map/best_t"]) - t) for t in (0.3, 0.9)) < 1e-6
    assert 0.1 <= float(metrics["probe_map/best_linear_top1"]) <= 1
    assert (tmp_path / "run" / "probe_map.png").is_file()
