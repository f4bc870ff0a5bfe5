"""SampleGrid and GenerativeMetrics through a real Trainer, and the metric functions on known sets."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import ReleaseProcessGroup
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision.io import read_image
from torchvision.utils import make_grid

from callbacks.generative_metrics import GenerativeMetrics, frechet_distance
from callbacks.metrics.inception import FIDInceptionV3
from callbacks.metrics.kernel_distance import kernel_distance
from callbacks.metrics.memorization import memorization_ratio, two_nearest_distances
from callbacks.metrics.precision_recall import knn_radii, precision_recall
from callbacks.sample_grid import SampleGrid

IMAGE_SHAPE = (1, 8, 8)


class DictBatches(torch.utils.data.Dataset):
    def __init__(self, x: Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict:
        return {"x": self.x[index], "y": torch.tensor(index % 2)}


class TinyData(L.LightningDataModule):
    """Random data in [-1, 1] with probe loaders; vectors get a toy manifold (the line x[1] = 0)."""

    def __init__(self, shape: tuple[int, ...], n: int = 48) -> None:
        super().__init__()
        self.shape = shape
        generator = torch.Generator().manual_seed(0)
        self.x = torch.rand((n, *shape), generator=generator) * 2 - 1
        if len(shape) == 1:
            self.x[:, 1] = 0

    def train_dataloader(self) -> DataLoader:
        return DataLoader(DictBatches(self.x), batch_size=16)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(DictBatches(self.x[:16]), batch_size=16)

    def probe_dataloaders(self) -> tuple[DataLoader, DataLoader]:
        return DataLoader(DictBatches(self.x), batch_size=16), DataLoader(
            DictBatches(self.x[:16]), batch_size=16
        )

    def distance_to_manifold(self, x: Tensor) -> Tensor:
        return x[:, 1].abs()


class NoisyCopies(L.LightningModule):
    """A 'generator' that returns training examples plus Gaussian noise of std ``noise``."""

    def __init__(self, data: Tensor, noise: float = 0.1) -> None:
        super().__init__()
        self.register_buffer("data", data)
        self.noise = noise
        self.weight = nn.Parameter(torch.zeros(()))

    def sample(self, n: int, **kw) -> Tensor:
        picks = torch.randint(len(self.data), (n,), device=self.device)
        return self.data[picks] + self.noise * torch.randn_like(self.data[picks])

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        return (self.weight - batch["x"].mean()) ** 2

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.log("val/loss", (self.weight - batch["x"].mean()) ** 2)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class NotAGenerator(NoisyCopies):
    sample = None


def conv_features() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def fit(module: L.LightningModule, data: L.LightningDataModule, callbacks: list, logger) -> L.Trainer:
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(module, datamodule=data)
    return trainer


def events(log_dir: str) -> EventAccumulator:
    accumulator = EventAccumulator(log_dir, size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def test_images_log_every_metric_and_a_grid(tmp_path: Path) -> None:
    data = TinyData(IMAGE_SHAPE)
    logger = TensorBoardLogger(tmp_path, name="", version="")
    metrics = GenerativeMetrics(n_samples=32, feature_net=conv_features(), batch_size=10)
    trainer = fit(NoisyCopies(data.x), data, [SampleGrid(n=16), metrics], logger)
    expected = {
        "gen/fd_features",
        "gen/kid_features",
        "gen/kid_features_std",
        "gen/precision_features",
        "gen/recall_features",
        "gen/memorization",
    }
    assert expected <= set(trainer.callback_metrics)
    written = events(logger.log_dir)
    assert expected <= set(written.Tags()["scalars"])
    assert written.Tags()["images"] == ["samples/grid"]
    grid = written.Images("samples/grid")[0]
    assert grid.width > 8 and grid.height > 8
    assert 0 <= trainer.callback_metrics["gen/memorization"] <= 1
    assert trainer.callback_metrics["gen/fd_features"] >= 0


def test_vectors_log_manifold_distance_and_a_scatter(tmp_path: Path) -> None:
    data = TinyData((3,))
    logger = TensorBoardLogger(tmp_path, name="", version="")
    metrics = GenerativeMetrics(
        n_samples=40, n_real=48, metrics=["precision_recall", "memorization", "manifold_distance"]
    )
    projection = torch.eye(3)[:, [0, 2]]
    trainer = fit(
        NoisyCopies(data.x, noise=0.0), data, [SampleGrid(n=20, projection=projection), metrics], logger
    )
    assert trainer.callback_metrics["gen/manifold_distance"] == 0
    assert trainer.callback_metrics["gen/memorization"] == 1
    assert trainer.callback_metrics["gen/precision_vectors"] == 1
    assert events(logger.log_dir).Tags()["images"] == ["samples/scatter"]


def test_manifold_distance_is_the_mean_distance_of_the_samples() -> None:
    samples = torch.tensor([[0.0, 0.5, 0.0], [1.0, -0.25, 0.0]])
    metrics = GenerativeMetrics(
        n_samples=2, metrics=["manifold_distance"], distance_fn=lambda x: x[:, 1].abs()
    )
    module = NoisyCopies(samples, noise=0.0)
    module.sample = lambda n, **kw: samples[:n]
    trainer = L.Trainer(logger=False, accelerator="cpu")
    assert metrics.evaluate(trainer, module) == {"manifold_distance": pytest.approx(0.375)}


def test_csv_logger_alone_gets_the_grid_as_png(tmp_path: Path) -> None:
    data = TinyData(IMAGE_SHAPE)
    fit(NoisyCopies(data.x), data, [SampleGrid(n=4)], CSVLogger(tmp_path, name="", version=""))
    assert not list(tmp_path.rglob("events.out.tfevents*"))
    assert (tmp_path / "figures" / "samples" / "grid" / "1.png").is_file()


def test_a_small_grid_is_enlarged_pixel_for_pixel_to_the_minimum_size(tmp_path: Path) -> None:
    data = TinyData(IMAGE_SHAPE)
    fit(NoisyCopies(data.x), data, [SampleGrid(n=4, min_size=256)], CSVLogger(tmp_path, name="", version=""))
    grid = read_image(str(tmp_path / "figures" / "samples" / "grid" / "1.png"))
    drawn = make_grid(torch.zeros(4, *IMAGE_SHAPE), nrow=2)
    factor = -(-256 // min(drawn.shape[-2:]))
    assert min(grid.shape[-2:]) >= 256 and grid.shape[-1] == factor * drawn.shape[-1]
    assert torch.equal(grid[:, ::factor, ::factor], grid[:, factor - 1 :: factor, factor - 1 :: factor])
    with pytest.raises(ValueError, match="min_size=0"):
        SampleGrid(min_size=0)


def test_precision_recall_is_one_on_identical_sets_and_zero_far_apart() -> None:
    points = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    assert precision_recall(points, points.clone(), k=3) == (1.0, 1.0)
    assert precision_recall(points, points + 100.0, k=3) == (0.0, 0.0)
    dropped_mode = precision_recall(torch.cat([points, points + 100.0]), points + 0.01, k=3)
    assert dropped_mode == (1.0, 0.5)


def test_knn_radius_skips_the_point_itself() -> None:
    line = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    assert knn_radii(line, k=1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert knn_radii(line, k=3).tolist() == [7.0, 6.0, 4.0, 7.0]
    with pytest.raises(ValueError, match="lower k"):
        knn_radii(line, k=4)


def test_frechet_distance_is_zero_for_one_distribution_and_grows_with_a_shift() -> None:
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(2000, 3, generator=generator)
    same = torch.randn(2000, 3, generator=generator)
    assert frechet_distance(real, real).abs() < 1e-6
    assert frechet_distance(real, same) < 0.05
    assert frechet_distance(real, same + 2.0) == pytest.approx(12.0, rel=0.05)


def test_frechet_distance_equals_the_formula_with_a_matrix_square_root() -> None:
    """Heusel et al. 2017, Eq. 6 by hand (scipy's sqrtm of C_r C_f) on a well-conditioned pair."""
    from scipy.linalg import sqrtm

    generator = torch.Generator().manual_seed(1)
    real = torch.randn(400, 6, generator=generator, dtype=torch.float64)
    fake = torch.randn(400, 6, generator=generator, dtype=torch.float64) * 1.5 + 0.3
    mean_r, mean_f = real.mean(0).numpy(), fake.mean(0).numpy()
    cov_r, cov_f = torch.cov(real.T).numpy(), torch.cov(fake.T).numpy()
    by_hand = ((mean_r - mean_f) ** 2).sum() + (cov_r + cov_f - 2 * sqrtm(cov_r @ cov_f).real).trace()
    assert float(frechet_distance(real, fake)) == pytest.approx(by_hand, rel=1e-9)


def test_frechet_distance_stays_real_and_finite_on_singular_covariances() -> None:
    """Fewer samples than features (rank-deficient covariances, as 2,048-d Inception features of a few hundred
    samples give; LightningDiT#97 reports NaN there): the distance is a finite real number, 0 for one set, small
    for a near copy."""
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(50, 256, generator=generator)
    near = real + 1e-4 * torch.randn(50, 256, generator=generator)
    duplicated = torch.cat([real[:10]] * 5)
    for fake in (real, near, duplicated):
        distance = frechet_distance(real, fake)
        assert distance.dtype == torch.float64 and torch.isfinite(distance)
        assert float(distance) >= 0
    # Round-off of the 206 zero eigenvalues, against traces of about 2 x 256.
    assert float(frechet_distance(real, real)) == pytest.approx(0.0, abs=1e-4)
    assert float(frechet_distance(real, near)) < 1e-3
    assert float(frechet_distance(real, duplicated)) > 1.0


def test_kernel_distance_clamps_the_subset_size_and_separates_shifted_sets() -> None:
    generator = torch.Generator().manual_seed(0)
    real, same = torch.randn(300, 3, generator=generator), torch.randn(200, 3, generator=generator)
    torch.manual_seed(0)
    near, _ = kernel_distance(real, same, subset_size=1000, subsets=10)
    far, _ = kernel_distance(real, same + 2.0, subset_size=1000, subsets=10)
    assert abs(near) < 0.1 and far > 50


def test_memorization_ratio_is_one_for_copies_and_zero_for_fresh_points() -> None:
    generator = torch.Generator().manual_seed(0)
    train = torch.randn(20, 5, generator=generator)
    assert memorization_ratio(train[:10] + 1e-3, train) == 1.0
    assert memorization_ratio(torch.randn(10, 5, generator=generator), train) == 0.0
    assert memorization_ratio(train[:10], train.split(7)) == 1.0
    assert two_nearest_distances(train[:1], train)[0, 0] == 0.0


def test_memorization_ratio_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="threshold"):
        memorization_ratio(torch.zeros(2, 3), torch.zeros(4, 3), threshold=1.5)
    with pytest.raises(ValueError, match="two reference"):
        memorization_ratio(torch.zeros(2, 3), torch.zeros(1, 3))


