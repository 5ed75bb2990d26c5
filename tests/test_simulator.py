"""The simulated payment world: determinism, contract files, PSP profiles, incidents, logging
propensities, the decline causal structure, eligibility, fees, chargebacks and the CLI."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from payroute.catalog import attempt_cost, load_catalog
from payroute.cli import main
from payroute.contracts import (
    ATTEMPTS_SCHEMA,
    CHARGEBACKS_SCHEMA,
    DECLINE_CLASS,
    TRANSACTIONS_SCHEMA,
    AttemptOutcome,
    DeclineReason,
    Transaction,
)
from payroute.history import read_history
from payroute.simulator import (
    Incident,
    NewPsp,
    SimulationConfig,
    World,
    default_incidents,
    simulate_history,
    write_history,
)

SEED = 11
CONFIG = SimulationConfig(n_transactions=30_000, days=6)


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def history(catalog):
    return simulate_history(CONFIG, catalog, seed=SEED)


@pytest.fixture(scope="module")
def world(history):
    return history.world


# ------------------------------------------------------------------------------------------ determinism


def test_same_seed_same_history_different_seed_different(catalog):
    config = SimulationConfig(n_transactions=2_000, days=2)
    first, again = simulate_history(config, catalog, seed=3), simulate_history(config, catalog, seed=3)
    for name in ("transactions", "attempts", "chargebacks", "true_approval", "logging_probabilities"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(again, name))
    other = simulate_history(config, catalog, seed=4)
    assert not first.attempts["psp"].equals(other.attempts["psp"])
    assert not first.transactions["amount"].equals(other.transactions["amount"])


def test_draws_depend_on_transaction_and_psp_only(world, history):
    """Common random numbers: the same (transaction, PSP) gets the same draws in any batch or order."""
    ids = history.transactions["id"].to_numpy()[:500]
    at_euroacq = world.uniforms(ids, "euroacq")
    reordered = world.uniforms(ids[::-1], "euroacq")[::-1]
    np.testing.assert_array_equal(at_euroacq, reordered)
    at_globalpay = world.uniforms(ids, "globalpay")
    from payroute.simulator.draws import U_APPROVE, U_CUSTOMER, U_HARD

    np.testing.assert_array_equal(at_euroacq[:, [U_HARD, U_CUSTOMER]], at_globalpay[:, [U_HARD, U_CUSTOMER]])
    assert not np.allclose(at_euroacq[:, U_APPROVE], at_globalpay[:, U_APPROVE])
    assert ((at_euroacq > 0) & (at_euroacq < 1)).all()


# ------------------------------------------------------------------------------------------ contract files


def test_written_history_follows_the_contract(history, catalog, tmp_path):
    paths = write_history(history, tmp_path, catalog)
    for name, schema in (("transactions", TRANSACTIONS_SCHEMA), ("attempts", ATTEMPTS_SCHEMA),
                         ("chargebacks", CHARGEBACKS_SCHEMA)):
        assert pq.read_schema(paths[name]).remove_metadata().equals(schema), name
    loaded = read_history(tmp_path)
    assert len(loaded.transactions) == len(history.transactions)
    assert len(loaded.attempts) == len(history.attempts)
    assert len(loaded.chargebacks) == len(history.chargebacks)
    assert not any(column.startswith("_") for column in pq.read_schema(paths["transactions"]).names)
    assert load_catalog(paths["catalog"]) == catalog
    truth = pd.read_parquet(paths["true_approval"])
    assert list(truth.columns) == ["transaction_id", "psp", "p_approve", "propensity"]
    np.testing.assert_allclose(loaded.attempts["fee"], history.attempts["fee"], atol=1e-9)


@pytest.mark.parametrize("row", range(0, 30_000, 1_499))
def test_rows_validate_against_the_pydantic_contract(history, row):
    transaction = history.transactions.iloc[row]
    fields = {k: (None if pd.isna(v) else v) for k, v in transaction.items() if not k.startswith("_")}
    fields["amount"] = str(fields["amount"])
    fields["timestamp"] = fields["timestamp"].to_pydatetime()
    Transaction.model_validate(fields)
    for _, attempt in history.attempts[history.attempts["transaction_id"] == transaction["id"]].iterrows():
        values = {k: (None if pd.isna(v) else v) for k, v in attempt.items()}
        values["timestamp"] = values["timestamp"].to_pydatetime()
        for money in ("fee", "fx_cost", "fee_eur", "fx_cost_eur"):
            values[money] = str(values[money])
        AttemptOutcome.model_validate(values)


# ------------------------------------------------------------------------------------------ PSP profiles

# (country, local acquirer, competitor, minimum true approval gap) on domestic card payments both take.
HOME_ADVANTAGE = [
    ("DE", "euroacq", "globalpay", 0.04),
    ("DE", "euroacq", "budgetpay", 0.10),
    ("GB", "britpay", "euroacq", 0.10),
    ("BR", "latamconnect", "riskshield", 0.04),
    ("MX", "latamconnect", "globalpay", 0.04),
]


@pytest.mark.parametrize("country, local, competitor, gap", HOME_ADVANTAGE)
def test_local_acquirer_beats_competitor_at_home(history, world, country, local, competitor, gap):
    """On the same domestic card transactions (seed 11) the oracle's mean approval of the local acquirer
    beats the competitor's by ``gap``, and outcomes drawn at both PSPs show a positive gap within four
    standard errors of the oracle's."""
    tx = history.transactions
    eligible = history.true_approval.pivot(index="transaction_id", columns="psp", values="p_approve")
    both = eligible[[local, competitor]].dropna().index
    rows = tx[tx["id"].isin(both) & (tx["country"] == country) & (tx["issuer_country"] == country)
              & (tx["payment_method"] == "card")]
    assert len(rows) >= 250, "too few transactions for the stated tolerance"
    drawn = {psp: (world.attempt(rows, psp)["status"] == "approved").mean() for psp in (local, competitor)}
    truth = {psp: world.approval_probability(rows, psp).mean() for psp in (local, competitor)}
    true_gap, drawn_gap = truth[local] - truth[competitor], drawn[local] - drawn[competitor]
    standard_error = np.sqrt(2 * 0.25 / len(rows))
    assert true_gap >= gap, truth
    assert drawn_gap > 0 and abs(drawn_gap - true_gap) < 4 * standard_error, drawn


