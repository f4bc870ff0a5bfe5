"""``task=sample``, ``task=eval`` and ``task=probe`` of a checkpoint, and reward guidance chosen in config."""

from __future__ import annotations

import json
from pathlib import Path

import lightning
import numpy as np
import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate
from test_scale import run_py
from torchvision.io import read_image

from zoo.app.sample_task import batch_seed
from zoo.app.train import main
from zoo.loading import load_method

TINY = ["trainer=debug", "callbacks=none", "~logger"]


def trained(tmp_path_factory: pytest.TempPathFactory, name: str, *overrides: str) -> Path:
    """The last checkpoint of a four-step run of ``overrides``."""
    out = tmp_path_factory.mktemp(name)
    main(compose_config([*overrides, "trainer=debug", "callbacks=default", "~callbacks.progress", "~callbacks.lr_monitor", "~logger"], out))
    return out / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def diffusion_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained(tmp_path_factory, "diffusion", "method=diffusion", "net=dit", "net.width=32")


@pytest.fixture(scope="module")
def dae_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained(tmp_path_factory, "dae", "method=dae")


def run_task(tmp_path: Path, *overrides: str) -> Path:
    out = tmp_path / "task"
    main(compose_config(list(overrides), out))
    return out


@pytest.mark.parametrize(
    "overrides",
    [["method=diffusion", "net=dit", "net.width=32"], ["method=jit"], ["method=diffusion", "net=mlp", "data=manifold"]],
    ids=["diffusion", "jit", "vectors"],
)
def test_task_sample_writes_a_grid_and_an_npz_numpy_reads(overrides, tmp_path_factory, tmp_path) -> None:
    ckpt = trained(tmp_path_factory, "run", *overrides)
    out = run_task(tmp_path, "task=sample", f"ckpt={ckpt}", "n=10", "sample_batch_size=4", "method.sampler.steps=2")
    with np.load(out / "samples.npz") as arrays:
        samples, labels = arrays["arr_0"], arrays["arr_1"]
    assert len(samples) == len(labels) == 10 and (labels == -1).all()
    assert not list(out.glob(".samples.rank*")), "the shards are joined and removed"
    method = load_method(ckpt)
    # Batch i of sample_batch_size comes from its own generator, seeded by (seed, i).
    expected = torch.cat([
        method.sample(size, generator=torch.Generator().manual_seed(batch_seed(0, i)), steps=2)
        for i, size in enumerate((4, 4, 2))
    ])
    if samples.ndim == 4:
        assert samples.dtype == np.uint8 and samples.shape == (10, *expected.shape[2:], 3)
        quantized = ((expected.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
        assert np.array_equal(samples, quantized.expand(-1, -1, -1, 3).numpy()), "grey repeated to RGB, steps=2"
        assert min(read_image(str(out / "samples.png")).shape[1:]) >= 256
    else:
        assert (out / "samples.png").stat().st_size > 0
        np.testing.assert_allclose(samples, expected.numpy(), rtol=0, atol=1e-6)


def test_task_sample_on_two_processes_writes_the_file_of_one(diffusion_ckpt: Path, tmp_path: Path) -> None:
    """13 samples in 5 batches of 3, shared unevenly by 2 gloo processes: the same npz as one process, RGB."""
    common = ["task=sample", f"ckpt={diffusion_ckpt}", "n=13", "sample_batch_size=3", "method.sampler.steps=2"]
    one = run_task(tmp_path / "one", *common)
    result = run_py(*common, "trainer=ddp", "trainer.devices=2", f"hydra.run.dir={tmp_path / 'two'}")
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(one / "samples.npz") as alone, np.load(tmp_path / "two" / "samples.npz") as shared:
        assert alone["arr_0"].shape == (13, 8, 8, 3)
        assert np.array_equal(alone["arr_0"], shared["arr_0"]) and np.array_equal(alone["arr_1"], shared["arr_1"])
    assert not list((tmp_path / "two").glob(".samples.rank*"))


def test_task_sample_in_bf16_writes_finite_samples(diffusion_ckpt: Path, tmp_path: Path) -> None:
    """trainer.precision=bf16-mixed: the predict loop samples under bf16 autocast (here the CPU's)."""
    out = run_task(tmp_path, "task=sample", f"ckpt={diffusion_ckpt}", "n=4", "method.sampler.steps=2",
                   "trainer.precision=bf16-mixed")
    assert json.loads((out / "metrics.json").read_text())["finite_fraction"] == 1.0
    with np.load(out / "samples.npz") as arrays:
        assert arrays["arr_0"].shape == (4, 8, 8, 3)


def test_task_eval_writes_the_metrics_of_the_checkpoint(diffusion_ckpt: Path, tmp_path: Path) -> None:
    out = run_task(tmp_path, "task=eval", f"ckpt={diffusion_ckpt}", *TINY)
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(metrics["val/loss"]) and np.isfinite(metrics["test/loss"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task=sample"], "task=sample works on a checkpoint: pass ckpt=<path to a .ckpt>"),
        (["task=sample", "ckpt=/no/such.ckpt"], "ckpt=/no/such.ckpt: no such checkpoint file"),
        (["task=sample", "n=0", "ckpt=TRAINED"], "n=0: n (how many samples task=sample draws) takes an integer >= 1"),
        (["task=eval"], "task=eval works on a checkpoint"),
        (["task=train"], "task=train: choose one of fit, sample, eval, probe"),
        (["task=probe", "ckpt=TRAINED", "probe.split=train"], "probe.split=train: choose one of val, test"),
        (["task=probe", "ckpt=TRAINED", "probe.t=1.5"], "probe.t=1.5"),
    ],
)
def test_bad_task_inputs_name_the_fix(overrides, message, diffusion_ckpt, tmp_path) -> None:
    overrides = [o.replace("TRAINED", str(diffusion_ckpt)) for o in overrides]
    with pytest.raises((ValueError, FileNotFoundError)) as caught:
        run_task(tmp_path, *overrides)
    assert message in str(caught.value)


def test_task_probe_gives_the_cell_of_the_training_runs_probe_map(tmp_path_factory, tmp_path) -> None:
    probe_map = ["callbacks=probe_map", "callbacks.probe_map.layers=[1]", "callbacks.probe_map.levels=[0.5]",
                 "callbacks.probe_map.draws=2", "callbacks.probe_map.figure_dir=null"]
    run = tmp_path_factory.mktemp("mapped")
    main(compose_config(["method=diffusion", "net=dit", "net.width=32", "trainer=debug", *probe_map,
                         "~callbacks.progress", "~callbacks.lr_monitor", "~logger", "seed=3"], run))
    mapped = json.loads((run / "metrics.json").read_text())
    ckpt = run / "checkpoints" / "last.ckpt"
    out = run_task(tmp_path, "task=probe", f"ckpt={ckpt}", "probe.layer=1", "probe.t=0.5", "probe.draws=2", "seed=3")
    probed = json.loads((out / "metrics.json").read_text())
    assert probed["probe/linear_top1"] == pytest.approx(mapped["probe_map/linear_b1_t0.5"], abs=1e-6)
    assert probed["probe/knn_top1"] == pytest.approx(mapped["probe_map/knn_b1_t0.5"], abs=1e-6)
    other = run_task(tmp_path / "other", "task=probe", f"ckpt={ckpt}", "probe.layer=1", "probe.t=0.5", "probe.draws=2", "seed=4")
    assert json.loads((other / "metrics.json").read_text()) != probed


def test_task_probe_reads_plain_features_on_the_test_split(dae_ckpt: Path, tmp_path: Path) -> None:
    out = run_task(tmp_path, "task=probe", f"ckpt={dae_ckpt}", "probe.split=test")
    probed = json.loads((out / "metrics.json").read_text())
    # The DAE's 100 ReLU codes of the digits after four steps: far above chance (0.1) if features and labels line up.
    assert probed["probe/linear_top1"] > 0.6 and probed["probe/knn_top1"] > 0.6


def test_sampling_a_method_that_cannot_sample_is_refused(dae_ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"is a DAE checkpoint, which has no sample; expected the checkpoint of a method that samples"):
        run_task(tmp_path, "task=sample", f"ckpt={dae_ckpt}", "n=4")


def test_eval_on_data_of_another_shape_is_refused(diffusion_ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"trained on data of shape \[1, 8, 8\] but data= gives \[1, 16, 16\]"):
        run_task(tmp_path, "task=eval", f"ckpt={diffusion_ckpt}", "data.image_size=16", *TINY)


GUIDANCE = ["guidance=prototype", "encoder=random", "guidance.reward.target_class=3"]


def test_reward_guidance_from_the_command_line_samples_toward_the_reward(diffusion_ckpt, tmp_path) -> None:
    """Gradient guidance raises the reward it follows (a random encoder's prototype cosine) over plain sampling."""
    plain = run_task(tmp_path / "plain", "task=sample", f"ckpt={diffusion_ckpt}", "n=32", "method.sampler.steps=4")
    guided = run_task(
        tmp_path / "guided", "task=sample", f"ckpt={diffusion_ckpt}", "n=32", "method.sampler.steps=4", *GUIDANCE,
        "guidance.scale=50.0",
    )
    cfg = compose_config(GUIDANCE, tmp_path / "cfg")
    lightning.seed_everything(cfg.seed)  # the order of task=sample: the data, then the reward's random encoder
    datamodule = instantiate(cfg.data)
    cfg.shape, cfg.num_classes = list(datamodule.shape), datamodule.num_classes
    reward = instantiate(cfg.guidance).reward
    datamodule.setup("fit")
    reward.fit_to(datamodule)

    def mean_reward(folder: Path) -> float:
        with np.load(folder / "samples.npz") as arrays:
            # One channel of the RGB file: the digits are grey.
            images = torch.from_numpy(arrays["arr_0"][..., :1]).permute(0, 3, 1, 2).float() / 127.5 - 1
        return float(reward(images).mean())

    assert mean_reward(guided) > mean_reward(plain)


def test_a_reward_encoder_that_cannot_read_the_data_is_named(diffusion_ckpt, tmp_path) -> None:
    with pytest.raises(ValueError, match="guidance.reward.encoder cannot encode the data's images of shape \\[1, 8, 8\\]"):
        run_task(tmp_path, "task=sample", f"ckpt={diffusion_ckpt}", "n=4", *GUIDANCE, "encoder.net.in_chans=3")


def test_guidance_without_an_encoder_names_the_fix(diffusion_ckpt, tmp_path) -> None:
    with pytest.raises(Exception, match="guidance=prototype needs a frozen encoder for its reward: pass encoder=zoo"):
        run_task(tmp_path, "task=sample", f"ckpt={diffusion_ckpt}", "n=4", "guidance=prototype")
