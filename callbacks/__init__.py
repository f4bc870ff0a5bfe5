"""Callbacks for probing, statistics, samples and generative metrics; they import nothing from ``zoo``.

By kind: the Lightning callbacks are the modules of this package (probes, statistics, sample and weight
grids, generative metrics, the membership detector); ``callbacks.metrics`` holds the metrics they
compute as plain functions (and the reference classifier of the generative metrics), which the zoo's
studies and other projects call directly; ``callbacks.training`` the training infrastructure (EMA, finite
checkpoints, RNG state, atomic and verified files). ``protocols``, ``features``, ``progress`` and ``figures``
are what the callbacks share: the two protocols, feature extraction across ranks, progress bars for work
outside Lightning's loops, and figure logging; ``sample_count`` is the generative metrics' ``n_samples=auto``.
"""

from callbacks.detection import MemorizationDetector
from callbacks.features import extract_features
from callbacks.generative_metrics import GenerativeMetrics, PixelFeatures
from callbacks.knn_probe import KNNProbe
from callbacks.linear_probe import LinearProbe
from callbacks.metrics.curve_shape import curve_shape
from callbacks.metrics.detection import detection_auc
from callbacks.metrics.frechet_distance import frechet_distance, frechet_floor, frechet_interval
from callbacks.metrics.kernel_distance import kernel_distance
from callbacks.metrics.knn import knn_accuracy
from callbacks.metrics.linear import linear_probe_accuracy
from callbacks.metrics.memorization import memorization_ratio
from callbacks.metrics.precision_recall import precision_recall
from callbacks.metrics.reference_net import ReferenceNet
from callbacks.metrics.shape_verdict import ShapeVerdict
from callbacks.metrics.weights import max_cosine_to_data, top_norm_rows
from callbacks.noise_level_probe import NoiseLevelProbe
from callbacks.online_linear_probe import OnlineLinearProbe
from callbacks.probe_map import ProbeMap
from callbacks.representation_stats import RepresentationStats
from callbacks.sample_grid import SampleGrid
from callbacks.weight_grid import WeightGrid

__all__ = [
    "GenerativeMetrics",
    "KNNProbe",
    "LinearProbe",
    "MemorizationDetector",
    "NoiseLevelProbe",
    "OnlineLinearProbe",
    "PixelFeatures",
    "ProbeMap",
    "ReferenceNet",
    "RepresentationStats",
    "SampleGrid",
    "ShapeVerdict",
    "WeightGrid",
    "curve_shape",
    "detection_auc",
    "extract_features",
    "frechet_distance",
    "frechet_floor",
    "frechet_interval",
    "kernel_distance",
    "knn_accuracy",
    "linear_probe_accuracy",
    "max_cosine_to_data",
    "memorization_ratio",
    "precision_recall",
    "top_norm_rows",
]
