"""``method=consistency``: CD and CT/iCT (Song et al. 2023; Song & Dhariwal 2023) on tiny runs."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import compose_config
from hydra.errors import InstantiationException
from torch import nn

from zoo.app.train import build, fit, main
from zoo.diffusion import heun_step
from zoo.diffusion.consistency import (
    cm_c_out,
    cm_c_skip,
    cm_discretization,
    cm_momentum,
    consistency_function,
    ict_discretization,
    lognormal_index_probs,
    pseudo_huber,
)
from zoo.loading import load_method
from zoo.methods.consistency import Consistency

CKPT = ["trainer=debug", "callbacks=default", "~callbacks.progress", "~callbacks.lr_monitor", "~logger"]
TINY = ["trainer=debug", "callbacks=none", "~logger"]
NET = ["net=dit", "net.width=32"]
EDM_DIFFUSION = [
    "method=diffusion",
    "method.schedule._target_=zoo.diffusion.schedules.EDM",
    "method.prediction=x",
    "method.loss_space=x",
]
REFUSED = (ValueError, InstantiationException)
"""A constructor's ValueError, or Hydra's wrapping of it (its message repeats the ValueError's)."""


def trained(tmp_path_factory: pytest.TempPathFactory, name: str, *overrides: str) -> Path:
    """The last checkpoint of a four-step run of ``overrides``."""
    out = tmp_path_factory.mktemp(name)
    main(compose_config([*overrides, *CKPT], out))
    return out / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained(tmp_path_factory, "teacher", *EDM_DIFFUSION, *NET)


def consistency(tmp_path: Path, *overrides: str) -> Consistency:
    """A consistency method built from the real configs (the datamodule fills in ``shape``)."""
    return build(compose_config(["method=consistency", *NET, *TINY, *overrides], tmp_path / "run")).method


def ct(tmp_path: Path, *overrides: str) -> Consistency:
    return consistency(tmp_path, "method.mode=train", *overrides)


def cd(tmp_path: Path, *overrides: str) -> Consistency:
    return consistency(tmp_path, "method.mode=distill", *overrides)


# --- pure functions ------------------------------------------------------------------------------------


def test_cm_coefficients_match_the_paper_at_a_few_sigmas() -> None:
    sigma = torch.tensor([0.002, 0.5, 1.0, 80.0], dtype=torch.float64)
    skip = torch.tensor([1.0, 0.5020039999678717, 0.2006414104609616, 3.90629272263522e-05], dtype=torch.float64)
    out = torch.tensor([0.0, 0.35213917703090064, 0.446319168308958, 0.49997773490522646], dtype=torch.float64)
    torch.testing.assert_close(cm_c_skip(sigma, 0.002, 0.5), skip, rtol=1e-12, atol=0)
    torch.testing.assert_close(cm_c_out(sigma, 0.002, 0.5), out, rtol=1e-12, atol=1e-15)


def test_pseudo_huber_by_hand() -> None:
    x, y = torch.tensor([[3.0, 4.0]], dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64)
    assert pseudo_huber(x, y, c=1.0).item() == pytest.approx(math.sqrt(26) - 1, rel=1e-12)
    c = 0.00054 * math.sqrt(2)  # iCT's c for d = 2
    assert pseudo_huber(x, y).item() == pytest.approx(math.sqrt(25 + c * c) - c, rel=1e-12)
    assert pseudo_huber(x, y).item() == pytest.approx(4.999236382996318, rel=1e-12)


@pytest.mark.parametrize("k, n", [(0, 2), (1, 16), (50, 107), (100, 151), (500, 151)])
def test_cm_discretization_by_hand(k: int, n: int) -> None:
    # K = 100, s0 = 2, s1 = 150: ceil(sqrt(k/K (151^2 - 4) + 4) - 1) + 1; k = 50: ceil(105.78) + 1
    assert cm_discretization(k, 100, 2, 150) == n


def test_cm_momentum_by_hand() -> None:
    assert cm_momentum(2, 2, 0.9) == pytest.approx(0.9, rel=1e-12)
    assert cm_momentum(16, 2, 0.9) == pytest.approx(0.9869162813660015, rel=1e-12)
    assert cm_momentum(151, 2, 0.9) == pytest.approx(0.9986054697436056, rel=1e-12)
    assert cm_momentum(10, 2, 0.0) == 0.0


@pytest.mark.parametrize("k, n", [(0, 11), (124, 11), (125, 21), (250, 41), (999, 1281), (5000, 1281)])
def test_ict_discretization_by_hand(k: int, n: int) -> None:
    # K = 1000, s0 = 10, s1 = 1280: K' = floor(1000 / (log2(128) + 1)) = 125
    assert ict_discretization(k, 1000, 10, 1280) == n


def test_lognormal_index_probabilities_sum_to_one_and_favour_middle_sigmas() -> None:
    sigmas = torch.tensor([0.002, 0.1, 0.3, 1.0, 10.0, 80.0], dtype=torch.float64)
    probs = lognormal_index_probs(sigmas)
    assert probs.shape == (5,) and probs.sum().item() == pytest.approx(1.0)
    cdf = lambda s: math.erf((math.log(s) + 1.1) / (math.sqrt(2) * 2.0))  # noqa: E731
    raw = [cdf(b) - cdf(a) for a, b in zip(sigmas.tolist(), sigmas.tolist()[1:])]
    assert probs[2].item() == pytest.approx(raw[2] / sum(raw), rel=1e-12)


# --- the module ----------------------------------------------------------------------------------------


def test_boundary_condition_is_exact_at_t_max(tmp_path: Path) -> None:
    method = ct(tmp_path)
    z = torch.randn(4, *method.shape)
    t = torch.full((4,), method.schedule.t_max)
    assert torch.equal(method(z, t), z)
    zero = torch.zeros_like(z)  # f(0, t_max) = c_out F(0): exactly 0 only if c_out(sigma(t_max)) is exactly 0
    assert torch.equal(method(zero, t), zero)
    assert not torch.equal(method(z, torch.full((4,), 0.5)), z)
    assert torch.equal(method.double()(z.double(), t.double()), z.double())


def test_sigma_grid_is_karras_and_times_invert(tmp_path: Path) -> None:
    method = ct(tmp_path)
    sigmas = method.schedule.b(method.grid_times(5))
    s = method.schedule
    i = torch.arange(5, dtype=torch.float64).flip(0)
    karras = (s.sigma_max ** (1 / s.rho) + i / 4 * (s.sigma_min ** (1 / s.rho) - s.sigma_max ** (1 / s.rho))) ** s.rho
    torch.testing.assert_close(sigmas, karras)
    assert float(s.b(torch.tensor(s.time_of(0.8), dtype=torch.float64))) == pytest.approx(0.8, rel=1e-12)


def test_target_network_is_a_momentum_pair_updated_once_per_step(tmp_path: Path) -> None:
    built = build(
        compose_config(
            ["method=consistency", *NET, *TINY, "method.mode=train", "method.momentum=0.5", "trainer.max_steps=1"],
            tmp_path / "run",
        )
    )
    method = built.method
    assert (method.student, method.target) in method.momentum_pairs
    before = [p.detach().clone() for p in method.target.parameters()]
    built.trainer.fit(method, datamodule=built.datamodule)
    assert method.global_step == 1
    changed = False
    for old, online, target in zip(before, method.student.parameters(), method.target.parameters()):
        torch.testing.assert_close(target, 0.5 * old + 0.5 * online.detach())
        changed |= not torch.equal(old, online)
    assert changed, "the optimizer step moved no online parameter"
    assert not any(p.requires_grad for p in method.target.parameters())


def test_teacher_step_is_heun_step_of_the_teacher(tmp_path: Path, teacher_ckpt: Path) -> None:
    method = cd(tmp_path, f"method.teacher={teacher_ckpt}", "method.steps=6")
    teacher = load_method(teacher_ckpt)
    times = method.grid_times(6).float()
    z = 3 * torch.randn(5, *method.shape)
    index = torch.tensor([0, 3, 3, 1, 4])
    ours = method.teacher_ode_step(z, index, times)
    for row, n in enumerate(index.tolist()):
        theirs = heun_step(teacher.denoise, z[row : row + 1], float(times[n + 1]), float(times[n]), teacher.schedule)[1]
        torch.testing.assert_close(ours[row : row + 1], theirs)


def test_student_starts_from_the_teacher(tmp_path: Path, teacher_ckpt: Path) -> None:
    method = cd(tmp_path, f"method.teacher={teacher_ckpt}")
    teacher = load_method(teacher_ckpt)
    for ours, theirs in zip(method.student.net.state_dict().values(), teacher.net.state_dict().values()):
        assert torch.equal(ours, theirs)
    assert not any(p.requires_grad for p in method.teacher.parameters())


def test_consistency_training_starts_from_a_diffusion_checkpoint_with_init(tmp_path: Path, teacher_ckpt: Path) -> None:
    """ECT: CT (no teacher) whose student starts from a diffusion model's weights, read as that model reads them."""
    method = ct(tmp_path, f"method.init={teacher_ckpt}")
    start = load_method(teacher_ckpt)
    for ours, theirs in zip(method.student.net.state_dict().values(), start.net.state_dict().values()):
        assert torch.equal(ours, theirs)
    assert method.teacher is None and method.student.prediction == start.denoiser.prediction
    assert any(p.requires_grad for p in method.student.parameters())


# --- bad inputs, each refused before training -------------------------------------------------------


def test_init_with_distillation_is_refused(tmp_path: Path, teacher_ckpt: Path) -> None:
    with pytest.raises(REFUSED, match="method.init=.*CD's student starts from method.teacher's weights"):
        cd(tmp_path, f"method.teacher={teacher_ckpt}", f"method.init={teacher_ckpt}")


def test_an_init_of_another_schedule_is_refused_by_its_key(tmp_path: Path, tmp_path_factory) -> None:
    flow = trained(tmp_path_factory, "flow_init", "method=diffusion", *NET)
    with pytest.raises(REFUSED, match="method.init=.*was trained on LinearFlow"):
        ct(tmp_path, f"method.init={flow}")


def test_distilling_without_a_teacher_is_refused(tmp_path: Path) -> None:
    with pytest.raises(REFUSED, match="method.teacher=null.*needs a method=diffusion checkpoint"):
        cd(tmp_path)


def test_a_teacher_that_is_not_diffusion_is_refused(tmp_path: Path, tmp_path_factory) -> None:
    dae = trained(tmp_path_factory, "dae", "method=dae")
    with pytest.raises(REFUSED, match="method.teacher=.*is a DAE checkpoint.*method=diffusion"):
        cd(tmp_path, f"method.teacher={dae}")


def test_a_teacher_of_another_data_shape_is_refused(tmp_path: Path, tmp_path_factory) -> None:
    vectors = trained(tmp_path_factory, "vectors", *EDM_DIFFUSION, "net=mlp", "data=manifold")
    with pytest.raises(REFUSED, match=r"trained on data of shape \[2\].*shape \[1, 8, 8\]"):
        cd(tmp_path, f"method.teacher={vectors}")


def test_a_teacher_on_another_schedule_is_refused(tmp_path: Path, tmp_path_factory) -> None:
    flow = trained(tmp_path_factory, "flow", "method=diffusion", *NET)
    with pytest.raises(REFUSED, match="LinearFlow.*same schedule"):
        cd(tmp_path, f"method.teacher={flow}")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["method.steps=1"], "N >= 2"),
        (["method.momentum=1.0"], r"must lie in \[0, 1\)"),
        (["method.momentum=-0.1"], r"must lie in \[0, 1\)"),
        (["method.schedule._target_=zoo.diffusion.schedules.LinearFlow"], "support the EDM schedule only"),
        (["method.sampler.steps=3"], "1 to len.*= 2 steps"),
        (["method.sampler.taus=[0.5,0.8]"], "must decrease strictly"),
        (["method.distance=lpips"], "l2, l1, pseudo_huber"),
        (["method.mode=distil"], "distill, train"),
    ],
    ids=["N<2", "mu=1", "mu<0", "flow", "sampler-steps", "taus", "distance", "mode"],
)
def test_bad_settings_are_refused_at_construction(tmp_path: Path, overrides, message) -> None:
    cfg = compose_config(["method=consistency", *NET, *TINY, "method.mode=train", *overrides], tmp_path / "run")
    with pytest.raises(REFUSED, match=message):
        build(cfg)


