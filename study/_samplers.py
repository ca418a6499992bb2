"""Optuna samplers by study-file name (``search.sampler``): one table, read by the
validator (names, multi-objective, package) and by the Tuner (the builder).

Light: Optuna is imported only by :meth:`Sampler.build`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["SAMPLERS", "Sampler"]


@dataclass(frozen=True)
class Sampler:
    """One Optuna sampler.

    Attributes:
        attr: Its class in ``optuna.samplers``.
        multi_objective: Whether it handles several objectives.
        package: An extra package it needs (None: Optuna alone).
    """

    attr: str
    multi_objective: bool = True
    package: str | None = None

    def build(self, seed: int | None) -> Any:
        """The sampler, seeded (None: not reproducible)."""
        import optuna

        return getattr(optuna.samplers, self.attr)(seed=seed)


#: Study-file name → sampler.
SAMPLERS: dict[str, Sampler] = {
    "tpe": Sampler("TPESampler"),
    "random": Sampler("RandomSampler"),
    "qmc": Sampler("QMCSampler"),
    "gp": Sampler("GPSampler"),
    "nsgaii": Sampler("NSGAIISampler"),
    "nsgaiii": Sampler("NSGAIIISampler"),
    "cmaes": Sampler("CmaEsSampler", multi_objective=False, package="cmaes"),
}
