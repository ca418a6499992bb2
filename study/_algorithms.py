"""Search algorithms, one small class per ``search.algorithm``.

A study file's ``search`` section names one, with the keys every algorithm
takes and its own::

    search: {algorithm: optuna, num_samples: 40, seed: 0, sampler: tpe}

Each class knows which distributions it can search, its own keys and their
checks, how many trials it runs, the Ray Tune search space and searcher it
builds, and how it is described and written back (``study.json``'s
``search``). :data:`ALGORITHMS` maps the name to the class; the validator,
its messages and the dry run take the allowed names from it. Ray- and
Optuna-free: they are imported inside the methods that build their objects.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from study._distributions import DISTRIBUTIONS, Distribution, Grid
from study._errors import StudyConfigError, one_of, plain
from study._samplers import SAMPLERS
from study.space import OptunaSpace, TuneSpace, sample_trials, swept_grid, to_tune_domain
from xsam_contract import STUDY_FILES

if TYPE_CHECKING:
    from study._schema import StudyConfig

__all__ = [
    "ALGORITHMS",
    "GridSearch",
    "Optuna",
    "RandomSearch",
    "Search",
    "joined",
    "wrap_searcher",
]


def joined(names: list[str], last: str = "or") -> str:
    """``a, b or c``: names in a message."""
    return ", ".join(names[:-1]) + f" {last} {names[-1]}" if len(names) > 1 else "".join(names)


@dataclass(frozen=True)
class Search:
    """A search algorithm and its settings (the validated ``search`` section).

    Attributes:
        num_samples: Repetitions of the grid (grid) or number of trials.
        seed: Seed of the random draws (None: not reproducible).
        points_to_evaluate: Configurations tried first.
        max_concurrent: Trials the searcher keeps in flight at most.

    Class attributes:
        name: The study-file name (``search.algorithm``).
        keys: Its own keys of the ``search`` section, besides those of every algorithm.
        default_num_samples: ``num_samples`` when the file sets none.
        default_max_concurrent: ``max_concurrent`` when the file sets none.
        multi_objective: Whether it searches several objectives at once.
        takes_points: Whether it takes ``points_to_evaluate``.
    """

    num_samples: int = 1
    seed: int | None = None
    points_to_evaluate: tuple[Mapping[str, Any], ...] = ()
    max_concurrent: int | None = None
    name: ClassVar[str] = ""
    keys: ClassVar[tuple[str, ...]] = ()
    default_num_samples: ClassVar[int] = 1
    default_max_concurrent: ClassVar[int | None] = None
    multi_objective: ClassVar[bool] = False
    takes_points: ClassVar[bool] = True

    @property
    def algorithm(self) -> str:
        """The study-file name (``grid``, ``random``, ``optuna``)."""
        return self.name

    # -- validation (before the instance exists) ---------------------------------

    @classmethod
    def accepts(cls, dist: type[Distribution]) -> bool:
        """Whether it can search a parameter of this distribution kind."""
        return True

    @classmethod
    def refuse(cls, dist: type[Distribution], where: str) -> StudyConfigError:
        """The error for a ``space`` entry (at ``where``) of a kind it cannot search."""
        usable = [kind for kind, c in DISTRIBUTIONS.items() if cls.accepts(c)]
        return StudyConfigError(
            f"{where}.{dist.kind}",
            problem=f"search.algorithm {cls.name} cannot take a {dist.kind}",
            allowed=joined(usable),
        )

    @classmethod
    def check_listed_value(cls, value: Any, where: str) -> None:
        """Refuse a listed value (of a grid or choice, at ``where``) it cannot search."""

    @classmethod
    def parse_settings(cls, raw: Mapping[str, Any], *, multi: bool) -> dict[str, Any]:
        """Check its own :attr:`keys` of the ``search`` section.

        Args:
            raw: The ``search`` section.
            multi: The study has several objectives.

        Returns:
            Its keys' values (defaults filled in), as the class takes them.
        """
        return {}

    # -- the validated study -------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """Its own keys and their values."""
        return {key: getattr(self, key) for key in self.keys}

    def to_dict(self) -> dict[str, Any]:
        """The section as written in a study file (and in ``study.json``)."""
        out: dict[str, Any] = {
            "algorithm": self.name,
            "num_samples": self.num_samples,
            "seed": self.seed,
            **self.settings(),
        }
        if self.points_to_evaluate:
            out["points_to_evaluate"] = [dict(p) for p in self.points_to_evaluate]
        out["max_concurrent"] = self.max_concurrent
        return out

    def describe(self) -> str:
        """How the dry run's header names it: ``optuna, sampler tpe, seed 0``."""
        parts = [self.name, *(f"{key} {plain(value)}" for key, value in self.settings().items())]
        if self.seed is not None:
            parts.append(f"seed {self.seed}")
        return ", ".join(parts)

    def listed_trials(self, cfg: StudyConfig, *, repeat: bool = True) -> list[dict] | None:
        """The swept values of every trial when they are known before the start (a
        grid), each checked by the validator and shown by the dry run; None when
        the trials are drawn.

        Args:
            cfg: The study.
            repeat: Repeat them ``num_samples`` times, as the run does.
        """
        return None

    def count_trials(self, cfg: StudyConfig) -> int:
        """Number of trials the study will run (before any early stopping)."""
        raise NotImplementedError

    def tune_space(self, cfg: StudyConfig, base: dict[str, Any]) -> TuneSpace:
        """What the Tuner takes (:func:`study.space.build_tune_space`).

        Args:
            cfg: The study.
            base: The fixed trial settings.
        """
        raise NotImplementedError

    def searcher(self, cfg: StudyConfig, space: TuneSpace, run_name: str, study_dir: str) -> Any:
        """The Ray Tune search algorithm (``TuneConfig.search_alg``) of a new run.

        Args:
            cfg: The study.
            space: What :meth:`tune_space` built.
            run_name: The study directory's name.
            study_dir: The study directory (a local path or a URI).
        """
        raise NotImplementedError


