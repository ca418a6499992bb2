"""The study record: ``study.yaml`` and ``study.json`` of a study directory, and their lifecycle.

File names come from ``xsam_contract.STUDY_FILES`` and the fields of
``study.json`` from ``xsam_contract.STUDY_FIELDS`` (docs/contract.md): a field
not in the contract is refused when the record is written.

Lifecycle: :func:`start_record` when a study starts (``started_at``),
:func:`mark_resumed` on each resume (appends to ``resumed``, clears the end),
:func:`mark_ended` when ``Tuner.fit`` returns (``finished_at`` and ``trials``,
or ``interrupted_at`` when trials are left to resume).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from study import _storage
from study._errors import StudyConfigError, StudyLaunchError
from study._schema import StudyConfig
from study._trial import trial_defaults
from study._validate import NAME, NAME_ALLOWED, parse_study
from study._yaml import dump_yaml, load_yaml
from xsam_contract import STUDY_FIELDS, STUDY_FILES

__all__ = [
    "RECORD",
    "SPEC",
    "choose_run_name",
    "claim_run_name",
    "mark_ended",
    "mark_resumed",
    "read_record",
    "read_study_config",
    "start_record",
    "update_record",
]

#: ``study.json``.
RECORD = STUDY_FILES["record"]
#: ``study.yaml``: the validated study file, overrides applied.
SPEC = STUDY_FILES["spec"]


def choose_run_name(root: str, name: str | None, default: str) -> str:
    """The study-directory name under ``root``.

    Args:
        root: The storage root (local path or URI).
        name: The name asked for (``--name``); it must not exist yet.
        default: The study's name; dated (``-YYYYmmdd-HHMMSS``) when it exists.

    Raises:
        StudyConfigError: ``name`` is not a valid directory name.
        StudyLaunchError: The directory ``name`` exists already.
    """
    if name is not None:
        if not NAME.match(name):
            raise StudyConfigError("--name", name, NAME_ALLOWED)
        if _storage.exists(_storage.join(root, name)):
            raise StudyLaunchError(
                f"study directory {_storage.join(root, name)} exists already: resume it with "
                "`xsam-tune resume DIR` or choose another --name"
            )
        return name
    if not _storage.exists(_storage.join(root, default)):
        return default
    stamped = f"{default}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = stamped, 2
    while _storage.exists(_storage.join(root, candidate)):
        candidate, n = f"{stamped}-{n}", n + 1
    return candidate


def claim_run_name(root: str, name: str | None, default: str) -> str:
    """:func:`choose_run_name`, and create that directory at once.

    On local storage the directory is created atomically: of two studies
    started at the same time into the same storage, one gets the name and
    the other the next one (or, with ``--name``, an error). An object store
    has no atomic create; there the name is only chosen.
    """
    while True:
        run_name = choose_run_name(root, name, default)
        if _storage.is_uri(root):
            return run_name
        os.makedirs(root, exist_ok=True)
        try:
            os.mkdir(os.path.join(root, run_name))
        except FileExistsError:
            continue  # taken meanwhile: choose again (a taken --name is refused)
        return run_name


def start_record(
    cfg: StudyConfig,
    *,
    run_name: str,
    root: str,
    study_dir: str,
    num_trials: int,
    command: Sequence[str] | None,
    address: str | None,
) -> dict[str, Any]:
    """Write ``study.yaml`` and a new ``study.json`` into ``study_dir``.

    Returns:
        The record written.
    """
    spec = cfg.to_dict()
    record = {
        "name": run_name,
        "study": cfg.name,
        "description": cfg.description,
        # one string each, as STUDY_FIELDS says: the first objective; `metrics` lists all
        "metric": cfg.metrics[0].name,
        "mode": cfg.metrics[0].mode,
        "metrics": [{"name": m.name, "mode": m.mode} for m in cfg.metrics],
        "search": spec["search"],
        "scheduler": spec["scheduler"],
        "space": spec["space"],
        "trial": spec["trial"],
        # analysis cannot import the trial layer: it reads unset keys' defaults here
        "trial_defaults": trial_defaults(),
        "resources": spec["resources"],
        "num_trials": num_trials,
        "source": cfg.source,
        "storage": root,
        "path": study_dir,
        "command": _command(command),
        "address": address,
        "host": socket.gethostname(),
        "versions": _versions(),
        "started_at": _now(),
    }
    _storage.write_text(study_dir, SPEC, dump_yaml(spec))
    _write(study_dir, record)
    return record


def mark_resumed(study_dir: str, command: Sequence[str] | None) -> None:
    """Record a resume: its time and command; the study is no longer ended."""

    def resumed(record: dict[str, Any]) -> None:
        record.pop("finished_at", None)
        record.pop("interrupted_at", None)
        record.setdefault("resumed", []).append({"at": _now(), "command": _command(command)})

    update_record(study_dir, resumed)


def mark_ended(study_dir: str, *, complete: bool, total: int, errors: int) -> None:
    """Record how the study ended: finished, or interrupted (resumable).

    Args:
        study_dir: The study directory.
        complete: Every trial ran to its end.
        total: Trials of the study (recorded when complete).
        errors: Trials that errored (recorded when complete).
    """

    def ended(record: dict[str, Any]) -> None:
        if not complete:  # Ctrl-C: analysis shows the open trials as interrupted, not running
            record["interrupted_at"] = _now()
            return
        record.pop("interrupted_at", None)
        record["finished_at"] = _now()
        record["trials"] = {"total": total, "errors": errors}

    update_record(study_dir, ended)


def read_record(study_dir: str) -> dict[str, Any]:
    """``study.json`` of a study directory (empty when there is none).

    Raises:
        StudyLaunchError: ``study.json`` is not a JSON object (damaged); the
            message says how to recover.
    """
    text = _storage.read_text(study_dir, RECORD)
    if not text:
        return {}
    try:
        record = json.loads(text)
    except ValueError as exc:
        record = exc
    if not isinstance(record, dict):
        raise StudyLaunchError(
            f"{_storage.join(study_dir, RECORD)}: damaged (not a JSON object); restore it from "
            f"a copy, or delete it to have resume write a new one from {SPEC}"
        )
    return record


def update_record(study_dir: str, change: Callable[[dict[str, Any]], None]) -> None:
    """Read ``study.json``, let ``change`` edit it in place, write it back."""
    record = read_record(study_dir)
    change(record)
    _write(study_dir, record)


def read_study_config(path: str) -> StudyConfig:
    """The validated study of a study directory (its ``study.yaml``).

    Raises:
        StudyLaunchError: The directory is missing or holds no ``study.yaml``.
        StudyConfigError: ``study.yaml`` is invalid.
    """
    if not _storage.is_uri(path) and not os.path.isdir(path):
        raise StudyLaunchError(f"study directory not found: {path}")
    text = _storage.read_text(path, SPEC)
    if text is None:
        raise StudyLaunchError(f"not an xsam-tune study directory (no {SPEC}): {path}")
    source = _storage.join(path, SPEC)
    return parse_study(load_yaml(text, source=source), source=source)


def _write(study_dir: str, record: dict[str, Any]) -> None:
    unknown = sorted(set(record) - set(STUDY_FIELDS))
    if unknown:  # a programming error: the contract owns the fields
        raise ValueError(f"{RECORD} fields not in xsam_contract.STUDY_FIELDS: {unknown}")
    _storage.write_text(study_dir, RECORD, json.dumps(record, indent=2, default=str) + "\n")


def _command(command: Sequence[str] | None) -> list[str]:
    return list(sys.argv if command is None else command)


def _versions() -> dict[str, str | None]:
    import importlib.metadata  # slow to import, and only a starting study needs it

    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("xsam-tune", "ray", "optuna", "torch", "numpy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
