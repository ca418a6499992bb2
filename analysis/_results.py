"""Study directory → tidy dataframes, from the files alone (no Ray, no torch).

The directory is the one Ray Tune 2.x writes (``<storage>/<name>/``): one folder
per trial holding ``params.json`` (the trial config) and ``result.json`` (one
JSON object per reported row), ``error.txt`` when the trial raised, and
``experiment_state-*.json`` at the top; the driver adds ``study.json`` and
``study.yaml``. Everything is read with ``json``; a study that is still
running, crashed half-way or was copied elsewhere reads the same way.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import xsam_contract
from analysis import _remote
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

__all__ = ["Study", "load"]

# What a bare Ray directory (no study.json) is ranked by: the study layer's default.
_DEFAULT_METRIC = {"name": "test_acc", "mode": "max"}
_MODES = ("max", "min")

# Keys Ray adds to every row that are bookkeeping, not metrics.
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
        "timestamp",
    }
)
_RAY_LIVE_STATES = frozenset({"RUNNING", "PENDING", "PAUSED"})
# study.json keys the driver writes when it stops: the study is no longer running.
_ENDED_KEYS = ("finished_at", "interrupted_at")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Ray's default trial folder: <trainable>_<5 hex>_<5 digits>_<tag>_<date>.
_TRIAL_ID_IN_DIR = re.compile(r"_([0-9a-f]{5}_\d{5})(?:_|$)")


@dataclass
class _RawTrial:
    """What one trial's files say, before any dataframe is built."""

    trial_id: str
    trial_dir: str | None
    config: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    ray_status: str | None = None
    error_text: str | None = None


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
        The study; its frames are built on first access from what was read now.

    Raises:
        AnalysisError: the path is missing or holds no study.
    """
    if _remote.is_uri(path):
        path = _remote.local_copy(str(path)).path
    root = Path(path).expanduser()
    if not root.exists():
        raise AnalysisError(f"study directory not found: {root}")
    if not root.is_dir():
        raise AnalysisError(f"not a directory: {root}")
    info = _read_json_object(root / xsam_contract.STUDY_FILES["record"])
    state = _read_experiment_state(root)
    trial_dirs = sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and ((p / "params.json").exists() or (p / "result.json").exists())
    )
    if not trial_dirs and not state and info is None:
        raise AnalysisError(
            f"not a study directory (no study.json, experiment_state-*.json or trial "
            f"folders with params.json): {root}"
        )
    raw, newest = _read_trials(root, trial_dirs, state)
    spec_path = root / xsam_contract.STUDY_FILES["spec"]
    spec_text = spec_path.read_text(errors="replace") if spec_path.exists() else None
    info = info or {}
    _check_info(info, root)
    # params.json holds what the study set; study.json records the trial layer's
    # defaults for the rest. A swept key a trial lacks was left unset by its
    # `when` condition (sgd has no k): it stays missing rather than taking the default.
    swept = set(info.get("space") or ())
    fill = {k: v for k, v in (info.get("trial_defaults") or {}).items() if k not in swept}
    for t in raw:
        t.config = {**fill, **t.config}
    ended = any(k in info for k in _ENDED_KEYS)
    live = not ended and (time.time() - newest) <= stale_after
    return Study(root, info, spec_text, raw, live=live)


class Study:
    """A study directory read into memory.

    Attributes:
        path: the study directory.
        info: ``study.json`` as a dict (empty when the file is missing).
        spec_text: ``study.yaml`` as text, or None.
        live: whether the study looked alive when read (no ``finished_at`` or
            ``interrupted_at`` and files changed within ``stale_after`` seconds).
    """

    def __init__(
        self,
        path: Path,
        info: dict[str, Any],
        spec_text: str | None,
        raw: list[_RawTrial],
        *,
        live: bool,
    ) -> None:
        self.path = path
        self.info = info
        self.spec_text = spec_text
        self.live = live
        self._raw = raw
        self._names = _clean_names(_flatten(t.config) for t in raw)

    def __repr__(self) -> str:
        counts = self.trials["status"].value_counts()
        parts = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        return f"Study({self.name!r}, {len(self._raw)} trials: {parts or 'none'})"

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
        return (self.info.get("metrics") or [_DEFAULT_METRIC])[0]

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
        records = []
        for t in self._raw:
            rec: dict[str, Any] = {
                "trial_id": t.trial_id,
                "trial_dir": t.trial_dir,
                "status": _status(t, live=self.live),
            }
            flat = _flatten(t.config)
            rec.update({self._names[k]: v for k, v in flat.items()})
            rec.update(_summary(t, self.metric, self.mode))
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
        columns = epoch_columns()
        keys = self._key_frame(exclude=columns)
        records = []
        for t in self._raw:
            for row in t.rows:
                rec = {k: v for k, v in row.items() if k not in _RAY_BOOKKEEPING}
                probes = _probe_list(row)
                rec["n_refresh"] = len(probes)
                rec["n_probe_forward"] = sum(len(p.get("alphas") or ()) for p in probes)
                rec["trial_id"] = t.trial_id
                rec["timestamp"] = row.get("timestamp")
                records.append(rec)
        frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
        index = pd.RangeIndex(len(records))
        out = {name: _column(frame, name, dtype, index) for name, (dtype, _) in columns.items()}
        # Metrics beyond the contract (a trainable may report more) come along, typed by value.
        for name in frame.columns:
            if name not in out and frame[name].map(_is_scalar).all():
                out[name] = _column(frame, name, None, index)
        epochs = pd.DataFrame(out, index=index)
        return _with_keys(epochs, keys)

    @cached_property
    def probes(self) -> pd.DataFrame:
        """One row per α refresh and grid point: the saved L(α) curves."""
        keys = self._key_frame(exclude=PROBE_COLUMNS)
        records = []
        for t in self._raw:
            n = 0
            for row in t.rows:
                for p in _probe_list(row):
                    alphas = list(p.get("alphas") or ())
                    losses = list(p.get("losses") or ())
                    star = _float(p.get("alpha"))
                    for a, loss in zip(alphas, losses, strict=False):
                        a = _float(a)
                        records.append(
                            {
                                "trial_id": t.trial_id,
                                "refresh_index": n,
                                "epoch": p.get("epoch", row.get("epoch")),
                                "step": p.get("step"),
                                "alpha": a,
                                "loss": _float(loss),
                                "alpha_star": star,
                                "psi": _float(p.get("psi")),
                                "is_star": bool(abs(a - star) < 1e-9) if star == star else None,
                            }
                        )
                    n += 1
        frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
        index = pd.RangeIndex(len(records))
        out = {
            name: _column(frame, name, dtype, index) for name, (dtype, _) in PROBE_COLUMNS.items()
        }
        return _with_keys(pd.DataFrame(out, index=index), keys)

    def frame(self, kind: str) -> pd.DataFrame:
        """``trials``, ``epochs`` or ``probes`` by name."""
        if kind not in ("trials", "epochs", "probes"):
            raise AnalysisError(f"unknown table {kind!r}; choose trials, epochs or probes")
        return getattr(self, kind)

    def _key_frame(self, exclude: Mapping[str, Any]) -> pd.DataFrame:
        """trial_id plus the key columns, renamed ``config_<name>`` where a key
        would clash with a metric of the target frame (``lr``, ``alpha``)."""
        cols = ["trial_id", *self.key_columns]
        keys = self.trials[cols].copy()
        return keys.rename(columns={c: f"config_{c}" for c in cols[1:] if c in exclude})


def _config_order(names: Iterable[str], swept: list[str] | None) -> list[str]:
    """Swept settings first, then the contract's keys in its order, then the rest."""
    names = list(dict.fromkeys(names))
    known = [n for n in xsam_contract.TRIAL_KEYS if n in names]
    first = [n for n in swept or () if n in names]
    rest = [n for n in names if n not in known]
    return list(dict.fromkeys([*first, *known, *rest]))