def wrap_searcher(searcher: Any, cfg: StudyConfig) -> Any:
    """A Ray ``Searcher`` as a run's search algorithm: capped at the study's
    concurrency, in the project's ``StudySearchGenerator`` (after a resume, new
    trials go to the study's directory where it is now, see
    :func:`study._searchers.resumed_in`)."""
    from ray.tune.search import ConcurrencyLimiter

    from study._searchers import StudySearchGenerator

    cap = cfg.effective_concurrency()
    return StudySearchGenerator(
        ConcurrencyLimiter(searcher, max_concurrent=cap) if cap else searcher
    )


@dataclass(frozen=True)
class _Variants(Search):
    """Ray's variant generator over Tune domains; with ``when`` conditions, which
    Ray Tune cannot express, the trials are listed beforehand and handed out in order."""

    def conditional_trials(self, cfg: StudyConfig) -> list[dict[str, Any]]:
        """The swept values of every trial of a conditional space."""
        raise NotImplementedError

    def tune_space(self, cfg: StudyConfig, base: dict[str, Any]) -> TuneSpace:
        if cfg.conditional:
            trials = self.conditional_trials(cfg)
            return TuneSpace(kind="list", param_space=base, num_samples=len(trials), trials=trials)
        return TuneSpace(
            kind="native",
            param_space={**base, **{p.name: to_tune_domain(p) for p in cfg.space}},
            num_samples=self.num_samples,
            points_to_evaluate=[dict(p) for p in self.points_to_evaluate] or None,
        )

    def searcher(self, cfg: StudyConfig, space: TuneSpace, run_name: str, study_dir: str) -> Any:
        from study._searchers import ListSearcher, StudyVariantGenerator

        if space.trials is not None:
            return wrap_searcher(ListSearcher(space.trials), cfg)
        # Study*: after a resume, new trials go to the study's directory where it is now.
        return StudyVariantGenerator(
            points_to_evaluate=space.points_to_evaluate,
            max_concurrent=cfg.effective_concurrency() or 0,
            random_state=self.seed,
        )


@dataclass(frozen=True)
class GridSearch(_Variants):
    """``grid``: every combination of the ``grid`` values, ``num_samples`` times."""

    name: ClassVar[str] = "grid"
    takes_points: ClassVar[bool] = False

    @classmethod
    def accepts(cls, dist: type[Distribution]) -> bool:
        return dist.exhaustive

    @classmethod
    def refuse(cls, dist: type[Distribution], where: str) -> StudyConfigError:
        others = [name for name, c in ALGORITHMS.items() if c.accepts(dist)]
        return StudyConfigError(
            where,
            problem=f"search.algorithm {cls.name} needs {{{Grid.kind}: [...]}}, got {dist.kind}",
            allowed=f"{Grid.kind} (or use algorithm {joined(others)})",
        )

    def listed_trials(self, cfg: StudyConfig, *, repeat: bool = True) -> list[dict] | None:
        return swept_grid(cfg, repeat=repeat)

    def count_trials(self, cfg: StudyConfig) -> int:
        return len(swept_grid(cfg))

    def conditional_trials(self, cfg: StudyConfig) -> list[dict[str, Any]]:
        return swept_grid(cfg)


