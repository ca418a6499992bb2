"""One self-contained HTML report of a study, and a short Markdown summary."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import platform
import re
import sys
import time
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from analysis._claims import claims, format_claims
from analysis._errors import AnalysisError
from analysis._kinds import PLOTS, check_kinds
from analysis._overhead import overhead_estimate
from analysis._results import Study
from analysis._style import is_accuracy, to_percent
from analysis._tables import (
    as_study,
    degradation_layout,
    degradation_table,
    fidelity_table,
    importances_once,
    overhead_ratio_table,
    overhead_table,
    refresh_records,
)

__all__ = ["claims_markdown", "write_report"]

_PACKAGES = ("xsam-tune", "ray", "optuna", "pandas", "numpy", "pyarrow", "matplotlib", "seaborn")
_TRIAL_COLUMNS = (
    "trial_id",
    "status",
    "epochs_done",
    "objective",
    "final_test_acc",
    "best_test_acc",
    "time_total_s",
    "error",
)

# Marks every <img> loaded or not once the page has loaded; a headless browser
# (the tests) or a reader sees the count in #figure-check.
_CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.querySelectorAll('img.figure');
  var ok = 0;
  imgs.forEach(function (img) {
    var good = img.complete && img.naturalWidth > 0;
    img.setAttribute('data-loaded', good ? 'yes' : 'no');
    if (good) { ok += 1; }
  });
  var box = document.getElementById('figure-check');
  box.setAttribute('data-total', String(imgs.length));
  box.setAttribute('data-loaded', String(ok));
  box.textContent = ok + ' of ' + imgs.length + ' figures loaded';
  box.className = ok === imgs.length ? 'ok' : 'bad';
});
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
.meta { color: #555; } nav a { margin-right: 1em; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
table.t { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
table.t th, table.t td { border: 1px solid #ddd; padding: 0.2em 0.6em; text-align: right; }
table.t th { background: #f4f4f4; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }
#figure-check { font-size: 0.85em; color: #555; } #figure-check.bad { color: #b00; }
table.claims td { text-align: left; vertical-align: top; max-width: 28em; }
.error { color: #b00; }
"""


def write_report(
    study: Study | str | Path,
    out_dir: str | Path | None = None,
    *,
    kinds: str | Iterable[str] = "all",
) -> tuple[Path, Path]:
    """Write ``report.html`` (figures embedded as PNG, tables, the study file,
    versions, hardware; no external resources) and ``report.md`` (a short summary).

    Args:
        study: a Study or a study directory.
        out_dir: where to write (default ``<study>/report``).
        kinds: the figures to include (default every kind of :data:`analysis.PLOTS`).

    Returns:
        The paths of the HTML report and of the Markdown summary.
    """
    s = as_study(study)
    chosen = check_kinds(kinds)
    out = Path(out_dir) if out_dir is not None else s.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    tables = _tables(s)
    html_path = out / "report.html"
    md_path = out / "report.md"
    html_path.write_text(_html(s, chosen, tables), encoding="utf-8")
    md_path.write_text(_markdown(s, tables, html_path), encoding="utf-8")
    return html_path, md_path


def _tables(s: Study) -> dict[str, Any]:
    deg = degradation_table(s)
    try:
        imp: pd.Series | str = importances_once(s)
    except AnalysisError as exc:
        imp = str(exc)
    return {
        "claims": claims(_ClaimsFrames(s)),
        "estimate": overhead_estimate(s.trials, s.epochs),
        "degradation": deg,
        "layout": degradation_layout(deg),
        "overhead": overhead_table(s),
        "ratio": overhead_ratio_table(s),
        "fidelity": fidelity_table(s),
        "importances": imp,
    }


class _ClaimsFrames:
    """The frames :func:`analysis.claims` reads, with ``.probes`` cut to one row per
    α refresh as its record holds it (:func:`analysis._tables.refresh_records`):
    the claims read the records' losses, never a grid point, so the report need
    not hold every grid point of the study (0.4 GB at 1,000 trials x 200 epochs)."""

    def __init__(self, s: Study) -> None:
        self.trials = s.trials
        self.epochs = s.epochs
        self.probes = refresh_records(s)


# -- HTML ------------------------------------------------------------------


