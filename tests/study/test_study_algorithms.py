"""The search algorithm classes (study/_algorithms.py): every registered one, and a toy
one registered the way CONTRIBUTING.md says, which validation, the dry run,
``study.json`` and a real run pick up; an unknown name is refused naming every
registered one."""

from __future__ import annotations

import copy
import itertools
import json
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from ray.tune.search import SearchAlgorithm

from study import StudyConfigError, build_tune_space, parse_study, run_study
from study._algorithms import ALGORITHMS, Search, wrap_searcher
from study._distributions import DISTRIBUTIONS, parse_distribution
from study._report import describe_study
from study._schema import StudyConfig
from study.cli import main
from study.space import TuneSpace, count_trials

CLI = Path(sys.executable).parent / "xsam-tune"
TWO_METRICS = [{"name": "test_acc", "mode": "max"}, {"name": "test_loss", "mode": "min"}]


@dataclass(frozen=True)
class Corners(Search):
    """Toy ``corners``: every combination of each parameter's listed values or range
    ends (conditions ignored), ``num_samples`` times; ``reverse`` lists them backwards."""

    reverse: bool = False
    name: ClassVar[str] = "corners"
    keys: ClassVar[tuple[str, ...]] = ("reverse",)
    takes_points: ClassVar[bool] = False

    @classmethod
    def parse_settings(cls, raw: Mapping[str, Any], *, multi: bool) -> dict[str, Any]:
        reverse = raw.get("reverse", False)
        if not isinstance(reverse, bool):
            raise StudyConfigError("search.reverse", reverse, "true or false")
        return {"reverse": reverse}

    def listed_trials(self, cfg: StudyConfig, *, repeat: bool = True) -> list[dict] | None:
        ends = [p.values or (p.dist.low, p.dist.high) for p in cfg.space]
        trials = [dict(zip(cfg.params, combo, strict=True)) for combo in itertools.product(*ends)]
        trials = trials[::-1] if self.reverse else trials
        return trials * (self.num_samples if repeat else 1)

    def count_trials(self, cfg: StudyConfig) -> int:
        return len(self.listed_trials(cfg) or [])

    def tune_space(self, cfg: StudyConfig, base: dict[str, Any]) -> TuneSpace:
        trials = self.listed_trials(cfg) or []
        return TuneSpace(kind="list", param_space=base, num_samples=len(trials), trials=trials)

    def searcher(self, cfg: StudyConfig, space: TuneSpace, run_name: str, study_dir: str) -> Any:
        from study._searchers import ListSearcher

        return wrap_searcher(ListSearcher(space.trials or []), cfg)


@pytest.fixture
def corners(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[Search]]:
    """The toy algorithm, registered for the test's duration."""
    monkeypatch.setitem(ALGORITHMS, Corners.name, Corners)
    yield Corners


def _kind_for(algorithm: type[Search]) -> str:
    """The first distribution kind the algorithm searches."""
    return next(kind for kind, cls in DISTRIBUTIONS.items() if algorithm.accepts(cls))


def _study(base: dict[str, Any], search: dict[str, Any], **more: Any) -> dict[str, Any]:
    kind = _kind_for(ALGORITHMS[search["algorithm"]])
    return {**copy.deepcopy(base), "space": {"seed": {kind: [0, 1]}}, "search": search, **more}


def test_every_algorithm_is_registered_under_its_name() -> None:
    assert list(ALGORITHMS) == ["grid", "random", "optuna"]
    assert all(c.name == name and issubclass(c, Search) for name, c in ALGORITHMS.items())


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_each_algorithm_round_trips_counts_describes_and_builds_its_searcher(
    base: dict[str, Any], name: str, tmp_path: Path
) -> None:
    cls = ALGORITHMS[name]
    cfg = parse_study(_study(base, {"algorithm": name, "seed": 7}))
    assert type(cfg.search) is cls and cfg.search.algorithm == name
    assert cfg.search.num_samples == cls.default_num_samples
    assert cfg.search.max_concurrent == cls.default_max_concurrent
    written = cfg.to_dict()["search"]
    assert written["algorithm"] == name and parse_study({**cfg.to_dict(), "search": written}) == cfg
    assert list(written) == ["algorithm", "num_samples", "seed", *cls.keys, "max_concurrent"]
    assert cfg.search.describe().startswith(name) and cfg.search.describe().endswith(", seed 7")
    assert f"({cfg.search.describe()})" in describe_study(cfg).splitlines()[0]
    space = build_tune_space(cfg)
    listed = cfg.search.listed_trials(cfg)
    # the count is the trials the Tuner gets: listed ones, a grid repeated, or draws
    grids = 2 if space.kind == "native" and _kind_for(cls) == "grid" else 1
    assert count_trials(cfg) == (len(listed) if listed is not None else space.num_samples * grids)
    searcher = cfg.search.searcher(cfg, space, "run", str(tmp_path / "run"))
    assert isinstance(searcher, SearchAlgorithm)


