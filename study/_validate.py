"""Validation of a parsed study file: :func:`parse_study` builds a :class:`StudyConfig`.

Everything is checked before anything starts; the first problem found raises
:class:`StudyConfigError` naming the field path, the value and what is allowed.
Trial keys and their values are checked by the contract's validator
(``xsam_contract.validate_trial_config``), so there is one source of truth.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from study._algorithms import ALGORITHMS, GridSearch, Search, joined
from study._checks import MAX_EPOCHS, MAX_TRIALS, check_int, check_optional_int
from study._distributions import parse_distribution
from study._errors import (
    StudyConfigError,
    check_keys,
    did_you_mean,
    one_of,
    plain,
    show_value,
    unknown_key,
)
from study._samplers import SAMPLERS
from study._schedulers import SCHEDULERS, NoScheduler, Scheduler
from study._schema import Metric, Param, Resources, StudyConfig
from study._trial import metric_names, trial_defaults, trial_keys, trial_validator
from study._values import is_int, is_number, member

__all__ = ["NAME", "NAME_ALLOWED", "SAMPLERS", "parse_study"]

_URI_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss", "az", "file", "memory")
#: A study name and a study-directory name (``--name``), and what the pattern allows.
#: At most 100 characters: a dated suffix and Ray's files below it must still fit the
#: file system's 255-byte names and the 108-byte socket paths are not under it.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
NAME_ALLOWED = "at most 100 letters, digits, '.', '_' or '-', starting with a letter or digit"
# Upper bounds of the settings that reach Ray, NumPy or the OS: beyond them a
# study waits forever (no node has 1e9 CPUs) or crashes in a library.
_MAX_CPU = 1024
_MAX_GPU = 64
_MAX_FAILURES = 1000
_MAX_KEEP = 1000
#: NumPy's RandomState (under Optuna's and Ray's samplers) takes a seed below 2**32.
_MAX_SEARCH_SEED = 2**32 - 1
#: Keys of the ``search`` section that every algorithm takes (each has its own too).
_COMMON_SEARCH_KEYS = ("algorithm", "num_samples", "seed", "points_to_evaluate", "max_concurrent")
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
# Grids larger than this are still run, but only their first combinations are
# checked one by one against the trial validator before the start.
_MAX_CHECKED_COMBINATIONS = 5000

#: Builds the study error for a trial-validator error (field, value, allowed).
ErrorFactory = Callable[[str | None, Any, str | None], StudyConfigError]


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
    check_keys(data, "", _TOP_KEYS)

    if "name" not in data:
        raise StudyConfigError("name", allowed="a study name such as quickstart")
    name = data["name"]
    if not isinstance(name, str) or not NAME.match(name):
        raise StudyConfigError("name", name, NAME_ALLOWED)
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        raise StudyConfigError("description", description, "a string")

    trial = _parse_trial(data.get("trial"))
    search_raw = _mapping(data.get("search"), "search")
    chosen = search_raw.get("algorithm", GridSearch.name)
    if not isinstance(chosen, str) or chosen not in ALGORITHMS:
        raise StudyConfigError("search.algorithm", chosen, one_of(ALGORITHMS))
    algorithm = ALGORITHMS[chosen]
    space = _parse_space(data.get("space"), trial, algorithm)
    metrics = _parse_metrics(data.get("metric"), algorithm)
    search = _parse_search(search_raw, algorithm, space, len(metrics) > 1)
    checkpoint_every = check_int(
        data.get("checkpoint_every", 1), "checkpoint_every", minimum=0, maximum=MAX_EPOCHS
    )
    scheduler = _parse_scheduler(data.get("scheduler"), metrics, trial, space)
    resources = _parse_resources(data.get("resources"), trial)
    max_concurrent = check_optional_int(
        data.get("max_concurrent_trials"), "max_concurrent_trials", 1, MAX_TRIALS
    )
    max_failures = check_int(
        data.get("max_failures", 2), "max_failures", minimum=-1, maximum=_MAX_FAILURES
    )
    storage = _parse_storage(data.get("storage", "./studies"))
    keep = check_optional_int(data.get("keep_checkpoints", 2), "keep_checkpoints", 1, _MAX_KEEP)

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
            raise unknown_key(f"trial.{key}", key, sorted(keys), what="trial key")
    _validate_trial(trial, lambda f, v, a: StudyConfigError(f"trial.{f}" if f else "trial", v, a))
    return trial


def _parse_space(raw: Any, trial: Mapping[str, Any], algorithm: type[Search]) -> tuple[Param, ...]:
    space_raw = _mapping(raw, "space")
    keys = trial_keys()
    params: list[Param] = []
    for name, spec in space_raw.items():
        where = f"space.{name}"
        if name == "checkpoint_every":
            raise StudyConfigError(where, problem="checkpoint_every cannot be swept")
        if name not in keys:
            raise unknown_key(where, name, sorted(keys), what="trial key")
        params.append(_parse_param(name, spec, algorithm))
    by_name = {p.name: p for p in params}

    # Conditions: their keys, values and acyclicity, now that all names are known.
    for p in params:
        for key, allowed in p.when.items():
            where = f"space.{p.name}.when.{key}"
            if key == p.name:
                raise StudyConfigError(where, problem="a parameter cannot depend on itself")
            if key not in keys:
                raise unknown_key(where, key, sorted(keys), what="trial key")
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
            if not any(member(v, possible) for v in allowed):
                source = f"space.{key} takes" if key in by_name else f"{key} is fixed to"
                raise StudyConfigError(
                    where,
                    _unwrap(allowed),
                    f"{one_of(possible)} ({source} {', '.join(plain(v) for v in possible)})",
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
        for index, value in p.dist.probe_values():
            where = f"space.{p.name}.{p.kind}" + (f"[{index}]" if index is not None else "")
            try:
                _validate_trial({**context, p.name: value}, _at(where, {p.name: value}))
            except StudyConfigError as exc:
                if index is not None:
                    raise
                raise StudyConfigError(
                    where,
                    p.dist.body(),
                    f"{exc.allowed} (this distribution draws floats such as {value:.4g}; "
                    "randint draws integers)",
                ) from None
    return tuple(params)


def _parse_param(name: str, spec: Any, algorithm: type[Search]) -> Param:
    where = f"space.{name}"
    dist, when = parse_distribution(spec, where, algorithm)
    return Param(name, dist, when=_parse_when(when, f"{where}.when"))


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


def _at(where: str, given: Mapping[str, Any]) -> ErrorFactory:
    """Errors of the trial validator for values written at ``where``: the key
    itself refused, or another key refused because of it."""

    def error(field: str | None, value: Any, allowed: str | None) -> StudyConfigError:
        if field is None or (field in given and len(given) == 1):
            return StudyConfigError(where, value, allowed)
        shown = ", ".join(f"{k}={plain(v)}" for k, v in given.items())
        return StudyConfigError(
            where,
            problem=f"with {shown}, {field} {show_value(value)} is refused",
            allowed=f"{field} {allowed}",
        )

    return error


def _parse_metrics(raw: Any, algorithm: type[Search]) -> tuple[Metric, ...]:
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
        check_keys(m, where, ("name", "mode"))
        if "name" not in m:
            raise StudyConfigError(f"{where}.name", allowed=one_of(metric_names()))
        if m["name"] not in metric_names():
            raise StudyConfigError(
                f"{where}.name",
                m["name"],
                one_of(metric_names()),
                problem="not a metric" + did_you_mean(m["name"], metric_names()),
            )
        if m.get("mode") not in ("min", "max"):
            raise StudyConfigError(f"{where}.mode", m.get("mode"), "min or max")
        if any(x.name == m["name"] for x in metrics):
            raise StudyConfigError(
                f"{where}.name", m["name"], "each metric once", problem="duplicate metric"
            )
        metrics.append(Metric(m["name"], m["mode"]))
    if len(metrics) > 1 and not algorithm.multi_objective:
        able = [name for name, c in ALGORITHMS.items() if c.multi_objective]
        raise StudyConfigError(
            "metric",
            [m.name for m in metrics],
            f"a single metric (several objectives need search.algorithm {joined(able)})",
        )
    return tuple(metrics)


def _search_keys() -> tuple[str, ...]:
    """The keys of the ``search`` section: every algorithm's, with each one's own
    after ``seed``, in the order ``to_dict`` writes them."""
    own = dict.fromkeys(k for c in ALGORITHMS.values() for k in c.keys)
    return (*_COMMON_SEARCH_KEYS[:3], *own, *_COMMON_SEARCH_KEYS[3:])


def _parse_search(
    raw: Mapping[str, Any], algorithm: type[Search], space: Sequence[Param], multi: bool
) -> Search:
    check_keys(raw, "search", _search_keys())
    num_samples = check_int(
        raw.get("num_samples", algorithm.default_num_samples),
        "search.num_samples",
        minimum=1,
        maximum=MAX_TRIALS,
    )
    seed = raw.get("seed")
    if seed is not None and not (is_int(seed) and 0 <= seed <= _MAX_SEARCH_SEED):
        raise StudyConfigError(
            "search.seed", seed, f"an integer in [0, {_MAX_SEARCH_SEED}] or null"
        )
    for key, value in raw.items():
        if key not in _COMMON_SEARCH_KEYS and key not in algorithm.keys and value is not None:
            owners = [name for name, c in ALGORITHMS.items() if key in c.keys]
            raise StudyConfigError(
                f"search.{key}", value, f"nothing (a {key} is only for algorithm {joined(owners)})"
            )
    settings = algorithm.parse_settings(raw, multi=multi)
    max_concurrent = raw.get("max_concurrent")
    if max_concurrent is None:
        max_concurrent = algorithm.default_max_concurrent
    max_concurrent = check_optional_int(max_concurrent, "search.max_concurrent", 1, MAX_TRIALS)

    points_raw = raw.get("points_to_evaluate") or []
    if points_raw and not algorithm.takes_points:
        takers = [name for name, c in ALGORITHMS.items() if c.takes_points]
        raise StudyConfigError(
            "search.points_to_evaluate",
            points_raw,
            f"nothing for algorithm {algorithm.name} (only {joined(takers, 'and')})",
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
                    allowed=one_of(params) if params else "none (space is empty)",
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
    return algorithm(
        num_samples=num_samples,
        seed=seed,
        points_to_evaluate=tuple(points),
        max_concurrent=max_concurrent,
        **settings,
    )


def _parse_scheduler(
    raw: Any, metrics: Sequence[Metric], trial: Mapping[str, Any], space: Sequence[Param]
) -> Scheduler:
    sched = _mapping(raw, "scheduler")
    name = sched.get("name", NoScheduler.name)
    if not isinstance(name, str) or name not in SCHEDULERS:
        raise StudyConfigError("scheduler.name", name, one_of(SCHEDULERS))
    cls = SCHEDULERS[name]
    check_keys(sched, "scheduler", ("name", *cls.keys), what=f"key for scheduler {name}")
    if len(metrics) > 1 and not cls.multi_objective:
        able = [n for n, c in SCHEDULERS.items() if c.multi_objective]
        raise StudyConfigError(
            "scheduler.name", name, f"{joined(able)} ({cls.title} needs a single metric)"
        )
    return cls.parse(sched, max_epochs=_max_epochs(trial, space))


def _max_epochs(trial: Mapping[str, Any], space: Sequence[Param]) -> int:
    for p in space:
        if p.name == "epochs":
            return int(max(p.values) if p.discrete else p.high)
    return int(trial.get("epochs", trial_defaults().get("epochs", 1)))


def _parse_resources(raw: Any, trial: Mapping[str, Any]) -> Resources:
    res = _mapping(raw, "resources")
    check_keys(res, "resources", ("cpu", "gpu"))
    cpu, gpu = res.get("cpu", 1), res.get("gpu", 0)
    # `not 0 < x <= max` also refuses nan; inf is above every maximum
    if not is_number(cpu) or not 0 < cpu <= _MAX_CPU:
        raise StudyConfigError("resources.cpu", cpu, f"a number > 0 and <= {_MAX_CPU}")
    if not is_number(gpu) or not 0 <= gpu <= _MAX_GPU:
        raise StudyConfigError(
            "resources.gpu",
            gpu,
            f"a number in [0, {_MAX_GPU}] (fractions such as 0.25 share a GPU)",
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
            "storage", raw, "a local path or a URI with scheme " + one_of(_URI_SCHEMES)
        )
    return raw


def _check_combinations(cfg: StudyConfig) -> None:
    """Check whole grid trials against the trial validator (cross-key rules)."""
    listed = cfg.search.listed_trials(cfg, repeat=False) if cfg.space else None
    if listed is None:
        return
    fixed = cfg.trial_settings()
    for i, swept in enumerate(listed):
        if i >= _MAX_CHECKED_COMBINATIONS:
            break

        def error(
            field: str | None, value: Any, allowed: str | None, swept: dict = swept
        ) -> StudyConfigError:
            combo = ", ".join(f"{k}={plain(v)}" for k, v in swept.items())
            where = f"space.{field}" if field in swept else f"trial.{field}" if field else "space"
            return StudyConfigError(where, value, allowed, problem=f"in the trial {combo}")

        _validate_trial({**fixed, **swept}, error)


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
            allowed = one_of(allowed)
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


def _unwrap(values: Sequence[Any]) -> Any:
    return values[0] if len(values) == 1 else list(values)
