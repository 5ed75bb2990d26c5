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
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from payroute.contracts import DeclineClass, Transaction
from payroute.model_bundle import CHAMPION_ALIAS, MANIFEST_FILE, REGISTERED_MODEL_NAME, ModelBundle

CHAMPION_DIR = "champion"
SMALL_ROWS = 16  # up to this many rows NativeScorer predicts row by row (no per-call config parse)


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
        """Load and verify the champion (raises ``BundleError`` naming a missing or corrupt file, or the
        features it needs that this code's feature spec does not compute)."""
        if self.models_dir is not None:
            bundle = ModelBundle.load(bundle_folder(self.models_dir))
        elif self.tracking_uri is not None:
            from payroute.model_bundle import load_champion

            bundle = load_champion(self.tracking_uri)
        else:
            raise NoModelError("no models directory or tracking URI configured")
        check_servable(bundle)
        return bundle


def check_servable(bundle: ModelBundle) -> None:
    """Raise ``BundleError`` if the bundle needs model inputs the serving feature spec does not compute
    (a champion trained before a feature change): installed, it would answer every request degraded."""
    from payroute.features.spec import DEFAULT_SPEC
    from payroute.model_bundle import BundleError

    missing = DEFAULT_SPEC.missing(bundle.feature_names)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise BundleError(
            f"model {bundle.version} was trained under feature spec {bundle.layout.spec_version} and needs "
            f"{shown}, which feature spec {DEFAULT_SPEC.version} does not compute: retrain it (payroute train)"
        )


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


class ColumnEncoder:
    """Maps the feature store's float matrix straight to the bundle's input matrix (no pandas per request).

    Same result as ``encode_features(store.features(...), bundle.layout)`` (a parity test holds them
    together): columns reordered to the bundle's feature list, categorical codes of the store's fixed
    vocabulary translated to the bundle's level indices (NaN for levels the model never saw).
    """

    def __init__(self, store_names: Sequence[str], store_categories: dict[str, Sequence[str]], bundle: ModelBundle) -> None:
        position = {name: j for j, name in enumerate(store_names)}
        missing = [name for name in bundle.feature_names if name not in position]
        if missing:
            raise KeyError(f"feature store lacks model feature(s) {', '.join(missing)}")
        self.columns = np.array([position[name] for name in bundle.feature_names], dtype=np.intp)
        self._same_order = list(bundle.feature_names) == list(store_names)  # a copy instead of a column gather
        tables = []
        for j, name in enumerate(bundle.feature_names):
            if name in bundle.categorical_features:
                levels = {level: k for k, level in enumerate(bundle.layout.categorical_levels[name])}
                vocabulary = store_categories[name]
                tables.append((j, [levels.get(str(v), np.nan) for v in vocabulary] + [np.nan]))
        # All categorical columns recoded in one gather: tables padded with NaN to one width, each column's
        # store code clipped to its own table (its last slot, NaN, for a missing or out-of-vocabulary code).
        self.categorical = np.array([j for j, _ in tables], dtype=np.intp)
        self.last = np.array([len(table) - 1 for _, table in tables], dtype=np.intp)
        width = max((len(table) for _, table in tables), default=1)
        self.tables = np.full((len(tables), width), np.nan)
        for row, (_, table) in enumerate(tables):
            self.tables[row, : len(table)] = table
        self._rows = np.arange(len(tables))

    def encode(self, store_matrix: np.ndarray) -> np.ndarray:
        matrix = store_matrix.copy() if self._same_order else store_matrix[:, self.columns]
        if len(self.categorical):
            codes = matrix[:, self.categorical]
            index = np.where(np.isnan(codes), self.last, codes).astype(np.intp)
            index = np.minimum(np.maximum(index, 0), self.last)
            matrix[:, self.categorical] = self.tables[self._rows, index]
        return matrix


