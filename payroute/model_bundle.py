"""The exported model bundle: format, writer and loader. Nothing in it is ever unpickled.

A bundle is a folder written by ``payroute train`` and read by the service::

    manifest.json        format, version, metrics, feature list, categorical levels, file hashes
    feature_spec.json    feature names, categorical features and their levels, spec version
    approval_model.txt   LightGBM text model: raw approval probability (PSP is a feature)
    calibrator.json      isotonic thresholds or Platt coefficients mapping raw -> calibrated probability
    cost_<head>.txt      LightGBM text regressors: the learned part of the cost model (EUR per approved
                         attempt; heads ``chargeback_eur`` and ``fee_deviation_eur``)

:meth:`ModelBundle.load` checks every file against the SHA-256 in the manifest and names the file that is
missing or corrupt. The rule part of the cost (catalogue fees and FX markup) is not learned: it comes from
:func:`payroute.catalog.fee_formula` through :func:`rule_cost_eur`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from payroute.catalog import Catalog, fee_formula

if TYPE_CHECKING:  # lightgbm is imported when a bundle is loaded, not when this module is
    import lightgbm

BUNDLE_FORMAT = "payroute-model-bundle"
BUNDLE_FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
FEATURE_SPEC_FILE = "feature_spec.json"
APPROVAL_MODEL_FILE = "approval_model.txt"
CALIBRATOR_FILE = "calibrator.json"
COST_HEADS: tuple[str, ...] = ("chargeback_eur", "fee_deviation_eur")
PROBABILITY_EPSILON = 1e-4  # calibrated probabilities are clipped to [eps, 1 - eps]
REGISTERED_MODEL_NAME = "payroute"
CHAMPION_ALIAS = "champion"
BUNDLE_ARTIFACT_KEY = "bundle"  # the pyfunc artifact key under which the bundle folder is logged


class BundleError(ValueError):
    """A bundle file is missing, corrupt or inconsistent; the message names the file."""


def cost_model_file(head: str) -> str:
    return f"cost_{head}.txt"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# Feature encoding: the one function training and serving both use
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureLayout:
    """Which columns the models read, in order, and the known levels of the categorical ones."""

    feature_names: tuple[str, ...]
    categorical_features: tuple[str, ...]
    categorical_levels: Mapping[str, tuple[str, ...]]
    spec_version: str = "unknown"

    @property
    def categorical_indices(self) -> list[int]:
        return [self.feature_names.index(name) for name in self.categorical_features]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.spec_version,
            "feature_names": list(self.feature_names),
            "categorical_features": list(self.categorical_features),
            "categorical_levels": {k: list(v) for k, v in self.categorical_levels.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "FeatureLayout":
        return cls(
            feature_names=tuple(data["feature_names"]),
            categorical_features=tuple(data["categorical_features"]),
            categorical_levels={k: tuple(v) for k, v in data["categorical_levels"].items()},
            spec_version=str(data.get("version", "unknown")),
        )


def categorical_levels(frame: pd.DataFrame, categorical_features: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Sorted observed levels (as strings) of each categorical column; missing values are not a level."""
    return {
        name: tuple(sorted(frame[name].dropna().astype(str).unique().tolist())) for name in categorical_features
    }


