"""YAML reading with the two fixes study files need.

PyYAML follows YAML 1.1, where ``1e-3`` (no dot) is a *string*; a learning
rate written that way would fail validation with a confusing message, so
exponent floats are resolved as floats here. Duplicate keys, which PyYAML
silently collapses to the last one, are reported instead.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from study._errors import StudyConfigError

_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _Loader(yaml.SafeLoader):
    """Safe loader with exponent floats and duplicate-key detection."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise StudyConfigError(
                    f"{mark.name}:{mark.line + 1}",
                    key,
                    problem="duplicate key",
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML text with the study-file conventions.

    Args:
        text: YAML source.
        source: Name used in error messages (a file name or ``--set``).

    Returns:
        The parsed value.

    Raises:
        StudyConfigError: On a syntax error or a duplicate key.
    """
    try:
        loader = _Loader(text)
        loader.name = source
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except StudyConfigError:
        raise
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise StudyConfigError(source, problem=f"invalid YAML ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise StudyConfigError(where, problem=f"invalid YAML ({problem})") from None


def dump_yaml(data: Any) -> str:
    """Serialise plain data as block-style YAML that :func:`load_yaml` reads back."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, allow_unicode=True)
