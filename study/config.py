"""Study YAML → validated :class:`StudyConfig` objects.

A study file names the fixed trial settings, the swept parameters and how to
search them, what to optimise, the scheduler, the resources per trial and
where results go (see ``configs/`` for examples)::

    name: degradation
    trial: {dataset: mnist1d, model: cnn1d, epochs: 40}
    space:
      optimizer: {grid: [sam, xsam]}
      steps: {grid: [1, 2, 5, 10]}
      rho_max: {grid: [0.3, 0.6], when: {optimizer: xsam}}
    search: {algorithm: grid}
    metric: {name: test_acc, mode: max}

Everything is checked before anything starts; the first problem found raises
:class:`StudyConfigError` naming the field path, the value and what is allowed.
Trial keys and their values are checked by the trial layer's validator
(``trainables.loop.validate_trial_config``), so there is one source of truth.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study._errors import StudyConfigError, show_value
from study._trial import metric_names, trial_defaults, trial_keys, trial_validator
from study._yaml import load_yaml

__all__ = [
    "DISTRIBUTIONS",
    "SAMPLERS",
    "Metric",
    "Param",
    "Resources",
    "Scheduler",
    "Search",
    "StudyConfig",
    "apply_overrides",
    "load_study",
    "parse_study",
]

#: Distributions of a swept parameter, as written in ``space``.
DISTRIBUTIONS: tuple[str, ...] = ("grid", "choice", "uniform", "loguniform", "randint", "quniform")
_DISCRETE = ("grid", "choice")
_RANGES = ("uniform", "loguniform", "randint", "quniform")

ALGORITHMS: tuple[str, ...] = ("grid", "random", "optuna")
#: Optuna samplers by study-file name; the second item says whether the sampler
#: handles several objectives.
SAMPLERS: dict[str, bool] = {
    "tpe": True,
    "random": True,
    "qmc": True,
    "gp": True,
    "nsgaii": True,
    "nsgaiii": True,
    "cmaes": False,
}
SCHEDULERS: tuple[str, ...] = ("none", "asha")
_URI_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss", "az", "file", "memory")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TOP_KEYS = (
    "name",
    "description",
    "trial",
    "space",
    "search",
    "metric",
    "scheduler",
    "resources",
    "max_concurrent_trials",
    "max_failures",
    "storage",
    "checkpoint_every",
    "keep_checkpoints",
)
_SEARCH_KEYS = (
    "algorithm",
    "num_samples",
    "seed",
    "sampler",
    "points_to_evaluate",
    "max_concurrent",
)
_SCHEDULER_KEYS = {"none": ("name",), "asha": ("name", "grace_period", "reduction_factor", "max_t")}
_DEFAULT_NUM_SAMPLES = {"grid": 1, "random": 10, "optuna": 20}
_DEFAULT_OPTUNA_CONCURRENCY = 4
# Grids larger than this are still run, but only their first combinations are
# checked one by one against the trial validator before the start.
_MAX_CHECKED_COMBINATIONS = 5000

#: Builds the study error for a trial-validator error (field, value, allowed).
ErrorFactory = Callable[[str | None, Any, str | None], StudyConfigError]


# --------------------------------------------------------------------------
# config objects
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One swept parameter of ``space``.

    Attributes:
        name: The trial key it sets.
        kind: One of :data:`DISTRIBUTIONS`.
        values: The values of ``grid``/``choice``.
        low: Lower bound of a range (inclusive).
        high: Upper bound (inclusive for ``randint``, like Optuna's ``suggest_int``).
        q: Step of ``quniform``.
        when: Conditions: the parameter is set only where every named trial key
            takes one of the listed values (``{optimizer: (xsam,)}``).
    """

    name: str
    kind: str
    values: tuple[Any, ...] = ()
    low: float | int | None = None
    high: float | int | None = None
    q: float | None = None
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    @property
    def discrete(self) -> bool:
        """Whether the parameter takes a listed set of values (grid or choice)."""
        return self.kind in _DISCRETE

    def active(self, context: Mapping[str, Any]) -> bool:
        """Whether the parameter's conditions hold for a (partial) trial config."""
        return all(
            key in context and _member(context[key], allowed) for key, allowed in self.when.items()
        )

    def contains(self, value: Any) -> bool:
        """Whether a value can be drawn from this distribution."""
        if self.discrete:
            return _member(value, self.values)
        if self.kind == "randint":
            return _is_int(value) and self.low <= value <= self.high
        return _is_number(value) and self.low <= value <= self.high

    def describe(self) -> str:
        """Short text such as ``grid[1, 2, 5]`` or ``loguniform(0.01, 1.0)``."""
        if self.discrete:
            return f"{self.kind}{show_value(list(self.values))}"
        if self.kind == "quniform":
            return f"quniform({self.low}, {self.high}, q={self.q})"
        return f"{self.kind}({self.low}, {self.high})"

    def describe_when(self) -> str:
        """The conditions as text (``optimizer=xsam``), empty when unconditional."""
        return ", ".join(
            f"{key}={'|'.join(_plain(v) for v in allowed)}" for key, allowed in self.when.items()
        )

    def to_dict(self) -> dict[str, Any]:
        """The parameter as written in a study file."""
        if self.discrete:
            out: dict[str, Any] = {self.kind: list(self.values)}
        elif self.kind == "quniform":
            out = {self.kind: [self.low, self.high, self.q]}
        else:
            out = {self.kind: [self.low, self.high]}
        if self.when:
            out["when"] = {k: (v[0] if len(v) == 1 else list(v)) for k, v in self.when.items()}
        return out


