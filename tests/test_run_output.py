"""What a run shows and keeps (issue 26, "no silent minutes"): progress bars for the evaluation and the
probes, the line that says what the end-of-run evaluation will cost, how many samples it draws by
default, the config printed only when asked, and ``run.log`` holding the terminal's output as plain text."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import pytest
import rich
from conftest import ROOT, compose_config
from hydra.utils import instantiate
from lightning.pytorch.callbacks import RichProgressBar
from test_generative_metrics import NoisyCopies, TinyData
from torch import Tensor, nn

from callbacks import GenerativeMetrics, KNNProbe
from callbacks.sample_count import auto_sample_count
from zoo.app.terminal_log import Screen
from zoo.app.train import fit, main

ANSI = re.compile(r"\x1b\[[0-9;?]*[@-~]")


class Embeds(NoisyCopies):
    """A generator that also embeds (its features: the pixels), so probes and metrics both run."""

    def embed(self, x: Tensor, **kw) -> Tensor:
        return x.flatten(1)


@pytest.fixture
def terminal() -> Iterator[io.StringIO]:
    """What Rich's console (the one training's progress bar uses) writes, as a terminal would get it."""
    screen = io.StringIO()
    yield screen
    rich.reconfigure()


def evaluate_tiny(callbacks: list, enable_progress_bar: bool, screen: io.StringIO) -> dict[str, float]:
    """The logged figures of one epoch of a tiny generator and probe target, with Rich's bar drawing into
    ``screen`` when enabled."""
    data = TinyData((1, 8, 8), n=48)
    bar = [RichProgressBar(console_kwargs={"file": screen, "force_terminal": True, "width": 160})]
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        callbacks=[*callbacks, *(bar if enable_progress_bar else [])],
        enable_checkpointing=False,
        enable_progress_bar=enable_progress_bar,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(Embeds(data.x), datamodule=data)
    return {name: float(value) for name, value in trainer.callback_metrics.items()}


def tiny_metrics() -> GenerativeMetrics:
    return GenerativeMetrics(n_samples=32, batch_size=8, metrics=["fid"], feature_net=nn.Flatten(), n_bootstrap=0)


def test_evaluation_and_probes_show_bars_and_the_estimate_line(terminal, capsys) -> None:
    evaluate_tiny([tiny_metrics(), KNNProbe(k=3)], enable_progress_bar=True, screen=terminal)
    shown = ANSI.sub("", terminal.getvalue())
    assert "generative metrics: sampling 32" in shown and "generative metrics: features of the samples" in shown
    assert "generative metrics: features of real data" in shown and "KNNProbe: features" in shown
    printed = capsys.readouterr().err + shown  # under a live display Rich prints stderr's lines above the bars
    assert re.search(r"generative metrics: 32 samples in 4 chunks, about [\d.]+ s \([\d.]+ s a chunk\)", printed), printed
    assert re.search(r"generative metrics: 32 samples scored in [\d.]+ s", printed), printed


def test_a_quiet_trainer_shows_no_bar_and_no_line_and_the_same_figures(terminal, capsys) -> None:
    quiet = evaluate_tiny([tiny_metrics(), KNNProbe(k=3)], enable_progress_bar=False, screen=terminal)
    assert terminal.getvalue() == ""
    assert "generative metrics" not in capsys.readouterr().err
    shown = evaluate_tiny([tiny_metrics(), KNNProbe(k=3)], enable_progress_bar=True, screen=terminal)
    assert {"gen/fd_features", "probe/knn_top1"} <= set(quiet) and shown == quiet


def test_auto_sample_count_scales_with_the_epochs_and_a_number_wins(make_config) -> None:
    def count(*overrides: str) -> int:
        cfg = make_config(*overrides)
        trainer = L.Trainer(max_epochs=cfg.trainer.max_epochs, logger=False, enable_progress_bar=False)
        return instantiate(cfg.callbacks.generative).sample_count(trainer)

    assert count() == 5000, "the default run (method=diffusion, 30 epochs) keeps its 5,000 samples"
    assert count("trainer=debug") == 500 and count("trainer.max_epochs=2") == 500
    assert count("trainer.max_epochs=15") == 2500 and count("trainer.max_epochs=60") == 5000
    assert count("trainer=debug", "callbacks.generative.n_samples=1234") == 1234
    assert auto_sample_count(-1) == auto_sample_count(None) == 5000


def test_n_samples_must_be_auto_or_a_count() -> None:
    for bad in (1, "many", True):
        with pytest.raises(ValueError, match=r"n_samples=.* must be an integer >= 2 or 'auto'"):
            GenerativeMetrics(n_samples=bad)


def test_the_resolved_config_is_printed_only_when_asked(make_config, tmp_path: Path, capsys) -> None:
    fit(make_config("method=dae", "trainer=debug", "logger=csv", output_dir=tmp_path / "quiet"))
    assert "_target_: zoo.methods" not in capsys.readouterr().out
    fit(make_config("method=dae", "trainer=debug", "logger=csv", "print_config=true", output_dir=tmp_path / "loud"))
    assert "_target_: zoo.methods" in capsys.readouterr().out


def test_task_sample_shows_a_bar_unless_the_progress_bar_is_off(terminal, tmp_path: Path) -> None:
    folder = tmp_path / "train"
    main(compose_config(["method=diffusion", "net=dit", "net.width=32", "trainer=debug", "callbacks=default",
                         "~callbacks.progress", "~callbacks.lr_monitor", "~logger"], folder))
    ckpt = folder / "checkpoints" / "last.ckpt"
    sample = ["task=sample", f"ckpt={ckpt}", "n=6", "sample_batch_size=2", "method.sampler.steps=2"]
    rich.reconfigure(file=terminal, force_terminal=True, width=160)
    main(compose_config([*sample, "~callbacks.progress"], tmp_path / "quiet"))
    assert "sampling" not in terminal.getvalue()
    main(compose_config(sample, tmp_path / "shown"))
    assert "task=sample: sampling 6" in ANSI.sub("", terminal.getvalue())


def test_screen_keeps_the_last_state_of_a_redrawn_bar() -> None:
    screen = Screen(height=5)
    redraws = "".join(f"\r\x1b[2K\x1b[35mwork {i}/50\x1b[0m" for i in range(51))
    final = screen.feed("start\n" + redraws + "\nnext\x1b[1A\r\x1b[2Kwork done\n") + screen.rest()
    assert final == ["start", "work done", "next"]
    pieces = "left \x1b[3" + "1mred\x1b" + "[0m right\n"
    chunked = Screen(height=1)
    assert [row for part in pieces.partition("\x1b[3") for row in chunked.feed(part)] == ["left red right"]


def test_run_log_keeps_the_terminal_output_as_plain_text(tmp_path: Path) -> None:
    out = tmp_path / "run"
    # A terminal as Rich sees one: colours, and progress bars redrawn in place with cursor moves.
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "TTY_COMPATIBLE": "1", "FORCE_COLOR": "1", "COLUMNS": "120",
           "LINES": "40"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), f"hydra.run.dir={out}", "trainer=debug"],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "\x1b[" in result.stdout and result.stdout.count("Epoch 0/0") > 3, "the terminal got redrawn bars"
    log = (out / "run.log").read_text()
    assert "\x1b" not in log and "\r" not in log
    assert "final metrics" in log and "gen/fd_classifier" in log and f"run folder: {out}" in log
    assert f"resolved config: {out}/.hydra/config.yaml (print_config=true prints it here)" in log
    assert "_target_: zoo.methods" not in log, "the config tree only with print_config=true"
    assert re.search(r"generative metrics: 500 samples \(n_samples=auto: 1/30 epochs, at least 500\) in 2 chunks, "
                     r"about [\d.]+ s \([\d.]+ s a chunk\)", log), log[-3000:]
    # A bar's last state; Lightning's "`Trainer.fit` stopped" line, written into the live bar, leaves it twice on a
    # terminal too.
    assert 1 <= len([line for line in log.splitlines() if "Epoch 0/0" in line]) <= 2
    assert json.loads((out / "metrics.json").read_text())["gen/fd_classifier_n"] == 500