def test_sampling_more_steps_than_the_tau_grid_is_refused(tmp_path: Path) -> None:
    method = ct(tmp_path)
    with pytest.raises(REFUSED, match="steps=3.*1 to len.*= 2 steps"):
        method.sample(2, steps=3)


# --- end to end ----------------------------------------------------------------------------------------


def test_cd_from_a_diffusion_teacher_then_samples(tmp_path: Path, teacher_ckpt: Path) -> None:
    out = tmp_path / "cd"
    main(compose_config(["method=consistency", *NET, "method.mode=distill", f"method.teacher={teacher_ckpt}", "method.steps=6", *CKPT], out))
    method = load_method(out / "checkpoints" / "last.ckpt", expect=Consistency)
    for steps in (1, 2):
        x = method.sample(4, steps=steps, generator=torch.Generator().manual_seed(0))
        assert x.shape == (4, *method.shape) and torch.isfinite(x).all()
    again = method.sample(4, steps=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, method.sample(4, steps=2, generator=torch.Generator().manual_seed(0)))
    features = method.embed(torch.zeros(3, *method.shape))
    assert features.shape[0] == 3 and features.dim() == 2


@pytest.mark.parametrize(
    "overrides",
    [
        ["method.curriculum=cm", "method.mu0=0.9"],
        [
            "method.curriculum=ict",
            "method.s0=10",
            "method.s1=40",
            "method.distance=pseudo_huber",
            "method.weighting=inverse_delta",
            "method.index_sampler=lognormal",
        ],
    ],
    ids=["ct", "ict"],
)
def test_consistency_training_runs_and_its_curriculum_follows_the_step(tmp_path: Path, overrides) -> None:
    cfg = compose_config(["method=consistency", *NET, "method.mode=train", *overrides, *TINY], tmp_path / "run")
    built = build(cfg)
    built.trainer.fit(built.method, datamodule=built.datamodule)
    method = built.method
    assert method.total_steps == 4 and method.global_step == 4
    if method.curriculum == "cm":
        assert method.discretization() == cm_discretization(4, 4, 2, 150) == 151
        assert method.current_momentum() == pytest.approx(cm_momentum(151, 2, 0.9))
        assert method.discretization(step=0) == 2
    else:
        assert method.discretization(step=0) == 11 and method.discretization() == 41
        assert method.current_momentum() == 0.0
    x = method.sample(2, steps=2)
    assert torch.isfinite(x).all()


