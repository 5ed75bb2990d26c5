"""A small real model bundle for the service's tests and benchmark (seconds to build, no MLflow).

A LightGBM approval model trained on the online store's own feature rows with a known, seeded
approval rule per PSP; written with :func:`payroute.model_bundle.write_bundle` like any champion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from payroute.catalog import Catalog
from payroute.contracts import Transaction
from payroute.model_bundle import Calibrator, FeatureLayout, categorical_levels, encode_features, write_bundle


def write_demo_bundle(
    directory: str | Path, catalog: Catalog, transaction: Transaction, *, seed: int = 0, version: str = "demo-1"
) -> Path:
    """Write a bundle to ``directory``; the approval rate of the i-th PSP is ``0.9 - 0.1 i`` (noisy)."""
    import lightgbm

    from payroute.features import OnlineFeatureStore

    rng = np.random.default_rng(seed)
    store = OnlineFeatureStore(catalog)
    base = store.features(transaction, list(catalog.psp_names))
    frame = pd.concat([base] * 40, ignore_index=True)
    numeric = [c for c in frame.columns if not isinstance(frame[c].dtype, pd.CategoricalDtype)]
    frame[numeric] = frame[numeric] + rng.normal(0, 0.01, (len(frame), len(numeric)))
    position = frame["psp"].cat.codes.to_numpy()
    label = rng.random(len(frame)) < 0.9 - 0.1 * position
    categorical = tuple(c for c in frame.columns if c not in numeric)
    layout = FeatureLayout(
        feature_names=tuple(frame.columns),
        categorical_features=categorical,
        categorical_levels=categorical_levels(frame, categorical),
        spec_version=store.spec.version,
    )
    dataset = lightgbm.Dataset(
        encode_features(frame, layout), label=label.astype(float), categorical_feature=layout.categorical_indices,
        free_raw_data=False,
    )
    params = {"objective": "binary", "num_leaves": 4, "min_data_in_leaf": 5, "verbose": -1, "seed": seed,
              "num_threads": 1, "deterministic": True}
    booster = lightgbm.train(params, dataset, num_boost_round=10)
    return write_bundle(
        directory,
        layout=layout,
        approval_model_text=booster.model_to_string(),
        calibrator=Calibrator("identity"),
        cost_model_texts={},
        metrics={"demo": 1.0},
        version=version,
    )
