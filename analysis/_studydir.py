"""The first step of every read of a study, standard library only: what is there, is it live.

:func:`open_study_dir` checks the path, reads and checks ``study.json``, lists
the trial folders and Ray's run-state files, takes the analysis cache's
fingerprint (:func:`analysis._cache.fingerprint`) and decides whether the study
still runs. :func:`analysis.load` starts with it, and so does the fast path of
``xsam-tune results`` (:mod:`analysis._summary`), which must decide whether a
cached summary answers before anything imports numpy or pandas.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xsam_contract
from analysis import _cache, _remote
from analysis._errors import AnalysisError

__all__ = ["DEFAULT_METRIC", "StudyDir", "open_study_dir", "report_problems"]

#: What a bare Ray directory (no study.json) is ranked by: the study layer's default.
DEFAULT_METRIC: Mapping[str, str] = {"name": "test_acc", "mode": "max"}
_MODES = ("max", "min")
# study.json keys the driver writes when it stops: the study is no longer running.
_ENDED_KEYS = ("finished_at", "interrupted_at")
_log = logging.getLogger("analysis")


@dataclass(frozen=True)
class StudyDir:
    """A study directory as listed, before any trial file is read.

    Attributes:
        root: the local directory (a URI's local mirror).
        info: ``study.json`` as a dict; None when the file is missing.
        trial_dirs: trial folder names, sorted.
        states: Ray's ``experiment_state-*.json`` files, oldest first.
        stamp: the analysis cache's fingerprint of every file the frames are built from.
        live: whether the study looks alive (see :func:`open_study_dir`).
    """

    root: Path
    info: dict[str, Any] | None
    trial_dirs: list[str]
    states: list[Path]
    stamp: str
    live: bool


def open_study_dir(path: str | Path, *, stale_after: float) -> StudyDir:
    """List a study directory and decide whether it still runs.

    Args:
        path: the study directory, or its URI (mirrored locally first).
        stale_after: seconds without any study file changing after which a study
            whose ``study.json`` has neither ``finished_at`` nor ``interrupted_at``
            counts as no longer running.

    Raises:
        AnalysisError: the path is missing or holds no study, or ``study.json``
            is unreadable or has a field of the wrong JSON type.
    """
    if _remote.is_uri(path):
        path = _remote.local_copy(str(path)).path
    root = Path(path).expanduser()
    if not root.exists():
        raise AnalysisError(f"study directory not found: {root}")
    if not root.is_dir():
        raise AnalysisError(f"not a directory: {root}")
    info = _read_json_object(root / xsam_contract.STUDY_FILES["record"])
    trial_dirs = sorted(
        e.name
        for e in os.scandir(root)
        if e.is_dir() and ((root / e.name / "params.json").exists() or _has_result(root, e.name))
    )
    states = sorted(root.glob("experiment_state-*.json"))  # the name carries the session time
    if not trial_dirs and not states and info is None:
        raise AnalysisError(
            f"not a study directory (no study.json, experiment_state-*.json or trial "
            f"folders with params.json): {root}"
        )
    _check_info(info or {}, root)
    stamp, newest = _cache.fingerprint(root, trial_dirs, states)
    ended = any(k in (info or {}) for k in _ENDED_KEYS)
    live = not ended and (time.time() - newest) <= stale_after
    return StudyDir(root, info, trial_dirs, states, stamp, live)


def report_problems(path: Path, problems: list[str]) -> None:
    """Damaged files as warnings on the ``analysis`` logger (one line each, a handful at most)."""
    shown = problems[:5]
    for p in shown:
        _log.warning("warning: %s: %s", path, p)
    if len(problems) > len(shown):
        _log.warning(
            "warning: %s: %d more damaged files (Study.problems lists them)",
            path,
            len(problems) - len(shown),
        )


def _has_result(root: Path, name: str) -> bool:
    return (root / name / "result.json").exists()


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
    for i, m in enumerate(info.get("metrics", [DEFAULT_METRIC])):
        if not (
            isinstance(m, Mapping) and isinstance(m.get("name"), str) and m.get("mode") in _MODES
        ):
            raise AnalysisError(
                f"{path}: metrics[{i}] is {m!r}; expected {{name: <metric>, mode: max or min}}"
            )
