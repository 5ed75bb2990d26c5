"""The hidden truth about each PSP: how well it approves where, how often it fails, how slow it is,
and the decline codes it speaks.

A PSP's approval logit for a transaction that passed the customer and fraud checks is

    base + cross_border_penalty·[card region outside its acquiring regions] + country[country]
         + network[card_network] + method[payment_method] + vertical[vertical]
         + three_ds_effect·three_ds + amount_sensitivity·log(amount_eur / 50)

plus issuer × PSP affinity, daily seasonality, drift and incidents (added in :mod:`world`). The
catalogue says what a PSP *accepts*; these profiles say how well it *performs*, which the operator
never sees directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from payroute.contracts import DeclineReason as R


@dataclass(frozen=True)
class PspTruth:
    """One PSP's hidden performance profile (logit-scale effects; rates are probabilities)."""

    base: float
    cross_border_penalty: float
    country: dict[str, float] = field(default_factory=dict)
    network: dict[str, float] = field(default_factory=dict)
    method: dict[str, float] = field(default_factory=dict)
    vertical: dict[str, float] = field(default_factory=dict)
    three_ds_effect: float = 0.3
    amount_sensitivity: float = -0.10
    error_rate: float = 0.006
    timeout_rate: float = 0.003
    latency_median_ms: float = 450.0
    latency_sigma: float = 0.35
    timeout_ms: float = 15_000.0
    code_style: str = "iso"


HIGH_RISK = ("igaming", "sports_betting", "forex", "crypto")

DEFAULT_PROFILES: dict[str, PspTruth] = {
    # Local EU acquirer: excellent on domestic EU cards, weak cross-border, dislikes high risk a bit.
    "euroacq": PspTruth(
        base=2.5, cross_border_penalty=-1.4, country={"DE": 0.25, "FR": 0.1, "NL": 0.15, "PL": -0.15},
        network={"maestro": 0.3, "visa": 0.1}, vertical={"igaming": -0.2, "sports_betting": -0.2, "forex": -0.3},
        three_ds_effect=0.45, latency_median_ms=320, code_style="iso",
    ),
    # UK acquirer: best on UK cards, decent on EU, good with amex.
    "britpay": PspTruth(
        base=2.4, cross_border_penalty=-0.9, country={"GB": 0.3}, network={"amex": 0.4, "maestro": -0.2},
        vertical={"igaming": -0.1}, three_ds_effect=0.35, latency_median_ms=420, code_style="upper",
    ),
    # LATAM local acquirer: the only strong path for Brazilian/Mexican cards; pix approves very well.
    "latamconnect": PspTruth(
        base=2.3, cross_border_penalty=-1.6, country={"BR": 0.2, "CO": -0.3}, network={"elo": 0.5},
        method={"pix": 1.3, "spei": 0.8, "pse": 0.2}, vertical={"forex": -0.3}, amount_sensitivity=-0.15,
        error_rate=0.010, timeout_rate=0.006, latency_median_ms=780, code_style="latam",
    ),
    # Global PSP: nowhere the best at home, everywhere acceptable; strong on amex/jcb/discover, ewallet.
    "globalpay": PspTruth(
        base=1.8, cross_border_penalty=-0.4, network={"amex": 0.5, "jcb": 0.5, "discover": 0.4, "unionpay": 0.3},
        method={"ewallet": 0.4}, vertical={"ecommerce": 0.3, "forex": -0.2, "crypto": -0.5},
        amount_sensitivity=-0.05, error_rate=0.003, timeout_rate=0.002, latency_median_ms=500,
        code_style="stripe",
    ),
    # Cheap but weaker: lower approval, dislikes large amounts, more errors.
    "budgetpay": PspTruth(
        base=1.4, cross_border_penalty=-1.0, vertical={"igaming": -0.3, "sports_betting": -0.3},
        amount_sensitivity=-0.30, three_ds_effect=0.2, error_rate=0.015, timeout_rate=0.008,
        latency_median_ms=900, latency_sigma=0.5, code_style="iso",
    ),
    # High-risk specialist: approves gambling/forex/crypto where mainstream acquirers refuse.
    "riskshield": PspTruth(
        base=1.9, cross_border_penalty=-0.8, network={"troy": 0.5, "rupay": 0.4},
        vertical={"igaming": 0.4, "sports_betting": 0.4, "forex": 0.3, "crypto": 0.3}, amount_sensitivity=-0.05,
        latency_median_ms=700, code_style="numeric",
    ),
    # E-wallets, bank transfers and local methods.
    "walletgate": PspTruth(
        base=2.0, cross_border_penalty=-0.3,
        method={"ewallet": 0.5, "bank_transfer": -0.1, "ideal": 1.1, "blik": 0.9, "interac": 0.6, "upi": 0.1,
                "papara": 0.4, "pix": 0.7, "spei": 0.4, "pse": 0.0},
        amount_sensitivity=-0.08, latency_median_ms=600, code_style="wallet",
    ),
    # Crypto gateway: slow, a little flaky, indifferent to borders.
    "coinbridge": PspTruth(
        base=2.1, cross_border_penalty=0.0, method={"crypto": 0.2}, amount_sensitivity=0.0, error_rate=0.02,
        timeout_rate=0.01, latency_median_ms=1500, latency_sigma=0.6, timeout_ms=30_000, code_style="crypto",
    ),
}

