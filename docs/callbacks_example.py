"""The zoo's callbacks in a Lightning project of its own: a tiny class-conditional flow model of the digits.

Everything an outside project writes is here: a datamodule (scikit-learn's bundled 8x8 digits, no
download) that follows the ``ProbeData`` protocol of ``callbacks/protocols.py``, a LightningModule that
follows ``Embeds`` (``embed(x, t=, layer=)``) and ``Samples`` (``sample(n, y=)``), and every callback of
the ``callbacks`` package an outside project uses, each with all its constructor arguments written out.
The module learns to predict clean digits from noisy ones, ``x_t = t·x + (1 - t)·noise`` (``t = 1`` data,
``t = 0`` noise, the zoo's convention), and samples by Euler steps of the straight-line flow between them
(rectified flow, Liu et al., ICLR 2023) with the x-prediction turned into a velocity.

Run it from the zoo's root folder (or with the zoo installed, ``pip install -e .``)::

    python docs/callbacks_example.py                  # TensorBoard: tensorboard --logdir logs/callbacks_example
    python docs/callbacks_example.py --logger csv     # metrics.csv, figures as PNG files

Every metric name it logs and where every figure lands are listed in ``docs/callbacks.md``;
``tests/test_callbacks_example.py`` runs this file and checks both against that page.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from callbacks import (
    GenerativeMetrics,
    KNNProbe,
    LinearProbe,
    MemorizationDetector,
    NoiseLevelProbe,
    OnlineLinearProbe,
    PixelFeatures,
    ProbeMap,
    ReferenceNet,
    RepresentationStats,
    SampleGrid,
    WeightGrid,
)
from callbacks.training.ema import ShortRunEMA
from callbacks.training.finite_checkpoint import FiniteCheckpoint
from callbacks.training.rng_state import RNGState

IMAGE_SHAPE = (1, 8, 8)
NUM_CLASSES = 10


class DigitItems(Dataset):
    """Batch dicts ``{"x": C,H,W in [-1, 1], "y": label}``; with ``views``, also two copies of ``x`` shifted by up
    to one pixel (positive pairs for ``RepresentationStats``' alignment)."""

    def __init__(self, x: Tensor, y: Tensor, views: bool = False) -> None:
        self.x, self.y, self.views = x, y, views

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, Tensor | list[Tensor]]:
        item: dict[str, Tensor | list[Tensor]] = {"x": self.x[index], "y": self.y[index]}
        if self.views:
            item["views"] = [shifted(self.x[index]) for _ in range(2)]
        return item


def shifted(image: Tensor, max_shift: int = 1) -> Tensor:
    """``image`` (``C,H,W``) translated by up to ``max_shift`` pixels each way, edges replicated (torch's RNG)."""
    height, width = image.shape[-2:]
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2,)).tolist()
    padded = F.pad(image.unsqueeze(0), (max_shift,) * 4, mode="replicate").squeeze(0)
    return padded[:, dy : dy + height, dx : dx + width]


class DigitsData(L.LightningDataModule):
    """scikit-learn's 1,797 digits in [-1, 1], split 80/20 into train and val by ``seed``.

    What the callbacks read from it: ``probe_dataloaders()`` (the ``ProbeData`` protocol: clean,
    labeled, unshuffled train and val loaders), ``num_classes`` (``OnlineLinearProbe``), ``shape``
    (``GenerativeMetrics`` tells images from vectors by it) and ``distance_to_manifold``
    (``GenerativeMetrics``' ``manifold_distance``). The data are small and bundled, so they are built
    at once rather than in ``setup``.
    """

    shape = IMAGE_SHAPE
    num_classes = NUM_CLASSES

    def __init__(self, batch_size: int = 64, seed: int = 0) -> None:
        super().__init__()
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
        y = torch.tensor(digits.target, dtype=torch.long)
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        n_train = int(0.8 * len(y))
        self.train_x, self.train_y = x[order[:n_train]], y[order[:n_train]]
        self.val_x, self.val_y = x[order[n_train:]], y[order[n_train:]]
        self.batch_size = batch_size
        self.seed = seed

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            DigitItems(self.train_x, self.train_y), self.batch_size, shuffle=True, generator=generator
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(DigitItems(self.val_x, self.val_y), self.batch_size)

    def probe_dataloaders(self) -> tuple[DataLoader, DataLoader]:
        """Clean, labeled, unshuffled ``(train, val)`` loaders of batch dicts: what every probe reads."""
        return (
            DataLoader(DigitItems(self.train_x, self.train_y), 256),
            DataLoader(DigitItems(self.val_x, self.val_y), 256),
        )

    def views_dataloader(self) -> DataLoader:
        """The train split with two shifted ``views`` per image, for ``RepresentationStats(views_loader=...)``."""
        return DataLoader(DigitItems(self.train_x, self.train_y, views=True), 256)

    def distance_to_manifold(self, x: Tensor) -> Tensor:
        """Euclidean distance ``B`` of each image to its nearest training image: the digits have no closed-form
        manifold, so the training set stands in for it."""
        train = self.train_x.flatten(1).to(x.device)
        return torch.cdist(x.flatten(1).float(), train).min(dim=1).values


