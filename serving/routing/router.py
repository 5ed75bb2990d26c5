"""The Router: eligibility → model prior → Thompson-sampling posterior → objective → ranking with reasons.

Two verbs, as a bandit policy has: :meth:`Router.rank` (select, records the propensity at decision time)
and :meth:`Router.observe` (update the posterior and the health guard). The state is plain JSON
(:meth:`Router.snapshot` / :meth:`Router.load_state`) so the service can persist it. One seeded
``numpy.random.Generator`` drives every random choice; decision ids come from a sibling stream.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import operator
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from payroute.catalog import ELIGIBILITY_RULES, Catalog
from payroute.contracts import AttemptOutcome, AttemptStatus, DeclineClass, Transaction
from payroute.serving.routing.bandit import (
    PROBABILITY_EPSILON,
    ResidualPosterior,
    draw_first,
    draw_first_many,
    first_place_policies,
    first_place_policy,
    posterior,
    row_sums,
    segment_of,
)
from payroute.serving.routing.cascade import cascade_order, shares_region, soft_declined_regions, stop_reason
from payroute.serving.routing.config import OBJECTIVES, RoutingConfig
from payroute.serving.routing.decision import Decision, Exclusion, RankedPsp, Reason, build
from payroute.serving.routing.health import DEMOTED, HealthGuard
from payroute.serving.routing.objective import CostTerms, FeeTable, expected_cost, score
from payroute.serving.routing.predictors import ApprovalPredictor, ChargebackCostPredictor

STATE_FORMAT = "payroute-router-state"
STATE_VERSION = 1
NEUTRAL_PRIOR = 0.5
# The transaction fields the catalogue's eligibility rules read (derived from the rules, never listed twice),
# the amount last.
ELIGIBILITY_FIELDS: tuple[str, ...] = (
    *dict.fromkeys(f for f in (*(r.field for r in ELIGIBILITY_RULES), "currency") if f != "amount"), "amount"
)
_eligibility_values = operator.attrgetter(*ELIGIBILITY_FIELDS)  # a transaction's values of those fields, in order
ROW_BY_ROW_DRAWS = 6
"""Batches of fewer first-attempt rows draw their first places row by row (:meth:`Router._draw_rows`)."""
ROUTE_CACHE_SIZE = 4096  # distinct (eligibility fields, amount band) keys kept; the cache restarts when full


class Router:
    """Ranks eligible PSPs for a transaction and learns from outcomes.

    ``predictor`` None (or failing) gives degraded answers: static catalogue order among eligible PSPs.
    ``seed`` fixes every random choice (seeded deterministic mode); None draws fresh entropy.
    """

    def __init__(
        self,
        catalog: Catalog,
        predictor: ApprovalPredictor | None,
        config: RoutingConfig = RoutingConfig(),
        seed: int | None = 0,
        *,
        chargeback_cost: ChargebackCostPredictor | None = None,
    ) -> None:
        self.catalog = catalog
        self.predictor = predictor
        self.config = config
        self.chargeback_cost = chargeback_cost
        self.seed = seed
        policy_seed, id_seed = np.random.SeedSequence(seed).spawn(2)
        self._rng = np.random.default_rng(policy_seed)
        self._id_rng = np.random.default_rng(id_seed)
        self._index = {name: i for i, name in enumerate(catalog.psp_names)}
        self._regions = tuple(frozenset(p.acquiring_regions) for p in catalog.psps)
        self._overlap = np.array([[bool(a & b) for b in self._regions] for a in self._regions])
        self._static_rank = {name: i for i, name in enumerate(catalog.static_order)}
        self._fees = FeeTable(catalog)
        self.posterior = ResidualPosterior(
            catalog.psp_names, half_life_s=config.half_life_s, max_evidence=config.max_evidence,
            shared_max_evidence=config.shared_max_evidence,
        )
        self.health = HealthGuard(config)
        self._decisions: OrderedDict[str, tuple[str, dict[str, float]]] = OrderedDict()
        self._routes: dict[tuple[Any, ...], _Route] = {}  # first-attempt eligibility per key (the catalogue is fixed)
        self._overlaps: dict[bytes, list[list[bool]]] = {}  # acquiring-region overlap among an eligible set
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ select

    def rank(
        self,
        transaction: Transaction,
        *,
        attempt: int = 1,
        previous: Sequence[AttemptOutcome] = (),
        exclude: Sequence[str] = (),
        objective: str | None = None,
        now: dt.datetime | float | None = None,
    ) -> Decision:
        """Rank the eligible PSPs; the first is drawn from the policy and its propensity recorded."""
        objective = self._objective(transaction, objective)
        with self._lock:
            plan = self._plan(transaction, attempt, tuple(previous), tuple(exclude), objective, _epoch(now, transaction))
            if plan.halt is not None:
                return self._finish(plan, None, None)
            return self._finish(plan, *self._predict(plan))

    def rank_many(
        self, transactions: Sequence[Transaction], *, objective: str | None = None, now: dt.datetime | float | None = None
    ) -> list[Decision]:
        """First-attempt decisions for many transactions, equal to calling :meth:`rank` on each in order.

        The per-batch work is done once: eligibility per distinct eligibility key, one predictor call
        (``predict_many``, when the predictor has it: one model call for every row of every transaction).
        The random draws are taken from the same streams in the same order as one-by-one ranking, so
        under a seed the decisions (ids, orders, propensities, reasons) are identical.
        """
        objectives = [self._objective(transaction, objective) for transaction in transactions]
        with self._lock:
            ids = _uuid4_many(self._id_rng, len(transactions))  # the bytes rank() would draw one by one
            plans = [
                self._plan(transaction, 1, (), (), chosen, _epoch(now, transaction), decision_id, with_terms=False)
                for transaction, chosen, decision_id in zip(transactions, objectives, ids)
            ]
            predictions = self._predict_many([plan for plan in plans if plan.halt is None])
            return self._finish_many(plans, predictions)

    def _objective(self, transaction: Transaction, objective: str | None) -> str:
        objective = objective or self.config.objective_by_type.get(transaction.type.value, "expected_value")
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; expected one of {OBJECTIVES}")
        return objective

    def _plan(
        self, transaction: Transaction, attempt: int, previous: tuple[AttemptOutcome, ...], exclude: tuple[str, ...],
        objective: str, now: float, decision_id: str | None = None, with_terms: bool = True,
    ) -> "_Plan":
        """Everything about a decision that needs neither the model nor a random draw (ids aside;
        ``decision_id`` is drawn when None). ``with_terms`` False leaves the cost terms to the caller
        (a batch computes them for all its rows at once; :meth:`_finish` computes them if missing)."""
        if decision_id is None:
            decision_id = _uuid4(self._id_rng)
        segment = segment_of(transaction)
        fields = tuple([_plain(value) for value in _eligibility_values(transaction)])
        if previous or exclude:
            route = self._route(dict(zip(ELIGIBILITY_FIELDS, fields)), previous, exclude)
        else:  # first attempts: one route per eligibility key, the amount as its band against the limits
            key = (fields[:-1], self.catalog.amount_band(transaction.currency, fields[-1]))
            route = self._routes.get(key)
            if route is None:
                route = self._route(dict(zip(ELIGIBILITY_FIELDS, fields)), previous, exclude)
                if len(self._routes) >= ROUTE_CACHE_SIZE:
                    self._routes.clear()
                self._routes[key] = route
        eligible, index = route.eligible, route.index
        common = dict(
            decision_id=decision_id, transaction_id=transaction.id, attempt=attempt, objective=objective,
            segment=segment, excluded=route.excluded, model_version=getattr(self.predictor, "version", None),
        )
        halt = stop_reason(previous) or (None if eligible else "no_eligible_psp")
        previous_class = previous[-1].decline_class if previous else None
        terms = self._cost_terms(transaction, eligible, index) if halt is None and with_terms else None
        return build(_Plan, {
            "transaction": transaction, "attempt": attempt, "previous": previous, "objective": objective, "now": now,
            "common": common, "eligible": eligible, "index": index, "halt": halt, "terms": terms,
            "previous_class": previous_class,
        })

    def _route(self, fields: dict[str, Any], previous: tuple[AttemptOutcome, ...], exclude: tuple[str, ...]) -> "_Route":
        """Eligible PSPs (catalogue rules, minus those tried or excluded by the caller) and the exclusions."""
        report = self.catalog.eligibility(fields)
        excluded = [Exclusion(psp, reason) for psp, reason in report.excluded.items()]
        tried = {outcome.psp for outcome in previous}
        eligible: list[str] = []
        for psp in report.eligible:
            if psp in tried:
                excluded.append(Exclusion(psp, "already_tried"))
            elif psp in exclude:
                excluded.append(Exclusion(psp, "excluded_by_caller"))
            else:
                eligible.append(psp)
        index = np.fromiter((self._index[p] for p in eligible), dtype=np.intp, count=len(eligible))
        return _Route(eligible, index, tuple(excluded))

    def _finish(self, plan: "_Plan", model_probability: np.ndarray | None, failure: str | None) -> Decision:
        """The decision from a plan and the model's probabilities (None: degraded, or halted)."""
        if plan.terms is None and plan.halt is None:  # a batch's plan that is not a batch row
            plan = dataclasses.replace(plan, terms=self._cost_terms(plan.transaction, plan.eligible, plan.index))
        transaction, eligible, index, terms, objective, common = (
            plan.transaction, plan.eligible, plan.index, plan.terms, plan.objective, plan.common
        )
        if plan.halt is not None:
            return Decision(ranking=(), propensity=None, degraded=False, stop=True, stop_reason=plan.halt, **common)
        if model_probability is None:
            return self._degraded(transaction, eligible, index, terms, objective, plan.now, failure, common)
        segment = common["segment"]

        clipped = np.minimum(np.maximum(model_probability, PROBABILITY_EPSILON), 1 - PROBABILITY_EPSILON)  # = np.clip
        if all(p == p for p in model_probability.tolist()):  # every PSP known (no NaN): the usual case
            known = None
            prior, prior_strength = clipped, self.config.prior_strength  # a scalar strength broadcasts: same bits
        else:  # the cold mean fills only PSPs the model does not know
            known = ~np.isnan(model_probability)
            prior = np.where(known, clipped, float(model_probability[known].mean()) if known.any() else NEUTRAL_PRIOR)
            prior_strength = np.where(known, self.config.prior_strength, self.config.cold_prior_strength)
        if plan.previous:  # a retry: PSPs sharing an acquiring region with a soft decline are marked down
            retry_regions = soft_declined_regions(self.catalog, plan.previous)
            same_region = shares_region([self._regions[j] for j in index], retry_regions)
            prior = np.where(same_region, prior * self.config.same_region_retry_factor, prior)
        else:
            same_region = np.zeros(len(index), dtype=bool)
        evidence, residual = self.posterior.evidence(segment, plan.now)
        shift = self.posterior.shared_shift(self.config.prior_strength, plan.now)
        shift = None if shift is None else shift[index]
        mean, strength = posterior(prior, prior_strength, evidence[index], residual[index], shift)
        demoted = self.health.demoted_mask(eligible)
        score_of = self._scorer(objective, terms)
        mean_scores = score_of(mean)
        reasons = self._reasons(
            terms, model_probability, prior, mean, evidence[index], known, demoted, same_region, objective=objective
        )
        c = self.config
        policy = first_place_policy(
            mean, strength, ~demoted, score_of, self._rng, samples=c.propensity_samples,
            exploration_cap=c.exploration_cap, min_propensity=c.min_propensity, probe_rate=c.probe_rate,
            normal_strength=c.normal_approximation_strength, mean_score=mean_scores,
        )
        first = draw_first(policy.probabilities, self._rng)
        return self._choose(
            plan, first, policy.probabilities.tolist(), policy.greedy, float(policy.exploration_weight),
            policy.expected_approval_given_up, mean_scores.tolist(),
            score_of(mean * c.same_region_retry_factor).tolist(), demoted.tolist(), reasons,
            expected_cost(mean, terms).round(6).tolist(), mean.tolist(), prior.tolist(),
        )

    def _choose(
        self, plan: "_Plan", first: int, p_first: list[float], greedy: int, exploration_weight: float,
        given_up: float, scores: list[float], scores_after_decline: list[float], demoted: list[bool],
        reasons: list[tuple[Reason, ...]], costs: list[float], p_approve: list[float], prior: list[float],
    ) -> Decision:
        """The decision from its numbers, as plain per-PSP lists (one decision's, or a batch row's): the
        first PSP drawn from the first-place policy (``p_first``, ``greedy``, its exploration weight and
        expected approval given up), the cascade after it, the ranking with reasons, the remembered baselines."""
        c, eligible, common = self.config, plan.eligible, plan.common
        order = cascade_order(first, scores, scores_after_decline, self._overlap_of(plan.index), demoted)
        explored = (_EXPLORED_PROBE if demoted[first] else _EXPLORED_THOMPSON,) if first != greedy else ()
        ranking = tuple(
            build(RankedPsp, {
                "psp": eligible[j], "p_approve": p_approve[j], "expected_cost": costs[j], "score": scores[j],
                "p_first": p_first[j], "reasons": reasons[j] + explored if position == 0 else reasons[j],
            })
            for position, j in enumerate(order)
        )
        baselines = self._remember(common["decision_id"], common["segment"], eligible, prior)
        previous_class = plan.previous_class
        return build(Decision, {
            **common, "ranking": ranking, "propensity": p_first[first], "degraded": False, "stop": False,
            "stop_reason": None, "baselines": baselines,
            "reasons": (
                Reason(code="greedy_psp", value=eligible[greedy]),
                _EXPLORED_YES if first != greedy else _EXPLORED_NO,
                Reason(code="exploration_weight", value=exploration_weight),
                Reason(code="expected_approval_given_up", value=given_up),
                Reason(code="exploration_cap", value=c.exploration_cap),
                *((Reason(code="previous_decline_class", value=previous_class.value),) if previous_class else ()),
            ),
        })

    def _finish_many(
        self, plans: list["_Plan"], predictions: dict[int, tuple[np.ndarray | None, str | None]]
    ) -> list[Decision]:
        """``[self._finish(plan, *prediction) for plan in plans]``, with the per-PSP arithmetic done once.

        Every first-attempt plan with model probabilities becomes a row of (n, width) matrices: prior,
        posterior, scores, costs and the reasons' numbers are computed element by element on them (the
        same operations as :meth:`_finish` on each decision's vector, so the same bits). What draws
        random numbers (the first-place policy, the first PSP) stays per decision, in plan order, from
        the same stream; halted and degraded plans go through :meth:`_finish` at their place.
        """
        rows = [
            plan for plan in plans
            if plan.halt is None and not plan.previous and predictions.get(id(plan), (None,))[0] is not None
        ]
        if rows:
            batch = _BatchArithmetic.build(self, rows, [predictions[id(plan)][0] for plan in rows])
            firsts, p_first, greedy, weights, given_up = self._draw_rows(batch, [len(plan.eligible) for plan in rows])
            after, demoted, prior = batch.scores_after_decline.tolist(), batch.demoted.tolist(), batch.prior.tolist()
        row_of = {id(plan): r for r, plan in enumerate(rows)}
        decisions = []
        for plan in plans:
            r = row_of.get(id(plan))
            if r is None:
                decisions.append(self._finish(plan, *predictions.get(id(plan), (None, None))))
                continue
            m = len(plan.eligible)
            row_demoted = demoted[r][:m]
            decisions.append(self._choose(
                plan, firsts[r], p_first[r][:m], greedy[r], weights[r], given_up[r], batch.score_list[r][:m],
                after[r][:m], row_demoted, batch.reasons(r, m, plan.objective, row_demoted), batch.costs[r][:m],
                batch.p_approve[r][:m], prior[r][:m],
            ))
        return decisions

    def _draw_rows(
        self, batch: "_BatchArithmetic", sizes: list[int]
    ) -> tuple[list[int], list[list[float]], list[int], list[float], list[float]]:
        """Every row's first PSP, first-place probabilities, greedy position, exploration weight and expected
        approval given up, with the draws :meth:`_finish` takes decision by decision, in row order (only rows
        draw in a batch: halted and degraded plans draw nothing). Below :data:`ROW_BY_ROW_DRAWS` rows, row by
        row through :func:`first_place_policy` and :func:`draw_first` on each row's vectors (what
        :meth:`_finish` runs): the batch form's fixed cost is larger than a few rows' own."""
        c = self.config
        options = dict(samples=c.propensity_samples, exploration_cap=c.exploration_cap, min_propensity=c.min_propensity,
                       probe_rate=c.probe_rate, normal_strength=c.normal_approximation_strength)
        if len(sizes) < ROW_BY_ROW_DRAWS:
            firsts, p_first, greedy, weights, given_up = [], [], [], [], []
            t = batch.terms
            for r, m in enumerate(sizes):
                terms = CostTerms(t.fee_if_approved[r, :m], t.fx_if_approved[r, :m], t.fee_if_declined[r, :m],
                                  t.chargeback_if_approved[r, :m], float(t.value_if_approved[r, 0]),
                                  float(t.amount_eur[r, 0]))
                policy = first_place_policy(
                    batch.mean[r, :m], batch.strength[r, :m], ~batch.demoted[r, :m],
                    self._scorer(batch.objectives[r], terms), self._rng, mean_score=batch.scores[r, :m], **options,
                )
                firsts.append(draw_first(policy.probabilities, self._rng))
                p_first.append(policy.probabilities.tolist())
                greedy.append(policy.greedy)
                weights.append(float(policy.exploration_weight))
                given_up.append(policy.expected_approval_given_up)
            return firsts, p_first, greedy, weights, given_up
        policies = first_place_policies(
            batch.mean, batch.strength, ~batch.demoted, batch.valid, batch.score_rows, self._rng,
            mean_score=batch.scores, **options,
        )
        # Every per-row number as Python lists at once (per-row slicing and .tolist() cost more)
        return (
            draw_first_many(policies.probabilities, policies.uniforms).tolist(), policies.probabilities.tolist(),
            policies.greedy.tolist(), policies.exploration_weight.tolist(),
            row_sums(policies.probabilities * policies.approval_given_up).tolist(),  # left to right
        )

    def _overlap_of(self, index: np.ndarray) -> list[list[bool]]:
        """Which of these PSPs share an acquiring region (``overlap[i][j]``), cached per eligible set."""
        key = index.tobytes()
        overlap = self._overlaps.get(key)
        if overlap is None:
            overlap = self._overlaps[key] = self._overlap[np.ix_(index, index)].tolist()
        return overlap

    def _predict(self, plan: "_Plan") -> tuple[np.ndarray | None, str | None]:
        """The model's P(approve) per eligible PSP, or (None, why) when the router must degrade."""
        if self.predictor is None:
            return None, "no_predictor"
        try:
            raw = self.predictor.predict(
                plan.transaction, plan.eligible, attempt=plan.attempt, previous_decline_class=plan.previous_class
            )
        except Exception as error:  # a failing model must never fail the payment: degrade
            return None, f"predictor_failed:{type(error).__name__}"
        return _checked(raw, len(plan.eligible))

    def _predict_many(self, plans: list["_Plan"]) -> dict[int, tuple[np.ndarray | None, str | None]]:
        """Predictions for first-attempt plans, keyed by ``id(plan)``: one ``predict_many`` call when the
        predictor offers it (if it raises, each plan is predicted alone, so failures stay per decision)."""
        batch = getattr(self.predictor, "predict_many", None)
        if batch is not None and plans:
            try:
                raws = batch([(plan.transaction, plan.eligible) for plan in plans])
                if len(raws) == len(plans):
                    return dict(zip(map(id, plans), _checked_many(raws, [len(plan.eligible) for plan in plans])))
            except Exception:  # fall back to one call per transaction: the same answers as rank()
                pass
        return {id(plan): self._predict(plan) for plan in plans}

    def _degraded(
        self, transaction: Transaction, eligible: list[str], index: np.ndarray, terms: CostTerms,
        objective: str, now: float, failure: str | None, common: dict[str, Any],
    ) -> Decision:
        """Static catalogue order among eligible PSPs; deterministic, so the propensity is 1."""
        order = sorted(range(len(eligible)), key=lambda j: self._static_rank[eligible[j]])
        evidence, residual = self.posterior.evidence(segment_of(transaction), now)
        neutral = np.full(len(eligible), NEUTRAL_PRIOR)
        mean, _ = posterior(neutral, np.full(len(eligible), self.config.cold_prior_strength), evidence[index], residual[index])
        scores, costs = self._scorer(objective, terms)(mean), expected_cost(mean, terms)
        ranking = tuple(
            RankedPsp(
                psp=eligible[j], p_approve=float(mean[j]), expected_cost=round(float(costs[j]), 6),
                score=float(scores[j]), p_first=1.0 if position == 0 else 0.0,
                reasons=(Reason(code="degraded", value=failure), Reason(code="static_priority", value=self._static_rank[eligible[j]]),
                         Reason(code="health", value=self.health.state(eligible[j]).state)),
            )
            for position, j in enumerate(order)
        )
        baselines = self._remember(common["decision_id"], common["segment"], eligible, neutral.tolist())
        return Decision(
            ranking=ranking, propensity=1.0, degraded=True, reasons=(Reason(code="degraded", value=failure),), baselines=baselines,
            **common,
        )

    def _cost_terms(self, transaction: Transaction, eligible: list[str], index: np.ndarray) -> CostTerms:
        amount = float(transaction.amount)
        fee, fx, declined = self._fees.components(transaction.currency, amount, index)
        amount_eur = amount / float(self.catalog.fx_rate(transaction.currency))
        if self.chargeback_cost is not None:
            chargeback = np.asarray(self.chargeback_cost.expected_chargeback_cost(transaction, eligible), dtype=np.float64)
        else:
            rate = self.config.chargeback_rate_by_vertical.get(transaction.vertical.value, 0.0)
            chargeback = np.empty(len(eligible))  # = np.full, without its Python wrapper
            chargeback.fill(rate * (amount_eur + self.config.chargeback_fee_eur))
        value = self.config.approval_value(transaction.vertical.value) * amount_eur
        return CostTerms(fee, fx, declined, chargeback, value, amount_eur)

    def _scorer(self, objective: str, terms: CostTerms):
        minimum = self.config.least_cost_min_probability
        return lambda approval: score(objective, approval, terms, min_probability=minimum)

    def _reasons(
        self, terms: CostTerms, model_probability: np.ndarray, prior: np.ndarray, mean: np.ndarray, evidence: np.ndarray,
        known: np.ndarray | None, demoted: np.ndarray, same_region: np.ndarray, *, objective: str,
    ) -> list[tuple[Reason, ...]]:
        """Per PSP: model probability, posterior adjustment (posterior mean − prior mean, after any cascade
        factor), evidence, health, cost components. ``known``: which PSPs the model knows (None: all)."""
        costs = np.array(  # (4, m): np.array of the rows, as np.stack gives them without its Python wrapper
            [terms.fee_if_approved, terms.fx_if_approved, terms.fee_if_declined, terms.chargeback_if_approved]
        ).round(4).tolist()
        value = Reason(code="value_eur", value=round(terms.value_if_approved, 4)) if objective == "expected_value" else None
        adjustment = mean - prior if known is None else np.where(known, mean - prior, np.nan)  # NaN: a cold PSP
        return _reason_rows(
            model_probability.tolist(), adjustment.round(6).tolist(),
            evidence.round(3).tolist(), costs, demoted.tolist(), same_region.tolist(), value,
            (Reason(code="same_region_as_declined", value=self.config.same_region_retry_factor),),
        )

    def _remember(self, decision_id: str, segment: str, eligible: list[str], prior: list[float]) -> dict[str, float]:
        """Keep the decision's baselines (prior mean per eligible PSP) for its outcomes; returns them."""
        baselines = dict(zip(eligible, prior))
        self._decisions[decision_id] = (segment, baselines)
        while len(self._decisions) > self.config.decision_memory:
            self._decisions.popitem(last=False)
        return baselines

    # ------------------------------------------------------------------ update

    def observe(
        self, outcome: AttemptOutcome, transaction: Transaction, decision_id: str | None = None, *,
        baseline: float | None = None,
    ) -> None:
        """Learn from one attempt: health from errors/timeouts; the posterior from approvals and PSP-class
        failures. Customer- and hard-class declines say nothing about the PSP and leave the posterior alone.

        The residual's baseline is ``baseline`` when given (the decision's ``baselines[psp]``, as logged:
        replay is then exact), else the remembered decision's, else the model's current prediction."""
        now = outcome.timestamp.timestamp()
        with self._lock:
            self.health.observe(outcome.psp, outcome.status, now)
            if outcome.psp not in self._index:
                return
            if outcome.status != AttemptStatus.approved and outcome.decline_class != DeclineClass.soft:
                return
            if baseline is None:
                baseline = self._baseline(outcome, transaction, decision_id)
            if baseline is None:
                return
            segment = segment_of(transaction)
            self.posterior.update(segment, outcome.psp, outcome.status == AttemptStatus.approved, baseline, now)

    def _baseline(self, outcome: AttemptOutcome, transaction: Transaction, decision_id: str | None) -> float | None:
        """The prior mean the PSP had at decision time (remembered), else the model's current prediction."""
        remembered = self._decisions.get(decision_id) if decision_id else None
        if remembered is not None and outcome.psp in remembered[1]:
            return remembered[1][outcome.psp]
        if self.predictor is None:
            return NEUTRAL_PRIOR
        try:
            value = float(np.asarray(self.predictor.predict(transaction, [outcome.psp], attempt=outcome.attempt))[0])
        except Exception:
            return None
        return None if np.isnan(value) else min(max(value, PROBABILITY_EPSILON), 1 - PROBABILITY_EPSILON)

    # ------------------------------------------------------------------ state

    def snapshot(self) -> dict[str, Any]:
        """Bandit, health and RNG state as JSON-able data."""
        with self._lock:
            return {
                "format": STATE_FORMAT, "version": STATE_VERSION, "catalog_version": self.catalog.version,
                "posterior": self.posterior.to_json(), "health": self.health.to_json(),
                "rng": {"policy": self._rng.bit_generator.state, "ids": self._id_rng.bit_generator.state},
            }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`snapshot` (PSPs no longer in the catalogue are dropped)."""
        if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
            raise ValueError(f"not a {STATE_FORMAT} v{STATE_VERSION} state")
        with self._lock:
            self.posterior.load_json(state["posterior"])
            self.health.load_json(state["health"])
            if "rng" in state:
                self._rng.bit_generator.state = state["rng"]["policy"]
                self._id_rng.bit_generator.state = state["rng"]["ids"]

    @classmethod
    def restore(
        cls, catalog: Catalog, predictor: ApprovalPredictor | None, state: dict[str, Any],
        config: RoutingConfig = RoutingConfig(), **kwargs: Any,
    ) -> "Router":
        router = cls(catalog, predictor, config, **kwargs)
        router.load_state(state)
        return router


@dataclass(frozen=True)
class _Route:
    """Where a transaction may go: eligible PSPs (catalogue order), their catalogue positions, exclusions."""

    eligible: list[str]
    index: np.ndarray
    excluded: tuple[Exclusion, ...]


@dataclass(frozen=True)
class _Plan:
    """A decision before the model is asked: eligibility, exclusions, cost terms, the ids (or why it halts)."""

    transaction: Transaction
    attempt: int
    previous: tuple[AttemptOutcome, ...]
    objective: str
    now: float
    common: dict[str, Any]
    eligible: list[str]
    index: np.ndarray
    halt: str | None
    terms: CostTerms | None
    previous_class: DeclineClass | None


class _BatchArithmetic:
    """The deterministic per-PSP numbers of many first-attempt decisions, as (n, width) matrices.

    Row r holds plan r's eligible PSPs in its own order in the first m_r columns (the rest is padding
    that no row reads back). Only element-wise operations touch the matrices, so each row equals the
    vector :meth:`Router._finish` computes for that decision alone.
    """

    def __init__(self, **arrays: Any) -> None:
        self.__dict__.update(arrays)

    @classmethod
    def build(cls, router: Router, plans: list["_Plan"], probabilities: list[np.ndarray]) -> "_BatchArithmetic":
        c, n = router.config, len(plans)
        width = max(len(plan.eligible) for plan in plans)
        model = np.full((n, width), np.nan)
        index = np.zeros((n, width), dtype=np.intp)
        valid = np.zeros((n, width), dtype=bool)
        fee, fx, declined, chargeback = (np.zeros((n, width)) for _ in range(4))
        value, amount = np.zeros((n, 1)), np.ones((n, 1))
        cold_mean = np.full((n, 1), NEUTRAL_PRIOR)
        for r, (plan, probability) in enumerate(zip(plans, probabilities)):
            m = len(plan.eligible)
            model[r, :m], index[r, :m], valid[r, :m] = probability, plan.index, True
        # only rows with a PSP the model does not know get a cold mean (the expression of _finish)
        for r in np.flatnonzero((np.isnan(model) & valid).any(axis=1)).tolist():
            known = ~np.isnan(probabilities[r])
            cold_mean[r, 0] = float(probabilities[r][known].mean()) if known.any() else NEUTRAL_PRIOR
        now = np.array([plan.now for plan in plans], dtype=np.float64)
        evidence_all, residual_all = router.posterior.evidence_many([plan.common["segment"] for plan in plans], now)
        shifts = router.posterior.shared_shift(c.prior_strength, now[:, None])  # (n, n_psps) or None
        _batch_cost_terms(router, plans, index, valid, fee, fx, declined, chargeback, value, amount)
        rows = np.arange(n)[:, None]
        known = ~np.isnan(model)
        clipped = np.minimum(np.maximum(model, PROBABILITY_EPSILON), 1 - PROBABILITY_EPSILON)
        prior = np.where(known, clipped, cold_mean)
        prior_strength = np.where(known, c.prior_strength, c.cold_prior_strength)
        evidence, residual = evidence_all[rows, index], residual_all[rows, index]
        shift = None if shifts is None else shifts[rows, index]
        mean, strength = posterior(prior, prior_strength, evidence, residual, shift)
        demoted = router.health.demoted_mask(list(router.catalog.psp_names))[index] & valid
        terms = CostTerms(fee, fx, declined, chargeback, value, amount)
        scores, after = np.zeros((n, width)), np.zeros((n, width))
        minimum = c.least_cost_min_probability
        for objective in {plan.objective for plan in plans}:
            chosen = np.array([plan.objective == objective for plan in plans])
            if chosen.all():
                scores = score(objective, mean, terms, min_probability=minimum)
                after = score(objective, mean * c.same_region_retry_factor, terms, min_probability=minimum)
                break
            subset = CostTerms(fee[chosen], fx[chosen], declined[chosen], chargeback[chosen], value[chosen], amount[chosen])
            scores[chosen] = score(objective, mean[chosen], subset, min_probability=minimum)
            after[chosen] = score(objective, mean[chosen] * c.same_region_retry_factor, subset, min_probability=minimum)
        adjustment = np.where(known, mean - prior, np.nan).round(6)
        return cls(
            mean=mean, strength=strength, prior=prior, demoted=demoted, scores=scores, scores_after_decline=after,
            valid=valid, terms=terms, objectives=[plan.objective for plan in plans], min_probability=minimum,
            costs=expected_cost(mean, terms).round(6).tolist(), p_approve=mean.tolist(), score_list=scores.tolist(),
            reason_columns=[
                model.tolist(), adjustment.tolist(), evidence.round(3).tolist(),
                *(a.round(4).tolist() for a in (fee, fx, declined, chargeback)),
            ],
            value_reason=[round(float(v), 4) for v in value[:, 0]],
        )

    def score_rows(self, approval: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The objective of rows ``rows`` for ``approval`` of shape (len(rows), width) or (len(rows), K, width)
        (each row under its own objective and cost terms; element-wise, as :func:`score` on one decision)."""
        def take(values: np.ndarray, chosen: np.ndarray) -> np.ndarray:
            picked = values[chosen]
            return picked[:, None, :] if approval.ndim == 3 else picked

        objectives = [self.objectives[r] for r in rows]
        out = None
        for objective in dict.fromkeys(objectives):
            mask = np.array([o == objective for o in objectives])
            chosen = rows[mask]
            t = self.terms
            terms = CostTerms(*(take(a, chosen) for a in (t.fee_if_approved, t.fx_if_approved, t.fee_if_declined,
                                                          t.chargeback_if_approved, t.value_if_approved, t.amount_eur)))
            values = score(objective, approval[mask], terms, min_probability=self.min_probability)
            if mask.all():
                return values
            if out is None:
                out = np.zeros(approval.shape)
            out[mask] = values
        return out

    def reasons(self, r: int, m: int, objective: str, demoted: list[bool]) -> list[tuple[Reason, ...]]:
        """Row r's reasons per PSP, as :meth:`Router._reasons` gives them for the decision alone."""
        model, adjustment, evidence, *costs = (column[r][:m] for column in self.reason_columns)
        value = Reason(code="value_eur", value=self.value_reason[r]) if objective == "expected_value" else None
        return _reason_rows(model, adjustment, evidence, costs, demoted, [False] * m, value, ())


