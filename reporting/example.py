"""A worked example history: six card payments whose KPIs are computed by hand in ``docs/reporting.md``.

It is the tests' input and the notebook's default data. ``copies`` repeats the six payments (new ids,
times shifted by minutes) so that rates stay the same while counts and totals scale.

===  ==========  ===========  ======  =====================================================  ==========
id   type        first dep.   amount  attempts (PSP → status)                                chargeback
===  ==========  ===========  ======  =====================================================  ==========
T1   deposit     yes          100     euroacq → approved                                     100
T2   deposit     no           200     budgetpay → declined (soft), euroacq → approved
T3   deposit     yes           50     euroacq → declined (customer)
T4   deposit     no            40     britpay → error, budgetpay → timeout, riskshield → hard
T5   withdrawal  no           300     euroacq → approved
T6   deposit     no          1000     britpay → approved (settles GBP only: FX markup)       1000
===  ==========  ===========  ======  =====================================================  ==========

All in EUR, Germany, Visa debit, igaming; merchants m1 (T1, T2, T5) and m2 (T3, T4, T6). Fees come
from the catalogue's rule (:func:`payroute.catalog.attempt_cost`).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import Enum
from pathlib import Path

import pandas as pd

from payroute.catalog import Catalog, attempt_cost, dump_catalog, load_catalog
from payroute.contracts import AttemptOutcome, Chargeback, Transaction
from payroute.history import CATALOG_FILE, History, write_table

START = dt.datetime(2026, 10, 1, 10, tzinfo=dt.timezone.utc)

# id, type, first_deposit, amount, merchant, day offset, hour offset, attempts [(psp, status, reason, latency)]
PAYMENTS = (
    ("T1", "deposit", True, "100", "m1", 0, 0, [("euroacq", "approved", None, 300.0)]),
    ("T2", "deposit", False, "200", "m1", 0, 1, [("budgetpay", "declined", "do_not_honor", 400.0),
                                                 ("euroacq", "approved", None, 500.0)]),
    ("T3", "deposit", True, "50", "m2", 1, 0, [("euroacq", "declined", "insufficient_funds", 200.0)]),
    ("T4", "deposit", False, "40", "m2", 1, 1, [("britpay", "error", "psp_error", 100.0),
                                                ("budgetpay", "timeout", "psp_timeout", 5000.0),
                                                ("riskshield", "declined", "stolen_card", 600.0)]),
    ("T5", "withdrawal", False, "300", "m1", 0, 2, [("euroacq", "approved", None, 700.0)]),
    ("T6", "deposit", False, "1000", "m2", 0, 3, [("britpay", "approved", None, 800.0)]),
)
CHARGEBACKS = (("T1", "100"), ("T6", "1000"))


def example_history(copies: int = 1, catalog: Catalog | None = None) -> History:
    """The six payments, ``copies`` times, as contract-validated frames (money as ``Decimal``)."""
    catalog = catalog or load_catalog()
    transactions, attempts, chargebacks = [], [], []
    for copy in range(copies):
        suffix = "" if copies == 1 else f"-{copy:04d}"
        for tid, kind, first, amount, merchant, day, hour, tries in PAYMENTS:
            at = START + dt.timedelta(days=day, hours=hour, minutes=copy % 50)
            transaction = Transaction(
                id=tid + suffix, timestamp=at, type=kind, amount=Decimal(amount), currency="EUR", country="DE",
                payment_method="card", card_network="visa", card_bin="411111", card_type="debit",
                issuer_country="DE", vertical="igaming", merchant_id=merchant, first_deposit=first,
            )
            transactions.append(transaction.model_dump())
            for number, (psp, status, reason, latency) in enumerate(tries, start=1):
                cost = attempt_cost(catalog, psp, transaction.amount, "EUR", status)
                attempts.append(AttemptOutcome(
                    transaction_id=transaction.id, attempt=number, psp=psp,
                    timestamp=at + dt.timedelta(seconds=10 * (number - 1)), status=status, decline_reason=reason,
                    latency_ms=latency, fee=cost.fee, fx_cost=cost.fx_cost, fee_eur=cost.fee_eur,
                    fx_cost_eur=cost.fx_cost_eur,
                ).model_dump())
        for tid, amount in CHARGEBACKS:
            chargebacks.append(Chargeback(
                transaction_id=tid + suffix, date=(START + dt.timedelta(days=20)).date(), amount=Decimal(amount),
                currency="EUR", reason="fraud",
            ).model_dump())
    return History(*(_strings(pd.DataFrame(rows)) for rows in (transactions, attempts, chargebacks)))


def write_example_history(directory: str | Path, copies: int = 1, catalog: Catalog | None = None) -> Path:
    """Write the example history (and the catalogue beside it) as a history folder."""
    catalog = catalog or load_catalog()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    history = example_history(copies, catalog)
    for name in ("transactions", "attempts", "chargebacks"):
        write_table(getattr(history, name), name, directory)
    dump_catalog(catalog, directory / CATALOG_FILE)
    return directory


def _strings(frame: pd.DataFrame) -> pd.DataFrame:
    """Enum members → their values (the history files hold plain strings)."""
    for column in frame.columns:
        if frame[column].map(lambda v: isinstance(v, Enum)).any():
            frame[column] = frame[column].map(lambda v: v.value if isinstance(v, Enum) else v)
    return frame
