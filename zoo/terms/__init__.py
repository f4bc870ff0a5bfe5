"""Loss terms a method adds to its main loss by config (``method.terms.<name>``), each with its own
parameters and its own logged value: LightningDiT's cosine-velocity term, REPA's alignment, ..."""

from zoo.terms.alignment import RepresentationAlignment
from zoo.terms.base import LossTerm, TermInputs
from zoo.terms.cosine_velocity import CosineVelocity

__all__ = ["CosineVelocity", "LossTerm", "RepresentationAlignment", "TermInputs"]