def test_local_acquirer_weaker_cross_border(history, world):
    """euroacq approves domestic EU cards better than non-EU cards used in the EU (oracle, seed 11)."""
    tx = history.transactions
    takes = history.true_approval[history.true_approval["psp"] == "euroacq"]["transaction_id"]
    rows = tx[tx["id"].isin(takes) & (tx["payment_method"] == "card")]
    region = rows["issuer_country"].map({c: p.region for c, p in world.catalog.countries.items()})
    p = world.approval_probability(rows, "euroacq")
    assert p[(region == "EU").to_numpy()].mean() - p[(region != "EU").to_numpy()].mean() > 0.10


def test_issuer_affinity_makes_issuer_level_learning_pay(history, world):
    """Within one (country, PSP), true approval varies by issuer well beyond sampling noise."""
    tx = history.transactions
    rows = tx[(tx["country"] == "DE") & (tx["issuer_country"] == "DE") & (tx["payment_method"] == "card")]
    p = pd.Series(world.approval_probability(rows, "riskshield"), index=rows.index)
    by_issuer = p.groupby(rows["_issuer"]).mean()
    assert len(by_issuer) >= 8
    assert by_issuer.max() - by_issuer.min() > 0.15


# ------------------------------------------------------------------------------------------ incidents


def _failure_rate(frame: pd.DataFrame) -> float:
    return frame["status"].isin(["error", "timeout"]).mean()


def test_full_outage_visible_in_history_only_inside_its_window(history):
    outage = next(i for i in default_incidents(CONFIG.start, CONFIG.days) if i.kind == "outage" and i.country is None)
    attempts = history.attempts[history.attempts["psp"] == outage.psp]
    inside = (attempts["timestamp"] >= outage.start) & (attempts["timestamp"] < outage.end)
    assert inside.sum() >= 50
    assert _failure_rate(attempts[inside]) > 0.85
    assert _failure_rate(attempts[~inside]) < 0.03
    # Outage failures are soft: the cascade moves on to another PSP.
    failed = attempts[inside & attempts["status"].isin(["error", "timeout"])]
    retried = history.attempts.set_index(["transaction_id", "attempt"]).index
    has_next = pd.MultiIndex.from_arrays([failed["transaction_id"], failed["attempt"] + 1]).isin(retried)
    assert has_next.mean() > 0.8


