"""Card issuers and the BIN ranges they own, with each issuer's hidden affinity to each PSP.

An issuer's affinity to a PSP (its risk rules, its routing to the acquirer, its history with that
acquirer) shifts the approval logit at that PSP only, so a router that learns at BIN or issuer level
beats one that learns per country.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from payroute.catalog import Catalog

# Networks a country's issuers issue on, with weights (domestic schemes where they exist).
_NETWORK_MIX: dict[str, dict[str, float]] = {
    "default": {"visa": 0.55, "mastercard": 0.40, "maestro": 0.05},
    "GB": {"visa": 0.62, "mastercard": 0.30, "amex": 0.08},
    "BR": {"visa": 0.40, "mastercard": 0.40, "elo": 0.20},
    "MX": {"visa": 0.55, "mastercard": 0.40, "amex": 0.05},
    "CO": {"visa": 0.55, "mastercard": 0.45},
    "CA": {"visa": 0.55, "mastercard": 0.35, "amex": 0.10},
    "IN": {"visa": 0.40, "mastercard": 0.30, "rupay": 0.30},
    "TR": {"visa": 0.45, "mastercard": 0.40, "troy": 0.15},
    "JP": {"jcb": 0.45, "visa": 0.35, "mastercard": 0.20},
    "DE": {"visa": 0.35, "mastercard": 0.40, "maestro": 0.25},
    "NL": {"visa": 0.40, "mastercard": 0.35, "maestro": 0.25},
}
_BIN_PREFIX: dict[str, tuple[str, ...]] = {
    "visa": ("4",), "mastercard": ("51", "52", "53", "54", "55", "22"), "maestro": ("50", "56", "57", "58"),
    "amex": ("34", "37"), "discover": ("6011", "65"), "jcb": ("35",), "unionpay": ("62",),
    "elo": ("636", "504", "509"), "rupay": ("60", "81", "82"), "troy": ("9792",),
}
_CARD_TYPES = ("debit", "credit", "prepaid")
_CARD_TYPE_WEIGHTS = (0.55, 0.38, 0.07)


@dataclass(frozen=True)
class IssuerBook:
    """Issuers, their BINs and their PSP affinities.

    ``issuers``: one row per issuer (``issuer``, ``country``, ``size``, ``quality``).
    ``bins``: one row per BIN (``card_bin``, ``issuer``, ``card_network``, ``card_type``, ``country``).
    ``affinity``: (n_issuers, n_psps) logit shifts, PSPs in catalogue order.
    """

    issuers: pd.DataFrame
    bins: pd.DataFrame
    affinity: np.ndarray

    @property
    def bin_to_issuer(self) -> dict[str, int]:
        return dict(zip(self.bins["card_bin"], self.bins["issuer"]))


def build_issuers(
    catalog: Catalog, country_weights: dict[str, float], rng: np.random.Generator, n_issuers: int = 300
) -> IssuerBook:
    """Issuers spread over countries by traffic weight (at least 4 each), 2-5 BINs per issuer."""
    countries = list(catalog.countries)
    weights = np.array([country_weights.get(c, 0.01) for c in countries], dtype=float)
    counts = np.maximum(4, np.round(weights / weights.sum() * n_issuers)).astype(int)
    issuer_country = np.repeat(countries, counts)
    n = len(issuer_country)
    issuers = pd.DataFrame(
        {
            "issuer": np.arange(n),
            "country": issuer_country,
            "size": rng.lognormal(0.0, 1.0, n),  # market share within its country
            "quality": rng.normal(0.0, 0.3, n),  # issuer-wide approval tendency, same at every PSP
        }
    )
    psps = catalog.psp_names
    # Issuer x PSP affinity: broad noise, plus a few strong likes and dislikes per issuer.
    affinity = rng.normal(0.0, 0.45, (n, len(psps)))
    strong = rng.random((n, len(psps))) < 0.08
    affinity[strong] += rng.choice([-1.6, 1.0], size=strong.sum(), p=[0.6, 0.4])

    rows: list[tuple[str, int, str, str, str]] = []
    used: set[str] = set()
    for issuer, country in enumerate(issuer_country):
        mix = _NETWORK_MIX.get(country, _NETWORK_MIX["default"])
        networks = list(mix)
        for _ in range(int(rng.integers(2, 6))):
            network = networks[rng.choice(len(networks), p=np.array(list(mix.values())) / sum(mix.values()))]
            card_type = _CARD_TYPES[rng.choice(3, p=_CARD_TYPE_WEIGHTS)]
            length = 8 if rng.random() < 0.3 else 6
            while True:
                prefix = _BIN_PREFIX[network][rng.integers(len(_BIN_PREFIX[network]))]
                digits = "".join(map(str, rng.integers(0, 10, length - len(prefix))))
                card_bin = prefix + digits
                if card_bin not in used:
                    used.add(card_bin)
                    break
            rows.append((card_bin, issuer, network, card_type, country))
    bins = pd.DataFrame(rows, columns=["card_bin", "issuer", "card_network", "card_type", "country"])
    return IssuerBook(issuers=issuers, bins=bins, affinity=affinity)
