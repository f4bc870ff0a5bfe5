"""Representation probes, run as another project would: a plain LightningModule with ``embed`` and a
datamodule with ``probe_dataloaders()``, both defined here (nothing from ``zoo``)."""

from __future__ import annotations

import math
import os
import socket

import lightning as L
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import ReleaseProcessGroup
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from callbacks import (
    KNNProbe,
    LinearProbe,
    NoiseLevelProbe,
    OnlineLinearProbe,
    RepresentationStats,
    WeightGrid,
    curve_shape,
    extract_features,
    knn_accuracy,
    linear_probe_accuracy,
    max_cosine_to_data,
    top_norm_rows,
)
from callbacks.metrics.representation import (
    alignment,
    effective_rank,
    feature_std,
    l4_l2_ratio,
    normalized_feature_std,
    representation_stats,
    sample_std,
    uniformity,
)
from callbacks.weight_grid import image_shape

SHAPE = (1, 4, 4)
DIM = math.prod(SHAPE)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny problems: BLAS threads only contend on a shared CPU (30x slower L-BFGS with 2 busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class BlobImages(Dataset):
    """Three Gaussian blobs as 1x4x4 "images": class ``c`` centred at a fixed random mean."""

    def __init__(self, n: int, seed: int, labeled: bool = True, views: bool = False) -> None:
        generator = torch.Generator().manual_seed(seed)
        means = torch.randn(3, DIM, generator=torch.Generator().manual_seed(123)) * 2
        self.y = torch.arange(n) % 3
        self.x = (means[self.y] + 0.5 * torch.randn(n, DIM, generator=generator)).view(n, *SHAPE)
        self.labeled, self.views = labeled, views

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        item = {"x": self.x[i], "y": self.y[i] if self.labeled else torch.tensor(-1)}
        if self.views:
            item["views"] = [self.x[i] + 0.01 * torch.randn(SHAPE), self.x[i] + 0.01 * torch.randn(SHAPE)]
        return item


class NoProbeData(L.LightningDataModule):
    """Train/val loaders of batch dicts (batch 16: uneven last batches), no ``probe_dataloaders``."""

    num_classes = 3

    def __init__(self, labeled: bool = True, views: bool = False) -> None:
        super().__init__()
        self.train = BlobImages(60, seed=1, labeled=labeled, views=views)
        self.val = BlobImages(45, seed=2, labeled=labeled)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=16, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=16)


class BlobData(NoProbeData):
    """Plus clean, unshuffled probe loaders."""

    def probe_dataloaders(self) -> tuple[DataLoader, DataLoader]:
        return DataLoader(self.train, batch_size=16), DataLoader(self.val, batch_size=16)


