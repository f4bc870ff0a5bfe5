"""The base class's momentum targets: the schedules and EMA against their formulas, once per optimizer step."""

from __future__ import annotations

import copy
import math
from functools import partial

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from zoo.methods.base import Method
from zoo.methods.momentum import cosine_momentum, ema_update, scheduled_momentum


def byol_momentum(k: int, total: int, m0: float) -> float:
    """``m(k) = 1 - (1 - m0) (cos(pi k / K) + 1) / 2``, written out as in the brief."""
    return 1 - (1 - m0) * (math.cos(math.pi * k / total) + 1) / 2


@pytest.mark.parametrize("k", [0, 1, 5, 10])
def test_the_schedules_match_their_formulas(k: int) -> None:
    assert scheduled_momentum("cosine", 0.9, k, 10) == pytest.approx(byol_momentum(k, 10, 0.9), abs=1e-15)
    assert scheduled_momentum("cosine", 0.9, k, 10) == cosine_momentum(k, 10, 0.9)
    assert scheduled_momentum("constant", 0.9, k, 10) == 0.9


def test_an_unknown_schedule_is_named() -> None:
    with pytest.raises(ValueError, match=r"'linear': choose one of constant, cosine"):
        scheduled_momentum("linear", 0.9, 0, 10)


def tiny_pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).double()
    target = copy.deepcopy(online).requires_grad_(False)
    for p in target.parameters():
        p.data.normal_()
    return online, target


@pytest.mark.parametrize("m", [0.9, cosine_momentum(1, 4, 0.9), cosine_momentum(3, 4, 0.9), 0.5])
def test_the_update_is_m_target_plus_one_minus_m_online(m: float) -> None:
    online, target = tiny_pair()
    before = [p.clone() for p in target.parameters()]
    buffers = [b.clone() for b in target.buffers()]
    ema_update([(online, target)], m)
    for p_online, p_before, p_after in zip(online.parameters(), before, target.parameters()):
        assert torch.allclose(p_after, m * p_before + (1 - m) * p_online, rtol=0, atol=1e-15)
    assert all(torch.equal(b, a) for b, a in zip(buffers, target.buffers()))


def test_zero_momentum_copies_the_online_net_and_one_keeps_the_target() -> None:
    online, target = tiny_pair()
    before = [p.clone() for p in target.parameters()]
    ema_update([(online, target)], 1.0)
    assert all(torch.equal(b, p) for b, p in zip(before, target.parameters()))
    ema_update([(online, target)], 0.0)
    assert all(torch.equal(o, p) for o, p in zip(online.parameters(), target.parameters()))


class Paired(Method):
    """A linear online net and its momentum target; records every update with the values it started from."""

    def __init__(self, pairs: bool = True, target: nn.Module | None = None, **kwargs) -> None:
        super().__init__(optimizer=partial(torch.optim.SGD, lr=0.1), **kwargs)
        torch.manual_seed(0)
        self.online = nn.Linear(2, 1)
        self.target = target or copy.deepcopy(self.online).requires_grad_(False)
        self.pairs = pairs
        self.updates: list[tuple[int, float, list[torch.Tensor], list[torch.Tensor]]] = []

    @property
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [*super().momentum_pairs, *([(self.online, self.target)] if self.pairs else [])]

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        return {"loss": (self.online(batch["x"]) - 1).pow(2).mean()}

    def momentum_update(self, m: float) -> None:
        online = [p.detach().clone() for p in self.online.parameters()]
        target = [p.clone() for p in self.target.parameters()]
        self.updates.append((self.global_step, m, online, target))
        super().momentum_update(m)


def fit(model: Method, batches: int = 5, **trainer_kwargs) -> L.Trainer:
    torch.manual_seed(1)
    data = [{"x": torch.randn(2), "y": torch.tensor(0)} for _ in range(batches)]
    settings = {"max_epochs": 1, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    trainer = L.Trainer(**{**settings, "enable_model_summary": False, **trainer_kwargs})
    trainer.fit(model, DataLoader(data, batch_size=1))
    return trainer


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_targets_move_once_per_optimizer_step_under_gradient_accumulation(schedule: str) -> None:
    model = Paired(momentum=0.5, momentum_schedule=schedule)
    trainer = fit(model, batches=5, accumulate_grad_batches=2)
    assert trainer.global_step == model.total_steps == 3
    assert [step for step, *_ in model.updates] == [1, 2, 3]
    assert [m for _, m, *_ in model.updates] == [scheduled_momentum(schedule, 0.5, k, 3) for k in (1, 2, 3)]
    assert model.updates[-1][1] == (0.5 if schedule == "constant" else 1.0)
    afters = [target for *_, target in model.updates[1:]] + [list(model.target.parameters())]
    for (_, m, online, target), after in zip(model.updates, afters):
        for p_online, p_target, p_after in zip(online, target, after):
            assert torch.allclose(p_after, m * p_target + (1 - m) * p_online, rtol=0, atol=1e-7)


def test_zero_momentum_keeps_the_target_equal_to_the_online_net() -> None:
    model = Paired(momentum=0.0)
    fit(model, batches=3)
    assert len(model.updates) == 3
    assert all(torch.equal(o, t) for o, t in zip(model.online.parameters(), model.target.parameters()))


def test_a_method_without_pairs_ignores_the_momentum() -> None:
    model = Paired(pairs=False)
    assert fit(model, batches=2).global_step == 2 and model.updates == []


def test_pairs_without_a_momentum_are_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"Paired has momentum pairs but no momentum: set method.momentum"):
        fit(Paired())


def test_a_target_of_another_shape_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"momentum pair 0: .* build the target as copy.deepcopy\(online\)"):
        fit(Paired(momentum=0.9, target=nn.Linear(3, 1)))


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"momentum": -0.1}, r"method.momentum=-0.1"), ({"momentum_schedule": "step"}, r"method.momentum_schedule='step'")],
)
def test_bad_momentum_settings_are_named(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Paired(**settings)


def test_the_cosine_schedule_needs_a_finite_run() -> None:
    with pytest.raises(ValueError, match="Paired's cosine momentum schedule needs a finite run"):
        fit(Paired(momentum=0.9, momentum_schedule="cosine"), max_epochs=-1)
