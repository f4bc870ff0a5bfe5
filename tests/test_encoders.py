"""Backbones' tokens/pooled features and the frozen-encoder factory (timm, zoo checkpoint, random)."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import lightning as L
import pytest
import safetensors.torch
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf, open_dict
from timm.models import create_model

from zoo import encoders
from zoo.app.train import build
from zoo.encoders import FrozenEncoder
from zoo.nets.backbones import ResNet, ViT


@pytest.mark.parametrize(
    ("net", "side", "tokens"),
    [
        (ResNet(in_chans=1, width=8, layers=(1, 1, 1, 1)), 8, 1),
        (ResNet(in_chans=3, width=8, layers=(1, 1, 1, 1)), 32, 16),
        (ViT(img_size=8, patch_size=2, in_chans=1, embed_dim=32, depth=1, num_heads=2), 8, 16),
    ],
)
def test_backbones_give_tokens_and_pooled_features(net, side: int, tokens: int) -> None:
    x = torch.randn(3, net.conv1.in_channels if isinstance(net, ResNet) else 1, side, side)
    width = net.num_features
    assert net(x).shape == (3, width) and net.tokens(x).shape == (3, tokens, width)
    encoder = encoders.random(net)
    net.eval()
    token_out, pooled = encoder(x)
    assert torch.allclose(token_out, net.tokens(x), atol=1e-5) and torch.allclose(pooled, net(x), atol=1e-5)


def test_backbone_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match=r"net.width=3"):
        ResNet(width=3)
    with pytest.raises(ValueError, match=r"net.img_size=10 .* net.patch_size=4"):
        ViT(img_size=10, patch_size=4)


def test_the_encoder_is_frozen_and_stays_in_eval_mode() -> None:
    encoder = encoders.random(ResNet(in_chans=1, width=4, layers=(1, 1, 1, 1)))
    encoder.train()
    assert not encoder.training and not any(m.training for m in encoder.modules())
    assert not any(p.requires_grad for p in encoder.parameters())
    x = torch.randn(2, 1, 8, 8, requires_grad=True)
    encoder(x)[1].sum().backward()
    assert x.grad is not None and all(p.grad is None for p in encoder.parameters())


def test_inputs_are_resized_gray_expanded_and_normalised() -> None:
    encoder = encoders.timm("resnet18", input_size=16)
    assert encoder.in_chans == 3 and encoder.mean is not None
    tokens, pooled = encoder(torch.zeros(2, 1, 8, 8))
    assert tokens.shape == (2, 1, 512) and pooled.shape == (2, 512)
    prepared = encoder.prepare(torch.zeros(1, 1, 8, 8))
    assert prepared.shape == (1, 3, 16, 16)
    assert torch.allclose(prepared[0, :, 0, 0], (0.5 - encoder.mean.flatten()) / encoder.std.flatten())
    with pytest.raises(ValueError, match="3-channel images but got 2 channels"):
        encoder(torch.zeros(1, 2, 8, 8))


def test_timm_loads_a_local_weights_file(tmp_path: Path) -> None:
    reference = create_model("resnet18")
    torch.save(reference.state_dict(), tmp_path / "weights.pth")
    encoder = encoders.timm("resnet18", weights_path=str(tmp_path / "weights.pth"))
    assert torch.equal(encoder.backbone.conv1.weight, reference.conv1.weight)
    with pytest.raises(FileNotFoundError, match="encoder.weights_path=.*missing.pth"):
        encoders.timm("resnet18", weights_path=str(tmp_path / "missing.pth"))


def test_dinov2_with_registers_loads_from_a_local_safetensors_file_at_224_px(tmp_path: Path) -> None:
    """REPA's and RAE's target, offline: timm's DINOv2 with 4 registers from a local ``model.safetensors`` (here
    random weights of the small one, saved at its native 518 px), built at 224 px: the position embedding is
    resampled to 16x16 patches, every other weight is the file's, and the tokens are the 256 patches."""
    reference = create_model("vit_small_patch14_reg4_dinov2")
    safetensors.torch.save_file(reference.state_dict(), tmp_path / "model.safetensors")
    encoder = encoders.timm(
        "vit_small_patch14_reg4_dinov2", weights_path=str(tmp_path / "model.safetensors"), img_size=224, input_size=224
    )
    assert encoder.backbone.pos_embed.shape == (1, 256, 384)
    assert torch.equal(encoder.backbone.reg_token, reference.reg_token)
    assert torch.equal(encoder.backbone.blocks[0].attn.qkv.weight, reference.blocks[0].attn.qkv.weight)
    tokens, pooled = encoder(torch.zeros(2, 1, 8, 8))
    assert tokens.shape == (2, 256, 384) and pooled.shape == (2, 384)
    with pytest.raises(FileNotFoundError, match="huggingface-cli download timm/vit_small_patch14_reg4_dinov2"):
        encoders.timm("vit_small_patch14_reg4_dinov2", weights_path=str(tmp_path / "missing.safetensors"))


def test_timm_pretrained_without_network_says_to_pass_weights_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"'resnet18' .* encoder.weights_path=<state dict file>"):
        encoders.timm("resnet18", pretrained=True)


def test_a_zoo_moco_checkpoint_round_trips(tmp_path: Path, make_config) -> None:
    cfg = make_config(
        "method=moco",
        "data.views=mocov2_noflip",
        "data.n_train=32",
        "data.batch_size=16",
        "method.queue_size=32",
        "net.width=4",
    )
    built = build(cfg)
    trainer = L.Trainer(
        max_epochs=1,
        limit_val_batches=0,
        callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(built.method, datamodule=built.datamodule)
    assert trainer.global_step == 2
    encoder = encoders.zoo(tmp_path / "ckpt" / "last.ckpt")
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        expected = built.method.eval().embed(x)
        tokens, pooled = encoder(x)
    assert torch.allclose(pooled, expected, atol=1e-6)
    assert tokens.shape == (5, 1, 32)


def test_a_checkpoint_of_the_wrong_kind_is_named(tmp_path: Path, make_config) -> None:
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match=r"plain.pt is not a zoo checkpoint .* method=moco"):
        encoders.zoo(tmp_path / "plain.pt")
    built = build(make_config("method=dae"))
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(built.method, datamodule=built.datamodule)
    trainer.save_checkpoint(tmp_path / "dae.ckpt")
    with pytest.raises(ValueError, match=r"dae.ckpt is a DAE checkpoint, which has no backbone"):
        encoders.zoo(tmp_path / "dae.ckpt")
    with pytest.raises(FileNotFoundError, match="encoder.ckpt=.*nothing.ckpt"):
        encoders.zoo(tmp_path / "nothing.ckpt")


def test_the_encoder_configs_instantiate(make_config) -> None:
    cfg = make_config("encoder=random")
    with open_dict(cfg):
        cfg.shape = [1, 8, 8]
    encoder = instantiate(cfg.encoder)
    assert isinstance(encoder, FrozenEncoder) and encoder(torch.zeros(2, 1, 8, 8))[1].shape == (2, 128)
    cfg = make_config("encoder=timm", "encoder.pretrained=false", "encoder.input_size=32")
    assert instantiate(cfg.encoder)(torch.zeros(1, 1, 8, 8))[1].shape == (1, 512)
    assert OmegaConf.is_missing(make_config("encoder=zoo").encoder, "ckpt")


def test_a_net_without_timm_feature_methods_is_refused() -> None:
    with pytest.raises(ValueError, match="Linear is not a timm-style net"):
        FrozenEncoder(torch.nn.Linear(2, 2))
