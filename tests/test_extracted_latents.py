"""``task=extract_latents`` then ``data=latents``: shards and manifest written once, checked at every start,
streamed under DDP (each rank its part of each epoch), a latent diffusion run on them under 2 processes."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import ReleaseProcessGroup, compose_config
from hydra.utils import instantiate
from test_scale import run_py

from datamodules import Latents
from zoo.app.train import main
from zoo.autoencoder import load_autoencoder
from zoo.loading import load_method

LATENT_DIT = ["method=diffusion", "net=dit", "net.patch_size=1", "net.width=32", "net.depth=1", "net.heads=2",
              "method.sampler.steps=2", "callbacks=default", "~callbacks.lr_monitor", "~logger"]


def train_vae(folder: Path, seed: int = 0) -> Path:
    main(compose_config(["method=vae", "method.net.block_out_channels=[16,32]", "trainer=debug", "callbacks=none",
                         "~logger", f"seed={seed}"], folder))
    ckpt = next((folder / "checkpoints").glob("*.ckpt"))
    return ckpt.rename(folder / "vae.ckpt")  # a name without "=", which Hydra's override grammar would need quoted


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A VAE of the digits and its latents of the three splits, in shards of 500 rows."""
    root = tmp_path_factory.mktemp("latents")
    vae = train_vae(root / "vae")
    main(compose_config(["task=extract_latents", f"autoencoder={vae}", "latents.shard_size=500"], root / "extracted"))
    return vae, root / "extracted"


