"""History files: written under the contract schemas, read back, and bad files named."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
import pyarrow.parquet as pq
import pytest

from payroute.contracts import ATTEMPTS_SCHEMA
from payroute.history import HistoryError, read_table, write_table

ATTEMPTS = pd.DataFrame(
    {
        "transaction_id": ["t1", "t1"],
        "attempt": [1, 2],
        "psp": ["euroacq", "globalpay"],
        "timestamp": pd.to_datetime(["2026-11-01T10:00:00Z", "2026-11-01T10:00:02Z"]),
        "status": ["declined", "approved"],
        "decline_code": ["05", None],
        "decline_reason": ["do_not_honor", None],
        "decline_class": ["soft", None],
        "latency_ms": [800.0, 650.0],
        "fee": [0.02, 1.7412345],
        "fx_cost": [0.0, 0.0],
        "fee_eur": [0.02, 1.7412345],
        "fx_cost_eur": [0.0, 0.0],
        "propensity": [0.5, None],
    }
)


def test_attempts_round_trip(tmp_path):
    path = write_table(ATTEMPTS, "attempts", tmp_path)
    assert pq.read_schema(path).remove_metadata() == ATTEMPTS_SCHEMA
    floats = read_table(tmp_path, "attempts")
    assert floats["fee"].tolist() == [0.02, 1.7412]
    exact = read_table(tmp_path, "attempts", money="decimal")
    assert exact["fee"].tolist() == [Decimal("0.0200"), Decimal("1.7412")]
    assert floats["propensity"].isna().tolist() == [False, True]


def test_missing_column_and_file_named(tmp_path):
    with pytest.raises(HistoryError, match="missing column.*propensity"):
        write_table(ATTEMPTS.drop(columns="propensity"), "attempts", tmp_path)
    pq.write_table(pq.read_table(write_table(ATTEMPTS, "attempts", tmp_path)).drop(["psp"]), tmp_path / "attempts.parquet")
    with pytest.raises(HistoryError, match=r"attempts\.parquet: missing column.*psp"):
        read_table(tmp_path, "attempts")
    with pytest.raises(HistoryError, match=r"chargebacks\.parquet: file not found"):
        read_table(tmp_path, "chargebacks")
    (tmp_path / "transactions.parquet").write_text("not parquet")
    with pytest.raises(HistoryError, match=r"transactions\.parquet: not a readable Parquet file"):
        read_table(tmp_path, "transactions")