def _html(s: Study, kinds: list[str], tables: Mapping[str, Any]) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>xsam-tune report: {e(s.name)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{e(s.name)}</h1>",
        f'<p class="meta">{e(str(s.path))}<br>metric: {e(s.metric)} ({e(s.mode)}) · '
        f"{e(_status_line(s))} · report written {e(time.strftime('%Y-%m-%d %H:%M:%S %z'))}</p>",
        '<p id="figure-check" data-total="" data-loaded="">figures not checked yet</p>',
        "<nav>"
        + "".join(
            f'<a href="#{a}">{t}</a>'
            for a, t in (
                ("claims", "Claims"),
                ("figures", "Figures"),
                ("tables", "Tables"),
                ("trials", "Trials"),
                ("study-file", "Study file"),
                ("environment", "Versions and hardware"),
            )
        )
        + "</nav>",
        '<section id="claims"><h2>The paper\'s claims, tested on this study</h2>',
        f"<p>{e(_CLAIMS_NOTE)}</p>",
        _table_html(format_claims(tables["claims"]), verdicts=True),
        "</section>",
        '<section id="figures"><h2>Figures</h2>',
    ]
    for kind in kinds:
        parts.append(_figure_html(s, kind))
    parts.append("</section>")
    parts.append('<section id="tables"><h2>Tables</h2>')
    unit = tables["degradation"].attrs.get("unit", "")
    # (heading, table, with its index): the tables the report shows, in order
    sections = (
        (
            f"Multi-step degradation: final test_acc{f' ({unit})' if unit else ''}, "
            "mean ± std over seeds (finished trials)",
            "layout",
            True,
        ),
        (
            "Degradation, numbers (n trials; low..high: 95 % t-interval of the mean, "
            "none below 3 trials)",
            "degradation",
            False,
        ),
        ("Seconds per epoch by phase", "overhead", False),
        (
            "XSAM's extra cost, estimated within each trial: probe time in % of the "
            "same epochs' forward/backward time (median, IQR over epochs after the first), "
            "next to the analytic floor of the extra probe forwards",
            "estimate",
            False,
        ),
        (
            "XSAM/SAM epoch-time ratio across trials (not a measurement: trials may have "
            "shared the machine; impossible = XSAM cheaper than SAM beyond the spread)",
            "ratio",
            False,
        ),
        ("Direction fidelity (Proposition 1)", "fidelity", False),
    )
    for heading, key, index in sections:
        parts += [f"<h3>{heading}</h3>", _table_html(tables[key], index=index)]
    parts.append("<h3>Parameter importances</h3>")
    imp = tables["importances"]
    if isinstance(imp, pd.Series):
        parts.append(
            f"<p>{e(imp.attrs.get('evaluator', ''))} over {imp.attrs.get('n_trials')} "
            "complete trials</p>"
        )
        parts.append(_table_html(imp.rename("importance").reset_index()))
    else:
        parts.append(f"<p>{e(imp)}</p>")
    parts.append("</section>")
    parts.append('<section id="trials"><h2>Trials</h2>')
    cols = _trial_columns(s)
    parts.append(_table_html(to_percent(s.trials[cols])))
    parts.append("<h3>Fixed settings</h3>")
    settings = pd.DataFrame({"setting": list(s.settings), "value": list(s.settings.values())})
    parts.append(_table_html(settings))
    parts.append("</section>")
    parts.append('<section id="study-file"><h2>Study file</h2>')
    parts.append("<h3>study.yaml</h3>")
    parts.append(
        f"<pre>{e(s.spec_text) if s.spec_text else '(no study.yaml in the directory)'}</pre>"
    )
    parts.append("<h3>study.json</h3>")
    parts.append(
        f"<pre>{e(json.dumps(s.info, indent=2, default=str)) if s.info else '(none)'}</pre>"
    )
    parts.append("</section>")
    parts.append('<section id="environment"><h2>Versions and hardware</h2>')
    parts.append(_environment_html(s))
    parts.append("</section>")
    parts.append(f"<script>{_CHECK_SCRIPT}</script>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _figure_html(s: Study, kind: str) -> str:
    fn = PLOTS.load(kind)
    caption = " ".join((fn.__doc__ or kind).split("\n\n")[0].split())
    caption = re.sub(r":\w+:`~?([^`]+)`|``([^`]+)``", lambda m: m.group(1) or m.group(2), caption)
    try:
        fig = fn(s)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
    except Exception as exc:  # one broken figure must not cost the whole report
        return f'<p class="error">{kind}: could not be drawn: {html.escape(repr(exc))}</p>'
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (
        f'<figure id="fig-{kind}"><img class="figure" alt="{kind} figure" '
        f'src="data:image/png;base64,{data}"><figcaption><b>{kind}</b>: '
        f"{html.escape(caption)}</figcaption></figure>"
    )


def _table_html(frame: pd.DataFrame, *, index: bool = False, verdicts: bool = False) -> str:
    if frame is None or frame.empty:
        return "<p>(nothing yet)</p>"
    if verdicts:  # text cells, left-aligned, the verdict coloured
        styled = frame.to_html(index=False, border=0, classes="t claims", escape=True)
        for v, colour in (
            ("supported", "#1a7f37"),
            ("contradicted", "#b00"),
            ("inconclusive", "#555"),
        ):
            styled = styled.replace(f"<td>{v}</td>", f'<td style="color:{colour}"><b>{v}</b></td>')
        return styled
    return frame.to_html(
        index=index,
        na_rep="–",
        float_format=lambda x: f"{x:.4g}",
        border=0,
        classes="t",
        escape=True,
    )


def _trial_columns(s: Study) -> list[str]:
    cols = ["trial_id", "status", *[c for c in s.swept if c in s.trials.columns]]
    return list(dict.fromkeys([*cols, *[c for c in _TRIAL_COLUMNS if c in s.trials.columns]]))


def _environment_html(s: Study) -> str:
    e = html.escape
    rows = []
    rows += [(f"{k} (study run)", str(v)) for k, v in (s.info.get("versions") or {}).items()]
    rows += [(f"{k} (this report)", v) for k, v in _versions().items()]
    hw_rows = [("host (study driver)", str(s.info["host"]))] if "host" in s.info else []
    hw_rows += [(f"{k} (this report)", v) for k, v in _hardware().items()]
    body = "<h3>Versions</h3>" + _pairs(rows) + "<h3>Hardware</h3>" + _pairs(hw_rows)
    if s.info.get("command"):
        body += f"<h3>Command</h3><pre>{e(str(s.info['command']))}</pre>"
    return body


def _pairs(rows: list[tuple[str, str]]) -> str:
    return _table_html(pd.DataFrame(rows, columns=["what", "value"]))


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for pkg in (*_PACKAGES, "torch"):
        try:
            out[pkg] = metadata.version(pkg)  # metadata only: nothing is imported
        except metadata.PackageNotFoundError:
            continue
    return out


def _hardware() -> dict[str, str]:
    out = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": str(os.cpu_count()),
    }
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        out["memory"] = f"{mem / 2**30:.1f} GiB"
    except (ValueError, OSError, AttributeError):
        pass
    return out


