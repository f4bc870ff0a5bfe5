"""Studies whose table needs more than ``zoo.app.study``: baselines scored beside the trained runs."""
