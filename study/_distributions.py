"""The distributions of a swept parameter, one small class per kind.

A ``space`` entry of a study file names one distribution by its key::

    steps: {grid: [1, 2, 5]}          # every value, one trial each
    optimizer: {choice: [sam, xsam]}  # one value drawn per trial
    rho: {loguniform: [0.01, 1.0]}
    k: {randint: [1, 10]}             # both ends included
    lr: {quniform: [0.01, 0.1, 0.01]} # [lo, hi, q]

Each class knows how to validate its body (:meth:`Distribution.parse`), its
Ray Tune domain, its Optuna suggestion and distribution, a random draw, its
description, and whether a value belongs to it. :data:`DISTRIBUTIONS` maps
the study-file name to the class; :func:`parse_distribution` reads a whole
entry. Torch- and Ray-free: Ray and Optuna are imported inside the methods
that return their objects.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from study._errors import StudyConfigError, check_keys, show_value
from study._values import is_int, is_number, member, same

if TYPE_CHECKING:  # the algorithms import this module: which kinds each searches is theirs
    from study._algorithms import Search

__all__ = [
    "DISTRIBUTIONS",
    "Choice",
    "Distribution",
    "Grid",
    "LogUniform",
    "QUniform",
    "RandInt",
    "Uniform",
    "parse_distribution",
]

#: Key of a ``space`` entry besides the distribution's: the entry's conditions.
WHEN = "when"


@dataclass(frozen=True)
class Distribution:
    """What one swept parameter takes.

    Class attributes:
        kind: The study-file name (``loguniform``).
        exhaustive: Every value becomes a trial (a grid) instead of being drawn.
        listed: Its values are listed (grid, choice): a condition may name them.
        log: Drawn on a log scale.
    """

    kind: ClassVar[str] = ""
    exhaustive: ClassVar[bool] = False
    listed: ClassVar[bool] = False
    log: ClassVar[bool] = False

    @classmethod
    def parse(cls, body: Any, where: str, algorithm: type[Search] | None = None) -> Distribution:
        """Validate the body of a study-file entry (``[0.01, 1.0]``) and build the distribution.

        Args:
            body: The value under the distribution's key.
            where: Dotted path of the body, for errors (``space.rho.loguniform``).
            algorithm: The study's search algorithm (some refuse more values, see
                :meth:`study._algorithms.Search.check_listed_value`).

        Raises:
            StudyConfigError: The body is not valid for this kind.
        """
        raise NotImplementedError

    def body(self) -> Any:
        """The body as written in a study file (``[0.01, 1.0]``)."""
        raise NotImplementedError

    def contains(self, value: Any) -> bool:
        """Whether ``value`` can come out of this distribution."""
        raise NotImplementedError

    def describe(self) -> str:
        """Short text such as ``grid[1, 2, 5]`` or ``loguniform(0.01, 1.0)``."""
        raise NotImplementedError

    def value_type(self) -> str:
        """``categorical``, ``int`` or ``float``: the type of the values it takes."""
        raise NotImplementedError

    def tune_domain(self) -> Any:
        """The Ray Tune search-space object (``tune.loguniform(lo, hi)``)."""
        raise NotImplementedError

    def optuna_distribution(self) -> Any:
        """The ``optuna.distributions`` object over the same values."""
        raise NotImplementedError

    def suggest(self, trial: Any, name: str) -> Any:
        """Ask an ``optuna.Trial`` for a value of parameter ``name``."""
        raise NotImplementedError

    def draw(self, rng: random.Random) -> Any:
        """One random value."""
        raise NotImplementedError

    def probe_values(self) -> list[tuple[int | None, Any]]:
        """Values that stand for the distribution when checked against the trial
        validator, each with its index in the body (None: a value inside it)."""
        raise NotImplementedError


# --------------------------------------------------------------------------
# listed values
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Listed(Distribution):
    values: tuple[Any, ...] = ()
    listed: ClassVar[bool] = True

    @classmethod
    def parse(cls, body: Any, where: str, algorithm: type[Search] | None = None) -> Distribution:
        if not isinstance(body, list) or not body:
            raise StudyConfigError(where, body, "a non-empty list of values")
        for i, v in enumerate(body):
            if any(same(v, u) for u in body[:i]):
                raise StudyConfigError(
                    f"{where}[{i}]", v, "each value once", problem="duplicate value"
                )
            if algorithm is not None:
                algorithm.check_listed_value(v, f"{where}[{i}]")
        return cls(values=tuple(body))

    def body(self) -> Any:
        return list(self.values)

    def contains(self, value: Any) -> bool:
        return member(value, self.values)

    def describe(self) -> str:
        return f"{self.kind}{show_value(list(self.values))}"

    def value_type(self) -> str:
        if not all(is_number(v) for v in self.values):
            return "categorical"
        return "int" if all(is_int(v) for v in self.values) else "float"

    def optuna_distribution(self) -> Any:
        from optuna.distributions import CategoricalDistribution

        return CategoricalDistribution(list(self.values))

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.values))

    def draw(self, rng: random.Random) -> Any:
        return rng.choice(self.values)

    def probe_values(self) -> list[tuple[int | None, Any]]:
        return list(enumerate(self.values))


@dataclass(frozen=True)
class Grid(_Listed):
    """``{grid: [v, ...]}``: every value, one trial each (grid and random search)."""

    kind: ClassVar[str] = "grid"
    exhaustive: ClassVar[bool] = True

    def tune_domain(self) -> Any:
        from ray import tune

        return tune.grid_search(list(self.values))

    def suggest(self, trial: Any, name: str) -> Any:
        raise ValueError(f"Optuna cannot take a grid (space.{name})")


@dataclass(frozen=True)
class Choice(_Listed):
    """``{choice: [v, ...]}``: one value drawn per trial."""

    kind: ClassVar[str] = "choice"

    def tune_domain(self) -> Any:
        from ray import tune

        return tune.choice(list(self.values))


# --------------------------------------------------------------------------
# ranges
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Range(Distribution):
    low: float = 0.0
    high: float = 1.0
    #: ``[lo, hi]`` as the message spells the body.
    form: ClassVar[str] = "[lo, hi]"

    @classmethod
    def parse(cls, body: Any, where: str, algorithm: type[Search] | None = None) -> Distribution:
        size = cls.form.count(",") + 1
        if not isinstance(body, list) or len(body) != size:
            raise StudyConfigError(where, body, f"a list {cls.form}")
        for i, v in enumerate(body):
            if not cls._number_ok(v):
                raise StudyConfigError(f"{where}[{i}]", v, cls._number_allowed())
        if body[0] >= body[1]:
            raise StudyConfigError(where, body, f"{cls.form} with lo < hi")
        return cls._build(body, where)

    @classmethod
    def _number_ok(cls, v: Any) -> bool:
        return is_number(v) and math.isfinite(v)

    @classmethod
    def _number_allowed(cls) -> str:
        return "a finite number"

    @classmethod
    def _build(cls, body: list[Any], where: str) -> Distribution:
        return cls(low=body[0], high=body[1])

    def body(self) -> Any:
        return [self.low, self.high]

    def contains(self, value: Any) -> bool:
        return is_number(value) and self.low <= value <= self.high

    def describe(self) -> str:
        return f"{self.kind}({self.low}, {self.high})"

    def value_type(self) -> str:
        return "float"

    def optuna_distribution(self) -> Any:
        from optuna.distributions import FloatDistribution

        return FloatDistribution(self.low, self.high, log=self.log)

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def probe_values(self) -> list[tuple[int | None, Any]]:
        # Both ends, and a float strictly inside (not a whole number): it catches
        # a continuous distribution over an integer key.
        lo, hi = (math.log(self.low), math.log(self.high)) if self.log else (self.low, self.high)
        inner = lo + 0.3819660113 * (hi - lo)
        return [(0, self.low), (1, self.high), (None, math.exp(inner) if self.log else inner)]


@dataclass(frozen=True)
class Uniform(_Range):
    """``{uniform: [lo, hi]}``: a float drawn uniformly."""

    kind: ClassVar[str] = "uniform"

    def tune_domain(self) -> Any:
        from ray import tune

        return tune.uniform(self.low, self.high)

    def draw(self, rng: random.Random) -> Any:
        return rng.uniform(self.low, self.high)


@dataclass(frozen=True)
class LogUniform(_Range):
    """``{loguniform: [lo, hi]}``: a float drawn uniformly in log space (lo > 0)."""

    kind: ClassVar[str] = "loguniform"
    log: ClassVar[bool] = True

    @classmethod
    def _build(cls, body: list[Any], where: str) -> Distribution:
        if body[0] <= 0:
            raise StudyConfigError(f"{where}[0]", body[0], "a number > 0 (loguniform)")
        return cls(low=body[0], high=body[1])

    def tune_domain(self) -> Any:
        from ray import tune

        return tune.loguniform(self.low, self.high)

    def draw(self, rng: random.Random) -> Any:
        return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))


@dataclass(frozen=True)
class RandInt(_Range):
    """``{randint: [lo, hi]}``: an integer, both ends included (as Optuna's ``suggest_int``)."""

    kind: ClassVar[str] = "randint"

    @classmethod
    def _number_ok(cls, v: Any) -> bool:
        return is_int(v)

    @classmethod
    def _number_allowed(cls) -> str:
        return "an integer"

    def contains(self, value: Any) -> bool:
        return is_int(value) and self.low <= value <= self.high

    def value_type(self) -> str:
        return "int"

    def tune_domain(self) -> Any:
        from ray import tune

        return tune.randint(self.low, self.high + 1)  # Tune's upper end is exclusive

    def optuna_distribution(self) -> Any:
        from optuna.distributions import IntDistribution

        return IntDistribution(int(self.low), int(self.high))

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_int(name, self.low, self.high)

    def draw(self, rng: random.Random) -> Any:
        return rng.randint(int(self.low), int(self.high))

    def probe_values(self) -> list[tuple[int | None, Any]]:
        return [(0, self.low), (1, self.high)]


@dataclass(frozen=True)
class QUniform(_Range):
    """``{quniform: [lo, hi, q]}``: a float on the lattice lo + k·q (0 < q ≤ hi − lo)."""

    q: float = 1.0
    kind: ClassVar[str] = "quniform"
    form: ClassVar[str] = "[lo, hi, q]"

    @classmethod
    def _build(cls, body: list[Any], where: str) -> Distribution:
        low, high, q = body
        if not q > 0 or q > high - low:
            raise StudyConfigError(
                f"{where}[2]", q, f"a step q with 0 < q <= hi - lo = {high - low}"
            )
        return cls(low=low, high=high, q=q)

    def body(self) -> Any:
        return [self.low, self.high, self.q]

    def describe(self) -> str:
        return f"quniform({self.low}, {self.high}, q={self.q})"

    def tune_domain(self) -> Any:
        from ray import tune

        return tune.quniform(self.low, self.high, self.q)

    def optuna_distribution(self) -> Any:
        from optuna.distributions import FloatDistribution

        return FloatDistribution(self.low, self.high, step=self.q)

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_float(name, self.low, self.high, step=self.q)

    def draw(self, rng: random.Random) -> Any:
        value = round(rng.uniform(self.low, self.high) / self.q) * self.q
        return round(min(max(value, self.low), self.high), 12)

    def probe_values(self) -> list[tuple[int | None, Any]]:
        # Both ends and a value on the q-lattice: what Ray and Optuna draw (as a float).
        steps = math.floor((self.high - self.low) / self.q / 2)
        return [(0, self.low), (1, self.high), (None, float(self.low + steps * self.q))]


#: Study-file name → distribution class.
DISTRIBUTIONS: dict[str, type[Distribution]] = {
    cls.kind: cls for cls in (Grid, Choice, Uniform, LogUniform, RandInt, QUniform)
}


def parse_distribution(
    spec: Any, where: str, algorithm: type[Search] | None = None
) -> tuple[Distribution, Any]:
    """Read one ``space`` entry: its distribution, and its raw ``when`` (None if absent).

    Args:
        spec: The entry (``{loguniform: [0.01, 1.0], when: {optimizer: xsam}}``).
        where: Dotted path of the entry (``space.rho``).
        algorithm: The study's search algorithm (a class of
            :data:`study._algorithms.ALGORITHMS`); None accepts every kind.

    Returns:
        The distribution and the entry's ``when`` value as written.

    Raises:
        StudyConfigError: Not one known distribution, a body that is not valid,
            or a kind the algorithm cannot search.
    """
    shape = f"a mapping with one of {', '.join(DISTRIBUTIONS)} (and optionally {WHEN})"
    if not isinstance(spec, Mapping):
        raise StudyConfigError(where, spec, shape)
    check_keys(spec, where, (*DISTRIBUTIONS, WHEN))
    kinds = [k for k in spec if k in DISTRIBUTIONS]
    if len(kinds) != 1:
        raise StudyConfigError(where, spec, shape)
    cls = DISTRIBUTIONS[kinds[0]]
    if algorithm is not None and not algorithm.accepts(cls):
        raise algorithm.refuse(cls, where)
    return cls.parse(spec[cls.kind], f"{where}.{cls.kind}", algorithm), spec.get(WHEN)
