"""The datamodules on small files written in the real formats: batches, splits, views, bad inputs."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from hydra.utils import instantiate
from PIL import Image

from datamodules import CIFAR10, MNIST, FashionMNIST, ImageFolder, Manifold
from datamodules.views import single_view, two_views

N_TRAIN, N_TEST = 50, 20


def write_idx(path: Path, array: np.ndarray) -> None:
    """An idx file as LeCun's MNIST distribution has them: magic (uint8, ndim), big-endian dims, data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", n) for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, name: str = "MNIST") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(N_TRAIN) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(N_TEST) * 3 % 10).astype(np.uint8),
    }
    for file, array in arrays.items():
        write_idx(root / name / "raw" / file, array)
    return arrays


def write_cifar(root: Path) -> dict[str, dict]:
    rng = np.random.default_rng(1)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = {
            "batch_label": name,
            "data": rng.integers(0, 256, (10, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, 10).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(batches[name]))
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": 10, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return batches


def write_image_folder(root: Path, per_class: int = 6) -> list[Path]:
    rng = np.random.default_rng(2)
    paths = []
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            path = root / name / f"{i}.png"
            Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(path)
            paths.append(path)
    return paths


def first_batch(loader: torch.utils.data.DataLoader) -> dict:
    return next(iter(loader))


def check_batch(batch: dict, shape: tuple[int, ...], num_classes: int) -> None:
    assert batch["x"].dtype == torch.float32 and batch["y"].dtype == torch.long
    assert batch["x"].shape[1:] == shape and len(batch["y"]) == len(batch["x"])
    assert -1 <= batch["x"].min() and batch["x"].max() <= 1
    assert batch["x"].min() < -0.2 and batch["x"].max() > 0.2
    assert ((batch["y"] >= 0) & (batch["y"] < num_classes)).all()


def test_mnist_reads_the_idx_files_in_torchvisions_layout(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path)
    data = MNIST(root=str(tmp_path), batch_size=16)
    assert data.shape == (1, 28, 28) and data.num_classes == 10
    data.setup()
    train, val, test = data.splits
    assert (len(train), len(val), len(test)) == (45, 5, N_TEST)
    check_batch(first_batch(data.train_dataloader()), (1, 28, 28), 10)
    batch = first_batch(data.test_dataloader())
    expected = torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).float() / 255 * 2 - 1
    torch.testing.assert_close(batch["x"][:, 0], expected)
    assert batch["y"].tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_fashion_mnist_resizes_to_image_size(tmp_path: Path) -> None:
    write_mnist(tmp_path, name="FashionMNIST")
    data = FashionMNIST(root=str(tmp_path), image_size=32, batch_size=8)
    assert data.shape == (1, 32, 32)
    check_batch(first_batch(data.train_dataloader()), (1, 32, 32), 10)


def test_gzipped_idx_files_are_read_directly(tmp_path: Path) -> None:
    """torchvision's layout with the official ``*-ubyte.gz`` files (not unpacked), read without a copy."""
    arrays = write_mnist(tmp_path, name="FashionMNIST")
    for name in arrays:
        path = tmp_path / "FashionMNIST" / "raw" / name
        gzipped = path.with_name(f"{name}.gz")
        gzipped.write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    test = FashionMNIST(root=str(tmp_path)).splits[2]
    assert torch.equal(test.x[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))


def test_fashion_mnist_is_found_in_debians_package(tmp_path: Path, fashion_mnist: Path) -> None:
    """The real Fashion-MNIST, from Debian's dataset-fashion-mnist, with no data.root: 6,000 train and 1,000
    test images per class."""
    train, val, test = FashionMNIST(root=str(tmp_path)).splits
    assert (len(train), len(val), len(test)) == (54_000, 6_000, 10_000)
    assert torch.bincount(torch.cat([train.y, val.y])).tolist() == [6_000] * 10
    assert torch.bincount(test.y).tolist() == [1_000] * 10
    assert train.x.dtype == torch.uint8 and train.x.shape[1:] == (1, 28, 28)


def test_missing_fashion_mnist_names_the_package_and_the_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FashionMNIST, "system_folders", (tmp_path / "not-installed",))
    with pytest.raises(FileNotFoundError, match=r"FashionMNIST.raw.train-images-idx3-ubyte.*data\.download=true.*"
                                                r"apt-get install dataset-fashion-mnist"):
        FashionMNIST(root=str(tmp_path)).setup()


