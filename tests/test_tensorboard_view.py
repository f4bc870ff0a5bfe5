"""What TensorBoard shows over a sweep: the swept key ticked first in HParams, the loss as the first card.

A real two-job sweep, then a real ``tensorboard`` server over its folder; the test reads what the
dashboards render from (the HParams experiment, the Time Series tags) and applies the dashboards' own
rules of TensorBoard 2.21: the HParams table ticks the first five columns after a stable sort that
puts ``differs`` first; the Time Series tab sorts tags with its natural compare (``compareTagNames``:
digits and ``/`` before other characters, numbers by value, the rest by character code) and groups
them by their first part. ``bench/tensorboard_view.sh`` takes screenshots of the same in Chromium.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT

CHOICES = ("data", "encoder", "experiment", "guidance", "method", "net")


def natural_before(a: str, b: str) -> bool:
    """Whether TensorBoard's Time Series tab sorts tag ``a`` before tag ``b`` (its ``compareTagNames``)."""
    i = j = 0
    while True:
        if i == len(a):
            return j != len(b)
        if j == len(b):
            return False
        if a[i].isdigit() and b[j].isdigit():
            start_a, start_b = i, j
            while i < len(a) and a[i].isdigit():
                i += 1
            while j < len(b) and b[j].isdigit():
                j += 1
            if int(a[start_a:i]) != int(b[start_b:j]):
                return int(a[start_a:i]) < int(b[start_b:j])
            continue
        early_a, early_b = a[i] == "/" or a[i].isdigit(), b[j] == "/" or b[j].isdigit()
        if early_a != early_b:
            return early_a
        if a[i] != b[j]:
            return a[i] < b[j]
        i, j = i + 1, j + 1


def first_tag(tags: list[str]) -> str:
    first = tags[0]
    for tag in tags[1:]:
        if natural_before(tag, first):
            first = tag
    return first


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url: str, body: dict | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "-m", "method=dae", "trainer=debug", "+test=false",
         "method.hidden=50,100", "trainer.max_epochs=2", f"hydra.sweep.dir={root}"],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def server(sweep: Path) -> str:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(sweep), "--port", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get(f"{url}/data/runs")
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_hparams_ticks_the_swept_key_and_no_constant_choice(server: str) -> None:
    experiment = get(f"{server}/data/plugin/hparams/experiment",
                     {"experimentName": "", "includeMetrics": True, "hparamsLimit": 1000})
    columns = experiment["hparamInfos"]
    ordered = [c for c in columns if c.get("differs")] + [c for c in columns if not c.get("differs")]
    ticked = [c["name"] for c in ordered[:5]]
    assert ticked[0] == "method.hidden"
    assert "trainer.max_epochs" in ticked and not set(CHOICES) & set(ticked), ticked
    metrics = [m["name"]["tag"] for m in experiment["metricInfos"]]
    assert metrics[0] == "Loss/val" and not any(m.startswith("hp/") for m in metrics), metrics


def test_trial_ids_are_the_sweep_folders(server: str) -> None:
    assert sorted(get(f"{server}/data/runs")) == ["0_hidden-50", "1_hidden-100"]


def test_the_first_scalar_card_is_the_loss_and_no_card_is_plumbing(server: str) -> None:
    tags = get(f"{server}/data/plugin/timeseries/tags")["scalars"]["runTagInfo"]["0_hidden-50"]
    assert first_tag(tags).startswith("Loss/"), sorted(tags)
    assert not [t for t in tags if t == "epoch" or t.startswith(("ema/", "hp/"))], tags


@pytest.mark.parametrize(("a", "b"), [("Loss/val", "ema/x"), ("a2", "a10"), ("1x", "a"), ("Loss/test", "Loss/val")])
def test_natural_order_matches_tensorboards(a: str, b: str) -> None:
    assert natural_before(a, b) and not natural_before(b, a)
