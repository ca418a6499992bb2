"""Study directory → tidy dataframes, from the files alone (no Ray, no torch).

The directory is the one Ray Tune 2.x writes (``<storage>/<name>/``): one folder
per trial holding ``params.json`` (the trial config) and ``result.json`` (one
JSON object per reported row), ``error.txt`` when the trial raised, and
``experiment_state-*.json`` at the top; the driver adds ``study.json`` and
``study.yaml``. Everything is read as JSON (``result.json`` lines with orjson
where it reads them as ``json`` would, else ``json``); a study that is still
running, crashed half-way or was copied elsewhere reads the same way.

Reading scales with the study: ``result.json`` is read line by line and only
what the frames hold is kept, one compact array per trial and column (Ray's
per-row ``config`` copy and bookkeeping are dropped as each line is read);
Ray's run state is parsed only when a trial's label depends on it; the frames
of a study that is no longer running are cached as parquet under
``<study>/.cache/`` (:mod:`analysis._cache`), so the next ``load`` reads
columns instead of JSON lines.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

import xsam_contract
from analysis import _cache
from analysis._errors import AnalysisError
from analysis._schema import (
    DEFAULT_STALE_AFTER,
    KEY_COLUMNS,
    PROBE_COLUMNS,
    STATUSES,
    TRIAL_COLUMNS,
    config_dtype,
    epoch_columns,
)
from analysis._studydir import DEFAULT_METRIC, open_study_dir, report_problems

__all__ = ["Study", "load"]

# Keys Ray adds to every row that are bookkeeping, not metrics (dropped from
# .epochs; the last row keeps hostname, trial_id and done for the summary).
_RAY_BOOKKEEPING = frozenset(
    {
        "config",
        "probes",
        "date",
        "pid",
        "hostname",
        "node_ip",
        "checkpoint_dir_name",
        "should_checkpoint",
        "done",
        "iterations_since_restore",
        "time_since_restore",
        "experiment_tag",
        "trial_id",
    }
)
_RAY_LIVE_STATES = frozenset({"RUNNING", "PENDING", "PAUSED"})
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Ray's default trial folder: <trainable>_<5 hex>_<5 digits>_<tag>_<date>; the
# study layer's: <trial id>_<swept values>.
_TRIAL_ID_IN_DIR = re.compile(r"_([0-9a-f]{5}_\d{5})(?:_|$)")
_TRIAL_ID_PREFIX = re.compile(r"^([0-9a-f]{8})(?:_|$)")
_ERROR_FILES = ("error.txt", "error.pkl")
# Per-refresh fields of a probe record kept in .probes (besides the grid).
_PROBE_SCALARS = ("epoch", "step", "alpha", "psi", "loss_v0", "loss_v1", "loss_best")
# orjson reads an integer token beyond 64 bits as a float (json: an int). Such a
# token is 19 digits or more after ':', ',' or '[' (whitespace and a minus sign
# between): with digits, whitespace and '-' mapped to '0' and ',' '[' to ':', a
# line holding one holds _LONG_INT (a string or a float's digits may too: that
# line is then only read by json, not misread).
_INT_MAP = bytes.maketrans(b"0123456789 -\t\r\n,[", b"000000000000000::")
_LONG_INT = b":" + b"0" * 19
# Integers above this lose precision in a float64 array: kept as Python objects.
_EXACT_INT = 2**53


# -- compact per-trial columns --------------------------------------------


@dataclass
class _Chunk:
    """One trial's values of one column.

    ``kind`` is the Python type of every present value (``float``, ``int``,
    ``bool``) with ``data`` a float64 array (NaN where missing), ``none`` when
    nothing is present, or ``object`` (mixed or non-numeric) with ``data`` the
    values as read.
    """

    kind: str
    data: Any

    @classmethod
    def of(cls, values: list[Any]) -> _Chunk:
        kinds = set(map(type, values))
        kinds.discard(type(None))
        if not kinds:
            return cls("none", np.full(len(values), math.nan))
        if len(kinds) == 1:
            (kind,) = kinds
            if kind in (float, int, bool):
                data = np.array(values, dtype="float64")  # None → NaN
                if kind is not int or not len(data) or np.nanmax(np.abs(data)) < _EXACT_INT:
                    return cls(kind.__name__, data)
        return cls("object", list(values))

    @classmethod
    def missing(cls, n: int) -> _Chunk:
        return cls("none", np.full(n, math.nan))

    def __len__(self) -> int:
        return len(self.data)

    def floats(self) -> np.ndarray:
        """The values as float64 (NaN where missing or not a number)."""
        if self.kind != "object":
            return self.data
        return np.array([_float(v) for v in self.data], dtype="float64")

    def values(self) -> list[Any]:
        """The values as Python objects (None where missing)."""
        if self.kind == "object":
            return list(self.data)
        if self.kind == "none":
            return [None] * len(self.data)
        cast = {"float": float, "int": int, "bool": bool}[self.kind]
        missing = np.isnan(self.data)
        if self.kind == "float":  # NaN read from the file is a value, not a gap
            return self.data.tolist()
        return [None if m else cast(v) for v, m in zip(self.data.tolist(), missing, strict=True)]


def _combine(chunks: list[_Chunk], dtype: str | None) -> Any:
    """Chunks of one column over all trials → one typed array.

    The common cases (every chunk one numeric kind) are built from the float64
    arrays directly; anything else goes through :func:`_typed` value by value.
    """
    kinds = {c.kind for c in chunks} - {"none"}
    if "object" not in kinds and len(kinds) <= 1:
        kind = next(iter(kinds), "none")
        want = dtype or {"int": "Int64", "bool": "boolean"}.get(kind, "float64")
        data = _cat([c.data for c in chunks])
        missing = np.isnan(data)
        if want == "float64":
            return data
        if want == "Int64" and kind in ("int", "none"):
            return pd.arrays.IntegerArray(
                np.where(missing, 0, data).astype("int64"), missing.copy()
            )
        if want == "boolean" and kind in ("bool", "none"):
            return pd.arrays.BooleanArray(data == 1.0, missing.copy())
        if want.startswith("datetime64"):
            return _typed(data.tolist(), want)
    values: list[Any] = []
    for c in chunks:
        values.extend(c.values())
    return _typed(values, dtype)


@dataclass
class _Probes:
    """One trial's α searches: per-refresh fields and the concatenated grids."""

    fields: dict[str, np.ndarray]
    counts: np.ndarray  # grid points per refresh
    alphas: np.ndarray
    losses: np.ndarray

    @property
    def n(self) -> int:
        return len(self.counts)


