"""The study layer's Ray Tune searchers, without running trials."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from study import build_tune_space, parse_study
from study._searchers import (
    JournaledOptunaSearch,
    ListSearcher,
    TrialDirname,
    journal_at,
    optuna_state,
)


def _load(path: Path, name: str) -> optuna.Study:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(path))))


def test_list_searcher_hands_out_the_list_then_finishes(tmp_path: Path) -> None:
    searcher = ListSearcher([{"a": 1}, {"a": 2}])
    assert searcher.set_search_properties("test_acc", "max", {})
    assert searcher.suggest("t1") == {"a": 1}
    assert searcher.suggest("t1") == {"a": 1}  # asked again: same trial, same config
    searcher.save(str(tmp_path / "state.pkl"))
    again = ListSearcher([])
    again.restore(str(tmp_path / "state.pkl"))
    assert again.suggest("t2") == {"a": 2}
    assert again.suggest("t3") == ListSearcher.FINISHED


def test_optuna_journal_mirror(base: dict[str, Any], tmp_path: Path) -> None:
    base["search"] = {"algorithm": "optuna", "num_samples": 3, "seed": 0}
    base["space"] = {
        "optimizer": {"choice": ["sam", "xsam"]},
        "rho_max": {"uniform": [0.1, 1.0], "when": {"optimizer": "xsam"}},
    }
    space = build_tune_space(parse_study(base)).optuna_space
    journal = tmp_path / "optuna.journal"
    searcher = JournaledOptunaSearch(
        space=space, metric="test_acc", mode="max", journal_path=str(journal), journal_study="s"
    )
    config = searcher.suggest("t1")
    assert ("rho_max" in config) == (config["optimizer"] == "xsam")
    searcher.on_trial_complete("t1", {"test_acc": 0.5, "training_iteration": 3})
    searcher.suggest("t2")
    searcher.on_trial_complete("t2", None, error=True)
    trials = _load(journal, "s").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL"]
    assert trials[0].value == 0.5 and trials[0].user_attrs["ray_trial_id"] == "t1"

    # a resumed study writes where resume_study says (the directory may have moved)
    moved = tmp_path / "moved.journal"
    with journal_at(str(moved)):
        searcher.suggest("t3")
        searcher.on_trial_complete("t3", {"test_acc": 0.7, "training_iteration": 3})
    assert len(_load(moved, "s").trials) == 3 and len(_load(journal, "s").trials) == 2
    assert searcher.journal_path == str(journal)  # only within the block


def test_optuna_state_reads_what_ray_keeps(base: dict[str, Any]) -> None:
    # Fails when Ray renames OptunaSearch's private study or trial table.
    base["search"] = {"algorithm": "optuna", "num_samples": 2, "seed": 0}
    base["space"] = {"optimizer": {"choice": ["sam", "xsam"]}}
    searcher = JournaledOptunaSearch(
        space=build_tune_space(parse_study(base)).optuna_space, metric="test_acc", mode="max"
    )
    searcher.suggest("t1")
    study, trials = optuna_state(searcher)
    assert list(trials) == ["t1"] and [t.number for t in study.trials] == [trials["t1"].number]


def test_a_broken_journal_does_not_stop_the_study(base: dict[str, Any], tmp_path: Path) -> None:
    base["search"] = {"algorithm": "optuna", "num_samples": 3}
    base["space"] = {"optimizer": {"choice": ["sam", "xsam"]}}
    space = build_tune_space(parse_study(base)).optuna_space
    blocker = tmp_path / "file"
    blocker.write_text("")
    searcher = JournaledOptunaSearch(
        space=space, metric="test_acc", mode="max", journal_path=str(blocker / "optuna.journal")
    )
    searcher.suggest("t1")
    searcher.on_trial_complete("t1", {"test_acc": 0.5, "training_iteration": 1})  # logs only


@pytest.mark.parametrize(
    ("config", "name"),
    [
        ({"optimizer": "sgd", "seed": 0, "epochs": 3}, "abc_optimizer=sgd,seed=0"),
        ({"optimizer": "xsam", "rho": 0.123456, "seed": 1}, "abc_optimizer=xsam,rho=0.1235,seed=1"),
        ({"epochs": 3}, "abc"),
    ],
)
def test_trial_folder_names(config: dict[str, Any], name: str) -> None:
    class Trial:
        trial_id = "abc"

    trial = Trial()
    trial.config = config  # type: ignore[attr-defined]
    assert TrialDirname(["optimizer", "steps", "rho", "seed"])(trial) == name


def test_list_searcher_state_is_json_and_a_pickle_is_refused_unread(tmp_path: Path) -> None:
    import json
    import os
    import pickle

    from study import StudyLaunchError

    searcher = ListSearcher([{"a": 1}, {"a": 2}])
    searcher.suggest("t1")
    state = tmp_path / "searcher-state-x.pkl"
    searcher.save(str(state))
    assert json.loads(state.read_text())["given"] == {"t1": 0}

    class Marker:
        def __reduce__(self):  # creates a file when unpickled
            return (os.mknod, (str(tmp_path / "pwned"),))

    for bad in (pickle.dumps({"trials": Marker()}), b"", b'{"format": "other"}'):
        state.write_bytes(bad)
        with pytest.raises(StudyLaunchError, match=f"searcher state {state}"):
            ListSearcher([]).restore(str(state))
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_optuna_state_is_json_and_a_restored_searcher_goes_on_like_the_original(
    base: dict[str, Any], tmp_path: Path, sampler: str
) -> None:
    """Saved mid-study (one trial finished, one drawn and running), restored into a
    searcher built afresh: the next draws equal the uninterrupted ones."""
    import json

    from study._samplers import SAMPLERS

    base["search"] = {"algorithm": "optuna", "num_samples": 6, "seed": 0, "sampler": sampler}
    base["space"] = {
        "optimizer": {"choice": ["sam", "xsam"]},
        "rho": {"uniform": [0.0, 1.0]},
    }
    space = build_tune_space(parse_study(base)).optuna_space

    def fresh() -> JournaledOptunaSearch:
        return JournaledOptunaSearch(
            space=space,
            metric="test_acc",
            mode="max",
            sampler=SAMPLERS[sampler].build(0),
            points_to_evaluate=[{"optimizer": "sam", "rho": 0.5}],  # t1; t2 on are drawn
        )

    original = fresh()
    original.suggest("t1")
    original.on_trial_result("t1", {"test_acc": 0.3, "training_iteration": 1})
    original.on_trial_complete("t1", {"test_acc": 0.4, "training_iteration": 2})
    original.suggest("t2")  # running when saved
    original.on_trial_result("t2", {"test_acc": 0.2, "training_iteration": 1})
    state = tmp_path / "searcher-state-x.pkl"
    original.save(str(state))
    saved = json.loads(state.read_text())  # JSON, not a pickle
    assert [t["state"] for t in saved["trials"]] == ["COMPLETE", "RUNNING"]

    restored = fresh()
    restored.restore(str(state))
    for searcher in (original, restored):
        searcher.on_trial_complete("t2", {"test_acc": 0.6, "training_iteration": 2})
    for trial_id in ("t3", "t4", "t5"):
        expected = original.suggest(trial_id)
        assert restored.suggest(trial_id) == expected
        for searcher in (original, restored):
            searcher.on_trial_complete(trial_id, {"test_acc": 0.5, "training_iteration": 2})
    assert [t.params for t in optuna_state(restored)[0].trials] == [
        t.params for t in optuna_state(original)[0].trials
    ]


def test_a_pickled_optuna_state_is_refused_unread(base: dict[str, Any], tmp_path: Path) -> None:
    import os
    import pickle

    from study import StudyLaunchError

    class Marker:
        def __reduce__(self):  # creates a file when unpickled
            return (os.mknod, (str(tmp_path / "pwned"),))

    base["search"] = {"algorithm": "optuna", "num_samples": 2, "seed": 0}
    base["space"] = {"optimizer": {"choice": ["sam", "xsam"]}}
    searcher = JournaledOptunaSearch(
        space=build_tune_space(parse_study(base)).optuna_space, metric="test_acc", mode="max"
    )
    state = tmp_path / "searcher-state-x.pkl"
    state.write_bytes(pickle.dumps({"_ot_study": Marker()}))
    with pytest.raises(StudyLaunchError, match=f"searcher state {state}: not JSON"):
        searcher.restore(str(state))
    assert not (tmp_path / "pwned").exists()
