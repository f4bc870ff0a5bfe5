"""``load_method``: a trained run round-trips, and every bad file is refused in one line naming it."""

from __future__ import annotations

import pickle
import struct
import zipfile
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from zoo.app.configs import compose_as_run_py
from zoo.app.train import build
from zoo.loading import CHECKPOINT_FORMAT, Has, load_method
from zoo.methods.dae import DAE
from zoo.methods.moco import MoCo

TINY_MOCO = [
    "method=moco", "data.views=mocov2_noflip", "data.n_train=32", "data.batch_size=16", "method.queue_size=32",
    "net.width=4",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, MoCo]:
    """A MoCo run of two optimizer steps and its ``last.ckpt``."""
    folder = tmp_path_factory.mktemp("moco")
    built = build(compose_as_run_py(TINY_MOCO, folder / "run"))
    trainer = L.Trainer(
        max_epochs=1,
        limit_val_batches=0,
        callbacks=[ModelCheckpoint(dirpath=folder / "ckpt", save_last=True)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(built.method, datamodule=built.datamodule)
    assert trainer.global_step == 2
    return folder / "ckpt" / "last.ckpt", built.method


def edited(trained: tuple[Path, MoCo], path: Path, **changes) -> Path:
    """A copy of the trained checkpoint with ``changes`` applied (``None`` drops an entry)."""
    checkpoint = torch.load(trained[0], map_location="cpu", weights_only=True)
    for key, value in changes.items():
        if value is None:
            del checkpoint[key]
        else:
            checkpoint[key] = value
    torch.save(checkpoint, path)
    return path


def test_a_trained_run_round_trips(trained) -> None:
    path, original = trained
    method = load_method(path, expect=MoCo)
    assert type(method) is MoCo and not method.training and not any(m.training for m in method.modules())
    assert method.run_config == original.run_config and method.run_config["shape"] == [1, 8, 8]
    saved = original.state_dict()
    assert all(torch.equal(value, saved[key]) for key, value in method.state_dict().items())
    assert method.state_dict().keys() == saved.keys()
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(method.embed(x), original.eval().embed(x))
    assert torch.load(path, map_location="cpu", weights_only=True)["zoo_version"] == CHECKPOINT_FORMAT


@pytest.mark.parametrize("expect", [MoCo, (DAE, MoCo), Has("backbone"), lambda method: method.variant == "v2"])
def test_a_checkpoint_of_the_expected_kind_is_accepted(trained, expect) -> None:
    assert isinstance(load_method(trained[0], expect=expect), MoCo)


@pytest.mark.parametrize(
    ("expect", "message"),
    [
        (DAE, r"is a MoCo checkpoint, which is not a DAE; expected the checkpoint of a DAE$"),
        (Has("sample"), r"is a MoCo checkpoint, which has no sample; expected the checkpoint of a method with a sample$"),
    ],
)
def test_a_checkpoint_of_another_kind_is_refused(trained, expect, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_method(trained[0], expect=expect)


def test_the_caller_names_the_setting_and_what_it_expected(trained) -> None:
    with pytest.raises(ValueError, match=r"^teacher.ckpt=.*last.ckpt is a MoCo .*; expected a diffusion teacher$"):
        load_method(trained[0], expect=DAE, expected="a diffusion teacher", setting="teacher.ckpt")


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"ckpt=.*nothing.ckpt: no such checkpoint file"):
        load_method(tmp_path / "nothing.ckpt")


@pytest.mark.parametrize("damage", ["truncated", "empty", "text"])
def test_a_damaged_file_is_refused_without_advising_unsafe_loading(trained, tmp_path: Path, damage: str) -> None:
    data = trained[0].read_bytes()
    content = {"truncated": data[: len(data) // 2], "empty": b"", "text": b"not a checkpoint\n"}[damage]
    path = tmp_path / f"{damage}.ckpt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"{damage}.ckpt is not a PyTorch checkpoint archive") as error:
        load_method(path)
    assert "weights_only" not in str(error.value) and "\n" not in str(error.value)


def test_a_corrupted_pickle_inside_an_intact_archive_is_damaged_not_unsafe(trained, tmp_path: Path) -> None:
    data = bytearray(trained[0].read_bytes())
    entry = next(i for i in zipfile.ZipFile(trained[0]).infolist() if i.filename.endswith("/data.pkl"))
    name_length, extra_length = struct.unpack("<HH", data[entry.header_offset + 26 : entry.header_offset + 30])
    start = entry.header_offset + 30 + name_length + extra_length
    assert data[start : start + 2] == b"\x80\x02"
    data[start + 2] = 0xFF  # no pickle opcode: the stream is damaged right after its protocol header
    path = tmp_path / "corrupted.ckpt"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"corrupted.ckpt is damaged \(truncated or corrupted: UnpicklingError\)"):
        load_method(path)


class WritesAFile:
    """A pickle that, when unpickled by a full unpickler, creates ``marker`` (``open(marker, "w")``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_that_would_run_code_is_refused_and_does_not_run(trained, tmp_path: Path) -> None:
    pickle.loads(pickle.dumps(WritesAFile(tmp_path / "proof")))
    assert (tmp_path / "proof").exists(), "the crafted pickle must run code under a full unpickler"
    marker = tmp_path / "ran"
    path = edited(trained, tmp_path / "unsafe.ckpt", payload=WritesAFile(marker))
    with pytest.raises(ValueError, match=r"unsafe.ckpt holds objects other than tensors .*\(io.open\)") as error:
        load_method(path)
    assert "refused for safety" in str(error.value) and "weights_only" not in str(error.value)
    assert not marker.exists()


def test_a_checkpoint_without_zoo_config_is_not_a_zoo_checkpoint(trained, tmp_path: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "plain.ckpt")
    with pytest.raises(ValueError, match=r"plain.ckpt is not a zoo checkpoint \(it lacks zoo_config"):
        load_method(tmp_path / "plain.ckpt")
    with pytest.raises(ValueError, match=r"lightning.ckpt is not a zoo checkpoint"):
        load_method(edited(trained, tmp_path / "lightning.ckpt", zoo_config=None))


@pytest.mark.parametrize(
    ("version", "message"),
    [(CHECKPOINT_FORMAT + 1, rf"format version {CHECKPOINT_FORMAT + 1}, but"), (None, r"no format version")],
)
def test_another_format_version_is_refused(trained, tmp_path: Path, version: int | None, message: str) -> None:
    path = edited(trained, tmp_path / "other.ckpt", zoo_version=version)
    with pytest.raises(ValueError, match=rf"other.ckpt is a zoo checkpoint of {message}.*reads format version 1 or {CHECKPOINT_FORMAT}"):
        load_method(path)


def test_a_state_dict_mismatch_is_counted_not_dumped(trained, tmp_path: Path) -> None:
    state = torch.load(trained[0], map_location="cpu", weights_only=True)["state_dict"]
    dropped = sorted(key for key in state if key.startswith("momentum_backbone."))
    changed = {key: value for key, value in state.items() if key not in dropped}
    changed["extra.weight"] = torch.zeros(1)
    changed["queue"] = torch.zeros(3, 3)
    path = edited(trained, tmp_path / "mismatch.ckpt", state_dict=changed)
    with pytest.raises(ValueError) as error:
        load_method(path)
    message = str(error.value)
    assert f"{len(dropped)} missing: {', '.join(dropped[:3])}, ... ({len(dropped) - 3} more)" in message
    assert "1 unexpected: extra.weight" in message and "1 of another shape: queue" in message
    assert "mismatch.ckpt" in message and "\n" not in message and len(message) < 600
