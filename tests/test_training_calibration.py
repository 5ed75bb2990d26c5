"""Calibration keeps the booster's order: no two different raw scores collapse onto one probability."""

from __future__ import annotations

import numpy as np
import pytest

from payroute.training.calibration import centred_knots, fit_isotonic


def test_centred_isotonic_is_strictly_increasing_and_calibrated():
    rng = np.random.default_rng(11)
    raw = rng.uniform(0.2, 0.95, 30_000)
    truth = raw**1.7  # a miscalibrated booster: the truth is a convex map of its score
    label = (rng.uniform(size=raw.size) < truth).astype(float)
    calibrator = fit_isotonic(raw, label)
    inside = np.sort(rng.uniform(0.21, 0.94, 2_000))
    mapped = calibrator.apply(inside)
    assert np.all(np.diff(mapped) > 0), "distinct scores must keep distinct, ordered probabilities"
    # Tolerance 0.02 on mean absolute error to the true map (seed 11, 30k rows).
    assert np.abs(mapped - inside**1.7).mean() < 0.02
    assert np.all((calibrator.apply(np.array([0.0, 1.0])) >= 0) & (calibrator.apply(np.array([0.0, 1.0])) <= 1))


def test_centred_knots_hand_computed():
    raw = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    fitted = np.array([0.0, 0.0, 0.5, 0.5, 1.0, 1.0])  # three PAVA blocks
    x, y = centred_knots(raw, fitted)
    # Centres 0.15, 0.35, 0.55; end slopes 2.5 extended to x=0 (clipped at 0) and x=1 (clipped at 1).
    assert x == pytest.approx([0.0, 0.15, 0.35, 0.55, 1.0])
    assert y == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])