@dataclass
class _RawTrial:
    """What one trial's files say, before any dataframe is built."""

    trial_id: str
    trial_dir: str | None
    config: dict[str, Any]
    n_rows: int = 0
    columns: dict[str, _Chunk] = field(default_factory=dict)
    last: dict[str, Any] = field(default_factory=dict)
    probes: _Probes | None = None
    ray_status: str | None = None
    error_text: str | None = None


# -- load ------------------------------------------------------------------


def load(path: str | Path, *, stale_after: float = DEFAULT_STALE_AFTER) -> Study:
    """Read a study directory.

    Args:
        path: the study directory (``<storage>/<name>``), or its URI
            (``s3://…``): the files the reader needs are mirrored into a
            local cache first (:mod:`analysis._remote`).
        stale_after: seconds without any study file changing after which an
            incomplete trial is ``interrupted`` rather than ``running`` (only
            used when ``study.json`` has neither ``finished_at`` nor
            ``interrupted_at``).

    Returns:
        The study. Damaged trial files (a torn ``result.json`` line, an
        unreadable ``params.json``) do not stop the load: each is listed in
        :attr:`Study.problems` and logged as a warning.

    Raises:
        AnalysisError: the path is missing or holds no study.
    """
    d = open_study_dir(path, stale_after=stale_after)
    root, info, live = d.root, d.info or {}, d.live
    spec_path = root / xsam_contract.STUDY_FILES["spec"]
    spec_text = spec_path.read_text(errors="replace") if spec_path.exists() else None
    if not live:
        cached = _cache.open_frames(root, d.stamp)
        if cached is not None:
            study = Study(root, info, spec_text, [], live=False, cached=cached)
            report_problems(study.path, study.problems)
            return study
    problems: list[str] = []
    raw = _read_trials(root, d.trial_dirs, d.states, info, live=live, problems=problems)
    # params.json holds what the study set; study.json records the trial layer's
    # defaults for the rest. A swept key a trial lacks was left unset by its
    # `when` condition (sgd has no k): it stays missing rather than taking the default.
    swept = set(info.get("space") or ())
    fill = {k: v for k, v in (info.get("trial_defaults") or {}).items() if k not in swept}
    for t in raw:
        t.config = {**fill, **t.config}
    study = Study(root, info, spec_text, raw, live=live, problems=problems)
    report_problems(study.path, study.problems)
    if not live:
        _cache.write_frames(study, d.stamp)
    return study