def test_module_without_sample_names_the_protocol(tmp_path: Path) -> None:
    data = TinyData(IMAGE_SHAPE)
    for callback in (SampleGrid(), GenerativeMetrics(feature_net=conv_features())):
        with pytest.raises(TypeError, match="Samples protocol"):
            fit(NotAGenerator(data.x), data, [callback], False)


def test_fid_on_vectors_without_a_feature_net_is_refused() -> None:
    data = TinyData((3,))
    with pytest.raises(ValueError, match=r"\['fid'\] on vector data need a feature net"):
        fit(NoisyCopies(data.x), data, [GenerativeMetrics(metrics=["fid", "memorization"])], False)


def test_images_without_a_feature_net_or_local_inception_are_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    data = TinyData(IMAGE_SHAPE)
    with pytest.raises(ValueError, match=r"offline \(no Inception weights in .*download https://.*; or pass feature_net="):
        fit(NoisyCopies(data.x), data, [GenerativeMetrics()], False)


def test_manifold_distance_without_a_distance_function_is_refused() -> None:
    class Flat(TinyData):
        distance_to_manifold = None

    data = Flat((3,))
    with pytest.raises(ValueError, match="distance_to_manifold"):
        fit(NoisyCopies(data.x), data, [GenerativeMetrics(metrics=["manifold_distance"])], False)