@dataclass(frozen=True)
class Metric:
    """An objective: a metric of the metrics row and ``min``/``max``."""

    name: str
    mode: str


@dataclass(frozen=True)
class Search:
    """How the space is searched.

    Attributes:
        algorithm: ``grid``, ``random`` or ``optuna``.
        num_samples: Repetitions of the grid (grid) or number of trials.
        seed: Seed of the random draws / of the Optuna sampler.
        sampler: Optuna sampler name (optuna only).
        points_to_evaluate: Configurations tried first (random, optuna).
        max_concurrent: Trials the searcher keeps in flight at most.
    """

    algorithm: str = "grid"
    num_samples: int = 1
    seed: int | None = None
    sampler: str | None = None
    points_to_evaluate: tuple[Mapping[str, Any], ...] = ()
    max_concurrent: int | None = None


@dataclass(frozen=True)
class Scheduler:
    """Trial scheduler: ``none`` (FIFO) or ``asha`` (early stopping by epoch)."""

    name: str = "none"
    grace_period: int = 1
    reduction_factor: float = 3
    max_t: int | None = None


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
        search: Search algorithm settings.
        metrics: One objective, or several (Optuna multi-objective).
        scheduler: Trial scheduler.
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
    search: Search = field(default_factory=Search)
    metrics: tuple[Metric, ...] = (Metric("test_acc", "max"),)
    scheduler: Scheduler = field(default_factory=Scheduler)
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
        search: dict[str, Any] = {
            "algorithm": self.search.algorithm,
            "num_samples": self.search.num_samples,
            "seed": self.search.seed,
        }
        if self.search.algorithm == "optuna":
            search["sampler"] = self.search.sampler
        if self.search.points_to_evaluate:
            search["points_to_evaluate"] = [dict(p) for p in self.search.points_to_evaluate]
        search["max_concurrent"] = self.search.max_concurrent
        scheduler: dict[str, Any] = {"name": self.scheduler.name}
        if self.scheduler.name == "asha":
            scheduler.update(
                grace_period=self.scheduler.grace_period,
                reduction_factor=self.scheduler.reduction_factor,
                max_t=self.scheduler.max_t,
            )
        metrics = [{"name": m.name, "mode": m.mode} for m in self.metrics]
        out: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            out["description"] = self.description
        out.update(
            trial=dict(self.trial),
            space={p.name: p.to_dict() for p in self.space},
            search=search,
            metric=metrics if self.multi_objective else metrics[0],
            scheduler=scheduler,
            resources={"cpu": self.resources.cpu, "gpu": self.resources.gpu},
            max_concurrent_trials=self.max_concurrent_trials,
            max_failures=self.max_failures,
            storage=self.storage,
            checkpoint_every=self.checkpoint_every,
            keep_checkpoints=self.keep_checkpoints,
        )
        return out


# --------------------------------------------------------------------------
# reading and overrides
# --------------------------------------------------------------------------