class NativeScorer:
    """``booster.predict(matrix, num_threads=1)`` for a binary model, without its per-call Python work.

    LightGBM's ``Booster.predict`` builds a predictor object, inspects the input type and sizes the
    output on every call: ≈ 34 µs for the 4 rows of one /rank, of which the tree walk is a few. This
    makes the one C call it ends in (``LGBM_BoosterPredictForMat``, same arguments: row-major float64,
    normal prediction, the same iteration limit, ``num_threads=1``), so the values are the same bits
    (tested against ``Booster.predict``). Matrices of up to :data:`SMALL_ROWS` rows (one /rank, a small
    coalesced group) go row by row through ``LGBM_BoosterPredictForMatSingleRowFast`` on a FastConfig
    made once here, which skips the per-call parse of the prediction config: ≈ 20 µs less per /rank
    inside a request (same bits, tested). Any LightGBM whose private ctypes handles differ, or a
    non-binary model, falls back to ``Booster.predict``. One scorer is used by one thread at a time (the
    router's lock): the FastConfig's buffers are not shared.
    """

    def __init__(self, booster: Any) -> None:
        self.booster = booster  # keeps the C handle alive
        self._call = None
        self._call_small = None
        try:
            import ctypes

            from lightgbm import basic

            if booster.num_model_per_iteration() != 1:
                return
            handle, lib, check = booster._handle, basic._LIB, basic._safe_call
            params = basic._c_str("num_threads=1")
            num_iteration = booster.best_iteration  # what Booster.predict uses when num_iteration is None
            features = booster.num_feature()
            double_p, int32, c_int, int64 = ctypes.POINTER(ctypes.c_double), ctypes.c_int32, ctypes.c_int, ctypes.c_int64
            predict = lib.LGBM_BoosterPredictForMat

            def prepared(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, Any]:
                """The row-major float64 input (width checked), the output vector, its rows, a written-count cell."""
                data = np.ascontiguousarray(matrix, dtype=np.float64)
                if data.ndim != 2 or data.shape[1] != features:
                    raise ValueError(f"expected a (n, {features}) matrix, got {data.shape}")
                return data, np.empty(data.shape[0], dtype=np.float64), data.shape[0], int64(0)

            def call(matrix: np.ndarray) -> np.ndarray:
                data, out, rows, written = prepared(matrix)
                check(predict(
                    handle, data.ctypes.data_as(double_p), c_int(1), int32(rows), int32(features), c_int(1),
                    c_int(0), c_int(0), c_int(num_iteration), params, ctypes.byref(written), out.ctypes.data_as(double_p),
                ))
                if written.value != rows:
                    raise ValueError("LightGBM wrote an unexpected number of predictions")
                return out

            self._call = call
            # Small matrices row by row through a FastConfig (parsed once), skipping the per-call config parse
            fast = ctypes.c_void_p()
            check(lib.LGBM_BoosterPredictForMatSingleRowFastInit(
                handle, c_int(0), c_int(0), c_int(num_iteration), c_int(1), int32(features), params, ctypes.byref(fast),
            ))
            self._fast = fast
            self._free = lib.LGBM_FastConfigFree
            single = lib.LGBM_BoosterPredictForMatSingleRowFast
            void_p = ctypes.c_void_p

            def call_small(matrix: np.ndarray) -> np.ndarray:
                data, out, rows, written = prepared(matrix)
                base, step, target = data.ctypes.data, data.strides[0], out.ctypes.data
                for i in range(rows):
                    check(single(fast, void_p(base + i * step), ctypes.byref(written), void_p(target + 8 * i)))
                return out

            self._call_small = call_small
        except (AttributeError, ImportError):  # another LightGBM layout: the public API
            self._call = None

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        if self._call is None:
            return np.asarray(self.booster.predict(matrix, num_threads=1), dtype=np.float64)
        if len(matrix) <= SMALL_ROWS and self._call_small is not None:
            return self._call_small(matrix)
        return self._call(matrix)

    def __del__(self) -> None:
        fast = getattr(self, "_fast", None)
        if fast is not None and fast.value:
            self._free(fast)
            self._fast = None


class BundlePredictor:
    """``ApprovalPredictor`` over the slot's current bundle and the online feature store."""

    def __init__(self, slot: ModelSlot, feature_store: Any) -> None:
        self.slot = slot
        self.feature_store = feature_store
        self._encoder: tuple[Any, Any, ColumnEncoder, NativeScorer] | None = None

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
        store = self.feature_store
        if bundle is None or store is None:
            raise NoModelError("no champion loaded")
        store_matrix, names = store.features_array(
            transaction, list(psps), attempt=attempt, previous_decline_class=previous_decline_class
        )
        encoder, scorer = self._encoder_for(bundle, store, names)
        raw = scorer(encoder.encode(store_matrix))  # one thread: tiny matrices
        probability = np.asarray(bundle.calibrator.apply(raw), dtype=np.float64)
        if probability.shape != (len(psps),) or not all(map(math.isfinite, probability.tolist())):  # a few values
            raise ValueError("model returned an unusable probability vector")
        return probability

    def predict_many(self, items: Sequence[tuple[Transaction, Sequence[str]]]) -> list[np.ndarray]:
        """First-attempt probabilities for many (transaction, PSPs): feature rows of every transaction
        stacked, then ONE ``Booster.predict`` and one calibration for all of them. Each row's value is
        the one :meth:`predict` gives (trees score rows independently). Features come from the store's
        batch query, whose point-in-time cut-offs advance item by item exactly as one-by-one ranking
        advances them."""
        bundle = self.slot.bundle
        store = self.feature_store
        if bundle is None or store is None:
            raise NoModelError("no champion loaded")
        if not items:
            return []
        blocks, names = store.features_array_many([(transaction, list(psps)) for transaction, psps in items])
        encoder, scorer = self._encoder_for(bundle, store, names)
        raw = scorer(encoder.encode(np.concatenate(blocks)))
        probability = np.asarray(bundle.calibrator.apply(raw), dtype=np.float64)
        if probability.shape != (len(raw),) or not np.all(np.isfinite(probability)):
            raise ValueError("model returned an unusable probability vector")
        bounds = [0, *itertools.accumulate(len(block) for block in blocks)]
        return [probability[a:b] for a, b in zip(bounds, bounds[1:])]

    def _encoder_for(self, bundle: ModelBundle, store: Any, names: Sequence[str]) -> tuple[ColumnEncoder, NativeScorer]:
        """The column encoder and the scorer of this bundle (built once per bundle: a reload swaps both)."""
        cached = self._encoder
        if cached is None or cached[0] is not bundle or cached[1] is not store:
            categories = store.spec.categories(store.catalog.psp_names)
            cached = (bundle, store, ColumnEncoder(names, categories, bundle), NativeScorer(bundle.approval_booster))
            self._encoder = cached
        return cached[2], cached[3]
