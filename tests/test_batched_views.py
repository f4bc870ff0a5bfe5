"""The batched augmentations against torchvision's per-image transforms: the same arithmetic for given
parameters, and the same distribution of parameters and outputs on a fixed seed (two-sample
Kolmogorov-Smirnov statistics and binomial tolerances per transform)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import ks_2samp
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from datamodules.batched_views import (
    BatchedView,
    ColorJitter,
    crop_boxes,
    gaussian_blur,
    resized_crop,
    where_chosen,
)
from datamodules.batched_views import _hue as hue
from datamodules.views import batched_single_view, batched_two_views, two_views

N = 2000


def same_distribution(a, b, p_min: float = 1e-3) -> bool:
    """Two samples that a two-sample KS test does not tell apart at level ``p_min``."""
    return ks_2samp(torch.as_tensor(a).flatten().numpy(), torch.as_tensor(b).flatten().numpy()).pvalue > p_min


def binomial_close(hits: torch.Tensor, p: float, sigmas: float = 4.0) -> bool:
    """The share of ``hits`` within ``sigmas`` binomial standard deviations of ``p``."""
    n = hits.numel()
    return abs(hits.float().mean().item() - p) <= sigmas * math.sqrt(p * (1 - p) / n) + 1e-9


def proportions_close(a: torch.Tensor, b: torch.Tensor, sigmas: float = 4.0) -> bool:
    """The shares of two samples of hits within ``sigmas`` standard deviations of their difference."""
    pa, pb = a.float().mean().item(), b.float().mean().item()
    pooled = (pa + pb) / 2
    return abs(pa - pb) <= sigmas * math.sqrt(2 * pooled * (1 - pooled) / a.numel()) + 1e-9


def test_resized_crop_and_blur_equal_torchvisions_for_the_same_parameters() -> None:
    torch.manual_seed(0)
    images = torch.rand(6, 3, 16, 16)
    boxes = torch.tensor([[0, 0, 16, 16], [3, 5, 10, 9], [10, 2, 6, 13], [0, 0, 1, 1], [15, 15, 1, 1], [2, 0, 14, 16]])
    cropped = resized_crop(images, boxes)
    sigma = torch.tensor([0.1, 0.5, 1.0, 2.0, 1.5, 0.3])
    blurred = gaussian_blur(images, sigma, 5)
    shifted = hue(images, torch.linspace(-0.1, 0.1, 6).view(6, 1, 1, 1))
    for b, (top, left, height, width) in enumerate(boxes.tolist()):
        expected = TF.resized_crop(images[b], top, left, height, width, [16, 16], antialias=True)
        torch.testing.assert_close(cropped[b], expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(blurred[b], TF.gaussian_blur(images[b], [5, 5], [sigma[b].item()] * 2), atol=1e-6, rtol=0)
        torch.testing.assert_close(shifted[b], TF.adjust_hue(images[b], (b / 5 - 0.5) * 0.2), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("size", "scale"), [(8, (0.2, 1.0)), (32, (0.08, 1.0)), (224, (0.2, 1.0))])
def test_crop_boxes_follow_random_resized_crop(size: int, scale: tuple[float, float]) -> None:
    reference = v2.RandomResizedCrop(size, scale=scale)
    torch.manual_seed(0)
    image = torch.zeros(1, size, size)
    expected = torch.tensor(
        [[(p := reference.make_params([image]))["top"], p["left"], p["height"], p["width"]] for _ in range(N)]
    )
    boxes = crop_boxes(N, size, size, scale, (3 / 4, 4 / 3), image, torch.Generator().manual_seed(1))
    area = boxes[:, 2] * boxes[:, 3] / size**2
    assert same_distribution(area, expected[:, 2] * expected[:, 3] / size**2)
    assert same_distribution(boxes[:, 3] / boxes[:, 2], expected[:, 3] / expected[:, 2])
    assert same_distribution(boxes[:, 0], expected[:, 0]) and same_distribution(boxes[:, 1], expected[:, 1])
    assert (boxes[:, :2] >= 0).all() and (boxes[:, :2] + boxes[:, 2:] <= size).all()
    narrower = crop_boxes(N, size, size, (scale[0] + 0.1, 1.0), (3 / 4, 4 / 3), image, torch.Generator().manual_seed(1))
    assert not same_distribution(narrower[:, 2] * narrower[:, 3] / size**2, expected[:, 2] * expected[:, 3] / size**2)


def test_jitter_factors_span_their_ranges_and_apply_with_probability_p() -> None:
    gray = torch.full((N, 1, 4, 4), 0.5)
    generator = torch.Generator().manual_seed(2)
    brightened = ColorJitter(0.4, 0.0, 0.0, 0.0, p=0.8)(gray, generator)[:, 0, 0, 0] * 2
    changed = (brightened - 1).abs() > 1e-6
    assert binomial_close(changed, 0.8)
    factors = brightened[changed]
    assert 0.6 <= factors.min() < 0.61 and 1.39 < factors.max() <= 1.4
    assert same_distribution(factors, torch.empty(N).uniform_(0.6, 1.4, generator=generator))


@pytest.mark.parametrize("channels", [1, 3])
def test_color_jitter_outputs_match_torchvision_in_distribution(channels: int) -> None:
    torch.manual_seed(3)
    image = torch.rand(channels, 6, 6)
    hue_amount = 0.1 if channels == 3 else 0.0
    saturation = 0.4 if channels == 3 else 0.0
    reference = v2.RandomApply([v2.ColorJitter(0.4, 0.4, saturation, hue_amount)], p=0.8)
    expected = torch.stack([reference(image) for _ in range(N)])
    jittered = ColorJitter(0.4, 0.4, saturation, hue_amount, p=0.8)(image.expand(N, -1, -1, -1), torch.Generator().manual_seed(4))
    for statistic in (lambda x: x.mean(dim=(1, 2, 3)), lambda x: x.std(dim=(1, 2, 3)), lambda x: x[:, :, 0, 0]):
        assert same_distribution(statistic(jittered), statistic(expected))
    if channels == 3:
        hue_of = lambda x: TF.rgb_to_grayscale(x).mean(dim=(1, 2, 3)) / x.mean(dim=(1, 2, 3))  # noqa: E731
        assert same_distribution(hue_of(jittered), hue_of(expected))


def edges(n: int) -> torch.Tensor:
    """``n`` copies of a 1-channel checkerboard whose left half is brighter: blur, flips and
    solarization all show."""
    board = (torch.arange(8).view(1, 8) + torch.arange(8).view(8, 1)) % 2 * 0.6
    board[:, :4] += 0.3
    return board.expand(n, 1, 8, 8).clone()


@pytest.mark.parametrize(
    ("field", "value", "reference"),
    [
        ("blur_p", 0.5, v2.RandomApply([v2.GaussianBlur(3, (0.1, 2.0))], p=0.5)),
        ("blur_p", 0.1, v2.RandomApply([v2.GaussianBlur(3, (0.1, 2.0))], p=0.1)),
        ("solarize_p", 0.2, v2.RandomSolarize(0.5, p=0.2)),
        ("flip_p", 0.5, v2.RandomHorizontalFlip(0.5)),
    ],
)
def test_blur_solarize_and_flip_probabilities_and_effects_match(field: str, value: float, reference) -> None:
    settings = {"crop_scale": None, "jitter": None, "grayscale_p": 0.0, "blur_kernel": 3, "blur_p": 0.0,
                "solarize_p": 0.0, "flip_p": 0.0}
    view = BatchedView(**{**settings, field: value})
    images = edges(N)
    out = view(images, torch.Generator().manual_seed(5))
    torch.manual_seed(6)
    expected = torch.stack([reference(image) for image in images])
    change = (out - images).abs().amax(dim=(1, 2, 3))
    expected_change = (expected - images).abs().amax(dim=(1, 2, 3))
    assert proportions_close(change > 1e-4, expected_change > 1e-4)
    assert same_distribution(change, expected_change)
    if field == "blur_p":
        # A blur of sigma near 0.1 moves no pixel by 1e-4: the visible share is a little below p.
        assert 0.85 * value <= (change > 1e-4).float().mean() <= value
        assert same_distribution(change[change > 1e-4], expected_change[expected_change > 1e-4])
    else:
        assert binomial_close(change > 1e-4, value) and binomial_close(expected_change > 1e-4, value)


def test_grayscale_probability() -> None:
    colors = torch.rand(N, 3, 4, 4, generator=torch.Generator().manual_seed(7))
    view = BatchedView(None, None, grayscale_p=0.2, blur_kernel=3, blur_p=0.0, solarize_p=0.0, flip_p=0.0)
    out = view(colors, torch.Generator().manual_seed(8))
    gray = (out[:, 0] == out[:, 1]).all(dim=(1, 2)) & (out[:, 1] == out[:, 2]).all(dim=(1, 2))
    assert binomial_close(gray, 0.2)
    torch.testing.assert_close(out[gray][:, :1], TF.rgb_to_grayscale(colors[gray]), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("name", "shape"), [("mocov2", (3, 16, 16)), ("mocov3", (3, 16, 16)), ("mocov2_noflip", (1, 8, 8))])
def test_whole_recipes_match_the_per_image_pipelines_in_distribution(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(9)
    image = torch.rand(*shape)
    n = 800
    for per_image, batched in zip(two_views(name, shape), batched_two_views(name, shape), strict=True):
        expected = torch.stack([per_image(image) for _ in range(n)])
        out = batched(image.expand(n, -1, -1, -1), torch.Generator().manual_seed(10))
        assert out.shape == expected.shape and 0 <= out.min() and out.max() <= 1
        statistics = {
            "mean": lambda x: x.mean(dim=(1, 2, 3)),
            "std": lambda x: x.std(dim=(1, 2, 3)),
            "first channel": lambda x: x[:, 0].mean(dim=(1, 2)),
            "left column": lambda x: x[..., 0].mean(dim=(1, 2)),
            "top row": lambda x: x[..., 0, :].mean(dim=(1, 2)),
        }
        for statistic in statistics.values():
            assert same_distribution(statistic(out), statistic(expected))


def test_a_generator_fixes_the_views_and_the_single_view_flips() -> None:
    images = torch.rand(16, 3, 8, 8)
    first, second = batched_two_views("mocov3", (3, 8, 8))
    assert torch.equal(first(images, torch.Generator().manual_seed(0)), first(images, torch.Generator().manual_seed(0)))
    assert first != second and second.solarize_p == 0.2 and first.blur_p == 1.0
    flipped = batched_single_view("flip", (3, 8, 8))(images, torch.Generator().manual_seed(1))
    kept = (flipped == images).flatten(1).all(dim=1)
    assert kept.any() and (~kept).any() and torch.equal(flipped[~kept], images[~kept].flip(-1))
    assert batched_single_view(None, (3, 8, 8)) is None


def test_where_chosen_runs_the_op_on_the_chosen_rows_only() -> None:
    images = torch.zeros(4, 1, 2, 2)
    chosen = torch.tensor([True, False, True, False])
    sizes = []
    out = where_chosen(chosen, lambda x, f: sizes.append(len(x)) or x + f, images, torch.ones(4, 1, 1, 1))
    assert sizes == [2] and out[:, 0, 0, 0].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert where_chosen(torch.zeros(4, dtype=torch.bool), lambda x: x + 1, images) is images
