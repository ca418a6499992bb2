"""Registries: name → where its builder lives, imported only when a trial builds it.

The allowed names of every registry are its keys; an unknown name is an
error everywhere, never a default. Builders are ``"module:attribute"``
strings so that this module stays free of torch: the study layer checks
names without importing the trial layer.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any


class RegistryError(ValueError):
    """An unknown name: says which registry and what it holds."""

    def __init__(self, kind: str, name: Any, names: tuple[str, ...]) -> None:
        self.kind, self.name, self.names = kind, name, names
        super().__init__(f"unknown {kind} {name!r}; choose one of {', '.join(names)}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Ray copies and pickles a trial's exception: rebuild it from its fields.
        return (type(self), (self.kind, self.name, self.names))


class Registry(Mapping[str, str]):
    """An ordered name → ``"module:attribute"`` table with lazy loading.

    Args:
        kind: what the names name (``"optimizer"``), used in errors.
        entries: name → ``"module:attribute"`` of the builder.
    """

    def __init__(self, kind: str, entries: Mapping[str, str]) -> None:
        self.kind = kind
        self._entries = dict(entries)

    def __reduce__(self) -> tuple[Any, ...]:
        # The project's registries pickle as a reference to the receiving process's own
        # registry: a function sent to a Ray worker by value that registers an entry must
        # change the worker's table, not a copy of the driver's.
        if _PROJECT.get(self.kind) is self:
            return (_project_registry, (self.kind,))
        return (Registry, (self.kind, self._entries))

    def __getitem__(self, name: str) -> str:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self._entries!r})"

    @property
    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    def check(self, name: Any) -> str:
        """``name`` if registered, else :class:`RegistryError`."""
        if not isinstance(name, str) or name not in self._entries:
            raise RegistryError(self.kind, name, self.names)
        return name

    def load(self, name: str) -> Any:
        """Imports and returns the builder registered under ``name``."""
        where = self._entries[self.check(name)]
        module, _, attributes = where.partition(":")
        try:
            target: Any = importlib.import_module(module)
            for attribute in attributes.split("."):  # "SAM.from_config" reaches a classmethod
                target = getattr(target, attribute)
        except (ImportError, AttributeError) as err:
            # A registered entry whose code is missing is a broken install or plugin, not
            # bad user input: say which entry points where.
            raise ImportError(f"{self.kind} {name!r} is registered as {where!r}: {err}") from err
        return target

    def register(self, name: str, target: str) -> None:
        """Adds (or replaces) an entry: ``target`` is ``"module:attribute"``.

        Registration is per process: a study whose trials use an entry added at
        run time registers it in the driver and in every worker (CONTRIBUTING.md);
        an entry written in this module needs neither.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, not {name!r}")
        if not isinstance(target, str) or ":" not in target:
            raise ValueError(
                f"{self.kind} {name!r}: target must be 'module:attribute', not {target!r}"
            )
        self._entries[name] = target

    def unregister(self, name: str) -> None:
        """Removes an entry (no error when absent): undoes :meth:`register`."""
        self._entries.pop(name, None)


def _project_registry(kind: str) -> Registry:
    return _PROJECT[kind]


#: Optimizers: each target is ``build(params, base, base_kwargs, config, model)``.
#: ``asam`` is SAM with ``adaptive: true`` (the validator rewrites it).
OPTIMIZERS = Registry(
    "optimizer",
    {
        "sgd": "trainables.optim:build_base",
        "sam": "trainables.optim:SAM.from_config",
        "xsam": "trainables.optim:XSAM.from_config",
        "asam": "trainables.optim:SAM.from_config",
        "gsam": "trainables.optim:GSAM.from_config",
        "wsam": "trainables.optim:WSAM.from_config",
    },
)

#: Datasets: each target is ``load(config, data_dir) -> Dataset``.
DATASETS = Registry(
    "dataset",
    {
        "mnist1d": "trainables.data:_load_mnist1d",
        "digits": "trainables.data:_load_digits",
        "cifar10": "trainables.data:_load_cifar10",
        "cifar100": "trainables.data:_load_cifar100",
        "tinyimagenet": "trainables.data:_load_tinyimagenet",
        "fake": "trainables.data:_load_fake",
    },
)

#: Models: each target is ``build(input_shape, num_classes) -> nn.Module``.
MODELS = Registry(
    "model",
    {
        "cnn1d": "trainables.models:_build_cnn1d",
        "mlp": "trainables.models:_build_mlp",
        "resnet18": "trainables.models:_build_resnet18",
        "vgg11_bn": "trainables.models:_build_vgg11_bn",
        "densenet121": "trainables.models:_build_densenet121",
        "wrn28_10": "trainables.models:_build_wrn28_10",
    },
)

_PROJECT: dict[str, Registry] = {r.kind: r for r in (OPTIMIZERS, DATASETS, MODELS)}
