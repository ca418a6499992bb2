"""The distribution classes: each kind's parse, draw, description, Tune domain and Optuna side."""

from __future__ import annotations

import random
from typing import Any

import optuna
import pytest
from ray import tune

from study import StudyConfigError
from study._algorithms import ALGORITHMS
from study._distributions import DISTRIBUTIONS, parse_distribution

SPECS: dict[str, tuple[Any, str, str]] = {
    # kind: (body, describe(), value type)
    "grid": ([1, 2, 5], "grid[1, 2, 5]", "int"),
    "choice": (["sam", "xsam"], "choice['sam', 'xsam']", "categorical"),
    "uniform": ([0.1, 0.9], "uniform(0.1, 0.9)", "float"),
    "loguniform": ([0.01, 1.0], "loguniform(0.01, 1.0)", "float"),
    "randint": ([1, 4], "randint(1, 4)", "int"),
    "quniform": ([0.0, 1.0, 0.25], "quniform(0.0, 1.0, q=0.25)", "float"),
}


def test_every_kind_is_registered() -> None:
    assert list(DISTRIBUTIONS) == list(SPECS)
    assert all(cls.kind == name for name, cls in DISTRIBUTIONS.items())


@pytest.mark.parametrize("kind", SPECS)
def test_parse_describe_and_round_trip(kind: str) -> None:
    body, text, value_type = SPECS[kind]
    dist, when = parse_distribution({kind: body, "when": {"optimizer": "xsam"}}, "space.p")
    assert type(dist) is DISTRIBUTIONS[kind] and when == {"optimizer": "xsam"}
    assert dist.describe() == text and dist.value_type() == value_type
    assert dist.body() == body and dist.log == (kind == "loguniform")
    assert parse_distribution({kind: dist.body()}, "space.p")[0] == dist


@pytest.mark.parametrize("kind", SPECS)
def test_draws_stay_inside(kind: str) -> None:
    dist, _ = parse_distribution({kind: SPECS[kind][0]}, "space.p")
    rng = random.Random(0)
    draws = [dist.draw(rng) for _ in range(200)]
    assert all(dist.contains(v) for v in draws)
    assert len({repr(v) for v in draws}) > 1
    if kind == "randint":
        assert set(draws) == {1, 2, 3, 4}  # both ends included
    if kind == "quniform":
        assert set(draws) <= {0.0, 0.25, 0.5, 0.75, 1.0}


@pytest.mark.parametrize("kind", SPECS)
def test_tune_domain(kind: str) -> None:
    dist, _ = parse_distribution({kind: SPECS[kind][0]}, "space.p")
    domain = dist.tune_domain()
    if kind == "grid":
        assert domain == {"grid_search": [1, 2, 5]}
        return
    assert isinstance(domain, tune.search.sample.Domain)
    if kind == "randint":
        assert (domain.lower, domain.upper) == (1, 5)  # Tune's upper end is exclusive
    rng = random.Random(1)
    values = domain.sample(size=50, random_state=rng.randint(0, 1000))
    assert all(dist.contains(int(v) if kind == "randint" else v) for v in values)


@pytest.mark.parametrize("kind", [k for k in SPECS if k != "grid"])
def test_optuna_suggestion_matches_its_distribution(kind: str) -> None:
    dist, _ = parse_distribution({kind: SPECS[kind][0]}, "space.p")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        value = dist.suggest(trial, "p")
        assert dist.contains(value)
        assert trial.distributions["p"] == dist.optuna_distribution()
        study.tell(trial, 0.0)


def test_grid_is_not_for_optuna() -> None:
    with pytest.raises(StudyConfigError, match=r"^space.p.grid: search.algorithm optuna"):
        parse_distribution({"grid": [1, 2]}, "space.p", ALGORITHMS["optuna"])
    with pytest.raises(StudyConfigError, match=r"^space.p: search.algorithm grid needs"):
        parse_distribution({"choice": [1, 2]}, "space.p", ALGORITHMS["grid"])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"uniform": [1, 0]}, r"^space.p.uniform: got \[1, 0\], allowed: \[lo, hi\] with lo < hi"),
        ({"loguniform": [0, 1]}, r"^space.p.loguniform\[0\]: got 0, allowed: a number > 0"),
        ({"randint": [1, 2.5]}, r"^space.p.randint\[1\]: got 2.5, allowed: an integer"),
        ({"quniform": [0, 1, 2]}, r"^space.p.quniform\[2\]: got 2, allowed: a step q"),
        ({"choice": []}, r"^space.p.choice: got \[\], allowed: a non-empty list"),
        ({"grid": [1, 1.0]}, r"^space.p.grid\[1\]: duplicate value"),
        ({"grdi": [1]}, r"^space.p.grdi: unknown key \(did you mean grid\?\)"),
        ({"grid": [1], "choice": [2]}, r"^space.p: got .*allowed: a mapping with one of"),
    ],
)
def test_invalid_bodies(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(StudyConfigError, match=message):
        parse_distribution(spec, "space.p")