def _with_keys(frame: pd.DataFrame, keys: pd.DataFrame) -> pd.DataFrame:
    """Put the trial's key columns right after trial_id, keeping row order and dtypes."""
    merged = frame.merge(keys, on="trial_id", how="left", sort=False)
    key_cols = [c for c in keys.columns if c != "trial_id"]
    rest = [c for c in frame.columns if c != "trial_id"]
    return merged[["trial_id", *key_cols, *rest]]


# -- reading files ---------------------------------------------------------


def _read_json_object(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AnalysisError(f"cannot read {path}: {exc}") from exc
    if not isinstance(obj, dict):
        raise AnalysisError(f"{path} does not hold a JSON object")
    return obj


def _read_experiment_state(root: Path) -> dict[str, dict[str, Any]]:
    """Ray's view of each trial (status, config, folder) from the newest
    ``experiment_state-*.json``; empty when missing or unreadable.

    Ray rewrites this file periodically from the driver, so it can lag behind
    the trial folders; it is a hint, never the only source.
    """
    files = sorted(root.glob("experiment_state-*.json"))  # the name carries the session time
    if not files:
        return {}
    try:
        state = json.loads(files[-1].read_text())
        out = {}
        for entry in state.get("trial_data", []):
            head = json.loads(entry[0]) if isinstance(entry, (list, tuple)) else entry
            head = json.loads(head) if isinstance(head, str) else head
            out[str(head["trial_id"])] = {
                "status": head.get("status"),
                "config": head.get("config") or {},
                "dir": head.get("relative_logdir"),
            }
        return out
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return {}  # a format this version does not know: fall back to the folders


def _read_trials(
    root: Path, trial_dirs: list[Path], state: dict[str, dict[str, Any]]
) -> tuple[list[_RawTrial], float]:
    """Every trial with its rows, and the newest modification time seen."""
    by_dir = {v["dir"]: k for k, v in state.items() if v.get("dir")}
    newest = max((p.stat().st_mtime for p in root.glob("experiment_state-*.json")), default=0.0)
    trials: list[_RawTrial] = []
    for d in trial_dirs:
        rows = _read_rows(d / "result.json")
        trial_id = (
            (str(rows[-1]["trial_id"]) if rows and "trial_id" in rows[-1] else None)
            or by_dir.get(d.name)
            or _trial_id_from_dir(d.name)
        )
        params = _read_json_object(d / "params.json") if (d / "params.json").exists() else None
        if params is None:
            params = (rows[0].get("config") if rows else None) or state.get(trial_id, {}).get(
                "config", {}
            )
        error = None
        for name in ("error.txt", "error.pkl"):
            if (d / name).exists():
                error = (d / "error.txt").read_text(errors="replace") if name == "error.txt" else ""
                break
        trials.append(
            _RawTrial(
                trial_id=trial_id,
                trial_dir=d.name,
                config=params,
                rows=rows,
                ray_status=state.get(trial_id, {}).get("status"),
                error_text=error,
            )
        )
        for f in (d, d / "result.json"):
            if f.exists():
                newest = max(newest, f.stat().st_mtime)
    seen = {t.trial_id for t in trials}
    for trial_id, entry in state.items():
        # Ray knows the trial but its folder does not exist yet: waiting for resources.
        if trial_id not in seen and entry.get("status") == "PENDING":
            trials.append(
                _RawTrial(trial_id, None, dict(entry.get("config") or {}), ray_status="PENDING")
            )
    trials.sort(key=lambda t: t.trial_id)
    return trials, newest


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a result.json, one per epoch, in epoch order.

    A running trial may leave a half-written last line: lines that do not
    parse are skipped. A trial restored from a checkpoint reports again from
    the epoch after that checkpoint: a row whose epoch is not past the last
    one read starts over from there, so rows of the abandoned run after it are
    dropped and the restored run's reports replace them.
    """
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = []
    with path.open("rb") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)  # json reads Ray's NaN/Infinity tokens too
            except ValueError:
                continue
            if not isinstance(row, dict):
                continue
            at = _position(row)
            if rows and at <= _position(rows[-1]):
                rows = [r for r in rows if _position(r) < at]
            rows.append(row)
    return rows


def _position(row: Mapping[str, Any]) -> float:
    """Where a row sits in training: its epoch, else Ray's training_iteration."""
    try:
        return float(row.get("epoch", row.get("training_iteration")))
    except (TypeError, ValueError):
        return math.inf


def _trial_id_from_dir(name: str) -> str:
    m = _TRIAL_ID_IN_DIR.search(name)
    return m.group(1) if m else name


# -- per-trial facts -------------------------------------------------------


def _status(t: _RawTrial, *, live: bool) -> str:
    """The trial's state; see ``analysis/README.md`` for the rules."""
    last = t.rows[-1] if t.rows else {}
    epochs = _flatten(t.config).get("epochs")
    done = _float(last.get("epoch"))
    if last.get("diverged") is True:
        return "diverged"
    if isinstance(epochs, (int, float)) and done == done and done >= epochs:
        return "finished"
    if t.ray_status == "ERROR" or (
        t.error_text is not None and t.ray_status not in _RAY_LIVE_STATES
    ):
        return "errored"
    if t.ray_status == "TERMINATED":
        return "finished" if epochs is None else "stopped"
    if t.ray_status == "PENDING" and not t.rows:
        return "pending"
    return "running" if live else "interrupted"


def _summary(t: _RawTrial, metric: str, mode: str) -> dict[str, Any]:
    rows = t.rows
    last = rows[-1] if rows else {}
    out: dict[str, Any] = {
        "epochs_done": int(last.get("epoch", last.get("training_iteration", 0)) or 0),
        "time_total_s": last.get("time_total_s"),
        "hostname": last.get("hostname"),
        "last_update": last.get("timestamp"),
    }
    for name in ("train_loss", "train_acc", "test_loss", "test_acc", "alpha", "psi"):
        out[f"final_{name}"] = last.get(name)
    accs = [(_float(r.get("test_acc")), r.get("epoch")) for r in rows]
    accs = [(a, e) for a, e in accs if a == a]
    if accs:
        best = max(a for a, _ in accs)
        out["best_test_acc"] = best
        out["best_epoch"] = next(e for a, e in accs if a == best)
    out["objective"] = last.get(metric)
    n_ref = sum(len(_probe_list(r)) for r in rows)
    out["n_refreshes"] = n_ref
    out["refreshes_per_epoch"] = n_ref / out["epochs_done"] if out["epochs_done"] else math.nan
    times = [_float(r.get("time_epoch")) for r in rows]
    times = [x for x in times if x == x]
    out["time_per_epoch"] = float(np.mean(times)) if times else math.nan
    if t.error_text is not None:
        text = _ANSI.sub("", t.error_text)
        out["failures"] = max(1, text.count("Failure # "))
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        out["error"] = lines[-1] if lines else "error.pkl present"
    else:
        out["failures"] = 0
    return out


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
    keys: list[str] = []
    for c in configs:
        keys.extend(k for k in c if k not in keys)
    leaves = [k.rsplit(".", 1)[-1] for k in keys]
    reserved = set(TRIAL_COLUMNS)
    out = {}
    for key, leaf in zip(keys, leaves, strict=True):
        name = leaf if leaves.count(leaf) == 1 else key
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


def _check_info(info: Mapping[str, Any], root: Path) -> None:
    """The study.json fields the analysis reads have the contract's JSON types."""
    path = root / xsam_contract.STUDY_FILES["record"]
    types = {"string": str, "object": Mapping, "list": list}
    for name in ("name", "metrics", "space", "trial_defaults"):
        want = types[xsam_contract.STUDY_FIELDS[name].dtype]
        if name in info and not isinstance(info[name], want):
            raise AnalysisError(
                f"{path}: {name} is {info[name]!r}; "
                f"expected a JSON {xsam_contract.STUDY_FIELDS[name].dtype}"
            )
    for i, m in enumerate(info.get("metrics", [_DEFAULT_METRIC])):
        if not (
            isinstance(m, Mapping) and isinstance(m.get("name"), str) and m.get("mode") in _MODES
        ):
            raise AnalysisError(
                f"{path}: metrics[{i}] is {m!r}; expected {{name: <metric>, mode: max or min}}"
            )
