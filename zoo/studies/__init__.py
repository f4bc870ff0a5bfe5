"""Studies whose table needs more than ``zoo.study``: baselines scored beside the trained runs."""
