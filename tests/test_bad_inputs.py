"""Bad inputs on the command line: each fails before any optimizer step, in one paragraph naming the key or file.

One case per input of the reliability trials (issues 16 and 22) and of the earlier error tests. Each case runs
``run.py`` in a subprocess and asserts: exit code 1, no traceback but the hint to get one, the key or file named
(``expect``, a regular expression on stderr), and no step taken: no checkpoint or ``metrics.json`` written
anywhere under the run folder, and every file that was there before (a finished run's folder) byte-identical.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image


class Crafted:
    """Pickles as a call of ``os.system``: loading it unsafely would run a command."""

    def __reduce__(self) -> tuple:
        return (os.system, ("touch /tmp/zoo-crafted-checkpoint-ran",))


def run_py(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def dae_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real dae checkpoint from a debug run."""
    from conftest import compose_config

    from zoo.app.train import fit

    out = tmp_path_factory.mktemp("dae")
    fit(compose_config(["method=dae", "trainer=debug", "+test=false", "logger=csv"], out))
    return out / "checkpoints" / "last.ckpt"


def readonly_folder(tmp_path: Path) -> Path:
    """A folder no run can be written into (root writes through file modes, not into /sys)."""
    if os.geteuid() == 0:
        return Path("/sys/zoo-readonly-run")
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    return folder / "run"


def garbage(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.ckpt"
    path.write_bytes(b"\x00not a checkpoint" * 100)
    return path


def crafted(tmp_path: Path) -> Path:
    path = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "payload": Crafted()}, path)
    assert zipfile.is_zipfile(path)
    return path


def finished_run(tmp_path: Path, dae: Path) -> Path:
    """A copy of the finished dae run's folder, to start another run in."""
    folder = tmp_path / "finished"
    shutil.copytree(dae.parent.parent, folder)
    return folder


def crafted_config(tmp_path: Path, dae: Path) -> Path:
    """The dae checkpoint with a stored method config that would create a file if it were built."""
    checkpoint = torch.load(dae, map_location="cpu", weights_only=True)
    checkpoint["zoo_config"]["method"] = {"_target_": "builtins.open", "_args_": [str(tmp_path / "ran"), "w"]}
    path = tmp_path / "crafted_config.ckpt"
    torch.save(checkpoint, path)
    return path


def legacy(tmp_path: Path, dae: Path) -> Path:
    path = tmp_path / "legacy.ckpt"
    torch.save(torch.load(dae, map_location="cpu", weights_only=True), path, _use_new_zipfile_serialization=False)
    return path


def broken_images(tmp_path: Path) -> Path:
    """An image folder whose one PNG has valid headers and checksums but a data stream that is not zlib."""
    root = tmp_path / "images"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / label / f"{i}.png")
    raw = b"\x00" + b"\xff" * 24  # one filter byte and 8 RGB pixels: not a zlib stream
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    header = struct.pack(">IIBBBBB", 8, 1, 8, 2, 0, 0, 0)
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw)
                                            + chunk(b"IEND", b""))
    return root


