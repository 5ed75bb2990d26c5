"""PSP settlement files: the format, a tolerant reader, and a writer with injected discrepancies.

One CSV per PSP (``<psp>.csv``), UTF-8, a header line, then one line per settled item::

    transaction_id,psp,type,amount,currency,fee,fx_cost,settled_at
    tx-000001,euroacq,charge,25.0000,EUR,0.5000,0.0000,2026-10-02T09:00:00+00:00

``type``: ``charge`` (a deposit collected), ``payout`` (a withdrawal or affiliate payout paid out),
``refund``, ``chargeback``. ``amount``, ``fee``, ``fx_cost``: decimal strings in ``currency`` (the
payment's currency), ``amount > 0``, ``fee, fx_cost >= 0``. ``settled_at``: ISO 8601 with a UTC offset.

:func:`read_settlements` never stops at a bad line: each one becomes a :class:`SettlementError` naming
file, line and field, and the rest of the file is read. :func:`write_settlements` is what the simulator
and the sandbox PSPs call to produce settlement files from a history, with the discrepancies of
:class:`DiscrepancyConfig` injected and returned as a manifest.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from payroute.catalog import MONEY_QUANTUM, Catalog, attempt_cost
from payroute.contracts import ISO_CURRENCIES, AttemptStatus, TransactionType
from payroute.history import History

SETTLEMENT_COLUMNS = ("transaction_id", "psp", "type", "amount", "currency", "fee", "fx_cost", "settled_at")
_IDENTIFIER = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
_PSP = re.compile(r"^[a-z0-9_\-]{1,64}$")


class SettlementType(StrEnum):
    charge = "charge"
    payout = "payout"
    refund = "refund"
    chargeback = "chargeback"


@dataclass(frozen=True)
class SettlementError:
    """One unreadable settlement line: where it is and which field is wrong (the value is not echoed)."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: field '{self.field}': {self.message}"


# ---------------------------------------------------------------------------------------------- reading


def _money(text: str, positive: bool) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError("not a decimal number") from None
    if not value.is_finite():
        raise ValueError("not a finite number")
    if positive and value <= 0:
        raise ValueError("must be greater than 0")
    if value < 0:
        raise ValueError("must not be negative")
    if value != value.quantize(MONEY_QUANTUM):
        raise ValueError("more than 4 decimal places")
    return value


