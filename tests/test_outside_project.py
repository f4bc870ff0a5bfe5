"""The callbacks in a project of their own: a plain LightningModule, tuple batches, no validation loop, CSVLogger.

The project is a script run in a subprocess from another folder; it imports ``callbacks`` and never
``zoo``. Every callback runs (at train epoch end, since the module has no ``validation_step``), the
scalars reach ``metrics.csv``, and the figures, which CSV cannot take, are PNG files under
``figures/<tag>/<step>.png`` of the run folder.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

PROJECT = '''
import sys

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from callbacks import (GenerativeMetrics, KNNProbe, LinearProbe, NoiseLevelProbe, OnlineLinearProbe,
                       RepresentationStats, SampleGrid, WeightGrid)


class TinyAE(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.enc, self.dec = nn.Linear(64, 16), nn.Linear(16, 64)

    def embed(self, x, t=None):
        x = x.flatten(1)
        if t is not None:
            x = t * x + (1 - t) * torch.randn_like(x)
        return torch.relu(self.enc(x))

    def sample(self, n, **kw):
        return torch.tanh(self.dec(torch.randn(n, 16, device=self.device))).view(n, 1, 8, 8)

    def training_step(self, batch, batch_idx):
        x, _ = batch
        return (self.dec(torch.relu(self.enc(x.flatten(1)))) - x.flatten(1)).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), 1e-2)


out = sys.argv[1]
generator = torch.Generator().manual_seed(0)
y = torch.arange(96) % 3
x = (torch.rand(96, 1, 8, 8, generator=generator) + y.view(-1, 1, 1, 1)) / 1.5 - 1
train = DataLoader(TensorDataset(x[:64], y[:64]), batch_size=16)
loaders = (train, DataLoader(TensorDataset(x[64:], y[64:]), batch_size=16))
callbacks = [
    LinearProbe(loaders=loaders), KNNProbe(k=3, loaders=loaders), RepresentationStats(loaders=loaders),
    NoiseLevelProbe(levels=(0.2, 0.6, 1.0), every_n_epochs=1, loaders=loaders), OnlineLinearProbe(num_classes=3),
    WeightGrid(weight="enc.weight", n_rows=4, top_k=2, loaders=loaders), SampleGrid(n=4),
    GenerativeMetrics(n_samples=32, metrics=["fid", "precision_recall"], feature_net=nn.Flatten(), real_data=x[:32],
                      held_out_data=x[32:64], train_data=x[:64], batch_size=16, n_bootstrap=0),
]
trainer = L.Trainer(max_epochs=1, logger=CSVLogger(out, name="", version=""), default_root_dir=out, callbacks=callbacks,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
trainer.fit(TinyAE(), train_dataloaders=train)
assert not [name for name in sys.modules if name == "zoo" or name.startswith("zoo.")]
'''


def test_every_callback_runs_in_an_outside_project_with_csv_logger(tmp_path: Path) -> None:
    (tmp_path / "project.py").write_text(PROJECT)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "project.py", str(out)], cwd=tmp_path, capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    with open(out / "metrics.csv") as file:
        logged = {key for row in csv.DictReader(file) for key, value in row.items() if value}
    for name in ("probe/linear_top1", "probe/knn_top1", "noise_probe/best_t", "online_probe/train_top1",
                 "weights/max_cos_mean"):
        assert name in logged, sorted(logged)
    assert any(k.startswith("stats/") for k in logged) and any(k.startswith("gen/") for k in logged)
    for tag in ("samples/grid", "weights/rows", "noise_probe/curve"):
        assert [p.name for p in (out / "figures" / tag).glob("*.png")] == ["4.png"], tag
    assert "runs at train epoch end instead" in result.stderr
    assert result.stderr.count("written as PNG files") == 3
