"""``method=consistency autoencoder=<ckpt>``: CT and CD in an autoencoder's latents, through the one
``LatentSpace`` joint that ``method=diffusion`` uses; and format-1 checkpoints of latent diffusion models,
written before that joint, still load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import compose_config, unbroken_and_resumed
from test_latent_diffusion import ENDS, LATENT_DIT, TINY_VAE
from test_scale import assert_same_weights

from zoo.app.resume import check_resume
from zoo.app.train import build, fit
from zoo.loading import load_method

EDM_X = ["method.schedule._target_=zoo.diffusion.schedules.EDM", "method.prediction=x", "method.loss_space=x"]
SHORT = ["trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "data.n_train=96", "data.batch_size=32"]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A VAE, and a diffusion teacher on EDM in its latents: their last checkpoints."""
    out = {}
    folder = tmp_path_factory.mktemp("vae")
    fit(compose_config(TINY_VAE, folder))
    out["vae"] = folder / "checkpoints" / "last.ckpt"
    folder = tmp_path_factory.mktemp("teacher")
    fit(compose_config(["method=diffusion", *EDM_X, *LATENT_DIT, f"autoencoder={out['vae']}", *ENDS, *SHORT], folder))
    out["teacher"] = folder / "checkpoints" / "last.ckpt"
    return out


def test_ct_in_latents_trains_samples_pixels_and_resumes_exactly(runs: dict[str, Path], tmp_path: Path, make_config) -> None:
    tiny = ["method=consistency", *LATENT_DIT, f"autoencoder={runs['vae']}", *ENDS, *SHORT,
            "method.cache_latents=true", f"paths.cache_dir={tmp_path / 'cache'}"]
    unbroken, resumed = unbroken_and_resumed(make_config, tmp_path, *tiny)
    assert resumed["global_step"] == unbroken["global_step"] == 6
    assert any(key.startswith("space.norm.") for key in unbroken["state_dict"])
    assert_same_weights(unbroken["state_dict"], resumed["state_dict"])
    model = load_method(tmp_path / "unbroken" / "checkpoints" / "last.ckpt")
    assert model.shape == (4, 4, 4) and model.data_shape == (1, 8, 8) and bool(model.space.norm.fitted)
    samples = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (3, 1, 8, 8) and torch.isfinite(samples).all()
    assert model.embed(torch.zeros(2, 1, 8, 8)).shape[0] == 2


def test_cd_with_a_latent_teacher_takes_its_latent_statistics_and_trains(runs: dict[str, Path], tmp_path: Path, make_config) -> None:
    cd = ["method=consistency", "method.mode=distill", f"method.teacher={runs['teacher']}", "method.steps=6",
          *LATENT_DIT, f"autoencoder={runs['vae']}", *ENDS, *SHORT]
    student = build(make_config(*cd, output_dir=tmp_path / "built")).method
    teacher = load_method(runs["teacher"])
    assert torch.equal(student.space.norm.mean, teacher.space.norm.mean) and bool(student.space.norm.fitted)
    metrics = fit(make_config(*cd, output_dir=tmp_path / "cd"))
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    samples = load_method(tmp_path / "cd" / "checkpoints" / "last.ckpt").sample(2)
    assert samples.shape == (2, 1, 8, 8)


def test_cd_in_another_space_than_its_teacher_is_refused(runs: dict[str, Path], make_config) -> None:
    with pytest.raises(Exception, match=r"method\.teacher=.*denoises the latents of autoencoder=.*vae.*but this run's "
                                        r"student denoises pixels: distil in the teacher's space \(autoencoder="):
        build(make_config("method=consistency", "method.mode=distill", f"method.teacher={runs['teacher']}",
                          *LATENT_DIT))


def test_a_format_1_latent_checkpoint_loads_through_the_key_map_and_is_not_resumed(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """What the zoo wrote before ``LatentSpace``: ``autoencoder.*`` and ``latent_norm.*`` at the top, version 1."""
    checkpoint = load(runs["teacher"])
    renames = {"space.autoencoder.": "autoencoder.", "space.norm.": "latent_norm."}
    old = {}
    for key, value in checkpoint["state_dict"].items():
        prefix = next((p for p in renames if key.startswith(p)), None)
        old[key if prefix is None else renames[prefix] + key[len(prefix):]] = value
    assert old.keys() != checkpoint["state_dict"].keys()
    path = tmp_path / "format1.ckpt"
    torch.save({**checkpoint, "state_dict": old, "zoo_version": 1}, path)
    then, now = load_method(path), load_method(runs["teacher"])
    draw = lambda model: model.sample(2, generator=torch.Generator().manual_seed(3))  # noqa: E731
    assert torch.equal(draw(then), draw(now))
    with pytest.raises(ValueError, match=r"format version 1, whose weight names this zoo renamed .*cannot resume it"):
        check_resume(str(path), now, f"resume={path}")
