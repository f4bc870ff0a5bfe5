"""MoCo v2/v3: the losses against hand computation, queue, momentum, stop-grad, configs, training."""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import ReleaseProcessGroup

from datamodules import Digits
from zoo.app.train import build
from zoo.methods.moco import MoCo, contrastive_v3, fifo_enqueue, infonce_v2
from zoo.methods.momentum import cosine_momentum
from zoo.nets.backbones import ResNet, ViT


def tiny_moco(variant: str = "v2", **kwargs) -> MoCo:
    torch.manual_seed(0)
    settings = {"dim": 8, "hidden": 16, "queue_size": 32, "optimizer": partial(torch.optim.SGD, lr=0.1)}
    return MoCo(ResNet(in_chans=1, width=4, layers=(1, 1, 1, 1)), variant=variant, **{**settings, **kwargs})


def two_view_batch(n: int = 8) -> dict:
    torch.manual_seed(1)
    x = torch.rand(n, 1, 8, 8) * 2 - 1
    return {
        "x": x,
        "y": torch.zeros(n, dtype=torch.long),
        "views": [x + 0.1 * torch.randn_like(x), x.flip(-1)],
    }


def test_infonce_v2_matches_hand_computation() -> None:
    q = torch.tensor([[2.0, 0.0]])
    k = torch.tensor([[1.0, 0.0]])
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    expected = -math.log(math.exp(2) / (math.exp(2) + math.exp(0) + math.exp(-2)))
    assert infonce_v2(q, k, queue, temperature=0.5).item() == pytest.approx(expected, rel=1e-6)


def test_contrastive_v3_matches_hand_computation_and_uses_the_rank_offset() -> None:
    q = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    other_rank = torch.tensor([[0.0, -1.0], [-1.0, 0.0]])
    k = torch.cat([other_rank, q])
    temperature = 0.5
    logits = (F.normalize(q, dim=1) @ F.normalize(k, dim=1).t() / temperature).tolist()
    per_row = [
        -math.log(math.exp(row[2 + i]) / sum(math.exp(v) for v in row)) for i, row in enumerate(logits)
    ]
    expected = sum(per_row) / 2 * 2 * temperature
    assert contrastive_v3(q, k, temperature, rank_offset=2).item() == pytest.approx(expected, rel=1e-6)
    assert contrastive_v3(q, k, temperature, rank_offset=0).item() > expected


def test_fifo_enqueue_advances_the_pointer_and_wraps_around() -> None:
    queue, pointer = torch.zeros(5, 1), torch.tensor(3)
    fifo_enqueue(queue, pointer, torch.tensor([[1.0], [2.0], [3.0]]))
    assert queue.flatten().tolist() == [3.0, 0.0, 0.0, 1.0, 2.0] and pointer.item() == 1
    fifo_enqueue(queue, pointer, torch.arange(10.0, 17.0).unsqueeze(1))
    assert queue.flatten().tolist() == [14.0, 15.0, 16.0, 12.0, 13.0] and pointer.item() == 3


def test_cosine_momentum_rises_from_m0_to_one() -> None:
    assert cosine_momentum(0, 100, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(50, 100, 0.99) == pytest.approx(0.995)
    assert cosine_momentum(100, 100, 0.99) == pytest.approx(1.0)
    assert cosine_momentum(150, 100, 0.99) == pytest.approx(1.0)


def test_momentum_update_moves_the_key_encoder_toward_the_query_encoder() -> None:
    model = tiny_moco()
    for p in [*model.backbone.parameters(), *model.head.parameters()]:
        p.data.fill_(1.0)
    momentum = [*model.momentum_backbone.parameters(), *model.momentum_head.parameters()]
    for p in momentum:
        p.data.fill_(0.0)
    model.momentum_update(0.9)
    assert all(torch.allclose(p, torch.full_like(p, 0.1)) for p in momentum)


@pytest.mark.parametrize("variant", ["v2", "v3"])
def test_no_gradient_reaches_the_key_encoder(variant: str) -> None:
    model = tiny_moco(variant).train()
    model.losses(two_view_batch())["loss"].backward()
    momentum = [*model.momentum_backbone.parameters(), *model.momentum_head.parameters()]
    assert all(p.grad is None and not p.requires_grad for p in momentum)
    assert all(p.grad is not None for group in model.learnable_params for p in group["params"])
    learnable = {id(p) for group in model.learnable_params for p in group["params"]}
    assert not learnable & {id(p) for p in momentum}


def test_the_v3_predictor_is_on_the_query_branch_only() -> None:
    model = tiny_moco("v3").train()
    calls: list[bool] = []
    model.predictor.register_forward_hook(lambda module, args, out: calls.append(args[0].requires_grad))
    x = two_view_batch()["views"][0]
    model.keys(x)
    assert calls == []
    model.losses(two_view_batch())
    assert calls == [True, True]
    keys = model.keys(x)
    expected = F.normalize(model.momentum_head(model.momentum_backbone(x)), dim=1)
    assert torch.allclose(keys, expected, atol=1e-6)


def test_v2_enqueues_keys_in_training_only() -> None:
    model = tiny_moco("v2", queue_size=32)
    batch = two_view_batch(8)
    model.train().losses(batch)
    assert model.queue_pointer.item() == 8
    before = model.queue.clone()
    model.eval()
    with torch.no_grad():
        model.losses(batch)
    assert model.queue_pointer.item() == 8 and torch.equal(model.queue, before)


def test_a_batch_without_views_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"MoCo needs two views: set data.views=mocov2 \(or mocov3\)"):
        tiny_moco().losses({"x": torch.zeros(2, 1, 8, 8), "y": torch.zeros(2, dtype=torch.long)})


