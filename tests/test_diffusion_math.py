"""The diffusion math in zoo.diffusion: schedules, conversions, losses, time samplers, samplers, guidance.

Sampler checks use the exact denoiser E[x | z_t] of a 2-D Gaussian mixture (closed form for any
schedule), 3000 seeded samples, float64. Tolerance on the sample moments: mean within 0.15 and
covariance within 0.3 entrywise; the Monte Carlo error of 3000 exact draws is up to ~0.05 (mean)
and ~0.1 (covariance), and the samplers' discretization error is below that.
"""

from __future__ import annotations

import math

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from zoo.diffusion import (
    EDM,
    SPACES,
    VP,
    LinearFlow,
    LogitNormal,
    LogNormalSigma,
    PredictAndPerturb,
    Schedule,
    Shifted,
    Uniform,
    alpha_for_dim,
    append_dims,
    best_of_n,
    classifier_free,
    convert,
    cosine_reward,
    cosine_velocity_loss,
    ddim,
    denoising_loss,
    euler,
    heun,
    reward_guided,
    sample,
    sde,
    shift,
    true_value,
    validate,
)

SCHEDULES = {"flow": LinearFlow(), "vp_linear": VP(), "vp_cosine": VP(beta="cosine"), "edm": EDM()}
F64 = torch.float64
N = 3000

MEANS = torch.tensor([[-2.0, 0.0], [2.0, 0.5], [0.0, 2.5]], dtype=F64)
STDS = torch.tensor([[0.3, 0.5], [0.5, 0.3], [0.4, 0.4]], dtype=F64)
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=F64)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread avoids oversubscribing a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mixture_denoiser(schedule, means=MEANS, stds=STDS, weights=WEIGHTS):
    """E[x | z_t] for x ~ sum_k w_k N(mu_k, diag(s_k^2)) and z_t = a x + b eps, in closed form."""

    def denoise(z, t):
        a, b = schedule.a(t)[:, None, None], schedule.b(t)[:, None, None]
        var = a**2 * stds**2 + b**2
        diff = z[:, None, :] - a * means
        log_p = weights.log() - 0.5 * (diff**2 / var + var.log()).sum(-1)
        posterior_means = means + a * stds**2 * diff / var
        return (log_p.softmax(1)[..., None] * posterior_means).sum(1)

    return denoise


def mixture_moments():
    mean = (WEIGHTS[:, None] * MEANS).sum(0)
    second = (
        WEIGHTS[:, None, None] * (torch.diag_embed(STDS**2) + MEANS[:, :, None] * MEANS[:, None, :])
    ).sum(0)
    return mean, second - mean[:, None] * mean[None, :]


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def draw(schedule, sampler="heun", steps=30, eta=0.0, refine=None, seed=0, denoise=None):
    denoise = denoise or mixture_denoiser(schedule)
    return sample(
        denoise, (N, 2), schedule, steps, sampler, eta, generator=seeded(seed), refine=refine, dtype=F64
    )


# ---------------------------------------------------------------- schedules


