"""Scale and operations: DDP and two "nodes" on gloo, SLURM/submitit launchers, crash and resume, NaN guard,
torch.compile, bf16, gradient clipping and accumulation.

Every multi-process check runs ``run.py`` in subprocesses on the CPU (gloo), one thread each.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import CONF, ROOT
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from callbacks.training.files import HOST, atomic_torch_save
from callbacks.training.finite_checkpoint import non_finite_parameters
from zoo.app.config_checks import check_launch
from zoo.app.resume import resume_path
from zoo.app.train import build, fit

TINY_DIFFUSION = [
    "method=diffusion",
    "net=dit",
    "net.width=32",
    "net.depth=2",
    "net.heads=2",
    "method.sampler.steps=4",
    "data.batch_size=64",
]
PROBES_AND_GENERATIVE = [
    "callbacks=probes",
    "+callbacks.generative={_target_:callbacks.GenerativeMetrics,n_samples:64,batch_size:32,"
    "metrics:[fid,kid,precision_recall,memorization],feature_net:{_target_:torch.nn.Flatten},"
    "kid_subset_size:32,kid_subsets:10,seed:0}",
]
FEW_STEPS = [
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=1",
    "+trainer.limit_test_batches=1",
    "+trainer.num_sanity_val_steps=0",
]


class RankWeights(L.Callback):
    """Test helper: every rank saves its final weights as ``rank<global rank>.pt`` in ``folder``."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        torch.save(pl_module.state_dict(), self.folder / f"rank{trainer.global_rank}.pt")


