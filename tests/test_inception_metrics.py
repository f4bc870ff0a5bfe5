"""``task=fid`` and ``task=fid_reference``: the FID Inception against torch-fidelity's port, the two resize
conventions, and FID, IS, precision and recall of npz files against hand computations (numpy, scipy)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate
from scipy import linalg
from test_datamodules import write_image_folder
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from callbacks.metrics.frechet_distance import frechet_distance_of_stats
from callbacks.metrics.image_resize import resize_like_tensorflow1, to_inception_input
from callbacks.metrics.inception import FIDInceptionV3, load_inception
from zoo.app.train import main


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dict of the FID Inception with random weights and batch-norm statistics, saved as the published
    file is (the real weights cannot be downloaded here)."""
    torch.manual_seed(0)
    net = FIDInceptionV3()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 2)
        elif isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(module.weight)
    path = tmp_path_factory.mktemp("inception") / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(net.state_dict(), path)
    return path


def images(seed: int, n: int, size: int = 16, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def features(npz_images: np.ndarray, weights: Path, convention: str) -> tuple[np.ndarray, np.ndarray]:
    """Pool features and logits of ADM-layout images, by calling the net directly."""
    net = load_inception(weights)
    x = torch.from_numpy(npz_images).permute(0, 3, 1, 2)
    with torch.no_grad():
        pool, logits = net(to_inception_input(x, convention))
    return pool.double().numpy(), logits.double().numpy()


def hand_fid(a: np.ndarray, b: np.ndarray) -> float:
    """Heusel et al. 2017, Eq. 6, with scipy's sqrtm. With fewer rows than features, C_a C_b has the nonzero
    spectrum of the small ``(X_a X_bᵀ)(X_b X_aᵀ) / ((n_a - 1)(n_b - 1))`` (X the centred rows), whose root is
    taken instead of the 2048×2048 one."""
    xa, xb = a - a.mean(0), b - b.mean(0)
    cross = xa @ xb.T
    small = cross @ cross.T / ((len(a) - 1) * (len(b) - 1))
    root_trace = np.trace(linalg.sqrtm(small).real)
    traces = (xa**2).sum() / (len(a) - 1) + (xb**2).sum() / (len(b) - 1)
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + traces - 2 * root_trace)


def hand_inception_score(logits: np.ndarray) -> float:
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return float(np.exp(np.mean(np.sum(p * (np.log(p) - np.log(p.mean(0, keepdims=True))), 1))))


def hand_precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """The ADM evaluator's: squared distances, the radius the k-th neighbour's (the point itself excluded)."""

    def squared(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)

    radius_real, radius_fake = (np.sort(squared(s, s), axis=1)[:, k] for s in (real, fake))
    precision = (squared(fake, real) <= radius_real[None, :]).any(1).mean()
    recall = (squared(real, fake) <= radius_fake[None, :]).any(1).mean()
    return float(precision), float(recall)


def run_fid(tmp_path: Path, name: str, *overrides: str) -> dict[str, float]:
    out = tmp_path / name
    main(compose_config(list(overrides), out))
    return json.loads((out / "metrics.json").read_text())


def test_the_inception_is_torch_fidelitys_port(inception_file: Path) -> None:
    """Same weights, same images of 16 px: the pool features and unbiased logits of torch-fidelity's
    ``inception-v3-compat`` (its TF1 bilinear resize inside) and of the zoo's net in the ADM convention."""
    reference = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"], str(inception_file))
    x = torch.from_numpy(images(1, 3)).permute(0, 3, 1, 2)
    expected_pool, expected_logits = reference(x)
    with torch.no_grad():
        pool, logits = load_inception(inception_file)(to_inception_input(x, "adm"))
    torch.testing.assert_close(pool, expected_pool, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, expected_logits, rtol=1e-5, atol=1e-5)


def test_tensorflow1_bilinear_reads_input_pixel_i_times_in_over_out() -> None:
    """TF1's legacy resize of [a, b] to 4: output i reads input i/2, so the last two are b (no half-pixel centres)."""
    row = torch.tensor([[[[10.0, 30.0]]]]).expand(1, 1, 2, 2)
    assert resize_like_tensorflow1(row, 4)[0, 0, 0].tolist() == [10.0, 20.0, 30.0, 30.0]


def test_the_two_conventions_differ_and_both_leave_299_pixels_alone() -> None:
    x = torch.from_numpy(images(2, 2, size=299)).permute(0, 3, 1, 2)
    for convention in ("adm", "clean"):
        torch.testing.assert_close(to_inception_input(x, convention), x.float(), rtol=0, atol=1e-3)
    small = torch.from_numpy(images(3, 2)).permute(0, 3, 1, 2)
    assert (to_inception_input(small, "adm") - to_inception_input(small, "clean")).abs().max() > 1
    grey = small[:, :1]
    torch.testing.assert_close(to_inception_input(grey, "clean"), to_inception_input(grey.expand(-1, 3, -1, -1), "clean"))


