"""Online interpreter of the feature spec: keyed decayed counters updated one outcome at a time.

State is plain keyed numeric vectors in a :class:`Backend` (``"psp_country|euroacq|DE" →
[reference time, counters...]``, the layout of ``spec.layouts``), so a Redis backend needs only
``get_many`` / ``put`` / ``items``.

Point in time, exactly as the offline builder: a query at ``at`` sees outcomes stamped before
``at − reporting_delay`` (an outcome stamped exactly at the cutoff is not visible). Outcomes are
*staged* until the query cutoff passes their timestamp and only then folded into the counters, so
outcomes arriving out of order, early, or stamped at the query's own time never leak into it. An
outcome arriving after a query whose cutoff already passed its timestamp (later than the reporting
delay allows) is folded at once: exact for every later query, missing from the ones before — the
offline builder assumes every outcome arrives within the reporting delay. Queries are expected in
non-decreasing ``at``; an earlier ``at`` is answered from the current counters.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import json
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from pydantic import BaseModel

from payroute.catalog import Catalog
from payroute.contracts import AttemptOutcome, Transaction
from payroute.features.decay import datetime_to_us, decay_rate, delay_us, fold, new_state, read
from payroute.features.derive import ShrinkagePlan
from payroute.features.spec import COUNTERS, DEFAULT_SPEC, FeatureSpec
from payroute.features.transforms import (
    TRANSACTION_FIELDS,
    RequestContext,
    amount_band,
    amount_eur,
    outcome_weights,
    request_features,
)


@runtime_checkable
class Backend(Protocol):
    """Plain keyed counters: a key maps to a float64 vector ``[reference time, values...]``."""

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]: ...

    def put(self, key: str, state: np.ndarray) -> None: ...

    def items(self) -> Iterator[tuple[str, np.ndarray]]: ...


class InMemoryBackend:
    """The default backend: a dict in the serving process."""

    def __init__(self) -> None:
        self._states: dict[str, np.ndarray] = {}

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        get = self._states.get
        return [get(key) for key in keys]

    def put(self, key: str, state: np.ndarray) -> None:
        self._states[key] = state

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        return iter(self._states.items())

    def __len__(self) -> int:
        return len(self._states)


_ALREADY_PLAIN = frozenset({str, int, float, bool, type(None), dt.datetime})


def _plain(value: Any) -> Any:
    """An enum member as its value, a Decimal as a float, anything else as it is (exact plain types are
    recognised first: the two isinstance checks cost more than the rest of a field's handling)."""
    if type(value) in _ALREADY_PLAIN:
        return value
    if isinstance(value, Enum):
        return value._value_  # what the ``value`` property returns, without the descriptor
    if isinstance(value, Decimal):
        return float(value)
    return value


def _fields(record: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
    if isinstance(record, BaseModel):  # a pydantic model keeps exactly its field values in __dict__
        return {name: _plain(value) for name, value in record.__dict__.items()}
    return {name: _plain(value) for name, value in record.items()}


def _to_us(value: Any) -> int:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    return datetime_to_us(value)


class OnlineFeatureStore:
    """Incremental features for serving: ``update`` with each outcome, ``features`` per request."""

    def __init__(self, catalog: Catalog, spec: FeatureSpec = DEFAULT_SPEC, backend: Backend | None = None, *,
                 reporting_delay: dt.timedelta = dt.timedelta(0)) -> None:
        self.catalog = catalog
        self.spec = spec
        self.backend = backend if backend is not None else InMemoryBackend()
        self.reporting_delay = reporting_delay
        self._delay_us = delay_us(reporting_delay)
        self._context = RequestContext(catalog, spec)
        self._plan = ShrinkagePlan(spec)
        self._levels = []
        for name in spec.level_order:
            layout = spec.layouts.get(name)
            if layout:
                self._levels.append((
                    name,
                    spec.level(name).fields,
                    np.array([COUNTERS.index(counter) for counter, _ in layout]),
                    decay_rate(np.array([h for _, h in layout])),
                    self._plan.raw_offsets[(name, *layout[0])],
                ))
        self._empties = [np.zeros(len(rates) + 1) for _, _, _, rates, _ in self._levels]
        self._key_parts = [(name + "|", fields) for name, fields, *_ in self._levels]  # for _counter_rows' keys
        # Column maps of a row of side-by-side level states onto the raw-counter layout of the plan.
        widths = [len(rates) + 1 for _, _, _, rates, _ in self._levels]
        starts = np.concatenate([[0], np.cumsum(widths)[:-1]])
        self._reference_columns = np.concatenate([np.full(w - 1, s) for s, w in zip(starts, widths)])
        self._value_columns = np.concatenate([np.arange(s + 1, s + w) for s, w in zip(starts, widths)])
        self._rates = np.concatenate([rates for _, _, _, rates, _ in self._levels])
        assert [start for *_, start in self._levels] == list(np.cumsum([0] + [w - 1 for w in widths])[:-1])
        self._band_column = spec.numeric_request_features.index("amount_band")
        self._categorical_dtypes = {name: pd.CategoricalDtype(list(values))
                                    for name, values in self._context.categories.items()}
        self._staged: list[tuple[int, int, tuple[str, ...], np.ndarray]] = []  # heap by timestamp
        self._sequence = 0
        self._cutoff_us = -(2**62)  # outcomes stamped before this are folded into the counters
        self._n_request = len(spec.numeric_request_features) + len(spec.categorical_features)

    # ------------------------------------------------------------------ keys

    def _key_values(self, transaction: Mapping[str, Any], band: float | None = None) -> dict[str, str]:
        """The request fields that key levels group by, as strings ('' when missing)."""
        values = {name: "" if transaction.get(name) is None else str(transaction[name])
                  for name in ("country", "payment_method", "card_network", "issuer_country", "card_bin")}
        if band is None:
            eur = amount_eur(np.array([transaction["amount"]], dtype=float), [transaction["currency"]], self._context)
            band = amount_band(eur, self.spec)[0]
        values["amount_band"] = str(int(band))
        return values

    def _level_keys(self, psp: str, values: Mapping[str, str]) -> tuple[str, ...]:
        return tuple("|".join((name, psp, *(values[f] for f in fields))) for name, fields, *_ in self._levels)

    # ------------------------------------------------------------------ updates

    def update(self, outcome: AttemptOutcome | Mapping[str, Any], transaction: Transaction | Mapping[str, Any]) -> None:
        """Take one attempt outcome (with its transaction, for the segment keys)."""
        event = _fields(outcome)
        weights = outcome_weights([event["status"]], [event.get("decline_class")], [event["latency_ms"]])[0]
        keys = self._level_keys(event["psp"], self._key_values(_fields(transaction)))
        timestamp_us = _to_us(event["timestamp"])
        if timestamp_us < self._cutoff_us:
            self._fold(timestamp_us, keys, weights)
        else:
            self._sequence += 1
            heapq.heappush(self._staged, (timestamp_us, self._sequence, keys, weights))

    def _fold(self, timestamp_us: int, keys: tuple[str, ...], weights: np.ndarray) -> None:
        states = self.backend.get_many(keys)
        for (_, _, counters, rates, _), key, state in zip(self._levels, keys, states):
            if state is None:
                state = new_state(timestamp_us, weights[counters])
            else:
                fold(state, timestamp_us, weights[counters], rates)
            self.backend.put(key, state)

    def _advance(self, cutoff_us: int) -> None:
        """Fold every staged outcome stamped strictly before ``cutoff_us``."""
        staged = self._staged
        while staged and staged[0][0] < cutoff_us:
            timestamp_us, _, keys, weights = heapq.heappop(staged)
            self._fold(timestamp_us, keys, weights)
        self._cutoff_us = max(self._cutoff_us, cutoff_us)

    # ------------------------------------------------------------------ queries

    def features_array(self, transaction: Transaction | Mapping[str, Any], psps: Sequence[str], *, attempt: int = 1,
                       previous_decline_class: str | None = None,
                       at: dt.datetime | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
        """Features of ``transaction`` for each candidate PSP: (len(psps), n_features) float matrix
        (categoricals as codes into ``spec.categories``, NaN when unknown) and the column names."""
        fields = _fields(transaction)
        at_us = _to_us(fields["timestamp"] if at is None else at)
        self._advance(at_us - self._delay_us)
        n = len(psps)
        columns: dict[str, Any] = {name: [fields.get(name)] for name in TRANSACTION_FIELDS}
        columns["timestamp_us"] = np.array([at_us], dtype=np.int64)
        columns["attempt"] = np.array([attempt])
        columns["previous_decline_class"] = [_plain(previous_decline_class)]
        out = np.empty((n, len(self.spec.feature_names)))
        out[:, : self._n_request] = request_features(columns, list(psps), self._context)
        # one row per PSP: [reference, values...] of every level, side by side
        matrix = self._counter_rows(fields, psps, out[0, self._band_column])
        raw = read(matrix[:, self._value_columns], matrix[:, self._reference_columns], at_us, self._rates)
        self._plan.history_features(raw, out=out[:, self._n_request :])
        return out, self.spec.feature_names

    def features_array_many(
        self, items: Sequence[tuple[Transaction | Mapping[str, Any], Sequence[str]]]
    ) -> tuple[list[np.ndarray], tuple[str, ...]]:
        """First-attempt :meth:`features_array` for many (transaction, PSPs), in order: one block per item,
        equal to calling :meth:`features_array` on each in turn (same point-in-time cut-offs, advanced
        item by item). Request features, counter decay and shrinkage run once over all rows; only the
        cut-off advance and the counter reads go item by item."""
        if not items:
            return [], self.spec.feature_names
        records = [_fields(transaction) for transaction, _ in items]
        sizes = [len(psps) for _, psps in items]
        at_us = [_to_us(fields["timestamp"]) for fields in records]
        columns: dict[str, Any] = {name: [fields.get(name) for fields in records] for name in TRANSACTION_FIELDS}
        columns["timestamp_us"] = np.array(at_us, dtype=np.int64)
        columns["attempt"] = np.ones(len(records))
        columns["previous_decline_class"] = [None] * len(records)
        row_at_us = np.repeat(columns["timestamp_us"], sizes)
        psp_rows = [psp for _, psps in items for psp in psps]
        out = np.empty((len(psp_rows), len(self.spec.feature_names)))
        out[:, : self._n_request] = request_features(columns, psp_rows, self._context, repeats=sizes)
        blocks, start = [], 0
        for fields, (_, psps), n, at in zip(records, items, sizes, at_us):
            self._advance(at - self._delay_us)  # as features_array does, item by item
            blocks.append(self._counter_rows(fields, psps, out[start, self._band_column]))
            start += n
        matrix = np.concatenate(blocks)
        raw = read(matrix[:, self._value_columns], matrix[:, self._reference_columns], row_at_us[:, None], self._rates)
        self._plan.history_features(raw, out=out[:, self._n_request :])
        bounds = [0, *itertools.accumulate(sizes)]  # slices: np.split's Python wrapper costs more for few blocks
        return [out[a:b] for a, b in zip(bounds, bounds[1:])], self.spec.feature_names

    def _counter_rows(self, fields: Mapping[str, Any], psps: Sequence[str], band: float) -> np.ndarray:
        """Each PSP's level states side by side, copied now: (len(psps), Σ level widths)."""
        values = self._key_values(fields, band)
        parts = [(prefix, "".join(["|" + values[f] for f in level_fields])) for prefix, level_fields in self._key_parts]
        keys = [prefix + p + suffix for p in psps for prefix, suffix in parts]  # _level_keys' "name|psp|values"
        states = self.backend.get_many(keys)
        empties = self._empties * len(psps)
        matrix = np.concatenate([empty if state is None else state for state, empty in zip(states, empties)])
        return matrix.reshape(len(psps), -1)

    def features(self, transaction: Transaction | Mapping[str, Any], psps: Sequence[str], *, attempt: int = 1,
                 previous_decline_class: str | None = None, at: dt.datetime | None = None) -> pd.DataFrame:
        """:meth:`features_array` as a frame (one row per PSP, categoricals as pandas categoricals)."""
        matrix, names = self.features_array(transaction, psps, attempt=attempt,
                                            previous_decline_class=previous_decline_class, at=at)
        columns: dict[str, Any] = {}
        for j, name in enumerate(names):
            dtype = self._categorical_dtypes.get(name)
            if dtype is None:
                columns[name] = matrix[:, j]
            else:
                codes = np.nan_to_num(matrix[:, j], nan=-1).astype(np.int32)
                columns[name] = pd.Categorical.from_codes(codes, dtype=dtype)
        return pd.DataFrame(columns, copy=False)

    # ------------------------------------------------------------------ snapshot

    def snapshot(self, path: str | Path) -> Path:
        """Write every counter and staged outcome to one ``.npz`` file (no pickle)."""
        return write_snapshot(path, self.snapshot_arrays())

    def snapshot_arrays(self) -> dict[str, np.ndarray]:
        """The store's state as fresh arrays (copies): later updates do not change them, so they can be
        written while the store keeps serving (:func:`write_snapshot`)."""
        items = list(self.backend.items())
        staged = sorted(self._staged)
        meta = {"spec_version": self.spec.version, "cutoff_us": self._cutoff_us, "sequence": self._sequence,
                "reporting_delay_us": self._delay_us, "catalog_version": self.catalog.version}
        return dict(
            meta=np.array(json.dumps(meta)),
            keys=np.array([key for key, _ in items], dtype=str),
            lengths=np.array([len(state) for _, state in items], dtype=np.int64),
            states=np.concatenate([state for _, state in items]) if items else np.zeros(0),
            staged_us=np.array([s[0] for s in staged], dtype=np.int64),
            staged_sequence=np.array([s[1] for s in staged], dtype=np.int64),
            staged_keys=np.array([s[2] for s in staged], dtype=str).reshape(len(staged), len(self._levels)),
            staged_weights=np.array([s[3] for s in staged]).reshape(len(staged), len(COUNTERS)),
        )

    @classmethod
    def restore(cls, path: str | Path, catalog: Catalog, spec: FeatureSpec = DEFAULT_SPEC,
                backend: Backend | None = None) -> "OnlineFeatureStore":
        """Rebuild a store from :meth:`snapshot`; refuses a snapshot taken under another spec."""
        with np.load(Path(path), allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta["spec_version"] != spec.version:
                raise ValueError(f"snapshot was taken under feature spec {meta['spec_version']}, not {spec.version}")
            store = cls(catalog, spec, backend, reporting_delay=dt.timedelta(microseconds=meta["reporting_delay_us"]))
            bounds = np.concatenate([[0], np.cumsum(data["lengths"])])
            states = data["states"]
            for i, key in enumerate(data["keys"]):
                store.backend.put(str(key), states[bounds[i] : bounds[i + 1]].copy())
            store._staged = [
                (int(us), int(seq), tuple(str(k) for k in keys), weights.copy())
                for us, seq, keys, weights in zip(data["staged_us"], data["staged_sequence"], data["staged_keys"],
                                                  data["staged_weights"])
            ]
            heapq.heapify(store._staged)
            store._sequence = meta["sequence"]
            store._cutoff_us = meta["cutoff_us"]
        return store


def write_snapshot(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write :meth:`OnlineFeatureStore.snapshot_arrays` to one ``.npz`` file (no pickle)."""
    path = Path(path)
    with path.open("wb") as handle:
        np.savez(handle, **arrays)
    return path