def load_study(path: str | os.PathLike[str], overrides: Iterable[str] = ()) -> StudyConfig:
    """Read, override and validate a study file.

    Args:
        path: The study YAML file.
        overrides: ``KEY=VALUE`` strings (``trial.epochs=5``), applied in order
            before validation; VALUE is parsed as YAML.

    Returns:
        The validated study.

    Raises:
        FileNotFoundError: The file does not exist.
        StudyConfigError: The file or an override is invalid.
    """
    path = Path(path)
    if path.is_dir():
        raise StudyConfigError(str(path), problem="is a directory", allowed="a study YAML file")
    text = path.read_text(encoding="utf-8")
    data = load_yaml(text, source=str(path))
    data = apply_overrides(data, overrides)
    return parse_study(data, source=str(path))


def apply_overrides(data: Any, overrides: Iterable[str]) -> Any:
    """Apply ``--set`` style overrides to a parsed study file.

    A key is a dotted path (``trial.epochs``, ``space.steps.grid``); a list
    element is addressed by its index (``space.steps.grid.0`` or
    ``space.steps.grid[0]``). Missing mappings on the way are created.

    Args:
        data: The parsed study file (not modified).
        overrides: ``KEY=VALUE`` strings; VALUE is parsed as YAML
            (``5`` → int, ``[1, 2]`` → list, ``null`` → None).

    Returns:
        A new, overridden copy.

    Raises:
        StudyConfigError: An override is malformed or its path cannot be set.
    """
    import copy

    data = copy.deepcopy(data) if data is not None else {}
    for item in overrides:
        where = f"--set {item}"
        key, sep, text = item.partition("=")
        key = re.sub(r"\[(\d+)\]", r".\1", key.strip())
        parts = key.split(".")
        if not sep or not key or any(not p for p in parts):
            raise StudyConfigError(
                where,
                problem="malformed override",
                allowed="KEY=VALUE with a dotted KEY such as trial.epochs=5",
            )
        value = load_yaml(text, source=where)
        if not isinstance(data, dict):
            raise StudyConfigError(where, problem="the study file is not a mapping")
        node: Any = data
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            here = ".".join(parts[: depth + 1])
            if isinstance(node, dict):
                if last:
                    node[part] = value
                elif not isinstance(node.get(part), (dict, list)):
                    if part in node and node[part] is not None:
                        raise StudyConfigError(
                            where,
                            problem=f"{here} is {show_value(node[part])}, not a mapping",
                        )
                    node[part] = {}
                node = node[part] if not last else node
            elif isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise StudyConfigError(
                        where,
                        problem=f"{here}: no such list element",
                        allowed=f"an index 0..{len(node) - 1}",
                    )
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            else:
                raise StudyConfigError(where, problem=f"{'.'.join(parts[:depth])} is not a mapping")
    return data


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------