def encode_features(frame: pd.DataFrame, layout: FeatureLayout) -> np.ndarray:
    """The float matrix (n_rows, n_features) the boosters read.

    Categorical columns become the index of their level in ``layout.categorical_levels``; unknown or
    missing levels become NaN (LightGBM's missing branch). Other columns are cast to float.
    """
    missing = [name for name in layout.feature_names if name not in frame.columns]
    if missing:
        raise KeyError(f"feature frame lacks column(s) {', '.join(missing)}")
    matrix = np.empty((len(frame), len(layout.feature_names)), dtype=np.float64)
    categorical = set(layout.categorical_features)
    for j, name in enumerate(layout.feature_names):
        column = frame[name]
        if name in categorical:
            levels = pd.Index(list(layout.categorical_levels[name]), dtype=object)
            codes = levels.get_indexer(column.astype("string").astype(object).where(column.notna(), None))
            matrix[:, j] = np.where(codes < 0, np.nan, codes)
        else:
            matrix[:, j] = pd.to_numeric(column, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    return matrix


# --------------------------------------------------------------------------------------------------
# Calibrators (JSON-serialisable, applied to raw probabilities)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibrator:
    """Maps raw booster probabilities to calibrated ones.

    ``method="isotonic"``: piecewise-linear interpolation through ``x_thresholds -> y_thresholds``
    (clipped at the ends, as scikit-learn's ``IsotonicRegression(out_of_bounds="clip")``).
    ``method="platt"``: ``sigmoid(a * logit(p) + b)``. ``method="identity"``: no change.
    """

    method: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def apply(self, raw_probability: np.ndarray) -> np.ndarray:
        # np.minimum/np.maximum: np.clip's values, without its wrapper's cost (≈ 5 µs a call on a /rank's rows)
        raw = np.minimum(np.maximum(np.asarray(raw_probability, dtype=np.float64), 1e-12), 1 - 1e-12)
        if self.method == "isotonic":
            calibrated = np.interp(raw, self.params["x_thresholds"], self.params["y_thresholds"])
        elif self.method == "platt":
            logit = np.log(raw) - np.log1p(-raw)
            calibrated = 1.0 / (1.0 + np.exp(-(self.params["a"] * logit + self.params["b"])))
        elif self.method == "identity":
            calibrated = raw
        else:
            raise BundleError(f"{CALIBRATOR_FILE}: unknown calibration method {self.method!r}")
        return np.minimum(np.maximum(calibrated, PROBABILITY_EPSILON), 1 - PROBABILITY_EPSILON)

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "params": {k: _jsonable(v) for k, v in self.params.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Calibrator":
        params = dict(data.get("params", {}))
        for key in ("x_thresholds", "y_thresholds"):
            if key in params:
                params[key] = np.asarray(params[key], dtype=np.float64)
        return cls(method=str(data["method"]), params=params)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [float(x) for x in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# --------------------------------------------------------------------------------------------------
# The rule part of the cost model
# --------------------------------------------------------------------------------------------------


def rule_cost_eur(
    catalog: Catalog, psp: Sequence[str], amount: np.ndarray, currency: Sequence[str], approved: np.ndarray | float
) -> np.ndarray:
    """Contract fee + FX markup in EUR per attempt, column-wise, through :func:`fee_formula` (the one fee rule).

    ``approved`` is 0/1 per row or an approval probability (the formula is linear in it, so a
    probability gives the expected contract cost).
    """
    psp = np.asarray(psp, dtype=object)
    currency = np.asarray(currency, dtype=object)
    amount = np.asarray(amount, dtype=np.float64)
    approved = np.broadcast_to(np.asarray(approved, dtype=np.float64), amount.shape)
    rates = {code: float(rate) for code, rate in catalog.fx_rates.items()}
    rate = np.array([rates.get(c, np.nan) for c in currency], dtype=np.float64)
    total = np.full(amount.shape, np.nan)
    for name in np.unique(psp):
        rows = psp == name
        profile = catalog.by_name[name]
        needs_fx = np.array([c not in profile.settlement_currencies for c in currency[rows]], dtype=np.float64)
        fee, fx_cost = fee_formula(amount[rows], rate[rows], profile.fees, approved[rows], needs_fx)
        total[rows] = (fee + fx_cost) / rate[rows]
    return total


# --------------------------------------------------------------------------------------------------
# The bundle
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelBundle:
    """Approval model + calibrator + learned cost heads + feature layout, loaded from a verified folder."""

    path: Path
    version: str
    manifest: Mapping[str, Any]
    layout: FeatureLayout
    approval_booster: "lightgbm.Booster"
    calibrator: Calibrator
    cost_boosters: Mapping[str, "lightgbm.Booster"]

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.layout.feature_names

    @property
    def categorical_features(self) -> tuple[str, ...]:
        return self.layout.categorical_features

    @property
    def metrics(self) -> Mapping[str, float]:
        return self.manifest.get("metrics", {})

    def predict_raw_approval(self, feature_frame: pd.DataFrame) -> np.ndarray:
        """Uncalibrated booster probability, shape (n_rows,)."""
        return self.approval_booster.predict(encode_features(feature_frame, self.layout))

    def predict_approval(self, feature_frame: pd.DataFrame) -> np.ndarray:
        """Calibrated approval probability per row, shape (n_rows,)."""
        return self.calibrator.apply(self.predict_raw_approval(feature_frame))

    def predict_cost(self, feature_frame: pd.DataFrame) -> pd.DataFrame:
        """Learned cost heads in EUR per approved attempt (columns :data:`COST_HEADS`), one row per input row."""
        matrix = encode_features(feature_frame, self.layout)
        return pd.DataFrame(
            {head: booster.predict(matrix) for head, booster in self.cost_boosters.items()}, index=feature_frame.index
        )

    def expected_chargeback_cost(self, feature_frame: pd.DataFrame) -> np.ndarray:
        """Expected chargeback loss in EUR if this attempt is approved, shape (n_rows,)."""
        return self.cost_boosters["chargeback_eur"].predict(encode_features(feature_frame, self.layout))

    def expected_cost_eur(
        self,
        feature_frame: pd.DataFrame,
        catalog: Catalog,
        amount: np.ndarray,
        currency: Sequence[str],
        approval_probability: np.ndarray | None = None,
    ) -> np.ndarray:
        """Expected total cost in EUR of routing each row to its PSP (``feature_frame["psp"]``).

        ``p · (contract cost if approved + learned residual) + (1 − p) · contract cost if declined``; the
        contract costs are the catalogue rule, the residual (chargebacks, fee deviations) is learned.
        """
        probability = self.predict_approval(feature_frame) if approval_probability is None else approval_probability
        psp = feature_frame["psp"].astype(str).to_numpy()
        approved_cost = rule_cost_eur(catalog, psp, amount, currency, 1.0)
        declined_cost = rule_cost_eur(catalog, psp, amount, currency, 0.0)
        residual = self.predict_cost(feature_frame).sum(axis=1).to_numpy()
        return probability * (approved_cost + residual) + (1 - probability) * declined_cost

    def with_version(self, version: str) -> "ModelBundle":
        return replace(self, version=str(version))

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, path: str | Path) -> "ModelBundle":
        """Load a bundle folder, verifying each file's SHA-256 against the manifest first."""
        import lightgbm

        folder = Path(path)
        manifest = _read_json(folder / MANIFEST_FILE)
        if manifest.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{folder / MANIFEST_FILE}: not a {BUNDLE_FORMAT} manifest")
        if int(manifest.get("format_version", -1)) != BUNDLE_FORMAT_VERSION:
            raise BundleError(
                f"{folder / MANIFEST_FILE}: format_version {manifest.get('format_version')} "
                f"is not supported (expected {BUNDLE_FORMAT_VERSION})"
            )
        files: Mapping[str, str] = manifest.get("files", {})
        required = [FEATURE_SPEC_FILE, APPROVAL_MODEL_FILE, CALIBRATOR_FILE]
        for name in required:
            if name not in files:
                raise BundleError(f"{folder / MANIFEST_FILE}: no hash recorded for {name}")
        for name, expected in files.items():
            file_path = folder / name
            if not file_path.is_file():
                raise BundleError(f"{file_path}: bundle file is missing")
            actual = file_sha256(file_path)
            if actual != expected:
                raise BundleError(f"{file_path}: bundle file is corrupt (sha256 {actual[:12]}… != manifest {expected[:12]}…)")
        layout = FeatureLayout.from_json(_read_json(folder / FEATURE_SPEC_FILE))
        calibrator = Calibrator.from_json(_read_json(folder / CALIBRATOR_FILE))
        approval = _read_booster(lightgbm, folder / APPROVAL_MODEL_FILE)
        cost = {
            head: _read_booster(lightgbm, folder / cost_model_file(head))
            for head in manifest.get("cost_heads", [])
        }
        return cls(
            path=folder,
            version=str(manifest.get("version") or manifest.get("run_id") or "unversioned"),
            manifest=manifest,
            layout=layout,
            approval_booster=approval,
            calibrator=calibrator,
            cost_boosters=cost,
        )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{path}: bundle file is missing") from None
    except (OSError, ValueError) as error:
        raise BundleError(f"{path}: not readable JSON ({error})") from error
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object")
    return data


def _read_booster(lightgbm: Any, path: Path) -> "lightgbm.Booster":
    try:
        return lightgbm.Booster(model_str=path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{path}: bundle file is missing") from None
    except Exception as error:  # LightGBM raises its own error type for unparsable models
        raise BundleError(f"{path}: not a readable LightGBM text model ({error})") from error


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def write_bundle(
    directory: str | Path,
    *,
    layout: FeatureLayout,
    approval_model_text: str,
    calibrator: Calibrator,
    cost_model_texts: Mapping[str, str],
    metrics: Mapping[str, float],
    version: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a bundle folder and its manifest (hashes of every other file). Returns the folder."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {
        FEATURE_SPEC_FILE: json.dumps(layout.to_json(), indent=2, sort_keys=True),
        APPROVAL_MODEL_FILE: approval_model_text,
        CALIBRATOR_FILE: json.dumps(calibrator.to_json(), indent=2, sort_keys=True),
    }
    for head, text in cost_model_texts.items():
        files[cost_model_file(head)] = text
    for name, text in files.items():
        (folder / name).write_text(text)
    manifest = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "version": version,
        **(dict(extra) if extra else {}),
        "feature_spec_version": layout.spec_version,
        "feature_names": list(layout.feature_names),
        "categorical_features": list(layout.categorical_features),
        "categorical_levels": {k: list(v) for k, v in layout.categorical_levels.items()},
        "cost_heads": sorted(cost_model_texts),
        "metrics": {k: float(v) for k, v in sorted(metrics.items())},
        "files": {name: file_sha256(folder / name) for name in sorted(files)},
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return folder


def export_bundle(source: str | Path, destination: str | Path, *, version: str, extra: Mapping[str, Any] | None = None) -> Path:
    """Copy a verified bundle to ``destination`` (replacing it), stamping the registry version into the manifest."""
    ModelBundle.load(source)  # verify before anything is replaced
    destination = Path(destination)
    staging = destination.with_name(destination.name + ".tmp")
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(source, staging)
    manifest = json.loads((staging / MANIFEST_FILE).read_text())
    manifest["version"] = str(version)
    manifest.update(extra or {})
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    ModelBundle.load(staging)
    if destination.exists():
        shutil.rmtree(destination)
    staging.rename(destination)
    return destination


# --------------------------------------------------------------------------------------------------
# Loading from the MLflow registry
# --------------------------------------------------------------------------------------------------


def find_bundle_folder(root: str | Path) -> Path:
    """The bundle folder inside a downloaded MLflow model (``artifacts/bundle``) or ``root`` itself."""
    root = Path(root)
    for candidate in (root, root / "artifacts" / BUNDLE_ARTIFACT_KEY, root / BUNDLE_ARTIFACT_KEY):
        if (candidate / MANIFEST_FILE).is_file():
            return candidate
    raise BundleError(f"{root}: no {MANIFEST_FILE} found in the downloaded model")


def load_registered(
    tracking_uri: str,
    *,
    alias: str = CHAMPION_ALIAS,
    name: str = REGISTERED_MODEL_NAME,
    dst_path: str | Path | None = None,
) -> ModelBundle:
    """Download ``models:/<name>@<alias>`` and load it with :meth:`ModelBundle.load` (same checks, no pickle)."""
    import tempfile

    import mlflow
    from mlflow.tracking import MlflowClient

    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        raise LookupError(f"no version of registered model '{name}' has alias '{alias}' in {tracking_uri}") from error
    target = Path(dst_path) if dst_path is not None else Path(tempfile.mkdtemp(prefix="payroute-bundle-"))
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{name}/{version.version}", dst_path=str(target), tracking_uri=tracking_uri
    )
    return ModelBundle.load(find_bundle_folder(local)).with_version(str(version.version))


def load_champion(tracking_uri: str, dst_path: str | Path | None = None) -> ModelBundle:
    """The bundle of ``models:/payroute@champion``."""
    return load_registered(tracking_uri, alias=CHAMPION_ALIAS, dst_path=dst_path)