class FlowDigits(L.LightningModule):
    """A class-conditional denoiser ``x_hat(x_t, t, y)``: two residual MLP blocks on the flattened image.

    ``encoder`` is the first layer acting on the flattened image (its rows are images: ``WeightGrid``);
    the noise level and the label enter as added embeddings (label ``num_classes`` means "none", drawn
    with probability ``label_dropout`` in training, so the net also denoises without a label, as
    ``embed`` asks it to).
    """

    num_classes = NUM_CLASSES
    num_blocks = 2
    """The hidden blocks ``embed(layer=...)`` can return; ``ProbeMap(layers=None)`` probes every one."""

    def __init__(
        self, hidden: int = 128, lr: float = 3e-3, label_dropout: float = 0.2, sampling_steps: int = 20
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        pixels = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]
        self.encoder = nn.Linear(pixels, hidden)
        self.time = nn.Linear(1, hidden)
        self.label = nn.Embedding(NUM_CLASSES + 1, hidden)
        self.block = nn.Linear(hidden, hidden)
        self.decoder = nn.Linear(hidden, pixels)

    def hidden_states(self, x_t: Tensor, t: Tensor, y: Tensor) -> list[Tensor]:
        """The ``num_blocks`` hidden activations ``B, hidden`` of noisy images ``x_t`` at levels ``t`` (``B``)."""
        first = F.silu(self.encoder(x_t.flatten(1)) + self.time(t.view(-1, 1)) + self.label(y))
        return [first, first + F.silu(self.block(first))]

    def denoise(self, x_t: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """The predicted clean image ``x_hat`` (same shape as ``x_t``)."""
        return self.decoder(self.hidden_states(x_t, t, y)[-1]).view_as(x_t)

    def no_label(self, n: int) -> Tensor:
        return torch.full((n,), NUM_CLASSES, dtype=torch.long, device=self.device)

    def embed(self, x: Tensor, t: float = 1.0, layer: int = -1) -> Tensor:
        """The ``Embeds`` protocol: hidden block ``layer`` (-1: the last) of ``x`` noised to level ``t`` (1 = clean),
        no label.

        The noise comes from torch's global RNG, which the probes seed per batch.
        """
        levels = torch.full((len(x),), float(t), device=x.device)
        x_t = t * x + (1 - t) * torch.randn_like(x)
        return self.hidden_states(x_t, levels, self.no_label(len(x)))[layer]

    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        """The ``Samples`` protocol: ``n`` images in [-1, 1] of classes ``y`` (default ``0, 1, ..., 9, 0, ...``).

        Euler steps of ``dx/dt = (x_hat - x) / (1 - t)`` from noise at ``t = 0`` to data at ``t = 1``.
        ``GenerativeMetrics`` passes ``y`` because ``sample`` takes it and the module has ``num_classes``.
        """
        labels = torch.arange(n, device=self.device) % NUM_CLASSES if y is None else y.to(self.device)
        x = torch.randn(n, *IMAGE_SHAPE, device=self.device)
        steps = self.hparams.sampling_steps
        for step in range(steps):
            t, t_next = step / steps, (step + 1) / steps
            x_hat = self.denoise(x, torch.full((n,), t, device=self.device), labels)
            x = x + (t_next - t) * (x_hat - x) / (1 - t)
        return x.clamp(-1, 1)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        """Mean squared error of ``x_hat`` at uniform noise levels; labels dropped with ``label_dropout``."""
        x, y = batch["x"], batch["y"]
        t = torch.rand(len(x), device=x.device)
        x_t = t.view(-1, 1, 1, 1) * x + (1 - t.view(-1, 1, 1, 1)) * torch.randn_like(x)
        dropped = torch.rand(len(x), device=x.device) < self.hparams.label_dropout
        return F.mse_loss(self.denoise(x_t, t, torch.where(dropped, self.no_label(len(x)), y)), x)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.loss(batch)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.log("val/loss", self.loss(batch))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def build_callbacks(data: DigitsData, figure_dir: Path, cache_dir: Path) -> list[L.Callback]:
    """Every callback an outside project uses, with every constructor argument written out.

    Figures (``SampleGrid``, ``WeightGrid``, ``NoiseLevelProbe``) go to TensorBoard as images when the
    trainer has a TensorBoardLogger (W&B's and MLflow's loggers get them as images too); under a CSVLogger
    alone they are PNG files ``<logger.log_dir>/figures/<tag>/<global_step>.png`` instead, and with no logger at all
    ``<default_root_dir>/figures/<tag>/<global_step>.png``. ``ProbeMap`` draws only to TensorBoard and,
    with ``figure_dir``, to ``<figure_dir>/<prefix>.png`` under every logger (docs/callbacks.md, "Figures
    under each logger").
    """
    return [
        # probe/linear_top1: a logistic regression on frozen embed(x) features of the probe train split,
        # scored on the probe val split (the datamodule's probe_dataloaders(), or loaders=(train, val)).
        LinearProbe(
            every_n_epochs=1,
            embed_kwargs=None,
            embed_fn=None,
            loaders=None,
            weight_decay=1e-4,
            max_iter=100,
            prefix="probe",
            seed=0,
        ),
        # probe/knn_top1: DINO's weighted kNN on the same features.
        KNNProbe(
            k=20,
            temperature=0.07,
            every_n_epochs=1,
            embed_kwargs=None,
            embed_fn=None,
            loaders=None,
            prefix="probe",
            seed=0,
        ),
        # online_probe/train_top1 (train epoch end) and online_probe/val_top1 (validation epoch end): a linear
        # head trained on detached embed features of every training batch; num_classes=None reads the
        # datamodule's num_classes.
        OnlineLinearProbe(
            num_classes=None,
            lr=1e-3,
            weight_decay=0.0,
            embed_kwargs=None,
            embed_fn=None,
            prefix="online_probe",
        ),
        # noise_probe/top1_t0.25, ..._t0.5, ..._t0.75, ..._t1 (one per level), noise_probe/best_t,
        # noise_probe/best_top1, noise_probe/unimodal, noise_probe/monotone; figure noise_probe/curve.
        # Needs embed(x, t=...) whose features change with t.
        NoiseLevelProbe(
            levels=(0.25, 0.5, 0.75, 1.0),
            every_n_epochs=5,
            seed=0,
            tolerance=0.02,
            embed_kwargs=None,
            embed_fn=None,
            loaders=None,
            weight_decay=1e-4,
            max_iter=100,
            prefix="noise_probe",
        ),
        # probe_map/linear_b<layer>_t<t> and probe_map/knn_b<layer>_t<t> for every block (layers=None: the module's
        # num_blocks) and level, probe_map/best_layer, best_t, best_linear_top1, best_knn_top1; figure
        # probe_map/map (TensorBoard only) and <figure_dir>/probe_map.png (any logger). Needs embed(x, t=, layer=).
        ProbeMap(
            levels=(0.5, 1.0),
            layers=None,
            draws=2,
            every_n_epochs=None,
            seed=0,
            k=20,
            temperature=0.07,
            weight_decay=1e-4,
            max_iter=100,
            select="linear",
            embed_kwargs=None,
            embed_fn=None,
            loaders=None,
            figure_dir=str(figure_dir),
            prefix="probe_map",
        ),
        # stats/normalized_std, sample_std, feature_std, l2_norm, l4_l2, effective_rank, uniformity, collapsed
        # (of the probe val split's features, no labels needed) and stats/alignment (only with two-view data:
        # views_loader, or training items that carry `views`).
        RepresentationStats(
            every_n_epochs=1,
            split="val",
            collapse_threshold=0.05,
            embed_kwargs=None,
            embed_fn=None,
            loaders=None,
            views_loader=data.views_dataloader(),
            alignment_samples=1024,
            prefix="stats",
            seed=0,
        ),
        # detect/auc_std, detect/auc_l4_l2 and their _lo/_hi (90% bootstrap): how well the per-sample std and
        # l4/l2 of embed features tell the probe train split (members) from the probe val split.
        MemorizationDetector(
            every_n_epochs=None,
            n_bootstrap=200,
            seed=0,
            embed_kwargs=None,
            embed_fn=None,
            loaders=None,
            prefix="detect",
        ),
        # weights/max_cos_0 ... weights/max_cos_6 (top_k rows by L2 norm) and weights/max_cos_mean: each row's
        # max cosine to the probe train images; figure weights/rows (the n_rows largest rows as images).
        WeightGrid(
            weight="encoder.weight",
            n_rows=32,
            top_k=7,
            every_n_epochs=1,
            grid_columns=8,
            loaders=None,
            prefix="weights",
            center=False,
        ),
        # No metric; figure samples/grid (sample(n) as one image grid; vectors would give samples/scatter).
        SampleGrid(
            n=100,
            every_n_epochs=1,
            sample_kwargs=None,
            seed=0,
            projection=None,
            show_data=True,
            tag="samples",
        ),
        # In the reference classifier's feature space (ReferenceNet.name == "classifier", fitted to the
        # datamodule's probe train split in setup and cached in cache_dir): gen/fd_classifier with _n, _lo, _hi and
        # _floor, gen/kid_classifier, gen/kid_classifier_std, gen/precision_classifier, gen/recall_classifier;
        # gen/class_acc (sample takes y= and the module has num_classes); gen/memorization; gen/manifold_distance
        # (distance_fn=None: the datamodule's distance_to_manifold).
        GenerativeMetrics(
            n_samples=500,
            every_n_epochs=None,
            metrics=["fid", "kid", "precision_recall", "class_acc", "memorization", "manifold_distance"],
            feature_net=ReferenceNet(
                width=16,
                epochs=5,
                batch_size=64,
                lr=3e-3,
                weight_decay=5e-4,
                label_smoothing=0.1,
                max_shift=1,
                seed=0,
            ),
            cache_dir=str(cache_dir),
            sample_kwargs=None,
            seed=0,
            batch_size=250,
            real_split="train",
            real_data=None,
            n_real=None,
            held_out_data=None,
            train_data=None,
            distance_fn=None,
            k=3,
            memorization_threshold=1 / 3,
            kid_subset_size=1000,
            kid_subsets=20,
            n_bootstrap=50,
            interval=0.9,
        ),
        # metrics=["fid"] in pixel space: gen/fd_pixels with _n, _lo, _hi, _floor. The name is gen/fd_<feature
        # net's `name`>; a net without a `name` (torch.nn.Flatten()) gives gen/fd_features.
        GenerativeMetrics(
            n_samples=500,
            every_n_epochs=None,
            metrics=["fid"],
            feature_net=PixelFeatures(),
            cache_dir=None,
            sample_kwargs=None,
            seed=0,
            batch_size=250,
            real_split="train",
            real_data=None,
            n_real=None,
            held_out_data=None,
            train_data=None,
            distance_fn=None,
            k=3,
            memorization_threshold=1 / 3,
            kid_subset_size=1000,
            kid_subsets=20,
            n_bootstrap=50,
            interval=0.9,
        ),
        # ema/starting_at_step: Lightning's EMAWeightAveraging (validation, probes and samples see the average),
        # started at step 0 when the run has no more optimizer steps than update_starting_at_step. A validation
        # before that step sees the initial weights (the average has not started), so the start here (20) is
        # below the first validation (step 23: 1,437 images in batches of 64).
        ShortRunEMA(
            device=None,
            use_buffers=True,
            decay=0.99,
            update_every_n_steps=1,
            update_starting_at_step=20,
            update_starting_at_epoch=None,
        ),
        # No metric: refuses to write a checkpoint of NaN/inf weights (raises FloatingPointError instead).
        FiniteCheckpoint(),
        # No metric: every rank's Python/NumPy/torch RNG states in each checkpoint, restored on resume.
        RNGState(),
        # Lightning's own; checkpoints land in <logger.log_dir>/checkpoints (last.ckpt among them).
        ModelCheckpoint(save_last=True),
    ]


def make_logger(kind: str, root: Path) -> Logger:
    """``tensorboard`` (figures as TensorBoard images) or ``csv`` (``metrics.csv``, figures as PNG files),
    both writing to ``<root>/<kind>/version_<n>``."""
    if kind == "tensorboard":
        return TensorBoardLogger(root, name="tensorboard")
    if kind == "csv":
        return CSVLogger(root, name="csv")
    raise ValueError(f"logger={kind!r}: pick 'tensorboard' or 'csv'")


def main(
    max_epochs: int = 5, root: str | Path = "logs/callbacks_example", logger: str = "tensorboard"
) -> L.Trainer:
    """Fit the flow model with every callback for ``max_epochs`` epochs; return the trainer.

    Under ``root``: the logger's folder ``<logger>/version_<n>/`` (events or ``metrics.csv``, figures,
    ``probe_map.png``, ``checkpoints/``) and ``cache/`` (the reference classifier's weights).
    """
    root = Path(root)
    L.seed_everything(0, verbose=False)
    data = DigitsData(batch_size=64, seed=0)
    run_logger = make_logger(logger, root)
    trainer = L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=run_logger,
        callbacks=build_callbacks(data, figure_dir=Path(run_logger.log_dir), cache_dir=root / "cache"),
        default_root_dir=root,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(FlowDigits(), datamodule=data)
    return trainer


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-epochs", type=int, default=5)
    parser.add_argument("--root", default="logs/callbacks_example")
    parser.add_argument("--logger", choices=("tensorboard", "csv"), default="tensorboard")
    arguments = parser.parse_args()
    # Nets this small run faster on one thread, and far faster than on two when other work shares the cores.
    torch.set_num_threads(1)
    start = time.perf_counter()
    fitted = main(arguments.max_epochs, arguments.root, arguments.logger)
    print(f"{time.perf_counter() - start:.1f} s; logs in {fitted.logger.log_dir}")
    for name, value in sorted(fitted.callback_metrics.items()):
        print(f"  {name:32s} {float(value):.4f}")
