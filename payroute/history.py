"""Reading and writing history (transactions, attempts, chargebacks) as Parquet under the contract's schemas.

Any operator's own history in these columns can be brought in: :func:`read_history` checks the columns
against the contract and says which file and column is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from payroute.contracts import ATTEMPTS_SCHEMA, CHARGEBACKS_SCHEMA, MONEY_COLUMNS, TRANSACTIONS_SCHEMA

HISTORY_FILES: dict[str, pa.Schema] = {
    "transactions": TRANSACTIONS_SCHEMA,
    "attempts": ATTEMPTS_SCHEMA,
    "chargebacks": CHARGEBACKS_SCHEMA,
}
CATALOG_FILE = "catalog.yaml"


@dataclass(frozen=True)
class History:
    """The three history tables as pandas frames (one row per transaction / attempt / chargeback)."""

    transactions: pd.DataFrame
    attempts: pd.DataFrame
    chargebacks: pd.DataFrame


class HistoryError(ValueError):
    """A history file is missing or does not follow the contract; the message names file and column."""


def to_arrow(frame: pd.DataFrame, name: str) -> pa.Table:
    """Cast a frame to the contract schema of table ``name`` (money columns to decimal128)."""
    schema = HISTORY_FILES[name]
    missing = [f.name for f in schema if f.name not in frame.columns]
    if missing:
        raise HistoryError(f"{name}: missing column(s) {', '.join(missing)}")
    columns = []
    for field in schema:
        column = _arrow_column(frame[field.name])
        if pa.types.is_decimal(field.type) and pa.types.is_floating(column.type):
            # Round floats to the contract's 4 decimals before the exact cast.
            column = pc.round(column, 4)
        columns.append(column.cast(field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _arrow_column(series: pd.Series) -> pa.Array:
    """One column to Arrow; tz-aware timestamps go through UTC numpy values (no tz dropped silently)."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        values = series.dt.tz_convert("UTC").dt.tz_convert(None).dt.floor("us").to_numpy()
        return pa.array(values, type=pa.timestamp("ns")).cast(pa.timestamp("ns", tz="UTC"))
    return pa.array(series, from_pandas=True)


def write_table(frame: pd.DataFrame, name: str, directory: str | Path) -> Path:
    path = Path(directory) / f"{name}.parquet"
    pq.write_table(to_arrow(frame, name), path, compression="zstd")
    return path


def read_table(directory: str | Path, name: str, money: Literal["float", "decimal"] = "float") -> pd.DataFrame:
    """Read one history table, checking its columns against the contract.

    ``money="float"`` gives float64 money columns for analytics and features; ``"decimal"`` keeps
    exact ``Decimal`` values for reconciliation and money sums.
    """
    path = Path(directory) / f"{name}.parquet"
    if not path.exists():
        raise HistoryError(f"{path}: file not found")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise HistoryError(f"{path}: not a readable Parquet file ({error})") from error
    schema = HISTORY_FILES[name]
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise HistoryError(f"{path}: missing column(s) {', '.join(missing)}")
    frame = table.select([f.name for f in schema]).to_pandas()
    if money == "float":
        for column in MONEY_COLUMNS[name]:
            frame[column] = frame[column].astype("float64")
    return frame


def read_history(directory: str | Path, money: Literal["float", "decimal"] = "float") -> History:
    """Read ``transactions``, ``attempts`` and ``chargebacks`` Parquet files from a history folder."""
    return History(*(read_table(directory, name, money) for name in HISTORY_FILES))
