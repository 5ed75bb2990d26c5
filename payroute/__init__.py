"""payroute: ML-driven payment routing.

Stages, upstream to downstream: ``payroute.simulator`` (the world) → ``payroute.features`` →
``payroute.training`` → exported bundles in ``models/`` → ``payroute.serving`` (ranker, service,
dispatcher) → outcome log → back to features. Shared contracts live in ``payroute.contracts`` and
``payroute.catalog``.
"""

__version__ = "0.1.0"