def _batch_cost_terms(
    router: Router, plans: list["_Plan"], index: np.ndarray, valid: np.ndarray, fee: np.ndarray, fx: np.ndarray,
    declined: np.ndarray, chargeback: np.ndarray, value: np.ndarray, amount_eur: np.ndarray,
) -> None:
    """Fill the (n, width) cost-term matrices of a batch (and the (n, 1) value and EUR amount): what
    :meth:`Router._cost_terms` gives each row, computed per currency for all its rows at once (the same
    element-wise operations: same bits; zero past each row's PSPs)."""
    amount = np.array([float(plan.transaction.amount) for plan in plans])
    currencies = [plan.transaction.currency for plan in plans]
    verticals = [plan.transaction.vertical._value_ for plan in plans]
    rate = np.array([float(router.catalog.fx_rate(currency)) for currency in currencies])
    amount_eur[:, 0] = amount / rate
    for currency in dict.fromkeys(currencies):
        chosen = np.array([c == currency for c in currencies])
        a_fee, a_fx, a_dec, b_fee, b_fx, b_dec = router._fees.coefficients(currency)
        where, at = index[chosen], amount[chosen][:, None]
        fee[chosen] = a_fee[where] + b_fee[where] * at
        fx[chosen] = a_fx[where] + b_fx[where] * at
        declined[chosen] = a_dec[where] + b_dec[where] * at
    config = router.config
    if router.chargeback_cost is not None:
        for r, plan in enumerate(plans):
            chargeback[r, : len(plan.eligible)] = np.asarray(
                router.chargeback_cost.expected_chargeback_cost(plan.transaction, plan.eligible), dtype=np.float64
            )
    else:
        rates = np.array([config.chargeback_rate_by_vertical.get(v, 0.0) for v in verticals])
        chargeback[:] = (rates * (amount_eur[:, 0] + config.chargeback_fee_eur))[:, None]
    value[:, 0] = np.array([config.approval_value(v) for v in verticals]) * amount_eur[:, 0]
    for matrix in (fee, fx, declined, chargeback):
        matrix[~valid] = 0.0


