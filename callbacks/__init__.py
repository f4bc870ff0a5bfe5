"""Callbacks for probing, statistics, samples and generative metrics; they import nothing from ``zoo``."""