CASES = {
    # The trial's list (issue 16).
    "encoder_zoo_without_ckpt": (lambda t, d: ["method=repa", "encoder=zoo"], r"encoder\.ckpt"),
    "read_only_run_folder": (lambda t, d: [f"hydra.run.dir={readonly_folder(t)}"], r"zoo-readonly-run|readonly"),
    "garbage_checkpoint": (lambda t, d: [f"resume={garbage(t)}"], r"garbage\.ckpt"),
    "crafted_checkpoint": (lambda t, d: [f"resume={crafted(t)}"], r"crafted\.ckpt.*(refused|could run code)"),
    "dae_checkpoint_as_diffusion": (lambda t, d: ["method=diffusion", f"resume={d}"], r"resume=.*last\.ckpt.*DAE.*Diffusion"),
    "max_steps_not_a_number": (lambda t, d: ["trainer.max_steps=abc"], r"trainer\.max_steps=abc.*int"),
    "seed_not_a_number": (lambda t, d: ["seed=abc"], r"seed=abc.*int"),
    "mlp_on_images": (lambda t, d: ["net=mlp"], r"net.*MLP.*images.*net=unet"),
    "moco_on_vectors": (lambda t, d: ["method=moco", "data=manifold"], r"method=moco trains on augmented views of images.*data=manifold.*data=digits"),
    "misspelt_key": (lambda t, d: ["trainer.max_step=3"], r"trainer\.max_step\b.*did you mean trainer\.max_steps"),
    "misspelt_key_with_plus": (lambda t, d: ["+trainer.max_step=3"], r"trainer\.max_step\b.*did you mean trainer\.max_steps"),
    # Earlier error tests (tests/test_run.py and the first trial).
    "unknown_group_choice": (lambda t, d: ["method=mocoo"], r"method/mocoo.*dae"),
    "misspelt_method_argument": (lambda t, d: ["method=dae", "+method.hiden=3"], r"method\.hiden.*did you mean method\.hidden"),
    "image_net_on_vectors": (lambda t, d: ["data=manifold", "net=unet"], r"net=UNet.*vectors.*net=mlp"),
    "missing_resume_file": (lambda t, d: [f"resume={t / 'nope.ckpt'}"], r"resume=.*nope\.ckpt"),
    "sample_without_ckpt": (lambda t, d: ["task=sample"], r"ckpt=<path"),
    "unknown_task": (lambda t, d: ["task=train"], r"task=train.*fit"),
    "n_train_larger_than_data": (lambda t, d: ["data.n_train=5000"], r"n_train=5000"),
    # The trust trial (issue 22): values out of range or not finite, named with their range.
    "guidance_scale_nan": (lambda t, d: ["guidance=prototype", "guidance.scale=nan"], r"guidance\.scale=nan: .*finite number >= 0"),
    "accumulate_grad_batches_zero": (lambda t, d: ["trainer.accumulate_grad_batches=0"], r"trainer\.accumulate_grad_batches=0: .*integer >= 1"),
    "sample_batch_size_negative": (lambda t, d: ["task=sample", f"ckpt={d}", "sample_batch_size=-1"], r"sample_batch_size=-1: .*integer >= 1"),
    "sample_batch_size_zero": (lambda t, d: ["task=sample", f"ckpt={d}", "sample_batch_size=0"], r"sample_batch_size=0: .*integer >= 1"),
    "negative_learning_rate": (lambda t, d: ["method.optimizer.lr=-1"], r"method\.optimizer\.lr=-1: .*> 0"),
    "seed_too_large": (lambda t, d: ["seed=99999999999"], r"seed=99999999999: .*\[0, 4294967295\]"),
    "max_steps_zero": (lambda t, d: ["trainer.max_steps=0"], r"trainer\.max_steps=0: .*-1 or an integer >= 1"),
    "gradient_clip_negative": (lambda t, d: ["trainer.gradient_clip_val=-1"], r"trainer\.gradient_clip_val=-1: .*>= 0"),
    "label_dropout_above_one": (lambda t, d: ["method.label_dropout=1.5"], r"method\.label_dropout=1\.5: .*\[0, 1\]"),
    "learning_rate_infinite": (lambda t, d: ["method.optimizer.lr=inf"], r"method\.optimizer\.lr=inf"),
    "unknown_precision": (lambda t, d: ["trainer.precision=17"], r"trainer\.precision=17"),
    "generative_samples_too_few": (
        lambda t, d: ["callbacks.generative.n_samples=1"],
        r"callbacks\.generative\.n_samples=1: .*takes 'auto' or an integer >= 2",
    ),
    "generative_samples_a_word": (
        lambda t, d: ["callbacks.generative.n_samples=many"],
        r"callbacks\.generative\.n_samples=many: .*takes int or one of 'auto'",
    ),
    # Failing early: a broken image, a study's later sub-run, an unwritable cache.
    "image_with_broken_data_stream": (
        lambda t, d: ["data=image_folder", f"data.root={broken_images(t)}", "data.image_size=8", "method=dae"],
        r"broken\.png is not a readable image",
    ),
    "study_later_run_out_of_range": (
        lambda t, d: ["experiment=dae_width", "study.runs.100=['method.hidden=-3']"],
        r"study dae_width, run 100: method\.hidden=-3",
    ),
    "unwritable_cache_dir": (lambda t, d: ["paths.cache_dir=/sys/zoo-cache"], r"paths\.cache_dir=/sys/zoo-cache cannot be written"),
    # Paths and Hydra's parser: a parse error names the key and the quoted form.
    "unquoted_list_item_with_equals": (
        lambda t, d: ["experiment=dae_width", "study.runs.100=[method.hidden=3]"],
        r"study\.runs\.100: Hydra cannot parse .*\"study\.runs\.100=\['method\.hidden=3'\]\"",
    ),
    "ckpt_is_a_folder": (lambda t, d: ["task=sample", f"ckpt={d.parent}"], r"ckpt=.*checkpoints is a folder.*last\.ckpt"),
    "resume_is_a_folder": (lambda t, d: [f"resume={d.parent}"], r"resume=.*checkpoints is a folder.*last\.ckpt"),
    "legacy_format_checkpoint": (lambda t, d: ["task=sample", f"ckpt={legacy(t, d)}"], r"legacy\.ckpt is in torch's legacy serialization format"),
    # Code chosen by a file, and one run per folder.
    "crafted_stored_config": (
        lambda t, d: ["task=sample", f"ckpt={crafted_config(t, d)}"],
        r"crafted_config\.ckpt: its stored config names method\._target_='builtins\.open'.*trust_checkpoint=true",
    ),
    "second_run_into_finished_folder": (
        lambda t, d: ["method=dae", f"hydra.run.dir={finished_run(t, d)}"],
        r"finished already holds a run \(run\.json, metrics\.json, checkpoints/.*hydra\.run\.dir=<new folder>.*resume=auto",
    ),
    "resume_auto_of_another_seed": (
        lambda t, d: ["method=dae", "seed=1", "resume=auto", f"hydra.run.dir={finished_run(t, d)}"],
        r"resume=auto \(.*finished/checkpoints/.*\) is a checkpoint of another run: .*seed: 0 in the checkpoint, 1 now",
    ),
}


