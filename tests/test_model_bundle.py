"""The exported bundle: round trip, hash verification with errors naming the file, encoding, calibrators, rule cost."""

from __future__ import annotations

import json
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from sklearn.isotonic import IsotonicRegression

from payroute.catalog import attempt_cost, load_catalog
from payroute.model_bundle import (
    APPROVAL_MODEL_FILE,
    CALIBRATOR_FILE,
    FEATURE_SPEC_FILE,
    MANIFEST_FILE,
    BundleError,
    Calibrator,
    FeatureLayout,
    ModelBundle,
    cost_model_file,
    encode_features,
    export_bundle,
    rule_cost_eur,
)
from payroute.training.pipeline import TrainingConfig, train_models
from payroute.training.synthetic import SYNTHETIC_SPEC, synthetic_training_table


@pytest.fixture(scope="module")
def trained():
    table = synthetic_training_table(8_000, seed=3)
    return train_models(table, SYNTHETIC_SPEC, TrainingConfig(seed=3, num_boost_round=60, num_threads=1, progress=False))


@pytest.fixture()
def bundle_dir(trained, tmp_path):
    return trained.write_bundle(tmp_path / "bundle", version="7")


def test_round_trip_gives_identical_predictions(trained, bundle_dir):
    bundle = ModelBundle.load(bundle_dir)
    expected = trained.calibrator.apply(trained.test_frame["p_raw"].to_numpy())
    assert bundle.version == "7"
    assert bundle.feature_names == SYNTHETIC_SPEC.feature_names
    np.testing.assert_array_equal(bundle.predict_approval(trained.test_frame), expected)
    np.testing.assert_array_equal(bundle.predict_approval(trained.test_frame), trained.test_frame["p_model"].to_numpy())
    assert set(bundle.predict_cost(trained.test_frame).columns) == {"chargeback_eur", "fee_deviation_eur"}


def test_export_stamps_version_and_stays_verifiable(bundle_dir, tmp_path):
    exported = export_bundle(bundle_dir, tmp_path / "models" / "champion", version="12")
    assert ModelBundle.load(exported).version == "12"


def _delete(path):
    path.unlink()


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_text(path.read_text()[:40])


@pytest.mark.parametrize(
    ("file_name", "damage", "message"),
    [
        (APPROVAL_MODEL_FILE, _delete, "bundle file is missing"),
        (APPROVAL_MODEL_FILE, _flip_byte, "bundle file is corrupt"),
        (CALIBRATOR_FILE, _delete, "bundle file is missing"),
        (CALIBRATOR_FILE, _truncate, "bundle file is corrupt"),
        (FEATURE_SPEC_FILE, _flip_byte, "bundle file is corrupt"),
        (cost_model_file("chargeback_eur"), _delete, "bundle file is missing"),
        (MANIFEST_FILE, _delete, "bundle file is missing"),
        (MANIFEST_FILE, _truncate, "not readable JSON"),
    ],
)
def test_damaged_bundle_names_the_file(bundle_dir, file_name, damage, message):
    damage(bundle_dir / file_name)
    with pytest.raises(BundleError, match=message) as error:
        ModelBundle.load(bundle_dir)
    assert file_name in str(error.value)


def test_unsupported_format_version_is_refused(bundle_dir):
    manifest = json.loads((bundle_dir / MANIFEST_FILE).read_text())
    manifest["format_version"] = 99
    (bundle_dir / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format_version 99"):
        ModelBundle.load(bundle_dir)


def test_bundle_holds_no_pickle(bundle_dir):
    for path in bundle_dir.iterdir():
        assert not path.read_bytes().startswith(b"\x80"), f"{path.name} looks like a pickle"
        path.read_text()  # every file is text


LAYOUT = FeatureLayout(("psp", "amount"), ("psp",), {"psp": ("a", "b")})


@pytest.mark.parametrize(
    ("psp", "amount", "expected"),
    [
        ("a", 1.5, [0.0, 1.5]),
        ("b", 2.0, [1.0, 2.0]),
        ("unseen", 3.0, [np.nan, 3.0]),
        (None, None, [np.nan, np.nan]),
    ],
)
def test_encode_features(psp, amount, expected):
    frame = pd.DataFrame({"psp": [psp], "amount": [amount], "ignored": ["x"]})
    np.testing.assert_array_equal(encode_features(frame, LAYOUT)[0], expected)


def test_encode_features_names_missing_column():
    with pytest.raises(KeyError, match="amount"):
        encode_features(pd.DataFrame({"psp": ["a"]}), LAYOUT)


def test_isotonic_calibrator_matches_scikit_learn_after_json_round_trip():
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.05, 0.95, 2_000)
    label = (rng.random(2_000) < raw**2).astype(float)
    model = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(raw, label)
    calibrator = Calibrator("isotonic", {"x_thresholds": model.X_thresholds_, "y_thresholds": model.y_thresholds_})
    restored = Calibrator.from_json(json.loads(json.dumps(calibrator.to_json())))
    grid = np.linspace(0, 1, 101)
    expected = np.clip(model.predict(grid), 1e-4, 1 - 1e-4)
    np.testing.assert_allclose(restored.apply(grid), expected, atol=1e-12)


def test_platt_calibrator_formula():
    calibrator = Calibrator("platt", {"a": 2.0, "b": -1.0})
    # logit(0.5) = 0 -> sigmoid(-1) ; logit(0.8) = ln 4 -> sigmoid(2 ln 4 - 1) = 16 / (16 + e)
    np.testing.assert_allclose(
        calibrator.apply(np.array([0.5, 0.8])), [1 / (1 + np.e), 16 / (16 + np.e)], rtol=1e-12
    )


CATALOG = load_catalog()


@pytest.mark.parametrize(
    ("psp", "amount", "currency", "status"),
    [
        ("euroacq", "100.00", "EUR", "approved"),
        ("euroacq", "250.00", "GBP", "approved"),  # GBP not settled by euroacq: FX markup
        ("euroacq", "250.00", "GBP", "declined"),
        ("latamconnect", "900.00", "BRL", "approved"),
        ("globalpay", "5000", "INR", "approved"),
    ],
)
def test_rule_cost_matches_the_one_fee_rule(psp, amount, currency, status):
    expected = attempt_cost(CATALOG, psp, Decimal(amount), currency, status).total_eur
    got = rule_cost_eur(CATALOG, [psp], np.array([float(amount)]), [currency], float(status == "approved"))
    assert got[0] == pytest.approx(float(expected), abs=2e-4)
