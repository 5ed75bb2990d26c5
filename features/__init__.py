"""payroute.features: feature declarations, offline builder and online store from one definition.

``FeatureSpec`` declares every feature once; ``build_training_table`` / ``build_scoring_table``
(offline, sorted scans) and ``OnlineFeatureStore`` (keyed decayed counters) interpret it, and a parity
test holds the two to 1e-9. See ``docs/features.md``.
"""

from payroute.features.offline import build_scoring_table, build_training_table
from payroute.features.online import Backend, InMemoryBackend, OnlineFeatureStore
from payroute.features.spec import DEFAULT_SPEC, FeatureSpec, KeyLevel, RateFamily

__all__ = [
    "DEFAULT_SPEC",
    "Backend",
    "FeatureSpec",
    "InMemoryBackend",
    "KeyLevel",
    "OnlineFeatureStore",
    "RateFamily",
    "build_scoring_table",
    "build_training_table",
]
