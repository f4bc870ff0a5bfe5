"""Percentile intervals of probe accuracies and of their contrasts, paired over images and seeds."""

from __future__ import annotations

import pytest
import torch

from callbacks.metrics.hierarchical_bootstrap import accuracy_intervals
from callbacks.metrics.knn import knn_accuracy, knn_correct
from callbacks.metrics.linear import linear_probe_accuracy, linear_probe_correct


def bernoulli(p: float, n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, generator=torch.Generator().manual_seed(seed)) < p


def test_rows_hold_their_mean_and_contrasts_are_the_difference_of_means() -> None:
    a, b = bernoulli(0.8, 2000, 0), bernoulli(0.7, 2000, 1)
    table = accuracy_intervals([{"a": a, "b": b}], {"a-b": {"a": 1, "b": -1}}, n_bootstrap=500)
    assert table["a"]["acc"] == pytest.approx(a.double().mean().item())
    assert table["a"]["lo"] < table["a"]["acc"] < table["a"]["hi"]
    assert table["a-b"]["acc"] == pytest.approx(table["a"]["acc"] - table["b"]["acc"])
    assert table["a-b"]["lo"] > 0, "0.8 against 0.7 on 2,000 images is resolved"


def test_a_contrast_is_paired_over_the_same_images() -> None:
    """Two rows right on nearly the same images: the paired difference is much tighter than either row."""
    a = bernoulli(0.75, 1000, 0)
    b = a.clone()
    b[:10] = ~b[:10]
    table = accuracy_intervals([{"a": a, "b": b}], {"a-b": {"a": 1, "b": -1}}, n_bootstrap=500)
    row_width = table["a"]["hi"] - table["a"]["lo"]
    assert table["a-b"]["hi"] - table["a-b"]["lo"] < row_width / 4


def test_seeds_widen_the_interval_when_they_disagree() -> None:
    same = [{"a": bernoulli(0.7, 1000, 0)} for _ in range(3)]
    apart = [{"a": bernoulli(p, 1000, s)} for s, p in enumerate((0.6, 0.7, 0.8))]
    width = {name: (t := accuracy_intervals(c, n_bootstrap=500)["a"])["hi"] - t["lo"] for name, c in
             (("same", same), ("apart", apart))}
    assert width["apart"] > 2 * width["same"]


def test_bad_inputs_are_named() -> None:
    a = bernoulli(0.5, 10, 0)
    with pytest.raises(ValueError, match="at least one seed"):
        accuracy_intervals([])
    with pytest.raises(ValueError, match="same rows"):
        accuracy_intervals([{"a": a}, {"b": a}])
    with pytest.raises(ValueError, match="same images"):
        accuracy_intervals([{"a": a, "b": a[:5]}])
    with pytest.raises(ValueError, match=r"contrasts \['x'\]"):
        accuracy_intervals([{"a": a}], {"x": {"a": 1, "c": -1}})


def test_per_image_correctness_averages_to_the_probe_accuracy() -> None:
    generator = torch.Generator().manual_seed(0)
    train, test = torch.randn(200, 8, generator=generator), torch.randn(100, 8, generator=generator)
    train_y, test_y = (train[:, 0] > 0).long(), (test[:, 0] > 0).long()
    test_y[:3] = -1  # unlabeled images are dropped by both
    knn = knn_correct(train, train_y, test, test_y, k=5)
    linear = linear_probe_correct(train, train_y, test, test_y)
    assert knn.dtype == torch.bool and knn.shape == linear.shape == (97,)
    assert knn.double().mean().item() == pytest.approx(knn_accuracy(train, train_y, test, test_y, k=5))
    assert linear.double().mean().item() == pytest.approx(linear_probe_accuracy(train, train_y, test, test_y))
