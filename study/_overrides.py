"""``--set KEY=VALUE`` overrides applied to a parsed study file before validation."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

from study._errors import StudyConfigError, show_value
from study._yaml import load_yaml

__all__ = ["apply_overrides"]


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