@pytest.mark.parametrize(
    "incident, hit, spared",
    [
        (dict(psp="latamconnect", country="BR"), dict(country="BR"), dict(country="MX")),
        (dict(psp="riskshield", network="mastercard"), dict(card_network="mastercard"), dict(card_network="visa")),
    ],
)
def test_partial_outage_hits_only_its_country_or_network(history, catalog, incident, hit, spared):
    start = CONFIG.start + dt.timedelta(days=1)
    config = CONFIG.model_copy(update={"incidents": (Incident(start=start, end=start + dt.timedelta(hours=6), **incident),)})
    world = World(catalog, SEED, config)
    takes = history.true_approval[history.true_approval["psp"] == incident["psp"]]["transaction_id"]
    tx = history.transactions[history.transactions["id"].isin(takes)]
    for selector, expected_inside in ((hit, True), (spared, False)):
        (column, value), = selector.items()
        rows = tx[tx[column] == value]
        assert len(rows) >= 200
        inside = _failure_rate(world.attempt(rows, incident["psp"], at=start + dt.timedelta(hours=3)))
        before = _failure_rate(world.attempt(rows, incident["psp"], at=start - dt.timedelta(hours=3)))
        assert before < 0.05
        assert (inside > 0.85) if expected_inside else (inside < 0.05)


# ------------------------------------------------------------------------------------------ logging policy


def test_logging_probabilities_sum_to_one_over_eligible_psps(history, catalog):
    sums = history.logging_probabilities.groupby("transaction_id")["propensity"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-9)
    assert len(sums) == len(history.transactions)
    eligible, _ = catalog.eligibility_matrix(history.transactions)
    assert len(history.logging_probabilities) == eligible.sum()
    assert (history.logging_probabilities["propensity"] > 0).all()


def test_recorded_propensity_is_the_policy_probability_of_the_chosen_psp(history):
    first = history.attempts[history.attempts["attempt"] == 1]
    policy = history.logging_probabilities.set_index(["transaction_id", "psp"])["propensity"]
    recorded = first.set_index(["transaction_id", "psp"])["propensity"]
    np.testing.assert_allclose(recorded.to_numpy(), policy.loc[recorded.index].to_numpy(), rtol=1e-12)
    # Second attempts: the probability renormalised over the PSPs not yet tried.
    second = history.attempts[history.attempts["attempt"] == 2]
    tried = first.set_index("transaction_id")["psp"].loc[second["transaction_id"]].to_numpy()
    p_chosen = policy.loc[list(zip(second["transaction_id"], second["psp"]))].to_numpy()
    p_tried = policy.loc[list(zip(second["transaction_id"], tried))].to_numpy()
    np.testing.assert_allclose(second["propensity"].to_numpy(), p_chosen / (1 - p_tried), rtol=1e-9)


def test_choice_frequencies_match_propensities(history):
    """Per PSP, chosen count minus the sum of its probabilities is within 4 standard deviations
    (sum of π(1-π)) over the first attempts (seed 11, 30,000 transactions)."""
    policy = history.logging_probabilities
    chosen = history.attempts[history.attempts["attempt"] == 1][["transaction_id", "psp"]].assign(chosen=1.0)
    frame = policy.merge(chosen, on=["transaction_id", "psp"], how="left").fillna({"chosen": 0.0})
    for psp, group in frame.groupby("psp"):
        expected = group["propensity"].sum()
        sd = np.sqrt((group["propensity"] * (1 - group["propensity"])).sum())
        assert abs(group["chosen"].sum() - expected) < 4 * sd + 1e-9, psp


