"""MLflow tracking, registry and promotion gate against a real SQLite store in a tmp folder."""

from __future__ import annotations

import numpy as np
import pytest

from payroute.model_bundle import CHAMPION_ALIAS, REGISTERED_MODEL_NAME, ModelBundle, load_champion
from payroute.training.pipeline import TrainingConfig, train_models
from payroute.training.synthetic import SYNTHETIC_SPEC, synthetic_training_table
from payroute.training.tracking import (
    ECE_TOLERANCE,
    PromotionDecision,
    default_tracking_uri,
    log_training_run,
    promotion_decision,
)

SEED = 21


@pytest.mark.parametrize(
    ("candidate", "champion", "promote", "reason"),
    [
        ({"log_loss": 0.50, "ece": 0.010}, None, True, "no current champion"),
        ({"log_loss": 0.48, "ece": 0.010}, {"log_loss": 0.50, "ece": 0.012}, True, "log loss 0.48000 < champion"),
        ({"log_loss": 0.48, "ece": 0.012}, {"log_loss": 0.50, "ece": 0.011}, True, "log loss"),  # within tolerance
        ({"log_loss": 0.50, "ece": 0.010}, {"log_loss": 0.50, "ece": 0.012}, False, "does not beat"),  # a tie refuses
        ({"log_loss": 0.52, "ece": 0.001}, {"log_loss": 0.50, "ece": 0.012}, False, "does not beat"),
        ({"log_loss": 0.48, "ece": 0.020}, {"log_loss": 0.50, "ece": 0.010}, False, "ECE 0.02000 worse"),
        ({"log_loss": float("nan"), "ece": 0.0}, {"log_loss": 0.50, "ece": 0.010}, False, "does not beat"),
    ],
)
def test_promotion_decision_table(candidate, champion, promote, reason):
    decision = promotion_decision(candidate, champion, ece_tolerance=ECE_TOLERANCE)
    assert isinstance(decision, PromotionDecision)
    assert decision.promote is promote
    assert reason in decision.reason


@pytest.fixture(scope="module")
def table():
    return synthetic_training_table(12_000, seed=SEED)


@pytest.fixture(scope="module")
def store(tmp_path_factory, table):
    """Two runs in one store: a good model (promoted), then a 2-tree model on the same data (refused)."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = default_tracking_uri(root)
    models = root / "models"
    good = train_models(table, SYNTHETIC_SPEC, TrainingConfig(seed=SEED, num_boost_round=200, num_threads=1, progress=False))
    first = log_training_run(good, uri, models_dir=models)
    worse = train_models(table, SYNTHETIC_SPEC, TrainingConfig(seed=SEED, num_boost_round=2, num_threads=1, progress=False))
    second = log_training_run(worse, uri, models_dir=models)
    return {"uri": uri, "models": models, "good": good, "first": first, "worse": worse, "second": second}


def test_first_version_becomes_champion(store):
    first = store["first"]
    assert (first.version, first.champion_version) == ("1", "1")
    assert first.decision.promote and first.decision.reason == "no current champion"


def test_gate_refuses_a_worse_candidate_and_logs_why(store):
    from mlflow.tracking import MlflowClient

    second = store["second"]
    assert store["worse"].metrics["test_log_loss"] > store["good"].metrics["test_log_loss"]
    assert second.version == "2" and not second.decision.promote and second.champion_version == "1"
    client = MlflowClient(tracking_uri=store["uri"], registry_uri=store["uri"])
    assert str(client.get_model_version_by_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS).version) == "1"
    run = client.get_run(second.run_id)
    assert run.data.tags["promotion.decision"] == "refused"
    assert "does not beat champion" in run.data.tags["promotion.reason"]
    assert run.data.metrics["promoted"] == 0.0
    assert run.data.metrics["champion_test_log_loss"] == pytest.approx(store["good"].metrics["test_log_loss"])
    assert client.get_model_version(REGISTERED_MODEL_NAME, "2").tags["promotion.decision"] == "refused"


def test_run_logs_metrics_params_and_plots(store):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store["uri"])
    run = client.get_run(store["first"].run_id)
    for key in ("test_auc", "test_log_loss", "test_brier", "test_ece", "baseline_segment_log_loss", "baseline_global_auc"):
        assert key in run.data.metrics
    for key in ("seed", "data_hash", "git_commit", "rows_train", "rows_test", "calibration_method"):
        assert key in run.data.params
    assert run.data.params["data_hash"] == store["good"].data_hash
    files = {item.path for item in client.list_artifacts(run.info.run_id, "evaluation")}
    for name in ("reliability_diagram.png", "feature_importance_gain.png", "metrics_by_psp.csv", "metrics_by_country.csv"):
        assert f"evaluation/{name}" in files


def test_registry_and_export_round_trip_with_identical_predictions(store, tmp_path):
    frame = store["good"].test_frame
    expected = store["good"].test_frame["p_model"].to_numpy()
    from_registry = load_champion(store["uri"], dst_path=tmp_path)
    exported = ModelBundle.load(store["models"] / "champion")
    assert from_registry.version == exported.version == "1"
    np.testing.assert_array_equal(from_registry.predict_approval(frame), expected)
    np.testing.assert_array_equal(exported.predict_approval(frame), expected)
    assert exported.manifest["metrics"]["test_log_loss"] == pytest.approx(store["good"].metrics["test_log_loss"])


def test_registered_pyfunc_serves_the_same_probabilities(store):
    import mlflow

    mlflow.set_tracking_uri(store["uri"])
    model = mlflow.pyfunc.load_model(f"models:/{REGISTERED_MODEL_NAME}@{CHAMPION_ALIAS}")
    frame = store["good"].test_frame.head(50)
    features = frame[list(SYNTHETIC_SPEC.feature_names)].astype(
        {c: float for c in SYNTHETIC_SPEC.feature_names if c not in SYNTHETIC_SPEC.categorical_features}
    )
    np.testing.assert_array_equal(np.asarray(model.predict(features)), frame["p_model"].to_numpy())


def test_loading_an_unknown_alias_names_model_and_alias(store):
    from payroute.model_bundle import load_registered

    with pytest.raises(LookupError, match="registered model 'payroute' has alias 'challenger'"):
        load_registered(store["uri"], alias="challenger")


def test_a_champion_the_current_features_cannot_feed_is_replaced(tmp_path, table):
    """A champion trained before a feature change (it reads ``psp_rate_14d``, which the current spec no longer
    computes) cannot be compared on the candidate's test period nor served: the next run replaces it, even
    with a far worse model, says why, and exports itself."""
    from payroute.training.dataset import TableSpec

    uri, models = default_tracking_uri(tmp_path), tmp_path / "models"
    old_spec = TableSpec(
        feature_names=(*SYNTHETIC_SPEC.feature_names[:-1], "psp_rate_14d"),
        categorical_features=SYNTHETIC_SPEC.categorical_features, version="synthetic-old",
    )
    old_table = table.assign(psp_rate_14d=table["psp_recent_rate"])
    config = dict(seed=SEED, num_threads=1, progress=False)
    old = log_training_run(train_models(old_table, old_spec, TrainingConfig(num_boost_round=200, **config)), uri, models_dir=models)
    assert old.decision.promote
    new = log_training_run(train_models(table, SYNTHETIC_SPEC, TrainingConfig(num_boost_round=2, **config)), uri, models_dir=models)
    assert new.decision.promote and new.champion_version == new.version == "2"
    assert "cannot be served" in new.decision.reason and "psp_rate_14d" in new.decision.reason
    assert ModelBundle.load(models / "champion").version == "2"