@pytest.fixture(scope="module")
def results(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, dae_checkpoint: Path
) -> dict[str, tuple[Path, dict[Path, bytes], subprocess.CompletedProcess]]:
    """The run folder and the finished ``run.py`` of every selected case, two at a time: each spends its
    seconds importing torch and Lightning on one core, so two side by side take the time of one."""
    selected = [
        item.callspec.params["case"]
        for item in request.session.items
        if item.module is request.module and "case" in getattr(getattr(item, "callspec", None), "params", {})
    ]
    commands = {}
    for case in selected:
        folder = tmp_path_factory.mktemp(case)
        args = CASES[case][0](folder, dae_checkpoint)
        given = [a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")]
        out = Path(given[0]) if given else folder / "run"
        if not given:
            args = [*args, f"hydra.run.dir={out}"]
        commands[case] = (out, snapshot(out), ["trainer=debug", *args])
    with ThreadPoolExecutor(max_workers=2) as pool:
        finished = dict(zip(commands, pool.map(lambda command: run_py(*command[2]), commands.values())))
    return {case: (commands[case][0], commands[case][1], finished[case]) for case in commands}


def snapshot(folder: Path) -> dict[Path, bytes]:
    """Every file under ``folder`` with its bytes (empty when the folder does not exist yet)."""
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()} if folder.is_dir() else {}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_in_one_paragraph_before_training(
    case: str, results: dict[str, tuple[Path, dict[Path, bytes], subprocess.CompletedProcess]]
) -> None:
    out, before, result = results[case]
    expect = CASES[case][1]
    assert result.returncode == 1, result.stdout[-2000:]
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    assert "(set HYDRA_FULL_ERROR=1 for the traceback)" in result.stderr, result.stderr[-3000:]
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, result.stderr[-3000:]
    assert re.search(expect, error[0]), error[0]
    after = snapshot(out)
    assert all(after.get(path) == content for path, content in before.items()), "a file of the folder changed"
    written = [path for path in after.keys() - before.keys() if path.suffix == ".ckpt" or path.name == "metrics.json"]
    assert not written, written
    assert not Path("/tmp/zoo-crafted-checkpoint-ran").exists()
    assert not (out.parent / "ran").exists()