def test_eligibility_by_profile_equals_the_catalogue_rules(history, catalog):
    """The simulator's per-profile shortcut gives exactly ``catalog.eligibility_matrix``, amounts on
    the limits included."""
    from payroute.simulator.eligibility import eligibility_by_profile

    tx = history.transactions.iloc[:5_000].copy()
    limits = sorted({float(v) for p in catalog.psps for v in (p.amount_limits.min_eur, p.amount_limits.max_eur)})
    edge = np.arange(len(limits) * 3)
    tx.loc[tx.index[edge], "currency"] = "EUR"
    tx.loc[tx.index[edge], "amount"] = np.repeat(limits, 3) + np.tile([-0.01, 0.0, 0.01], len(limits))
    np.testing.assert_array_equal(eligibility_by_profile(catalog, tx), catalog.eligibility_matrix(tx)[0])


def test_new_psp_is_not_routed_before_it_goes_live(catalog):
    config = SimulationConfig(n_transactions=4_000, days=2, incidents=(),
                              new_psp=NewPsp(name="budgetpay", available_from=CONFIG.start + dt.timedelta(days=1)))
    history = simulate_history(config, catalog, seed=2)
    chosen = history.attempts[history.attempts["psp"] == "budgetpay"]
    assert len(chosen) > 20
    assert (chosen["timestamp"] >= config.new_psp.available_from).all()
    offered = history.logging_probabilities[history.logging_probabilities["psp"] == "budgetpay"]
    offered_at = history.transactions.set_index("id").loc[offered["transaction_id"], "timestamp"]
    assert (offered_at >= config.new_psp.available_from).all()


def test_every_chosen_psp_is_eligible(history, catalog):
    eligible, _ = catalog.eligibility_matrix(history.transactions)
    column = {name: j for j, name in enumerate(catalog.psp_names)}
    row = pd.Series(np.arange(len(history.transactions)), index=history.transactions["id"])
    rows = row.loc[history.attempts["transaction_id"]].to_numpy()
    cols = history.attempts["psp"].map(column).to_numpy()
    assert eligible[rows, cols].all()
    assert not history.attempts.duplicated(["transaction_id", "psp"]).any()


# ------------------------------------------------------------------------------------------ declines


def test_customer_declines_repeat_at_every_other_psp(history, world):
    """A customer decline at one PSP is the same decline at every other eligible PSP, unless that PSP
    fails before reaching the issuer (error/timeout)."""
    tx = history.transactions.iloc[:8_000]
    eligible = history.true_approval[history.true_approval["transaction_id"].isin(tx["id"])]
    outcomes = {psp: world.attempt(tx, psp).set_index(tx["id"]) for psp in eligible["psp"].unique()}
    by_psp = pd.concat(outcomes, names=["psp", "transaction_id"]).reset_index()
    by_psp = by_psp.merge(eligible[["transaction_id", "psp"]], on=["transaction_id", "psp"])
    customer = by_psp[by_psp["decline_class"] == "customer"]
    assert customer["transaction_id"].nunique() >= 300
    reached = by_psp[~by_psp["status"].isin(["error", "timeout"]) & by_psp["transaction_id"].isin(customer["transaction_id"])]
    reasons = reached.groupby("transaction_id")["decline_reason"].nunique()
    assert (reasons == 1).all()
    assert (reached["decline_class"] == "customer").all()


def test_no_retry_after_hard_or_customer_decline(history):
    attempts = history.attempts
    final = attempts["decline_class"].isin(["hard", "customer"]) | (attempts["status"] == "approved")
    stopped = attempts[final]
    later = pd.MultiIndex.from_arrays([stopped["transaction_id"], stopped["attempt"] + 1])
    assert not later.isin(attempts.set_index(["transaction_id", "attempt"]).index).any()
    assert (attempts["attempt"] <= CONFIG.max_attempts).all()
    assert (attempts.groupby("transaction_id")["attempt"].max() > 1).mean() > 0.05


def test_decline_codes_map_back_to_their_reason(history, world):
    for reason in DeclineReason:
        for psp in world.psps:
            assert reason in world.decline_codes[psp].values()
    declined = history.attempts[history.attempts["status"] != "approved"]
    mapped = [world.decline_codes[p][c] for p, c in zip(declined["psp"], declined["decline_code"])]
    assert [m.value for m in mapped] == declined["decline_reason"].tolist()
    classes = declined["decline_reason"].map(lambda r: DECLINE_CLASS[DeclineReason(r)].value)
    assert classes.tolist() == declined["decline_class"].tolist()
    approved = history.attempts[history.attempts["status"] == "approved"]
    assert approved[["decline_code", "decline_reason", "decline_class"]].isna().all().all()


