"""LightGBM training shared by the approval classifier and the cost regressors: seeded, deterministic, with progress."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from payroute.model_bundle import FeatureLayout


@dataclass(frozen=True)
class BoosterFit:
    model_text: str
    best_iteration: int
    gain_importance: dict[str, float]


def deterministic_params(params: Mapping[str, Any], seed: int, num_threads: int) -> dict[str, Any]:
    """Parameters that make LightGBM reproducible: fixed seeds, row-wise histograms, fixed thread count."""
    return {
        **params,
        "seed": seed,
        "bagging_seed": seed,
        "feature_fraction_seed": seed,
        "data_random_seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": num_threads,
        "verbosity": -1,
    }


def fit_booster(
    train_matrix: np.ndarray,
    train_target: np.ndarray,
    valid_matrix: np.ndarray,
    valid_target: np.ndarray,
    layout: FeatureLayout,
    params: Mapping[str, Any],
    *,
    num_boost_round: int,
    early_stopping_rounds: int,
    description: str = "boosting",
    progress: bool = True,
) -> BoosterFit:
    """Train with early stopping on the validation rows; return the model as LightGBM text."""
    import lightgbm
    from tqdm.auto import tqdm

    dataset_params = {"max_bin": params.get("max_bin", 255), "verbosity": -1}
    names = list(layout.feature_names)
    categorical = layout.categorical_indices
    train_set = lightgbm.Dataset(
        train_matrix, train_target, feature_name=names, categorical_feature=categorical, params=dataset_params, free_raw_data=True
    )
    valid_set = lightgbm.Dataset(
        valid_matrix, valid_target, reference=train_set, feature_name=names, categorical_feature=categorical, free_raw_data=True
    )
    with tqdm(total=num_boost_round, desc=description, unit="tree", disable=not progress, leave=False) as bar:

        def advance(env: Any) -> None:
            bar.update(1)

        booster = lightgbm.train(
            dict(params),
            train_set,
            num_boost_round=num_boost_round,
            valid_sets=[valid_set],
            valid_names=["validation"],
            callbacks=[lightgbm.early_stopping(early_stopping_rounds, verbose=False), advance],
        )
    best = booster.best_iteration or booster.current_iteration()
    gains = booster.feature_importance(importance_type="gain", iteration=best)
    return BoosterFit(
        model_text=booster.model_to_string(num_iteration=best),
        best_iteration=int(best),
        gain_importance={name: float(g) for name, g in zip(names, gains)},
    )