def _reason_rows(
    model: list, adjustment: list, evidence: list, costs: list[list], demoted: list, same_region: list,
    value: Reason | None, region: tuple[Reason, ...],
) -> list[tuple[Reason, ...]]:
    """Each PSP's reasons in their public order, from plain per-PSP lists (``costs``: fee, FX, decline fee,
    chargeback). A NaN adjustment marks a PSP the model does not know: its model probability and
    adjustment are None and its prior is cold. One definition for a decision alone and for a batch row."""
    extra = () if value is None else (value,)
    rows = []
    for probability, change, count, fee, fx, declined, chargeback, is_demoted, shares in zip(
        model, adjustment, evidence, *costs, demoted, same_region
    ):
        cold = change != change
        rows.append((
            Reason(code="model_probability", value=None if cold else probability),
            _PRIOR_COLD if cold else _PRIOR_MODEL,
            Reason(code="posterior_adjustment", value=None if cold else change),
            Reason(code="evidence", value=count),
            _HEALTH_DEMOTED if is_demoted else _HEALTH_OK,
            Reason(code="fee_eur", value=fee), Reason(code="fx_eur", value=fx), Reason(code="decline_fee_eur", value=declined),
            Reason(code="chargeback_eur", value=chargeback),
            *extra,
            *(region if shares else ()),
        ))
    return rows


