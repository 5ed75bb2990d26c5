"""Approval model quality, calibration, time split and reproducibility on a seeded synthetic table.

Synthetic table: 30,000 attempts, seed 11, a known logistic approval process (see
``payroute.training.synthetic``). Tolerances are stated next to each assertion.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from payroute.model_bundle import ModelBundle, file_sha256
from payroute.training.calibration import choose_calibrator
from payroute.training.dataset import data_hash, time_split
from payroute.training.metrics import expected_calibration_error, segment_rate_baseline
from payroute.training.pipeline import TrainingConfig, train_models
from payroute.training.synthetic import SYNTHETIC_SPEC, synthetic_training_table

SEED = 11
CONFIG = TrainingConfig(seed=SEED, num_boost_round=300, num_threads=1, progress=False)


@pytest.fixture(scope="module")
def table():
    return synthetic_training_table(30_000, seed=SEED)


@pytest.fixture(scope="module")
def result(table):
    return train_models(table, SYNTHETIC_SPEC, CONFIG)


def test_model_beats_segment_baseline_and_is_calibrated(result):
    m = result.metrics
    assert m["test_log_loss"] < m["baseline_segment_log_loss"] - 0.005  # margin: real gain, not noise
    assert m["test_auc"] > m["baseline_segment_auc"] + 0.02
    assert m["baseline_segment_log_loss"] < m["baseline_global_log_loss"]  # the baseline itself is sane
    assert m["test_ece"] < 0.02


def test_test_period_scores_close_to_truth(result):
    # The generating probabilities are known: the model's mean absolute error to them is small.
    error = np.abs(result.test_frame["p_model"] - result.test_frame["true_probability"]).mean()
    assert error < 0.04


def test_calibration_does_not_worsen_ece(result):
    # tolerance 0.003: calibration is fitted on validation data, ECE is measured on the test period
    assert result.metrics["test_ece"] <= result.metrics["test_uncalibrated_ece"] + 0.003


def test_calibration_repairs_a_miscalibrated_booster(table):
    # 20 slow rounds started from 0.5 instead of the base rate leave the booster underconfident
    # (mean prediction far below the 0.78 approval rate); calibration must repair it.
    underfit = TrainingConfig(
        seed=SEED, num_boost_round=20, num_threads=1, progress=False,
        approval_params={**CONFIG.approval_params, "boost_from_average": False},
    )
    m = train_models(table, SYNTHETIC_SPEC, underfit).metrics
    assert m["test_uncalibrated_ece"] > 0.08  # observed 0.105 at seed 11
    assert m["test_ece"] < m["test_uncalibrated_ece"] / 3  # observed 0.024: calibration removes >3/4 of it


@pytest.mark.parametrize(
    ("distortion", "expected_method"),
    [
        (lambda p: 1 / (1 + np.exp(-(2.0 * np.log(p / (1 - p)) + 0.5))), "platt"),  # a logistic distortion
        (lambda p: np.where(p < 0.5, 0.1, 0.9), "isotonic"),  # a step: Platt cannot fit it
    ],
)
def test_calibration_method_is_chosen_on_validation(distortion, expected_method):
    rng = np.random.default_rng(5)
    raw = rng.uniform(0.02, 0.98, 20_000)
    label = (rng.random(raw.size) < distortion(raw)).astype(float)
    choice = choose_calibrator(raw, label)
    assert choice.method == expected_method, choice.cv_log_loss


def test_same_data_and_seed_give_identical_model_files(table, result, tmp_path):
    again = train_models(table, SYNTHETIC_SPEC, CONFIG)
    first = result.write_bundle(tmp_path / "first")
    second = again.write_bundle(tmp_path / "second")
    manifest_files = ModelBundle.load(first).manifest["files"]
    assert len(manifest_files) == 5
    for name in manifest_files:
        assert file_sha256(first / name) == file_sha256(second / name), name
    assert again.data_hash == result.data_hash


def test_other_seed_gives_other_model(table, result):
    other = train_models(table, SYNTHETIC_SPEC, TrainingConfig(seed=SEED + 1, num_boost_round=300, num_threads=1, progress=False))
    assert other.approval.model_text != result.approval.model_text


def test_time_split_is_ordered_and_keeps_transactions_whole():
    frame = pd.DataFrame(
        {
            "transaction_id": ["a", "a", "b", "c", "c", "d", "e", "f", "g", "h"],
            "attempt": [1, 2, 1, 1, 2, 1, 1, 1, 1, 1],
            "timestamp": pd.to_datetime([0, 9, 1, 5, 6, 3, 4, 7, 8, 2], unit="h", utc=True),
            "label": 1,
        }
    ).sample(frac=1, random_state=0)
    split = time_split(frame, (0.4, 0.3, 0.3))
    parts = (split.train, split.validation, split.test)
    starts = [part.groupby("transaction_id")["timestamp"].min() for part in parts]
    assert starts[0].max() < starts[1].min() and starts[1].max() < starts[2].min()
    ids = [set(part["transaction_id"]) for part in parts]
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2]) and not (ids[0] & ids[2])
    assert sum(len(p) for p in parts) == len(frame)
    assert set(split.train["transaction_id"]) == {"a", "b", "h"}  # 4 of 10 rows: cut at the 5th start


@pytest.mark.parametrize("fractions", [(0.5, 0.5, 0.0), (0.6, 0.3, 0.3), (-0.1, 0.6, 0.5)])
def test_time_split_refuses_bad_fractions(fractions):
    frame = pd.DataFrame({"timestamp": pd.date_range("2026-01-01", periods=10, tz="UTC"), "label": 1})
    with pytest.raises(ValueError, match="fractions"):
        time_split(frame, fractions)


def test_segment_baseline_is_shrunk_segment_rate():
    train = pd.DataFrame({"psp": ["a"] * 20 + ["b"] * 20, "label": [1] * 20 + [0] * 20})
    rows = pd.DataFrame({"psp": ["a", "b", "zzz"]})
    # global 0.5; a: (20 + 20*0.5) / (20 + 20) = 0.75; b: 0.25; unseen: 0.5
    np.testing.assert_allclose(segment_rate_baseline(train, rows, ["psp"]), [0.75, 0.25, 0.5])


def test_ece_of_hand_computed_bins():
    # two bins: predicted 0.1 (observed 0/2), predicted 0.9 (observed 2/2) -> ECE = 0.5*0.1 + 0.5*0.1
    assert expected_calibration_error(np.array([0, 0, 1, 1]), np.array([0.1, 0.1, 0.9, 0.9])) == pytest.approx(0.1)


def test_data_hash_changes_with_content(table):
    changed = table.copy()
    changed.loc[5, "label"] = 1 - changed.loc[5, "label"]
    assert data_hash(changed) != data_hash(table)


def test_sample_keeps_whole_transactions_and_is_seeded():
    from payroute.training.workflow import sample_transactions

    frame = pd.DataFrame({"transaction_id": ["a", "a", "b", "c", "c", "c", "d"], "attempt": [1, 2, 1, 1, 2, 3, 1]})
    sampled = sample_transactions(frame, 2, seed=4)
    assert sampled["transaction_id"].nunique() == 2
    counts = frame["transaction_id"].value_counts()
    assert all(counts[t] == n for t, n in sampled["transaction_id"].value_counts().items())
    pd.testing.assert_frame_equal(sampled, sample_transactions(frame, 2, seed=4))
    assert sample_transactions(frame, None, seed=4) is frame


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"method": "beta"}, "method must be one of"),
        ({"folds": 1}, "folds must be an int >= 2"),
        ({"folds": 2.5}, "folds must be an int >= 2"),
    ],
)
def test_calibrator_parameters_are_validated_at_fit(params, message):
    from payroute.training.calibration import ApprovalCalibrator

    with pytest.raises(ValueError, match=message):
        ApprovalCalibrator(**params).fit(np.array([0.2, 0.8]), np.array([0.0, 1.0]))


def test_calibrator_with_a_fixed_method_fits_that_method():
    from payroute.training.calibration import ApprovalCalibrator

    rng = np.random.default_rng(2)
    raw = rng.uniform(0.05, 0.95, 4_000)
    label = (rng.random(raw.size) < raw).astype(float)
    fitted = ApprovalCalibrator(method="isotonic").fit(raw, label)
    assert fitted.calibrator_.method == "isotonic"
    assert np.all(np.diff(fitted.predict(np.sort(raw))) >= 0)  # monotone