CODE_STYLES = ("iso", "upper", "latam", "stripe", "numeric", "wallet", "crypto")


def generic_profile(name: str, rng: np.random.Generator) -> PspTruth:
    """A plausible profile for a catalogue PSP the default world does not know (custom catalogues)."""
    return PspTruth(
        base=float(rng.normal(1.9, 0.3)),
        cross_border_penalty=float(-abs(rng.normal(0.8, 0.4))),
        amount_sensitivity=float(-abs(rng.normal(0.1, 0.05))),
        error_rate=float(rng.uniform(0.003, 0.012)),
        timeout_rate=float(rng.uniform(0.001, 0.006)),
        latency_median_ms=float(rng.uniform(300, 1000)),
        code_style=CODE_STYLES[int(rng.integers(len(CODE_STYLES)))],
    )


# --------------------------------------------------------------------------------------------------
# Decline-code vocabularies: each PSP's own codes, mapped to the normalised reason
# --------------------------------------------------------------------------------------------------

# ISO 8583-style response codes (primary code first per reason).
_ISO: dict[R, tuple[str, ...]] = {
    R.do_not_honor: ("05", "01"), R.issuer_unavailable: ("91",), R.try_again_later: ("19",),
    R.risk_declined: ("59",), R.not_permitted_for_acquirer: ("58",), R.authentication_required: ("1A",),
    R.psp_error: ("96",), R.psp_timeout: ("68",), R.stolen_card: ("43",), R.lost_card: ("41",),
    R.suspected_fraud: ("34",), R.pickup_card: ("04", "07"), R.restricted_card: ("62",),
    R.insufficient_funds: ("51",), R.expired_card: ("54",), R.incorrect_cvc: ("N7", "82"),
    R.invalid_account: ("14",), R.limit_exceeded: ("61", "65"), R.authentication_failed: ("N8",),
}
_SHORT: dict[R, str] = {
    R.do_not_honor: "DNH", R.issuer_unavailable: "ISSUER_DOWN", R.try_again_later: "RETRY_LATER",
    R.risk_declined: "RISK", R.not_permitted_for_acquirer: "NOT_PERMITTED", R.authentication_required: "SCA_REQUIRED",
    R.psp_error: "SYSTEM_ERROR", R.psp_timeout: "TIMEOUT", R.stolen_card: "STOLEN", R.lost_card: "LOST",
    R.suspected_fraud: "FRAUD", R.pickup_card: "PICKUP", R.restricted_card: "RESTRICTED",
    R.insufficient_funds: "NSF", R.expired_card: "EXPIRED", R.incorrect_cvc: "BAD_CVC",
    R.invalid_account: "INVALID_ACCOUNT", R.limit_exceeded: "LIMIT", R.authentication_failed: "AUTH_FAILED",
}
_STRIPE: dict[R, tuple[str, ...]] = {
    R.do_not_honor: ("do_not_honor", "generic_decline"), R.issuer_unavailable: ("issuer_not_available",),
    R.try_again_later: ("try_again_later",), R.risk_declined: ("transaction_not_allowed",),
    R.not_permitted_for_acquirer: ("card_not_supported",), R.authentication_required: ("authentication_required",),
    R.psp_error: ("processing_error",), R.psp_timeout: ("gateway_timeout",), R.stolen_card: ("stolen_card",),
    R.lost_card: ("lost_card",), R.suspected_fraud: ("fraudulent",), R.pickup_card: ("pickup_card",),
    R.restricted_card: ("restricted_card",), R.insufficient_funds: ("insufficient_funds",),
    R.expired_card: ("expired_card",), R.incorrect_cvc: ("incorrect_cvc",), R.invalid_account: ("invalid_account",),
    R.limit_exceeded: ("card_velocity_exceeded",), R.authentication_failed: ("authentication_failed",),
}


def _vocabulary(style: str) -> dict[R, tuple[str, ...]]:
    """Codes per reason for one style; every reason gets at least one code, the first is primary."""
    reasons = list(R)
    if style == "iso":
        return dict(_ISO)
    if style == "stripe":
        return dict(_STRIPE)
    if style == "upper":
        return {r: (f"DECLINE_{_SHORT[r]}",) for r in reasons}
    if style == "wallet":
        return {r: (f"WG_{_SHORT[r]}",) for r in reasons}
    if style == "crypto":
        return {r: (f"cb.{_SHORT[r].lower()}",) for r in reasons}
    if style == "latam":
        return {r: (f"{1000 + 10 * i}",) for i, r in enumerate(reasons)}
    if style == "numeric":
        return {r: (f"RS{200 + i:03d}",) for i, r in enumerate(reasons)}
    raise ValueError(f"unknown decline-code style {style!r}")


def decline_vocabulary(style: str) -> tuple[dict[str, R], dict[R, str]]:
    """``(code -> reason, reason -> primary code)`` for a code style."""
    by_reason = _vocabulary(style)
    codes = {code: reason for reason, codes_ in by_reason.items() for code in codes_}
    primary = {reason: codes_[0] for reason, codes_ in by_reason.items()}
    return codes, primary