@pytest.mark.parametrize("convention", ["adm", "clean"])
def test_task_fid_equals_a_hand_computation(convention: str, inception_file: Path, tmp_path: Path) -> None:
    samples, reference = images(4, 12), images(5, 10)
    np.savez(tmp_path / "samples.npz", samples, np.full(12, -1))
    np.savez(tmp_path / "reference.npz", reference)
    metrics = run_fid(
        tmp_path, "fid", "task=fid", f"fid.samples={tmp_path / 'samples.npz'}", f"fid.reference={tmp_path / 'reference.npz'}",
        f"fid.weights={inception_file}", f"fid.convention={convention}", "fid.batch_size=5",
    )
    fake, fake_logits = features(samples, inception_file, convention)
    real, _ = features(reference, inception_file, convention)
    assert set(metrics) == {f"{name}_{convention}" for name in ("fid", "is", "precision", "recall")}
    assert metrics[f"fid_{convention}"] == pytest.approx(hand_fid(real, fake), rel=1e-4)
    assert metrics[f"is_{convention}"] == pytest.approx(hand_inception_score(fake_logits), rel=1e-6)
    precision, recall = hand_precision_recall(real, fake)
    assert (metrics[f"precision_{convention}"], metrics[f"recall_{convention}"]) == pytest.approx((precision, recall))


def test_reference_statistics_of_a_dataset_give_the_fid_of_its_images(inception_file: Path, tmp_path: Path) -> None:
    """task=fid_reference on an image folder; task=fid against those statistics equals task=fid against the
    same images as an npz (FID only: statistics hold no points for precision and recall)."""
    write_image_folder(tmp_path / "images")
    data = ["data=image_folder", f"data.root={tmp_path / 'images'}", "data.image_size=16"]
    run_fid(tmp_path, "ref", "task=fid_reference", *data, f"fid.weights={inception_file}")
    cfg = compose_config(data, tmp_path / "cfg")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    train = torch.stack([x for x, _ in datamodule.splits[0]])
    train_images = (train * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    with np.load(tmp_path / "ref" / "fid_reference_adm.npz") as stats:
        real, _ = features(train_images, inception_file, "adm")
        np.testing.assert_allclose(stats["mu"], real.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stats["sigma"], np.cov(real, rowvar=False), rtol=1e-4, atol=1e-6)
        assert int(stats["n"]) == len(train_images) and str(stats["convention"]) == "adm"
    np.savez(tmp_path / "train.npz", train_images)
    np.savez(tmp_path / "samples.npz", images(6, 8))
    common = [f"fid.samples={tmp_path / 'samples.npz'}", f"fid.weights={inception_file}"]
    against_stats = run_fid(tmp_path, "stats", "task=fid", *common, f"fid.reference={tmp_path / 'ref' / 'fid_reference_adm.npz'}")
    against_images = run_fid(tmp_path, "images", "task=fid", *common, f"fid.reference={tmp_path / 'train.npz'}")
    assert set(against_stats) == {"fid_adm", "is_adm"}
    assert against_stats["fid_adm"] == pytest.approx(against_images["fid_adm"], rel=1e-6)
    with pytest.raises(ValueError, match="holds adm statistics but fid.convention=clean"):
        run_fid(tmp_path, "mixed", "task=fid", *common, f"fid.reference={tmp_path / 'ref' / 'fid_reference_adm.npz'}",
                "fid.convention=clean")


def test_the_frechet_distance_is_exact_on_an_ill_conditioned_covariance() -> None:
    """Covariances with eigenvalues from 1e-10 to 1e4 (condition number 1e14) sharing eigenvectors: the trace of
    (C_1 C_2)^½ is then Σ (a_i b_i)^½ exactly; the distance comes out real, finite and equal to it."""
    generator = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(64, 64, generator=generator, dtype=torch.float64))
    a = torch.logspace(-10, 4, 64, dtype=torch.float64)
    b = a.flip(0) * torch.rand(64, generator=generator, dtype=torch.float64)
    mean = torch.randn(64, generator=generator, dtype=torch.float64)
    first, second = (mean, (q * a) @ q.T), (torch.zeros(64, dtype=torch.float64), (q * b) @ q.T)
    exact = (mean**2).sum() + a.sum() + b.sum() - 2 * (a * b).sqrt().sum()
    distance = frechet_distance_of_stats(first, second)
    assert torch.isfinite(distance) and not distance.is_complex()
    assert float(distance) == pytest.approx(float(exact), rel=1e-9)


def test_missing_weights_and_bad_files_name_the_fix(inception_file: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    np.savez(tmp_path / "samples.npz", images(7, 4))
    np.savez(tmp_path / "floats.npz", images(7, 4).astype(np.float32))
    samples = f"fid.samples={tmp_path / 'samples.npz'}"
    with pytest.raises(FileNotFoundError, match="download https://github.com/toshas/torch-fidelity/.*fid.weights=<the file>"):
        run_fid(tmp_path, "a", "task=fid", samples, f"fid.reference={tmp_path / 'samples.npz'}")
    with pytest.raises(ValueError, match="uint8 N,H,W,3"):
        run_fid(tmp_path, "b", "task=fid", f"fid.samples={tmp_path / 'floats.npz'}", f"fid.reference={tmp_path / 'samples.npz'}",
                f"fid.weights={inception_file}")
    with pytest.raises(FileNotFoundError, match="fid.reference=None is not a file"):
        run_fid(tmp_path, "c", "task=fid", samples, f"fid.weights={inception_file}")
    with pytest.raises(ValueError, match="fid.convention=tf: choose one of adm, clean"):
        run_fid(tmp_path, "d", "task=fid", samples, "fid.convention=tf")
    with pytest.raises(FileNotFoundError, match="fid.weights=.*missing.pth is not a file: download"):
        run_fid(tmp_path, "e", "task=fid", samples, f"fid.reference={tmp_path / 'samples.npz'}",
                f"fid.weights={tmp_path / 'missing.pth'}")
    with pytest.raises(ValueError, match="fid.split=holdout: choose one of train, val, test"):
        run_fid(tmp_path, "f", "task=fid_reference", "fid.split=holdout", f"fid.weights={inception_file}")