def test_unknown_metrics_and_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown metrics \\['fd'\\].*valid: \\('fid'"):
        GenerativeMetrics(metrics=["fid", "fd"])
    with pytest.raises(ValueError, match="real_split"):
        GenerativeMetrics(real_split="test")
    with pytest.raises(ValueError, match="every_n_epochs"):
        SampleGrid(every_n_epochs=0)
    with pytest.raises(ValueError, match="projection"):
        SampleGrid().scatter(torch.zeros(4, 3), None, torch.zeros(2, 2))


def test_feature_net_must_return_feature_rows() -> None:
    images = torch.zeros(4, *IMAGE_SHAPE)
    metrics = GenerativeMetrics(
        n_samples=4, metrics=["fid"], feature_net=nn.Conv2d(1, 2, 3), real_data=images
    )
    module = NoisyCopies(images)
    with pytest.raises(ValueError, match="features B,F"):
        metrics.evaluate(L.Trainer(logger=False, accelerator="cpu"), module)


def test_the_fid_inception_reads_a_local_weights_file(tmp_path: Path) -> None:
    """``inception_weights=<file>``: gen/fd_inception in the Inception's 2048 features, nothing downloaded (4 held-out
    rows: no floor, whose 2048-dim fits take a minute on a CPU)."""
    torch.save(FIDInceptionV3().state_dict(), tmp_path / "inception.pth")
    data = TinyData(IMAGE_SHAPE, n=24)
    metrics = GenerativeMetrics(
        n_samples=12, metrics=["fid"], n_bootstrap=0, held_out_data=data.x[:4], inception_weights=tmp_path / "inception.pth"
    )
    trainer = fit(NoisyCopies(data.x), data, [metrics], False)
    assert trainer.callback_metrics["gen/fd_inception"] > 0 and metrics._features.net.fc.out_features == 1008


class RankConstant(NoisyCopies):
    """Samples whose second coordinate is the rank that drew them."""

    def sample(self, n: int, **kw) -> Tensor:
        return torch.full((n, 3), float(self.global_rank), device=self.device)


@pytest.mark.slow
def test_samples_are_gathered_across_two_processes(tmp_path: Path) -> None:
    data = TinyData((3,))
    # Chunks of 3 samples: chunk c is drawn by rank c mod 2, so 3 of the 9 samples come from rank 1.
    metrics = GenerativeMetrics(n_samples=9, batch_size=3, metrics=["manifold_distance"])
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        callbacks=[metrics, ReleaseProcessGroup()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        default_root_dir=tmp_path,
    )
    trainer.fit(RankConstant(data.x), datamodule=data)
    assert trainer.callback_metrics["gen/manifold_distance"] == pytest.approx(3 / 9)


def test_generative_preset_composes_and_runs_on_the_digits(tmp_path: Path, make_config) -> None:
    cfg = make_config(
        "callbacks=generative",
        "callbacks.generative.n_samples=64",
        "callbacks.generative.feature_net={_target_:torch.nn.Flatten}",
    )
    assert {"checkpoint", "progress", "lr_monitor", "samples", "generative"} <= set(cfg.callbacks)
    data = instantiate(cfg.data)
    data.setup()
    chosen = [instantiate(cfg.callbacks.samples), instantiate(cfg.callbacks.generative)]
    logger = TensorBoardLogger(tmp_path, name="", version="")
    trainer = fit(NoisyCopies(data.train_tensor()[0]), data, chosen, logger)
    assert {
        "gen/fd_features",
        "gen/kid_features",
        "gen/precision_features",
        "gen/recall_features",
        "gen/memorization",
    } <= set(
        trainer.callback_metrics
    )
    assert events(logger.log_dir).Tags()["images"] == ["samples/grid"]