def test_validation_loss_is_seeded(tmp_path: Path) -> None:
    """The base class gives ``losses`` a generator seeded by the batch index: val/loss repeats exactly."""
    built = build(compose_config(["method=consistency", *NET, *TINY], tmp_path / "run"))
    first, second = (built.trainer.validate(built.method, datamodule=built.datamodule)[0] for _ in range(2))
    assert first["val/loss"] == second["val/loss"]
    batch = {"x": torch.rand(6, *built.method.shape) * 2 - 1, "y": torch.full((6,), -1)}
    seeded = [built.method.losses(batch, generator=torch.Generator().manual_seed(i))["loss"] for i in (0, 0, 1)]
    assert torch.equal(seeded[0], seeded[1]) and not torch.equal(seeded[0], seeded[2])


def test_the_default_config_is_ct_and_builds_without_a_teacher(tmp_path: Path) -> None:
    method = consistency(tmp_path)
    assert method.mode == "train" and method.teacher is None and method.momentum == 0.0


def test_ct_loss_is_the_distance_between_adjacent_noise_levels_with_shared_eps(tmp_path: Path) -> None:
    method = ct(tmp_path, "method.steps=5", "method.momentum=0.3").eval()
    with torch.no_grad():
        for p in method.target.parameters():
            p.add_(0.01 * torch.randn_like(p))  # a target that differs from the online net
    x = torch.rand(6, *method.shape) * 2 - 1
    loss = method.losses({"x": x, "y": torch.full((6,), -1)}, generator=torch.Generator().manual_seed(3))["loss"]
    generator = torch.Generator().manual_seed(3)
    index = torch.randint(0, 4, (6,), generator=generator)
    eps = torch.randn(x.shape, generator=generator)
    sigmas = method.schedule.b(method.grid_times(5)).float()
    times = method.grid_times(5).float()
    online = method(x + sigmas[index + 1].view(-1, 1, 1, 1) * eps, times[index + 1])
    target = consistency_function(method.target, x + sigmas[index].view(-1, 1, 1, 1) * eps, times[index])
    expected = ((online - target) ** 2).flatten(1).mean(1).mean()
    torch.testing.assert_close(loss, expected)


