"""The console of a running study: our own event lines and progress, instead of Ray's.

A :class:`Console` has the hooks of a Ray Tune callback. It prints one line per event that
matters (a trial started, with its swept values; finished, with its metric;
failed, with a one-line reason and where its error log is) and a progress
line: trials done/running/pending, the running trials' epoch ``e/E``, the best
value so far, the elapsed time and an ETA from the epochs done so far. On a
terminal the progress line is redrawn in place; elsewhere (a pipe, CI) it is
a plain line at most every :data:`PLAIN_PROGRESS_S` seconds and after each
finished trial. ``quiet`` prints the progress only; ``json`` prints every
event (progress included) as one JSON object per line.

It also owns the first Ctrl-C of a run: Ray Tune stops scheduling, saves its
state and returns; the console says so and remembers that the run was
interrupted (a second Ctrl-C raises ``KeyboardInterrupt`` at once).

The console pickles as an inert object: Ray keeps the run's callbacks in
``tuner.pkl``, and a resumed run gets a fresh console of its own.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from study._report import format_metric, status_of
from xsam_contract import error_line

__all__ = ["PLAIN_PROGRESS_S", "Console", "TrialView", "error_reason", "format_duration"]

#: Seconds between two progress lines when the output is not a terminal.
PLAIN_PROGRESS_S = 30.0
#: Seconds between two redraws of the progress line on a terminal.
_REDRAW_S = 0.5


@dataclass
class TrialView:
    """What the console knows about one trial."""

    trial_id: str
    swept: dict[str, Any]
    epochs: int
    epoch: int = 0
    metric: float | None = None
    state: str = "pending"  # pending, running, done, errored
    label: str = "pending"  # a key of xsam_contract.STATUSES once it ended
    error: str | None = None
    log: str | None = None
    started: bool = False


@dataclass
class _Run:
    trials: dict[str, TrialView] = field(default_factory=dict)
    start: float = field(default_factory=time.monotonic)
    epochs_start: int = 0  # epochs already done when this run (or resume) began
    last_draw: float = 0.0
    last_plain: float = 0.0
    last_text: str = ""
    drawn: bool = False  # a progress line is on the terminal, not ended by a newline


class Console:
    """Prints the study's events and progress; Ray Tune calls it through
    :class:`study._hooks.Forward` (this module imports no Ray, so the checks
    before a launch do not wait for Ray to import).

    Args:
        swept: The swept parameter names, in study-file order.
        metric: The metric shown (the study's first objective).
        mode: ``min`` or ``max``: what "best" means.
        epochs: Epochs of a trial whose config does not say (the study's value).
        total: Trials of the study.
        style: ``normal`` (events and progress), ``quiet`` (progress only),
            ``json`` (events and progress as JSON lines) or ``plain`` (events
            only, for ``-v`` where Ray prints its own output).
        stream: Where to print (default ``sys.stdout``).
        tty: Redraw the progress line in place (default: ``stream.isatty()``).
    """

    def __init__(
        self,
        *,
        swept: Sequence[str],
        metric: str,
        mode: str,
        epochs: int,
        total: int,
        style: str = "normal",
        stream: IO[str] | None = None,
        tty: bool | None = None,
    ) -> None:
        if style not in ("normal", "quiet", "json", "plain"):
            raise ValueError(f"console style {style!r}: one of normal, quiet, json, plain")
        self.swept = list(swept)
        self.metric, self.mode, self.epochs, self.total = metric, mode, int(epochs), int(total)
        self.style = style
        self.stream = stream if stream is not None else sys.stdout
        is_tty = getattr(self.stream, "isatty", lambda: False)
        self.tty = bool(is_tty()) if tty is None else tty
        self.interrupted = False
        self._run = _Run()
        self._ray_sigint: Any = None

    # Ray pickles the run config (callbacks included) into tuner.pkl: keep no
    # stream or state there; a restored console prints nothing.
    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.style = "inert"

    # ------------------------------------------------------------------
    # Ray Tune hooks

    def setup(self, **info: Any) -> None:
        """Take over the first Ctrl-C (Ray installed its handler just before)."""
        if self.style == "inert":
            return
        self._run = _Run()
        try:
            self._ray_sigint = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:  # not the main thread: Ray's handler stays
            self._ray_sigint = None

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        """Learn the trials a resumed run already has; keep the clock moving."""
        if self.style == "inert":
            return
        for trial in trials:
            if trial.trial_id not in self._run.trials:
                view = self._view(trial)
                if trial.status == "TERMINATED":
                    self._end(view, trial, trial.last_result or {})
                    self._run.epochs_start += view.epoch
                elif trial.status == "ERROR":
                    view.state, view.label = "errored", "errored"
        self._progress(force=False)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """A trial (or a retry of one) started."""
        if self.style == "inert":
            return
        view = self._view(trial)
        event = "trial_restarted" if view.started else "trial_started"
        quiet_retry = view.started and getattr(trial, "max_failures", None) == 0
        view.started, view.state = True, "running"
        if quiet_retry:  # the last try of a trial that failed on bad input: its error follows
            return
        swept = ", ".join(f"{k}={_cell(v)}" for k, v in view.swept.items())
        text = f"{'restarted' if event == 'trial_restarted' else 'started'}  {view.trial_id}"
        self._event(
            event,
            text + (f"  {swept}" if swept else ""),
            trial=view.trial_id,
            config=view.swept,
            epochs=view.epochs,
        )

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any
    ) -> None:
        """One epoch's row: update the trial's epoch and metric."""
        if self.style == "inert":
            return
        view = self._view(trial)
        view.state = "running"
        view.epoch = int(result.get("training_iteration") or view.epoch)
        value = result.get(self.metric)
        if _finite(value):
            view.metric = float(value)
        self._progress(force=False)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """A trial ended without error (finished, stopped early or diverged)."""
        if self.style == "inert":
            return
        view = self._view(trial)
        self._end(view, trial, trial.last_result or {})
        value = "-" if view.metric is None else format_metric(self.metric, float(view.metric))
        self._event(
            "trial_finished",
            f"{view.label:<9} {view.trial_id}  {self.metric}={value}  "
            f"({view.epoch}/{view.epochs} epochs)",
            trial=view.trial_id,
            status=view.label,
            metric=view.metric,
            epochs=view.epoch,
        )
        self._progress(force=not self.tty)

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """A trial failed and will be retried."""
        if self.style == "inert":
            return
        view = self._view(trial)
        view.state = "pending"
        if getattr(trial, "max_failures", None) == 0:  # bad input: reported once, as errored
            return
        reason = error_reason(trial.error_file)
        self._event(
            "trial_retry",
            f"retry     {view.trial_id}  after failure {trial.num_failures}: {reason}",
            trial=view.trial_id,
            failures=trial.num_failures,
            error=reason,
        )

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """A trial failed for good (its retries spent, or not retried)."""
        if self.style == "inert":
            return
        view = self._view(trial)
        view.state, view.label = "errored", "errored"
        view.error = error_reason(trial.error_file)
        view.log = _error_log(trial)
        self._event(
            "trial_errored",
            f"errored   {view.trial_id}  {view.error}  (log: {view.log})",
            trial=view.trial_id,
            error=view.error,
            log=view.log,
        )
        self._progress(force=not self.tty)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        """Final progress line; give Ctrl-C back."""
        if self.style == "inert":
            return
        self._progress(force=True)
        self._end_line()
        self.restore_sigint()

    # ------------------------------------------------------------------
    # Ctrl-C

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self.interrupted = True
        text = (
            "interrupted: stopping the trials and saving their state "
            "(press Ctrl-C again to stop at once)"
        )
        if self.style == "json":
            self._json("interrupt", text=text)
        else:  # said even with --quiet: the user must know the first Ctrl-C was heard
            self._write(text)
        handler = self._ray_sigint
        if callable(handler):
            # Ray's handler stops the run gracefully and puts back the handler it
            # found (the default one), so a second Ctrl-C raises KeyboardInterrupt.
            handler(signum, frame)
        else:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def restore_sigint(self) -> None:
        """Put the default Ctrl-C handler back if ours is still installed."""
        try:
            if signal.getsignal(signal.SIGINT) == self._on_sigint:
                signal.signal(signal.SIGINT, signal.default_int_handler)
        except ValueError:
            pass

    # ------------------------------------------------------------------
    # Views of trials and the progress line

    def views(self) -> dict[str, TrialView]:
        """Every trial seen, by Ray trial id."""
        return dict(self._run.trials)

    def progress_text(self, now: float | None = None) -> str:
        """The progress line's text."""
        run = self._run
        now = time.monotonic() if now is None else now
        views = list(run.trials.values())
        done = sum(v.state in ("done", "errored") for v in views)
        running = [v for v in views if v.state == "running"]
        pending = max(self.total - done - len(running), 0)
        parts = [f"{done}/{self.total} done, {len(running)} running, {pending} pending"]
        if running:
            shown = ", ".join(f"e{v.epoch}/{v.epochs}" for v in running[:6])
            parts.append(f"epochs {shown}{' …' if len(running) > 6 else ''}")
        best = self.best()
        if best is not None:
            parts.append(f"best {self.metric} {format_metric(self.metric, float(best))}")
        elapsed = now - run.start
        parts.append(f"{format_duration(elapsed)} elapsed")
        eta = self.eta(elapsed)
        parts.append("ETA " + (format_duration(eta) if eta is not None else "?"))
        return " | ".join(parts)

    def best(self) -> float | None:
        """The best metric value reported so far."""
        values = [v.metric for v in self._run.trials.values() if v.metric is not None]
        if not values:
            return None
        return max(values) if self.mode == "max" else min(values)

    def eta(self, elapsed: float) -> float | None:
        """Seconds left, from this run's epochs per second; None before the first epoch."""
        views = list(self._run.trials.values())
        done_epochs = sum(v.epoch for v in views)
        this_run = done_epochs - self._run.epochs_start
        if this_run <= 0 or elapsed <= 0:
            return None
        left = sum(
            0 if v.state in ("done", "errored") else max(v.epochs - v.epoch, 0) for v in views
        )
        left += max(self.total - len(views), 0) * self.epochs
        return left * elapsed / this_run

    def _progress(self, *, force: bool) -> None:
        if self.style == "plain":
            return
        run, now = self._run, time.monotonic()
        if self.style == "json":
            if force or now - run.last_plain >= PLAIN_PROGRESS_S:
                run.last_plain = now
                self._json("progress", text=self.progress_text(now))
            return
        if self.tty:
            if force or now - run.last_draw >= _REDRAW_S:
                run.last_draw = now
                self.stream.write("\r\x1b[K" + self.progress_text(now))
                self.stream.flush()
                run.drawn = True
        elif force or now - run.last_plain >= PLAIN_PROGRESS_S:
            run.last_plain = now
            text = self.progress_text(now)
            if text != run.last_text:  # the same line twice says nothing new
                run.last_text = text
                self._write(f"progress: {text}")

    def _event(self, event: str, text: str, **fields: Any) -> None:
        if self.style == "json":
            self._json(event, **fields, text=text)
        elif self.style != "quiet":
            self._write(text)
            self._progress(force=self.tty)

    def _json(self, event: str, **fields: Any) -> None:
        self._end_line()
        line = json.dumps({"event": event, "time": round(time.time(), 3), **fields}, default=str)
        self.stream.write(line + "\n")
        self.stream.flush()

    def _write(self, line: str) -> None:
        if self.tty and self._run.drawn:
            self.stream.write("\r\x1b[K")
            self._run.drawn = False
        self.stream.write(line + "\n")
        self.stream.flush()

    def _end_line(self) -> None:
        if self.tty and self._run.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._run.drawn = False

    def _view(self, trial: Any) -> TrialView:
        view = self._run.trials.get(trial.trial_id)
        if view is None:
            config = trial.config or {}
            epochs = config.get("epochs")
            view = TrialView(
                trial_id=trial.trial_id,
                swept={k: config[k] for k in self.swept if k in config},
                epochs=int(epochs) if isinstance(epochs, int) else self.epochs,
            )
            self._run.trials[trial.trial_id] = view
        return view

    def _end(self, view: TrialView, trial: Any, last: Mapping[str, Any]) -> None:
        view.state = "done"
        view.epoch = int(last.get("training_iteration") or view.epoch)
        value = last.get(self.metric)
        if _finite(value):
            view.metric = float(value)
        view.label = status_of(last, view.epochs, errored=False)


def error_reason(error_file: str | None) -> str:
    """The one-line reason of a trial's failure from its ``error.txt``.

    The reason is :func:`xsam_contract.error_line`, shortened to one screen line.
    """
    if not error_file:
        return "unknown error"
    try:
        with open(error_file, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return "unknown error (no error log)"
    line = error_line(text)
    return _shorten(line) if line else "unknown error"


def format_duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``12s``."""
    s = max(round(seconds), 0)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _error_log(trial: Any) -> str:
    path = getattr(trial, "path", None) or getattr(trial, "local_path", None)
    return f"{str(path).rstrip('/')}/error.txt" if path else str(trial.error_file)


def _shorten(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _finite(value: Any) -> bool:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return ok and math.isfinite(value)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
