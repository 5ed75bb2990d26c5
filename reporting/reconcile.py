"""Reconcile PSP settlement files with recorded attempts and with the catalogue's fee schedule.

Matching key: ``(transaction_id, psp)``. Each discrepancy line carries the transaction id and the
amount at stake as a ``Decimal`` in the payment currency and in EUR; every sum is a ``Decimal`` sum.

Kinds (see ``docs/reporting.md``):

- ``unrecorded_settlement``: a settled charge, payout or refund with no approved attempt at that PSP;
  at stake: the settled amount.
- ``unsettled_approval``: an approved attempt at a PSP whose settlement file does not list it; at stake:
  the payment amount. Only PSPs that sent a file are checked.
- ``duplicate``: the same (transaction, PSP, type) settled again; at stake: each extra copy's amount.
- ``amount_mismatch``: settled amount or currency differs from the payment's; at stake: the difference.
- ``fee_above_contract`` / ``fx_above_contract``: fee or FX cost above :func:`payroute.catalog.attempt_cost`
  by more than the tolerance; at stake: the excess.
- ``unknown_chargeback``: a settled chargeback the history does not hold; at stake: its amount.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from payroute.catalog import MONEY_QUANTUM, Catalog, attempt_cost
from payroute.contracts import MONEY_ARROW_TYPE, AttemptStatus
from payroute.history import History

from payroute.reporting.settlement import SettlementError, SettlementType, _decimal

DISCREPANCY_KINDS = (
    "unrecorded_settlement", "unsettled_approval", "duplicate", "amount_mismatch",
    "fee_above_contract", "fx_above_contract", "unknown_chargeback",
)
DISCREPANCY_COLUMNS = (
    "kind", "psp", "transaction_id", "type", "amount_at_stake", "currency", "amount_at_stake_eur", "file", "line", "detail",
)
FEE_DEVIATIONS_FILE = "fee_deviations.parquet"
ZERO = Decimal("0.0000")


@dataclass(frozen=True)
class Tolerance:
    """A fee or FX excess is a discrepancy when above ``absolute_eur`` (in the payment currency at the
    catalogue's rate) and above ``relative`` × the contract amount."""

    absolute_eur: Decimal = Decimal("0.01")
    relative: Decimal = Decimal(0)

    def allowed(self, contract: Decimal, currency: str, catalog: Catalog) -> Decimal:
        return max(self.absolute_eur * catalog.fx_rate(currency), self.relative * contract)


@dataclass(frozen=True)
class Reconciliation:
    """Discrepancy lines, their summary per PSP and kind, observed fee deviations, and unreadable lines."""

    discrepancies: pd.DataFrame
    summary: pd.DataFrame
    fee_deviations: pd.DataFrame
    errors: tuple[SettlementError, ...] = field(default=())
    settled_rows: int = 0

    @property
    def clean(self) -> bool:
        return self.discrepancies.empty


def approved_attempts(history: History) -> dict[tuple[str, str], tuple[Decimal, str, str]]:
    """``(transaction_id, psp)`` → (amount, currency, transaction type) for every approved attempt."""
    attempts = history.attempts
    approved = attempts.loc[attempts["status"].astype(str) == AttemptStatus.approved.value, ["transaction_id", "psp"]]
    payments = history.transactions[["id", "amount", "currency", "type"]].rename(columns={"id": "transaction_id"})
    approved = approved.merge(payments, on="transaction_id", how="inner")
    return {
        (t, str(p)): (_decimal(a), str(c), str(k))
        for t, p, a, c, k in zip(approved["transaction_id"], approved["psp"], approved["amount"], approved["currency"], approved["type"])
    }


def reconcile(
    settlements: pd.DataFrame,
    history: History,
    catalog: Catalog,
    *,
    tolerance: Tolerance = Tolerance(),
    settled_psps: tuple[str, ...] | None = None,
    errors: tuple[SettlementError, ...] | list[SettlementError] = (),
) -> Reconciliation:
    """Match settlement rows (as :func:`read_settlements` gives them) to history and the fee schedule.

    ``settled_psps``: PSPs that sent a settlement file (default: those named in the rows); approvals
    at other PSPs are not reported as unsettled.
    """
    approved = approved_attempts(history)
    charged_back = set(history.chargebacks["transaction_id"])
    lines: list[dict] = []
    deviations: dict[tuple[str, str], list[Decimal]] = defaultdict(lambda: [ZERO] * 6 + [0])
    seen: set[tuple[str, str, str]] = set()
    settled: set[tuple[str, str]] = set()

    def report(kind: str, row: dict, amount: Decimal, currency: str, detail: str = "") -> None:
        lines.append({
            "kind": kind, "psp": row["psp"], "transaction_id": row["transaction_id"], "type": row.get("type", ""),
            "amount_at_stake": amount, "currency": currency, "amount_at_stake_eur": catalog.to_eur(amount, currency),
            "file": row.get("file", ""), "line": row.get("line", 0), "detail": detail,
        })

    for row in settlements.to_dict("records"):
        key = (row["transaction_id"], row["psp"], row["type"])
        if key in seen:
            report("duplicate", row, row["amount"], row["currency"], "settled more than once")
            continue
        seen.add(key)
        if row["type"] == SettlementType.chargeback.value:
            if row["transaction_id"] not in charged_back:
                report("unknown_chargeback", row, row["amount"], row["currency"], "chargeback not in history")
            continue
        recorded = approved.get((row["transaction_id"], row["psp"]))
        if recorded is None:
            report("unrecorded_settlement", row, row["amount"], row["currency"], "no approved attempt at this PSP")
            continue
        if row["type"] == SettlementType.refund.value:
            continue
        settled.add((row["transaction_id"], row["psp"]))
        amount, currency, _ = recorded
        if row["currency"] != currency:
            report("amount_mismatch", row, row["amount"], row["currency"], f"settled in {row['currency']}, recorded in {currency}")
            continue
        if row["amount"] != amount:
            report("amount_mismatch", row, abs(row["amount"] - amount), currency, f"recorded amount {amount}")
        if row["psp"] in catalog.by_name:
            _check_fees(row, amount, currency, catalog, tolerance, report, deviations)

    psps = set(settled_psps) if settled_psps is not None else set(settlements["psp"])
    for (transaction_id, psp), (amount, currency, kind) in approved.items():
        if psp in psps and (transaction_id, psp) not in settled:
            report("unsettled_approval", {"transaction_id": transaction_id, "psp": psp, "type": kind}, amount, currency,
                   "approved but not in the settlement file")
    discrepancies = pd.DataFrame(lines, columns=list(DISCREPANCY_COLUMNS))
    return Reconciliation(
        discrepancies=discrepancies.sort_values(["psp", "kind", "transaction_id"], kind="stable").reset_index(drop=True),
        summary=summarise(discrepancies),
        fee_deviations=_deviation_table(deviations, catalog),
        errors=tuple(errors),
        settled_rows=len(settlements),
    )


def _check_fees(row, amount, currency, catalog, tolerance, report, deviations) -> None:
    contract = attempt_cost(catalog, row["psp"], amount, currency, AttemptStatus.approved)
    fee_excess = row["fee"] - contract.fee
    fx_excess = row["fx_cost"] - contract.fx_cost
    if fee_excess > tolerance.allowed(contract.fee, currency, catalog):
        report("fee_above_contract", row, fee_excess, currency, f"contract fee {contract.fee}, charged {row['fee']}")
    if fx_excess > tolerance.allowed(contract.fx_cost, currency, catalog):
        report("fx_above_contract", row, fx_excess, currency, f"contract FX {contract.fx_cost}, charged {row['fx_cost']}")
    stats = deviations[(row["psp"], currency)]
    for i, value in enumerate((amount, fee_excess, fx_excess, catalog.to_eur(amount, currency),
                               catalog.to_eur(fee_excess, currency), catalog.to_eur(fx_excess, currency))):
        stats[i] += value
    stats[6] += 1


def summarise(discrepancies: pd.DataFrame) -> pd.DataFrame:
    """Lines and EUR at stake per PSP and kind, a total per PSP, and a grand total (Decimal sums)."""
    totals: dict[tuple[str, str], list] = defaultdict(lambda: [0, ZERO])
    for psp, kind, amount in zip(discrepancies["psp"], discrepancies["kind"], discrepancies["amount_at_stake_eur"]):
        for key in ((psp, kind), (psp, "all"), ("all", kind), ("all", "all")):
            totals[key][0] += 1
            totals[key][1] += amount
    rows = [{"psp": psp, "kind": kind, "lines": n, "amount_at_stake_eur": total} for (psp, kind), (n, total) in totals.items()]
    order = {k: i for i, k in enumerate((*DISCREPANCY_KINDS, "all"))}
    rows.sort(key=lambda r: (r["psp"] == "all", r["psp"], order[r["kind"]]))
    return pd.DataFrame(rows, columns=["psp", "kind", "lines", "amount_at_stake_eur"])


def _deviation_table(deviations: dict[tuple[str, str], list], catalog: Catalog) -> pd.DataFrame:
    """Per PSP and currency: observed fee and FX minus contract, totals (Decimal) and means/bps (float)."""
    rows = []
    for (psp, currency), (amount, fee, fx, amount_eur, fee_eur, fx_eur, n) in sorted(deviations.items()):
        rows.append({
            "psp": psp, "currency": currency, "settled_payments": n,
            "amount_total": amount, "fee_deviation_total": fee, "fx_deviation_total": fx,
            "amount_total_eur": amount_eur, "fee_deviation_eur_total": fee_eur, "fx_deviation_eur_total": fx_eur,
            "fee_deviation_eur_mean": float(fee_eur) / n,
            "fx_deviation_eur_mean": float(fx_eur) / n,
            "fee_deviation_bps": float(fee / amount * 10_000) if amount else 0.0,
            "fx_deviation_bps": float(fx / amount * 10_000) if amount else 0.0,
            "catalog_version": catalog.version,
        })
    return pd.DataFrame(rows, columns=[
        "psp", "currency", "settled_payments", "amount_total", "fee_deviation_total", "fx_deviation_total",
        "amount_total_eur", "fee_deviation_eur_total", "fx_deviation_eur_total", "fee_deviation_eur_mean",
        "fx_deviation_eur_mean", "fee_deviation_bps", "fx_deviation_bps", "catalog_version",
    ])


_DECIMAL_DEVIATION_COLUMNS = ("amount_total", "fee_deviation_total", "fx_deviation_total", "amount_total_eur",
                              "fee_deviation_eur_total", "fx_deviation_eur_total")


def write_fee_deviations(table: pd.DataFrame, path: str | Path) -> Path:
    """Parquet for the training job's cost model: Decimal totals as decimal128(18, 4), means and bps as float."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays, names = [], []
    for column in table.columns:
        values = table[column].tolist()
        if column in _DECIMAL_DEVIATION_COLUMNS:
            arrays.append(pa.array([v.quantize(MONEY_QUANTUM) for v in values], type=MONEY_ARROW_TYPE))
        else:
            arrays.append(pa.array(values))
        names.append(column)
    pq.write_table(pa.Table.from_arrays(arrays, names=names), path)
    return path


def write_discrepancies(result: Reconciliation, out: str | Path) -> list[Path]:
    """Discrepancy lines to ``out`` (CSV), the summary to ``<stem>_summary.csv``, errors to ``<stem>_errors.csv``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result.discrepancies.to_csv(out, index=False)
    summary = out.with_name(f"{out.stem}_summary.csv")
    result.summary.to_csv(summary, index=False)
    errors = out.with_name(f"{out.stem}_errors.csv")
    pd.DataFrame([e.__dict__ for e in result.errors], columns=["file", "line", "field", "message"]).to_csv(errors, index=False)
    return [out, summary, errors]

