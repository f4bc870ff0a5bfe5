"""The reference feature net of the generative metrics: accuracy, cache, and the Fréchet distance it gives."""

from __future__ import annotations

import io
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import ReleaseProcessGroup, flip_stored_float
from hydra.utils import instantiate
from test_generative_metrics import NoisyCopies, fit
from torch import Tensor
from torch.utils.data import DataLoader

from callbacks.generative_metrics import GenerativeMetrics, PixelFeatures
from callbacks.metrics.frechet_distance import (
    frechet_distance,
    frechet_floor,
    frechet_interval,
    gaussian_stats,
)
from callbacks.metrics.reference_net import ReferenceNet, data_fingerprint
from datamodules import Digits

TINY_RECIPE = {"width": 4, "epochs": 1}
"""A recipe that trains in a fraction of a second, for the cache tests."""


@pytest.fixture(scope="session")
def digits() -> Digits:
    data = Digits(image_size=8)
    data.setup()
    return data


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reference_cache")


@pytest.fixture(scope="session")
def reference(digits: Digits, cache_dir: Path) -> tuple[ReferenceNet, float]:
    """The default reference net on the 8 px digits, trained once into ``cache_dir``, and its training time."""
    net = ReferenceNet()
    start = time.perf_counter()
    net.fit_to(digits, cache_dir=cache_dir)
    return net, time.perf_counter() - start


class Labeled(torch.utils.data.Dataset):
    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict:
        return {"x": self.x[index], "y": self.y[index]}