class Study:
    """A study directory read into memory.

    Attributes:
        path: the study directory.
        info: ``study.json`` as a dict (empty when the file is missing).
        spec_text: ``study.yaml`` as text, or None.
        live: whether the study looked alive when read (no ``finished_at`` or
            ``interrupted_at`` and files changed within ``stale_after`` seconds).
        problems: one line per damaged file that was read around (a torn
            ``result.json`` line, an unreadable ``params.json``).
    """

    def __init__(
        self,
        path: Path,
        info: dict[str, Any],
        spec_text: str | None,
        raw: list[_RawTrial],
        *,
        live: bool,
        problems: list[str] | None = None,
        cached: _cache.Frames | None = None,
    ) -> None:
        self.path = path
        self.info = info
        self.spec_text = spec_text
        self.live = live
        self._raw = raw
        self._cached = cached
        if cached is not None:
            self._names = dict(cached.names)
            self.problems = list(cached.problems)
        else:
            self._names = _clean_names(_flatten(t.config) for t in raw)
            self.problems = list(problems or ())

    def __repr__(self) -> str:
        counts = self.trials["status"].value_counts()
        parts = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        return f"Study({self.name!r}, {len(self.trials)} trials: {parts or 'none'})"

    # -- study-level facts -------------------------------------------------

    @property
    def name(self) -> str:
        """The study's name (``study.json`` ``name``, else the folder name)."""
        return str(self.info.get("name") or self.path.name)

    @property
    def metric(self) -> str:
        """The metric the study optimises: the first of ``study.json``'s ``metrics``
        (``test_acc`` for a bare Ray directory without ``study.json``)."""
        return str(self._objective["name"])

    @property
    def mode(self) -> str:
        """``max`` or ``min``, for :attr:`metric`."""
        return str(self._objective["mode"])

    @property
    def _objective(self) -> Mapping[str, Any]:
        # `metrics` is a list in single- and multi-objective studies alike (`metric`
        # and `mode` become lists with several objectives): one field to read.
        return (self.info.get("metrics") or [DEFAULT_METRIC])[0]

    @cached_property
    def swept(self) -> list[str]:
        """Swept parameters as ``.trials`` column names.

        From ``study.json``'s ``space`` keys (trial keys) when present, else every
        config column that takes more than one value.
        """
        keys = self._swept_keys()
        if keys is None:
            config_cols = [c for c in self._names.values() if c in self.trials.columns]
            return [
                c for c in config_cols if self.trials[c].astype("string").nunique(dropna=True) > 1
            ]
        return keys

    def _swept_keys(self) -> list[str] | None:
        """Column names of study.json's ``space`` keys; None without a space."""
        space = self.info.get("space")
        if not space:
            return None
        return [self._names[k] for k in space if k in self._names]

    @cached_property
    def settings(self) -> dict[str, Any]:
        """Config keys that take one value over all trials, with that value."""
        out: dict[str, Any] = {}
        trials = self.trials
        for col in self._names.values():
            values = trials[col].dropna().unique()
            if len(values) == 1 and trials[col].notna().all():
                out[col] = values[0].item() if hasattr(values[0], "item") else values[0]
        return out

    @property
    def key_columns(self) -> list[str]:
        """Config columns copied into ``.epochs`` and ``.probes``: swept ones and
        ``optimizer``, ``steps``, ``seed``."""
        cols = [c for c in KEY_COLUMNS if c in self.trials.columns]
        cols += [c for c in self.swept if c not in cols]
        return cols

    # -- the frames --------------------------------------------------------

    @cached_property
    def trials(self) -> pd.DataFrame:
        """One row per trial: config (clean names), status, final/best metrics, time."""
        if self._cached is not None:
            return self._cached.read("trials")
        records = []
        for t in self._raw:
            rec: dict[str, Any] = {
                "trial_id": t.trial_id,
                "trial_dir": t.trial_dir,
                "status": _status(t, live=self.live),
            }
            flat = _flatten(t.config)
            rec.update({self._names[k]: v for k, v in flat.items()})
            rec.update(_summary(t, self.metric))
            records.append(rec)
        config_cols = _config_order(self._names.values(), self._swept_keys())
        frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
        out: dict[str, pd.Series] = {}
        index = pd.RangeIndex(len(records))
        for name in ("trial_id", "trial_dir", "status"):
            out[name] = _column(frame, name, TRIAL_COLUMNS[name][0], index)
        # optimizer, steps and seed always exist (tables group by them): a study
        # that leaves one unset (sgd has no k) gets missing values, not a KeyError.
        for name in [*config_cols, *(k for k in KEY_COLUMNS if k not in config_cols)]:
            out[name] = _column(frame, name, config_dtype(name), index)
        out["refresh"] = _refresh_labels(out, index)
        for name, (dtype, _) in TRIAL_COLUMNS.items():
            if name not in out:
                out[name] = _column(frame, name, dtype, index)
        return pd.DataFrame(out, index=index)

    @cached_property
    def epochs(self) -> pd.DataFrame:
        """One row per trial and reported epoch: every metric of the contract."""
        if self._cached is not None:
            return self._cached.read("epochs")
        return self._epochs_of(self._raw, np.arange(len(self._raw)))

    @cached_property
    def probes(self) -> pd.DataFrame:
        """One row per α refresh and grid point: the saved L(α) curves."""
        if self._cached is not None:
            return self._cached.read("probes")
        return self._probes_of(self._raw, np.arange(len(self._raw)))

    def frame(self, kind: str) -> pd.DataFrame:
        """``trials``, ``epochs`` or ``probes`` by name."""
        if kind not in ("trials", "epochs", "probes"):
            raise AnalysisError(f"unknown table {kind!r}; choose trials, epochs or probes")
        return getattr(self, kind)

    def _epochs_of(
        self,
        raw: list[_RawTrial],
        positions: np.ndarray,
        dtypes: Mapping[str, str | None] | None = None,
    ) -> pd.DataFrame:
        """``.epochs`` of some trials (``positions``: their rows in ``.trials``);
        ``dtypes`` fixes each column's dtype (batches of one schema), else the
        contract's dtype or, for metrics beyond it, one inferred from the values."""
        n = np.array([t.n_rows for t in raw], dtype="int64")
        out: dict[str, Any] = {}
        for name, dtype in (dtypes or self._epoch_names).items():
            out[name] = _combine(_chunks(raw, name), dtype)
        frame = pd.DataFrame(out, index=pd.RangeIndex(int(n.sum())))
        keys = self._key_frame(exclude=epoch_columns())
        return _with_keys(frame, keys, np.repeat(positions, n))

    @cached_property
    def _epoch_names(self) -> dict[str, str | None]:
        """``.epochs``' columns besides the keys, name → declared dtype: the
        contract's metrics row and Ray's columns, then scalar metrics beyond the
        contract (a trainable may report more), typed by value (None)."""
        out: dict[str, str | None] = {
            name: dtype for name, (dtype, _) in epoch_columns().items() if name != "trial_id"
        }
        extra: dict[str, None] = {}
        for t in self._raw:
            extra.update(dict.fromkeys(k for k in t.columns if k not in out))
        for name in extra:
            values = [
                v
                for t in self._raw
                if name in t.columns and t.columns[name].kind == "object"
                for v in t.columns[name].data
            ]
            if all(map(_is_scalar, values)):  # lists and dicts are not columns
                out[name] = None
        return out

    @cached_property
    def _epoch_dtypes(self) -> dict[str, str]:
        """The dtype each ``.epochs`` column takes over all trials (the declared
        one, or its fallback where a value does not fit)."""
        return {
            name: str(pd.Series(_combine(_chunks(self._raw, name), dtype)).dtype)
            for name, dtype in self._epoch_names.items()
        }

    @cached_property
    def _probe_int(self) -> dict[str, bool]:
        """Whether ``epoch`` and ``step`` of every probe record are whole numbers."""
        out = {}
        for name in ("epoch", "step"):
            parts = [t.probes.fields[name] for t in self._raw if t.probes is not None]
            values = np.concatenate(parts) if parts else np.empty(0)
            values = values[~np.isnan(values)]
            out[name] = bool(np.array_equal(values, np.floor(values)))
        return out

    def _probe_columns(self, columns: Iterable[str]) -> pd.DataFrame:
        """Some columns of ``.probes``, in its row order, without building the others:
        from the frame once it has been read, else only these columns of the parquet
        cache or of the rows read. A report needs a few of the columns of a frame of
        millions of grid points (0.4 GB for a 1,000 x 200 study), not all of them."""
        cols = list(columns)
        if "probes" in self.__dict__:
            return self.__dict__["probes"][cols]
        if self._cached is not None:
            return self._cached.read("probes", columns=cols)
        return self._probes_of(self._raw, np.arange(len(self._raw)), cols)

    def _probes_of(
        self, raw: list[_RawTrial], positions: np.ndarray, columns: Iterable[str] | None = None
    ) -> pd.DataFrame:
        """``.probes`` of some trials (``positions``: their rows in ``.trials``);
        ``columns``: only these (default all)."""
        has = [i for i, t in enumerate(raw) if t.probes is not None and t.probes.n]
        grids: list[_Probes] = [raw[i].probes for i in has]  # type: ignore[misc]
        per_refresh = _cat([g.counts for g in grids], "int64")
        refreshes = np.array([g.n for g in grids], dtype="int64")
        trial_rows = np.repeat(np.repeat(positions[has], refreshes), per_refresh)

        def per_point(name: str) -> np.ndarray:
            return np.repeat(_cat([g.fields[name] for g in grids]), per_refresh)

        def is_star() -> Any:
            alpha, star = _cat([g.alphas for g in grids]), per_point("alpha")
            known = ~np.isnan(star)
            return pd.arrays.BooleanArray((np.abs(alpha - star) < 1e-9) & known, ~known)

        # Built only when asked for: a column of every grid point is large.
        build: dict[str, Any] = {
            "refresh_index": lambda: _int_array(
                np.repeat(_cat([np.arange(g.n) for g in grids]), per_refresh), True
            ),
            "epoch": lambda: _int_array(per_point("epoch"), self._probe_int["epoch"]),
            "step": lambda: _int_array(per_point("step"), self._probe_int["step"]),
            "alpha": lambda: _cat([g.alphas for g in grids]),
            "loss": lambda: _cat([g.losses for g in grids]),
            "alpha_star": lambda: per_point("alpha"),
            "psi": lambda: per_point("psi"),
            "is_star": is_star,
            "loss_v0": lambda: per_point("loss_v0"),
            "loss_v1": lambda: per_point("loss_v1"),
            "loss_best": lambda: per_point("loss_best"),
        }
        keys = self._key_frame(exclude=PROBE_COLUMNS)
        wanted = None if columns is None else set(columns)
        frame = pd.DataFrame(
            {
                name: build[name]()
                for name in PROBE_COLUMNS
                if name != "trial_id" and (wanted is None or name in wanted)
            },
            index=pd.RangeIndex(int(per_refresh.sum())),
        )
        if wanted is not None:
            keys = keys[[c for c in keys.columns if c in wanted]]
        out = _with_keys(frame, keys, trial_rows)
        return out if columns is None else out[list(columns)]

    def _key_frame(self, exclude: Mapping[str, Any]) -> pd.DataFrame:
        """trial_id plus the key columns, renamed ``config_<name>`` where a key
        would clash with a metric of the target frame (``lr``, ``alpha``)."""
        cols = ["trial_id", *self.key_columns]
        keys = self.trials[cols]
        return keys.rename(columns={c: f"config_{c}" for c in cols[1:] if c in exclude})

    def _batches(self, size: int, kind: str) -> Iterable[pd.DataFrame]:
        """``.epochs`` or ``.probes`` (``kind``) of ``size`` trials at a time (for the cache)."""
        for start in range(0, len(self._raw), size):
            raw = self._raw[start : start + size]
            positions = np.arange(start, start + len(raw))
            if kind == "epochs":
                yield self._epochs_of(raw, positions, self._epoch_dtypes)
            else:
                yield self._probes_of(raw, positions)


