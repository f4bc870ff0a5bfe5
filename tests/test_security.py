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
from test_rae import TINY as TINY_RAE

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
    from zoo.app.resume import check_resume
    from zoo.loading import load_method

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


# A stored config that chooses code: each entry point that loads a checkpoint refuses it before building.

TINY_ONE_STEP = ["trainer=debug", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "callbacks=none",
                 "+test=false", "logger=csv"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real one-step checkpoints: a diffusion model on EDM (a CD teacher), a MoCo (a REPA encoder), a VAE."""
    from conftest import compose_config

    from zoo.app.train import build

    runs = {
        "diffusion": ["method=diffusion", "method.schedule._target_=zoo.diffusion.schedules.EDM"],
        "moco": ["method=moco"],
        "vae": ["method=vae"],
    }
    out = {}
    for name, overrides in runs.items():
        folder = tmp_path_factory.mktemp(name)
        built = build(compose_config([*overrides, *TINY_ONE_STEP], folder))
        built.trainer.fit(built.method, datamodule=built.datamodule)
        out[name] = folder / f"{name}.ckpt"
        built.trainer.save_checkpoint(out[name])
    return out


def craft(source: Path, folder: Path, marker: Path, where: str = "method") -> Path:
    """``source`` with a target that would create ``marker`` placed at ``where`` of its stored config."""
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    payload = {"_target_": "builtins.open", "_args_": [str(marker), "w"]}
    node = checkpoint["zoo_config"]
    *parents, last = where.split(".")
    for key in parents:
        node = node[key]
    node[last] = payload
    path = folder / f"crafted-{source.stem}-{where}.ckpt"
    torch.save(checkpoint, path)
    return path


ENTRY_POINTS = {
    "task=sample": ("diffusion", lambda p: ["task=sample", f"ckpt={p}", "n=2"]),
    "task=eval": ("diffusion", lambda p: ["task=eval", f"ckpt={p}"]),
    "encoder=zoo": ("moco", lambda p: ["method=repa", "encoder=zoo", f"encoder.ckpt={p}"]),
    "autoencoder=": ("vae", lambda p: ["method=diffusion", "net=dit", f"autoencoder={p}"]),
    "method.teacher=": ("diffusion", lambda p: ["method=consistency", "method.mode=distill", f"method.teacher={p}"]),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("where", ["method", "method.optimizer"])
def test_a_stored_config_naming_other_code_runs_nothing_at_any_entry_point(
    entry: str, where: str, checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    from conftest import compose_config

    from zoo.app.train import main
    from zoo.stored_config import UnsafeConfig

    source, overrides = ENTRY_POINTS[entry]
    marker = tmp_path / "ran"
    path = craft(checkpoints[source], tmp_path, marker, where)
    cfg = compose_config([*overrides(path), *TINY_ONE_STEP], tmp_path / "run")
    with pytest.raises(Exception) as caught:
        main(cfg)
    error = caught.value
    while not isinstance(error, UnsafeConfig) and error.__cause__ is not None:
        error = error.__cause__
    assert isinstance(error, UnsafeConfig), repr(caught.value)
    assert re.search(rf"{re.escape(path.name)}.*{re.escape(where)}\._target_='builtins\.open'.*trust_checkpoint=true", str(error))
    assert not marker.exists()
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_trust_checkpoint_true_lifts_the_target_check(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """The opt-out is explicit and works: the crafted target is built (here: it creates the marker)."""
    from zoo.loading import load_method
    from zoo.stored_config import UnsafeConfig, trusting

    marker = tmp_path / "ran"
    path = craft(checkpoints["diffusion"], tmp_path, marker, "method.optimizer")
    with pytest.raises(UnsafeConfig):
        load_method(path)
    with trusting(True):
        load_method(path)
    assert marker.exists()


@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        ("zoo.methods.diffusion.Diffusion", True),
        ("zoo.nets.unet.UNet", True),
        ("zoo.terms.RepresentationAlignment", True),
        ("torch.optim.AdamW", True),
        ("torch.optim.lr_scheduler.LambdaLR", True),
        ("timm.optim.Lars", True),
        ("timm.optim.create_optimizer_v2", False),
        ("timm.create_model", False),
        ("datamodules.Digits", True),
        ("zoo.methods.base.torch.save", False),
        ("zoo.methods.diffusion.torch", False),
        ("zoo.app.train.fit", False),
        ("zoo.latent_cache.cached_latents", False),
        ("torch.optim.Optimizer.add_param_group", False),
        ("torch.hub.load", False),
        ("pathlib.Path.write_text", False),
        ("shutil.copyfile", False),
        ("os.system", False),
        ("zoo.methods.diffusion._private", False),
    ],
)
def test_only_registered_targets_are_built_from_files(target: str, allowed: bool) -> None:
    from zoo.stored_config import registered

    assert registered(target) is allowed


def test_an_interpolation_in_a_stored_config_is_refused(tmp_path: Path) -> None:
    from zoo.stored_config import UnsafeConfig, check_stored, trusting

    config = {"method": {"_target_": "zoo.methods.dae.DAE", "hidden": "${oc.decode:'{_target_: os.system}'}"}}
    for trust in (False, True):
        with trusting(trust), pytest.raises(UnsafeConfig, match=r"x\.ckpt: .*interpolation at method\.hidden"):
            check_stored(config, "x.ckpt", build="method")


def test_a_study_rebuilds_stored_data_only_through_the_check(tmp_path: Path) -> None:
    from zoo.stored_config import UnsafeConfig, build_stored

    marker = tmp_path / "ran"
    with pytest.raises(UnsafeConfig, match=r"study \(x\): .*data\._target_='builtins\.open'"):
        build_stored({"data": {"_target_": "builtins.open", "_args_": [str(marker), "w"]}}, "data", "study (x)")
    assert not marker.exists()
    assert type(build_stored({"data": {"_target_": "datamodules.Digits"}}, "data", "study (x)")).__name__ == "Digits"


METHODS = sorted(p.stem for p in (ROOT / "conf" / "method").glob("*.yaml"))
METHOD_ARGS = {"repa": ["encoder=random"], "vavae": ["encoder=random", "method.terms.vf.stage=2"], "rae": [a for a in TINY_RAE if not a.startswith(("method=rae", "trainer", "callbacks"))]}


@pytest.mark.parametrize("method", METHODS)
def test_a_legitimate_checkpoint_of_every_method_still_loads(method: str, tmp_path: Path, make_config) -> None:
    from zoo.app.train import build
    from zoo.loading import load_method

    built = build(make_config(f"method={method}", *METHOD_ARGS.get(method, []), *TINY_ONE_STEP))
    built.trainer.fit(built.method, datamodule=built.datamodule)
    built.trainer.save_checkpoint(tmp_path / "one.ckpt")
    loaded = load_method(tmp_path / "one.ckpt")
    assert type(loaded) is type(built.method)
