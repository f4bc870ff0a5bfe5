"""The zoo's Hydra configs, shipped as package data so that an installed zoo finds them at ``pkg://conf``."""
