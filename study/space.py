"""Swept parameters → Ray Tune ``param_space`` / an Optuna define-by-run space.

The study's search algorithm (:mod:`study._algorithms`) decides which of three
shapes comes out of a :class:`~study.config.StudyConfig`, with the helpers here:

* grid/random without conditions: a Ray Tune ``param_space`` of
  ``tune.grid_search``/``tune.choice``/``tune.uniform``/… over the fixed trial
  settings, searched by Ray's own ``BasicVariantGenerator``;
* grid/random with ``when`` conditions: Ray Tune has no conditional spaces, so
  the trials are listed here (a conditional grid multiplies only the relevant
  combinations: sgd is not repeated for every k) and handed out in order;
* optuna: an :class:`OptunaSpace` define-by-run function that suggests a
  conditional parameter only where its condition holds.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the algorithms (study._algorithms) import this module for its helpers
    from study._schema import Param, StudyConfig

__all__ = [
    "OptunaSpace",
    "TuneSpace",
    "build_tune_space",
    "count_trials",
    "describe_space",
    "expand_grid",
    "ordered_params",
    "sample_trials",
    "swept_grid",
    "to_tune_domain",
]


@dataclass
class TuneSpace:
    """What the Tuner needs to generate the trials of a study.

    Attributes:
        kind: ``native`` (Ray's variant generator over ``param_space``),
            ``list`` (``trials`` handed out in order) or ``optuna``.
        param_space: The Tuner's ``param_space``: the fixed trial settings, plus
            Ray Tune domains for ``native``.
        num_samples: ``TuneConfig.num_samples``.
        trials: Swept values of each trial, for ``list``.
        points_to_evaluate: First configurations, for ``native`` and ``optuna``.
        optuna_space: The define-by-run function, for ``optuna``.
    """

    kind: str
    param_space: dict[str, Any]
    num_samples: int
    trials: list[dict[str, Any]] | None = None
    points_to_evaluate: list[dict[str, Any]] | None = None
    optuna_space: OptunaSpace | None = None


def ordered_params(params: Sequence[Param]) -> list[Param]:
    """Order parameters so that every one comes after those its conditions name
    (file order otherwise). The config validator has ruled out cycles."""
    names = {p.name for p in params}
    done: set[str] = set()
    out: list[Param] = []
    pending = list(params)
    while pending:
        for p in pending:
            if all(dep in done or dep not in names for dep in p.when):
                out.append(p)
                done.add(p.name)
                pending.remove(p)
                break
        else:  # pragma: no cover - cycles are rejected by parse_study
            raise ValueError("circular conditions in space")
    return out


def swept_grid(cfg: StudyConfig, *, repeat: bool = True) -> list[dict[str, Any]]:
    """Swept values of every trial of a grid study, conditions honoured.

    Args:
        cfg: A study whose parameters are all ``grid``.
        repeat: Repeat the grid ``search.num_samples`` times, as Ray does.

    Returns:
        One dict per trial with the swept keys that apply to it.
    """
    drawn = [p for p in cfg.space if not p.dist.exhaustive]
    if drawn:
        raise ValueError(f"not a grid: space.{drawn[0].name} is {drawn[0].kind}")
    trials = list(_walk(ordered_params(cfg.space), 0, {}, cfg.condition_context(), None))
    return trials * (cfg.search.num_samples if repeat else 1)


def expand_grid(cfg: StudyConfig) -> list[dict[str, Any]]:
    """Every trial config of a grid study: fixed settings merged with the swept
    values (conditions honoured, grid repeated ``search.num_samples`` times)."""
    fixed = cfg.trial_settings()
    return [{**fixed, **swept} for swept in swept_grid(cfg)]


def sample_trials(cfg: StudyConfig, seed: int | None = None) -> list[dict[str, Any]]:
    """Draw the swept values of a random study's trials, conditions honoured.

    ``search.points_to_evaluate`` come first (missing parameters drawn), then
    ``num_samples`` minus their number draws; every draw runs over all grid
    parameters, as Ray's variant generator does.

    Args:
        cfg: A study with ``search.algorithm: random``.
        seed: Seed of the draws (default ``search.seed``; None: not reproducible).

    Returns:
        One dict per trial with the swept keys that apply to it.
    """
    rng = random.Random(cfg.search.seed if seed is None else seed)
    params = ordered_params(cfg.space)
    context = cfg.condition_context()
    points = [dict(p) for p in cfg.search.points_to_evaluate]
    starts = points + [{} for _ in range(cfg.search.num_samples - len(points))]
    return [trial for start in starts for trial in _walk(params, 0, start, context, rng)]


def count_trials(cfg: StudyConfig) -> int:
    """Number of trials the study will run (before any early stopping)."""
    return cfg.search.count_trials(cfg)


def describe_space(cfg: StudyConfig) -> list[dict[str, str]]:
    """One row per swept parameter: name, distribution and condition."""
    return [
        {"parameter": p.name, "distribution": p.describe(), "when": p.describe_when()}
        for p in cfg.space
    ]


def build_tune_space(cfg: StudyConfig, fixed: Mapping[str, Any] | None = None) -> TuneSpace:
    """Translate a study's space into what the Tuner takes.

    Args:
        cfg: The validated study.
        fixed: Fixed trial settings to use instead of ``cfg.trial_settings()``
            (the launcher passes them with paths made absolute).

    Returns:
        The :class:`TuneSpace`.
    """
    base = dict(cfg.trial_settings() if fixed is None else fixed)
    return cfg.search.tune_space(cfg, base)


def to_tune_domain(p: Param) -> Any:
    """The Ray Tune search-space object of one parameter."""
    return p.dist.tune_domain()


class OptunaSpace:
    """Optuna define-by-run search space with conditional parameters.

    Called with an ``optuna.Trial``, it suggests each parameter in dependency
    order, skipping one whose ``when`` condition does not hold for the values
    drawn so far (or for the fixed settings). A plain class rather than a
    closure: Ray pickles the searcher, and with it this function, when it
    checkpoints the experiment.

    Args:
        params: The swept parameters (no ``grid``).
        context: Values of the keys that no parameter sets (fixed settings
            over trial defaults), for the conditions.
    """

    def __init__(self, params: Sequence[Param], context: Mapping[str, Any]) -> None:
        self.params = tuple(ordered_params(params))
        self.context = dict(context)

    def __call__(self, trial: Any) -> None:
        """Suggest the parameters of one trial (Ray collects them from the trial)."""
        drawn: dict[str, Any] = {}
        for p in self.params:
            if p.active({**self.context, **drawn}):
                drawn[p.name] = p.dist.suggest(trial, p.name)

    def __repr__(self) -> str:
        return f"OptunaSpace({', '.join(p.name for p in self.params)})"


def _walk(
    params: Sequence[Param],
    index: int,
    partial: dict[str, Any],
    context: Mapping[str, Any],
    rng: random.Random | None,
) -> Iterator[dict[str, Any]]:
    """Depth-first over the parameters: branch on grids, draw the others, skip
    those whose condition fails and those already set (a point to evaluate)."""
    if index == len(params):
        yield partial
        return
    p = params[index]
    if p.name in partial or not p.active({**context, **partial}):
        yield from _walk(params, index + 1, partial, context, rng)
    elif p.dist.exhaustive:
        for value in p.values:
            yield from _walk(params, index + 1, {**partial, p.name: value}, context, rng)
    else:
        if rng is None:
            raise ValueError(f"space.{p.name} is {p.kind}: it is drawn, not listed")
        yield from _walk(params, index + 1, {**partial, p.name: p.dist.draw(rng)}, context, rng)
