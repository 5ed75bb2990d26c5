"""The logging policy that produced the simulated history, and the exact probabilities it used.

The operator's rule book is a noisy static-priority score per (country, PSP): lower ``static_priority``
scores higher, plus a fixed per-market tweak. The policy mixes a softmax over those scores with a
uniform choice:

    π(j | x) = (1 − ε) · softmax_j(score(country, j) / τ)  +  ε / |E(x)|      for j in E(x)

over the eligible PSPs ``E(x)`` (``catalog.eligibility_matrix``). Every eligible PSP has ``π ≥ ε/|E|``
> 0, so the history supports off-policy evaluation. Retries choose among the eligible PSPs not yet
tried with the same ``π`` renormalised; the recorded propensity of a retry is that conditional
probability ``π(j) / Σ_{k untried} π(k)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from payroute.catalog import Catalog


@dataclass(frozen=True)
class LoggingPolicy:
    """ε-soft softmax over fixed static scores. ``scores``: (n_countries, n_psps), catalogue order."""

    countries: tuple[str, ...]
    scores: np.ndarray
    epsilon: float
    temperature: float

    @classmethod
    def from_catalog(cls, catalog: Catalog, epsilon: float, temperature: float, rng: np.random.Generator) -> "LoggingPolicy":
        priority = np.array([p.static_priority for p in catalog.psps], dtype=float)
        countries = tuple(catalog.countries) + ("",)  # last row: a country outside the catalogue
        scores = -0.5 * priority[None, :] + rng.normal(0.0, 0.5, (len(countries), len(priority)))
        return cls(countries=countries, scores=scores, epsilon=epsilon, temperature=temperature)

    def probabilities(self, country_index: np.ndarray, eligible: np.ndarray) -> np.ndarray:
        """π over PSPs for each row, shape (n, n_psps); zero where not eligible; rows sum to 1
        (rows with no eligible PSP are all zero)."""
        logits = self.scores[country_index] / self.temperature
        logits = np.where(eligible, logits, -np.inf)
        top = np.max(np.where(eligible, logits, -1e300), axis=1, keepdims=True)
        weights = np.where(eligible, np.exp(logits - top), 0.0)
        count = eligible.sum(axis=1, keepdims=True)
        total = weights.sum(axis=1, keepdims=True)
        softmax = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
        uniform = np.divide(eligible.astype(float), count, out=np.zeros_like(weights), where=count > 0)
        return (1 - self.epsilon) * softmax + self.epsilon * uniform


def choose(probabilities: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Inverse-CDF choice per row: the PSP column whose cumulative band contains the uniform draw.
    Rows whose probabilities are all zero get -1."""
    cumulative = np.cumsum(probabilities, axis=1)
    total = cumulative[:, -1]
    pick = (uniforms[:, None] * total[:, None] >= cumulative).sum(axis=1)
    pick = np.minimum(pick, probabilities.shape[1] - 1)
    # Never land on a zero-probability column because of floating-point edges.
    bad = probabilities[np.arange(len(pick)), pick] <= 0
    if bad.any():
        pick[bad] = np.argmax(probabilities[bad], axis=1)
    return np.where(total > 0, pick, -1)
