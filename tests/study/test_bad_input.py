"""The bad-input suite (issue 9): every case exits 2 with one line naming the field.

Each row is a study file (the tiny grid of ``conftest.BASE`` changed one way,
or raw bytes), command-line arguments, or a study directory to resume. The
command runs in this process (``study.cli.main``) with ``--dry-run`` where the
input is a study file, so no case starts Ray: every check happens before.
Asserted for each: exit code 2, stderr exactly one line
``xsam-tune: error: <field>…``, no traceback, and a bounded time (an alias
bomb must not hang the message).
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from study._yaml import dump_yaml
from study.cli import main
from tests.study.conftest import BASE

#: Seconds one case may take (validation only; generous for a loaded machine).
LIMIT_S = 20

Change = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Change:
    """Set a dotted path of the study (``trial.lr``) to a value."""

    def change(study: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = study
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return change


def _drop(path: str) -> Change:
    def change(study: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = study
        for key in parents:
            node = node[key]
        del node[last]

    return change


def _both(*changes: Change) -> Change:
    def change(study: dict[str, Any]) -> None:
        for c in changes:
            c(study)

    return change


# (id, change of the study, the field the line must name)
STUDY_CASES: list[tuple[str, Change, str]] = [
    # top level
    ("name-missing", _drop("name"), "name"),
    ("name-slash", _set("name", "a/b"), "name"),
    ("name-too-long", _set("name", "n" * 300), "name"),
    ("name-not-string", _set("name", 123), "name"),
    ("name-dots", _set("name", ".."), "name"),
    ("unknown-top-key", _set("trials", {}), "trials"),
    ("description-list", _set("description", [1]), "description"),
    ("storage-empty", _set("storage", ""), "storage"),
    ("storage-scheme", _set("storage", "ftp://host/x"), "storage"),
    ("max-failures-low", _set("max_failures", -2), "max_failures"),
    ("max-failures-huge", _set("max_failures", 10**9), "max_failures"),
    ("keep-checkpoints-0", _set("keep_checkpoints", 0), "keep_checkpoints"),
    ("checkpoint-every-neg", _set("checkpoint_every", -1), "checkpoint_every"),
    ("checkpoint-every-float", _set("checkpoint_every", 0.5), "checkpoint_every"),
    ("max-concurrent-trials-0", _set("max_concurrent_trials", 0), "max_concurrent_trials"),
    # trial settings that reach torch or the OS
    ("trial-not-mapping", _set("trial", [1, 2]), "trial"),
    ("trial-unknown-key", _set("trial.lrate", 0.1), "trial.lrate"),
    ("lr-negative", _set("trial.lr", -0.1), "trial.lr"),
    ("lr-inf", _set("trial.lr", math.inf), "trial.lr"),
    ("lr-nan", _set("trial.lr", math.nan), "trial.lr"),
    ("lr-string", _set("trial.lr", "fast"), "trial.lr"),
    ("epochs-0", _set("trial.epochs", 0), "trial.epochs"),
    ("epochs-1e9", _set("trial.epochs", 1e9), "trial.epochs"),
    ("batch-size-1e12", _set("trial.batch_size", 1e12), "trial.batch_size"),
    ("batch-size-bool", _set("trial.batch_size", True), "trial.batch_size"),
    ("seed-1e23", _set("trial.seed", 1e23), "trial.seed"),
    ("seed-2e64", _set("trial.seed", 2**64), "trial.seed"),
    ("seed-negative", _set("trial.seed", -1), "trial.seed"),
    ("threads-1e9", _set("trial.threads", 1e9), "trial.threads"),
    ("threads-negative", _set("trial.threads", -1), "trial.threads"),
    ("num-workers-10000", _set("trial.num_workers", 10000), "trial.num_workers"),
    ("image-size-huge", _set("trial.image_size", 100000), "trial.image_size"),
    ("fake-shape-zero", _set("trial.fake_shape", [0, 8]), "trial.fake_shape"),
    ("fake-shape-5d", _set("trial.fake_shape", [1, 2, 3, 4, 5]), "trial.fake_shape"),
    ("fake-classes-1", _set("trial.fake_classes", 1), "trial.fake_classes"),
    ("steps-1e6", _set("trial.steps", 10**6), "trial.steps"),
    ("alpha-delta-tiny", _set("trial.alpha_delta", 1e-12), "trial.alpha_delta"),
    ("warmup-ge-epochs", _set("trial.warmup_epochs", 3), "trial.warmup_epochs"),
    ("momentum-1", _set("trial.momentum", 1.0), "trial.momentum"),
    ("augment-string", _set("trial.augment", "yes"), "trial.augment"),
    ("precision-fp8", _set("trial.precision", "fp8"), "trial.precision"),
    ("device-tpu", _set("trial.device", "tpu"), "trial.device"),
    ("dataset-unknown", _set("trial.dataset", "imagenet"), "trial.dataset"),
    ("model-unknown", _set("trial.model", "vit"), "trial.model"),
    ("checkpoint-every-in-trial", _set("trial.checkpoint_every", 1), "trial.checkpoint_every"),
    # space
    ("space-unknown-key", _set("space.lrate", {"grid": [0.1]}), "space.lrate"),
    ("space-empty-grid", _set("space.seed", {"grid": []}), "space.seed"),
    ("space-bad-grid-value", _set("space.seed", {"grid": [0, -1]}), "space.seed.grid[1]"),
    ("space-seed-1e23", _set("space.seed", {"grid": [0, 1e23]}), "space.seed.grid[1]"),
    ("space-unknown-kind", _set("space.seed", {"gird": [0]}), "space.seed"),
    ("space-when-unknown", _set("space.steps.when", {"optimiser": "sam"}), "space.steps.when"),
    ("space-when-never", _set("space.steps.when", {"optimizer": "gsam"}), "space.steps.when"),
    ("space-checkpoint-every", _set("space.checkpoint_every", {"grid": [1]}), "space"),
    ("space-lr-uniform-0", _set("space.lr", {"uniform": [0.0, 1.0]}), "space.lr"),
    # search
    ("search-algorithm", _set("search.algorithm", "bayes"), "search.algorithm"),
    ("search-num-samples-0", _set("search.num_samples", 0), "search.num_samples"),
    ("search-num-samples-huge", _set("search.num_samples", 10**12), "search.num_samples"),
    ("search-seed-1e23", _set("search.seed", 1e23), "search.seed"),
    ("search-seed-2e70", _set("search.seed", 2**70), "search.seed"),
    ("search-seed-negative", _set("search.seed", -1), "search.seed"),
    ("search-sampler-on-grid", _set("search.sampler", "tpe"), "search.sampler"),
    ("search-points-on-grid", _set("search.points_to_evaluate", [{"seed": 0}]), "search"),
    ("search-max-concurrent-0", _set("search.max_concurrent", 0), "search.max_concurrent"),
    ("search-unknown-key", _set("search.samples", 3), "search.samples"),
    # metric
    ("metric-missing", _drop("metric"), "metric"),
    ("metric-unknown", _set("metric.name", "accuracy"), "metric.name"),
    ("metric-mode", _set("metric.mode", "best"), "metric.mode"),
    ("metric-string", _set("metric", "test_acc"), "metric"),
    # scheduler
    ("scheduler-name", _set("scheduler", {"name": "pbt"}), "scheduler.name"),
    (
        "scheduler-grace-0",
        _set("scheduler", {"name": "asha", "grace_period": 0}),
        "scheduler.grace_period",
    ),
    (
        "scheduler-factor-inf",
        _set("scheduler", {"name": "asha", "reduction_factor": math.inf}),
        "scheduler.reduction_factor",
    ),
    (
        "scheduler-max-t-huge",
        _set("scheduler", {"name": "asha", "max_t": 10**12}),
        "scheduler.max_t",
    ),
    # resources that reach Ray
    ("cpu-inf", _set("resources.cpu", math.inf), "resources.cpu"),
    ("cpu-nan", _set("resources.cpu", math.nan), "resources.cpu"),
    ("cpu-zero", _set("resources.cpu", 0), "resources.cpu"),
    ("cpu-1e9", _set("resources.cpu", 1e9), "resources.cpu"),
    ("gpu-negative", _set("resources.gpu", -1), "resources.gpu"),
    ("gpu-inf", _set("resources.gpu", math.inf), "resources.gpu"),
    ("gpu-1.5", _set("resources.gpu", 1.5), "resources.gpu"),
    ("gpu-0-with-cuda", _both(_set("trial.device", "cuda")), "resources.gpu"),
    ("resources-unknown", _set("resources.memory", 1), "resources.memory"),
]

# (id, raw bytes of the study file, the field the line must name); {path} is the file
ALIAS_BOMB = 'name: tiny\na0: &a0 ["x","x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10)
)
# The same bomb inside trial.lr: [[x]*10, [that]*10, …] nine levels deep
VALUE_BOMB = "name: tiny\ntrial:\n  lr:\n    - &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"    - &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10)
)
TEXT_CASES: list[tuple[str, bytes, str]] = [
    ("not-utf8", b"name: caf\xe9\n", "{path}"),
    ("yaml-syntax", b"name: x\ntrial: {epochs: 3\n", "{path}:3"),
    ("duplicate-key", b"name: x\nname: y\n", "{path}:2"),
    ("top-level-list", b"- name: x\n", "{path}"),
    ("integer-5000-digits", b"name: x\ntrial: {seed: " + b"9" * 5000 + b"}\n", "{path}"),
    ("alias-bomb-unknown-key", ALIAS_BOMB.encode(), "a0"),
    ("alias-bomb-in-a-value", VALUE_BOMB.encode(), "trial.lr"),
]


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert "Traceback" not in captured.err + captured.out
    assert len(lines) == 1, captured.err
    return lines[0]


def _check(argv: list[str], field: str, capsys: pytest.CaptureFixture[str]) -> str:
    start = time.monotonic()
    assert main(argv) == 2
    assert time.monotonic() - start < LIMIT_S
    line = _one_line(capsys)
    assert line.startswith(f"xsam-tune: error: {field}"), line
    return line


@pytest.mark.parametrize(
    ("change", "field"), [c[1:] for c in STUDY_CASES], ids=[c[0] for c in STUDY_CASES]
)
def test_bad_study_file(tmp_path: Path, change: Change, field: str, capsys) -> None:
    study = copy.deepcopy(BASE)
    change(study)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    _check(["run", str(path), "--dry-run"], field, capsys)


@pytest.mark.parametrize(
    ("text", "field"), [c[1:] for c in TEXT_CASES], ids=[c[0] for c in TEXT_CASES]
)
def test_bad_study_text(tmp_path: Path, text: bytes, field: str, capsys) -> None:
    path = tmp_path / "study.yaml"
    path.write_bytes(text)
    _check(["run", str(path), "--dry-run"], field.format(path=path), capsys)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--set", "trial.epochs"], "--set trial.epochs"),
        (["--set", "trial.nosuch=1"], "trial.nosuch"),
        (["--set", "resources.cpu=.inf"], "resources.cpu"),
        (["--set", "trial.threads=1e9"], "trial.threads"),
    ],
    ids=["set-no-value", "set-unknown-key", "set-cpu-inf", "set-threads-1e9"],
)
def test_bad_override(tmp_path: Path, args: list[str], field: str, capsys) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(copy.deepcopy(BASE), sort_keys=False))
    _check(["run", str(path), "--dry-run", *args], field, capsys)


def test_study_file_is_a_directory(tmp_path: Path, capsys) -> None:
    _check(["run", str(tmp_path), "--dry-run"], str(tmp_path), capsys)


def test_study_file_missing(tmp_path: Path, capsys) -> None:
    _check(["run", str(tmp_path / "nope.yaml"), "--dry-run"], "file not found", capsys)


@pytest.mark.parametrize(
    ("name", "field"),
    [("a/b", "--name"), ("x" * 300, "--name")],
    ids=["name-option-slash", "name-option-too-long"],
)
def test_bad_name_option_before_ray_starts(tmp_path: Path, name: str, field: str, capsys) -> None:
    """Without --dry-run: refused before Ray starts (this process never connects)."""
    import ray

    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(copy.deepcopy(BASE), sort_keys=False))
    was = ray.is_initialized()
    _check(["run", str(path), "--storage", str(tmp_path / "s"), "--name", name], field, capsys)
    assert ray.is_initialized() == was
    assert not (tmp_path / "s").exists()


# -- resume of a damaged study directory: refused before Ray starts -----------


def _study_dir(tmp_path: Path) -> Path:
    """A study directory as the launcher leaves it before Ray writes anything."""
    from study import parse_study

    study_dir = tmp_path / "tiny"
    study_dir.mkdir()
    spec = parse_study(copy.deepcopy(BASE)).to_dict()
    (study_dir / "study.yaml").write_text(dump_yaml(spec))
    record = {"name": "tiny", "space": spec["space"], "trial": spec["trial"]}
    (study_dir / "study.json").write_text(json.dumps({**record, "search": spec["search"]}))
    (study_dir / "tuner.pkl").write_bytes(b"\x80\x05N.")  # framing of a whole pickle
    return study_dir


@pytest.mark.parametrize(
    ("file", "content", "field"),
    [
        ("study.json", b"{garbage", "{dir}/study.json"),
        ("study.json", b"[1, 2]", "{dir}/study.json"),
        ("study.json", b"\xff\xfe", "{dir}/study.json"),
        ("study.yaml", b"name: [", "{dir}/study.yaml"),
        ("tuner.pkl", b"garbage", "Ray state {dir}/tuner.pkl"),
        ("tuner.pkl", b"", "Ray state {dir}/tuner.pkl"),
        ("experiment_state-2026-01-01_00-00-00.json", b'{"trial_da', "run state {dir}/"),
        ("searcher-state-2026-01-01_00-00-00.pkl", b"\x80\x05N.", "searcher state {dir}/"),
        (
            "searcher-state-2026-01-01_00-00-00.pkl",
            json.dumps(
                {"format": "xsam-tune list searcher 1", "trials": [{"optimizer": "adamw"}]}
            ).encode(),
            "searcher state {dir}/",
        ),
        (
            "searcher-state-2026-01-01_00-00-00.pkl",
            json.dumps({"format": "xsam-tune optuna searcher 1", "trials": [{"x": 0}]}).encode(),
            "searcher state {dir}/",
        ),
        ("searcher-state-2026-01-01_00-00-00.pkl", b'{"format": "other"}', "searcher state {dir}/"),
    ],
    ids=[
        "study-json-garbage",
        "study-json-list",
        "study-json-not-utf8",
        "study-yaml-garbage",
        "tuner-pkl-garbage",
        "tuner-pkl-empty",
        "run-state-truncated",
        "searcher-state-pickle",
        "searcher-state-foreign-trial",
        "searcher-state-optuna-garbled",
        "searcher-state-unknown-format",
    ],
)
def test_resume_of_a_damaged_study(
    tmp_path: Path, file: str, content: bytes, field: str, capsys
) -> None:
    import ray

    study_dir = _study_dir(tmp_path)
    (study_dir / file).write_bytes(content)
    was = ray.is_initialized()
    line = _check(["resume", str(study_dir)], field.format(dir=study_dir), capsys)
    assert ray.is_initialized() == was  # refused before Ray starts
    assert "resume" in line or "restore" in line or "yaml" in line  # says how to recover


def test_resume_of_a_directory_that_is_no_study(tmp_path: Path, capsys) -> None:
    _check(["resume", str(tmp_path)], "not an xsam-tune study directory", capsys)


def test_the_suite_has_at_least_60_cases() -> None:
    assert len(STUDY_CASES) + len(TEXT_CASES) + 4 + 2 + 2 + 11 + 1 + 1 >= 60


@pytest.fixture
def read_only_dir(tmp_path: Path):
    """A directory nobody may write: mode 0555, or as root (who may write anyway) a
    read-only tmpfs mounted there."""
    import subprocess

    path = tmp_path / "ro"
    path.mkdir()
    if os.geteuid() != 0:
        os.chmod(path, 0o555)
        yield path
        os.chmod(path, 0o755)
        return
    mount = ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)]
    if subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("running as root without the right to mount: no read-only directory")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)


def test_read_only_storage_before_ray_starts(read_only_dir: Path, tmp_path: Path, capsys) -> None:
    import ray

    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(copy.deepcopy(BASE), sort_keys=False))
    was = ray.is_initialized()
    _check(["run", str(path), "--storage", str(read_only_dir / "studies")], "storage", capsys)
    assert ray.is_initialized() == was