def _timestamp(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("not an ISO 8601 timestamp") from None
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a UTC offset")
    return value.astimezone(dt.timezone.utc)


def _checked(text: str, pattern: re.Pattern, what: str) -> str:
    if not pattern.match(text):
        raise ValueError(f"not a valid {what}")
    return text


def _currency(text: str) -> str:
    if text.upper() not in ISO_CURRENCIES:
        raise ValueError("unknown ISO 4217 currency code")
    return text.upper()


_PARSERS = {
    "transaction_id": lambda s: _checked(s, _IDENTIFIER, "transaction id"),
    "psp": lambda s: _checked(s, _PSP, "PSP name"),
    "type": lambda s: SettlementType(s).value,
    "amount": lambda s: _money(s, positive=True),
    "currency": _currency,
    "fee": lambda s: _money(s, positive=False),
    "fx_cost": lambda s: _money(s, positive=False),
    "settled_at": _timestamp,
}


def parse_row(raw: dict[str, str | None], file: str, line: int) -> tuple[dict | None, SettlementError | None]:
    """One CSV record → a settlement row, or the first field error in column order."""
    row: dict = {"file": file, "line": line}
    for name in SETTLEMENT_COLUMNS:
        text = (raw.get(name) or "").strip()
        if not text:
            return None, SettlementError(file, line, name, "missing value")
        try:
            row[name] = _PARSERS[name](text)
        except ValueError as error:
            message = "not one of " + ", ".join(t.value for t in SettlementType) if name == "type" else str(error)
            return None, SettlementError(file, line, name, message)
    if None in raw:  # more values than header columns
        return None, SettlementError(file, line, "<row>", "more values than columns in the header")
    return row, None


def read_settlement_file(path: str | Path) -> tuple[list[dict], list[SettlementError]]:
    """Rows and errors of one settlement CSV (line numbers count the header as line 1)."""
    path = Path(path)
    rows: list[dict] = []
    errors: list[SettlementError] = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in SETTLEMENT_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            return [], [SettlementError(path.name, 1, missing[0], "column missing from the header; file skipped")]
        for raw in reader:
            row, error = parse_row(raw, path.name, reader.line_num)
            if error is not None:
                errors.append(error)
            else:
                rows.append(row)
    return rows, errors


def read_settlements(directory: str | Path) -> tuple[pd.DataFrame, list[SettlementError], tuple[str, ...]]:
    """Every ``*.csv`` in ``directory``: the rows (money as ``Decimal``), the errors, and the file stems."""
    files = sorted(Path(directory).glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"no settlement files (*.csv) in {directory}")
    rows: list[dict] = []
    errors: list[SettlementError] = []
    for path in files:
        file_rows, file_errors = read_settlement_file(path)
        rows.extend(file_rows)
        errors.extend(file_errors)
    frame = pd.DataFrame(rows, columns=[*SETTLEMENT_COLUMNS, "file", "line"])
    return frame, errors, tuple(p.stem for p in files)


# ---------------------------------------------------------------------------------------------- writing


class DiscrepancyConfig(BaseModel):
    """How many discrepancies of each kind to inject (spread over PSPs at random), and how large.

    Fee and FX overcharges add ``overcharge_bps`` of the amount, at least ``min_overcharge_eur``
    (converted to the payment's currency), so that they stand above any sensible tolerance.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    unrecorded_settlement: Annotated[int, Field(ge=0)] = 0
    unsettled_approval: Annotated[int, Field(ge=0)] = 0
    duplicate: Annotated[int, Field(ge=0)] = 0
    fee_above_contract: Annotated[int, Field(ge=0)] = 0
    fx_above_contract: Annotated[int, Field(ge=0)] = 0
    unknown_chargeback: Annotated[int, Field(ge=0)] = 0
    overcharge_bps: Annotated[Decimal, Field(gt=0)] = Decimal(50)
    min_overcharge_eur: Annotated[Decimal, Field(gt=0)] = Decimal("0.10")


@dataclass(frozen=True)
class InjectedDiscrepancy:
    """One injected discrepancy: what reconciliation should report, with the amount at stake."""

    kind: str
    psp: str
    transaction_id: str
    amount_at_stake: Decimal
    currency: str


def _decimal(value) -> Decimal:
    if isinstance(value, Decimal):
        return value.quantize(MONEY_QUANTUM)
    return Decimal(repr(round(float(value), 4))).quantize(MONEY_QUANTUM)


def settlement_rows(history: History, seed: int = 0) -> list[dict]:
    """Clean settlement rows: one per approved attempt (fee and FX as recorded) and one per chargeback."""
    rng = np.random.default_rng([seed, 0x5E7])
    attempts = history.attempts
    approved = attempts.loc[attempts["status"].astype(str) == AttemptStatus.approved.value]
    payments = history.transactions[["id", "type", "amount", "currency"]].rename(columns={"id": "transaction_id"})
    approved = approved.merge(payments, on="transaction_id", how="inner")
    delays = pd.to_timedelta(rng.uniform(1, 3, len(approved)), unit="D")
    settled_at = (approved["timestamp"] + delays).dt.floor("s")
    kinds = np.where(approved["type"].astype(str) == TransactionType.deposit.value,
                     SettlementType.charge.value, SettlementType.payout.value)
    rows = [
        {"transaction_id": t, "psp": str(p), "type": k, "amount": _decimal(a), "currency": str(c),
         "fee": _decimal(f), "fx_cost": _decimal(x), "settled_at": s.to_pydatetime()}
        for t, p, k, a, c, f, x, s in zip(
            approved["transaction_id"], approved["psp"], kinds, approved["amount"], approved["currency"],
            approved["fee"], approved["fx_cost"], settled_at,
        )
    ]
    approving = dict(zip(approved["transaction_id"], approved["psp"]))
    for chargeback in history.chargebacks.itertuples():
        psp = approving.get(chargeback.transaction_id)
        if psp is None:
            continue
        rows.append(
            {
                "transaction_id": chargeback.transaction_id, "psp": psp, "type": SettlementType.chargeback.value,
                "amount": _decimal(chargeback.amount), "currency": str(chargeback.currency),
                "fee": Decimal("0.0000"), "fx_cost": Decimal("0.0000"),
                "settled_at": dt.datetime.combine(chargeback.date, dt.time(), tzinfo=dt.timezone.utc),
            }
        )
    return rows


def inject(rows: list[dict], history: History, catalog: Catalog, config: DiscrepancyConfig, seed: int = 0) -> tuple[list[dict], list[InjectedDiscrepancy]]:
    """Inject ``config``'s discrepancies into clean rows; each touches a different settled payment."""
    rng = np.random.default_rng([seed, 0xD15])
    settled = [i for i, r in enumerate(rows) if r["type"] != SettlementType.chargeback.value]
    charged_back = {r["transaction_id"] for r in rows if r["type"] == SettlementType.chargeback.value}
    order = [settled[i] for i in rng.permutation(len(settled))]
    needed = config.unsettled_approval + config.duplicate + config.fee_above_contract + config.fx_above_contract
    if needed > len(order):
        raise ValueError(f"cannot inject {needed} discrepancies into {len(order)} settled payments")
    picks = iter(order)
    manifest: list[InjectedDiscrepancy] = []
    drop: set[int] = set()
    extra: list[dict] = []

    def note(kind: str, row: dict, amount: Decimal) -> None:
        manifest.append(InjectedDiscrepancy(kind, row["psp"], row["transaction_id"], amount, row["currency"]))

    for _ in range(config.unsettled_approval):
        index = next(picks)
        drop.add(index)
        note("unsettled_approval", rows[index], rows[index]["amount"])
    for _ in range(config.duplicate):
        index = next(picks)
        extra.append(dict(rows[index]))
        note("duplicate", rows[index], rows[index]["amount"])
    for kind, column in (("fee_above_contract", "fee"), ("fx_above_contract", "fx_cost")):
        for _ in range(getattr(config, kind)):
            row = rows[next(picks)]
            rate = catalog.fx_rate(row["currency"])
            bump = max(row["amount"] * config.overcharge_bps / 10_000, config.min_overcharge_eur * rate)
            row[column] = (row[column] + bump).quantize(MONEY_QUANTUM)
            contract = attempt_cost(catalog, row["psp"], row["amount"], row["currency"], AttemptStatus.approved)
            note(kind, row, row[column] - getattr(contract, column))
    extra += _unrecorded(history, config.unrecorded_settlement, rng, note)
    candidates = [rows[i] for i in picks if rows[i]["transaction_id"] not in charged_back and rows[i]["type"] == "charge"]
    for row in candidates[: config.unknown_chargeback]:
        chargeback = {**row, "type": SettlementType.chargeback.value, "fee": Decimal("0.0000"), "fx_cost": Decimal("0.0000")}
        extra.append(chargeback)
        note("unknown_chargeback", chargeback, chargeback["amount"])
    if len(candidates) < config.unknown_chargeback:
        raise ValueError("not enough approved deposits without a chargeback to inject unknown chargebacks")
    kept = [r for i, r in enumerate(rows) if i not in drop]
    return kept + extra, manifest


def _unrecorded(history: History, count: int, rng: np.random.Generator, note) -> list[dict]:
    """Settle payments that failed everywhere, at a PSP that declined them (no approval on record)."""
    if count == 0:
        return []
    attempts = history.attempts
    approved_ids = set(attempts.loc[attempts["status"].astype(str) == AttemptStatus.approved.value, "transaction_id"])
    failed = attempts.loc[~attempts["transaction_id"].isin(approved_ids)].drop_duplicates("transaction_id")
    if len(failed) < count:
        raise ValueError(f"cannot inject {count} unrecorded settlements: only {len(failed)} failed payments")
    chosen = failed.iloc[rng.choice(len(failed), size=count, replace=False)]
    tx = history.transactions.set_index("id")
    rows = []
    for attempt in chosen.itertuples():
        payment = tx.loc[attempt.transaction_id]
        kind = SettlementType.charge if str(payment["type"]) == TransactionType.deposit.value else SettlementType.payout
        row = {
            "transaction_id": attempt.transaction_id, "psp": attempt.psp, "type": kind.value,
            "amount": _decimal(payment["amount"]), "currency": str(payment["currency"]),
            "fee": Decimal("0.0000"), "fx_cost": Decimal("0.0000"),
            "settled_at": (attempt.timestamp + dt.timedelta(days=1)).floor("s").to_pydatetime(),
        }
        rows.append(row)
        note("unrecorded_settlement", row, row["amount"])
    return rows


def write_settlement_files(rows: list[dict], directory: str | Path) -> dict[str, Path]:
    """One ``<psp>.csv`` per PSP, rows in settlement order."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    by_psp: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: (r["settled_at"], r["transaction_id"], r["type"])):
        by_psp.setdefault(row["psp"], []).append(row)
    paths = {}
    for psp, psp_rows in sorted(by_psp.items()):
        path = directory / f"{psp}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(SETTLEMENT_COLUMNS)
            for row in psp_rows:
                writer.writerow([_format(row[c]) for c in SETTLEMENT_COLUMNS])
        paths[psp] = path
    return paths


def _format(value) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


def write_settlements(
    history: History,
    catalog: Catalog,
    directory: str | Path,
    *,
    discrepancies: DiscrepancyConfig | None = None,
    seed: int = 0,
) -> list[InjectedDiscrepancy]:
    """Write one settlement CSV per PSP from ``history``; returns the manifest of injected discrepancies."""
    rows = settlement_rows(history, seed)
    manifest: list[InjectedDiscrepancy] = []
    if discrepancies is not None:
        rows, manifest = inject(rows, history, catalog, discrepancies, seed)
    write_settlement_files(rows, directory)
    return manifest