_PRIOR_COLD, _PRIOR_MODEL = Reason(code="prior", value="cold"), Reason(code="prior", value="model")
_HEALTH_DEMOTED, _HEALTH_OK = Reason(code="health", value=DEMOTED), Reason(code="health", value="healthy")
_EXPLORED_YES, _EXPLORED_NO = Reason(code="explored", value=True), Reason(code="explored", value=False)
_EXPLORED_PROBE, _EXPLORED_THOMPSON = Reason(code="exploration", value="probe"), Reason(code="exploration", value="thompson")


def _checked(raw: Any, count: int) -> tuple[np.ndarray | None, str | None]:
    """A predictor's answer as a probability vector of length ``count``, or (None, why it is unusable)."""
    try:
        probability = np.asarray(raw, dtype=np.float64).reshape(-1)
    except Exception as error:
        return None, f"predictor_failed:{type(error).__name__}"
    if probability.shape != (count,):
        return None, "predictor_bad_shape"
    if any(p < 0.0 or p > 1.0 for p in probability.tolist()):  # NaN passes (a PSP the model does not know)
        return None, "predictor_out_of_range"
    return probability, None


def _checked_many(raws: Sequence[Any], counts: list[int]) -> list[tuple[np.ndarray | None, str | None]]:
    """``[_checked(raw, count) ...]``: one range check over every row when each is already a float64 vector
    of its length (a batch predictor's answer), else row by row (each row keeps its own failure)."""
    if all(type(raw) is np.ndarray and raw.dtype == np.float64 and raw.shape == (count,)
           for raw, count in zip(raws, counts)):
        values = np.concatenate(raws) if raws else np.zeros(0)
        if not np.any((values < 0) | (values > 1)):
            return [(raw, None) for raw in raws]
    return [_checked(raw, count) for raw, count in zip(raws, counts)]