def parse_study(data: Any, *, source: str | None = None) -> StudyConfig:
    """Validate a parsed study file.

    Args:
        data: The mapping read from YAML (overrides already applied).
        source: File name, kept on the config and used in messages.

    Returns:
        The validated study.

    Raises:
        StudyConfigError: Naming the first invalid field, its value and what
            is allowed.
    """
    if not isinstance(data, Mapping):
        raise StudyConfigError(source or "study", data, "a mapping of study settings")
    for key in data:
        if key not in _TOP_KEYS:
            raise StudyConfigError(
                str(key), problem="unknown key" + _hint(key, _TOP_KEYS), allowed=_one_of(_TOP_KEYS)
            )

    if "name" not in data:
        raise StudyConfigError("name", allowed="a study name such as quickstart")
    name = data["name"]
    if not isinstance(name, str) or not _NAME.match(name):
        raise StudyConfigError(
            "name", name, "letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        raise StudyConfigError("description", description, "a string")

    trial = _parse_trial(data.get("trial"))
    search_raw = _mapping(data.get("search"), "search")
    algorithm = search_raw.get("algorithm", "grid")
    if algorithm not in ALGORITHMS:
        raise StudyConfigError("search.algorithm", algorithm, _one_of(ALGORITHMS))
    space = _parse_space(data.get("space"), trial, algorithm)
    metrics = _parse_metrics(data.get("metric"), algorithm)
    search = _parse_search(search_raw, algorithm, space, len(metrics) > 1)
    checkpoint_every = _int(data.get("checkpoint_every", 1), "checkpoint_every", minimum=0)
    scheduler = _parse_scheduler(data.get("scheduler"), metrics, trial, space)
    resources = _parse_resources(data.get("resources"), trial)
    max_concurrent = _optional_int(data.get("max_concurrent_trials"), "max_concurrent_trials", 1)
    max_failures = _int(data.get("max_failures", 2), "max_failures", minimum=-1)
    storage = _parse_storage(data.get("storage", "./studies"))
    keep = _optional_int(data.get("keep_checkpoints", 2), "keep_checkpoints", 1)

    cfg = StudyConfig(
        name=name,
        description=description,
        trial=trial,
        space=space,
        search=search,
        metrics=metrics,
        scheduler=scheduler,
        resources=resources,
        max_concurrent_trials=max_concurrent,
        max_failures=max_failures,
        storage=storage,
        checkpoint_every=checkpoint_every,
        keep_checkpoints=keep,
        source=source,
    )
    _check_combinations(cfg)
    return cfg


def _parse_trial(raw: Any) -> dict[str, Any]:
    trial = dict(_mapping(raw, "trial"))
    keys = trial_keys()
    for key in trial:
        if key == "checkpoint_every":
            raise StudyConfigError(
                "trial.checkpoint_every",
                problem="set checkpoint_every at the top level of the study file",
            )
        if key not in keys:
            raise _unknown_trial_key(f"trial.{key}", key, keys)
    _validate_trial(trial, lambda f, v, a: StudyConfigError(f"trial.{f}" if f else "trial", v, a))
    return trial


def _parse_space(raw: Any, trial: Mapping[str, Any], algorithm: str) -> tuple[Param, ...]:
    space_raw = _mapping(raw, "space")
    keys = trial_keys()
    params: list[Param] = []
    for name, spec in space_raw.items():
        where = f"space.{name}"
        if name == "checkpoint_every":
            raise StudyConfigError(where, problem="checkpoint_every cannot be swept")
        if name not in keys:
            raise _unknown_trial_key(where, name, keys)
        params.append(_parse_param(name, spec, algorithm))
    by_name = {p.name: p for p in params}

    # Conditions: their keys, values and acyclicity, now that all names are known.
    for p in params:
        for key, allowed in p.when.items():
            where = f"space.{p.name}.when.{key}"
            if key == p.name:
                raise StudyConfigError(where, problem="a parameter cannot depend on itself")
            if key not in keys:
                raise _unknown_trial_key(where, key, keys)
            # Each value must be a valid value of the key (catches typos) ...
            for i, v in enumerate(allowed):
                at = f"{where}[{i}]" if len(allowed) > 1 else where
                _validate_trial({**trial, key: v}, _at(at, {key: v}))
            # ... and one of them must be possible, else the parameter is dead.
            if key in by_name:
                ref = by_name[key]
                if not ref.discrete:
                    raise StudyConfigError(
                        where,
                        problem=f"space.{key} is {ref.kind}; a condition needs a grid or choice",
                    )
                possible = ref.values
            else:
                possible = ({**trial_defaults(), **trial}[key],)
            if not any(_member(v, possible) for v in allowed):
                source = f"space.{key} takes" if key in by_name else f"{key} is fixed to"
                raise StudyConfigError(
                    where,
                    _unwrap(allowed),
                    f"{_one_of(possible)} ({source} {', '.join(_plain(v) for v in possible)})",
                    problem=f"never holds, so space.{p.name} would never be set",
                )
        if not p.when and p.name in trial:
            raise StudyConfigError(
                f"trial.{p.name}",
                trial[p.name],
                "no fixed value for a swept key (remove it from trial or from space)",
                problem=f"space.{p.name} sweeps it too, and unconditionally",
            )
    _check_cycles(params)

    # Every value (or range end) must be a valid trial value.
    for p in params:
        context = dict(trial)
        for key, allowed in p.when.items():
            context[key] = allowed[0]
        for index, value in _probe_values(p):
            where = f"space.{p.name}.{p.kind}" + (f"[{index}]" if index is not None else "")
            try:
                _validate_trial({**context, p.name: value}, _at(where, {p.name: value}))
            except StudyConfigError as exc:
                if index is not None:
                    raise
                raise StudyConfigError(
                    where,
                    p.to_dict()[p.kind],
                    f"{exc.allowed} (this distribution draws floats such as {value:.4g}; "
                    "randint draws integers)",
                ) from None
    return tuple(params)


def _parse_param(name: str, spec: Any, algorithm: str) -> Param:
    where = f"space.{name}"
    shape = f"a mapping with one of {', '.join(DISTRIBUTIONS)} (and optionally when)"
    if not isinstance(spec, Mapping):
        raise StudyConfigError(where, spec, shape)
    kinds = [k for k in spec if k in DISTRIBUTIONS]
    for key in spec:
        if key not in DISTRIBUTIONS and key != "when":
            raise StudyConfigError(
                f"{where}.{key}",
                problem="unknown key" + _hint(key, (*DISTRIBUTIONS, "when")),
                allowed=_one_of((*DISTRIBUTIONS, "when")),
            )
    if len(kinds) != 1:
        raise StudyConfigError(where, spec, shape)
    kind = kinds[0]
    body = spec[kind]
    at = f"{where}.{kind}"

    if algorithm == "grid" and kind != "grid":
        raise StudyConfigError(
            where,
            problem=f"search.algorithm grid needs {{grid: [...]}}, got {kind}",
            allowed="grid (or use algorithm random or optuna)",
        )
    if algorithm == "optuna" and kind == "grid":
        raise StudyConfigError(
            at,
            problem="search.algorithm optuna cannot take a grid",
            allowed="choice, uniform, loguniform, randint or quniform",
        )

    when = _parse_when(spec.get("when"), f"{where}.when")
    if kind in _DISCRETE:
        if not isinstance(body, list) or not body:
            raise StudyConfigError(at, body, "a non-empty list of values")
        for i, v in enumerate(body):
            if any(_same(v, u) for u in body[:i]):
                raise StudyConfigError(
                    f"{at}[{i}]", v, "each value once", problem="duplicate value"
                )
            if algorithm == "optuna" and not (v is None or isinstance(v, (bool, int, float, str))):
                raise StudyConfigError(
                    f"{at}[{i}]", v, "null, a boolean, a number or a string (Optuna choices)"
                )
        return Param(name, kind, values=tuple(body), when=when)

    size = 3 if kind == "quniform" else 2
    form = "[lo, hi, q]" if kind == "quniform" else "[lo, hi]"
    if not isinstance(body, list) or len(body) != size:
        raise StudyConfigError(at, body, f"a list {form}")
    for i, v in enumerate(body):
        ok = _is_int(v) if kind == "randint" else _is_number(v) and math.isfinite(v)
        if not ok:
            raise StudyConfigError(
                f"{at}[{i}]", v, "an integer" if kind == "randint" else "a finite number"
            )
    low, high = body[0], body[1]
    if low >= high:
        raise StudyConfigError(at, body, f"{form} with lo < hi")
    if kind == "loguniform" and low <= 0:
        raise StudyConfigError(f"{at}[0]", low, "a number > 0 (loguniform)")
    q = None
    if kind == "quniform":
        q = body[2]
        if not q > 0 or q > high - low:
            raise StudyConfigError(f"{at}[2]", q, f"a step q with 0 < q <= hi - lo = {high - low}")
    return Param(name, kind, low=low, high=high, q=q, when=when)


def _parse_when(raw: Any, where: str) -> dict[str, tuple[Any, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not raw:
        raise StudyConfigError(
            where, raw, "a mapping such as {optimizer: xsam} or {optimizer: [sam, xsam]}"
        )
    when: dict[str, tuple[Any, ...]] = {}
    for key, value in raw.items():
        values = tuple(value) if isinstance(value, list) else (value,)
        if not values:
            raise StudyConfigError(f"{where}.{key}", value, "a value or a non-empty list of values")
        when[str(key)] = values
    return when


def _check_cycles(params: Sequence[Param]) -> None:
    names = {p.name: p for p in params}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*path[path.index(name) :], name]
            raise StudyConfigError(
                f"space.{cycle[0]}.when", problem="circular conditions " + " → ".join(cycle)
            )
        state[name] = 1
        for dep in names[name].when:
            if dep in names:
                visit(dep, [*path, name])
        state[name] = 2

    for p in params:
        visit(p.name, [])


def _probe_values(p: Param) -> list[tuple[int | None, Any]]:
    """Values that stand for a distribution when checking it against the trial
    validator: every listed value, or both ends of a range (and a float inside
    it, which catches a float distribution over an integer key)."""
    if p.discrete:
        return list(enumerate(p.values))
    probes: list[tuple[int | None, Any]] = [(0, p.low), (1, p.high)]
    if p.kind == "quniform":
        # A value on the q-lattice: what Ray and Optuna draw (as a float).
        steps = math.floor((p.high - p.low) / p.q / 2)
        probes.append((None, float(p.low + steps * p.q)))
    elif p.kind in ("uniform", "loguniform"):
        # A float strictly inside (not a whole number): catches a continuous
        # distribution over an integer key.
        lo, hi = (math.log(p.low), math.log(p.high)) if p.kind == "loguniform" else (p.low, p.high)
        inner = lo + 0.3819660113 * (hi - lo)
        probes.append((None, math.exp(inner) if p.kind == "loguniform" else inner))
    return probes


def _at(where: str, given: Mapping[str, Any]) -> ErrorFactory:
    """Errors of the trial validator for values written at ``where``: the key
    itself refused, or another key refused because of it."""

    def error(field: str | None, value: Any, allowed: str | None) -> StudyConfigError:
        if field is None or (field in given and len(given) == 1):
            return StudyConfigError(where, value, allowed)
        shown = ", ".join(f"{k}={_plain(v)}" for k, v in given.items())
        return StudyConfigError(
            where,
            problem=f"with {shown}, {field} {show_value(value)} is refused",
            allowed=f"{field} {allowed}",
        )

    return error


def _parse_metrics(raw: Any, algorithm: str) -> tuple[Metric, ...]:
    if raw is None:
        raise StudyConfigError(
            "metric", allowed="{name: test_acc, mode: max} or a list of such for optuna"
        )
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise StudyConfigError("metric", raw, "a {name, mode} mapping or a non-empty list of them")
    metrics: list[Metric] = []
    for i, item in enumerate(items):
        where = f"metric[{i}]" if isinstance(raw, list) else "metric"
        if isinstance(item, str):
            raise StudyConfigError(where, item, f"a mapping {{name: {item}, mode: max|min}}")
        m = _mapping(item, where)
        for key in m:
            if key not in ("name", "mode"):
                raise StudyConfigError(
                    f"{where}.{key}", problem="unknown key", allowed="name, mode"
                )
        if "name" not in m:
            raise StudyConfigError(f"{where}.name", allowed=_one_of(metric_names()))
        if m["name"] not in metric_names():
            raise StudyConfigError(
                f"{where}.name",
                m["name"],
                _one_of(metric_names()),
                problem="not a metric" + _hint(m["name"], metric_names()),
            )
        if m.get("mode") not in ("min", "max"):
            raise StudyConfigError(f"{where}.mode", m.get("mode"), "min or max")
        if any(x.name == m["name"] for x in metrics):
            raise StudyConfigError(
                f"{where}.name", m["name"], "each metric once", problem="duplicate metric"
            )
        metrics.append(Metric(m["name"], m["mode"]))
    if len(metrics) > 1 and algorithm != "optuna":
        raise StudyConfigError(
            "metric",
            [m.name for m in metrics],
            "a single metric (several objectives need search.algorithm optuna)",
        )
    return tuple(metrics)


def _parse_search(
    raw: Mapping[str, Any], algorithm: str, space: Sequence[Param], multi: bool
) -> Search:
    for key in raw:
        if key not in _SEARCH_KEYS:
            raise StudyConfigError(
                f"search.{key}",
                problem="unknown key" + _hint(key, _SEARCH_KEYS),
                allowed=_one_of(_SEARCH_KEYS),
            )
    num_samples = _int(
        raw.get("num_samples", _DEFAULT_NUM_SAMPLES[algorithm]), "search.num_samples", minimum=1
    )
    seed = raw.get("seed")
    if seed is not None and not _is_int(seed):
        raise StudyConfigError("search.seed", seed, "an integer or null")
    sampler = raw.get("sampler")
    if algorithm == "optuna":
        sampler = "tpe" if sampler is None else sampler
        if sampler not in SAMPLERS:
            raise StudyConfigError("search.sampler", sampler, _one_of(SAMPLERS))
        if multi and not SAMPLERS[sampler]:
            raise StudyConfigError(
                "search.sampler",
                sampler,
                _one_of([s for s, m in SAMPLERS.items() if m]) + " (several objectives)",
            )
        if sampler == "cmaes" and importlib.util.find_spec("cmaes") is None:
            raise StudyConfigError(
                "search.sampler",
                sampler,
                "a sampler whose package is installed (cmaes needs `pip install cmaes`)",
            )
    elif sampler is not None:
        raise StudyConfigError(
            "search.sampler", sampler, "nothing (a sampler is only for algorithm optuna)"
        )
    max_concurrent = raw.get("max_concurrent")
    if max_concurrent is None and algorithm == "optuna":
        # TPE learns only from finished trials: many in flight means blind draws.
        max_concurrent = _DEFAULT_OPTUNA_CONCURRENCY
    max_concurrent = _optional_int(max_concurrent, "search.max_concurrent", 1)

    points_raw = raw.get("points_to_evaluate") or []
    if points_raw and algorithm == "grid":
        raise StudyConfigError(
            "search.points_to_evaluate",
            points_raw,
            "nothing for algorithm grid (only random and optuna)",
        )
    if not isinstance(points_raw, list):
        raise StudyConfigError(
            "search.points_to_evaluate", points_raw, "a list of {parameter: value} mappings"
        )
    if len(points_raw) > num_samples:
        raise StudyConfigError(
            "search.points_to_evaluate",
            problem=f"{len(points_raw)} points",
            allowed=f"at most search.num_samples = {num_samples} points",
        )
    params = {p.name: p for p in space}
    points: list[dict[str, Any]] = []
    for i, point in enumerate(points_raw):
        where = f"search.points_to_evaluate[{i}]"
        if not isinstance(point, Mapping) or not point:
            raise StudyConfigError(where, point, "a non-empty mapping {parameter: value}")
        for key, value in point.items():
            if key not in params:
                raise StudyConfigError(
                    f"{where}.{key}",
                    problem="not a swept parameter",
                    allowed=_one_of(params) if params else "none (space is empty)",
                )
            p = params[key]
            if not p.contains(value):
                raise StudyConfigError(f"{where}.{key}", value, p.describe())
        for key, value in point.items():
            p = params[key]
            known = {k: point[k] for k in p.when if k in point}
            if p.when and len(known) == len(p.when) and not p.active(known):
                raise StudyConfigError(
                    f"{where}.{key}", value, f"nothing: {key} is only set when {p.describe_when()}"
                )
        points.append(dict(point))
    return Search(
        algorithm=algorithm,
        num_samples=num_samples,
        seed=seed,
        sampler=sampler if algorithm == "optuna" else None,
        points_to_evaluate=tuple(points),
        max_concurrent=max_concurrent,
    )


def _parse_scheduler(
    raw: Any, metrics: Sequence[Metric], trial: Mapping[str, Any], space: Sequence[Param]
) -> Scheduler:
    sched = _mapping(raw, "scheduler")
    name = sched.get("name", "none")
    if name not in SCHEDULERS:
        raise StudyConfigError("scheduler.name", name, _one_of(SCHEDULERS))
    for key in sched:
        if key not in _SCHEDULER_KEYS[name]:
            raise StudyConfigError(
                f"scheduler.{key}",
                problem=f"unknown key for scheduler {name}",
                allowed=", ".join(_SCHEDULER_KEYS[name]),
            )
    if name == "none":
        return Scheduler()
    if len(metrics) > 1:
        raise StudyConfigError("scheduler.name", name, "none (ASHA needs a single metric)")
    grace = _int(sched.get("grace_period", 1), "scheduler.grace_period", minimum=1)
    factor = sched.get("reduction_factor", 3)
    if not _is_number(factor) or not factor > 1:
        raise StudyConfigError("scheduler.reduction_factor", factor, "a number > 1")
    max_t = _optional_int(sched.get("max_t"), "scheduler.max_t", 1)
    if max_t is None:
        max_t = _max_epochs(trial, space)
    if grace > max_t:
        raise StudyConfigError("scheduler.grace_period", grace, f"at most max_t = {max_t} epochs")
    return Scheduler(name, grace, factor, max_t)


def _max_epochs(trial: Mapping[str, Any], space: Sequence[Param]) -> int:
    for p in space:
        if p.name == "epochs":
            return int(max(p.values) if p.discrete else p.high)
    return int(trial.get("epochs", trial_defaults().get("epochs", 1)))


def _parse_resources(raw: Any, trial: Mapping[str, Any]) -> Resources:
    res = _mapping(raw, "resources")
    for key in res:
        if key not in ("cpu", "gpu"):
            raise StudyConfigError(f"resources.{key}", problem="unknown key", allowed="cpu, gpu")
    cpu, gpu = res.get("cpu", 1), res.get("gpu", 0)
    if not _is_number(cpu) or not cpu > 0:
        raise StudyConfigError("resources.cpu", cpu, "a number > 0")
    if not _is_number(gpu) or gpu < 0:
        raise StudyConfigError(
            "resources.gpu", gpu, "a number >= 0 (fractions such as 0.25 share a GPU)"
        )
    if gpu > 1 and gpu != int(gpu):
        raise StudyConfigError("resources.gpu", gpu, "a fraction <= 1 or a whole number of GPUs")
    if gpu == 0 and trial.get("device") == "cuda":
        raise StudyConfigError("resources.gpu", gpu, "a number > 0 (trial.device is cuda)")
    return Resources(cpu=cpu, gpu=gpu)


def _parse_storage(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise StudyConfigError("storage", raw, "a local path or a URI such as s3://bucket/studies")
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", raw)
    if match and match.group(1).lower() not in _URI_SCHEMES:
        raise StudyConfigError(
            "storage", raw, "a local path or a URI with scheme " + _one_of(_URI_SCHEMES)
        )
    return raw


def _check_combinations(cfg: StudyConfig) -> None:
    """Check whole grid trials against the trial validator (cross-key rules)."""
    if cfg.search.algorithm != "grid" or not cfg.space:
        return
    from study.space import swept_grid

    fixed = cfg.trial_settings()
    for i, swept in enumerate(swept_grid(cfg, repeat=False)):
        if i >= _MAX_CHECKED_COMBINATIONS:
            break

        def error(
            field: str | None, value: Any, allowed: str | None, swept: dict = swept
        ) -> StudyConfigError:
            combo = ", ".join(f"{k}={_plain(v)}" for k, v in swept.items())
            where = f"space.{field}" if field in swept else f"trial.{field}" if field else "space"
            return StudyConfigError(where, value, allowed, problem=f"in the trial {combo}")

        _validate_trial({**fixed, **swept}, error)


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------


def _validate_trial(config: Mapping[str, Any], error: ErrorFactory) -> dict:
    """Run the trial validator; turn its error into ``error(field, value, allowed)``."""
    try:
        return trial_validator()(config)
    except StudyConfigError:
        raise
    except (ValueError, TypeError) as exc:
        field = getattr(exc, "field", None)
        if field is None:
            raise error(None, config, str(exc)) from None
        allowed = getattr(exc, "allowed", None)
        if isinstance(allowed, (list, tuple, set, frozenset)):
            allowed = _one_of(allowed)
        value = getattr(exc, "value", None)
        raise error(str(field), value, None if allowed is None else str(allowed)) from None


def _mapping(raw: Any, where: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise StudyConfigError(where, raw, "a mapping")
    for key in raw:
        if not isinstance(key, str):
            raise StudyConfigError(f"{where}.{key}", problem="keys must be strings")
    return raw


def _int(value: Any, where: str, *, minimum: int) -> int:
    if not _is_int(value) or value < minimum:
        raise StudyConfigError(where, value, f"an integer >= {minimum}")
    return value


def _optional_int(value: Any, where: str, minimum: int) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or value < minimum:
        raise StudyConfigError(where, value, f"null or an integer >= {minimum}")
    return value


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _same(a: Any, b: Any) -> bool:
    # True == 1 in Python; a study file means them as different values.
    return (type(a) is type(b) and a == b) or (_is_number(a) and _is_number(b) and a == b)


def _member(value: Any, values: Iterable[Any]) -> bool:
    return any(_same(value, v) for v in values)


def _unwrap(values: Sequence[Any]) -> Any:
    return values[0] if len(values) == 1 else list(values)


def _plain(v: Any) -> str:
    return v if isinstance(v, str) else show_value(v)


def _one_of(values: Iterable[Any]) -> str:
    return "one of " + ", ".join(_plain(v) for v in values)


def _unknown_trial_key(where: str, name: str, keys: Iterable[str]) -> StudyConfigError:
    """The error for a space name or condition key that is not a trial key."""
    return StudyConfigError(
        where,
        problem="unknown trial key" + _hint(name, sorted(keys)),
        allowed=_one_of(sorted(keys)),
    )


def _hint(key: Any, allowed: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(key), list(allowed), n=1)
    return f" (did you mean {close[0]}?)" if close else ""