def test_cifar10_reads_the_python_pickles(tmp_path: Path) -> None:
    batches = write_cifar(tmp_path)
    data = CIFAR10(root=str(tmp_path), batch_size=8)
    assert data.shape == (3, 32, 32)
    train, val, test = data.splits
    assert (len(train), len(val), len(test)) == (45, 5, 10)
    check_batch(first_batch(data.train_dataloader()), (3, 32, 32), 10)
    x01, y = test[3]
    expected = torch.from_numpy(batches["test_batch"]["data"][3].reshape(3, 32, 32)).float() / 255
    torch.testing.assert_close(x01, expected)
    assert int(y) == batches["test_batch"]["labels"][3]


@pytest.mark.parametrize("channels", [1, 3])
def test_image_folder_resizes_crops_and_labels_by_folder(tmp_path: Path, channels: int) -> None:
    write_image_folder(tmp_path / "images")
    data = ImageFolder(root=str(tmp_path / "images"), image_size=8, channels=channels, batch_size=4)
    assert data.shape == (channels, 8, 8) and data.num_classes == 2 and data.classes == ["cat", "dog"]
    assert [len(split) for split in data.splits] == [10, 1, 1]
    check_batch(first_batch(data.train_dataloader()), (channels, 8, 8), 2)


def test_probe_dataloaders_are_clean_labeled_and_in_order(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    data = CIFAR10(root=str(tmp_path), batch_size=8, views="mocov2", augment="flip")
    probe_train, probe_val = data.probe_dataloaders()
    batch = first_batch(probe_train)
    assert set(batch) == {"x", "y"}
    assert len(batch["x"]) == 45 and len(probe_val.dataset) == 5
    torch.testing.assert_close(batch["x"], first_batch(data.probe_dataloaders()[0])["x"])
    torch.testing.assert_close(batch["x"], data.train_tensor()[0])


@pytest.mark.parametrize("recipe", ["mocov2", "mocov2_noflip", "mocov3", "mocov3_noflip"])
@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_two_views_are_distinct_augmentations_in_range(tmp_path: Path, recipe: str, dataset: str) -> None:
    if dataset == "mnist":
        write_mnist(tmp_path)
        data = MNIST(root=str(tmp_path), image_size=16, batch_size=8, views=recipe)
    else:
        write_cifar(tmp_path)
        data = CIFAR10(root=str(tmp_path), batch_size=8, views=recipe)
    batch = first_batch(data.train_dataloader())
    assert set(batch) == {"x", "y", "views"} and len(batch["views"]) == 2
    first, second = batch["views"]
    for view in (first, second):
        assert view.shape == batch["x"].shape and view.dtype == torch.float32
        assert -1 <= view.min() and view.max() <= 1
    assert not torch.allclose(first, second) and not torch.allclose(first, batch["x"])


def test_mocov3_views_are_asymmetric_and_mocov2_views_identical_recipes() -> None:
    first, second = two_views("mocov3", (3, 32, 32))
    assert "RandomSolarize" in repr(second) and "RandomSolarize" not in repr(first)
    first, second = two_views("mocov2", (1, 8, 8))
    assert first is second
    assert "ColorJitter(brightness=(0.6, 1.4), contrast=(0.6, 1.4))" in repr(first)
    assert "RandomGrayscale" not in repr(first) and "RandomHorizontalFlip" in repr(first)
    assert "RandomHorizontalFlip" not in repr(two_views("mocov2_noflip", (3, 8, 8))[0])


def test_single_view_flip_mirrors_or_keeps_the_image() -> None:
    image = torch.rand(3, 8, 8)
    flip = single_view("flip", image.shape)
    outputs = [flip(image) for _ in range(20)]
    assert all(torch.equal(o, image) or torch.equal(o, image.flip(-1)) for o in outputs)
    assert any(torch.equal(o, image.flip(-1)) for o in outputs)
    assert single_view(None, image.shape) is None


def test_unknown_recipe_names_raise_naming_the_config_key() -> None:
    with pytest.raises(ValueError, match=r"data\.views='simclr'.*mocov2"):
        two_views("simclr", (3, 32, 32))
    with pytest.raises(ValueError, match=r"data\.augment='crop'.*flip"):
        single_view("crop", (3, 32, 32))


def test_views_on_vectors_raise(tmp_path: Path) -> None:
    data = Manifold(n_samples=100, views="mocov2")
    with pytest.raises(ValueError, match=r"data\.views='mocov2' augments images"):
        data.train_dataloader()


def test_n_train_keeps_a_seeded_subset_and_rejects_too_many(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    data = MNIST(root=str(tmp_path), n_train=5, seed=3)
    assert len(data.splits[0]) == 5
    again = MNIST(root=str(tmp_path), n_train=5, seed=3)
    torch.testing.assert_close(data.train_tensor()[0], again.train_tensor()[0])
    with pytest.raises(ValueError, match=r"n_train=46 .* 45 training samples.*data\.n_train"):
        MNIST(root=str(tmp_path), n_train=46).setup()


def test_probe_size_caps_the_probe_loaders_to_a_seeded_subset(tmp_path: Path) -> None:
    write_mnist(tmp_path)

    def probe_images(**kw) -> list[torch.Tensor]:
        loaders = MNIST(root=str(tmp_path), seed=3, **kw).probe_dataloaders()
        return [torch.cat([batch["x"] for batch in loader]) for loader in loaders]

    full, capped = probe_images(), probe_images(probe_size=4)
    assert [len(x) for x in full] == [45, 5] and [len(x) for x in capped] == [4, 4]
    assert all(any(torch.equal(image, other) for other in full[0]) for image in capped[0])
    torch.testing.assert_close(capped[0], probe_images(probe_size=4)[0])
    with pytest.raises(ValueError, match="data.probe_size=0"):
        MNIST(root=str(tmp_path), probe_size=0)


def test_crop_min_replaces_the_recipes_smallest_crop() -> None:
    from datamodules.views import batched_two_views

    assert [v.crop_scale for v in batched_two_views("mocov3", (1, 16, 16), crop_min=0.5)] == [(0.5, 1.0)] * 2
    assert batched_two_views("mocov2", (1, 16, 16))[0].crop_scale == (0.2, 1.0)
    assert two_views("mocov2", (1, 16, 16), crop_min=0.6)[0].transforms[0].scale == (0.6, 1.0)
    with pytest.raises(ValueError, match="data.crop_min=0"):
        two_views("mocov2", (1, 16, 16), crop_min=0)


def test_splits_are_deterministic_by_seed(tmp_path: Path) -> None:
    write_mnist(tmp_path)

    def val_images(seed: int) -> torch.Tensor:
        return torch.stack([x for x, _ in MNIST(root=str(tmp_path), seed=seed).splits[1]])

    torch.testing.assert_close(val_images(0), val_images(0))
    assert not torch.equal(val_images(0), val_images(1))


def test_missing_files_without_download_name_the_path_and_the_flag(tmp_path: Path) -> None:
    expected = str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte")
    with pytest.raises(FileNotFoundError, match=r"data\.download=true") as info:
        MNIST(root=str(tmp_path)).setup()
    assert expected in str(info.value)
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.data_batch_1.*data\.download=true"):
        CIFAR10(root=str(tmp_path)).setup()


def test_failed_download_is_one_file_not_found_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(self: torchvision.datasets.MNIST) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    with pytest.raises(FileNotFoundError, match=r"data\.download=true failed.*Error downloading"):
        MNIST(root=str(tmp_path), download=True).setup()


def test_corrupt_cifar_pickle_is_named(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    corrupt = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    corrupt.write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="data_batch_3 is corrupt"):
        CIFAR10(root=str(tmp_path)).setup()


def test_cifar_pickle_with_wrong_contents_is_named(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    wrong = tmp_path / "cifar-10-batches-py" / "test_batch"
    wrong.write_bytes(pickle.dumps({"data": np.zeros((10, 100), dtype=np.uint8), "labels": [0] * 10}))
    with pytest.raises(ValueError, match="test_batch is corrupt.*3072"):
        CIFAR10(root=str(tmp_path)).setup()


def test_truncated_mnist_file_is_named(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    images = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte is corrupt"):
        MNIST(root=str(tmp_path)).setup()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_image_is_named_at_setup(tmp_path: Path, damage: str) -> None:
    paths = write_image_folder(tmp_path)
    bad = paths[7]
    bad.write_bytes(b"\x89PNG junk" if damage == "garbage" else bad.read_bytes()[:60])
    data = ImageFolder(root=str(tmp_path), image_size=8)
    with pytest.raises(ValueError, match=f"{bad.name} is not a readable image") as info:
        data.setup()
    assert str(bad) in str(info.value)


def test_a_broken_data_stream_fails_at_setup_or_by_name_when_read(tmp_path: Path) -> None:
    """A PNG with valid headers and checksums but no zlib stream passes PIL's verify(): ``check=decode`` (the
    default) fails at setup; ``check=header`` passes setup and names the file when the image is read."""
    from test_bad_inputs import broken_images

    root = broken_images(tmp_path)
    with pytest.raises(ValueError, match=r"broken\.png is not a readable image"):
        ImageFolder(root=str(root), image_size=8).setup()
    data = ImageFolder(root=str(root), image_size=8, check="header")
    data.setup()
    with pytest.raises(ValueError, match=r"broken\.png is not a readable image"):
        for split in data.splits:
            for i in range(len(split)):
                split[i]
    with pytest.raises(ValueError, match=r"data\.check=verify: use one of decode, header"):
        ImageFolder(root=str(root), check="verify")


def test_image_folder_missing_or_empty_root_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"data.root={tmp_path / 'nowhere'} is not a folder"):
        ImageFolder(root=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=f"data.root={tmp_path} has no class sub-folders"):
        ImageFolder(root=str(tmp_path))
    (tmp_path / "cat").mkdir()
    with pytest.raises(FileNotFoundError, match="a class folder holds no images"):
        ImageFolder(root=str(tmp_path)).setup()


def test_image_folder_too_few_images_raises(tmp_path: Path) -> None:
    write_image_folder(tmp_path, per_class=2)
    with pytest.raises(ValueError, match="holds 4 images, too few"):
        ImageFolder(root=str(tmp_path), image_size=8).setup()


def test_bad_settings_raise() -> None:
    with pytest.raises(ValueError, match="data.channels=2"):
        ImageFolder(root=".", channels=2)
    with pytest.raises(ValueError, match="data.val_fraction=1.0"):
        MNIST(root=".", val_fraction=1.0)


KINDS_AND_DIMS = [(k, D) for k in ("spiral", "circles", "gmm") for D in (2, 8, 512)] + [
    ("swiss_roll", D) for D in (3, 8, 512)
]


@pytest.mark.parametrize(("kind", "ambient_dim"), KINDS_AND_DIMS)
def test_manifold_projection_is_column_orthogonal_and_clean_data_lies_on_it(
    kind: str, ambient_dim: int
) -> None:
    data = Manifold(kind=kind, ambient_dim=ambient_dim, n_samples=400, batch_size=64)
    d = data.subspace_dim
    assert data.P.shape == (ambient_dim, d) and data.shape == (ambient_dim,)
    torch.testing.assert_close(data.P.T @ data.P, torch.eye(d), atol=1e-6, rtol=0)
    batch = first_batch(data.train_dataloader())
    assert (
        batch["x"].shape == (64, ambient_dim)
        and batch["x"].dtype == torch.float32
        and batch["y"].dtype == torch.long
    )
    x, _ = data.train_tensor()
    assert len(x) == 320 and x.norm(dim=-1).max() <= 1 + 1e-6 and x.norm(dim=-1).max() > 0.9
    assert data.distance_to_manifold(x).max() < 1e-5
    if ambient_dim > d:
        normal = torch.randn(len(x), ambient_dim)
        normal = normal - normal @ data.P @ data.P.T
        normal = normal / normal.norm(dim=-1, keepdim=True)
        pushed = data.distance_to_manifold(x + 0.05 * normal)
        torch.testing.assert_close(pushed, torch.full((len(x),), 0.05), atol=1e-5, rtol=0)


def test_manifold_in_plane_distances_match_the_offset_along_the_normal() -> None:
    circles = Manifold(kind="circles", ambient_dim=8, n_samples=100)
    angle = torch.linspace(0, 6, 50)
    on_outer = torch.stack([angle.cos(), angle.sin()], -1)
    torch.testing.assert_close(
        circles.distance_to_manifold((0.97 * on_outer) @ circles.P.T),
        torch.full((50,), 0.03),
        atol=1e-6,
        rtol=0,
    )
    spiral = Manifold(kind="spiral", ambient_dim=16, n_samples=100)
    theta = torch.linspace(5.0, 14.0, 50, dtype=torch.float64)
    arm = torch.tensor([0.0, 1.0]).repeat(25).double()
    tangent = spiral.intrinsic_set.points(theta + 1e-6, arm) - spiral.intrinsic_set.points(theta - 1e-6, arm)
    normal = torch.stack([-tangent[:, 1], tangent[:, 0]], -1)
    normal = normal / normal.norm(dim=-1, keepdim=True)
    pushed = (spiral.intrinsic_set.points(theta, arm) + 0.02 * normal).float() @ spiral.P.T
    torch.testing.assert_close(
        spiral.distance_to_manifold(pushed), torch.full((50,), 0.02), atol=1e-5, rtol=0
    )
    gmm = Manifold(kind="gmm", n_samples=100)
    mean = gmm.intrinsic_set.means[0].float()
    outside = mean * (1 + (0.24 + 0.05) / mean.norm())
    torch.testing.assert_close(
        gmm.distance_to_manifold(outside @ gmm.P.T), torch.tensor(0.05), atol=1e-6, rtol=0
    )


def test_manifold_labels_and_dimensions_per_kind() -> None:
    expected = {"spiral": (2, 1, 2), "swiss_roll": (0, 2, 3), "circles": (3, 1, 2), "gmm": (4, 2, 2)}
    for kind, (num_classes, intrinsic_dim, subspace_dim) in expected.items():
        n_classes = None if kind in ("spiral", "swiss_roll") else num_classes
        data = Manifold(kind=kind, ambient_dim=4, n_samples=200, n_classes=n_classes)
        assert (data.num_classes, data.intrinsic_dim, data.subspace_dim) == (
            num_classes,
            intrinsic_dim,
            subspace_dim,
        )
        labels = data.train_tensor()[1]
        if num_classes:
            assert sorted(labels.unique().tolist()) == list(range(num_classes))
        else:
            assert (labels == -1).all()


def test_manifold_is_fixed_by_the_seed_and_noise_moves_points_off_it() -> None:
    same = [Manifold(ambient_dim=8, n_samples=100, seed=5) for _ in range(2)]
    torch.testing.assert_close(same[0].P, same[1].P)
    torch.testing.assert_close(same[0].train_tensor()[0], same[1].train_tensor()[0])
    assert not torch.allclose(same[0].P, Manifold(ambient_dim=8, n_samples=100, seed=6).P)
    noisy = Manifold(kind="circles", ambient_dim=512, n_samples=2000, noise=0.01)
    distance = noisy.distance_to_manifold(noisy.train_tensor()[0])
    assert abs(distance.mean().item() - 0.01 * 511**0.5) < 0.01


def test_manifold_bad_settings_raise() -> None:
    with pytest.raises(ValueError, match="data.kind='torus'"):
        Manifold(kind="torus")
    with pytest.raises(ValueError, match="data.ambient_dim=2 is below the 3 dims"):
        Manifold(kind="swiss_roll", ambient_dim=2)
    with pytest.raises(ValueError, match="data.n_classes: the swiss roll is unlabeled"):
        Manifold(kind="swiss_roll", ambient_dim=3, n_classes=2)
    with pytest.raises(ValueError, match="data.noise=-0.1"):
        Manifold(noise=-0.1)
    with pytest.raises(ValueError, match="points of dim 3 given to a manifold in 2 dims"):
        Manifold().distance_to_manifold(torch.zeros(4, 3))


@pytest.mark.parametrize("name", ["manifold", "mnist", "fashion_mnist", "cifar10", "image_folder"])
def test_data_configs_compose_and_instantiate(make_config, tmp_path: Path, name: str) -> None:
    writers = {"mnist": write_mnist, "cifar10": write_cifar, "image_folder": write_image_folder}
    if name == "fashion_mnist":
        write_mnist(tmp_path / "data", name="FashionMNIST")
    elif name in writers:
        writers[name](tmp_path / "data")
    overrides = [f"data={name}", "data.batch_size=4"]
    if name != "manifold":
        overrides.append(f"data.root={tmp_path / 'data'}")
    data = instantiate(make_config(*overrides).data)
    batch = first_batch(data.train_dataloader())
    assert batch["x"].shape[1:] == data.shape and len(batch["x"]) == 4