def _int_array(values: np.ndarray, whole: bool) -> Any:
    """Float values → Int64 (NaN missing) when ``whole``, else float64."""
    if not whole:
        return values
    missing = np.isnan(values)
    return pd.arrays.IntegerArray(np.where(missing, 0, values).astype("int64"), missing)


def _cat(parts: list[np.ndarray], dtype: str = "float64") -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype)


def _chunks(raw: list[_RawTrial], name: str) -> list[_Chunk]:
    """Column ``name`` of each trial (all-missing where a trial lacks it)."""
    return [t.columns.get(name) or _Chunk.missing(t.n_rows) for t in raw]


def _config_order(names: Iterable[str], swept: list[str] | None) -> list[str]:
    """Swept settings first, then the contract's keys in its order, then the rest."""
    names = list(dict.fromkeys(names))
    known = [n for n in xsam_contract.TRIAL_KEYS if n in names]
    first = [n for n in swept or () if n in names]
    rest = [n for n in names if n not in known]
    return list(dict.fromkeys([*first, *known, *rest]))


def _with_keys(frame: pd.DataFrame, keys: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """``trial_id`` and the trial's key columns first (taken from ``keys`` at
    ``rows``, one per row of ``frame``), then ``frame``'s columns."""
    out = {c: keys[c].array.take(rows) for c in keys.columns}
    out.update({c: frame[c].array for c in frame.columns})
    return pd.DataFrame(out, index=frame.index)


# -- reading files ---------------------------------------------------------


def _read_params(path: Path, problems: list[str]) -> dict[str, Any] | None:
    """A trial's ``params.json``; None (and a line in ``problems``) when it is
    missing, empty or not a JSON object (a full disk leaves it empty)."""
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        problems.append(f"{path.parent.name}/params.json unreadable ({_first_line(exc)})")
        return None
    if not isinstance(obj, dict):
        problems.append(f"{path.parent.name}/params.json does not hold a JSON object")
        return None
    return obj


def _read_experiment_state(files: list[Path]) -> dict[str, dict[str, Any]]:
    """Ray's view of each trial (status, config, folder) from the newest
    ``experiment_state-*.json``; empty when missing or unreadable.

    Ray rewrites this file periodically from the driver, so it can lag behind
    the trial folders; it is a hint, never the only source. Each entry is a
    pair of JSON texts: the trial's settings (small) and its run-time record
    (last result, metric history: most of the file), which is never decoded.
    """
    if not files:
        return {}
    try:
        state = json.loads(files[-1].read_bytes())
        out = {}
        for entry in state.get("trial_data", []):
            head = entry[0] if isinstance(entry, (list, tuple)) else entry
            head = json.loads(head) if isinstance(head, (str, bytes)) else head
            out[str(head["trial_id"])] = {
                "status": head.get("status"),
                "config": head.get("config") or {},
                "dir": head.get("relative_logdir"),
            }
        return out
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return {}  # a format this version does not know: fall back to the folders


def _read_trials(
    root: Path,
    trial_dirs: list[str],
    states: list[Path],
    info: Mapping[str, Any],
    *,
    live: bool,
    problems: list[str],
) -> list[_RawTrial]:
    """Every trial with its rows; Ray's run state only where a label needs it."""
    trials: list[_RawTrial] = []
    first_configs: dict[str, dict[str, Any]] = {}
    for name in trial_dirs:
        d = root / name
        params = _read_params(d / "params.json", problems)
        t = _read_result(d / "result.json", name, problems, keep_config=params is None)
        if params is None and isinstance(t.config, dict):
            first_configs[name] = t.config
        t.config = params if params is not None else {}
        for err in _ERROR_FILES:
            if (d / err).exists():
                t.error_text = (
                    (d / "error.txt").read_text(errors="replace") if err == "error.txt" else ""
                )
                break
        trials.append(t)
    finished = "finished_at" in info
    # Ray's run state (tens of MB in a large study) only where a label, an id or
    # a config depends on it.
    need_state = not finished or any(
        not _decided_without_state(t)
        or not (t.trial_id or _trial_id_in_dir(t.trial_dir or ""))
        or not (t.config or first_configs.get(t.trial_dir or ""))
        for t in trials
    )
    state = _read_experiment_state(states) if need_state else {}
    by_dir = {v["dir"]: k for k, v in state.items() if v.get("dir")}
    for t in trials:
        assert t.trial_dir is not None
        t.trial_id = (
            t.trial_id or by_dir.get(t.trial_dir) or _trial_id_in_dir(t.trial_dir) or t.trial_dir
        )
        if not t.config:
            t.config = first_configs.get(t.trial_dir) or dict(
                state.get(t.trial_id, {}).get("config") or {}
            )
        t.ray_status = state.get(t.trial_id, {}).get("status")
    seen = {t.trial_id for t in trials}
    for trial_id, entry in state.items():
        # Ray knows the trial but its folder does not exist yet: waiting for resources.
        if trial_id not in seen and entry.get("status") == "PENDING":
            trials.append(
                _RawTrial(trial_id, None, dict(entry.get("config") or {}), ray_status="PENDING")
            )
    trials.sort(key=lambda t: t.trial_id)
    return trials


def _decided_without_state(t: _RawTrial) -> bool:
    """The trial's files alone fix its label in a finished study (every trial ended)."""
    if t.last.get("diverged") is True or t.last.get("done") is True:
        return True
    if t.error_text is not None:
        # Raised before its last epoch: errored. Raised after it (or retried and
        # then completed): only Ray's state tells.
        return not _complete(t)
    return _complete(t)


def _complete(t: _RawTrial) -> bool:
    epochs = _flatten(t.config).get("epochs")
    done = _float(t.last.get("epoch"))
    return isinstance(epochs, (int, float)) and done == done and done >= epochs


def _read_result(
    path: Path, trial_dir: str, problems: list[str], *, keep_config: bool
) -> _RawTrial:
    """A trial's ``result.json`` as compact columns, one per reported key.

    Read line by line; each row loses Ray's ``config`` copy and bookkeeping at
    once. A line that does not parse is reported in ``problems`` and skipped; a
    row glued onto a cut line (a crash mid-write, then a resume appending to the
    same file) is recovered. A trial restored from a checkpoint reports again
    from the epoch after that checkpoint: a row whose epoch is not past the last
    one read starts over from there, so rows of the abandoned run after it are
    dropped and the restored run's reports replace them.
    """
    t = _RawTrial(trial_id="", trial_dir=trial_dir, config={})
    if not path.exists():
        return t
    rows: list[dict[str, Any]] = []
    positions: list[float] = []
    first_config: Any = None
    try:
        f = path.open("rb")
    except OSError as exc:
        problems.append(f"{trial_dir}/result.json unreadable ({_first_line(exc)})")
        return t
    with f:
        for number, line in enumerate(f, start=1):
            text = line.strip()
            if not text:
                continue
            row = _parse_row(text)
            if row is None:
                where = f"{trial_dir}/result.json line {number}"
                row = _glued_row(text)
                if row is not None:
                    problems.append(f"{where}: a row glued onto a cut line; the row was recovered")
                elif not line.endswith(b"\n"):
                    problems.append(
                        f"{where}: torn last line (cut mid-write), skipped; "
                        f"the {len(rows)} rows before it are kept"
                    )
                    continue
                else:
                    problems.append(f"{where}: not a JSON object (cut mid-write?), skipped")
                    continue
            config = row.pop("config", None)
            if keep_config and first_config is None:
                first_config = config
            at = _position(row)
            if rows and at <= positions[-1]:
                keep = sum(p < at for p in positions)
                del rows[keep:], positions[keep:]
            rows.append(row)
            positions.append(at)
    if isinstance(first_config, dict):
        t.config = first_config
    _fill(t, rows)
    return t


def _parse_row(text: bytes) -> dict[str, Any] | None:
    """One ``result.json`` line as a dict; None when it is not a JSON object.

    orjson parses a line several times faster than ``json`` (most of a first
    load's time at scale) and gives the same objects, but refuses the ``NaN``
    and ``Infinity`` tokens Ray writes for a diverged loss or an SGD trial's
    α, and reads an integer beyond 64 bits as a float: a line holding either
    token or an integer of 19 digits or more, or anything else orjson refuses
    (a lone surrogate), is read by ``json``.
    """
    row: Any = None
    if b"NaN" not in text and b"Infinity" not in text and _LONG_INT not in text.translate(_INT_MAP):
        with contextlib.suppress(orjson.JSONDecodeError):
            row = orjson.loads(text)
    if row is None:
        try:
            row = json.loads(text)
        except ValueError:
            return None
    return row if isinstance(row, dict) else None


def _glued_row(text: bytes) -> dict[str, Any] | None:
    """The complete row at the end of a line whose start was cut off, if any."""
    start = text.find(b'{"', 1)
    while start != -1:
        row = _parse_row(text[start:])
        if row is not None:
            return row
        start = text.find(b'{"', start + 1)
    return None


def _fill(t: _RawTrial, rows: list[dict[str, Any]]) -> None:
    """Rows → the trial's compact columns, probe arrays and last row."""
    t.n_rows = len(rows)
    if not rows:
        return
    t.last = {k: v for k, v in rows[-1].items() if k != "probes"}
    t.trial_id = str(t.last["trial_id"]) if t.last.get("trial_id") is not None else ""
    probe_lists = [_probe_list(r) for r in rows]
    names = list(rows[0])
    if set().union(*rows).difference(names):  # a key some rows lack: first-seen order
        names = list(dict.fromkeys(k for r in rows for k in r))
    names = [k for k in names if k not in _RAY_BOOKKEEPING]
    table: list[Any] | None = None
    if len(names) > 1:
        try:  # every row holds every key (the usual case): one C-level transpose
            table = list(zip(*map(itemgetter(*names), rows), strict=True))
        except KeyError:
            table = None
    if table is None:
        table = [[r.get(k) for r in rows] for k in names]
    t.columns = {k: _Chunk.of(list(v)) for k, v in zip(names, table, strict=True)}
    t.columns["n_refresh"] = _Chunk("int", np.array([len(p) for p in probe_lists], "float64"))
    t.columns["n_probe_forward"] = _Chunk(
        "int",
        np.array([sum(len(p.get("alphas") or ()) for p in ps) for ps in probe_lists], "float64"),
    )
    t.probes = _probes(rows, probe_lists)


def _probes(rows: list[dict[str, Any]], probe_lists: list[list[dict[str, Any]]]) -> _Probes | None:
    """A trial's α searches in order: per-refresh fields and the grids."""
    records = [p for ps in probe_lists for p in ps]
    if not records:
        return None
    row_epochs = [r.get("epoch") for r, ps in zip(rows, probe_lists, strict=True) for _ in ps]
    fields = {k: _float_array([p.get(k) for p in records]) for k in _PROBE_SCALARS if k != "epoch"}
    fields["epoch"] = _float_array(
        [p.get("epoch", e) for p, e in zip(records, row_epochs, strict=True)]
    )
    grids = [p.get("alphas") for p in records]
    losses = [p.get("losses") for p in records]
    counts = [
        min(len(a), len(b)) if isinstance(a, list) and isinstance(b, list) else 0
        for a, b in zip(grids, losses, strict=True)
    ]
    return _Probes(
        fields=fields,
        counts=np.array(counts, dtype="int64"),
        alphas=_float_array([x for a, n in zip(grids, counts, strict=True) for x in a[:n]]),
        losses=_float_array([x for b, n in zip(losses, counts, strict=True) for x in b[:n]]),
    )


def _float_array(values: list[Any]) -> np.ndarray:
    """Values → float64 (None → NaN; what is not a number → NaN)."""
    try:
        return np.array(values, dtype="float64")
    except (TypeError, ValueError):
        return np.array([_float(v) for v in values], dtype="float64")


def _position(row: Mapping[str, Any]) -> float:
    """Where a row sits in training: its epoch, else Ray's training_iteration."""
    try:
        return float(row.get("epoch", row.get("training_iteration")))
    except (TypeError, ValueError):
        return math.inf


def _trial_id_in_dir(name: str) -> str | None:
    """The trial id a folder name carries (Ray's default name or the study layer's)."""
    m = _TRIAL_ID_IN_DIR.search(name) or _TRIAL_ID_PREFIX.search(name)
    return m.group(1) if m else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- per-trial facts -------------------------------------------------------


def _status(t: _RawTrial, *, live: bool) -> str:
    """The trial's label (``xsam_contract.STATUSES``); ``analysis/README.md`` has the rules."""
    last = t.last
    epochs = _flatten(t.config).get("epochs")
    retrying = live and t.ray_status in _RAY_LIVE_STATES
    if t.ray_status == "ERROR":
        return "errored"
    if last.get("diverged") is True:
        return "diverged"
    if _complete(t):
        return "finished"
    if last.get("done") is True or t.ray_status == "TERMINATED":
        # Ray marks the last row of a trial a scheduler or stopper ended.
        return "finished" if epochs is None else "stopped"
    if t.error_text is not None and not retrying:
        return "errored"  # its retries are spent, or the study no longer runs to retry it
    if t.ray_status == "PENDING" and not t.n_rows:
        return "pending"
    return "running" if live else "interrupted"


def _summary(t: _RawTrial, metric: str) -> dict[str, Any]:
    last = t.last
    out: dict[str, Any] = {
        "epochs_done": _whole(last.get("epoch", last.get("training_iteration"))),
        "time_total_s": last.get("time_total_s"),
        "hostname": last.get("hostname"),
        "last_update": last.get("timestamp"),
    }
    for name in ("train_loss", "train_acc", "test_loss", "test_acc", "alpha", "psi"):
        out[f"final_{name}"] = last.get(name)
    if "test_acc" in t.columns:
        accs = t.columns["test_acc"].floats()
        if (~np.isnan(accs)).any():
            i = int(np.nanargmax(accs))
            out["best_test_acc"] = float(accs[i])
            epochs = t.columns.get("epoch")
            out["best_epoch"] = epochs.values()[i] if epochs is not None else None
    out["objective"] = last.get(metric)
    n_ref = int(t.columns["n_refresh"].data.sum()) if "n_refresh" in t.columns else 0
    out["n_refreshes"] = n_ref
    out["refreshes_per_epoch"] = n_ref / out["epochs_done"] if out["epochs_done"] else math.nan
    times = t.columns["time_epoch"].floats() if "time_epoch" in t.columns else np.empty(0)
    times = times[~np.isnan(times)]
    out["time_per_epoch"] = float(times.mean()) if len(times) else math.nan
    if t.error_text is not None:
        text = _ANSI.sub("", t.error_text)
        out["failures"] = max(1, text.count("Failure # "))
        out["error"] = xsam_contract.error_line(text) or "error.pkl present"
    else:
        out["failures"] = 0
    return out


def _whole(value: Any) -> int:
    x = _float(value)
    return int(x) if math.isfinite(x) else 0


def _probe_list(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    probes = row.get("probes")
    if not isinstance(probes, list):
        return []
    return [p for p in probes if isinstance(p, dict)]


def _refresh_labels(cols: Mapping[str, pd.Series], index: pd.Index) -> pd.Series:
    """'never', '1 epoch', '50 step', … from refresh_every and refresh_unit."""
    every = cols.get("refresh_every")
    unit = cols.get("refresh_unit")
    labels = []
    for i in range(len(index)):
        e = every.iloc[i] if every is not None else pd.NA
        u = unit.iloc[i] if unit is not None else pd.NA
        if pd.isna(e):
            labels.append(pd.NA)
        elif float(e) == 0:
            labels.append("never")
        else:
            labels.append(f"{float(e):g} {u if not pd.isna(u) else 'epoch'}")
    return pd.Series(pd.array(labels, dtype="string"), index=index)


# -- names and dtypes ------------------------------------------------------


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config dicts → dotted keys (``{"trial": {"rho": 1}}`` → ``trial.rho``)."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _clean_names(configs: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Dotted config key → column name: the last part where that is unique."""
    keys: dict[str, None] = {}
    for c in configs:
        keys.update(dict.fromkeys(c))
    leaves = [k.rsplit(".", 1)[-1] for k in keys]
    counts: dict[str, int] = {}
    for leaf in leaves:
        counts[leaf] = counts.get(leaf, 0) + 1
    reserved = set(TRIAL_COLUMNS)
    out = {}
    for key, leaf in zip(keys, leaves, strict=True):
        name = leaf if counts[leaf] == 1 else key
        out[key] = f"config_{name}" if name in reserved else name
    return out


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _column(frame: pd.DataFrame, name: str, dtype: str | None, index: pd.Index) -> pd.Series:
    """``frame[name]`` coerced to ``dtype`` (inferred when None); all-missing when absent."""
    values = frame[name].tolist() if name in frame.columns else [None] * len(index)
    return pd.Series(_typed(values, dtype), index=index, name=name)


def _typed(values: list[Any], dtype: str | None) -> Any:
    """Values → a typed array; a value that does not fit the documented dtype
    falls back to inference rather than being dropped."""
    values = [None if _missing(v) else v for v in values]
    present = [v for v in values if v is not None]
    if dtype == "category":
        return pd.Categorical(values, categories=list(STATUSES))
    if dtype and dtype.startswith("datetime64"):
        secs = [_float(v) if v is not None else math.nan for v in values]
        return pd.to_datetime(pd.Series(secs, dtype="float64"), unit="s", utc=True).astype(dtype)
    if dtype is None:
        dtype = _infer(present)
    if dtype in ("Int64", "boolean", "string"):
        values = [None if _nan(v) else v for v in values]  # no NaN in these dtypes: missing
        present = [v for v in values if v is not None]
    try:
        if dtype == "Int64":
            if any(isinstance(v, bool) or float(v) != int(float(v)) for v in present):
                raise ValueError
            return pd.array([None if v is None else int(float(v)) for v in values], dtype="Int64")
        if dtype == "boolean":
            if not all(isinstance(v, (bool, np.bool_)) for v in present):
                raise ValueError
            return pd.array(values, dtype="boolean")
        if dtype == "float64":
            if any(isinstance(v, str) for v in present):
                raise ValueError
            return np.array([math.nan if v is None else float(v) for v in values], dtype="float64")
    except (TypeError, ValueError, OverflowError):
        fallback = _infer(present)
        return _typed(values, "string" if fallback == dtype else fallback)
    text = [None if v is None else _text(v) for v in values]
    return pd.array(text, dtype="string")


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return False  # NaN is a value (a diverged loss), not a missing key
    return value is pd.NA


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _infer(present: list[Any]) -> str:
    if any(isinstance(v, (str, list, dict, tuple)) for v in present):
        return "string"
    if present and all(isinstance(v, (bool, np.bool_)) for v in present):
        return "boolean"
    if present and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in present
    ):
        return "Int64"
    return "float64"


def _text(value: Any) -> str:
    if isinstance(value, (list, dict, tuple)):
        return json.dumps(value)
    return str(value)
