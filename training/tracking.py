"""MLflow: log a training run, register its bundle as a ``payroute`` version, gate the ``champion`` alias, export.

The default store is embedded: ``sqlite:///<cwd>/mlflow.db`` with artifacts in ``<cwd>/mlartifacts``; any
tracking URI (e.g. ``http://host:5000`` of an ``mlflow server``) works the same way.
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from payroute.model_bundle import (
    BUNDLE_ARTIFACT_KEY,
    CHAMPION_ALIAS,
    REGISTERED_MODEL_NAME,
    ModelBundle,
    export_bundle,
    find_bundle_folder,
)
from payroute.training.metrics import classification_metrics
from payroute.training.pipeline import TrainingResult

EXPERIMENT_NAME = "payroute"
ECE_TOLERANCE = 0.002  # a candidate may not be worse calibrated than the champion by more than this
PYFUNC_MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")


def default_tracking_uri(base: str | Path | None = None) -> str:
    return f"sqlite:///{(Path(base or Path.cwd()) / 'mlflow.db').resolve()}"


def artifact_root_for(tracking_uri: str) -> str | None:
    """``mlartifacts/`` next to a SQLite store's file; ``None`` (the server's default) for other stores."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return None


def git_commit(directory: str | Path | None = None) -> str:
    """The code version: ``git rev-parse HEAD`` of the source tree (``unknown`` outside git)."""
    directory = Path(directory or Path(__file__).resolve().parent)
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


# --------------------------------------------------------------------------------------------------
# Promotion gate (pure)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str


def promotion_decision(
    candidate: Mapping[str, float], champion: Mapping[str, float] | None, ece_tolerance: float = ECE_TOLERANCE
) -> PromotionDecision:
    """Promote iff there is no champion, or the candidate has lower test log loss and ECE ≤ champion's + tolerance.

    Both metric sets are measured on the same test period (the candidate's).
    """
    if champion is None:
        return PromotionDecision(True, "no current champion")
    cand_ll, champ_ll = candidate["log_loss"], champion["log_loss"]
    cand_ece, champ_ece = candidate["ece"], champion["ece"]
    if not math.isfinite(cand_ll) or not cand_ll < champ_ll:
        return PromotionDecision(False, f"log loss {cand_ll:.5f} does not beat champion {champ_ll:.5f}")
    if cand_ece > champ_ece + ece_tolerance:
        return PromotionDecision(
            False, f"ECE {cand_ece:.5f} worse than champion {champ_ece:.5f} (+{ece_tolerance} tolerance)"
        )
    return PromotionDecision(True, f"log loss {cand_ll:.5f} < champion {champ_ll:.5f}, ECE {cand_ece:.5f} ≤ {champ_ece:.5f}+{ece_tolerance}")


# --------------------------------------------------------------------------------------------------
# MLflow I/O
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    version: str
    decision: PromotionDecision
    champion_version: str | None
    exported_to: Path | None


def _client(tracking_uri: str):
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def ensure_experiment(tracking_uri: str, name: str = EXPERIMENT_NAME) -> str:
    client = _client(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=artifact_root_for(tracking_uri))