def _plain(value: Any) -> Any:
    """An enum member as its plain value (the catalogue's rules compare plain strings; ``_value_`` is what
    the ``value`` property returns, without the descriptor's cost)."""
    return value._value_ if isinstance(value, Enum) else value


def _uuid4(rng: np.random.Generator) -> str:
    """A version-4 UUID string from the seeded id stream (deterministic under a seed): 16 bytes from two
    raw 64-bit draws, little-endian, which are the bytes ``rng.bytes(16)`` gives (tested), at 1/5 the cost."""
    draw = rng.bit_generator.random_raw
    raw = bytearray(int(draw()).to_bytes(8, "little") + int(draw()).to_bytes(8, "little"))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    t = raw.hex()
    return f"{t[:8]}-{t[8:12]}-{t[12:16]}-{t[16:20]}-{t[20:]}"


_FEW_IDS = 6


def _uuid4_many(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` version-4 UUIDs, 16 bytes each from the id stream: the bytes ``rng.bytes(16)`` gives
    (two raw 64-bit draws, little-endian; tested), taken without ``Generator.bytes``' 7 µs per call.
    One draw of 2·count words equals count draws of two, so a batch gets the ids one by one would."""
    if count <= _FEW_IDS:  # the same draws one id at a time: cheaper for a few
        return [_uuid4(rng) for _ in range(count)]
    raw = np.frombuffer(rng.bit_generator.random_raw(2 * count).astype("<u8").tobytes(), dtype=np.uint8)
    raw = raw.reshape(count, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    text = raw.tobytes().hex()
    return [
        f"{t[:8]}-{t[8:12]}-{t[12:16]}-{t[16:20]}-{t[20:]}" for t in (text[32 * i:32 * (i + 1)] for i in range(count))
    ]


def _epoch(now: dt.datetime | float | None, transaction: Transaction) -> float:
    if now is None:
        return transaction.timestamp.timestamp()
    return now.timestamp() if isinstance(now, dt.datetime) else float(now)
