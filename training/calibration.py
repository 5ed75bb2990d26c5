"""Calibration of raw approval probabilities: isotonic or Platt, chosen by cross-validation on validation data.

The booster never trains on validation rows (they only stop its boosting), so the calibrator is fitted on
data the booster did not fit. The method is chosen by K contiguous (time-ordered) folds of the validation
period: each candidate is fitted on K−1 folds and scored by log loss on the held-out fold; the lower mean
wins (ties go to Platt, the simpler map), then the winner is refitted on the whole validation period.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from payroute.model_bundle import Calibrator
from payroute.training.metrics import log_loss_safe

CALIBRATION_METHODS: tuple[str, ...] = ("platt", "isotonic")


def _logit(probability: np.ndarray) -> np.ndarray:
    p = np.clip(probability, 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def fit_platt(raw_probability: np.ndarray, label: np.ndarray) -> Calibrator:
    """Logistic regression of the label on logit(raw): ``sigmoid(a·logit + b)``, practically unregularised."""
    model = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(raw_probability)[:, None], label)
    return Calibrator("platt", {"a": float(model.coef_[0, 0]), "b": float(model.intercept_[0])})


def fit_isotonic(raw_probability: np.ndarray, label: np.ndarray) -> Calibrator:
    """Centred isotonic regression: PAVA's blocks reduced to knots at their centres, linear between.

    Plain isotonic regression is a step function: every raw score inside one block maps to the same
    probability, so PSPs the booster tells apart would tie after calibration and the ranker could no
    longer order them. Centred isotonic regression (Oron & Flournoy, 2017) keeps each block's mean
    at the block's centre and interpolates between centres, so the map is strictly increasing and
    the booster's order survives; beyond the outer centres the end slopes continue, clipped to [0, 1].
    """
    raw = np.asarray(raw_probability, dtype=float)
    model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, label)
    x_knots, y_knots = centred_knots(raw, model.predict(raw))
    return Calibrator("isotonic", {"x_thresholds": x_knots, "y_thresholds": y_knots})


def centred_knots(raw: np.ndarray, fitted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots (x = mean raw score of each isotonic block, y = its fitted value), extended to x = 0 and 1."""
    order = np.argsort(raw, kind="stable")
    x, y = raw[order], fitted[order]
    starts = np.flatnonzero(np.r_[True, np.diff(y) != 0])
    counts = np.diff(np.r_[starts, len(y)])
    x_knots = np.add.reduceat(x, starts) / counts
    y_knots = y[starts]
    if len(x_knots) == 1:
        return np.array([0.0, 1.0]), np.repeat(y_knots, 2)
    low_slope = (y_knots[1] - y_knots[0]) / max(x_knots[1] - x_knots[0], 1e-12)
    high_slope = (y_knots[-1] - y_knots[-2]) / max(x_knots[-1] - x_knots[-2], 1e-12)
    low = np.clip(y_knots[0] - low_slope * x_knots[0], 0.0, y_knots[0])
    high = np.clip(y_knots[-1] + high_slope * (1.0 - x_knots[-1]), y_knots[-1], 1.0)
    x_all = np.r_[0.0, x_knots, 1.0]
    y_all = np.r_[low, y_knots, high]
    keep = np.r_[True, np.diff(x_all) > 0]  # a knot at exactly 0 or 1 is kept once
    return x_all[keep], y_all[keep]


FITTERS = {"platt": fit_platt, "isotonic": fit_isotonic}


@dataclass(frozen=True)
class CalibrationChoice:
    calibrator: Calibrator
    cv_log_loss: dict[str, float]  # method -> mean held-out log loss

    @property
    def method(self) -> str:
        return self.calibrator.method


def choose_calibrator(raw_probability: np.ndarray, label: np.ndarray, folds: int = 5) -> CalibrationChoice:
    """Pick isotonic or Platt by time-ordered K-fold log loss on validation rows, refit the winner on all."""
    raw_probability = np.asarray(raw_probability, dtype=float)
    label = np.asarray(label, dtype=float)
    bounds = np.linspace(0, len(label), folds + 1).astype(int)
    scores: dict[str, float] = {}
    for method in CALIBRATION_METHODS:
        losses = []
        for k in range(folds):
            held = np.zeros(len(label), dtype=bool)
            held[bounds[k] : bounds[k + 1]] = True
            if held.all() or len(np.unique(label[~held])) < 2:
                continue
            fitted = FITTERS[method](raw_probability[~held], label[~held])
            losses.append(log_loss_safe(label[held], fitted.apply(raw_probability[held])))
        scores[method] = float(np.mean(losses)) if losses else float("inf")
    best = min(CALIBRATION_METHODS, key=lambda m: (scores[m], m != "platt"))
    return CalibrationChoice(FITTERS[best](raw_probability, label), scores)


class ApprovalCalibrator:
    """scikit-learn-style wrapper: ``fit(raw, label)`` chooses (``method="auto"``) or fits one map.

    Learned state: ``calibrator_`` (a JSON-serialisable :class:`Calibrator`), ``cv_log_loss_``.
    """

    _parameter_constraints = {"method": ("auto", *CALIBRATION_METHODS), "folds": "int >= 2"}

    def __init__(self, *, method: str = "auto", folds: int = 5) -> None:
        self.method = method
        self.folds = folds

    def fit(self, raw_probability: np.ndarray, label: np.ndarray) -> "ApprovalCalibrator":
        if self.method not in self._parameter_constraints["method"]:
            raise ValueError(f"method must be one of {self._parameter_constraints['method']}, got {self.method!r}")
        if not isinstance(self.folds, int) or self.folds < 2:
            raise ValueError(f"folds must be an int >= 2, got {self.folds!r}")
        raw_probability = np.asarray(raw_probability, dtype=float)
        label = np.asarray(label, dtype=float)
        if raw_probability.shape != label.shape or raw_probability.ndim != 1:
            raise ValueError("raw_probability and label must be 1-D arrays of the same length")
        if self.method == "auto":
            choice = choose_calibrator(raw_probability, label, folds=self.folds)
            self.calibrator_, self.cv_log_loss_ = choice.calibrator, choice.cv_log_loss
        else:
            self.calibrator_, self.cv_log_loss_ = FITTERS[self.method](raw_probability, label), {}
        return self

    def predict(self, raw_probability: np.ndarray) -> np.ndarray:
        return self.calibrator_.apply(raw_probability)
