"""Consistency distillation against its teacher on the digits: one-step and few-step quality at equal budget.

Song et al. 2023, "Consistency Models" (arXiv 2303.01469), Sec. 6 and Table 2 in miniature: the study
trains an EDM diffusion teacher (or takes ``teacher_ckpt``), distils it with CD and trains CT from scratch
for the same number of optimizer steps (``budget``), then samples every row from the same seeds:

- ``teacher_35nfe``: the teacher with Heun over ``teacher_steps`` + 1 Karras points (17 steps: 35 NFE);
- ``teacher_1step``: the teacher with one Euler step from sigma_max (plus the sampler's final clean
  estimate at sigma_min: 2 NFE);
- ``cd_1``, ``cd_2``, ``cd_4``, ``ct_1``, ``ct_2``: multistep consistency sampling with the intermediate
  sigmas ``taus`` (``cd_2`` uses ``taus[0]``, ``cd_4`` the first three).

Quality is the Fréchet distance in the dataset's reference classifier's features (``gen/fd_classifier``'s
metric) of ``n_samples`` draws per seed of ``sample_seeds``: ``fd`` over the pooled draws with its
bootstrap interval (``fd_lo``, ``fd_hi``), ``fd_floor`` (held-out real digits at the same count, extrapolated
in 1/m), and for the sampled rows the ratio to ``teacher_35nfe`` paired by seed (``ratio`` with the 90%
t-interval ``ratio_lo``, ``ratio_hi``). ``nfe`` counts the net's forward passes per sample; ``seconds``
is the wall time of all the row's draws.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from torch import Tensor, nn

from callbacks.metrics.frechet_distance import frechet_distance, frechet_floor, frechet_interval
from zoo.app.studies.reference_fd import ReferenceFD
from zoo.app.study import fit_checkpoints, flatten_results, write_report
from zoo.loading import load_method
from zoo.methods.consistency import Consistency
from zoo.methods.diffusion import Diffusion

T_90 = {2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833}
"""Student's t at 0.95 by degrees of freedom (the two-sided 90% interval over sample seeds)."""


@contextmanager
def counted(net: nn.Module) -> Iterator[list[int]]:
    """Count the forward passes of ``net`` inside the block (the list's one entry)."""
    calls = [0]

    def hook(*_: object) -> None:
        calls[0] += 1

    handle = net.register_forward_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


def paired_ratio(values: Sequence[float], reference: Sequence[float]) -> tuple[float, float, float]:
    """Mean of ``values[i] / reference[i]`` over seeds and its 90% t-interval ``(mean, lo, hi)``."""
    ratios = torch.tensor([v / r for v, r in zip(values, reference, strict=True)], dtype=torch.float64)
    mean = float(ratios.mean())
    if len(ratios) < 2:
        return mean, mean, mean
    half = T_90.get(len(ratios) - 1, 1.645) * float(ratios.std()) / math.sqrt(len(ratios))
    return mean, mean - half, mean + half


def run(
    cfg: DictConfig,
    name: str,
    teacher_run: Sequence[str],
    cd_run: Sequence[str],
    ct_run: Sequence[str],
    budget: int,
    teacher_budget: int,
    taus: Sequence[float],
    n_samples: int,
    sample_seeds: Sequence[int],
    teacher_steps: int = 17,
    teacher_ckpt: str | None = None,
) -> dict[str, float]:
    """Train the teacher for ``teacher_budget`` steps (or load ``teacher_ckpt``), fit CD and CT for ``budget``
    steps each, sample and score every row; writes ``<name>.json`` and ``<name>.md``."""
    if len(taus) < 3:
        raise ValueError(
            f"study.taus={list(taus)}: cd_4 needs three intermediate sigmas (e.g. [0.8, 0.4, 0.2])"
        )
    if len(sample_seeds) < 2:
        raise ValueError(
            f"study.sample_seeds={list(sample_seeds)}: the paired ratios need at least two seeds"
        )
    root = Path(cfg.paths.output_dir)
    if teacher_ckpt is None:
        teacher_run = [*teacher_run, f"trainer.max_steps={teacher_budget}", "trainer.max_epochs=-1"]
        teacher_ckpt = str(fit_checkpoints(cfg, name, {"teacher": teacher_run})["teacher"])
    teacher = load_method(
        teacher_ckpt, expect=Diffusion, expected="a method=diffusion checkpoint", setting="study.teacher_ckpt"
    )
    steps = [
        f"trainer.max_steps={budget}",
        "trainer.max_epochs=-1",
        f"method.sampler.taus=[{','.join(map(str, taus))}]",
    ]
    students = fit_checkpoints(
        cfg,
        name,
        {
            "cd": [*cd_run, *steps, "method.mode=distill", f"method.teacher={teacher_ckpt}"],
            "ct": [*ct_run, *steps, "method.mode=train"],
        },
    )
    cd, ct = (load_method(students[run], expect=Consistency) for run in ("cd", "ct"))

    reference = ReferenceFD(cfg)
    real = reference.real
    held_out = torch.cat([reference.features(batch["x"]) for batch in reference.datamodule.probe_dataloaders()[1]]
                         + [reference.features(batch["x"]) for batch in reference.datamodule.test_dataloader()])
    pooled_n = n_samples * len(sample_seeds)
    floor = float(frechet_floor(real, held_out, pooled_n, seed=int(cfg.seed)))

    rows: dict[str, tuple[nn.Module, Callable[[torch.Generator], Tensor]]] = {
        "teacher_35nfe": (
            teacher,
            lambda g: teacher.sample(n_samples, generator=g, name="heun", steps=teacher_steps),
        ),
        "teacher_1step": (teacher, lambda g: teacher.sample(n_samples, generator=g, name="euler", steps=1)),
        "cd_1": (cd, lambda g: cd.sample(n_samples, steps=1, generator=g)),
        "cd_2": (cd, lambda g: cd.sample(n_samples, steps=2, generator=g)),
        "cd_4": (cd, lambda g: cd.sample(n_samples, steps=4, generator=g)),
        "ct_1": (ct, lambda g: ct.sample(n_samples, steps=1, generator=g)),
        "ct_2": (ct, lambda g: ct.sample(n_samples, steps=2, generator=g)),
    }
    results: dict[str, dict[str, float]] = {}
    per_seed: dict[str, list[float]] = {}
    for label, (model, draw) in rows.items():
        model.eval()
        features, seconds = [], 0.0
        with counted(model.net) as calls:
            for seed in sample_seeds:
                start = time.perf_counter()
                x = draw(torch.Generator().manual_seed(int(seed)))
                seconds += time.perf_counter() - start
                features.append(reference.features(x))
        per_seed[label] = [float(frechet_distance(real, f)) for f in features]
        pooled = torch.cat(features)
        lo, hi = (float(v) for v in frechet_interval(real, pooled, seed=int(cfg.seed)))
        ratio = paired_ratio(per_seed[label], per_seed["teacher_35nfe"])
        results[label] = {
            "fd": float(frechet_distance(real, pooled)),
            "fd_lo": lo,
            "fd_hi": hi,
            "fd_floor": floor,
            "ratio": ratio[0],
            "ratio_lo": ratio[1],
            "ratio_hi": ratio[2],
            "nfe": calls[0] / len(sample_seeds),
            "seconds": seconds,
        }
    if rank_zero_only.rank == 0:
        write_report(root, name, results, single=False)
    return flatten_results(results)