class Trainable(L.LightningModule):
    """Just enough to be fitted: a trainable scale, a loss, an optimizer; no ``embed``."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        return (self.scale * batch["x"]).pow(2).mean()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        return None

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class RandomLinear(Trainable):
    """``embed`` = a frozen random linear map of the flattened input; ``weight`` its rows."""

    def __init__(self, features: int = 12) -> None:
        super().__init__()
        self.register_buffer("weight", torch.randn(features, DIM, generator=torch.Generator().manual_seed(0)))

    def embed(self, x: Tensor, **kw) -> Tensor:
        return x.flatten(1) @ self.weight.T


class Constant(Trainable):
    """A collapsed encoder: every input maps to the same vector."""

    def embed(self, x: Tensor, **kw) -> Tensor:
        return torch.ones(len(x), 8)


class Noisy(Trainable):
    """A noise-conditioned ``embed``: features of ``t x + (1 - t) eps`` (``t = 1`` data, ``t = 0`` noise)."""

    def embed(self, x: Tensor, t: float = 1.0) -> Tensor:
        return (t * x + (1 - t) * 3 * torch.randn_like(x)).flatten(1)


class NoisyLinear(RandomLinear):
    """``RandomLinear`` of ``t x + (1 - t) eps``: noise-conditioned, with a first-layer ``weight``."""

    def embed(self, x: Tensor, t: float = 1.0) -> Tensor:
        return super().embed(t * x + (1 - t) * 3 * torch.randn_like(x))


class IgnoresT(Trainable):
    def embed(self, x: Tensor, **kw) -> Tensor:
        return x.flatten(1)


class NoT(Trainable):
    def embed(self, x: Tensor) -> Tensor:
        return x.flatten(1)


def trainer(tmp_path, callbacks: list, **kwargs) -> L.Trainer:
    options = dict(
        max_epochs=1,
        limit_train_batches=2,
        logger=TensorBoardLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=callbacks,
    )
    return L.Trainer(**{**options, **kwargs})


def blobs(n: int, dim: int, seed: int, spread: float) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    means = torch.eye(3, dim) * 10
    y = torch.arange(n) % 3
    return means[y] + spread * torch.randn(n, dim, generator=generator), y


# ---------------------------------------------------------------- linear and kNN probes, pure functions


@pytest.mark.parametrize("probe", [linear_probe_accuracy, knn_accuracy])
def test_probe_separates_separable_classes(probe):
    train, train_y = blobs(150, 8, seed=0, spread=1.0)
    val, val_y = blobs(60, 8, seed=1, spread=1.0)
    assert probe(train, train_y, val, val_y) == 1.0


@pytest.mark.parametrize("probe", [linear_probe_accuracy, knn_accuracy])
def test_probe_is_at_chance_on_random_labels(probe):
    """4 classes, 400 val samples: chance 0.25, one std 0.022; the tolerance 0.1 is 4.6 std."""
    generator = torch.Generator().manual_seed(0)
    train, val = torch.randn(300, 16, generator=generator), torch.randn(400, 16, generator=generator)
    train_y, val_y = torch.randint(0, 4, (300,), generator=generator), torch.randint(0, 4, (400,), generator=generator)
    assert abs(probe(train, train_y, val, val_y) - 0.25) < 0.1


def test_knn_votes_are_weighted_by_similarity():
    """One very close neighbour of class 0 against two farther ones of class 1 (k = 3)."""
    train = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8]])
    train_y = torch.tensor([0, 1, 1])
    query, query_y = torch.tensor([[1.0, 0.05]]), torch.tensor([0])
    assert knn_accuracy(train, train_y, query, query_y, k=3, temperature=0.07) == 1.0
    assert knn_accuracy(train, train_y, query, query_y, k=3, temperature=100.0) == 0.0


def test_probes_ignore_unlabeled_rows_and_need_labels():
    train, train_y = blobs(60, 4, seed=0, spread=0.5)
    val, val_y = blobs(30, 4, seed=1, spread=0.5)
    train_y[::2] = -1
    assert linear_probe_accuracy(train, train_y, val, val_y) == 1.0
    for probe in (linear_probe_accuracy, knn_accuracy):
        with pytest.raises(ValueError, match="needs labels"):
            probe(train, torch.full_like(train_y, -1), val, val_y)
    with pytest.raises(ValueError, match="k=0"):
        knn_accuracy(train, train_y, val, val_y, k=0)


# ---------------------------------------------------------------- statistics with known answers


def test_statistics_of_one_hot_rows():
    features = torch.eye(4).repeat(2, 1)
    quarter = math.sqrt(3) / 4
    assert normalized_feature_std(features) == pytest.approx(quarter)
    assert sample_std(features) == pytest.approx(quarter)
    assert feature_std(features) == pytest.approx(quarter)
    assert l4_l2_ratio(features) == pytest.approx(1.0)
    assert effective_rank(features) == pytest.approx(4.0)
    assert uniformity(features) == pytest.approx(math.log((4 + 24 * math.exp(-4)) / 28))
    assert uniformity(features, chunk_size=3) == pytest.approx(uniformity(features))


def test_uniformity_on_a_seeded_subset_of_many_features():
    features = torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    exact = representation_stats(features)
    assert representation_stats(features, uniformity_samples=300) == exact
    subset = representation_stats(features, uniformity_samples=100, seed=3)
    rows = torch.randperm(300, generator=torch.Generator().manual_seed(3))[:100]
    assert subset["uniformity"] == pytest.approx(uniformity(features[rows]))
    assert subset["uniformity"] != exact["uniformity"]
    assert subset["uniformity"] == pytest.approx(exact["uniformity"], abs=0.1)
    assert {k: v for k, v in subset.items() if k != "uniformity"} == {k: v for k, v in exact.items() if k != "uniformity"}


def test_statistics_of_identical_rows_show_collapse():
    features = torch.tensor([[1.0, 2.0, 3.0, 4.0]]).repeat(10, 1)
    assert normalized_feature_std(features) == pytest.approx(0.0, abs=1e-12)
    assert feature_std(features) == pytest.approx(0.0, abs=1e-12)
    assert effective_rank(features) == pytest.approx(1.0)
    assert uniformity(features) == pytest.approx(0.0, abs=1e-12)
    assert l4_l2_ratio(torch.ones(3, 16)) == pytest.approx(16 ** (-1 / 4))


def test_statistics_of_isotropic_gaussian():
    features = torch.randn(4000, 16, generator=torch.Generator().manual_seed(0))
    assert normalized_feature_std(features) * math.sqrt(16) == pytest.approx(1.0, abs=0.02)
    assert 15.0 < effective_rank(features) <= 16.0


def test_alignment_known_answers():
    a = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    assert alignment(a, 2 * a) == pytest.approx(0.0, abs=1e-12)
    assert alignment(a, -a) == pytest.approx(4.0)
    assert alignment(torch.eye(2), torch.eye(2).flip(0)) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="paired"):
        alignment(a, a[:4])


# ---------------------------------------------------------------- curve shape and weights


@pytest.mark.parametrize(
    ("accuracies", "shape"),
    [
        ([0.3, 0.5, 0.8, 0.9, 0.7, 0.6], "unimodal"),
        ([0.3, 0.4, 0.5, 0.7, 0.8, 0.9], "monotone"),
        ([0.3, 0.4, 0.5, 0.7, 0.905, 0.9], "monotone"),
        ([0.5, 0.51, 0.5, 0.49, 0.5, 0.5], "neither"),
        ([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], "neither"),
        ([0.3, 0.8, 0.4, 0.8, 0.5, 0.8], "neither"),
    ],
)
def test_curve_shape(accuracies, shape):
    levels = [0.05, 0.2, 0.4, 0.6, 0.8, 0.95]
    assert curve_shape(levels, accuracies, tolerance=0.02) == shape
    assert curve_shape(levels[::-1], accuracies[::-1], tolerance=0.02) == shape


def test_curve_shape_rejects_short_curves():
    with pytest.raises(ValueError, match="at least 3"):
        curve_shape([0.1, 0.9], [0.5, 0.6])


def test_max_cosine_and_top_norm_rows():
    data = torch.randn(20, DIM, generator=torch.Generator().manual_seed(0))
    rows = torch.stack([3 * data[4], -data[7]])
    similarity = max_cosine_to_data(rows, data.view(20, *SHAPE))
    assert similarity[0] == pytest.approx(1.0)
    assert similarity[1] < 0.99
    weight = torch.diag(torch.tensor([1.0, 5.0, 3.0, 4.0]))
    assert top_norm_rows(weight, 3).tolist() == [1, 3, 2]
    with pytest.raises(ValueError, match="k=5"):
        top_norm_rows(weight, 5)


# ---------------------------------------------------------------- feature extraction


def test_extract_features_keeps_order_and_restores_train_mode():
    module = RandomLinear()
    data = BlobData()
    module.train()
    features, y = extract_features(module, data.probe_dataloaders()[1])
    assert module.training
    assert torch.equal(y, data.val.y)
    torch.testing.assert_close(features, module.embed(data.val.x))
    assert not features.requires_grad


def _noisy_features(batch_size: int) -> tuple[Tensor, Tensor]:
    loader = DataLoader(BlobData().train, batch_size=batch_size)
    return extract_features(Noisy(), loader, embed_kwargs={"t": 0.5}, seed=3)


def _extract_on_rank(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        results = [_noisy_features(batch_size) for batch_size in (16, 64)]
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_extract_features_does_not_depend_on_world_size(tmp_path):
    """Two gloo processes, noise drawn inside embed: the same features as one process, both for 4
    batches (32 and 28 samples per rank) and for 1 batch (rank 1 gets nothing)."""
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    out = str(tmp_path / "features.pt")
    mp.spawn(_extract_on_rank, args=(2, port, out), nprocs=2)
    for (gathered, gathered_y), batch_size in zip(torch.load(out), (16, 64)):
        alone, y = _noisy_features(batch_size)
        assert torch.equal(gathered_y, y)
        torch.testing.assert_close(gathered, alone, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- callbacks in a real Trainer


def test_every_probe_runs_in_a_trainer(tmp_path):
    callbacks = [
        LinearProbe(),
        KNNProbe(k=5),
        RepresentationStats(),
        OnlineLinearProbe(lr=0.05),
        WeightGrid(weight="weight", n_rows=12, top_k=3),
    ]
    run = trainer(tmp_path, callbacks)
    run.fit(RandomLinear(), datamodule=BlobData(views=True))
    metrics = run.callback_metrics
    assert metrics["probe/linear_top1"] > 0.9
    assert metrics["probe/knn_top1"] > 0.9
    assert metrics["stats/collapsed"] == 0
    assert 0 < metrics["stats/alignment"] < 0.01
    assert {"stats/effective_rank", "stats/uniformity", "stats/l4_l2", "stats/sample_std"} <= set(metrics)
    assert 0 <= metrics["online_probe/train_top1"] <= 1 and 0 <= metrics["online_probe/val_top1"] <= 1
    assert {"weights/max_cos_0", "weights/max_cos_2", "weights/max_cos_mean"} <= set(metrics)
    events = EventAccumulator(run.logger.log_dir)
    events.Reload()
    assert "weights/rows" in events.Tags()["images"]


def test_noise_level_probe_logs_a_curve(tmp_path):
    levels = [0.1, 0.3, 0.5, 0.7, 0.9]
    run = trainer(tmp_path, [NoiseLevelProbe(levels=levels, every_n_epochs=1)])
    run.fit(Noisy(), datamodule=BlobData())
    metrics = run.callback_metrics
    accuracies = [float(metrics[f"noise_probe/top1_t{t:g}"]) for t in levels]
    assert accuracies[-1] > accuracies[0]
    assert metrics["noise_probe/best_top1"] == max(accuracies)
    assert metrics["noise_probe/best_t"] == pytest.approx(0.9)
    assert metrics["noise_probe/monotone"] == 1 and metrics["noise_probe/unimodal"] == 0
    events = EventAccumulator(run.logger.log_dir)
    events.Reload()
    assert "noise_probe/curve" in events.Tags()["images"]


def test_collapse_detector_flags_a_constant_encoder(tmp_path):
    run = trainer(tmp_path, [RepresentationStats()])
    with pytest.warns(UserWarning, match="collapsed"):
        run.validate(Constant(), datamodule=BlobData())
    assert run.callback_metrics["stats/collapsed"] == 1
    assert "stats/alignment" not in run.callback_metrics


def test_weight_grid_finds_memorized_rows(tmp_path):
    module = RandomLinear()
    data = BlobData()
    module.weight[5] = 2 * data.train.x[17].flatten()
    run = trainer(tmp_path, [WeightGrid(weight=lambda m: m.weight, n_rows=12, top_k=1)])
    run.validate(module, datamodule=data)
    assert run.callback_metrics["weights/max_cos_0"] == pytest.approx(1.0)


def test_weight_grid_scores_top_k_even_beyond_the_rows_shown(tmp_path):
    run = trainer(tmp_path, [WeightGrid(n_rows=2, top_k=3)])
    run.validate(RandomLinear(), datamodule=BlobData())
    assert {"weights/max_cos_0", "weights/max_cos_2"} <= set(run.callback_metrics)


def test_weight_rows_are_drawn_in_the_data_shape():
    assert image_shape((3, 8, 8)) == (3, 8, 8)
    assert image_shape((8, 8)) == (1, 8, 8)
    assert image_shape((5,)) == (1, 1, 5)
    with pytest.raises(ValueError, match="shape"):
        image_shape((1, 2, 3, 4))


def test_online_probe_state_round_trips_through_a_checkpoint(tmp_path):
    probe = OnlineLinearProbe()
    first = trainer(tmp_path, [probe])
    first.fit(RandomLinear(), datamodule=BlobData())
    path = tmp_path / "probe.ckpt"
    first.save_checkpoint(path)
    saved = torch.load(path, weights_only=False)["callbacks"][probe.state_key]
    assert saved["optimizer"]["state"][0]["step"] == 2

    restored = OnlineLinearProbe()
    restored.load_state_dict(saved)
    head = restored._head(torch.zeros(1, 12))
    torch.testing.assert_close(head.weight, probe.head.weight)

    resumed = OnlineLinearProbe()
    trainer(tmp_path, [resumed], max_epochs=2).fit(RandomLinear(), datamodule=BlobData(), ckpt_path=path)
    assert resumed.optimizer.state_dict()["state"][0]["step"] == 4


# ---------------------------------------------------------------- bad inputs


def every_callback() -> list[L.Callback]:
    return [LinearProbe(), KNNProbe(), RepresentationStats(), OnlineLinearProbe(), NoiseLevelProbe()]


@pytest.mark.parametrize("callback", every_callback(), ids=lambda c: type(c).__name__)
def test_module_without_embed_is_refused(tmp_path, callback):
    with pytest.raises(ValueError, match="Embeds protocol"):
        trainer(tmp_path, [callback]).validate(Trainable(), datamodule=BlobData())


@pytest.mark.parametrize(
    "callback", [*every_callback()[:3], NoiseLevelProbe(), WeightGrid()], ids=lambda c: type(c).__name__
)
def test_datamodule_without_probe_loaders_is_refused(tmp_path, callback):
    module = Noisy() if isinstance(callback, NoiseLevelProbe) else RandomLinear()
    with pytest.raises(ValueError, match="probe_dataloaders"):
        trainer(tmp_path, [callback]).validate(module, datamodule=NoProbeData())


@pytest.mark.parametrize("callback", [LinearProbe(), KNNProbe(), NoiseLevelProbe()], ids=lambda c: type(c).__name__)
def test_unlabeled_probe_data_is_refused(tmp_path, callback):
    module = Noisy() if isinstance(callback, NoiseLevelProbe) else RandomLinear()
    with pytest.raises(ValueError, match="needs labels"):
        trainer(tmp_path, [callback]).validate(module, datamodule=BlobData(labeled=False))


def test_online_probe_refuses_unlabeled_training(tmp_path):
    with pytest.raises(ValueError, match="needs labels"):
        trainer(tmp_path, [OnlineLinearProbe()]).fit(RandomLinear(), datamodule=BlobData(labeled=False))


def test_online_probe_needs_the_number_of_classes(tmp_path):
    class Unsized(BlobData):
        num_classes = None

    with pytest.raises(ValueError, match="num_classes"):
        trainer(tmp_path, [OnlineLinearProbe()]).fit(RandomLinear(), datamodule=Unsized())


def test_noise_level_probe_refuses_embed_without_t(tmp_path):
    with pytest.raises(ValueError, match="ignores `t`"):
        trainer(tmp_path, [NoiseLevelProbe()]).validate(IgnoresT(), datamodule=BlobData())
    with pytest.raises(ValueError, match="does not accept `t`"):
        trainer(tmp_path, [NoiseLevelProbe()]).validate(NoT(), datamodule=BlobData())


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="k=0"):
        KNNProbe(k=0)
    with pytest.raises(ValueError, match="at least 3 distinct"):
        NoiseLevelProbe(levels=[0.2, 0.8])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        NoiseLevelProbe(levels=[0.2, 0.5, 1.5])
    with pytest.raises(ValueError, match="every_n_epochs=0"):
        LinearProbe(every_n_epochs=0)
    with pytest.raises(ValueError, match="split="):
        RepresentationStats(split="test")
    with pytest.raises(ValueError, match="uniformity_samples=1"):
        RepresentationStats(uniformity_samples=1)
    with pytest.raises(ValueError, match="no attribute `encoder.weight`"):
        trainer(tmp_path, [WeightGrid(weight="encoder.weight")]).validate(RandomLinear(), datamodule=BlobData())


def test_weight_rows_must_match_the_data(tmp_path):
    class Wide(RandomLinear):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.randn(12, DIM + 1)

    with pytest.raises(ValueError, match="entries but data samples"):
        trainer(tmp_path, [WeightGrid(top_k=2)]).validate(Wide(), datamodule=BlobData())


def test_embed_must_return_pooled_features():
    class Unpooled(Trainable):
        def embed(self, x: Tensor, **kw) -> Tensor:
            return x

    with pytest.raises(ValueError, match="pooled"):
        extract_features(Unpooled(), BlobData().probe_dataloaders()[1])


def test_loaders_passed_in_replace_probe_dataloaders(tmp_path):
    data = BlobData()
    probe = LinearProbe(loaders=(DataLoader(data.train, batch_size=7), DataLoader(data.val, batch_size=7)))
    run = trainer(tmp_path, [probe])
    run.validate(RandomLinear(), datamodule=NoProbeData())
    assert run.callback_metrics["probe/linear_top1"] > 0.9


@pytest.mark.slow
def test_probe_metrics_do_not_depend_on_world_size(tmp_path):
    """The probes in a fit on 1 and on 2 gloo processes (ddp_spawn) agree to 1e-5; the online probe
    (whose training follows the sharded batches) runs alongside."""

    def probe_metrics(**kwargs) -> dict[str, float]:
        callbacks = [
            LinearProbe(),
            KNNProbe(k=5),
            RepresentationStats(),
            NoiseLevelProbe(levels=[0.2, 0.5, 0.8], every_n_epochs=1),
            WeightGrid(n_rows=6, top_k=2),
            OnlineLinearProbe(),
            ReleaseProcessGroup(),
        ]
        run = trainer(tmp_path, callbacks, logger=False, default_root_dir=tmp_path, **kwargs)
        run.fit(NoisyLinear(), datamodule=BlobData(views=True))
        return {key: float(value) for key, value in run.callback_metrics.items()}

    alone = probe_metrics(devices=1)
    shared = probe_metrics(devices=2, strategy="ddp_spawn")
    assert set(alone) == set(shared)
    assert {"noise_probe/top1_t0.5", "weights/max_cos_1", "stats/alignment", "online_probe/val_top1"} <= set(alone)
    for key, value in alone.items():
        if not key.startswith("online_probe/"):
            assert shared[key] == pytest.approx(value, abs=1e-5), key