def current_champion(tracking_uri: str, name: str = REGISTERED_MODEL_NAME):
    """The champion ``ModelVersion`` or ``None``."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        return client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException:
        return None


def champion_metrics_on(result: TrainingResult, bundle: ModelBundle) -> dict[str, float] | None:
    """The champion's metrics on the candidate's test period, or ``None`` if it cannot read these features."""
    try:
        probability = bundle.predict_approval(result.test_frame)
    except KeyError:
        return None
    return classification_metrics(result.test_frame["label"].to_numpy(), probability)


def log_training_run(
    result: TrainingResult,
    tracking_uri: str,
    *,
    params: Mapping[str, Any] | None = None,
    models_dir: str | Path | None = None,
    experiment: str = EXPERIMENT_NAME,
    ece_tolerance: float = ECE_TOLERANCE,
) -> RunOutcome:
    """Log metrics, plots, tables and the bundle; register it; apply the promotion gate; export the champion."""
    import mlflow

    client = _client(tracking_uri)
    experiment_id = ensure_experiment(tracking_uri, experiment)
    commit = git_commit()
    with mlflow.start_run(experiment_id=experiment_id) as run, tempfile.TemporaryDirectory() as scratch:
        run_id = run.info.run_id
        mlflow.log_params({**result.params, **(params or {}), "data_hash": result.data_hash, "git_commit": commit})
        mlflow.log_params({f"rows_{k}": v for k, v in result.row_counts.items()})
        mlflow.set_tags({"mlflow.source.git.commit": commit, "data_hash": result.data_hash})
        mlflow.log_metrics({k: v for k, v in result.metrics.items() if math.isfinite(v)})
        _log_evaluation_artifacts(result, Path(scratch))
        bundle_dir = result.write_bundle(Path(scratch) / "bundle", extra={"run_id": run_id, "git_commit": commit})
        version = _log_and_register_model(result, bundle_dir)

        champion = current_champion(tracking_uri)
        champion_metrics = None
        unservable: list[str] = []
        if champion is not None:
            from payroute.model_bundle import load_registered

            champion_bundle = load_registered(tracking_uri, alias=CHAMPION_ALIAS, dst_path=Path(scratch) / "champion")
            champion_metrics = champion_metrics_on(result, champion_bundle)
            known = set(result.layout.feature_names)
            unservable = [name for name in champion_bundle.feature_names if name not in known]
            if champion_metrics is not None:
                mlflow.log_metrics({"champion_test_log_loss": champion_metrics["log_loss"], "champion_test_ece": champion_metrics["ece"]})
        candidate = {"log_loss": result.metrics["test_log_loss"], "ece": result.metrics["test_ece"]}
        if champion is not None and champion_metrics is None:
            # The champion reads features this code's spec no longer computes (trained before a feature
            # change): it cannot be compared on this test period, and the service cannot serve it.
            decision = PromotionDecision(
                True, f"champion {champion.version} needs features the current feature spec does not compute "
                f"({', '.join(unservable[:3]) or 'unreadable test frame'}): it cannot be served"
            )
        else:
            decision = promotion_decision(candidate, champion_metrics, ece_tolerance)
        if decision.promote:
            client.set_registered_model_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS, version)
        tags = {
            "promotion.decision": "promoted" if decision.promote else "refused",
            "promotion.reason": decision.reason,
            "promotion.previous_champion": champion.version if champion is not None else "none",
        }
        mlflow.set_tags(tags)
        mlflow.log_metric("promoted", float(decision.promote))
        for key, value in tags.items():
            client.set_model_version_tag(REGISTERED_MODEL_NAME, version, key, value)
    champion_version = version if decision.promote else (str(champion.version) if champion is not None else None)
    exported = export_champion(tracking_uri, models_dir) if models_dir is not None and champion_version else None
    return RunOutcome(run_id, str(version), decision, champion_version, exported)


def _log_and_register_model(result: TrainingResult, bundle_dir: Path) -> str:
    import lightgbm
    import mlflow
    from mlflow.models import infer_signature

    example = result.test_frame[list(result.layout.feature_names)].head(5).copy()
    for column in result.layout.feature_names:  # strings for categories, doubles (NaN-capable) for the rest
        is_categorical = column in result.layout.categorical_features
        example[column] = example[column].astype(str) if is_categorical else example[column].astype(float)
    bundle = ModelBundle.load(bundle_dir)
    signature = infer_signature(example, bundle.predict_approval(example))
    info = mlflow.pyfunc.log_model(
        name="payroute",
        python_model=str(PYFUNC_MODEL_CODE),
        artifacts={BUNDLE_ARTIFACT_KEY: str(bundle_dir)},
        signature=signature,
        input_example=example,
        registered_model_name=REGISTERED_MODEL_NAME,
        pip_requirements=[f"lightgbm=={lightgbm.__version__}", f"mlflow=={mlflow.__version__}", "numpy", "pandas"],
        await_registration_for=60,
    )
    return str(info.registered_model_version)


def _log_evaluation_artifacts(result: TrainingResult, scratch: Path) -> None:
    import matplotlib.pyplot as plt
    import mlflow

    from payroute.training.plots import importance_plot, reliability_diagram

    figure = reliability_diagram(
        result.test_frame, {"p_model": "calibrated model", "p_raw": "uncalibrated booster", "p_segment": "segment rate baseline"}
    )
    mlflow.log_figure(figure, "evaluation/reliability_diagram.png")
    plt.close(figure)
    figure = importance_plot(result.approval.gain_importance)
    mlflow.log_figure(figure, "evaluation/feature_importance_gain.png")
    plt.close(figure)
    for by, table in result.segment_tables.items():
        mlflow.log_table(table, f"evaluation/metrics_by_{by}.json")
        path = scratch / f"metrics_by_{by}.csv"
        table.to_csv(path, index=False)
        mlflow.log_artifact(str(path), "evaluation")
    importance = pd.DataFrame(sorted(result.approval.gain_importance.items(), key=lambda kv: -kv[1]), columns=["feature", "gain"])
    importance.to_csv(scratch / "feature_importance_gain.csv", index=False)
    mlflow.log_artifact(str(scratch / "feature_importance_gain.csv"), "evaluation")
    keep = [c for c in ("psp", "country", "payment_method", "timestamp", "label", "p_model", "p_raw", "p_segment", "p_global") if c in result.test_frame.columns]
    predictions = result.test_frame[keep].sample(n=min(len(result.test_frame), 200_000), random_state=0).sort_index()
    predictions.to_parquet(scratch / "test_predictions.parquet", index=False)
    mlflow.log_artifact(str(scratch / "test_predictions.parquet"), "evaluation")
    summary = {"calibration": result.calibration.calibrator.method, "cv_log_loss": result.calibration.cv_log_loss, "rows": result.row_counts}
    mlflow.log_dict(json.loads(json.dumps(summary, default=float)), "evaluation/summary.json")


def export_champion(tracking_uri: str, models_dir: str | Path, subdir: str = CHAMPION_ALIAS) -> Path:
    """Download ``models:/payroute@champion`` and install it, verified, as ``<models_dir>/champion``."""
    import mlflow

    champion = current_champion(tracking_uri)
    if champion is None:
        raise LookupError(f"no '{CHAMPION_ALIAS}' alias on registered model '{REGISTERED_MODEL_NAME}'")
    with tempfile.TemporaryDirectory() as scratch:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{REGISTERED_MODEL_NAME}/{champion.version}", dst_path=scratch, tracking_uri=tracking_uri
        )
        Path(models_dir).mkdir(parents=True, exist_ok=True)
        return export_bundle(
            find_bundle_folder(local),
            Path(models_dir) / subdir,
            version=str(champion.version),
            extra={"registered_model": REGISTERED_MODEL_NAME, "alias": CHAMPION_ALIAS},
        )