def test_a_curriculum_is_refused_when_distilling(tmp_path: Path, teacher_ckpt: Path) -> None:
    with pytest.raises(REFUSED, match="curriculum='cm' is CT's.*mode=train"):
        cd(tmp_path, f"method.teacher={teacher_ckpt}", "method.curriculum=cm")


# --- shared dropout RNG -------------------------------------------------------------------------------


def record_dropout(module: nn.Module, masks: list[torch.Tensor]) -> None:
    """Make ``module``'s output go through dropout (p 0.5) drawn from the global RNG, recording each mask."""

    def hook(_: nn.Module, __: tuple, output: torch.Tensor) -> torch.Tensor:
        mask = torch.rand_like(output) >= 0.5
        masks.append(mask)
        return output * mask * 2

    module.register_forward_hook(hook)


def test_online_and_target_draw_the_same_dropout_masks(tmp_path: Path) -> None:
    """No zoo net has dropout, so a hook adds it to the same layer of the online and the target net."""
    method = ct(tmp_path, "method.steps=5").train()
    online, target = [], []
    name, layer = next((n, m) for n, m in method.student.net.named_modules() if isinstance(m, nn.Linear))
    record_dropout(layer, online)
    record_dropout(dict(method.target.net.named_modules())[name], target)
    batch = {"x": torch.rand(6, *method.shape) * 2 - 1, "y": torch.full((6,), -1)}
    for _ in range(2):
        method.losses(batch)
    assert len(online) == len(target) == 2
    for ours, theirs in zip(online, target):
        assert torch.equal(ours, theirs)
    assert not torch.equal(online[0], online[1]), "the RNG did not move between steps: the check proves nothing"


