"""Callbacks for probing, statistics, samples and generative metrics; they import nothing from ``zoo``."""

from callbacks.detection import MemorizationDetector, detection_auc
from callbacks.features import extract_features
from callbacks.frechet_distance import frechet_floor, frechet_interval
from callbacks.generative_metrics import GenerativeMetrics, PixelFeatures, frechet_distance, kernel_distance
from callbacks.knn_probe import KNNProbe, knn_accuracy
from callbacks.linear_probe import LinearProbe, linear_probe_accuracy
from callbacks.memorization import memorization_ratio
from callbacks.noise_level_probe import NoiseLevelProbe, curve_shape
from callbacks.online_linear_probe import OnlineLinearProbe
from callbacks.precision_recall import precision_recall
from callbacks.probe_map import ProbeMap
from callbacks.reference_net import ReferenceNet
from callbacks.representation_stats import RepresentationStats
from callbacks.sample_grid import SampleGrid
from callbacks.shape_verdict import ShapeVerdict
from callbacks.weight_grid import WeightGrid, max_cosine_to_data, top_norm_rows

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
