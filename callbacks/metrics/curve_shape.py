"""The shape of a probe-accuracy curve over noise levels by a tolerance: unimodal, monotone or neither.

``callbacks.NoiseLevelProbe`` logs it; ``callbacks.metrics.shape_verdict`` decides the same question by a
bootstrap test instead of a tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence


def curve_shape(levels: Sequence[float], accuracies: Sequence[float], tolerance: float = 0.02) -> str:
    """``"unimodal"``, ``"monotone"`` or ``"neither"`` for accuracies at noise levels (1 = data).

    With accuracies ordered from the noisiest level to the cleanest, ``peak`` their maximum:

    - unimodal: the peak is at neither end, and exceeds both the cleanest and the noisiest level's
      accuracy by more than ``tolerance``;
    - monotone (decreasing toward noise): the cleanest level is within ``tolerance`` of the peak, no
      step toward noise raises accuracy by more than ``tolerance``, and the cleanest level beats the
      noisiest by more than ``tolerance``;
    - neither: anything else (a flat curve, a peak at the noisiest end, a zig-zag).
    """
    if len(levels) != len(accuracies):
        raise ValueError(f"{len(levels)} levels but {len(accuracies)} accuracies")
    if len(levels) < 3:
        raise ValueError(f"a curve shape needs at least 3 levels, got {len(levels)}")
    if tolerance < 0:
        raise ValueError(f"tolerance={tolerance} must be >= 0")
    curve = [accuracy for _, accuracy in sorted(zip(levels, accuracies))]
    peak = max(curve)
    noisiest, cleanest = curve[0], curve[-1]
    inside = curve.index(peak) not in (0, len(curve) - 1)
    if inside and peak - cleanest > tolerance and peak - noisiest > tolerance:
        return "unimodal"
    no_rise_toward_noise = all(noisier <= cleaner + tolerance for noisier, cleaner in zip(curve, curve[1:]))
    if peak - cleanest <= tolerance and no_rise_toward_noise and cleanest - noisiest > tolerance:
        return "monotone"
    return "neither"
