"""Routing engine: eligibility, objective, Thompson-sampling bandit, propensities, cascade order.

``Router(catalog, predictor, config, seed).rank(transaction) -> Decision`` and ``.observe(outcome,
transaction, decision_id)``; see ``docs/routing.md``.
"""

from payroute.serving.routing.bandit import FirstPlacePolicy, first_place_policy, posterior, segment_of
from payroute.serving.routing.config import OBJECTIVES, RoutingConfig
from payroute.serving.routing.decision import Decision, Exclusion, RankedPsp, Reason
from payroute.serving.routing.health import PspHealth
from payroute.serving.routing.objective import CostTerms, FeeTable, expected_cost, score
from payroute.serving.routing.predictors import ApprovalPredictor, ChargebackCostPredictor, TablePredictor
from payroute.serving.routing.router import Router

__all__ = [
    "OBJECTIVES", "ApprovalPredictor", "ChargebackCostPredictor", "CostTerms", "Decision", "Exclusion", "FeeTable",
    "FirstPlacePolicy", "PspHealth", "RankedPsp", "Reason", "Router", "RoutingConfig", "TablePredictor",
    "expected_cost", "first_place_policy", "posterior", "score", "segment_of",
]
