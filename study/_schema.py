"""The validated study: :class:`StudyConfig` and its parts, as :mod:`study._validate` builds them.

Plain frozen dataclasses; building one does not validate it (use
:func:`study.parse_study`). ``StudyConfig.to_dict`` writes the study back as a
study file that ``parse_study`` reads to an equal config. The search algorithm
and the scheduler are one class per name, in :mod:`study._algorithms` and
:mod:`study._schedulers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from study._algorithms import GridSearch, Search
from study._distributions import Distribution
from study._errors import plain
from study._schedulers import NoScheduler, Scheduler
from study._trial import trial_defaults
from study._values import member

__all__ = ["Metric", "Param", "Resources", "Scheduler", "Search", "StudyConfig"]


@dataclass(frozen=True)
class Param:
    """One swept parameter of ``space``.

    Attributes:
        name: The trial key it sets.
        dist: What it takes (one of :data:`study._distributions.DISTRIBUTIONS`).
        when: Conditions: the parameter is set only where every named trial key
            takes one of the listed values (``{optimizer: (xsam,)}``).
    """

    name: str
    dist: Distribution
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The distribution's study-file name (``grid``, ``loguniform``, …)."""
        return self.dist.kind

    @property
    def discrete(self) -> bool:
        """Whether the parameter takes a listed set of values (grid or choice)."""
        return self.dist.listed

    @property
    def values(self) -> tuple[Any, ...]:
        """The listed values (grid, choice); empty for a range."""
        return getattr(self.dist, "values", ())

    @property
    def high(self) -> Any:
        """Upper end of a range (None for listed values)."""
        return getattr(self.dist, "high", None)

    def active(self, context: Mapping[str, Any]) -> bool:
        """Whether the parameter's conditions hold for a (partial) trial config."""
        return all(
            key in context and member(context[key], allowed) for key, allowed in self.when.items()
        )

    def contains(self, value: Any) -> bool:
        """Whether a value can be drawn from this distribution."""
        return self.dist.contains(value)

    def describe(self) -> str:
        """Short text such as ``grid[1, 2, 5]`` or ``loguniform(0.01, 1.0)``."""
        return self.dist.describe()

    def describe_when(self) -> str:
        """The conditions as text (``optimizer=xsam``), empty when unconditional."""
        return ", ".join(
            f"{key}={'|'.join(plain(v) for v in allowed)}" for key, allowed in self.when.items()
        )

    def to_dict(self) -> dict[str, Any]:
        """The parameter as written in a study file."""
        out: dict[str, Any] = {self.kind: self.dist.body()}
        if self.when:
            out["when"] = {k: (v[0] if len(v) == 1 else list(v)) for k, v in self.when.items()}
        return out


@dataclass(frozen=True)
class Metric:
    """An objective: a metric of the metrics row and ``min``/``max``."""

    name: str
    mode: str


@dataclass(frozen=True)
class Resources:
    """Resources of one trial (``gpu`` may be fractional, e.g. 0.25)."""

    cpu: float = 1
    gpu: float = 0


@dataclass(frozen=True)
class StudyConfig:
    """A validated study.

    Attributes:
        name: Study name (the default run name and study-directory name).
        description: Free text.
        trial: Fixed trial settings (docs/contract.md keys).
        space: Swept parameters in file order.
        search: The search algorithm and its settings (a class of
            :data:`study._algorithms.ALGORITHMS`).
        metrics: One objective, or several (Optuna multi-objective).
        scheduler: The trial scheduler and its settings (a class of
            :data:`study._schedulers.SCHEDULERS`).
        resources: Per-trial resources.
        max_concurrent_trials: Cap on trials running at once (None: no cap).
        max_failures: Retries of a trial whose worker fails (-1: unlimited).
        storage: Root of study directories: a local path or a URI.
        checkpoint_every: Epochs between trial checkpoints (0: only at the end).
        keep_checkpoints: Checkpoints kept per trial (None: all).
        source: File the study was read from, if any.
    """

    name: str
    description: str | None = None
    trial: Mapping[str, Any] = field(default_factory=dict)
    space: tuple[Param, ...] = ()
    search: Search = field(default_factory=GridSearch)
    metrics: tuple[Metric, ...] = (Metric("test_acc", "max"),)
    scheduler: Scheduler = field(default_factory=NoScheduler)
    resources: Resources = field(default_factory=Resources)
    max_concurrent_trials: int | None = None
    max_failures: int = 2
    storage: str = "./studies"
    checkpoint_every: int = 1
    keep_checkpoints: int | None = 2
    source: str | None = field(default=None, compare=False)

    @property
    def multi_objective(self) -> bool:
        """Whether there are several objectives."""
        return len(self.metrics) > 1

    @property
    def metric(self) -> str | list[str]:
        """Metric name (a list when multi-objective), as Ray Tune/Optuna take it."""
        names = [m.name for m in self.metrics]
        return names if self.multi_objective else names[0]

    @property
    def mode(self) -> str | list[str]:
        """``min``/``max`` (a list when multi-objective)."""
        modes = [m.mode for m in self.metrics]
        return modes if self.multi_objective else modes[0]

    @property
    def params(self) -> dict[str, Param]:
        """Swept parameters by name."""
        return {p.name: p for p in self.space}

    @property
    def conditional(self) -> bool:
        """Whether some swept parameter has a ``when`` condition."""
        return any(p.when for p in self.space)

    def trial_settings(self) -> dict[str, Any]:
        """The fixed part of every trial config (the ``trial`` section and
        ``checkpoint_every``)."""
        return {**self.trial, "checkpoint_every": self.checkpoint_every}

    def condition_context(self) -> dict[str, Any]:
        """Value of each trial key where no swept parameter sets it: the fixed
        settings over the trial defaults (what ``when`` conditions look at)."""
        return {**trial_defaults(), **self.trial_settings()}

    def effective_concurrency(self) -> int | None:
        """Trials in flight at most (the smaller of the two caps; None: no cap)."""
        caps = [c for c in (self.max_concurrent_trials, self.search.max_concurrent) if c]
        return min(caps) if caps else None

    def to_dict(self) -> dict[str, Any]:
        """The study as a study file (defaults filled in); :func:`parse_study`
        reads it back to an equal config."""
        metrics = [{"name": m.name, "mode": m.mode} for m in self.metrics]
        out: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            out["description"] = self.description
        out.update(
            trial=dict(self.trial),
            space={p.name: p.to_dict() for p in self.space},
            search=self.search.to_dict(),
            metric=metrics if self.multi_objective else metrics[0],
            scheduler=self.scheduler.to_dict(),
            resources={"cpu": self.resources.cpu, "gpu": self.resources.gpu},
            max_concurrent_trials=self.max_concurrent_trials,
            max_failures=self.max_failures,
            storage=self.storage,
            checkpoint_every=self.checkpoint_every,
            keep_checkpoints=self.keep_checkpoints,
        )
        return out