class Probe:
    """The ProbeData protocol over one labeled set, as both the train and the val split."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.loader = DataLoader(Labeled(x, y), batch_size=8)

    def probe_dataloaders(self) -> tuple[DataLoader, DataLoader]:
        return self.loader, self.loader


def x_of(loader: DataLoader) -> Tensor:
    return torch.cat([batch["x"] for batch in loader])


def held_out(digits: Digits) -> Tensor:
    return torch.cat([x_of(digits.probe_dataloaders()[1]), x_of(digits.test_dataloader())])


class LabeledCopies(NoisyCopies):
    """A class-conditional 'generator': training images of class ``(y + label_shift) mod 10``."""

    def __init__(self, data: Tensor, labels: Tensor, label_shift: int = 0) -> None:
        super().__init__(data, noise=0.0)
        self.register_buffer("labels", labels)
        self.num_classes = 10
        self.label_shift = label_shift

    def sample(self, n: int, y: Tensor | None = None, **kw) -> Tensor:
        assert y is not None and len(y) == n
        wanted = (y + self.label_shift) % self.num_classes
        picks = [
            int(torch.nonzero(self.labels == c)[torch.randint(int((self.labels == c).sum()), ())])
            for c in wanted
        ]
        return self.data[picks]


def test_reference_net_classifies_the_held_out_digits(reference, digits: Digits) -> None:
    net, seconds = reference
    test_accuracy = net.accuracy(digits.test_dataloader())
    print(
        f"reference net: val accuracy {net.val_accuracy:.4f}, test accuracy {test_accuracy:.4f}, {seconds:.1f} s"
    )
    assert net.val_accuracy >= 0.97 and test_accuracy >= 0.97
    assert seconds < 20
    x = x_of(digits.probe_dataloaders()[1])[:5]
    assert net(x).shape == (5, 32) and net.logits(x).shape == (5, 10)


def test_reference_net_works_on_any_image_size_and_channels() -> None:
    x = torch.rand(32, 3, 16, 16) * 2 - 1
    net = ReferenceNet(**TINY_RECIPE)
    net.fit_to(Probe(x, torch.arange(32) % 2))
    assert net(x).shape == (32, 8) and net.logits(x).shape == (32, 2)


def test_the_reference_distance_behaves_as_a_metric(reference, digits: Digits) -> None:
    net, _ = reference
    generator = torch.Generator().manual_seed(0)
    train, real = digits.train_tensor()[0], held_out(digits)
    with torch.no_grad():
        reference_stats = gaussian_stats(net(train))

        def fd(x: Tensor) -> float:
            return frechet_distance(net(train), net(x)).item()

        sweep = [
            fd((real + sigma * torch.randn(real.shape, generator=generator)).clamp(-1, 1))
            for sigma in (0, 0.1, 0.2, 0.4)
        ]
        mean, cov = gaussian_stats(train.flatten(1))
        torch.manual_seed(0)
        fitted = torch.distributions.MultivariateNormal(
            mean, cov + 1e-4 * torch.eye(len(mean), dtype=torch.float64)
        )
        gaussian_fit = fd(fitted.sample((len(train),)).float().view_as(train).clamp(-1, 1))
        noise = fd(torch.rand(train.shape, generator=generator) * 2 - 1)
        floor = frechet_floor(reference_stats, net(real), len(real)).item()
    print(
        f"FD classifier: held-out {sweep[0]:.3f} (floor at {len(real)}: {floor:.3f}), sigma 0.1/0.2/0.4 "
        f"{sweep[1]:.3f}/{sweep[2]:.3f}/{sweep[3]:.3f}, Gaussian fit {gaussian_fit:.3f}, noise {noise:.3f}"
    )
    assert sweep[0] < 0.02 * noise
    assert sweep[0] == pytest.approx(floor, abs=0.05)
    assert sweep == sorted(sweep) and len(set(sweep)) == 4
    assert sweep[0] < gaussian_fit < noise


def test_the_interval_holds_the_estimate_and_the_floor_undoes_the_small_sample_bias() -> None:
    generator = torch.Generator().manual_seed(0)
    real, fake = torch.randn(2000, 4, generator=generator), torch.randn(1000, 4, generator=generator) + 0.5
    point = frechet_distance(real, fake)
    lo, hi = frechet_interval(real, fake, resamples=100, seed=0)
    assert lo < point < hi and (lo, hi) == frechet_interval(real, fake, resamples=100, seed=0)
    real, few = torch.randn(2000, 16, generator=generator), torch.randn(200, 16, generator=generator)
    at_many = frechet_distance(real, torch.randn(20_000, 16, generator=generator))
    raw, floor = frechet_distance(real, few), frechet_floor(real, few, n=20_000)
    assert abs(floor - at_many) < 0.3 * abs(raw - at_many)


def test_a_corrupt_or_stale_cache_file_is_rebuilt_not_trusted(digits: Digits, tmp_path: Path, capsys) -> None:
    net = ReferenceNet(**TINY_RECIPE)
    path = tmp_path / f"reference_net-{net.cache_key(data_fingerprint(digits.probe_dataloaders()[0]))}.pt"
    net.fit_to(digits, cache_dir=tmp_path)
    assert "held-out (val) accuracy" in capsys.readouterr().out and path.is_file()
    good = path.read_bytes()
    stale = torch.load(path, weights_only=True)
    stale["state_dict"]["head.weight"] = torch.zeros(3, 3)
    stale_bytes = io.BytesIO()
    torch.save(stale, stale_bytes)
    for damage in (good[: len(good) // 2], b"not a checkpoint", stale_bytes.getvalue()):
        path.write_bytes(damage)
        with pytest.warns(UserWarning, match="(?s)corrupt or stale.*retraining"):
            ReferenceNet(**TINY_RECIPE).fit_to(digits, cache_dir=tmp_path)
        assert "held-out (val) accuracy" in capsys.readouterr().out
        assert torch.load(path, weights_only=True)["key"] == stale["key"]
    for fraction in (0.0, 0.5, 1.0):  # one flipped bit anywhere in the weights, which torch.load reads silently
        path.write_bytes(good)
        flip_stored_float(path, "data/0", fraction)
        with pytest.warns(UserWarning, match="(?s)corrupt or stale.*stored SHA-256.*retraining"):
            ReferenceNet(**TINY_RECIPE).fit_to(digits, cache_dir=tmp_path)
        assert "held-out (val) accuracy" in capsys.readouterr().out
    reloaded = ReferenceNet(**TINY_RECIPE)
    reloaded.fit_to(digits, cache_dir=tmp_path)
    assert capsys.readouterr().out == ""
    x = x_of(digits.probe_dataloaders()[1])
    assert torch.equal(reloaded(x), net(x))


def test_the_cache_key_changes_with_the_data_and_the_recipe(digits: Digits) -> None:
    def key(data: Digits | DataLoader, **recipe) -> str:
        loader = data if isinstance(data, DataLoader) else data.probe_dataloaders()[0]
        return ReferenceNet(**recipe).cache_key(data_fingerprint(loader))

    x, y = torch.zeros(8, 1, 8, 8), torch.arange(8) % 2
    base = key(digits)
    assert base == key(digits) == key(Digits(image_size=8))
    assert base != key(Digits(image_size=8, seed=1)) and base != key(Digits(image_size=8, n_train=500))
    assert base != key(digits, epochs=14) and base != key(digits, width=8) and base != key(digits, seed=1)
    assert key(Probe(x, y).loader) != key(Probe(x, 1 - y).loader) != key(Probe(x + 1, 1 - y).loader)


def test_metric_names_say_the_feature_space(digits: Digits, cache_dir: Path, reference) -> None:
    train_x, train_y = digits.train_tensor()
    metrics = GenerativeMetrics(
        n_samples=300, feature_net=ReferenceNet(), cache_dir=cache_dir, kid_subsets=10
    )
    trainer = fit(LabeledCopies(train_x, train_y), digits, [metrics], False)
    logged = trainer.callback_metrics
    suffixes = ("", "_lo", "_hi", "_n", "_floor")
    assert {f"gen/fd_classifier{s}" for s in suffixes} | {"gen/kid_classifier", "gen/class_acc"} <= set(
        logged
    )
    assert {"gen/precision_classifier", "gen/recall_classifier"} <= set(logged)
    assert not [name for name in logged if name.startswith("gen/fid")]
    assert logged["gen/fd_classifier_lo"] <= logged["gen/fd_classifier"] <= logged["gen/fd_classifier_hi"]
    assert logged["gen/fd_classifier_n"] == 300 and logged["gen/class_acc"] >= 0.97
    wrong = GenerativeMetrics(n_samples=100, metrics=["class_acc"], feature_net=reference[0])
    assert (
        fit(LabeledCopies(train_x, train_y, label_shift=1), digits, [wrong], False).callback_metrics[
            "gen/class_acc"
        ]
        < 0.1
    )
    pixels = GenerativeMetrics(n_samples=50, metrics=["fid"], feature_net=PixelFeatures(), n_bootstrap=0)
    assert set(pixels.evaluate(trainer, NoisyCopies(train_x))) == {
        "fd_pixels",
        "fd_pixels_n",
        "fd_pixels_floor",
    }


@pytest.mark.parametrize("data", ["digits", "manifold"])
def test_the_generative_preset_works_offline_without_arguments(
    data: str, make_config, cache_dir: Path
) -> None:
    cfg = make_config(
        "callbacks=generative",
        f"data={data}",
        "callbacks.generative.n_samples=200",
        f"callbacks.generative.cache_dir={cache_dir}",
    )
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    metrics = instantiate(cfg.callbacks.generative)
    trainer = fit(NoisyCopies(datamodule.train_tensor()[0]), datamodule, [metrics], False)
    space = "classifier" if data == "digits" else "vectors"
    assert {f"gen/fd_{space}", f"gen/fd_{space}_floor", f"gen/kid_{space}", "gen/memorization"} <= set(
        trainer.callback_metrics
    )


def _fit_on_rank(rank: int, init: str, folder: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    x = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    net = ReferenceNet(**TINY_RECIPE, seed=rank)  # a different seed per rank: only rank 0's may be kept
    net.fit_to(Probe(x, torch.arange(40) % 2))
    torch.save(net.state_dict(), Path(folder) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_every_rank_gets_rank_zeros_net(tmp_path: Path) -> None:
    init = f"file://{tmp_path / 'rendezvous'}"
    torch.multiprocessing.spawn(_fit_on_rank, args=(init, str(tmp_path)), nprocs=2)
    zero, one = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(zero[name], one[name]) for name in zero)


@pytest.mark.slow
def test_the_figures_do_not_depend_on_the_world_size(digits: Digits, cache_dir: Path, reference) -> None:
    def figures(devices: int) -> dict[str, float]:
        metrics = GenerativeMetrics(
            n_samples=90, batch_size=30, feature_net=ReferenceNet(), cache_dir=cache_dir, kid_subsets=10
        )
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
            devices=devices,
            strategy="ddp_spawn" if devices > 1 else "auto",
        )
        # A fresh datamodule per trainer: ddp_spawn pickles it, with the trainer it was last attached to.
        trainer.fit(LabeledCopies(*digits.train_tensor()), datamodule=Digits(image_size=8))
        return {
            name: float(value) for name, value in trainer.callback_metrics.items() if name.startswith("gen/")
        }

    one, two = figures(1), figures(2)
    assert "gen/fd_classifier_floor" in one and set(one) == set(two)
    for name in one:
        assert one[name] == pytest.approx(two[name], abs=1e-5), name


def test_an_unfitted_net_names_the_fix() -> None:
    with pytest.raises(RuntimeError, match="call fit_to"):
        ReferenceNet()(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="epochs=0 must be >= 1"):
        ReferenceNet(epochs=0)
    with pytest.raises(ValueError, match="at least 2 classes"):
        ReferenceNet(**TINY_RECIPE).fit_to(Probe(torch.zeros(4, 1, 8, 8), torch.full((4,), -1)))
