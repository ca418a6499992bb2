"""The trials table as pandas prints it, cached beside the frames: ``results`` without pandas.

Importing pandas costs about a second, far more than ``xsam-tune results DIR``
spends on anything else. So whenever the analysis cache (:mod:`analysis._cache`)
writes a study's frames, it also writes ``summary-<stamp>.json`` under the same
fingerprint: every column of ``.trials`` as the text table shows it (pandas'
own ``to_string`` of that column alone, accuracy in percent: header line, then
one fixed-width line per trial) and a sort key per cell. A text table is its
columns' texts joined by one space, each column formatted on its own values
only, so any choice of columns in any row order is rendered from these texts
with the standard library, byte for byte what pandas prints.

:func:`read_summary` returns None for anything but a summary of this format
(missing, torn, hand-edited), and the caller takes the pandas path; the file
is named by the fingerprint, so a changed study never finds a stale one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xsam_contract
from analysis._cache import CACHE_DIR

if TYPE_CHECKING:
    import pandas as pd

    from analysis._results import Study

__all__ = [
    "NA_TEXT",
    "TrialsText",
    "ensure_summary",
    "read_summary",
    "summary_path",
    "write_summary",
]

#: What the text table shows for a missing value (``to_string``'s ``na_rep``).
NA_TEXT = "–"
# Bump when the file's layout or meaning changes.
_FORMAT = 1


@dataclass(frozen=True)
class TrialsText:
    """The ``.trials`` frame as text columns.

    Attributes:
        key_columns: the Study's ``key_columns`` (what the default table shows).
        problems: the Study's ``problems`` (printed as warnings, as ``load`` does).
        rows: number of trials.
        text: column name → its text lines: the header (``best_test_acc (%)``
            for an accuracy), then one line per trial, all of one width.
        keys: column name → one sort key per trial (None: missing), ordered as
            pandas sorts the column; None where the column cannot be sorted here.
    """

    key_columns: list[str]
    problems: list[str]
    rows: int
    text: dict[str, list[str]]
    keys: dict[str, list[Any] | None]

    def order(self, by: Sequence[tuple[str, bool]]) -> list[int] | None:
        """Row positions sorted as ``sort_values(kind="stable", na_position="last")``
        sorts them by ``(column, ascending)`` pairs; None if a column has no keys."""
        rows = list(range(self.rows))
        # One stable sort per column from the last to the first is a lexicographic
        # sort; missing values go last whichever the direction (as pandas puts them).
        for name, ascending in reversed(by):
            keys = self.keys.get(name)
            if keys is None:
                return None
            present = [i for i in rows if keys[i] is not None]
            present.sort(key=keys.__getitem__, reverse=not ascending)
            rows = present + [i for i in rows if keys[i] is None]
        return rows

    def render(self, columns: Sequence[str], rows: Sequence[int]) -> str:
        """The text table of ``columns`` (names in :attr:`text`) over trial positions ``rows``."""
        cols = [self.text[c] for c in columns]
        lines = [" ".join(col[0] for col in cols)]
        lines += [" ".join(col[1 + i] for col in cols) for i in rows]
        return "\n".join(lines)


def summary_path(root: Path, stamp: str) -> Path:
    """Where the summary of fingerprint ``stamp`` lives for study directory ``root``."""
    return root / CACHE_DIR / f"summary-{stamp}.json"


def write_summary(study: Study, stamp: str) -> None:
    """Write ``study``'s trials table as text under fingerprint ``stamp`` (atomically).

    Raises:
        OSError: the cache directory cannot be written.
    """
    from analysis._style import to_percent

    trials = study.trials
    shown = to_percent(trials)
    text: dict[str, list[str]] = {}
    keys: dict[str, list[Any] | None] = {}
    for name, label in zip(trials.columns, shown.columns, strict=True):
        # Its own frame: pandas formats each column from its values alone. No
        # rows: the header only (the CLI prints "(no rows)" then).
        text[name] = (
            shown[[label]].to_string(index=False, na_rep=NA_TEXT).split("\n")
            if len(shown)
            else [str(label)]
        )
        keys[name] = _sort_keys(trials[name])
    payload = {
        "format": _FORMAT,
        "key_columns": list(study.key_columns),
        "problems": list(study.problems),
        "rows": len(trials),
        "text": text,
        "keys": keys,
    }
    path = summary_path(study.path, stamp)
    xsam_contract.atomic_write(path, json.dumps(payload, ensure_ascii=False))


def ensure_summary(study: Study) -> None:
    """Write the summary of a study read from its cached frames where it has none
    (deleted, damaged, or its write failed): the next ``results`` is fast again."""
    from analysis._cache import write_summary_quietly

    cached = study._cached
    if cached is not None and read_summary(study.path, cached.stamp) is None:
        write_summary_quietly(study, cached.stamp)


def read_summary(root: Path, stamp: str) -> TrialsText | None:
    """The summary of fingerprint ``stamp``, or None when there is no valid one."""
    try:
        raw = json.loads(summary_path(root, stamp).read_bytes())
        if raw["format"] != _FORMAT:
            return None
        summary = TrialsText(
            key_columns=list(raw["key_columns"]),
            problems=list(raw["problems"]),
            rows=int(raw["rows"]),
            text=dict(raw["text"]),
            keys=dict(raw["keys"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return summary if _consistent(summary) else None


def _consistent(s: TrialsText) -> bool:
    """Every column a header and one line per trial of one width, a key list or None."""
    if not all(isinstance(c, str) for c in [*s.key_columns, *s.problems]) or s.rows < 0:
        return False
    for name, lines in s.text.items():
        if not (isinstance(lines, list) and len(lines) == s.rows + 1):
            return False
        if not all(isinstance(line, str) and len(line) == len(lines[0]) for line in lines):
            return False
        keys = s.keys.get(name, False)
        if keys is not None and not (isinstance(keys, list) and len(keys) == s.rows):
            return False
    return set(s.keys) == set(s.text)


def _sort_keys(column: pd.Series) -> list[Any] | None:
    """One JSON value per cell that Python orders as pandas sorts the column
    (None: missing); None for a column of Python objects."""
    import pandas as pd

    missing = column.isna().tolist()
    dtype = column.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        values: list[Any] = column.cat.codes.tolist()  # categories' order, not the labels'
    elif isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(dtype):
        values = column.array.asi8.tolist()
    elif (
        pd.api.types.is_bool_dtype(dtype)
        or pd.api.types.is_numeric_dtype(dtype)
        or pd.api.types.is_string_dtype(dtype)
    ) and not pd.api.types.is_object_dtype(dtype):
        values = [None if m else v for v, m in zip(column.tolist(), missing, strict=True)]
    else:
        return None
    out = [None if m else v for v, m in zip(values, missing, strict=True)]
    types = {type(v) for v in out if v is not None}
    if types and not (types <= {int, float} or len(types) == 1):
        return None  # values Python cannot compare with each other
    return out
