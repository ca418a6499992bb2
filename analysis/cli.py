"""The ``results``, ``plot`` and ``report`` subcommands of ``xsam-tune``.

``study/cli.py`` owns the ``xsam-tune`` parser and calls :func:`add_parsers`;
each subcommand's ``func`` takes the parsed Namespace and returns an exit
code, and raises :class:`analysis.AnalysisError` on bad input (the caller
prints it as one line and exits with 2). :func:`main` does the same on its
own (``python -m analysis results DIR``).
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis._errors import AnalysisError
from analysis._kinds import ALL, PLOTS, check_kinds
from analysis._kinds import FORMATS as FIGURE_FORMATS
from analysis._schema import DEFAULT_STALE_AFTER

if TYPE_CHECKING:
    import pandas as pd

# Building the parser (``xsam-tune --help``) imports nothing heavy: pandas comes
# with the verbs that read a study, matplotlib and seaborn with those that draw.
# `results` prints the trials table of a study whose analysis cache is fresh
# without pandas at all (analysis._summary).

__all__ = ["CLAIMS_FORMATS", "OUTPUT_FORMATS", "add_parsers", "main", "select"]

#: ``results --format`` choices.
OUTPUT_FORMATS: tuple[str, ...] = ("table", "csv", "parquet", "json")
#: ``claims --format`` choices.
CLAIMS_FORMATS: tuple[str, ...] = ("table", "markdown", "csv", "json")

# Columns ``--format table`` shows when --columns is not given (the files get all).
_TABLE_COLUMNS = {
    "trials": (
        "trial_id",
        "status",
        "@keys",
        "epochs_done",
        "objective",
        "best_test_acc",
        "time_total_s",
    ),
    "epochs": (
        "trial_id",
        "@keys",
        "epoch",
        "train_loss",
        "test_loss",
        "test_acc",
        "alpha",
        "time_epoch",
    ),
    "probes": ("trial_id", "@keys", "refresh_index", "epoch", "alpha", "loss", "alpha_star"),
}


def add_parsers(subparsers: Any) -> None:
    """Register ``results``, ``plot`` and ``report`` on an argparse subparsers object.

    Args:
        subparsers: what ``ArgumentParser.add_subparsers()`` returned.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("dir", metavar="DIR", help="study directory (<storage>/<name>)")
    common.add_argument(
        "--stale-after",
        type=float,
        default=DEFAULT_STALE_AFTER,
        metavar="SECONDS",
        help="an incomplete trial counts as interrupted, not running, when no study file "
        "changed for this long and study.json has no finished_at (default %(default)g)",
    )

    p = subparsers.add_parser(
        "results",
        parents=[common],
        help="print or export a study's results as a table",
        description="One row per trial (default), per trial and epoch (--epochs) or per "
        "α refresh and grid point (--probes).",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--epochs",
        dest="table",
        action="store_const",
        const="epochs",
        default="trials",
        help="one row per trial and epoch",
    )
    which.add_argument(
        "--probes",
        dest="table",
        action="store_const",
        const="probes",
        help="one row per α refresh and grid point (the L(α) curves)",
    )
    p.add_argument(
        "--query", metavar="EXPR", help="pandas query, e.g. \"status == 'finished' and steps > 1\""
    )
    p.add_argument(
        "--sort",
        metavar="COL",
        help="sort by COL (several: a,b); descending: --desc or --sort=-COL",
    )
    p.add_argument("--desc", action="store_true", help="sort in descending order")
    p.add_argument(
        "--columns",
        nargs="+",
        metavar="COL",
        help="columns to keep, in order (space- or comma-separated)",
    )
    p.add_argument(
        "--format",
        choices=OUTPUT_FORMATS,
        default="table",
        help="table (a short column set unless --columns), csv, parquet or json "
        "(pandas table schema: rows under 'data'); the last three get every column",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    p.set_defaults(func=run_results)

    kinds = ", ".join(PLOTS)
    p = subparsers.add_parser(
        "plot",
        parents=[common],
        help="draw a study's figures (PNG and SVG)",
        description=f"Kinds: {kinds}.",
    )
    # Checked by check_kinds in run_plot, not argparse `choices`: an unknown kind is
    # one line and exit 2 (argparse adds its usage), and "alpha,curves" works too.
    p.add_argument(
        "--kind",
        nargs="+",
        default=[ALL],
        metavar="KIND",
        help=f"{ALL} (default) or some of: {kinds}",
    )
    p.add_argument(
        "--format",
        nargs="+",
        default=list(FIGURE_FORMATS),
        metavar="FMT",
        help="file formats (default: png svg)",
    )
    p.add_argument("-o", "--output", metavar="DIR", help="output folder (default DIR/figures)")
    p.set_defaults(func=run_plot)

    p = subparsers.add_parser(
        "report",
        parents=[common],
        help="write a self-contained HTML report and a Markdown summary",
    )
    p.add_argument("-o", "--output", metavar="DIR", help="output folder (default DIR/report)")
    p.set_defaults(func=run_report)

    p = subparsers.add_parser(
        "claims",
        parents=[common],
        help="test the paper's claims on a study: effect, uncertainty, n, verdict",
        description="One row per claim the study's trials can test (XSAM ≥ SAM at equal k, "
        "SAM falls with k, XSAM does not, XSAM's extra cost < 3%%, α* stable, Proposition "
        "1.1 and 1.2) with the measured effect, its uncertainty, n and a verdict: "
        "supported, contradicted or inconclusive (with why). Accuracy in percent points.",
    )
    p.add_argument(
        "--format",
        choices=CLAIMS_FORMATS,
        default="table",
        help="table (text, default), markdown, csv or json (numbers, not text)",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    p.set_defaults(func=run_claims)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand on its own; bad input prints one line and returns 2."""
    parser = argparse.ArgumentParser(prog="xsam-tune", description="Study results.")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except AnalysisError as exc:
        print(f"xsam-tune {args.command}: error: {exc}", file=sys.stderr)
        return 2


# -- results ---------------------------------------------------------------


def select(
    frame: pd.DataFrame,
    *,
    query: str | None = None,
    sort: str | None = None,
    descending: bool = False,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Filter, sort and cut a result frame the way ``xsam-tune results`` does.

    Raises:
        AnalysisError: an unknown column or a query pandas cannot evaluate.
    """
    out = frame
    if query:
        try:
            out = out.query(query)
        except Exception as exc:  # pandas raises many types (NameError, SyntaxError, …)
            raise AnalysisError(f"bad --query {query!r}: {exc}") from exc
    if sort:
        by = _sort_order(sort, descending)
        _check_columns(out, [name for name, _ in by])
        out = out.sort_values(
            [name for name, _ in by],
            ascending=[up for _, up in by],
            kind="stable",
            na_position="last",
        )
    if columns:
        cols = _split(columns)
        _check_columns(out, cols)
        out = out[cols]
    return out.reset_index(drop=True)


def run_results(args: argparse.Namespace) -> int:
    """``xsam-tune results``."""
    if _results_from_summary(args):
        return 0
    from analysis._results import load
    from analysis._summary import ensure_summary

    s = load(args.dir, stale_after=args.stale_after)
    ensure_summary(s)  # a deleted or damaged one: the next call is fast again
    frame = select(
        s.frame(args.table),
        query=args.query,
        sort=args.sort,
        descending=args.desc,
        columns=args.columns,
    )
    if args.format == "table" and not args.columns:
        frame = frame[_table_columns(s.key_columns, args.table, list(frame.columns))]
    out = _output_path(args.output)
    if args.format == "parquet":
        if out is None:
            raise AnalysisError("--format parquet needs -o FILE")
        frame.to_parquet(out, index=False)
    elif args.format == "csv":
        text = frame.to_csv(index=False)
        _emit(text, out)
    elif args.format == "json":
        # Table schema: the rows under "data", the dtypes under "schema", so
        # pd.read_json(f, orient="table") restores the frame exactly (plain
        # records would let pandas read a trial id like 702e9_00000 as a float).
        text = frame.to_json(orient="table", index=False, force_ascii=False)
        _emit(text + "\n", out)
    else:
        # What a person reads shows accuracy in percent; the files keep the
        # frames' fraction (xsam_contract.ACCURACY_UNIT).
        from analysis._style import to_percent

        shown = to_percent(frame)
        text = shown.to_string(index=False, na_rep="–") if len(frame) else "(no rows)"
        _emit(text + "\n", out)
    return 0


def _results_from_summary(args: argparse.Namespace) -> bool:
    """Print ``results``' trials table from the study's cached summary, without pandas.

    Returns:
        Whether it printed. False, having printed nothing, where the pandas path
        must answer: another table or format, ``--query``, a URI, a study that
        still runs, no valid summary for the study as it is now, or a column
        the summary cannot show or sort by (the pandas path names the error).
    """
    from analysis import _remote

    if args.table != "trials" or args.format != "table" or args.query or _remote.is_uri(args.dir):
        return False
    from analysis._studydir import open_study_dir, report_problems
    from analysis._summary import read_summary

    d = open_study_dir(args.dir, stale_after=args.stale_after)
    summary = None if d.live else read_summary(d.root, d.stamp)
    if summary is None:
        return False
    by = _sort_order(args.sort, args.desc) if args.sort else []
    cols = (
        _split(args.columns)
        if args.columns
        else _table_columns(summary.key_columns, "trials", list(summary.text))
    )
    named = [*cols, *(name for name, _ in by)]
    if not cols or len(set(cols)) != len(cols) or any(n not in summary.text for n in named):
        return False
    rows = summary.order(by)
    if rows is None:
        return False
    report_problems(d.root, summary.problems)
    text = summary.render(cols, rows) if summary.rows else "(no rows)"
    _emit(text + "\n", _output_path(args.output))
    return True


def _sort_order(sort: str, descending: bool) -> list[tuple[str, bool]]:
    """``--sort a,-b`` (and ``--desc``) as (column, ascending) pairs."""
    return [
        (item[1:] if item.startswith("-") else item, not (descending or item.startswith("-")))
        for item in _split([sort])
    ]


def _table_columns(key_columns: Sequence[str], table: str, columns: Sequence[str]) -> list[str]:
    """What ``--format table`` shows of a frame with ``columns`` when --columns is not given."""
    cols: list[str] = []
    for c in _TABLE_COLUMNS[table]:
        cols += key_columns if c == "@keys" else [c]
    cols = [c if c in columns or f"config_{c}" not in columns else f"config_{c}" for c in cols]
    return [c for c in dict.fromkeys(cols) if c in columns]


def _output_path(output: str | None) -> Path | None:
    """``-o FILE`` as a path whose folder exists; None: stdout."""
    out = Path(output) if output else None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _emit(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")


def _split(items: Sequence[str]) -> list[str]:
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


def _check_columns(frame: pd.DataFrame, names: Sequence[str]) -> None:
    for name in names:
        if name not in frame.columns:
            near = difflib.get_close_matches(name, [str(c) for c in frame.columns], n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise AnalysisError(f"unknown column {name!r}{hint}")


# -- plot and report -------------------------------------------------------


def run_plot(args: argparse.Namespace) -> int:
    """``xsam-tune plot``."""
    from analysis._results import load
    from analysis.plots import plot

    kinds = check_kinds(args.kind)  # before reading the study: a typo fails fast
    s = load(args.dir, stale_after=args.stale_after)
    for path in plot(s, kinds, args.output, formats=_split(args.format)):
        print(path)
    return 0


def run_report(args: argparse.Namespace) -> int:
    """``xsam-tune report``: prints the report's path."""
    from analysis._report import write_report
    from analysis._results import load

    s = load(args.dir, stale_after=args.stale_after)
    html_path, md_path = write_report(s, args.output)
    print(f"report: {html_path}")
    print(f"summary: {md_path}")
    return 0


def run_claims(args: argparse.Namespace) -> int:
    """``xsam-tune claims``: the claims table of a study."""
    from analysis._claims import claims, format_claims
    from analysis._report import claims_markdown
    from analysis._results import load

    s = load(args.dir, stale_after=args.stale_after)
    table = claims(s)
    out = _output_path(args.output)
    if args.format == "csv":
        text = table.to_csv(index=False)
    elif args.format == "json":
        text = table.to_json(orient="table", index=False, force_ascii=False) + "\n"
    elif args.format == "markdown":
        text = "\n".join(claims_markdown(table)) + "\n"
    else:
        text = _wrap_table(format_claims(table)) + "\n"
    _emit(text, out)
    return 0


def _wrap_table(frame: pd.DataFrame, width: int = 60) -> str:
    """A text table whose long cells wrap inside their column instead of running on."""
    import textwrap

    cols = list(frame.columns)
    cells = [[textwrap.wrap(str(v), width) or [""] for v in row] for row in frame.to_numpy()]
    widths = [
        max([len(c), *(len(line) for row in cells for line in row[i])]) for i, c in enumerate(cols)
    ]
    rule = "+".join("-" * (w + 2) for w in widths)
    lines = [" | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)), rule]
    for row in cells:
        for j in range(max(len(c) for c in row)):
            parts = [
                (c[j] if j < len(c) else "").ljust(w) for c, w in zip(row, widths, strict=True)
            ]
            lines.append(" | ".join(parts).rstrip())
        lines.append(rule)
    return "\n".join(lines)