def test_queue_size_must_be_a_multiple_of_the_batch_size() -> None:
    with pytest.raises(ValueError, match=r"method.queue_size=100 .* data.batch_size=64"):
        tiny_moco(queue_size=100, batch_size=64)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"variant": "v4"}, r"method.variant='v4'"),
        ({"temperature": 0.0}, r"method.temperature=0.0"),
        ({"momentum": 1.5}, r"method.momentum=1.5"),
        ({"queue_size": 0}, r"method.queue_size=0"),
        ({"variant": "v3", "projector_layers": 1}, r"method.projector_layers=1"),
    ],
)
def test_bad_settings_are_named(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_moco(**settings)


def test_a_net_without_pooled_features_is_refused() -> None:
    with pytest.raises(ValueError, match=r"Linear has no `num_features`"):
        MoCo(torch.nn.Linear(2, 2), optimizer=partial(torch.optim.SGD, lr=0.1))


def test_more_than_two_views_are_refused() -> None:
    batch = two_view_batch()
    with pytest.raises(ValueError, match="exactly two views per image, got 3"):
        tiny_moco().losses({**batch, "views": [*batch["views"], batch["x"]]})


def test_v3_refuses_an_unbounded_run(tmp_path) -> None:
    trainer = L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="trainer.max_epochs or trainer.max_steps"):
        trainer.fit(tiny_moco("v3"), datamodule=TinyViews("mocov3_noflip"))


def test_the_config_selects_the_resnet_and_the_views_of_the_variant(make_config) -> None:
    cfg = make_config("method=moco")
    assert cfg.net._target_ == "zoo.nets.backbones.ResNet" and cfg.data.views == "mocov2"
    cfg = make_config("method=moco", "method.variant=v3", "net=vit")
    assert cfg.net._target_ == "zoo.nets.backbones.ViT" and cfg.data.views == "mocov3"


@pytest.mark.parametrize("net", ["resnet", "vit"])
def test_the_composed_config_builds_and_takes_a_step(make_config, net: str) -> None:
    cfg = make_config(
        "method=moco", "method.variant=v3", f"net={net}", "net.depth=1" if net == "vit" else "net.width=8"
    )
    method = build(cfg).method
    assert (
        isinstance(method, MoCo) and method.variant == "v3" and method.run_config["data"]["views"] == "mocov3"
    )
    loss = method.train().losses(two_view_batch(4))["loss"]
    loss.backward()
    assert torch.isfinite(loss)


class TinyViews(L.LightningDataModule):
    """Digits with two views, a few dozen images: a real training loop in seconds."""

    def __init__(self, views: str) -> None:
        super().__init__()
        self.digits = Digits(views=views, n_train=64, batch_size=16, eval_batch_size=32)

    def train_dataloader(self):
        return self.digits.train_dataloader()

    def val_dataloader(self):
        return self.digits.val_dataloader()


@pytest.mark.parametrize("variant", ["v2", "v3"])
def test_a_few_trainer_steps_on_digits_views(tmp_path, variant: str) -> None:
    model = tiny_moco(variant, queue_size=48, batch_size=16)
    start = [p.clone() for p in model.momentum_backbone.parameters()]
    trainer = L.Trainer(
        max_epochs=1,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=TinyViews(f"moco{variant}_noflip"))
    assert torch.isfinite(trainer.callback_metrics["train/loss_step"])
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
    assert any(not torch.equal(a, b) for a, b in zip(start, model.momentum_backbone.parameters()))
    if variant == "v2":
        assert model.queue_pointer.item() == 4 * 16 % 48
    else:
        assert model.total_steps == 4
        assert model.current_momentum() == pytest.approx(1.0)


