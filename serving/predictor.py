"""Model side of the service: where the champion comes from, and the adapter the router calls.

- :class:`ModelSource` finds the champion (a bundle folder under ``models/`` or the MLflow registry alias
  ``payroute@champion``), fingerprints it cheaply for polling and loads it (verified, never unpickled).
- :class:`ModelSlot` holds the current bundle as one immutable reference; a reload builds the new
  bundle off the request path and swaps the reference in one assignment, so a request sees either the
  old model or the new one, never a mix, and none is dropped.
- :class:`BundlePredictor` is the router's ``ApprovalPredictor``: online features for the transaction
  and candidate PSPs, then the bundle's calibrated approval probability.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from payroute.contracts import DeclineClass, Transaction
from payroute.model_bundle import CHAMPION_ALIAS, MANIFEST_FILE, REGISTERED_MODEL_NAME, ModelBundle

CHAMPION_DIR = "champion"


class NoModelError(RuntimeError):
    """No champion is loaded; callers answer from the static order."""


def bundle_folder(models_dir: str | Path) -> Path:
    """``models_dir/champion`` when it holds a bundle, else ``models_dir`` itself."""
    root = Path(models_dir)
    champion = root / CHAMPION_DIR
    return champion if (champion / MANIFEST_FILE).exists() or not (root / MANIFEST_FILE).exists() else root


@dataclass(frozen=True)
class ModelSource:
    """Where the champion lives: a local bundle directory, else the MLflow registry alias."""

    models_dir: Path | None = None
    tracking_uri: str | None = None

    @property
    def configured(self) -> bool:
        return self.models_dir is not None or self.tracking_uri is not None

    def fingerprint(self) -> str | None:
        """Cheap identity of the current champion (None: nothing there right now). Changes when it changes."""
        if self.models_dir is not None:
            manifest = bundle_folder(self.models_dir) / MANIFEST_FILE
            try:
                return "dir:" + hashlib.sha256(manifest.read_bytes()).hexdigest()
            except OSError:
                return None
        if self.tracking_uri is not None:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
            try:
                version = client.get_model_version_by_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS)
            except Exception:  # no registered model or alias yet: nothing to load
                return None
            return f"mlflow:{version.version}"
        return None

    def load(self) -> ModelBundle:
        """Load and verify the champion (raises ``BundleError`` naming a missing or corrupt file)."""
        if self.models_dir is not None:
            return ModelBundle.load(bundle_folder(self.models_dir))
        if self.tracking_uri is not None:
            from payroute.model_bundle import load_champion

            return load_champion(self.tracking_uri)
        raise NoModelError("no models directory or tracking URI configured")


class ModelSlot:
    """The current bundle (or None) and its fingerprint, replaced together by one assignment."""

    def __init__(self) -> None:
        self._current: tuple[ModelBundle | None, str | None] = (None, None)

    @property
    def bundle(self) -> ModelBundle | None:
        return self._current[0]

    @property
    def fingerprint(self) -> str | None:
        return self._current[1]

    def swap(self, bundle: ModelBundle | None, fingerprint: str | None) -> None:
        self._current = (bundle, fingerprint)


class BundlePredictor:
    """``ApprovalPredictor`` over the slot's current bundle and the online feature store."""

    def __init__(self, slot: ModelSlot, feature_store: Any) -> None:
        self.slot = slot
        self.feature_store = feature_store

    @property
    def version(self) -> str:
        bundle = self.slot.bundle
        return "none" if bundle is None else bundle.version

    def predict(
        self,
        transaction: Transaction,
        psps: Sequence[str],
        *,
        attempt: int = 1,
        previous_decline_class: DeclineClass | None = None,
    ) -> np.ndarray:
        bundle = self.slot.bundle  # read once: one request, one model
        if bundle is None:
            raise NoModelError("no champion loaded")
        frame = self.feature_store.features(
            transaction, list(psps), attempt=attempt, previous_decline_class=previous_decline_class
        )
        probability = np.asarray(bundle.predict_approval(frame), dtype=np.float64)
        if probability.shape != (len(psps),) or not np.all(np.isfinite(probability)):
            raise ValueError("model returned an unusable probability vector")
        return probability
