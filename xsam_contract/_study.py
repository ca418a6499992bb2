"""The study directory: the files the driver writes, the fields of ``study.json``, trial labels."""

from __future__ import annotations

from xsam_contract._metrics import Field

#: Files of the study directory that the project writes (Ray writes the rest).
STUDY_FILES: dict[str, str] = {
    "record": "study.json",  # STUDY_FIELDS
    "spec": "study.yaml",  # the validated study file with overrides applied
    "optuna_journal": "optuna.journal",  # the Optuna study of an Optuna search
}

#: ``study.json``: what the driver records about a study (JSON types in ``dtype``).
STUDY_FIELDS: dict[str, Field] = {
    "name": Field("string", "the study directory's name under the storage"),
    "study": Field("string", "the study file's name"),
    "description": Field("string", "the study file's description"),
    "metric": Field("string", "the metric the study optimises (the first one of metrics)"),
    "mode": Field("string", "min or max, for metric"),
    "metrics": Field("list", "every objective as {name, mode}"),
    "search": Field("object", "the search section of the study file"),
    "scheduler": Field("object", "the scheduler section of the study file"),
    "space": Field("object", "the swept parameters, as in the study file"),
    "trial": Field("object", "the fixed trial settings"),
    "trial_defaults": Field("object", "every trial key's default"),
    "resources": Field("object", "cpu and gpu per trial, concurrency"),
    "num_trials": Field("integer", "trials the study will run"),
    "source": Field("string", "path of the study file"),
    "storage": Field("string", "the storage root (local path or URI)"),
    "path": Field("string", "the study directory"),
    "command": Field("list", "the command line that started the study"),
    "address": Field("string", "the Ray cluster address given, or null"),
    "host": Field("string", "host name of the driver"),
    "versions": Field("object", "versions of python, xsam-tune, ray, optuna, torch, numpy"),
    "started_at": Field("string", "ISO 8601 UTC time the study started"),
    "finished_at": Field("string", "ISO 8601 UTC time every trial had ended"),
    "interrupted_at": Field("string", "ISO 8601 UTC time the study stopped early"),
    "trials": Field("object", "at the end: total and errors"),
    "resumed": Field("list", "one {at, command} per xsam-tune resume"),
}

#: Trial labels, in the order tables and legends list them.
STATUSES: dict[str, str] = {
    "finished": "reached the configured number of epochs",
    "stopped": "ended early without error (a scheduler or stopper ended it)",
    "diverged": "the last row reports diverged = true",
    "errored": "raised; its retries are spent",
    "running": "incomplete, and the study is still writing files",
    "interrupted": "incomplete, and the study ended or stopped writing",
    "pending": "known to Ray but not started",
}


def error_line(text: str) -> str | None:
    """The reason of a trial's last failure, from the text of its ``error.txt``.

    Ray writes ``Failure # n …`` headers and the remote traceback; the reason
    is the last ``SomeError: message`` line of the last failure, with the
    error's module path dropped (``ConfigError: …``, not
    ``xsam_contract._trial.ConfigError: …``). The run's closing table and the
    analysis frames both label errored trials with it.

    Returns:
        That line, else the failure's last non-empty line, else None.
    """
    last_failure = text.rsplit("Failure # ", 1)[-1]
    lines = [ln.strip() for ln in last_failure.splitlines() if ln.strip()]
    for line in reversed(lines):
        head, _, rest = line.partition(":")
        if head.endswith(("Error", "Exception", "Interrupt")) and " " not in head:
            return head.rsplit(".", 1)[-1] + ":" + rest
    return lines[-1] if lines else None
