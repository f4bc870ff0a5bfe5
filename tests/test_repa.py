"""REPA (Yu et al. 2024): the alignment term, its token grids, its frozen encoder, its refusals, and the
reduced speed-up experiment."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.errors import InstantiationException
from lightning.pytorch.callbacks import ModelCheckpoint
from test_scale import FEW_STEPS, assert_same_weights, load, run_py

from zoo.app.studies.repa_speedup import mean_curve, speedup, speedup_interval, speedup_over, steps_to_target
from zoo.app.train import build, fit
from zoo.terms.alignment import RepresentationAlignment, alignment_loss, centred_cosine, placed

TINY = ["method=repa", "net.width=32", "net.depth=3", "trainer=debug", "callbacks=none"]
RANDOM = ["encoder=random", "encoder.net.width=8"]
VIT = [
    "~encoder.net",
    "+encoder.net={_target_: zoo.nets.backbones.ViT, img_size: 8, patch_size: 2, in_chans: 1, embed_dim: 16, "
    "depth: 2, num_heads: 2}",
]


def refusal(make_config, *overrides: str) -> str:
    with pytest.raises((ValueError, InstantiationException)) as caught:
        build(make_config(*overrides))
    return " ".join(str(caught.value).split())


def test_l_proj_of_identical_tokens_is_minus_one_and_of_orthogonal_ones_zero() -> None:
    tokens = torch.randn(3, 16, 8)
    assert alignment_loss(tokens, tokens.clone()).item() == pytest.approx(-1.0, abs=1e-6)
    assert alignment_loss(tokens, 2.5 * tokens).item() == pytest.approx(-1.0, abs=1e-6)
    basis = torch.eye(8)
    assert alignment_loss(basis[:4].expand(3, 4, 8), basis[4:].expand(3, 4, 8)).item() == pytest.approx(0.0)
    assert alignment_loss(tokens, -tokens).item() == pytest.approx(1.0, abs=1e-6)


def test_the_centred_cosine_ignores_a_shared_mean() -> None:
    torch.manual_seed(0)
    target = torch.randn(4, 16, 8) + 10.0
    assert alignment_loss(target, torch.full_like(target, 10.0)).item() < -0.98
    assert centred_cosine(target, torch.full_like(target, 10.0) + 1e-3 * torch.randn_like(target)).abs() < 0.1
    assert centred_cosine(target, 3 * target).item() == pytest.approx(1.0, abs=1e-5)


def test_the_projector_trains_and_the_encoder_does_not(make_config) -> None:
    built = build(make_config(*TINY, *RANDOM))
    term = built.method.terms["align"]
    assert isinstance(term, RepresentationAlignment) and term.blocks == (0,)  # block 1 of 3: round(3 / 3)
    encoder = {name: p.detach().clone() for name, p in term.encoder.state_dict().items()}
    projector = [p.detach().clone() for p in term.projector.parameters()]
    built.trainer.fit(built.method, datamodule=built.datamodule)
    optimized = {id(p) for group in built.trainer.optimizers[0].param_groups for p in group["params"]}
    assert {id(p) for p in term.projector.parameters()} <= optimized
    assert not {id(p) for p in term.encoder.parameters()} & optimized
    assert all(not p.requires_grad and p.grad is None for p in term.encoder.parameters())
    assert_same_weights(encoder, term.encoder.state_dict())
    assert all(not torch.equal(a, b) for a, b in zip(projector, term.projector.parameters(), strict=True))
    assert not term.encoder.training
    metrics = built.trainer.callback_metrics
    assert -1.0 <= metrics["train/align"] <= 1.0
    torch.testing.assert_close(metrics["val/loss"], metrics["val/denoise"] + 0.5 * metrics["val/align"])


GRIDS = [
    # (overrides, DiT grid, encoder input size or None, encoder token dim)
    (["method.terms.align.stage=3"], (4, 4), None, 32),  # ResNet layer3 2x2 on 8 px, bilinearly to 4x4
    (["method.terms.align.stage=2", "method.terms.align.match=exact"], (4, 4), None, 16),  # layer2 is 4x4
    (["method.terms.align.stage=3", "method.terms.align.match=resize"], (4, 4), (16, 16), 32),  # REPA's resize
    (["method.terms.align.stage=null", "method.terms.align.match=resize"], (4, 4), (32, 32), 64),  # layer4
    (["data.image_size=16", "net.patch_size=4", "method.terms.align.match=exact"], (4, 4), None, 32),
    (["data.image_size=16", "method.terms.align.stage=4"], (8, 8), None, 64),  # layer4 2x2 to 8x8
    ([*VIT, "method.terms.align.stage=null", "method.terms.align.match=exact"], (4, 4), None, 16),
    ([*VIT, "method.terms.align.stage=null", "net.patch_size=4"], (2, 2), None, 16),  # ViT 4x4 down to 2x2
]


@pytest.mark.parametrize(("overrides", "grid", "input_size", "dim"), GRIDS)
def test_token_grids_match(overrides, grid, input_size, dim, make_config) -> None:
    built = build(make_config(*TINY, *RANDOM, *overrides))
    term = built.method.terms["align"]
    assert term.grid == grid and term.input_size == input_size
    built.datamodule.setup("fit")
    x = next(iter(built.datamodule.train_dataloader()))["x"][:5]
    assert term.targets(x).shape == (5, grid[0] * grid[1], dim)
    t = torch.rand(5)
    hidden = built.method.denoiser.output(x, t, None, term.blocks).hidden[term.blocks[0]]
    assert hidden.shape[1] == grid[0] * grid[1] and term.projector(hidden).shape[-1] == dim


def test_repa_needs_an_encoder(make_config) -> None:
    message = refusal(make_config, *TINY)
    assert "method.terms.align (REPA) needs a frozen encoder, and encoder is null" in message
    assert "encoder=zoo encoder.ckpt=" in message


def test_an_encoder_checkpoint_of_no_representation_method_is_refused(tmp_path: Path, make_config) -> None:
    built = build(make_config("method=dae"))
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path)
    trainer.fit(built.method, datamodule=built.datamodule)
    trainer.save_checkpoint(tmp_path / "dae.ckpt")
    message = refusal(make_config, *TINY, "encoder=zoo", f"encoder.ckpt={tmp_path / 'dae.ckpt'}")
    assert "encoder.ckpt=" in message and "dae.ckpt is a DAE checkpoint, which has no backbone" in message


def test_a_zoo_moco_checkpoint_is_the_encoder(tmp_path: Path, make_config) -> None:
    moco = ["method=moco", "data.batch_size=16", "method.queue_size=32", "net.width=4"]
    built = build(make_config(*moco))
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=2, limit_val_batches=0, logger=False, enable_progress_bar=False,
        callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)], enable_model_summary=False,
    )
    trainer.fit(built.method, datamodule=built.datamodule)
    repa = build(make_config(*TINY, "encoder=zoo", f"encoder.ckpt={tmp_path / 'ckpt' / 'last.ckpt'}"))
    term = repa.method.terms["align"]
    torch.testing.assert_close(term.encoder.backbone.state_dict(), built.method.backbone.state_dict())
    assert term.targets(torch.zeros(2, 1, 8, 8)).shape == (2, 16, 16)  # layer3 of width 4: 16 channels


@pytest.mark.parametrize("block", [0, 4, -1])
def test_a_block_outside_the_dit_is_refused(block: int, make_config) -> None:
    message = refusal(make_config, *TINY, *RANDOM, f"method.terms.align.block={block}")
    assert f"method.terms.align.block={block} is outside the DiT's 3 blocks: blocks are 1-indexed" in message


@pytest.mark.parametrize("net", ["unet", "mlp", "resnet"])
def test_a_net_without_token_hidden_states_is_refused(net: str, make_config) -> None:
    message = refusal(make_config, "method=repa", f"net={net}", *RANDOM)
    assert "aligns the token hidden states of a transformer denoiser" in message and "use net=dit" in message


def test_incompatible_token_grids_name_both_grids_and_the_settings(make_config) -> None:
    exact = refusal(make_config, *TINY, *RANDOM, "method.terms.align.match=exact")
    assert "the encoder's token grid (stage 3, 8 px input) is 2x2 and the DiT's is 4x4" in exact
    assert "net.patch_size=2" in exact and "method.terms.align.match=interpolate or resize" in exact
    flat = refusal(make_config, *TINY, *RANDOM, "method.terms.align.stage=null")
    assert "is 1x1 and the DiT's is 4x4" in flat and "pick an earlier method.terms.align.stage" in flat
    fixed_vit = refusal(make_config, *TINY, *RANDOM, *VIT, "method.terms.align.stage=null", "net.patch_size=4",
                        "method.terms.align.match=resize")
    assert "method.terms.align.match=resize" in fixed_vit and "does not take 4 px inputs" in fixed_vit
    bad = refusal(make_config, *TINY, *RANDOM, "method.terms.align.match=nearest")
    assert "method.terms.align.match='nearest': choose one of interpolate, resize, exact" in bad
    layout = refusal(make_config, *TINY, *RANDOM, "method.terms.align.layout=shuffled")
    assert "method.terms.align.layout='shuffled': choose one of spatial, permuted, pooled" in layout


def test_the_controls_keep_the_features_and_remove_their_spatial_layout() -> None:
    torch.manual_seed(0)
    tokens = torch.randn(4, 16, 8)
    assert torch.equal(placed(tokens, "spatial"), tokens)
    permuted = placed(tokens, "permuted")
    assert not torch.equal(permuted, tokens)
    for image in range(4):  # the same tokens per image, at other positions
        assert torch.equal(permuted[image].sort(dim=0).values, tokens[image].sort(dim=0).values)
    assert not torch.equal(permuted[0].argsort(0), permuted[1].argsort(0)), "each image its own permutation"
    pooled = placed(tokens, "pooled")
    assert torch.allclose(pooled, tokens.mean(1, keepdim=True).expand_as(tokens))


@pytest.mark.parametrize("layout", ["permuted", "pooled"])
def test_a_control_trains_through_the_term(layout: str, make_config) -> None:
    built = build(make_config(*TINY, *RANDOM, f"method.terms.align.layout={layout}"))
    term = built.method.terms["align"]
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    targets = term.targets(x)
    assert targets.shape == (3, 16, term.projector[-1].out_features)
    if layout == "pooled":
        assert torch.allclose(targets, targets[:, :1].expand_as(targets))


def test_the_study_interpolates_steps_to_the_target() -> None:
    curve = {100: 30.0, 200: 20.0, 300: 10.0}
    assert steps_to_target(curve, 15.0) == pytest.approx(250.0)
    assert steps_to_target(curve, 40.0) == 100.0
    assert steps_to_target(curve, 5.0) is None
    assert speedup(300.0, 150.0) == 2.0 and speedup(300.0, None) is None


def test_speedups_over_seeds_come_from_the_mean_curves_with_an_interval() -> None:
    base = [{100: 30.0, 200: 20.0, 300: 10.0}, {100: 34.0, 200: 24.0, 300: 14.0}]
    fast = [{100: 20.0, 200: 12.0, 300: 8.0}, {100: 16.0, 200: 10.0, 300: 6.0}]
    assert mean_curve(base) == {100: 32.0, 200: 22.0, 300: 12.0}
    # The mean fast curve (18, 11, 7) reaches base's final 12 at 100 + 6/7 * 100 steps; base needs 300.
    assert speedup_over(fast, base) == pytest.approx(300 / (100 + 600 / 7))
    assert speedup_over(base, base) == 1.0
    low, high = speedup_interval(fast, base, n_bootstrap=200, alpha=0.1, seed=0)
    assert 1.0 < low <= speedup_over(fast, base) <= high
    never = [{100: 40.0, 200: 39.0, 300: 38.0}] * 2
    assert speedup_over(never, base) is None and speedup_interval(never, base, 50, 0.1, 0) == (0.0, 0.0)
    with pytest.raises(ValueError, match="different steps"):
        mean_curve([{100: 1.0}, {200: 1.0}])


def test_a_run_resumes_exactly(tmp_path: Path, make_config) -> None:
    tiny = [*TINY, *RANDOM, "trainer=default", "callbacks=default", "~callbacks.progress",
            "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1", "+test=false", "data.n_train=300"]
    fit(make_config(*tiny, "trainer.max_epochs=4", output_dir=tmp_path / "unbroken"))
    fit(make_config(*tiny, "trainer.max_epochs=2", output_dir=tmp_path / "resumed"))
    fit(make_config(*tiny, "trainer.max_epochs=4", "resume=auto", output_dir=tmp_path / "resumed"))
    unbroken = load(tmp_path / "unbroken" / "checkpoints" / "last.ckpt")
    resumed = load(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == unbroken["global_step"] == 12
    assert_same_weights(unbroken["state_dict"], resumed["state_dict"])


@pytest.mark.slow
def test_repa_under_two_process_ddp(tmp_path: Path) -> None:
    result = run_py(
        "trainer=ddp", "trainer.devices=2", *TINY[:3], *RANDOM, *FEW_STEPS, "callbacks=default",
        "~callbacks.progress", f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"train/align", "val/align", "test/align"} <= set(metrics)
    assert -1.0 <= metrics["val/align"] <= 1.0
    checkpoint = load(tmp_path / "checkpoints" / "last.ckpt")
    assert any(key.startswith("terms.align.projector.") for key in checkpoint["state_dict"])


REDUCED = [
    "experiment=repa_digits",
    "study_jobs=2",
    "study.encoder_run=['method=moco','data.views=mocov2_noflip','trainer.max_epochs=2','~callbacks.progress']",
    "~study.arms.random_encoder",
    "study.epochs=10",
    "study.eval_every=5",
    "study.n_samples=500",
]


@pytest.mark.slow
def test_the_reduced_experiment_gives_repa_a_lower_fd_than_vanilla_at_equal_steps(make_config, tmp_path) -> None:
    from hydra.utils import instantiate

    cfg = make_config(*REDUCED, output_dir=tmp_path)
    instantiate(cfg.study, _partial_=True)(cfg)
    report = json.loads((tmp_path / "repa_digits.json").read_text())
    vanilla, repa = report["vanilla"], report["repa"]
    assert set(vanilla["fd_curve"]) == set(repa["fd_curve"]) and len(repa["fd_curve"]) == 2
    assert {"fd", "fd_curve", "steps_to_target", "l_proj", "l_proj_centred", "probe"} <= set(repa)
    assert repa["l_proj"] < vanilla["l_proj"]
    assert repa["fd"] < vanilla["fd"], f"REPA's FD {repa['fd']:.3f} is not below vanilla's {vanilla['fd']:.3f}"