@dataclass(frozen=True)
class RandomSearch(_Variants):
    """``random``: ``num_samples`` draws, each over every combination of the grids."""

    name: ClassVar[str] = "random"
    default_num_samples: ClassVar[int] = 10

    def count_trials(self, cfg: StudyConfig) -> int:
        if cfg.conditional:
            return len(sample_trials(cfg, seed=0))
        grid = math.prod(len(p.values) for p in cfg.space if p.dist.exhaustive)
        return self.num_samples * grid

    def conditional_trials(self, cfg: StudyConfig) -> list[dict[str, Any]]:
        return sample_trials(cfg)


@dataclass(frozen=True)
class Optuna(Search):
    """``optuna``: an Optuna sampler proposes each trial from the finished ones;
    one or several objectives. Its study is mirrored into the study directory's
    ``optuna.journal`` (for optuna-dashboard).

    Attributes:
        sampler: A name of :data:`study._samplers.SAMPLERS`.
    """

    sampler: str = "tpe"
    name: ClassVar[str] = "optuna"
    keys: ClassVar[tuple[str, ...]] = ("sampler",)
    default_num_samples: ClassVar[int] = 20
    # TPE learns only from finished trials: many in flight means blind draws.
    default_max_concurrent: ClassVar[int | None] = 4
    multi_objective: ClassVar[bool] = True

    @classmethod
    def accepts(cls, dist: type[Distribution]) -> bool:
        return not dist.exhaustive

    @classmethod
    def check_listed_value(cls, value: Any, where: str) -> None:
        if not (value is None or isinstance(value, (bool, int, float, str))):
            raise StudyConfigError(
                where, value, "null, a boolean, a number or a string (Optuna choices)"
            )

    @classmethod
    def parse_settings(cls, raw: Mapping[str, Any], *, multi: bool) -> dict[str, Any]:
        sampler = raw.get("sampler")
        sampler = "tpe" if sampler is None else sampler
        if sampler not in SAMPLERS:
            raise StudyConfigError("search.sampler", sampler, one_of(SAMPLERS))
        if multi and not SAMPLERS[sampler].multi_objective:
            raise StudyConfigError(
                "search.sampler",
                sampler,
                one_of([s for s, m in SAMPLERS.items() if m.multi_objective])
                + " (several objectives)",
            )
        package = SAMPLERS[sampler].package
        if package and importlib.util.find_spec(package) is None:
            raise StudyConfigError(
                "search.sampler",
                sampler,
                f"a sampler whose package is installed ({sampler} needs `pip install {package}`)",
            )
        return {"sampler": sampler}

    def count_trials(self, cfg: StudyConfig) -> int:
        return self.num_samples

    def tune_space(self, cfg: StudyConfig, base: dict[str, Any]) -> TuneSpace:
        return TuneSpace(
            kind="optuna",
            param_space=base,
            num_samples=self.num_samples,
            points_to_evaluate=[dict(p) for p in self.points_to_evaluate] or None,
            optuna_space=OptunaSpace(cfg.space, cfg.condition_context()),
        )

    def searcher(self, cfg: StudyConfig, space: TuneSpace, run_name: str, study_dir: str) -> Any:
        from study import _storage
        from study._searchers import JournaledOptunaSearch
        from study._state import cache_dir

        journal_name = STUDY_FILES["optuna_journal"]
        if _storage.is_uri(study_dir):
            # Optuna's journal needs a local file: keep it in the cache, upload a copy.
            journal = str(cache_dir() / "journals" / run_name / journal_name)
            upload = _storage.join(study_dir, journal_name)
        else:
            journal, upload = _storage.join(study_dir, journal_name), None
        searcher = JournaledOptunaSearch(
            space=space.optuna_space,
            metric=cfg.metric,
            mode=cfg.mode,
            points_to_evaluate=space.points_to_evaluate,
            sampler=self.build_sampler(),
            study_name=run_name,
            journal_path=journal,
            journal_study=run_name,
            journal_upload=upload,
        )
        return wrap_searcher(searcher, cfg)

    def build_sampler(self) -> Any:
        """The Optuna sampler, seeded with :attr:`seed`."""
        import optuna

        # Optuna logs every study it creates or loads; Ray Tune shows the progress.
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return SAMPLERS[self.sampler].build(self.seed)


#: Study-file name → search algorithm class.
ALGORITHMS: dict[str, type[Search]] = {cls.name: cls for cls in (GridSearch, RandomSearch, Optuna)}