def run_env(extra: dict[str, str] | None) -> dict[str, str]:
    """This environment with one thread per process, errors as one message, and ``extra``."""
    return {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1", **(extra or {})}


def run_py_process(*args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python run.py *args`` started in the repository root; output to the file ``log`` (a pipe nobody
    reads would fill up and stall the run)."""
    with log.open("w") as output:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, env=run_env(env), stdout=output, stderr=output
        )


def run_py(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python run.py *args`` run to the end in the repository root, output captured."""
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, env=run_env(env), capture_output=True, text=True,
        timeout=timeout,
    )


def one_line(text: str) -> str:
    """``text`` with its whitespace runs (rich wraps long messages) as single spaces."""
    return " ".join(text.split())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"weights differ: {different}"


def figures(metrics: dict[str, float]) -> dict[str, float]:
    """The probe, representation-statistics and generative-metric values of a metrics.json."""
    return {k: v for k, v in metrics.items() if k.startswith(("probe/", "stats/", "gen/"))}


def compose_hydra(overrides: list[str]) -> DictConfig:
    """The config with its ``hydra`` node, as Hydra composes it for ``run.py``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-process DDP run of a tiny diffusion model, with probes and generative metrics, in the
    default timestamped run folder under its own PROJECT_ROOT."""
    root = tmp_path_factory.mktemp("ddp")
    result = run_py(
        "trainer=ddp", "trainer.devices=2", *TINY_DIFFUSION, *FEW_STEPS, *PROBES_AND_GENERATIVE,
        env={"PROJECT_ROOT": str(root)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root


@pytest.mark.slow
def test_ddp_run_writes_one_run_folder(ddp_run: Path) -> None:
    [folder] = (ddp_run / "logs" / "diffusion" / "digits").iterdir()
    assert list(ddp_run.rglob("metrics.json")) == [folder / "metrics.json"]
    assert len(list(ddp_run.rglob("run.json"))) == 1 and len(list(ddp_run.rglob("config.yaml"))) == 1
    assert len(list(folder.glob("events.out.tfevents.*"))) >= 1
    assert (folder / "checkpoints" / "last.ckpt").is_file()
    # The terminal's output is kept by rank zero alone.
    assert list(ddp_run.rglob("run.log")) == [folder / "run.log"]
    assert (folder / "run.log").read_text().count("final metrics") == 1


def one_process_figures(root: Path, make_config) -> tuple[dict[str, float], dict[str, float]]:
    """The DDP run's figures, and those of its last.ckpt validated by one process (``task=eval``)."""
    [folder] = (root / "logs" / "diffusion" / "digits").iterdir()
    two = figures(json.loads((folder / "metrics.json").read_text()))
    one = fit(
        make_config(
            *TINY_DIFFUSION, *FEW_STEPS, *PROBES_AND_GENERATIVE, "task=eval", "+test=false",
            f"ckpt={folder / 'checkpoints' / 'last.ckpt'}",
        )
    )
    return two, figures(one)


@pytest.mark.slow
def test_probes_under_ddp_equal_one_process(ddp_run, make_config) -> None:
    two, one = one_process_figures(ddp_run, make_config)
    names = [k for k in two if k.startswith(("probe/", "stats/"))]
    assert {"probe/linear_top1", "probe/knn_top1"} <= set(names) and any(k.startswith("stats/") for k in names)
    for name in names:
        assert one[name] == pytest.approx(two[name], abs=1e-5), name


@pytest.mark.slow
def test_generative_metrics_under_ddp_equal_one_process(ddp_run, make_config) -> None:
    two, one = one_process_figures(ddp_run, make_config)
    names = [k for k in two if k.startswith("gen/")]
    assert {"gen/fd_features", "gen/kid_features", "gen/precision_features", "gen/memorization"} <= set(names)
    for name in names:
        assert one[name] == pytest.approx(two[name], abs=1e-5), name


@pytest.mark.slow
def test_two_nodes_on_loopback_finish_with_identical_weights(tmp_path: Path) -> None:
    run_dir, weights = tmp_path / "run", tmp_path / "weights"
    args = [
        "method=dae", "trainer=ddp", "trainer.num_nodes=2", "trainer.devices=1", "trainer.max_epochs=1",
        "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1", "+test=false",
        f"hydra.run.dir={run_dir}", f"+callbacks.rank_weights={{_target_:test_scale.RankWeights,folder:'{weights}'}}",
    ]
    common = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "PYTHONPATH": str(ROOT / "tests")}
    logs = [tmp_path / f"node{rank}.log" for rank in (0, 1)]
    nodes = [
        run_py_process(*args, log=log, env={**common, "NODE_RANK": str(rank)}) for rank, log in enumerate(logs)
    ]
    try:
        for node in nodes:
            node.wait(timeout=300)
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    for node, log in zip(nodes, logs):
        assert node.returncode == 0, log.read_text()[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".log") == ["run", "weights"]
    assert len(list(tmp_path.rglob("metrics.json"))) == 1
    rank0, rank1 = load(weights / "rank0.pt"), load(weights / "rank1.pt")
    assert_same_weights(rank0, rank1)
    checkpoint = load(run_dir / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 3
    assert_same_weights(rank0, checkpoint["state_dict"])


def test_separately_started_nodes_need_one_run_folder() -> None:
    cfg = compose_hydra(["trainer=ddp", "trainer.num_nodes=2", "trainer.devices=1"])
    HydraConfig.instance().set_config(cfg)
    with pytest.raises(ValueError, match=r"trainer.num_nodes=2: .* hydra.run.dir="):
        check_launch(cfg)
    cfg = compose_hydra(["trainer=ddp", "trainer.num_nodes=2", "trainer.devices=1", "hydra.run.dir=/tmp/x"])
    HydraConfig.instance().set_config(cfg)
    check_launch(cfg)


def test_multi_process_job_in_a_local_sweep_is_refused() -> None:
    cfg = compose_hydra(["trainer=ddp"])
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    with pytest.raises(ValueError, match=r"2 processes in a multirun .* hydra/launcher=slurm"):
        check_launch(cfg)


class SubmissionRendered(Exception):
    """Stops the launcher where it would submit; carries the sbatch script submitit wrote."""


def test_slurm_launcher_composes_to_the_submitit_parameters(tmp_path: Path, monkeypatch) -> None:
    import submitit

    cfg = compose_hydra(
        [
            "hydra/launcher=slurm", "trainer=ddp", "trainer.devices=8", "trainer.num_nodes=4",
            "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=600", f"hydra.sweep.dir={tmp_path}",
        ]
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.tasks_per_node, launcher.nodes, launcher.gpus_per_node) == (8, 4, 8)
    assert launcher.partition == "gpu" and launcher.additional_parameters.signal == "USR1@90"
    # Let submitit write the sbatch script from these parameters, through the launcher's own code.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")

    def render(executor: submitit.AutoExecutor, *args: object) -> None:
        raise SubmissionRendered(executor._executor._make_submission_file_text("python job.py", "uid"))

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", render)
    HydraConfig.instance().set_config(cfg)
    from hydra.utils import instantiate

    plugin = instantiate(cfg.hydra.launcher)
    plugin.setup(hydra_context=None, task_function=None, config=cfg)
    with pytest.raises(SubmissionRendered) as rendered:
        plugin.launch([["seed=1"]], initial_job_idx=0)
    script = rendered.value.args[0]
    for line in (
        "--signal=USR1@90", "--ntasks-per-node=8", "--nodes=4", "--gpus-per-node=8", "--partition=gpu",
        "--time=600",
    ):
        assert f"#SBATCH {line}\n" in script, script
    assert "--signal=USR2" not in script


@pytest.mark.slow
def test_local_sweep_runs_through_submitit(tmp_path: Path) -> None:
    result = run_py(
        "-m", "hydra/launcher=submitit_local", "method=dae", "trainer=debug", "seed=0,1", "+test=false",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(p.parent.name for p in tmp_path.glob("*/metrics.json"))
    assert runs == ["0_seed-0", "1_seed-1"], runs
    assert (tmp_path / ".submitit").is_dir()


CRASH_RUN = [
    "method=dae", "trainer.max_epochs=24", "data.batch_size=64", "data.n_train=512", "+test=false",
    "trainer.log_every_n_steps=1",
]


def checkpoint_epoch(path: Path) -> int:
    """The epoch of a checkpoint, or -1 while there is none."""
    return load(path)["epoch"] if path.is_file() else -1


@pytest.mark.slow
def test_run_killed_mid_training_resumes_to_the_same_weights(tmp_path: Path, make_config) -> None:
    run_dir = tmp_path / "killed"
    last = run_dir / "checkpoints" / "last.ckpt"
    log = tmp_path / "killed.log"
    process = run_py_process(*CRASH_RUN, f"hydra.run.dir={run_dir}", log=log)
    try:
        deadline = time.monotonic() + 240
        while checkpoint_epoch(last) < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed: " + log.read_text()[-2000:]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    killed_at = checkpoint_epoch(last)
    assert 2 <= killed_at < 23
    assert not (run_dir / "metrics.json").exists()

    resumed = run_py(*CRASH_RUN, f"hydra.run.dir={run_dir}", "resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    fit(make_config(*CRASH_RUN, output_dir=tmp_path / "unbroken"))

    unbroken, continued = load(tmp_path / "unbroken" / "checkpoints" / "last.ckpt"), load(last)
    assert continued["global_step"] == unbroken["global_step"] == 24 * 8
    assert_same_weights(unbroken["state_dict"], continued["state_dict"])
    assert_same_weights(
        unbroken["optimizer_states"][0]["state"][0], continued["optimizer_states"][0]["state"][0]
    )


def test_resume_with_ema_equals_an_unbroken_run(tmp_path: Path, make_config) -> None:
    tiny = [*TINY_DIFFUSION, "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1", "+test=false",
            "callbacks.ema.update_starting_at_step=2", "~callbacks.samples", "data.n_train=300"]
    fit(make_config(*tiny, "trainer.max_epochs=4", output_dir=tmp_path / "unbroken"))
    fit(make_config(*tiny, "trainer.max_epochs=2", output_dir=tmp_path / "resumed"))
    fit(make_config(*tiny, "trainer.max_epochs=4", "resume=auto", output_dir=tmp_path / "resumed"))
    unbroken = load(tmp_path / "unbroken" / "checkpoints" / "last.ckpt")
    resumed = load(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == unbroken["global_step"] == 12
    assert_same_weights(unbroken["state_dict"], resumed["state_dict"])
    assert_same_weights(unbroken["current_model_state"], resumed["current_model_state"])


def test_resume_auto_takes_the_newest_checkpoint_of_the_run_folder(tmp_path: Path) -> None:
    assert resume_path("auto", tmp_path) is None
    last, preempted = tmp_path / "checkpoints" / "last.ckpt", tmp_path / "hpc_ckpt_1.ckpt"
    atomic_torch_save({"global_step": 4}, last)
    assert resume_path("auto", tmp_path) == str(last)
    atomic_torch_save({"global_step": 6}, preempted)
    os.utime(preempted, (0, 0))
    assert resume_path("auto", tmp_path) == str(preempted)
    atomic_torch_save({"global_step": 8}, last)
    assert resume_path("auto", tmp_path) == str(last)


def test_atomic_save_leaves_the_old_checkpoint_whole_when_the_write_fails(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    atomic_torch_save({"weights": torch.ones(3)}, target)

    class Unpicklable:
        def __reduce__(self) -> tuple:
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        atomic_torch_save({"weights": torch.zeros(1000), "bad": Unpicklable()}, target)
    assert torch.equal(torch.load(target)["weights"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    dead = subprocess.Popen(["true"])  # a writer that has exited
    dead.wait()
    killed = f".last.ckpt.{HOST}.{dead.pid}.{'0' * 32}.tmp"
    writing = f".last.ckpt.{HOST}.{os.getpid()}.{'1' * 32}.tmp"
    elsewhere = f".last.ckpt.otherhost.{dead.pid}.{'2' * 32}.tmp"
    for name in (killed, writing, elsewhere):
        (tmp_path / name).write_bytes(b"a temp file")
    atomic_torch_save({"weights": torch.zeros(2)}, target)
    # The killed writer's temp goes; a live writer's (another process saving the same entry now) and another
    # host's stay: removing a live writer's temp made its rename fail (two study jobs sharing the latent cache).
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([elsewhere, writing, "last.ckpt"])


# Adam's lr jumps by `gamma` after `step_size` optimizer steps (StepLR on every step): a real divergence.
NAN_RUN = ["method=dae", "trainer.max_epochs=3", "+trainer.limit_train_batches=4", "+trainer.limit_val_batches=1",
           "+test=false", "+trainer.num_sanity_val_steps=0"]


def exploding_lr(step_size: int, gamma: float) -> str:
    return (
        "method.scheduler={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true,"
        f"step_size:{step_size},gamma:{gamma}}}"
    )


@pytest.mark.slow
def test_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_checkpoint(tmp_path: Path) -> None:
    result = run_py(*NAN_RUN, exploding_lr(6, 1e40), f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1
    message = one_line(result.stderr)
    assert "non-finite training loss" in message and "at global step 7" in message, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    checkpoint = load(tmp_path / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 4
    assert all(torch.isfinite(w).all() for w in checkpoint["state_dict"].values())
    assert not (tmp_path / "metrics.json").exists()


def test_on_an_accelerator_a_non_finite_loss_is_read_at_the_log_interval(
    tmp_path: Path, make_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where reading the loss would make the host wait for the device (a GPU), the steps' flag is read every
    trainer.log_every_n_steps steps and the error names the window the first non-finite loss fell in."""
    from zoo.methods import base

    monkeypatch.setattr(base, "reads_loss_every_step", lambda device: False)
    built = build(make_config("method=dae", "trainer=debug", "trainer.log_every_n_steps=2", "callbacks=none", "~logger",
                              output_dir=tmp_path))
    losses = built.method.losses

    def poisoned(batch: dict) -> dict:
        parts = losses(batch)
        return {**parts, "loss": parts["loss"] * (math.nan if built.method.global_step == 2 else 1.0)}

    monkeypatch.setattr(built.method, "losses", poisoned)
    with pytest.raises(FloatingPointError, match="non-finite training loss at a global step from 2 to 3"):
        built.trainer.fit(built.method, datamodule=built.datamodule)
    assert built.method.global_step == 3


def test_checkpoint_of_non_finite_weights_is_refused(tmp_path: Path, make_config) -> None:
    built = build(make_config(*NAN_RUN, "trainer.max_epochs=1", output_dir=tmp_path))
    built.trainer.fit(built.method, datamodule=built.datamodule)
    last = tmp_path / "checkpoints" / "last.ckpt"
    good = last.read_bytes()
    with torch.no_grad():
        built.method.encoder.weight[0, 0] = math.inf
    with pytest.raises(FloatingPointError, match=r"non-finite weights at global step 4 \(encoder.weight\)"):
        built.trainer.save_checkpoint(last)
    assert last.read_bytes() == good
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt", "step4.ckpt"]


def test_non_finite_parameters_are_named() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    assert non_finite_parameters(net) == []
    with torch.no_grad():
        net[1].bias[0] = math.nan
    assert non_finite_parameters(net) == ["1.bias"]


def short_fit(cfg: DictConfig) -> L.Trainer:
    built = build(cfg)
    built.trainer.fit(built.method, datamodule=built.datamodule)
    return built.trainer


@pytest.mark.slow
def test_compile_trains_a_few_steps(make_config) -> None:
    import torch._dynamo

    torch._dynamo.reset()
    cfg = make_config(
        "method=diffusion", "data=manifold", "data.n_samples=256", "net=mlp", "net.hidden=32", "net.depth=2",
        "compile=true", "trainer.max_steps=2", "+trainer.limit_val_batches=0", "+trainer.num_sanity_val_steps=0",
        "callbacks=none", "logger=csv",
    )
    trainer = short_fit(cfg)
    net = trainer.lightning_module.net
    assert net._compiled_call_impl is not None
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert trainer.global_step == 2 and math.isfinite(float(trainer.callback_metrics["train/loss_step"]))
    assert not any(k.startswith("_orig_mod") for k in net.state_dict())


def test_compile_without_a_net_is_a_clear_error(make_config) -> None:
    with pytest.raises(ValueError, match=r"compile=true compiles method.net, but DAE has no net"):
        build(make_config("method=dae", "compile=true"))


def test_bf16_mixed_trains_a_few_steps(make_config) -> None:
    cfg = make_config(
        *TINY_DIFFUSION, "trainer.precision=bf16-mixed", "trainer.max_steps=2", "+trainer.limit_val_batches=0",
        "+trainer.num_sanity_val_steps=0", "callbacks=none", "logger=csv",
    )
    trainer = short_fit(cfg)
    assert trainer.precision == "bf16-mixed" and trainer.global_step == 2
    assert math.isfinite(float(trainer.callback_metrics["train/loss_step"]))


def test_gradient_clipping_bounds_the_update(make_config) -> None:
    cfg = make_config(
        "method=dae", "method.optimizer._target_=torch.optim.SGD", "method.optimizer.lr=1.0",
        "method.optimizer.weight_decay=0", "trainer.gradient_clip_val=0.001", "trainer.max_steps=1",
        "+trainer.limit_val_batches=0", "+trainer.num_sanity_val_steps=0", "callbacks=none", "logger=csv",
    )
    built = build(cfg)
    before = built.method.encoder.weight.detach().clone()
    built.trainer.fit(built.method, datamodule=built.datamodule)
    step = (built.method.encoder.weight.detach() - before).norm().item()
    assert 0 < step <= 0.001 + 1e-7


def test_gradient_accumulation_counts_optimizer_steps(make_config) -> None:
    cfg = make_config(
        "method=dae", "trainer.accumulate_grad_batches=2", "trainer.max_epochs=1", "+trainer.limit_train_batches=4",
        "+trainer.limit_val_batches=0", "+trainer.num_sanity_val_steps=0", "callbacks=none", "logger=csv",
    )
    assert short_fit(cfg).global_step == 2


def test_task_eval_needs_an_existing_checkpoint(make_config, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"task=eval works on a checkpoint: pass ckpt="):
        fit(make_config("method=dae", "task=eval"))
    with pytest.raises(FileNotFoundError, match=r"ckpt=.*missing.ckpt: no such checkpoint file"):
        fit(make_config("method=dae", "task=eval", f"ckpt={tmp_path / 'missing.ckpt'}"))


def test_training_order_is_a_function_of_seed_and_epoch() -> None:
    from datamodules.base import EpochShuffle

    data = list(range(50))
    sampler = EpochShuffle(data, seed=3)
    first = list(sampler)
    torch.manual_seed(123)
    assert list(sampler) == first and sorted(first) == data
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first and list(EpochShuffle(data, seed=4)) != first
