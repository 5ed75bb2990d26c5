"""The report's working frames: attempts with their payment's dimensions, and one row per payment.

Everything the report shows is computed from :class:`ReportData`. Money is carried as int64
ten-thousandths of a unit (the contract's money has four decimals), so sums are exact integer sums;
tables divide by :data:`MONEY_SCALE` only when they present a figure.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from payroute.catalog import Catalog
from payroute.contracts import AttemptStatus
from payroute.history import CATALOG_FILE, HISTORY_FILES, History, read_history

MONEY_SCALE = 10_000
# Columns a scoring-service log exported to the contract may add to attempts/transactions.
SERVICE_COLUMNS = ("model_version", "degraded", "explored")
# Few distinct values: read as categoricals (cheap to copy, group and compare).
_CATEGORICAL_COLUMNS = frozenset({
    "psp", "status", "decline_reason", "decline_class", "type", "currency", "country", "payment_method",
    "card_network", "card_type", "issuer_country", "vertical", "merchant_id",
})
# Contract columns no report view reads: left unread for speed (high-cardinality strings).
_UNUSED_COLUMNS = frozenset({"customer_id", "card_fingerprint", "card_bin", "decline_code", "propensity"})
DIMENSIONS = ("psp", "country", "payment_method", "vertical", "day")
_TX_DIMENSIONS = ("type", "country", "payment_method", "vertical", "merchant_id", "first_deposit", "day")


@dataclass(frozen=True)
class ReportData:
    """Frames behind every table.

    ``attempts``: one row per attempt, with its payment's dimensions and ``fee_eur_u``, ``fx_eur_u``,
    ``amount_eur_u`` (int64 ten-thousandths of EUR). ``payments``: one row per transaction with
    ``n_attempts``, ``first_psp``, ``first_status``, ``approved``, ``approving_psp``, ``cost_eur_u``
    (every attempt's fee and FX) and ``seconds_to_complete``. ``chargebacks``: one row per chargeback
    of a payment in the window, with ``psp`` (the approving PSP), ``merchant_id`` and ``amount_eur_u``.
    """

    attempts: pd.DataFrame
    payments: pd.DataFrame
    chargebacks: pd.DataFrame
    start: dt.datetime | None = None
    end: dt.datetime | None = None


def to_units(values: pd.Series | np.ndarray) -> np.ndarray:
    """Float money with at most four decimals → exact int64 ten-thousandths."""
    return np.rint(np.asarray(values, dtype="float64") * MONEY_SCALE).astype("int64")


def eur_units(amount: pd.Series, currency: pd.Series, catalog: Catalog) -> np.ndarray:
    """Amounts converted to EUR at the catalogue's dated rates, in ten-thousandths (rounded)."""
    rates = {code: float(rate) for code, rate in catalog.fx_rates.items()}
    rate = currency.astype(str).map(rates).to_numpy(dtype="float64", na_value=np.nan)
    if np.isnan(rate).any():
        unknown = sorted(set(currency[np.isnan(rate)].astype(str)))
        raise ValueError(f"no FX rate in catalogue {catalog.version} for currency {', '.join(unknown)}")
    return np.rint(amount.to_numpy(dtype="float64") / rate * MONEY_SCALE).astype("int64")


def window(start: dt.date | dt.datetime | None, end: dt.date | dt.datetime | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    """``[start, end]`` dates (end inclusive) → a half-open UTC datetime window."""

    def as_utc(value: dt.date | dt.datetime) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        return dt.datetime.combine(value, dt.time(), tzinfo=dt.timezone.utc)

    begin = None if start is None else as_utc(start)
    if end is None:
        finish = None
    elif isinstance(end, dt.datetime):
        finish = as_utc(end)
    else:
        finish = as_utc(end + dt.timedelta(days=1))
    return begin, finish


def catalog_path(given: str | Path | None, history_dir: str | Path) -> Path | None:
    """The catalogue to use: the one given, else the one written beside the history, else None (embedded)."""
    if given is not None:
        return Path(given)
    beside = Path(history_dir) / CATALOG_FILE
    return beside if beside.exists() else None


def read_service_columns(directory: str | Path, name: str, key: str) -> pd.DataFrame | None:
    """Optional service-log columns (model version, degraded, explored) beside the contract's, if any."""
    path = Path(directory) / f"{name}.parquet"
    if not path.exists():
        return None
    present = [c for c in SERVICE_COLUMNS if c in pq.read_schema(path).names]
    if not present:
        return None
    keys = [key, "attempt"] if name == "attempts" else [key]
    return pq.read_table(path, columns=keys + present).to_pandas()


def prepare(
    history: History,
    catalog: Catalog,
    start: dt.date | dt.datetime | None = None,
    end: dt.date | dt.datetime | None = None,
    service: pd.DataFrame | None = None,
) -> ReportData:
    """Join attempts to their transactions, restrict to the window, and build the payment frame.

    ``service``: optional per-attempt (``transaction_id``, ``attempt``) or per-transaction (``id``)
    columns from :data:`SERVICE_COLUMNS`, merged onto the attempts.
    """
    begin, finish = window(start, end)
    tx = history.transactions
    keep = np.ones(len(tx), bool)
    if begin is not None:
        keep &= (tx["timestamp"] >= begin).to_numpy()
    if finish is not None:
        keep &= (tx["timestamp"] < finish).to_numpy()
    tx = tx.loc[keep].reset_index(drop=True)
    day = tx["timestamp"].dt.floor("D")
    labels = {value: value.strftime("%Y-%m-%d") for value in day.unique()}  # format each day once
    tx["day"] = day.map(labels)
    tx["amount_eur_u"] = eur_units(tx["amount"], tx["currency"], catalog)

    attempts = _attempts_with_payment(history.attempts, tx, service)
    payments = _payments(tx, attempts)
    chargebacks = _chargebacks(history.chargebacks, payments, catalog)
    return ReportData(attempts, payments, chargebacks, begin, finish)


def read_history_for_report(directory: str | Path) -> History:
    """The history's report columns under the contract's schemas, money as float64 cast in Arrow.

    Same checks as :func:`payroute.history.read_history` (``money="float"``), which it
    calls for any file it cannot read itself; casting decimal128 → float64 in Arrow skips building a
    Python ``Decimal`` per value (about ten times faster on a million attempts). Values may differ from
    ``float(Decimal)`` in the last bit; the report rounds money to exact ten-thousandths anyway.
    """
    frames = []
    for name, schema in HISTORY_FILES.items():
        path = Path(directory) / f"{name}.parquet"
        fields = [f for f in schema if f.name not in _UNUSED_COLUMNS]
        try:
            if any(f.name not in pq.read_schema(path).names for f in schema):
                raise KeyError(name)
            names = [f.name for f in fields]
            table = pq.read_table(path, columns=names, read_dictionary=[n for n in names if n in _CATEGORICAL_COLUMNS])
        except (OSError, pa.ArrowInvalid, KeyError):
            return read_history(directory, money="float")  # its error names the file and column
        columns = [
            table.column(f.name).cast(pa.float64()) if pa.types.is_decimal(f.type) else table.column(f.name)
            for f in fields
        ]
        frame = pa.table(columns, names=names).to_pandas()
        for name_ in frame.columns:
            if isinstance(frame[name_].dtype, pd.CategoricalDtype):  # sorted categories: tables sort as strings
                frame[name_] = frame[name_].cat.reorder_categories(sorted(frame[name_].cat.categories))
        frames.append(frame)
    return History(*frames)


def load(
    directory: str | Path,
    catalog: Catalog,
    start: dt.date | dt.datetime | None = None,
    end: dt.date | dt.datetime | None = None,
) -> ReportData:
    """Read a history folder (and any service-log columns in it) and :func:`prepare` it."""
    history = read_history_for_report(directory)
    service = read_service_columns(directory, "attempts", "transaction_id")
    if service is None:
        service = read_service_columns(directory, "transactions", "id")
    return prepare(history, catalog, start, end, service)


def _attempts_with_payment(attempts: pd.DataFrame, tx: pd.DataFrame, service: pd.DataFrame | None) -> pd.DataFrame:
    position = positions(attempts["transaction_id"], tx["id"])
    attempts = attempts.loc[position >= 0].reset_index(drop=True)
    position = position[position >= 0]
    attempts["tx"] = position
    for column in (*_TX_DIMENSIONS, "amount", "currency", "amount_eur_u"):
        attempts[column] = tx[column].array.take(position)
    attempts["fee_eur_u"] = to_units(attempts["fee_eur"])
    attempts["fx_eur_u"] = to_units(attempts["fx_cost_eur"])
    attempts = attempts.sort_values(["tx", "attempt"], kind="stable").reset_index(drop=True)
    if service is not None:
        keys = ["transaction_id", "attempt"] if "attempt" in service.columns else ["transaction_id"]
        service = service.rename(columns={"id": "transaction_id"})
        attempts = attempts.merge(service, on=keys, how="left")
    return attempts


def _payments(tx: pd.DataFrame, attempts: pd.DataFrame) -> pd.DataFrame:
    payments = tx[["id", "timestamp", "amount", "currency", "amount_eur_u", "card_network", *_TX_DIMENSIONS]].copy()
    n = len(payments)
    codes = attempts["tx"].to_numpy()
    payments["n_attempts"] = np.bincount(codes, minlength=n)
    payments["cost_eur_u"] = np.bincount(codes, weights=attempts["fee_eur_u"] + attempts["fx_eur_u"], minlength=n).astype("int64")

    first_psp = np.full(n, None, dtype=object)
    first_status = np.full(n, None, dtype=object)
    _, first = np.unique(codes, return_index=True)
    first_psp[codes[first]] = attempts["psp"].to_numpy()[first]
    first_status[codes[first]] = attempts["status"].to_numpy()[first]
    payments["first_psp"] = first_psp
    payments["first_status"] = first_status

    approved_rows = attempts.loc[attempts["status"] == AttemptStatus.approved.value]
    approved_rows = approved_rows.drop_duplicates("tx")
    approving_psp = np.full(n, None, dtype=object)
    approving_psp[approved_rows["tx"].to_numpy()] = approved_rows["psp"].to_numpy()
    payments["approving_psp"] = approving_psp
    payments["approved"] = payments["approving_psp"].notna()
    codes_approved = approved_rows["tx"].to_numpy()
    done = (approved_rows["timestamp"] + pd.to_timedelta(approved_rows["latency_ms"], unit="ms")).reset_index(drop=True)
    requested = payments["timestamp"].take(codes_approved).reset_index(drop=True)
    seconds = np.full(n, np.nan)
    seconds[codes_approved] = (done - requested).dt.total_seconds().to_numpy()
    payments["seconds_to_complete"] = seconds
    return payments


def positions(keys: pd.Series, index: pd.Series) -> np.ndarray:
    """Row of ``index`` holding each key (-1 when absent), hashed in Arrow."""
    found = pc.index_in(_arrow_strings(keys), value_set=_arrow_strings(index))
    return found.fill_null(-1).to_numpy().astype("int64")


def _arrow_strings(values: pd.Series) -> pa.Array:
    array = pa.array(values, from_pandas=True)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array.cast(pa.string())


def _chargebacks(chargebacks: pd.DataFrame, payments: pd.DataFrame, catalog: Catalog) -> pd.DataFrame:
    position = positions(chargebacks["transaction_id"], payments["id"])
    frame = chargebacks.loc[position >= 0].copy()
    position = position[position >= 0]
    frame["psp"] = payments["approving_psp"].to_numpy()[position]
    frame["merchant_id"] = payments["merchant_id"].to_numpy()[position]
    frame["amount_eur_u"] = eur_units(frame["amount"], frame["currency"], catalog)
    return frame.reset_index(drop=True)