# --- exact resume after a kill --------------------------------------------------------------------------


class Killed(RuntimeError):
    """What ``KillAtEpoch`` raises: the run dies as a killed process would, after its last checkpoint."""


class KillAtEpoch(L.Callback):
    """Test helper: the run raises ``Killed`` at the start of epoch ``epoch`` (null: never); every run
    appends the global step it starts training at to ``STARTS``."""

    def __init__(self, epoch: int | None) -> None:
        self.epoch = epoch

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        STARTS.append(trainer.global_step)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise Killed(f"killed at epoch {self.epoch}")


STARTS: list[int] = []

RESUMABLE = [
    "callbacks=generative", "~callbacks.generative", "~callbacks.samples", "~callbacks.progress",
    "~callbacks.lr_monitor", "callbacks.ema.update_starting_at_step=2", "~logger", "trainer.max_epochs=4",
    "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1", "+trainer.num_sanity_val_steps=0",
    "+test=false", "data.batch_size=32",
]


@pytest.mark.parametrize("variant", ["ct", "cd"])
def test_a_run_killed_midway_resumes_to_the_weights_of_an_unbroken_one(
    tmp_path: Path, teacher_ckpt: Path, variant: str
) -> None:
    """Online, target (momentum 0.9, or CT's mu(k)) and EMA weights and the step-dependent N(k) all continue."""
    mode = (
        ["method.mode=train", "method.curriculum=cm", "method.s1=20"]
        if variant == "ct"
        else ["method.mode=distill", f"method.teacher={teacher_ckpt}", "method.momentum=0.9", "method.steps=6"]
    )
    overrides = ["method=consistency", *NET, *mode, *RESUMABLE]
    kill = f"+callbacks.kill={{_target_:{__name__}.KillAtEpoch,epoch:2}}"
    STARTS.clear()
    with pytest.raises(Killed):
        fit(compose_config([*overrides, kill], tmp_path / "resumed"))
    last = tmp_path / "resumed" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 6
    watch = f"+callbacks.kill={{_target_:{__name__}.KillAtEpoch,epoch:null}}"
    fit(compose_config([*overrides, watch, "resume=auto"], tmp_path / "resumed"))
    assert STARTS == [0, 6], "the second run did not continue from the checkpoint"
    fit(compose_config(overrides, tmp_path / "unbroken"))
    unbroken, resumed = (
        torch.load(tmp_path / run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        for run in ("unbroken", "resumed")
    )
    assert resumed["global_step"] == unbroken["global_step"] == 12
    for key in ("state_dict", "current_model_state"):
        assert unbroken[key].keys() == resumed[key].keys()
        different = [name for name in unbroken[key] if not torch.equal(unbroken[key][name], resumed[key][name])]
        assert not different, f"{key} differs: {different}"
    assert any(name.startswith("target.") for name in resumed["state_dict"])
    if variant == "ct":
        method = load_method(last, expect=Consistency)
        assert method.discretization(step=12) == cm_discretization(12, 12, 2, 20) == 21


# --- the 2-D toy: one CD step against the teacher's ODE ---------------------------------------------------

TOY = ["data=manifold", "data.kind=gmm", "net=mlp", "~callbacks.progress", "~callbacks.lr_monitor", "~logger",
       "+test=false", "+trainer.limit_val_batches=1", "+trainer.num_sanity_val_steps=0"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])  # seed 1 measured too (0.087 of the spread); one seed keeps CI short