def test_the_shards_hold_the_autoencoders_latents_of_each_split(extracted: tuple[Path, Path], make_config) -> None:
    vae, folder = extracted
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {split: entry["count"] for split, entry in manifest["splits"].items()} == {"train": 1437, "val": 180, "test": 180}
    assert [shard["rows"] for shard in manifest["splits"]["train"]["shards"]] == [500, 500, 437]
    datamodule = Latents(folder)
    datamodule.setup()
    images = instantiate(make_config().data)
    images.setup("fit")
    pixels, labels = images.train_tensor()
    autoencoder = load_autoencoder(vae, (1, 8, 8))
    with torch.no_grad():
        expected = torch.cat([autoencoder.encode(pixels[i : i + 64]) for i in range(0, len(pixels), 64)])
    rows = torch.cat([torch.from_numpy(np.load(folder / s["file"])) for s in manifest["splits"]["train"]["shards"]])
    torch.testing.assert_close(rows, expected, rtol=1e-5, atol=1e-5)
    assert manifest["autoencoder_digest"] == autoencoder.digest
    mean, std = datamodule.latent_statistics()
    torch.testing.assert_close(mean, expected.double().transpose(0, 1).flatten(1).mean(1).float(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(std, expected.double().transpose(0, 1).flatten(1).std(1).float(), rtol=1e-4, atol=1e-5)
    assert datamodule.shape == (1, 8, 8) and datamodule.latent_shape == (4, 4, 4) and torch.equal(
        torch.as_tensor(np.concatenate([np.load(folder / s["labels"]) for s in manifest["splits"]["train"]["shards"]])),
        torch.as_tensor(labels),
    )


class RowRecorder(L.LightningModule):
    """Writes the first latent value of every training row it sees, per rank and epoch, to ``folder``."""

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[float] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.seen += batch["z"][:, 0, 0, 0].tolist()
        return self.weight * 0

    def on_train_epoch_end(self) -> None:
        path = Path(self.folder) / f"rank{self.global_rank}_epoch{self.current_epoch}.json"
        path.write_text(json.dumps(self.seen))
        self.seen = []

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def rows_seen(folder: Path, extracted_folder: Path, devices: int) -> dict[int, list[list[float]]]:
    folder.mkdir()
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto", max_epochs=2,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, callbacks=[ReleaseProcessGroup()],
    )
    trainer.fit(RowRecorder(str(folder)), datamodule=Latents(extracted_folder, batch_size=100))
    return {
        epoch: [json.loads((folder / f"rank{rank}_epoch{epoch}.json").read_text()) for rank in range(devices)]
        for epoch in (0, 1)
    }


def test_under_two_processes_each_rank_streams_its_part_of_every_epoch(extracted, tmp_path: Path) -> None:
    """2 gloo processes: each rank reads half of the 1,437 rows (Lightning's distributed sampler pads the odd one by
    repeating a row), together every row, in an order that changes with the epoch; one process reads every row."""
    _, folder = extracted
    every_row = sorted(torch.cat([
        torch.from_numpy(np.load(folder / s["file"]))[:, 0, 0, 0] for s in Latents(folder).manifest["splits"]["train"]["shards"]
    ]).tolist())
    one = rows_seen(tmp_path / "one", folder, 1)
    two = rows_seen(tmp_path / "two", folder, 2)
    for epoch in (0, 1):
        assert sorted(one[epoch][0]) == every_row
        first, second = two[epoch]
        assert len(first) == len(second) == 719 and set(first) | set(second) == set(every_row)
        assert len(set(first) & set(second)) <= 1
    assert two[0][0] != two[1][0], "the epoch order is reshuffled"


def test_latent_diffusion_on_the_shards_under_two_processes_gives_the_figures_of_one(extracted, tmp_path: Path) -> None:
    """A latent DiT trained by 2 processes on the shards: its val and test losses (each row's noise drawn from the
    row's index) equal those one process computes from its checkpoint (task=eval), and it keeps the manifest's
    latent statistics."""
    vae, folder = extracted
    result = run_py("data=latents", f"data.root={folder}", f"autoencoder={vae}", *LATENT_DIT, "trainer=ddp",
                    "trainer.devices=2", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
                    f"hydra.run.dir={tmp_path / 'two'}")
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = tmp_path / "two" / "checkpoints" / "last.ckpt"
    shared = json.loads((tmp_path / "two" / "metrics.json").read_text())
    main(compose_config(["task=eval", f"ckpt={ckpt}", "data=latents", f"data.root={folder}", f"autoencoder={vae}",
                         "callbacks=none", "~logger", "data.batch_size=64"], tmp_path / "one"))
    alone = json.loads((tmp_path / "one" / "metrics.json").read_text())
    for name in ("val/loss", "test/loss"):
        assert shared[name] == pytest.approx(alone[name], rel=1e-5), name
    method = load_method(ckpt)
    mean, std = Latents(folder).latent_statistics()
    torch.testing.assert_close(method.space.norm.mean.flatten(), mean.float())
    torch.testing.assert_close(method.space.norm.std.flatten(), std.float())
    assert method.sample(2, generator=torch.Generator().manual_seed(0), steps=2).shape == (2, 1, 8, 8)


def test_a_corrupt_or_stale_shard_folder_is_refused_by_name(extracted, tmp_path: Path) -> None:
    vae, folder = extracted
    copy = tmp_path / "copy"
    copy.mkdir()
    for file in folder.iterdir():
        if file.is_file():
            (copy / file.name).write_bytes(file.read_bytes())
    other_vae = train_vae(tmp_path / "other", seed=1)
    with pytest.raises(ValueError, match="holds the latents of another autoencoder .* stale latents"):
        main(compose_config(["data=latents", f"data.root={copy}", f"autoencoder={other_vae}", *LATENT_DIT,
                             "trainer=debug"], tmp_path / "stale"))
    shard = copy / "train-00001.npy"
    data = bytearray(shard.read_bytes())
    data[-7] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="latent shard .*train-00001.npy does not match its SHA-256"):
        Latents(copy).setup()
    Latents(copy, verify="size").setup()
    (copy / "train-00002.npy").unlink()
    with pytest.raises(ValueError, match="latent shard .*train-00002.npy is missing"):
        Latents(copy, verify="size").setup()
    (copy / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="no manifest.json: extract the latents first"):
        Latents(copy)


def test_what_needs_images_or_an_autoencoder_is_refused_before_training(extracted, tmp_path: Path) -> None:
    vae, folder = extracted
    latents = ["data=latents", f"data.root={folder}", f"autoencoder={vae}", "trainer=debug", "~logger"]
    with pytest.raises(ValueError, match="data=latents holds latents, not images: probes"):
        main(compose_config([*latents, *LATENT_DIT[:-2], "callbacks=probes"], tmp_path / "probes"))
    repa = ["method=repa", "net.patch_size=1", "net.width=32", "net.depth=2", "net.heads=2", "encoder=random",
            "method.terms.align.match=resize", "callbacks=none"]
    with pytest.raises(ValueError, match="method.terms.align read the batch's images, but data=latents"):
        main(compose_config([*latents, *repa], tmp_path / "repa"))
    assert not (tmp_path / "repa" / "checkpoints").exists()
    with pytest.raises(ValueError, match="task=extract_latents encodes with an autoencoder: pass autoencoder="):
        main(compose_config(["task=extract_latents"], tmp_path / "none"))
    with pytest.raises(ValueError, match="data.verify=md5: choose one of sha256, size"):
        Latents(folder, verify="md5")
