"""Callbacks for probing, statistics, samples and generative metrics; they import nothing from ``zoo``."""

from callbacks.features import extract_features
from callbacks.generative_metrics import GenerativeMetrics, frechet_distance, kernel_distance
from callbacks.knn_probe import KNNProbe, knn_accuracy
from callbacks.linear_probe import LinearProbe, linear_probe_accuracy
from callbacks.memorization import memorization_ratio
from callbacks.noise_level_probe import NoiseLevelProbe, curve_shape
from callbacks.online_linear_probe import OnlineLinearProbe
from callbacks.precision_recall import precision_recall
from callbacks.representation_stats import RepresentationStats
from callbacks.sample_grid import SampleGrid
from callbacks.weight_grid import WeightGrid, max_cosine_to_data, top_norm_rows

__all__ = [
    "GenerativeMetrics",
    "KNNProbe",
    "LinearProbe",
    "NoiseLevelProbe",
    "OnlineLinearProbe",
    "RepresentationStats",
    "SampleGrid",
    "WeightGrid",
    "curve_shape",
    "extract_features",
    "frechet_distance",
    "kernel_distance",
    "knn_accuracy",
    "linear_probe_accuracy",
    "max_cosine_to_data",
    "memorization_ratio",
    "precision_recall",
    "top_norm_rows",
]