def _status_line(s: Study) -> str:
    counts = s.trials["status"].value_counts()
    text = ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "no trials"
    return f"{len(s.trials)} trials: {text}"


# -- Markdown --------------------------------------------------------------


def _markdown(s: Study, tables: Mapping[str, Any], html_path: Path) -> str:
    lines = [f"# {s.name}", ""]
    lines.append(f"- directory: `{s.path}`")
    lines.append(f"- metric: {s.metric} ({s.mode}); {_status_line(s)}")
    best = _best_trial(s)
    if best:
        lines.append(f"- best trial: {best}")
    lines.append(f"- full report: `{html_path}`")
    lines.append("")
    lines.append("## Claims")
    lines.append("")
    lines.append(_CLAIMS_NOTE)
    lines.append("")
    lines += claims_markdown(tables["claims"])
    lines.append("")
    unit = tables["degradation"].attrs.get("unit", "")
    layout = tables["layout"]
    lines += _md_section(
        f"Multi-step degradation (final test_acc{f', {unit}' if unit else ''}, "
        "mean ± std over seeds)",
        layout if layout.empty else layout.reset_index(),
        "(no finished trials yet)",
    )
    lines += _md_section(
        "XSAM's extra cost, within each trial (% of its forward/backward time)",
        tables["estimate"],
        "(needs timed XSAM epochs after the first)",
    )
    ratio = tables["ratio"]
    lines += _md_section(
        "XSAM/SAM epoch-time ratio across trials (not a measurement)",
        ratio if ratio.empty else ratio[[c for c in ratio.columns if c not in _RATIO_MORE]],
        "(needs XSAM and SAM trials with the same k)",
    )
    lines += _md_section(
        "Proposition 1 (share of α refreshes)", tables["fidelity"], "(no α refreshes yet)"
    )
    lines.append("## Parameter importances")
    lines.append("")
    imp = tables["importances"]
    if isinstance(imp, pd.Series):
        lines += _md_table(imp.rename("importance").reset_index())
    else:
        lines.append(imp)
    lines.append("")
    return "\n".join(lines)


def claims_markdown(table: pd.DataFrame) -> list[str]:
    """The claims table (:func:`analysis.claims`) as Markdown lines."""
    return _md_table(format_claims(table))


_CLAIMS_NOTE = (
    "Accuracy effects in percentage points; 95 % t-intervals of the mean (paired "
    "across shared seeds) need at least 3 seeds, below that the individual values "
    "are listed and the verdict is inconclusive; costs are medians and IQRs over "
    "epochs, estimated within each trial."
)


# Ratio-table columns left out of the short summary.
_RATIO_MORE = frozenset(
    {
        "sam_time_epoch",
        "xsam_time_epoch",
        "extra_s",
        "probe_forward_per_epoch",
        "forward_s",
        "floor_s",
        "refreshes_per_epoch",
    }
)


def _best_trial(s: Study) -> str | None:
    t = s.trials[s.trials["objective"].notna()]
    if t.empty:
        return None
    i = t["objective"].idxmax() if s.mode == "max" else t["objective"].idxmin()
    row = t.loc[i]
    params = ", ".join(f"{p}={_cell(row[p])}" for p in s.swept if p in t.columns)
    value = _cell(row["objective"])
    if is_accuracy(s.metric):  # a fraction in the frames, a percentage for the reader
        value = f"{100.0 * float(row['objective']):.2f} %"
    return f"{row['trial_id']} ({params}): {s.metric} = {value} [{row['status']}]"


def _md_section(title: str, frame: pd.DataFrame, empty: str) -> list[str]:
    """A Markdown section: its heading, then the table, or ``empty`` when it has no rows."""
    return [f"## {title}", "", *(_md_table(frame) if not frame.empty else [empty]), ""]


def _md_table(frame: pd.DataFrame) -> list[str]:
    cols = [str(c) for c in frame.columns]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        out.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return out


def _cell(value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")
