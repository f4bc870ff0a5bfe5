"""Linear-probe accuracy: a multinomial logistic regression on frozen features (the standard SSL protocol).

Features standardised with the train split's statistics, then full-batch L-BFGS in float64 on the
L2-regularised cross-entropy ``mean_i CE(W z_i + b, y_i) + weight_decay / 2 * ||W||^2`` from a zero
start (convex, so the start does not matter). ``callbacks.LinearProbe`` is the callback.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from callbacks.features import labeled


def standardize(train: Tensor, *others: Tensor) -> list[Tensor]:
    """Centre and scale every tensor by the per-feature mean and std of ``train`` (float64).

    Constant features (std 0) are only centred.
    """
    train = train.double()
    mean, std = train.mean(0), train.std(0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return [(t.double() - mean) / std for t in (train, *others)]


def fit_logistic_regression(
    features: Tensor, labels: Tensor, num_classes: int, weight_decay: float = 1e-4, max_iter: int = 100
) -> tuple[Tensor, Tensor]:
    """``(W F x C, b C)`` minimising ``mean CE(features @ W + b, labels) + weight_decay / 2 * ||W||^2``.

    Multinomial logistic regression by full-batch L-BFGS (strong Wolfe line search, at most ``max_iter``
    iterations, scikit-learn's default 100) in float64 on the CPU from zeros: deterministic for given
    inputs. Runs with autograd on even inside ``torch.inference_mode`` (Lightning's validation).
    """
    with torch.inference_mode(False), torch.enable_grad():
        x = features.double().cpu().clone()
        y = labels.long().cpu().clone()
        weight = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS(
            [weight, bias],
            lr=1.0,
            max_iter=max_iter,
            tolerance_grad=1e-10,
            tolerance_change=1e-12,
            history_size=20,
            line_search_fn="strong_wolfe",
        )

        def closure() -> Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(x @ weight + bias, y) + 0.5 * weight_decay * weight.pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
    return weight.detach(), bias.detach()


def linear_probe_accuracy(
    train_feats: Tensor,
    train_y: Tensor,
    val_feats: Tensor,
    val_y: Tensor,
    weight_decay: float = 1e-4,
    max_iter: int = 100,
    num_classes: int | None = None,
) -> float:
    """Top-1 accuracy on ``val`` of a logistic regression fitted on ``train`` (labels -1 are dropped).

    Features are standardised with the train split's mean and std, then ``fit_logistic_regression``.
    ``num_classes`` defaults to one more than the largest label seen.
    """
    correct = linear_probe_correct(train_feats, train_y, val_feats, val_y, weight_decay, max_iter, num_classes)
    return correct.double().mean().item()


def linear_probe_correct(
    train_feats: Tensor,
    train_y: Tensor,
    val_feats: Tensor,
    val_y: Tensor,
    weight_decay: float = 1e-4,
    max_iter: int = 100,
    num_classes: int | None = None,
) -> Tensor:
    """Per labeled val sample, whether ``linear_probe_accuracy``'s classifier is right: a bool ``[N_val labeled]``."""
    if weight_decay < 0:
        raise ValueError(f"weight_decay={weight_decay} must be >= 0")
    train_feats, train_y = labeled(train_feats, train_y, "train", "linear_probe_correct")
    val_feats, val_y = labeled(val_feats, val_y, "val", "linear_probe_correct")
    classes = num_classes or int(max(train_y.max(), val_y.max())) + 1
    train_z, val_z = standardize(train_feats, val_feats)
    weight, bias = fit_logistic_regression(train_z, train_y, classes, weight_decay, max_iter)
    return (val_z @ weight + bias).argmax(1).eq(val_y.cpu())
