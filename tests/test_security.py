"""No code runs from data: a crafted CIFAR batch and a crafted checkpoint execute nothing when read.

Each crafted file pickles a call of ``os.system`` that would create a marker file; reading it must
fail with a message naming the file, and the marker must not exist. Every checkpoint load in the zoo
passes ``weights_only=True`` explicitly, so a change of torch's default cannot reopen the hole.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from test_datamodules import write_cifar

from datamodules import CIFAR10
from datamodules.safe_pickle import safe_load


class RunsCode:
    """Unpickles as ``os.system("touch <marker>")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_cifar_batch_runs_nothing(tmp_path: Path) -> None:
    write_cifar(tmp_path / "data")
    marker = tmp_path / "ran"
    batch = tmp_path / "data" / "cifar-10-batches-py" / "data_batch_2"
    payload = {"data": np.zeros((10, 3072), np.uint8), "labels": [0] * 10, "x": RunsCode(marker)}
    batch.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(ValueError, match=r"data_batch_2 .*refused to load the global posix\.system"):
        CIFAR10(root=str(tmp_path / "data")).setup()
    assert not marker.exists()


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_the_safe_reader_reads_numpy_and_plain_containers(tmp_path: Path, protocol: int) -> None:
    entry = {"data": np.arange(6, dtype=np.uint8).reshape(2, 3), "labels": [1, 2], "batch_label": "b",
             "filenames": [b"a.png"], "count": np.int64(2)}
    (tmp_path / "batch").write_bytes(pickle.dumps(entry, protocol=protocol))
    read = safe_load(tmp_path / "batch", encoding="latin1")
    assert np.array_equal(read["data"], entry["data"]) and read["labels"] == [1, 2] and read["count"] == 2


def test_a_crafted_checkpoint_runs_nothing(tmp_path: Path) -> None:
    from zoo.loading import load_method
    from zoo.resume import check_resume

    marker = tmp_path / "ran"
    path = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "zoo_config": {}, "payload": RunsCode(marker)}, path)
    with pytest.raises(ValueError, match=r"crafted\.ckpt holds objects other than tensors.*refused"):
        load_method(path)
    with pytest.raises(ValueError, match=r"resume=.*crafted\.ckpt holds objects other than tensors"):
        check_resume(str(path), torch.nn.Linear(1, 1), f"resume={path}")
    assert not marker.exists()


def test_every_checkpoint_load_passes_weights_only_true() -> None:
    loads = re.compile(r"torch\.load\(([^)]*)\)|\.(?:fit|validate|test|predict)\(([^)]*ckpt_path[^)]*)\)")
    unsafe = []
    for folder in ("zoo", "callbacks", "datamodules", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            for match in loads.finditer(path.read_text()):
                if "weights_only=True" not in match.group(0):
                    unsafe.append(f"{path.relative_to(ROOT)}: {match.group(0)}")
    assert not unsafe, unsafe