def test_true_approval_matches_empirical_rate(history, world):
    """Averaged over many transactions, outcomes drawn by the world match its oracle (±0.01, seed 11)."""
    tx = history.transactions
    rows = tx[tx["id"].isin(history.true_approval.loc[history.true_approval["psp"] == "riskshield", "transaction_id"])]
    empirical = (world.attempt(rows, "riskshield")["status"] == "approved").mean()
    assert abs(empirical - world.approval_probability(rows, "riskshield").mean()) < 0.01


# ------------------------------------------------------------------------------------------ money


def test_fees_equal_the_catalogue_fee_rule(history, catalog):
    attempts = history.attempts.merge(history.transactions[["id", "amount", "currency"]], left_on="transaction_id",
                                      right_on="id")
    sample = attempts.sample(400, random_state=SEED)
    assert sample["status"].nunique() >= 3
    for _, row in sample.iterrows():
        cost = attempt_cost(catalog, row["psp"], Decimal(str(row["amount"])), row["currency"], row["status"])
        assert (Decimal(str(row["fee"])), Decimal(str(row["fx_cost"]))) == (cost.fee, cost.fx_cost), row.to_dict()
        assert (Decimal(str(row["fee_eur"])), Decimal(str(row["fx_cost_eur"]))) == (cost.fee_eur, cost.fx_cost_eur)


def test_chargebacks_only_on_approved_payments_and_after_them(history):
    chargebacks = history.chargebacks
    assert len(chargebacks) >= 30
    approved = history.attempts[history.attempts["status"] == "approved"].set_index("transaction_id")
    assert chargebacks["transaction_id"].isin(approved.index).all()
    paid_on = approved.loc[chargebacks["transaction_id"], "timestamp"].dt.date.to_numpy()
    assert (chargebacks["date"].to_numpy() > paid_on).all()
    amounts = history.transactions.set_index("id").loc[chargebacks["transaction_id"], "amount"].to_numpy()
    np.testing.assert_array_equal(chargebacks["amount"].to_numpy(), amounts)


def test_chargeback_rates_differ_by_vertical_and_psp(history):
    """The dispute probability follows the configured vertical rates and PSP factors exactly, and the
    simulated count matches the sum of probabilities within 4 Poisson standard deviations (seed 11)."""
    from payroute.simulator.history import chargeback_probability

    settings = CONFIG.chargebacks
    probe = pd.DataFrame({"vertical": ["forex", "ecommerce", "forex"], "payment_method": ["card"] * 3,
                          "_customer_risk": [0.0] * 3})
    p = chargeback_probability(probe, np.array(["euroacq", "euroacq", "riskshield"]), settings)
    assert p[0] / p[1] == pytest.approx(settings.vertical_rates["forex"] / settings.vertical_rates["ecommerce"])
    assert p[2] / p[0] == pytest.approx(settings.psp_factors["riskshield"] / settings.psp_factors["euroacq"])
    approved = history.attempts[history.attempts["status"] == "approved"]
    paid = history.transactions.set_index("id").loc[approved["transaction_id"]]
    expected = chargeback_probability(paid, approved["psp"].to_numpy(), settings).sum()
    assert abs(len(history.chargebacks) - expected) < 4 * np.sqrt(expected)


# ------------------------------------------------------------------------------------------ CLI


def test_simulate_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "history"
    code = main(["simulate", "--txns", "800", "--days", "2", "--seed", "5", "--out", str(out), "--incidents", "none"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "800 transactions" in printed and "approval rate by PSP" in printed
    loaded = read_history(out)
    assert len(loaded.transactions) == 800
    assert set(loaded.attempts["transaction_id"]) == set(loaded.transactions["id"])
    assert (out / "catalog.yaml").exists() and (out / "truth" / "true_approval.parquet").exists()