class CheckedMoCo(MoCo):
    """Logs, each step, how far shuffle-BN keys and the queue are from their single-process values."""

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x = batch["views"][1]
        mine, every = self._shuffled_keys(x)
        direct = self.keys(x)
        queues = self.all_gather(self.queue)
        errors = {
            "shuffled_key_error": (mine - direct).abs().max(),
            "gathered_key_error": (every - self._gather(direct)).abs().max(),
            "queue_mismatch": (queues[0] - queues[1]).abs().max(),
        }
        for name, value in errors.items():
            self.log(name, value, sync_dist=True, reduce_fx="max")
        return super().training_step(batch, batch_idx)


@pytest.mark.slow
def test_v2_shuffle_bn_and_queue_under_two_process_ddp(tmp_path) -> None:
    torch.manual_seed(0)
    net = ViT(img_size=8, patch_size=4, in_chans=1, embed_dim=16, depth=1, num_heads=2)
    model = CheckedMoCo(net, dim=8, queue_size=48, optimizer=partial(torch.optim.SGD, lr=0.1))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        callbacks=[ReleaseProcessGroup()],
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=TinyViews("mocov2_noflip"))
    metrics = trainer.callback_metrics
    assert model.queue_pointer.item() == 2 * 2 * 16 % 48
    assert metrics["shuffled_key_error"] < 1e-5 and metrics["gathered_key_error"] < 1e-5
    assert metrics["queue_mismatch"] == 0


def test_the_momentum_pairs_are_the_key_encoder_with_the_variant_schedule() -> None:
    for variant, schedule in (("v2", "constant"), ("v3", "cosine")):
        model = tiny_moco(variant)
        pairs = [(model.backbone, model.momentum_backbone), (model.head, model.momentum_head)]
        assert all(a is c and b is d for (a, b), (c, d) in zip(model.momentum_pairs, pairs, strict=True))
        assert model.momentum_schedule == schedule and model.momentum == 0.99


class RecordedMoCo(MoCo):
    """Checks each momentum update against ``m key + (1 - m) query`` as the base class applies it."""

    def momentum_update(self, m: float) -> None:
        query = [p.detach().clone() for online, _ in self.momentum_pairs for p in online.parameters()]
        key = [p.clone() for _, target in self.momentum_pairs for p in target.parameters()]
        super().momentum_update(m)
        after = [p for _, target in self.momentum_pairs for p in target.parameters()]
        self.errors.append(max((a - (m * k + (1 - m) * q)).abs().max().item() for q, k, a in zip(query, key, after)))
        self.momenta.append((self.global_step, m))


@pytest.mark.parametrize("variant", ["v2", "v3"])
def test_the_key_encoder_follows_the_query_encoder_once_per_optimizer_step(tmp_path, variant: str) -> None:
    torch.manual_seed(0)
    model = RecordedMoCo(
        ResNet(in_chans=1, width=4, layers=(1, 1, 1, 1)), variant=variant, dim=8, hidden=16, queue_size=48,
        momentum=0.9, optimizer=partial(torch.optim.SGD, lr=0.1),
    )
    model.errors, model.momenta = [], []
    trainer = L.Trainer(
        max_epochs=1, accumulate_grad_batches=2, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=TinyViews(f"moco{variant}_noflip"))
    expected = [0.9, 0.9] if variant == "v2" else [cosine_momentum(1, 2, 0.9), 1.0]
    assert model.momenta == [(1, expected[0]), (2, expected[1])]
    assert max(model.errors) < 1e-6


@pytest.mark.parametrize("variant", ["v2", "v3"])
def test_a_resumed_run_ends_with_the_weights_of_an_unbroken_one(tmp_path, variant: str) -> None:
    def run(name: str, epochs: int, ckpt: str | None = None) -> MoCo:
        model = tiny_moco(variant, queue_size=48, batch_size=16)
        # The views' augmentations draw from the global generator, which a resume does not restore:
        # seeding it by epoch leaves the momentum encoder, queue and schedule as the state under test.
        epochs_seeded_and_stopped = L.pytorch.callbacks.LambdaCallback(
            on_train_epoch_start=lambda trainer, _: torch.manual_seed(trainer.current_epoch),
            on_train_epoch_end=lambda trainer, _: setattr(trainer, "should_stop", trainer.current_epoch + 1 >= epochs),
        )
        trainer = L.Trainer(
            max_epochs=2, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, default_root_dir=tmp_path / name, callbacks=[epochs_seeded_and_stopped],
        )
        trainer.fit(model, datamodule=TinyViews(f"moco{variant}_noflip"), ckpt_path=ckpt)
        trainer.save_checkpoint(tmp_path / f"{name}.ckpt")
        return model

    unbroken = run("unbroken", 2)
    run("first", 1)
    resumed = run("resumed", 2, ckpt=str(tmp_path / "first.ckpt"))
    assert resumed.global_step == unbroken.global_step == 8 and resumed.total_steps == 8
    for (name, a), b in zip(unbroken.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
