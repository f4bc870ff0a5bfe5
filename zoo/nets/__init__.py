"""Backbones, independent of any method, each built from plain arguments."""