def test_cd_one_step_lands_near_the_teacher_ode_endpoint_on_the_2d_mixture(tmp_path: Path, seed: int) -> None:
    """An EDM teacher on the 8-mode mixture, then CD (N 18, Heun, l2, mu 0.9): from the same initial noise, one
    CD step lands within 10% of the data's spread (RMS distance to the mean) of the teacher's 64-step Heun
    ODE endpoint, where the teacher's own single Euler step is ~80% away."""
    toy = [*TOY, f"seed={seed}"]
    teacher_ckpt = tmp_path / "teacher" / "checkpoints" / "last.ckpt"
    fit(compose_config([*EDM_DIFFUSION, "callbacks=default", "trainer.max_epochs=20", *toy], tmp_path / "teacher"))
    fit(compose_config(
        ["method=consistency", "callbacks=generative", "~callbacks.generative", "~callbacks.samples", *toy,
         "method.mode=distill", f"method.teacher={teacher_ckpt}", "method.momentum=0.9", "method.optimizer.lr=1e-3",
         "data.batch_size=512", "trainer.max_epochs=40"],
        tmp_path / "cd",
    ))
    teacher = load_method(teacher_ckpt)
    student = load_method(tmp_path / "cd" / "checkpoints" / "last.ckpt", expect=Consistency)
    ode = teacher.sample(4000, generator=torch.Generator().manual_seed(1), name="heun", steps=64)
    euler = teacher.sample(4000, generator=torch.Generator().manual_seed(1), name="euler", steps=1)
    one = student.sample(4000, steps=1, generator=torch.Generator().manual_seed(1))
    datamodule = build(compose_config(["method=diffusion", "callbacks=default", *toy], tmp_path / "data")).datamodule
    datamodule.setup("fit")
    x = datamodule.train_tensor()[0]
    spread = (x - x.mean(0)).pow(2).sum(1).mean().sqrt()
    assert (one - ode).norm(dim=1).mean() / spread < 0.10
    assert (euler - ode).norm(dim=1).mean() / spread > 0.5


@pytest.mark.parametrize("prediction", ["x", "eps"])
def test_a_student_from_the_teacher_starts_at_the_teachers_clean_estimate(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, prediction: str
) -> None:
    """F is EDM's preconditioned output read off the denoiser, so f = x_hat up to O(sigma_min / sigma) at init,
    whatever the teacher predicts; exactly z at t_max all the same."""
    edm = [*EDM_DIFFUSION, f"method.prediction={prediction}", f"method.loss_space={prediction}", *NET]
    path = trained(tmp_path_factory, f"teacher_{prediction}", *edm)
    method = cd(tmp_path, f"method.teacher={path}").eval()
    assert method.student.prediction == prediction
    teacher = load_method(path)
    z = 5 * torch.randn(4, *method.shape)
    t = torch.full((4,), 0.3)  # sigma ~ 7
    with torch.no_grad():
        torch.testing.assert_close(method(z, t), teacher.denoise(z, t), rtol=0, atol=5e-3)
        ends = torch.full((4,), method.schedule.t_max)
        assert torch.equal(method(z, ends), z)
