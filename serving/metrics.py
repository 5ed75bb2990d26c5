"""The service's own Prometheus metrics, exported through BentoML's ``/metrics``.

``prometheus_client`` is imported when the service is instantiated, after BentoML has set
``PROMETHEUS_MULTIPROC_DIR`` in the worker: the values then live in the multiprocess files that
BentoML's collector reads. A private registry (not the global one) lets several service instances live
in one process (tests) without duplicate-registration errors; :meth:`ServiceMetrics.merge` appends our
families to BentoML's text only when its collector did not already include them.
"""

from __future__ import annotations

LAG_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800, 3600, 86400)


class ServiceMetrics:
    """Counters and histograms of routing decisions, fail-open answers, feedback and model reloads."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "payroute_decisions", "Routing decisions by first-ranked PSP", ["psp"], registry=r
        )
        self.degraded = Counter(
            "payroute_degraded_answers", "Decisions answered from the static order, by cause", ["cause"], registry=r
        )
        self.feedback = Counter(
            "payroute_feedback_received", "Feedback requests by result", ["result"], registry=r
        )
        self.unknown_decision = Counter(
            "payroute_feedback_unknown_decision",
            "Outcomes stored but not learned from (decision id not issued here for this transaction)",
            registry=r,
        )
        self.learn_errors = Counter("payroute_learn_errors", "Outcomes that failed to update state", registry=r)
        self.feedback_lag = Histogram(
            "payroute_feedback_lag_seconds",
            "Seconds from the attempt's timestamp to the outcome's receipt",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.reloads = Counter("payroute_model_reloads", "Champion reload attempts by result", ["result"], registry=r)
        self.model_loaded = Gauge(
            "payroute_model_loaded", "1 when a champion model is loaded", multiprocess_mode="livemax", registry=r
        )
        self.snapshots = Counter("payroute_snapshots", "State snapshots written", registry=r)
        self.rank_groups = Histogram(
            "payroute_rank_group_size",
            "Concurrent /rank requests ranked together in one call (1: alone)",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.replayed = Gauge(
            "payroute_replayed_outcomes", "Outcomes replayed from the log at start-up", multiprocess_mode="livemax",
            registry=r,
        )

    def merge(self, exposition: str) -> str:
        """BentoML's exposition text plus ours, unless its multiprocess collector already has ours."""
        from prometheus_client import generate_latest

        if "payroute_decisions_total" in exposition:
            return exposition
        return exposition + generate_latest(self.registry).decode("utf-8")
