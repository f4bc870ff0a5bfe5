"""The paper recipes (conf/experiment/cifar10/, conf/experiment/imagenet256/) and the named net presets.

Every value a recipe or preset cites with ``# paper: <value> (<source>)`` is the value of its line and of the
composed config (nothing later overrides it). Every recipe runs two steps on the CPU through its own code path, on
files the tests write in the real formats (CIFAR-10's pickles, an image folder, a diffusers SD-VAE folder, timm's
DINOv2 safetensors), with overrides that only shrink sizes and steps (``SHRINK``) and name the inputs (``INPUTS``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
import yaml
from conftest import CONF, compose_config
from diffusers import AutoencoderKL
from hydra.utils import instantiate
from omegaconf import OmegaConf
from test_datamodules import write_cifar, write_image_folder
from timm import create_model

from zoo.app.train import main
from zoo.diffusion import EDM

RECIPES = sorted(
    p.relative_to(CONF / "experiment").with_suffix("").as_posix()
    for folder in ("cifar10", "imagenet256")
    for p in (CONF / "experiment" / folder).glob("*.yaml")
)
PRESETS = {
    **{f"net={p.stem}": ("net.", ["method=diffusion"]) for p in (CONF / "net").glob("*.yaml") if "defaults:" in p.read_text()},
    "method/net=kl_f16d32": ("method.net.", ["method=vavae"]),
    "method/decoder=vit_xl": ("method.decoder.", ["method=rae"]),
}
"""Named sizes: each option, the key its values sit under, and a method that takes it."""
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_]\w*):")
CITED = re.compile(r":\s*(?P<value>[^#]*?)\s*#\s*paper:\s*(?P<paper>[^(]+?)\s*\((?P<source>.+)\)\s*$")
DINOV2 = ("vit_base_patch14_dinov2.lvd142m", "vit_large_patch14_dinov2.lvd142m", "vit_base_patch14_reg4_dinov2.lvd142m")

# Overrides that only make a recipe small: sizes, counts and steps. Inputs (paths) are apart, in the tests below.
SHRINK_KEYS = {
    "trainer.max_steps", "data.batch_size", "data.n_train",
    "data.image_size", "data.num_workers", "net.depth", "net.width", "net.heads", "net.head_width", "net.head_depth",
    "net.layers", "net.block_out_channels", "net.layers_per_block", "net.attention_head_dim", "net.norm_groups",
    "net.bottleneck", "net.in_context_tokens", "net.in_context_start", "method.dim", "method.hidden",
    "method.decoder.width", "method.decoder.depth", "method.decoder.heads", "method.net.block_out_channels",
    "method.net.layers_per_block", "method.net.norm_groups", "method.net.latent_channels", "method.sampler.steps",
    "+encoder.depth", "+encoder.embed_dim", "+encoder.num_heads", "encoder.img_size", "encoder.input_size",
    "latents.shard_size", "latents.batch_size",
}
STEPS = ["trainer.max_steps=2", "data.batch_size=4", "data.n_train=8", "data.num_workers=0"]
PIXELS_32 = ["data.image_size=32"]
ENCODER = ["+encoder.depth=1", "+encoder.embed_dim=32", "+encoder.num_heads=2", "encoder.img_size=28",
           "encoder.input_size=28"]
NETS = {
    "dit": ["net.depth=4", "net.width=32", "net.heads=2"],
    "dit_dh_s": ["net.depth=1", "net.width=32", "net.heads=2", "net.head_width=64", "net.head_depth=1"],
    "unet_ddpmpp": ["net.block_out_channels=[16,16,16]", "net.layers_per_block=1", "net.attention_head_dim=8",
                    "net.norm_groups=8"],
    "resnet18_cifar": ["net.width=8", "net.layers=[1,1,1,1]"],
    "jit_b16": ["net.depth=2", "net.width=32", "net.heads=2", "net.bottleneck=8", "net.in_context_tokens=2",
                "net.in_context_start=1"],
}
SHRINK = {
    "cifar10/moco_v3": [*STEPS, *NETS["resnet18_cifar"], "method.dim=16", "method.hidden=32"],
    "cifar10/edm": [*STEPS, *NETS["unet_ddpmpp"], "method.sampler.steps=2"],
    "cifar10/ect": [*STEPS, *NETS["unet_ddpmpp"]],
    "cifar10/ict": [*STEPS, *NETS["unet_ddpmpp"]],
    "cifar10/ddae_probe": [],
    "imagenet256/repa_sit_b2": [*STEPS, *PIXELS_32, *NETS["dit"], *ENCODER, "method.sampler.steps=2"],
    "imagenet256/vavae_f16d32": [*STEPS, *PIXELS_32, *ENCODER, "method.net.block_out_channels=[8,8,8,8,8]",
                                 "method.net.layers_per_block=1", "method.net.norm_groups=8",
                                 "method.net.latent_channels=4"],
    "imagenet256/lightningdit_b1": ["trainer.max_steps=2", "data.batch_size=4", "data.num_workers=0", *NETS["dit"],
                                    "method.sampler.steps=2"],
    "imagenet256/rae_stage1": [*STEPS, *PIXELS_32, *ENCODER, "method.decoder.width=32", "method.decoder.depth=1",
                               "method.decoder.heads=2"],
    "imagenet256/rae_dit_dh_s": [*STEPS, *PIXELS_32, *NETS["dit_dh_s"], "method.sampler.steps=2"],
    "imagenet256/jit_b16": [*STEPS, *PIXELS_32, *NETS["jit_b16"], "method.sampler.steps=2"],
}


def as_value(text: str) -> Any:
    """A YAML scalar or list as written in a config or a comment (``1e-6`` is a float here too)."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def cited_values(path: Path) -> list[tuple[str, Any, Any, str]]:
    """``(dotted key, the line's value, the value its comment cites, the source)`` of every ``# paper:`` line."""
    stack: list[tuple[int, str]] = []
    cited = []
    for line in path.read_text().splitlines():
        key = KEY.match(line)
        if key is None:
            continue
        indent = len(key["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key["key"]))
        comment = CITED.search(line)
        if comment is not None:
            dotted = ".".join(name for _, name in stack)
            cited.append((dotted, as_value(comment["value"]), as_value(comment["paper"]), comment["source"]))
    return cited


def composed(cfg: Any, key: str) -> Any:
    value = OmegaConf.select(cfg, key, throw_on_missing=True)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def method_of(cfg: Any) -> str:
    """Which of the zoo's seven methods a composed recipe trains (REPA and JiT are presets of the diffusion method)."""
    kind = cfg.method._target_.rsplit(".", 1)[1]
    terms = cfg.method.get("terms") or {}
    if kind == "VAE":
        return "vavae" if "vf" in terms else "vae"
    if kind == "Diffusion" and "align" in terms:
        return "repa"
    if kind == "Diffusion" and cfg.net._target_.endswith("PixelViT"):
        return "jit"
    return kind.lower()


def test_there_are_recipes_for_all_seven_methods() -> None:
    assert len(RECIPES) >= 8 and set(SHRINK) == set(RECIPES), "every recipe needs its two-step run below"
    methods = {method_of(compose_config([f"experiment={recipe}"], Path("unused"))) for recipe in RECIPES}
    assert {"moco", "diffusion", "consistency", "repa", "vavae", "rae", "jit"} <= methods


@pytest.mark.parametrize("name", [*RECIPES, *PRESETS])
def test_cited_hyperparameters_are_the_configs(name: str, tmp_path: Path) -> None:
    """A recipe's or preset's ``# paper:`` values are on their lines and in the composed config; a recipe names the
    figure to reach and its command."""
    if name in PRESETS:
        group, option = name.split("=")
        prefix, method = PRESETS[name]
        path, overrides = CONF / group / f"{option}.yaml", [*method, name]
    else:
        path, prefix, overrides = CONF / "experiment" / f"{name}.yaml", "", [f"experiment={name}"]
        header = path.read_text()
        assert "# Figure to reach:" in header and "# Run: python run.py experiment=" in header
    cited = cited_values(path)
    assert cited, f"{path} cites no value of its paper"
    cfg = compose_config(overrides, tmp_path)
    for key, value, paper, source in cited:
        assert value == paper, f"{path}: {key} is {value!r} but its comment cites {paper!r} ({source})"
        assert composed(cfg, prefix + key) == paper, f"{path}: the composed {prefix + key} is not the cited {paper!r}"


# What each recipe's net sees at its real size (pixels, or the latents of its autoencoder), and its classes.
REAL_SHAPES = {
    "cifar10/moco_v3": ([3, 32, 32], 10), "cifar10/edm": ([3, 32, 32], 10), "cifar10/ect": ([3, 32, 32], 10),
    "cifar10/ict": ([3, 32, 32], 10), "imagenet256/repa_sit_b2": ([4, 32, 32], 1000),
    "imagenet256/lightningdit_b1": ([32, 16, 16], 1000), "imagenet256/rae_dit_dh_s": ([768, 16, 16], 1000),
    "imagenet256/jit_b16": ([3, 256, 256], 1000), "imagenet256/vavae_f16d32": ([3, 256, 256], 1000),
    "imagenet256/rae_stage1": ([3, 256, 256], 1000),
}
# Parameter counts the papers publish for these nets (DiT-B/2 as REPA cites it; JiT Table 7; ECT's README for DDPM++).
PUBLISHED_PARAMETERS = {"imagenet256/repa_sit_b2": 130e6, "imagenet256/jit_b16": 131e6, "cifar10/edm": 55.7e6}


@pytest.mark.parametrize("recipe", sorted(REAL_SHAPES))
def test_every_recipe_builds_its_nets_at_their_real_size(recipe: str, tmp_path: Path) -> None:
    """On the meta device (no memory, no time): the sizes a two-step tiny run never builds must fit together too
    (heads that divide widths, patches that tile the grid), and where the paper counts parameters, the count is
    within 10 % of it."""
    cfg = compose_config([f"experiment={recipe}"], tmp_path)
    cfg.shape, cfg.num_classes = REAL_SHAPES[recipe]
    with torch.device("meta"):
        if recipe == "imagenet256/vavae_f16d32":
            net = instantiate(cfg.method.net)
            assert net.encoder.conv_out.out_channels == 2 * 32
        elif recipe == "imagenet256/rae_stage1":
            net = instantiate(cfg.method.decoder)(grid=16, token_dim=768, image_size=256, out_channels=3)
        else:
            net = instantiate(cfg.net)
    count = sum(p.numel() for p in net.parameters())
    if recipe in PUBLISHED_PARAMETERS:
        assert count == pytest.approx(PUBLISHED_PARAMETERS[recipe], rel=0.1)


def test_a_cited_value_that_drifts_is_caught(tmp_path: Path) -> None:
    drifted = tmp_path / "drifted.yaml"
    drifted.write_text("method:\n  optimizer:\n    lr: 2.0e-4  # paper: 1.0e-4 (REPA train.py --learning-rate)\n")
    [(key, value, paper, source)] = cited_values(drifted)
    assert (key, value, paper, source) == ("method.optimizer.lr", 2e-4, 1e-4, "REPA train.py --learning-rate")


def test_the_papers_batch_is_split_over_devices_and_nodes(tmp_path: Path) -> None:
    recipe = "experiment=imagenet256/repa_sit_b2"
    assert compose_config([recipe], tmp_path).data.batch_size == 256
    assert compose_config([recipe, "trainer=ddp", "trainer.devices=8"], tmp_path).data.batch_size == 32
    assert compose_config([recipe, "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"], tmp_path).data.batch_size == 32
    with pytest.raises(Exception, match=r"global_batch_size=256 does not split over trainer.devices=3 .* = 3"):
        compose_config([recipe, "trainer=ddp", "trainer.devices=3"], tmp_path).data.batch_size  # noqa: B018
    with pytest.raises(Exception, match=r"global_batch_size=256 is split over trainer.devices, which is 'auto'"):
        compose_config([recipe, "trainer.devices=auto"], tmp_path).data.batch_size  # noqa: B018


def test_shrinking_overrides_touch_only_sizes_and_steps() -> None:
    for recipe, overrides in SHRINK.items():
        keys = {override.split("=", 1)[0] for override in overrides}
        assert keys <= SHRINK_KEYS, f"{recipe}: {sorted(keys - SHRINK_KEYS)} are not sizes or steps"


def test_ddae_noise_level_is_its_sigma_on_the_edm_schedule(tmp_path: Path) -> None:
    """DDAE's timestep 4 indexes EDM's 18-step Karras grid with a 0 appended, reversed (ddae model/EDM.py): sigma_14."""
    cfg = compose_config(["experiment=cifar10/ddae_probe"], tmp_path)
    sigmas = (80 ** (1 / 7) + torch.arange(18, dtype=torch.float64) / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert float(EDM().b(torch.tensor([cfg.probe.t], dtype=torch.float64))) == pytest.approx(float(sigmas[14]), rel=1e-3)


# --- two steps of every recipe ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """CIFAR-10's pickles, an image folder, and the weights folder: an SD-VAE (f8, 3 channels) in diffusers' layout
    and the three DINOv2 safetensors of timm's names, at the tiny sizes of ``ENCODER``."""
    root = tmp_path_factory.mktemp("recipe_inputs")
    write_cifar(root / "cifar")
    write_image_folder(root / "images")
    weights = root / "weights"
    torch.manual_seed(0)
    AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4,
        norm_num_groups=8, sample_size=32,
    ).save_pretrained(weights / "sd-vae-ft-mse")
    for name in DINOV2:
        (weights / name).mkdir(parents=True)
        model = create_model(name, depth=1, embed_dim=32, num_heads=2, img_size=28)
        safetensors.torch.save_file(model.state_dict(), weights / name / "model.safetensors")
    return {"cifar": root / "cifar", "images": root / "images", "weights": weights}


def run(recipe: str, out: Path, *inputs: str) -> Path:
    main(compose_config([f"experiment={recipe}", *SHRINK[recipe], *inputs], out))
    return out


def cifar(paths: dict[str, Path]) -> list[str]:
    return [f"data.root={paths['cifar']}"]


def images(paths: dict[str, Path]) -> list[str]:
    return [f"data.root={paths['images']}", f"paths.weights_dir={paths['weights']}"]


@pytest.fixture(scope="module")
def edm_run(inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run("cifar10/edm", tmp_path_factory.mktemp("edm"), *cifar(inputs))


@pytest.mark.parametrize("recipe", ["cifar10/moco_v3", "cifar10/ict", "imagenet256/repa_sit_b2",
                                    "imagenet256/jit_b16"])
def test_a_recipe_trains_two_steps_at_tiny_width(recipe: str, inputs: dict[str, Path], tmp_path: Path) -> None:
    data = cifar(inputs) if recipe.startswith("cifar10/") else images(inputs)
    out = run(recipe, tmp_path / "run", *data)
    assert (out / "checkpoints" / "last.ckpt").is_file()


def test_edm_then_ddae_probing_and_ect_from_its_checkpoint(edm_run: Path, inputs: dict[str, Path], tmp_path: Path) -> None:
    ckpt = edm_run / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] == 2
    probe = run("cifar10/ddae_probe", tmp_path / "probe", *cifar(inputs), f"ckpt={ckpt}")
    assert (probe / "metrics.json").is_file()
    ect = run("cifar10/ect", tmp_path / "ect", *cifar(inputs), f"method.init={ckpt}")
    assert (ect / "checkpoints" / "last.ckpt").is_file()


def test_vavae_then_extracted_latents_then_lightningdit(inputs: dict[str, Path], tmp_path: Path) -> None:
    vavae = run("imagenet256/vavae_f16d32", tmp_path / "vavae", *images(inputs)) / "checkpoints" / "last.ckpt"
    extraction = tmp_path / "latents"
    main(compose_config(["task=extract_latents", "data=image_folder", f"data.root={inputs['images']}",
                         "data.image_size=32", f"autoencoder={vavae}"], extraction))
    out = run("imagenet256/lightningdit_b1", tmp_path / "dit", f"autoencoder={vavae}", f"data.root={extraction}")
    assert (out / "metrics.json").is_file()


def test_rae_stage_one_then_dit_dh_on_its_tokens(inputs: dict[str, Path], tmp_path: Path) -> None:
    rae = run("imagenet256/rae_stage1", tmp_path / "rae", *images(inputs)) / "checkpoints" / "last.ckpt"
    out = run("imagenet256/rae_dit_dh_s", tmp_path / "dit", *images(inputs), f"autoencoder={rae}")
    assert (out / "metrics.json").is_file()


def test_a_missing_pretrained_file_names_its_download(inputs: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "no_weights"
    empty.mkdir()
    overrides = [*SHRINK["imagenet256/repa_sit_b2"], f"data.root={inputs['images']}", f"paths.weights_dir={empty}"]
    with pytest.raises(Exception, match="huggingface-cli download"):
        main(compose_config(["experiment=imagenet256/repa_sit_b2", *overrides], tmp_path / "run"))
