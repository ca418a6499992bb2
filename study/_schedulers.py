"""Trial schedulers, one small class per ``scheduler.name``.

A study file's ``scheduler`` section names one, with its own keys::

    scheduler: {name: asha, grace_period: 2, reduction_factor: 3}

Each class knows its keys and their checks (:meth:`Scheduler.parse`), how it
is written back (:meth:`Scheduler.to_dict`, also ``study.json``'s
``scheduler``), its one-line description and the Ray Tune scheduler it
builds. :data:`SCHEDULERS` maps the name to the class; the validator, its
messages and the dry run take the allowed names from it. Ray-free: Ray is
imported inside :meth:`Scheduler.build`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from study._checks import MAX_EPOCHS, check_int, check_optional_int
from study._errors import StudyConfigError
from study._values import is_number

__all__ = ["ASHA", "SCHEDULERS", "NoScheduler", "Scheduler"]


@dataclass(frozen=True)
class Scheduler:
    """A trial scheduler and its settings (the validated ``scheduler`` section).

    Class attributes:
        name: The study-file name (``scheduler.name``).
        title: The name in messages (``ASHA``).
        keys: Its keys besides ``name``, in the order they are written back.
        multi_objective: Whether it works with several objectives.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    keys: ClassVar[tuple[str, ...]] = ()
    multi_objective: ClassVar[bool] = True

    @classmethod
    def parse(cls, raw: Mapping[str, Any], *, max_epochs: int) -> Scheduler:
        """Check its keys of the ``scheduler`` section and build it.

        The validator has checked ``name``, that no key outside :attr:`keys`
        is there, and that a single-objective scheduler has one objective.

        Args:
            raw: The ``scheduler`` section.
            max_epochs: The most epochs a trial of the study runs.

        Raises:
            StudyConfigError: A key's value is not valid.
        """
        return cls()

    def settings(self) -> dict[str, Any]:
        """Its keys and their values (defaults filled in)."""
        return {key: getattr(self, key) for key in self.keys}

    def to_dict(self) -> dict[str, Any]:
        """The section as written in a study file (and in ``study.json``)."""
        return {"name": self.name, **self.settings()}

    def describe(self) -> str:
        """One line for the dry run's header: the name and its settings."""
        settings = ", ".join(f"{key} {value}" for key, value in self.settings().items())
        return f"{self.name} ({settings})" if settings else self.name

    def build(self) -> Any:
        """The Ray Tune ``TrialScheduler`` (None: Ray's first-in-first-out)."""
        raise NotImplementedError


@dataclass(frozen=True)
class NoScheduler(Scheduler):
    """``none``: every trial runs to its end (Ray's FIFO scheduler)."""

    name: ClassVar[str] = "none"
    title: ClassVar[str] = "none"

    def build(self) -> Any:
        return None


@dataclass(frozen=True)
class ASHA(Scheduler):
    """``asha``: asynchronous successive halving, one rung step per epoch.

    Attributes:
        grace_period: Epochs a trial runs before it can be stopped.
        reduction_factor: 1/fraction of the trials kept at each rung.
        max_t: Epochs of the last rung (default: the study's most epochs).
    """

    grace_period: int = 1
    reduction_factor: float = 3
    max_t: int | None = None
    name: ClassVar[str] = "asha"
    title: ClassVar[str] = "ASHA"
    keys: ClassVar[tuple[str, ...]] = ("grace_period", "reduction_factor", "max_t")
    multi_objective: ClassVar[bool] = False

    @classmethod
    def parse(cls, raw: Mapping[str, Any], *, max_epochs: int) -> Scheduler:
        grace = check_int(
            raw.get("grace_period", 1), "scheduler.grace_period", minimum=1, maximum=MAX_EPOCHS
        )
        factor = raw.get("reduction_factor", 3)
        if not is_number(factor) or not 1 < factor <= 1000:
            raise StudyConfigError("scheduler.reduction_factor", factor, "a number > 1 and <= 1000")
        max_t = check_optional_int(raw.get("max_t"), "scheduler.max_t", 1, MAX_EPOCHS)
        if max_t is None:
            max_t = max_epochs
        if grace > max_t:
            raise StudyConfigError(
                "scheduler.grace_period", grace, f"at most max_t = {max_t} epochs"
            )
        return cls(grace, factor, max_t)

    def describe(self) -> str:
        return (
            f"{self.name} (grace {self.grace_period}, reduction {self.reduction_factor}"
            f", max_t {self.max_t})"
        )

    def build(self) -> Any:
        from ray.tune.schedulers import ASHAScheduler

        # One report per epoch: training_iteration counts epochs.
        return ASHAScheduler(
            time_attr="training_iteration",
            max_t=self.max_t,
            grace_period=self.grace_period,
            reduction_factor=self.reduction_factor,
        )


#: Study-file name → scheduler class.
SCHEDULERS: dict[str, type[Scheduler]] = {cls.name: cls for cls in (NoScheduler, ASHA)}