@pytest.mark.parametrize(
    ("name", "kind"),
    [(n, k) for n, a in ALGORITHMS.items() for k, d in DISTRIBUTIONS.items() if not a.accepts(d)],
)
def test_an_algorithm_refuses_a_kind_it_cannot_search_naming_those_it_can(
    name: str, kind: str
) -> None:
    algorithm = ALGORITHMS[name]
    with pytest.raises(StudyConfigError) as err:
        parse_distribution({kind: [0.1, 0.5]}, "space.p", algorithm)
    message = str(err.value)
    assert message.startswith("space.p") and "\n" not in message
    assert f"search.algorithm {name}" in message
    accepted = [k for k, d in DISTRIBUTIONS.items() if algorithm.accepts(d)]
    assert all(k in message.partition("allowed: ")[2] for k in accepted)


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_several_objectives_only_where_the_algorithm_takes_them(
    base: dict[str, Any], name: str
) -> None:
    data = _study(base, {"algorithm": name}, metric=TWO_METRICS)
    if ALGORITHMS[name].multi_objective:
        assert parse_study(data).multi_objective
        return
    with pytest.raises(StudyConfigError) as err:
        parse_study(data)
    able = [n for n, c in ALGORITHMS.items() if c.multi_objective]
    assert str(err.value).startswith("metric: ")
    assert str(err.value).endswith(f"need search.algorithm {' or '.join(able)})")


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_points_to_evaluate_only_where_the_algorithm_takes_them(
    base: dict[str, Any], name: str
) -> None:
    data = _study(base, {"algorithm": name, "points_to_evaluate": [{"seed": 1}]})
    if ALGORITHMS[name].takes_points:
        assert parse_study(data).search.points_to_evaluate == ({"seed": 1},)
        return
    with pytest.raises(StudyConfigError, match=r"^search.points_to_evaluate: got .* allowed: "):
        parse_study(data)


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_another_algorithms_key_is_refused(base: dict[str, Any], name: str) -> None:
    for other, cls in ALGORITHMS.items():
        for key in cls.keys:
            if key in ALGORITHMS[name].keys:
                continue
            with pytest.raises(StudyConfigError) as err:
                parse_study(_study(base, {"algorithm": name, key: "x"}))
            assert str(err.value) == (
                f"search.{key}: got 'x', allowed: nothing (a {key} is only for algorithm {other})"
            )


def test_a_registered_algorithm_is_validated_described_and_written_back(
    corners: type[Search], base: dict[str, Any]
) -> None:
    base["space"] = {"rho": {"uniform": [0.1, 0.5]}, "steps": {"choice": [1, 2]}}
    base["search"] = {"algorithm": "corners", "reverse": True}
    cfg = parse_study(base)
    assert cfg.search == Corners(reverse=True)
    assert cfg.to_dict()["search"] == {
        "algorithm": "corners",
        "num_samples": 1,
        "seed": None,
        "reverse": True,
        "max_concurrent": None,
    }
    assert parse_study(cfg.to_dict()) == cfg
    assert count_trials(cfg) == 4
    text = describe_study(cfg)
    assert text.startswith("study tiny: 4 trials (corners, reverse true)\n")
    assert text.rstrip().endswith("3  0.1  1")  # the listed trials, last one first
    # its own key's check, and the key refused for the others
    base["search"] = {"algorithm": "corners", "reverse": "yes"}
    with pytest.raises(StudyConfigError, match=r"^search\.reverse: got 'yes', allowed: true"):
        parse_study(base)
    base["search"] = {"algorithm": "random", "reverse": True}
    with pytest.raises(StudyConfigError, match=r"only for algorithm corners\)$"):
        parse_study(base)
    # its listed trials go through the trial validator, as a grid's do
    del base["trial"]["epochs"]
    base["space"] = {"epochs": {"grid": [3]}, "warmup_epochs": {"choice": [1, 5]}}
    base["search"] = {"algorithm": "corners"}
    with pytest.raises(StudyConfigError, match=r"in the trial epochs=3, warmup_epochs=5"):
        parse_study(base)


@pytest.mark.ray
def test_a_registered_algorithm_runs_a_study(
    corners: type[Search], trainable: Any, base: dict[str, Any], tmp_path: Path
) -> None:
    base["trial"]["epochs"] = 1
    base["space"] = {"rho": {"uniform": [0.1, 0.5]}, "steps": {"choice": [1, 2]}}
    base["search"] = {"algorithm": "corners"}
    results = run_study(parse_study(base), storage=str(tmp_path), trainable=trainable, verbose=0)
    assert results.num_errors == 0
    ran = sorted((r.config["rho"], r.config["steps"]) for r in results)
    assert ran == [(0.1, 1), (0.1, 2), (0.5, 1), (0.5, 2)]
    info = json.loads((Path(results.experiment_path) / "study.json").read_text())
    assert info["search"]["algorithm"] == "corners" and info["num_trials"] == 4


def test_an_unknown_algorithm_is_refused_naming_every_registered_one(
    corners: type[Search], base: dict[str, Any], tmp_path: Path, capsys
) -> None:
    expected = "search.algorithm: got 'bayes', allowed: one of grid, random, optuna, corners"
    base["search"] = {"algorithm": "bayes"}
    with pytest.raises(StudyConfigError) as err:
        parse_study(base)
    assert str(err.value) == expected
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(base))
    assert main(["run", str(path), "--dry-run"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err == f"xsam-tune: error: {expected}\n"


def test_the_installed_cli_refuses_an_unknown_algorithm_in_one_line(
    base: dict[str, Any], tmp_path: Path
) -> None:
    base["search"] = {"algorithm": "bayes"}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(base))
    out = subprocess.run(
        [str(CLI), "run", str(path), "--dry-run"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == (
        "xsam-tune: error: search.algorithm: got 'bayes', allowed: one of grid, random, optuna\n"
    )


def test_no_module_switches_on_an_algorithm_or_scheduler_name() -> None:
    """What an algorithm or scheduler does lives in its class: no other study module
    compares a name of :data:`ALGORITHMS` or :data:`SCHEDULERS`."""
    from study._schedulers import SCHEDULERS

    names = "|".join([*ALGORITHMS, *SCHEDULERS])
    switch = re.compile(rf"""(==|!=|\bin\b)\s*[("']*({names})["']""")
    package = Path(__file__).parents[2] / "study"
    owners = {"_algorithms.py", "_schedulers.py"}
    found = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(package.glob("*.py"))
        if path.name not in owners
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if switch.search(line)
    ]
    assert found == []