@pytest.mark.parametrize("name", SCHEDULES)
def test_derivatives_match_finite_differences(name):
    schedule = SCHEDULES[name]
    t = torch.linspace(0.05, 0.95, 19, dtype=F64)
    h = 1e-6
    for fn, dfn in (
        (schedule.a, schedule.da),
        (schedule.b, schedule.db),
        (schedule.native, schedule.dnative),
    ):
        numeric = (fn(t + h) - fn(t - h)) / (2 * h)
        torch.testing.assert_close(dfn(t), numeric, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", SCHEDULES)
def test_endpoints_follow_the_convention(name):
    schedule = SCHEDULES[name]
    ends = torch.tensor([0.0, 1.0], dtype=F64)
    a, b = schedule.a(ends), schedule.b(ends)
    assert a[1] / b[1] > 400 and b[0] / a[0] > 50, "t = 1 must be data and t = 0 noise"


def test_vp_is_variance_preserving_with_song_sde():
    t = torch.linspace(0.0, 0.99, 12, dtype=F64)
    for schedule in (SCHEDULES["vp_linear"], SCHEDULES["vp_cosine"]):
        torch.testing.assert_close(schedule.a(t) ** 2 + schedule.b(t) ** 2, torch.ones_like(t))
    vp = SCHEDULES["vp_linear"]
    beta = 0.1 + (1 - t) * (20.0 - 0.1)
    f, g = vp.sde(t)
    torch.testing.assert_close(f, -beta / 2)
    torch.testing.assert_close(g, beta.sqrt())
    f_generic, g_generic = Schedule.sde(vp, t[1:])
    torch.testing.assert_close((f_generic, g_generic), (f[1:], g[1:]))


def test_sde_of_flow_and_edm():
    t = torch.tensor([0.0, 0.3, 0.7], dtype=F64)
    f, g = SCHEDULES["flow"].sde(t)
    assert math.isinf(g[0])
    torch.testing.assert_close(f[1:], -1 / t[1:])
    torch.testing.assert_close(g[1:] ** 2, 2 * (1 - t[1:]) / t[1:])
    edm = SCHEDULES["edm"]
    f, g = edm.sde(t)
    torch.testing.assert_close(g**2, -2 * edm.b(t) * edm.db(t))
    assert (f == 0).all()


def test_edm_grid_is_the_karras_grid_and_preconditioning():
    edm = SCHEDULES["edm"]
    n = 18
    i = torch.arange(n, dtype=F64)
    karras = (80 ** (1 / 7) + i / (n - 1) * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    torch.testing.assert_close(edm.b(edm.grid(n - 1)), karras)
    t = torch.linspace(0, 1, 5, dtype=F64)
    sigma = edm.b(t)
    torch.testing.assert_close(edm.c_in(t), 1 / (sigma**2 + 0.25).sqrt())
    torch.testing.assert_close(edm.c_skip(t), 0.25 / (sigma**2 + 0.25))
    torch.testing.assert_close(edm.c_out(t), sigma * 0.5 / (sigma**2 + 0.25).sqrt())
    c_noise = edm.c_noise(t)
    torch.testing.assert_close(c_noise[[0, -1]], torch.tensor([0.0, 1.0], dtype=F64))
    assert (c_noise.diff() > 0).all()


def test_grid_prior_and_noise():
    flow = SCHEDULES["flow"]
    torch.testing.assert_close(flow.grid(4), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=F64))
    shifted = flow.grid(4, shift=3.0)
    assert shifted[0] == 0 and shifted[-1] == 1 and (shifted[1:-1] < flow.grid(4)[1:-1]).all()
    prior = SCHEDULES["edm"].prior((20000,), generator=seeded(0))
    assert abs(prior.std().item() - 80.0) < 2.0
    x, eps, t = torch.ones(2, 3), torch.full((2, 3), 2.0), torch.tensor([0.25, 0.5])
    torch.testing.assert_close(flow.noise(x, t, eps), torch.tensor([[1.75] * 3, [1.5] * 3]))


def test_schedule_bad_inputs():
    with pytest.raises(InstantiationException, match="zoo.diffusion.schedules.DDPM"):
        instantiate({"_target_": "zoo.diffusion.schedules.DDPM"})
    with pytest.raises(ValueError, match="beta="):
        VP(beta="quadratic")
    with pytest.raises(ValueError, match="sigma_min"):
        EDM(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="t_min"):
        LinearFlow(t_min=0.5, t_max=0.5)
    with pytest.raises(ValueError, match="steps"):
        LinearFlow().grid(0)
    assert instantiate({"_target_": "zoo.diffusion.schedules.VP", "beta": "cosine"}) == VP(beta="cosine")


# ---------------------------------------------------------------- parameterization


@pytest.mark.parametrize("name", SCHEDULES)
def test_conversions_round_trip_and_hit_the_truth(name):
    schedule = SCHEDULES[name]
    gen = seeded(1)
    t = torch.linspace(0.05, 0.95, 7, dtype=F64)
    x, eps = torch.randn(7, 3, generator=gen, dtype=F64), torch.randn(7, 3, generator=gen, dtype=F64)
    z = schedule.noise(x, t, eps)
    for source in SPACES:
        value = true_value(source, x, eps, t, schedule)
        for target in SPACES:
            there = convert(value, source, target, z, t, schedule)
            torch.testing.assert_close(there, true_value(target, x, eps, t, schedule), rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(
                convert(there, target, source, z, t, schedule), value, rtol=1e-6, atol=1e-6
            )


def test_linear_flow_closed_forms():
    flow = SCHEDULES["flow"]
    gen = seeded(2)
    t = torch.tensor([0.2, 0.7], dtype=F64)
    z, pred = torch.randn(2, 4, generator=gen, dtype=F64), torch.randn(2, 4, generator=gen, dtype=F64)
    tt = t[:, None]
    expected = {
        ("x", "eps"): (z - tt * pred) / (1 - tt),
        ("x", "v"): (pred - z) / (1 - tt),
        ("eps", "x"): (z - (1 - tt) * pred) / tt,
        ("eps", "v"): (z - pred) / tt,
        ("v", "x"): z + (1 - tt) * pred,
        ("v", "eps"): z - tt * pred,
        ("x", "score"): (tt * pred - z) / (1 - tt) ** 2,
        ("eps", "score"): -pred / (1 - tt),
    }
    for (source, target), value in expected.items():
        torch.testing.assert_close(convert(pred, source, target, z, t, flow), value)


def test_convert_bad_space():
    flow, one = SCHEDULES["flow"], torch.ones(1, 2)
    with pytest.raises(ValueError, match="source='noise'"):
        convert(one, "noise", "x", one, torch.ones(1), flow)
    with pytest.raises(ValueError, match="min_b"):
        convert(one, "x", "v", one, torch.ones(1), flow, min_b=-1.0)


# ---------------------------------------------------------------- losses


def test_three_by_three_losses_by_hand():
    """Flow at t = 0.25: x = (1, -1), eps = (2, 0); hand-derived c(t)^2 * mean(error^2)."""
    flow = SCHEDULES["flow"]
    t = torch.tensor([0.25], dtype=F64)
    x, eps = torch.tensor([[1.0, -1.0]], dtype=F64), torch.tensor([[2.0, 0.0]], dtype=F64)
    outputs = {"x": [[0.5, -1.0]], "eps": [[1.0, 1.0]], "v": [[0.0, 0.0]]}
    expected = {
        ("x", "x"): 0.125,
        ("x", "eps"): 0.125 / 9,
        ("x", "v"): 0.125 * 16 / 9,
        ("eps", "eps"): 1.0,
        ("eps", "x"): 9.0,
        ("eps", "v"): 16.0,
        ("v", "v"): 1.0,
        ("v", "x"): 0.5625,
        ("v", "eps"): 0.0625,
    }
    for (prediction, loss_space), value in expected.items():
        out = torch.tensor(outputs[prediction], dtype=F64)
        loss = denoising_loss(out, prediction, loss_space, x, eps, t, flow)
        assert loss.shape == (1,)
        assert loss.item() == pytest.approx(value, rel=1e-12), (prediction, loss_space)


def test_jit_clamped_v_loss():
    flow = SCHEDULES["flow"]
    gen = seeded(3)
    t = torch.tensor([0.5, 0.97, 0.999], dtype=F64)
    x, eps, out = (torch.randn(3, 2, 4, 4, generator=gen, dtype=F64) for _ in range(3))
    z = flow.noise(x, t, eps)
    denominator = (1 - t).clamp_min(0.05)[:, None, None, None]
    jit = (((x - z) / denominator - (out - z) / denominator) ** 2).mean((1, 2, 3))
    loss = denoising_loss(out, "x", "v", x, eps, t, flow, min_b=0.05)
    torch.testing.assert_close(loss, jit)
    torch.testing.assert_close(loss, ((out - x) ** 2).mean((1, 2, 3)) / (1 - t).clamp_min(0.05) ** 2)


def test_edm_f_prediction_and_loss_is_edms_weighted_denoising_loss():
    """EDM (Karras et al. 2022, Eq. 7, 8, Table 1): the net's F gives D = c_skip z + c_out F, and the loss in F
    space is lambda(sigma) ||D - x||^2 with lambda = (sigma^2 + sd^2) / (sigma sd)^2, sd = 0.5."""
    edm = SCHEDULES["edm"]
    gen = seeded(3)
    t = torch.tensor([0.05, 0.5, 0.95], dtype=F64)
    x, eps, out = (torch.randn(3, 2, 4, 4, generator=gen, dtype=F64) for _ in range(3))
    sigma = edm.b(t)[:, None, None, None]
    z = x + sigma * eps
    denoised = 0.25 / (sigma**2 + 0.25) * z + sigma * 0.5 / (sigma**2 + 0.25).sqrt() * out
    weight = ((sigma**2 + 0.25) / (sigma * 0.5) ** 2).flatten()
    loss = denoising_loss(out, "edm", "edm", x, eps, t, edm)
    torch.testing.assert_close(loss, weight * ((denoised - x) ** 2).mean((1, 2, 3)))
    torch.testing.assert_close(convert(out, "edm", "x", z, t, edm), denoised)


@pytest.mark.parametrize("name", ["vp_linear", "edm"])
def test_loss_targets_are_exact_without_clamp(name):
    schedule = SCHEDULES[name]
    gen = seeded(4)
    t = torch.tensor([0.3, 0.8], dtype=F64)
    x, eps, out = (torch.randn(2, 5, generator=gen, dtype=F64) for _ in range(3))
    z = schedule.noise(x, t, eps)
    for prediction in ("x", "eps", "v"):
        for loss_space in ("x", "eps", "v"):
            mapped = convert(out, prediction, loss_space, z, t, schedule)
            direct = ((mapped - true_value(loss_space, x, eps, t, schedule)) ** 2).mean(1)
            loss = denoising_loss(out, prediction, loss_space, x, eps, t, schedule)
            torch.testing.assert_close(loss, direct)


def test_validate_names_the_fix():
    flow, vp = SCHEDULES["flow"], SCHEDULES["vp_linear"]
    with pytest.raises(ValueError, match=r"method.min_b"):
        validate("x", "v", flow, 0.0, 1.0)
    validate("x", "v", flow, 0.0, 1.0, min_b=0.05)
    with pytest.raises(ValueError, match=r"a\(t\) = 0.*method.min_a"):
        validate("eps", "x", flow, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"a\(t\) = 0"):
        validate("eps", "v", flow, *LogitNormal().support)
    validate("eps", "v", flow, *Uniform(0.05, 1.0).support)
    with pytest.raises(ValueError, match="velocity"):
        validate("x", "v", vp, 0.0, 1.0, min_b=0.05)
    validate("x", "v", vp, 0.0, 0.999)
    for prediction in ("x", "eps", "v"):
        for loss_space in ("x", "eps", "v"):
            validate(prediction, loss_space, flow, 0.05, 0.95)
    validate("v", "x", flow, 0.0, 1.0)
    with pytest.raises(ValueError, match="method.prediction='sample'"):
        validate("sample", "x", flow, 0.1, 0.9)


def test_cosine_velocity_loss():
    v = torch.randn(3, 4, 2, 2, generator=seeded(5))
    torch.testing.assert_close(cosine_velocity_loss(v, v), torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(cosine_velocity_loss(-v, v), torch.full((3,), 2.0))
    assert cosine_velocity_loss(
        torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    ).item() == pytest.approx(1.0)


# ---------------------------------------------------------------- time samplers


def test_edm_lognormal_sigma_is_lognormal_through_the_edm_schedule():
    """EDM's ln sigma ~ N(-1.2, 1.2^2), drawn as t: the schedule's sigma(t) of the draws is that lognormal."""
    edm = EDM()
    t = LogNormalSigma(edm)(40000, generator=seeded(6))
    assert t.dtype == torch.float32 and 0 <= t.min() and t.max() <= 1
    log_sigma = edm.b(t.double()).log()
    assert abs(log_sigma.mean() + 1.2) < 0.03 and abs(log_sigma.std() - 1.2) < 0.03
    normal = torch.randn(5, generator=seeded(7), dtype=torch.float64)
    drawn = LogNormalSigma(edm, p_mean=-1.1, p_std=2.0)(5, generator=seeded(7))
    torch.testing.assert_close(edm.b(drawn.double()), (-1.1 + 2.0 * normal).exp().clamp(0.002, 80.0), rtol=1e-5, atol=0)


def test_edm_lognormal_sigma_follows_the_methods_schedule_and_refuses_one_without_sigma(make_config):
    """The sampler reads sigma_min, sigma_max and rho from ``method.schedule``; a schedule without EDM's sigma is
    refused naming the fix, before any step."""
    narrow = EDM(sigma_min=0.5, sigma_max=2.0, rho=3.0)
    t = LogNormalSigma(narrow, p_mean=0.0, p_std=3.0)(2000, generator=seeded(8))
    sigma = narrow.b(t.double())
    assert sigma.min() >= 0.5 - 1e-6 and sigma.max() <= 2.0 + 1e-6
    assert (sigma < 0.5 + 1e-6).any() and (sigma > 2.0 - 1e-6).any(), "draws beyond the schedule are clamped to it"
    with pytest.raises(ValueError, match="method.schedule._target_=zoo.diffusion.schedules.EDM"):
        LogNormalSigma(LinearFlow())
    edm_run = ["method=diffusion", "method/time_sampler=edm_lognormal", "method.schedule._target_=zoo.diffusion.schedules.EDM"]
    cfg = make_config(*edm_run, "+method.schedule.sigma_max=20.0")
    assert instantiate(cfg.method.time_sampler).schedule == EDM(sigma_max=20.0)
    flow_run = make_config("method=diffusion", "method/time_sampler=edm_lognormal")  # the default LinearFlow
    with pytest.raises(InstantiationException, match="LinearFlow schedule does not have"):
        instantiate(flow_run.method.time_sampler)


def test_logit_normal_median_and_noise_bias():
    t = LogitNormal(mu=-0.8, sigma=0.8)(40000, generator=seeded(6))
    assert t.median().item() == pytest.approx(1 / (1 + math.exp(0.8)), abs=0.01)
    assert (t < 0.5).float().mean() > 0.8, "JiT's default must favour noise (t near 0)"
    assert 0 < t.min() and t.max() < 1
    u = Uniform(0.2, 0.4)(1000, generator=seeded(7))
    assert 0.2 <= u.min() and u.max() < 0.4


def test_shift():
    t = torch.linspace(0, 1, 11, dtype=F64)
    torch.testing.assert_close(shift(t, 1.0), t)
    moved = shift(t, 4.0)
    assert moved[0] == 0 and moved[-1] == 1 and (moved[1:-1] < t[1:-1]).all()
    noise_time = 1 - t
    rae = 4.0 * noise_time / (1 + 3.0 * noise_time)
    torch.testing.assert_close(1 - moved, rae)
    assert alpha_for_dim(16384) == 2.0
    sampler = instantiate(
        {
            "_target_": "zoo.diffusion.time_samplers.Shifted",
            "base": {"_target_": "zoo.diffusion.time_samplers.LogitNormal", "mu": 0.0, "sigma": 1.0},
            "alpha": 2.0,
        }
    )
    assert sampler == Shifted(LogitNormal(0.0, 1.0), 2.0)
    assert sampler(20000, generator=seeded(8)).median().item() == pytest.approx(1 / 3, abs=0.01)
    assert Shifted(Uniform(0.5, 1.0), 3.0).support == (0.25, 1.0)


def test_time_sampler_bad_inputs():
    with pytest.raises(InstantiationException, match="zoo.diffusion.time_samplers.Beta"):
        instantiate({"_target_": "zoo.diffusion.time_samplers.Beta"})
    with pytest.raises(ValueError, match="alpha"):
        shift(0.5, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        Shifted(Uniform(), -1.0)
    with pytest.raises(ValueError, match="lo=0.5, hi=0.2"):
        Uniform(0.5, 0.2)
    with pytest.raises(ValueError, match="sigma"):
        LogitNormal(sigma=0.0)


# ---------------------------------------------------------------- samplers

SAMPLER_CASES = [
    ("euler", 0.0, 60),
    ("heun", 0.0, 30),
    ("sde", 0.0, 60),
    ("sde", 0.5, 100),
    ("sde", 1.0, 100),
    ("ddim", 0.0, 60),
    ("ddim", 1.0, 60),
]


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize(("sampler", "eta", "steps"), SAMPLER_CASES)
def test_samplers_reproduce_the_mixture(name, sampler, eta, steps):
    mean, cov = mixture_moments()
    x = draw(SCHEDULES[name], sampler, steps, eta)
    assert (x.mean(0) - mean).abs().max() < 0.15
    assert (torch.cov(x.T) - cov).abs().max() < 0.3


def test_eta_zero_and_one_histograms_match():
    flow = SCHEDULES["flow"]
    bins = [torch.linspace(-4, 4, 9, dtype=F64), torch.linspace(-2, 4, 7, dtype=F64)]

    def histogram(x):
        return torch.histogramdd(x, bins=bins)[0] / x.shape[0]

    ode, sde_1 = draw(flow, "sde", 100, 0.0, seed=1), draw(flow, "sde", 100, 1.0, seed=2)
    assert 0.5 * (histogram(ode) - histogram(sde_1)).abs().sum() < 0.08
    shifted = sde_1 + torch.tensor([0.5, 0.0], dtype=F64)
    assert 0.5 * (histogram(ode) - histogram(shifted)).abs().sum() > 0.2, (
        "the histogram check must have power"
    )


@pytest.mark.parametrize("name", SCHEDULES)
def test_sde_eta_zero_is_euler_and_ddim_is_euler_for_flow_and_edm(name):
    schedule = SCHEDULES[name]
    denoise = mixture_denoiser(schedule)
    z = schedule.prior((64, 2), generator=seeded(9), dtype=F64)
    grid = schedule.grid(20)
    base = euler(denoise, z, grid, schedule)
    torch.testing.assert_close(sde(denoise, z, grid, schedule, 0.0), base)
    if name in ("flow", "edm"):
        torch.testing.assert_close(ddim(denoise, z, grid, schedule, 0.0), base)


def test_heun_evaluation_counts():
    """Flow: last step Euler (JiT), 2n - 1 calls; EDM: n Heun steps + the final D(z; sigma_min) = 2n + 1."""
    for name, expected in (("flow", 2 * 10 - 1), ("edm", 2 * 17 + 1)):
        schedule, calls = SCHEDULES[name], []
        denoise = mixture_denoiser(schedule)

        def counting(z, t, denoise=denoise, calls=calls):
            calls.append(float(t[0]))
            return denoise(z, t)

        heun(
            counting, schedule.prior((4, 2), dtype=F64), schedule.grid(10 if name == "flow" else 17), schedule
        )
        assert len(calls) == expected
        assert name == "edm" or max(calls) < 1.0, "the flow's denoiser must never be called at b = 0"


def test_sampler_bad_inputs():
    flow = SCHEDULES["flow"]
    denoise = mixture_denoiser(flow)
    z, grid = flow.prior((4, 2), dtype=F64), flow.grid(4)
    with pytest.raises(ValueError, match="eta=1.5"):
        sde(denoise, z, grid, flow, 1.5)
    with pytest.raises(ValueError, match="eta=-0.1"):
        ddim(denoise, z, grid, flow, -0.1)
    with pytest.raises(ValueError, match="eta=2"):
        sample(denoise, (4, 2), flow, 4, "sde", eta=2)
    with pytest.raises(ValueError, match="eta=0.5 needs a stochastic sampler"):
        sample(denoise, (4, 2), flow, 4, "heun", eta=0.5)
    with pytest.raises(ValueError, match="unknown sampler 'dpm'.*euler, heun, sde, ddim"):
        sample(denoise, (4, 2), flow, 4, "dpm")


# ---------------------------------------------------------------- guidance


def test_classifier_free_guidance():
    flow = SCHEDULES["flow"]
    cond = mixture_denoiser(flow, MEANS[:1], STDS[:1], WEIGHTS[:1] / WEIGHTS[0])
    uncond = mixture_denoiser(flow)
    z = torch.randn(6, 2, generator=seeded(10), dtype=F64)
    t = torch.tensor([0.05, 0.2, 0.4, 0.6, 0.8, 0.95], dtype=F64)
    x_c, x_u = cond(z, t), uncond(z, t)
    assert torch.equal(classifier_free(cond, uncond, 1.0)(z, t), x_c)
    guided = classifier_free(cond, uncond, 3.0, interval=(0.1, 1.0))(z, t)
    assert torch.equal(guided[0], x_c[0])
    torch.testing.assert_close(guided[1:], x_u[1:] + 3.0 * (x_c[1:] - x_u[1:]))
    v_c, v_u = (convert(x, "x", "v", z, t, flow) for x in (x_c, x_u))
    torch.testing.assert_close(convert(guided, "x", "v", z, t, flow)[1:], v_u[1:] + 3.0 * (v_c[1:] - v_u[1:]))
    with pytest.raises(ValueError, match="interval"):
        classifier_free(cond, uncond, 2.0, interval=(0.8, 0.2))


@pytest.mark.parametrize("name", ["flow", "edm"])
def test_reward_guidance_tilts_a_gaussian_exactly(name):
    """Data N(mu, S), reward w.x: guided samples are N(mu + scale S w, S) (same prior noise as unguided)."""
    schedule = SCHEDULES[name]
    mu, std, w, scale = MEANS[1:2], STDS[1:2], torch.tensor([1.0, 2.0], dtype=F64), 0.5
    denoise = mixture_denoiser(schedule, mu, std, torch.ones(1, dtype=F64))
    guided = reward_guided(denoise, lambda x: x @ w, scale, schedule)
    plain, tilted = draw(schedule, denoise=denoise), draw(schedule, denoise=guided)
    torch.testing.assert_close(tilted.mean(0) - plain.mean(0), scale * std[0] ** 2 * w, atol=0.02, rtol=0)
    torch.testing.assert_close(tilted.std(0), plain.std(0), atol=0.02, rtol=0)


def test_best_of_n_keeps_the_best_candidate():
    candidates = iter(torch.tensor([[[0.0], [5.0]], [[3.0], [1.0]], [[2.0], [4.0]]]))
    best = best_of_n(lambda: next(candidates), lambda x: x[:, 0], 3)
    torch.testing.assert_close(best, torch.tensor([[3.0], [5.0]]))
    with pytest.raises(ValueError, match="n=0"):
        best_of_n(lambda: torch.zeros(1), lambda x: x, 0)


def test_cosine_reward():
    reward = cosine_reward(lambda x: x, torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(
        reward(torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])), torch.tensor([1.0, 0.0, -1.0])
    )


# ---------------------------------------------------------------- predict-and-perturb


@pytest.mark.parametrize(("sampler", "eta"), [("euler", 0.0), ("heun", 0.0), ("sde", 0.5), ("ddim", 1.0)])
def test_predict_and_perturb_k0_is_the_base_sampler(sampler, eta):
    flow = SCHEDULES["flow"]
    base = draw(flow, sampler, 20, eta)
    refined = draw(flow, sampler, 20, eta, refine=PredictAndPerturb(flow, k=0, fraction=1.0))
    assert torch.equal(base, refined)


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_predict_and_perturb_keeps_certain_positions(sampler):
    """With tau huge every position is certain after one re-prediction, so the base step is kept
    (deterministic samplers only: a stochastic step re-run would draw from the sampler's generator)."""
    flow = SCHEDULES["flow"]
    frozen = draw(flow, sampler, 20, refine=PredictAndPerturb(flow, k=3, tau=1e9, fraction=1.0))
    assert torch.equal(draw(flow, sampler, 20), frozen)


def test_predict_and_perturb_pulls_samples_to_the_modes():
    """With the exact denoiser the pull comes from mid-noise steps, so it is applied on the whole grid here."""
    flow = SCHEDULES["flow"]

    def distance_to_modes(x):
        return torch.cdist(x, MEANS).min(1).values.mean().item()

    base = distance_to_modes(draw(flow, "euler", 40))
    refine = PredictAndPerturb(flow, k=2, tau=0.0, fraction=1.0, generator=seeded(11))
    refined = distance_to_modes(draw(flow, "euler", 40, refine=refine))
    assert refined < base - 0.05


def test_predict_and_perturb_bad_inputs():
    flow = SCHEDULES["flow"]
    with pytest.raises(ValueError, match="k=-1"):
        PredictAndPerturb(flow, k=-1)
    with pytest.raises(ValueError, match="fraction=1.5"):
        PredictAndPerturb(flow, k=1, fraction=1.5)


@pytest.mark.parametrize("sampler", ["euler", "heun", "sde", "ddim"])
def test_image_batches_under_no_grad(sampler):
    """[B, C, H, W] tensors through every sampler, a per-pixel P&P mask and reward guidance, under no_grad."""
    flow = SCHEDULES["flow"]
    net = torch.nn.Conv2d(3, 3, 3, padding=1)

    def denoise(z, t):
        return torch.tanh(net(z * append_dims(flow.c_in(t), z.ndim)))

    guided = reward_guided(denoise, lambda x: -x.pow(2).flatten(1).mean(1), 0.5, flow)
    refine = PredictAndPerturb(flow, k=1, fraction=0.5, generator=seeded(12))
    with torch.no_grad():
        x = sample(
            guided, (2, 3, 4, 4), flow, 6, sampler, 0.5 if sampler in ("sde", "ddim") else 0.0, refine=refine
        )
    assert x.shape == (2, 3, 4, 4) and torch.isfinite(x).all()
    assert all(p.grad is None for p in net.parameters()), "guidance must not touch the net's gradients"


@pytest.mark.parametrize("name", ["flow", "vp_cosine", "edm"])
def test_ddim_eta_one_is_the_ddpm_posterior(name):
    """Data x = 0 and an oracle denoiser: one DDIM eta=1 step from t to t' must give the forward chain's
    joint law, Var(z') = b'^2 and corr(z, z') = (a/a') b'/b (eta = 0 gives correlation 1 instead)."""
    schedule = SCHEDULES[name]
    t, t_next = 0.3, 0.6
    seen = {}

    def oracle(z, times):
        seen[float(times[0])] = z
        return torch.zeros_like(z)

    z = schedule.b(torch.tensor(t, dtype=F64)) * torch.randn(20000, 1, generator=seeded(13), dtype=F64)
    ddim(oracle, z, torch.tensor([t, t_next], dtype=F64), schedule, 1.0, generator=seeded(14))
    z_next = seen[t_next]
    a, b, a_next, b_next = (
        float(fn(torch.tensor(s, dtype=F64))) for s in (t, t_next) for fn in (schedule.a, schedule.b)
    )
    covariance = torch.cov(torch.cat([z, z_next], 1).T)
    assert covariance[1, 1].item() == pytest.approx(b_next**2, rel=0.05)
    correlation = covariance[0, 1] / (covariance[0, 0] * covariance[1, 1]).sqrt()
    assert correlation.item() == pytest.approx(a / a_next * b_next / b, abs=0.03)
