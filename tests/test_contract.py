"""xsam_contract and docs/contract.md hold each other; the contract imports no heavy module."""

from __future__ import annotations

import copy
import json
import pickle
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import xsam_contract as contract

DOC = Path(__file__).parents[1] / "docs" / "contract.md"


def _fmt(value: Any) -> str:
    """A default as the document writes it (YAML spelling)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return str(value)


def _tables(text: str) -> dict[str, list[list[str]]]:
    """Section heading → the rows of its tables whose first cell is a backticked name."""
    out: dict[str, list[list[str]]] = {}
    heading = ""
    for line in text.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("| `"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            out.setdefault(heading, []).append([c.strip("`") for c in cells])
    return out


def _fields(table: dict[str, contract.Field]) -> list[tuple[str, str]]:
    return [(name, f.dtype) for name, f in table.items()]


#: Section → (what the module holds, what the section's rows say), compared as lists.
CHECKS: dict[str, tuple[Callable[[], list], Callable[[list[list[str]]], list]]] = {
    "Public names": (lambda: sorted(contract.__all__), lambda rows: sorted(r[0] for r in rows)),
    "Trial keys": (
        lambda: [(n, k.allowed, _fmt(k.default), k.dtype) for n, k in contract.TRIAL_KEYS.items()],
        lambda rows: [tuple(r[:4]) for r in rows],
    ),
    "Optimizers": (
        lambda: list(contract.OPTIMIZERS.items()),
        lambda rows: [tuple(r[:2]) for r in rows],
    ),
    "Datasets": (
        lambda: list(contract.DATASETS.items()),
        lambda rows: [tuple(r[:2]) for r in rows],
    ),
    "Models": (lambda: list(contract.MODELS.items()), lambda rows: [tuple(r[:2]) for r in rows]),
    "Metrics row": (lambda: _fields(contract.METRICS), lambda rows: [tuple(r[:2]) for r in rows]),
    "Probe record": (
        lambda: _fields(contract.PROBE_FIELDS),
        lambda rows: [tuple(r[:2]) for r in rows],
    ),
    "Study directory": (
        lambda: list(contract.STUDY_FILES.items()),
        lambda rows: [tuple(r[:2]) for r in rows],
    ),
    "study.json": (
        lambda: _fields(contract.STUDY_FIELDS),
        lambda rows: [tuple(r[:2]) for r in rows],
    ),
    "Trial statuses": (lambda: list(contract.STATUSES), lambda rows: [r[0] for r in rows]),
}


def mismatches(text: str) -> list[str]:
    """Every disagreement between the document ``text`` and the module."""
    tables = _tables(text)
    problems = [f"table in section {s!r} is not checked" for s in tables if s not in CHECKS]
    for section, (module, document) in CHECKS.items():
        want, got = module(), document(tables.get(section, []))
        if want != got:
            extra = [x for x in got if x not in want]
            missing = [x for x in want if x not in got]
            problems.append(f"{section}: missing {missing}, not in the module {extra}, or order")
    sections = re.split(r"^## ", text, flags=re.M)
    accuracy = next((s for s in sections if s.startswith("Accuracy")), "")
    if f"`{contract.ACCURACY_UNIT}`" not in accuracy:
        problems.append(f"Accuracy: the unit {contract.ACCURACY_UNIT!r} is not named")
    named = set(re.findall(r"`([A-Za-z_0-9.]+)`", text))
    for group in ("ACCURACY_COLUMNS", "TIME_COLUMNS", "CPU_TIME_COLUMNS"):
        absent = [c for c in getattr(contract, group) if c not in named]
        if absent or group not in named:
            problems.append(f"{group}: {absent or group} not in the document")
    return problems


def test_document_and_module_agree() -> None:
    assert mismatches(DOC.read_text()) == []


def test_the_check_sees_a_missing_row_a_wrong_dtype_and_an_extra_name() -> None:
    text = DOC.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `rho_max` |"))
    assert any("Trial keys" in p for p in mismatches(text.replace(row + "\n", "")))
    changed = text.replace("| `test_acc` | float64 |", "| `test_acc` | string |")
    assert changed != text and any("Metrics row" in p for p in mismatches(changed))
    extra = text.replace(
        "| `fake` | `trainables.data:_load_fake` |",
        "| `fake` | `trainables.data:_load_fake` |\n| `imagenet` | `trainables.data:_load_x` |",
    )
    assert extra != text and any("Datasets" in p for p in mismatches(extra))
    assert any("not checked" in p for p in mismatches(text + "\n## Other\n\n| `x` | y |\n"))


def test_importing_the_contract_leaves_torch_ray_and_pandas_out() -> None:
    code = (
        "import sys, xsam_contract as c\n"
        "c.validate_trial_config({'optimizer': 'sam', 'dataset': 'fake'})\n"
        "c.OPTIMIZERS.check('xsam')\n"
        "heavy = [m for m in ('torch', 'ray', 'pandas', 'trainables', 'study', 'analysis')"
        " if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_registry_errors_name_the_registry_and_its_names() -> None:
    with pytest.raises(contract.RegistryError) as err:
        contract.MODELS.load("resnet50")
    assert str(err.value) == "unknown model 'resnet50'; choose one of " + ", ".join(contract.MODELS)
    with pytest.raises(ValueError, match="module:attribute"):
        contract.MODELS.register("broken", "no_colon")
    contract.MODELS.register("broken", "trainables.models:_no_such_builder")
    try:
        with pytest.raises(ImportError, match="model 'broken' is registered as"):
            contract.MODELS.load("broken")
    finally:
        contract.MODELS.unregister("broken")
    assert "broken" not in contract.MODELS


def test_a_registered_name_is_allowed_and_listed_in_errors() -> None:
    contract.DATASETS.register("toy", "trainables.data:_load_fake")
    try:
        assert contract.validate_trial_config({"dataset": "toy"})["dataset"] == "toy"
        with pytest.raises(contract.ConfigError) as err:
            contract.validate_trial_config({"dataset": "imagenet"})
        assert err.value.field == "dataset" and "toy" in str(err.value)
    finally:
        contract.DATASETS.unregister("toy")
    with pytest.raises(contract.ConfigError, match="dataset: 'toy' is not allowed"):
        contract.validate_trial_config({"dataset": "toy"})


def test_errors_and_registries_survive_pickling() -> None:
    # Ray copies a trial's exception and sends trainables to workers by value.
    error = contract.ConfigError("trial.lr", -1, "a number in (0, inf)")
    for copied in (copy.copy(error), pickle.loads(pickle.dumps(error))):
        assert (copied.field, copied.value, str(copied)) == ("trial.lr", -1, str(error))
    missing = contract.RegistryError("model", "x", ("mlp",))
    assert str(pickle.loads(pickle.dumps(missing))) == str(missing)
    # The project's registries arrive as the receiving process's own table, others as copies.
    assert pickle.loads(pickle.dumps(contract.OPTIMIZERS)) is contract.OPTIMIZERS
    other = contract.Registry("thing", {"a": "m:f"})
    arrived = pickle.loads(pickle.dumps(other))
    assert arrived is not other and dict(arrived) == dict(other) and arrived.kind == "thing"
