"""Render a :class:`Report` as one self-contained HTML page: inline CSS, plots as base64 PNG, no URLs.

matplotlib is imported here only, so importing the report's tables stays light.
"""

from __future__ import annotations

import base64
import html
import io

import pandas as pd

from payroute.reporting.report import Report

SECTIONS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("Overview", ("overall",), "All payments in the window."),
    ("Approval and conversion", tuple(f"approval_by_{d}" for d in ("psp", "country", "payment_method", "vertical", "day")),
     "By PSP, payment-level figures belong to the PSP a payment was first routed to; attempt-level figures "
     "(attempt approval, decline mix, error and timeout rate, latency) to the PSP attempted. Decline mix is "
     "over failed attempts."),
    ("Cost", ("cost_by_psp", "saving_vs_cheapest_eligible"),
     "Fees and FX in EUR and in basis points of approved volume. The saving compares each approved payment's "
     "recorded cost (the whole cascade) with the contract cost at the cheapest eligible PSP, approval held equal."),
    ("Chargebacks", ("chargebacks_by_psp", "chargebacks_by_merchant"),
     "Chargebacks of the payments approved in the window over those payments. Status: breach (threshold and "
     "minimum count reached), nearing (at the warning fraction of a threshold), ok."),
    ("Payouts and withdrawals", ("payouts",), "Requests, success after the cascade, volume, cost and time to complete."),
    ("Routing", ("incidents", "approval_by_model_version", "degraded_share", "exploration_share"),
     "Incident windows: hours in which a PSP's error + timeout rate reached 50 % on at least 10 attempts. "
     "Model version, degraded and exploration views appear when the history carries a service log's columns."),
)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222;max-width:1400px}
h1{margin-bottom:0}h2{border-bottom:2px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:12px;margin:.5em 0 1.5em}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
.note{color:#555;font-size:13px;max-width:1000px}.breach{background:#f8d0d0}.nearing{background:#fbefc4}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}
"""
_PERCENT_WORDS = ("approval", "conversion", "rate", "share", "success")


def render_html(report: Report) -> str:
    """The whole page as a string."""
    window = f"{_date(report.start)} to {_date(report.end, last=True)}"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>payroute operations report, {html.escape(window)}</title><style>{_CSS}</style></head><body>",
        "<h1>payroute operations report</h1>",
        f"<p class='note'>Window: {html.escape(window)}. Catalogue: {html.escape(report.catalog_version)}. "
        f"Reporting currency: EUR. PSPs: {html.escape(', '.join(report.psps))}.</p>",
    ]
    figures = _figures(report)
    for title, names, note in SECTIONS:
        present = [n for n in names if n in report.tables]
        if not present and title not in figures:
            continue
        parts.append(f"<h2>{html.escape(title)}</h2><p class='note'>{html.escape(note)}</p>")
        for image in figures.get(title, ()):
            parts.append(image)
        for name in present:
            parts.append(f"<h3>{html.escape(name.replace('_', ' '))}</h3>")
            parts.append(_table_html(report.tables[name]))
    parts.append("<h2>Chargeback monitoring thresholds</h2>")
    parts.append(_table_html(pd.DataFrame([p.model_dump() for p in report.thresholds.programmes])))
    parts.append("</body></html>")
    return "\n".join(parts)


def _date(value, last: bool = False) -> str:
    if value is None:
        return "the end of history" if last else "the start of history"
    if last:
        value = value - pd.Timedelta(microseconds=1)
    return value.strftime("%Y-%m-%d")


def _table_html(table: pd.DataFrame) -> str:
    if table.empty:
        return "<p class='note'>No rows.</p>"
    shown = table.copy()
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]):
            percent = any(word in column for word in _PERCENT_WORDS) and "bps" not in column
            fmt = "{:.2%}" if percent else "{:,.2f}"
            shown[column] = shown[column].map(lambda v, f=fmt: "" if pd.isna(v) else f.format(v))
    body = shown.to_html(index=False, escape=True, border=0)
    if "status" in shown.columns:
        for status in ("breach", "nearing"):
            body = body.replace(f"<td>{status}</td>", f"<td class='{status}'>{status}</td>")
    return body


def _png(figure) -> str:
    buffer = io.BytesIO()
    # No metadata: matplotlib would otherwise stamp its web address into the PNG.
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"<img alt='plot' src='data:image/png;base64,{encoded}'>"


def _figures(report: Report) -> dict[str, list[str]]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    figures: dict[str, list[str]] = {}
    try:
        day = report.tables["approval_by_day"]
        if not day.empty:
            fig, ax = plt.subplots(figsize=(10, 3))
            for column in ("first_attempt_approval", "final_approval", "deposit_conversion", "first_deposit_conversion"):
                ax.plot(pd.to_datetime(day["day"]), day[column], marker=".", label=column.replace("_", " "))
            ax.set_ylabel("share")
            ax.set_title("Approval and deposit conversion by day")
            fig.autofmt_xdate()
            ax.legend(fontsize=8)
            figures.setdefault("Approval and conversion", []).append(_png(fig))
            plt.close(fig)

        cost = report.tables["cost_by_psp"]
        saving = report.tables["saving_vs_cheapest_eligible"]
        if not cost.empty:
            fig, ax = plt.subplots(figsize=(10, 3))
            merged = cost.merge(saving[["psp", "saving_bps"]], on="psp", how="left")
            x = range(len(merged))
            ax.bar([i - 0.2 for i in x], merged["cost_bps"], width=0.4, label="cost (bps of approved volume)")
            ax.bar([i + 0.2 for i in x], merged["saving_bps"], width=0.4, label="saving left vs cheapest eligible (bps)")
            ax.set_xticks(list(x), merged["psp"], rotation=30)
            ax.set_title("Cost per PSP")
            ax.legend(fontsize=8)
            figures.setdefault("Cost", []).append(_png(fig))
            plt.close(fig)

        cb = report.tables["chargebacks_by_psp"]
        if not cb.empty:
            fig, ax = plt.subplots(figsize=(10, 3))
            ax.bar(cb["psp"], cb["chargeback_rate_count"] * 1e4, label="chargebacks (bps of approved count)")
            for programme in report.thresholds.programmes:
                if programme.level == "psp":
                    ax.axhline(programme.ratio * 1e4, linestyle="--", linewidth=1, label=programme.name)
            ax.set_ylabel("bps")
            ax.tick_params(axis="x", rotation=30)
            ax.set_title("Chargeback rate per PSP against monitoring thresholds")
            ax.legend(fontsize=8)
            figures.setdefault("Chargebacks", []).append(_png(fig))
            plt.close(fig)

        traffic = report.traffic
        if not traffic.empty:
            fig, ax = plt.subplots(figsize=(12, 4))
            times = traffic.index.tz_localize(None) if traffic.index.tz is not None else traffic.index
            ax.stackplot(times, traffic.T.to_numpy(), labels=list(traffic.columns), alpha=0.85)
            for i, row in enumerate(report.tables["incidents"].itertuples()):
                start = pd.Timestamp(row.start).tz_localize(None)
                end = pd.Timestamp(row.end).tz_localize(None)
                ax.axvspan(start, end, color="red", alpha=0.25)
                # Stagger the labels so that neighbouring windows stay readable.
                ax.text(start, 1.01 + 0.05 * (i % 3), row.psp, fontsize=7, color="red")
            ax.set_ylim(0, 1)
            ax.set_ylabel("share of attempts")
            ax.set_title("Traffic share per PSP by hour (red: incident windows)", pad=28)
            fig.autofmt_xdate()
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
            figures.setdefault("Routing", []).append(_png(fig))
            plt.close(fig)
    finally:
        plt.close("all")
    return figures
