"""The k-step ascent that SAM, XSAM, GSAM and WSAM share.

One step, in the notation of `xsam-algorithm.md`:

    g0 = ∇L(θ0)                                   (BatchNorm statistics update here only)
    θi = θ(i-1) + (ρ/k)·g(i-1)/‖g(i-1)‖,  gi = ∇L(θi)     for i = 1..k
    d  = direction(θ0, θk, g0, gk)                 (what each subclass defines)
    θ  = θ0 (restored in place);  p.grad = d;  base_optimizer.step()

Subclasses implement `_direction`, which must restore θ0 and leave d in
`p.grad`. Vectors are lists of tensors treated as one flattened vector; the
arithmetic runs on `torch._foreach_*` kernels into preallocated buffers and
keeps scalars on the device, so a step forces no host synchronisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from trainables.optim._batchnorm import frozen_running_stats
from trainables.optim._functional import (
    Tensors,
    angle,
    global_dot,
    global_norm,
    slerp_coefficients,
)
from trainables.optim._timing import NullTimer

Closure = Callable[[], torch.Tensor]
Probe = Callable[[], torch.Tensor | float]


@dataclass
class AlphaSearch:
    """What one α search found: the probe curve L(α) and its landmarks.

    Attributes:
        step: index of the optimizer step that ran the search (0-based).
        alpha: α*, the grid point of highest probe loss (ties: smallest α).
        psi: ψ, the angle between v0 and v1 in radians.
        alphas: the grid {0, δ, …, a}.
        losses: L(θ0 + ρm·v(α)) for each grid point.
        loss_v0: probe loss at α = 0 (the ascent direction v0).
        loss_v1: probe loss at α = 1 (SAM's direction v1).
        loss_best: probe loss at α*.
    """

    step: int
    alpha: float
    psi: float
    alphas: list[float]
    losses: list[float]
    loss_v0: float
    loss_v1: float
    loss_best: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Vectors:
    """The step's working set: parameters with a gradient and their buffers."""

    params: Tensors
    grads: Tensors
    theta0: Tensors
    extra: dict[str, Tensors] = field(default_factory=dict)


def build_base(
    params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
    base: type[torch.optim.Optimizer],
    base_kwargs: dict[str, Any],
    config: dict[str, Any],
    model: torch.nn.Module | None,
) -> torch.optim.Optimizer:
    """The registry's builder for plain training: the base optimizer alone.

    Takes the same arguments as `SharpnessAware.from_config`; `config` and
    `model` are unused because the base optimizer needs only `base_kwargs`.
    """
    return base(params, **base_kwargs)


class SharpnessAware(torch.optim.Optimizer):
    """Base class: k-step sharpness-aware minimisation around a base optimizer.

    Args:
        params: parameters or parameter groups, as for any optimizer.
        base_optimizer: the optimizer class that takes the descent step
            (e.g. `torch.optim.SGD`); it is built on the same param groups.
        rho: ρ, the total ascent radius over the k steps.
        steps: k, the number of ascent steps.
        adaptive: ASAM's elementwise scaling T = |θ| + η of the ascent.
        eta: ASAM's η.
        eps: added to every norm that divides.
        model: when given, its BatchNorm running statistics are those of the
            clean pass at θ0 only.
        **base_kwargs: passed to `base_optimizer` (lr, momentum, …).
    """

    #: names of the parameter-sized buffers this optimizer keeps besides θ0
    _extra_buffers: tuple[str, ...] = ()
    #: trial-config keys passed to the constructor by `from_config`; subclasses extend it
    config_keys: tuple[str, ...] = ("rho", "steps", "adaptive", "eta")

    @classmethod
    def from_config(
        cls,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        base: type[torch.optim.Optimizer],
        base_kwargs: dict[str, Any],
        config: dict[str, Any],
        model: torch.nn.Module | None,
    ) -> torch.optim.Optimizer:
        """Builds the optimizer from a validated trial config (the registry's builder).

        Args:
            params: parameters or parameter groups.
            base: the base optimizer class.
            base_kwargs: its arguments (lr, momentum, …).
            config: a trial config from `xsam_contract.validate_trial_config`;
                only the keys in `config_keys` are read.
            model: the model, for BatchNorm statistics at θ0.
        """
        own = {key: config[key] for key in cls.config_keys}
        return cls(params, base, model=model, **own, **base_kwargs)

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        base_optimizer: type[torch.optim.Optimizer],
        *,
        rho: float = 0.05,
        steps: int = 1,
        adaptive: bool = False,
        eta: float = 0.01,
        eps: float = 1e-12,
        model: torch.nn.Module | None = None,
        **base_kwargs: Any,
    ) -> None:
        _check(rho >= 0, "rho", rho, ">= 0")
        _check(isinstance(steps, int) and steps >= 1, "steps", steps, "an integer >= 1")
        _check(eta >= 0, "eta", eta, ">= 0")
        super().__init__(params, dict(base_kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        self.rho = rho
        self.steps = steps
        self.adaptive = adaptive
        self.eta = eta
        self.eps = eps
        self.model = model
        self.timer = NullTimer()
        self.n_steps = 0
        self.last_search: AlphaSearch | None = None
        self._buffers: dict[str, dict[torch.Tensor, torch.Tensor]] = {}

    # ------------------------------------------------------------------ step
    @torch.no_grad()
    def step(  # type: ignore[override]
        self,
        closure: Closure,
        probe: Probe | None = None,
        grad_scaler: torch.amp.GradScaler | None = None,
    ) -> torch.Tensor:
        """One training step.

        Args:
            closure: recomputes the minibatch loss at the current parameters,
                calls `backward()` and returns the loss.
            probe: returns the minibatch loss with no gradient; when given,
                the α search runs on this step.
            grad_scaler: the fp16 gradient scaler the closure scales with;
                the step is skipped when the final gradients overflow.

        Returns:
            The loss at θ0 (detached).
        """
        loss, vec = self._ascent(closure)
        if grad_scaler is not None:
            grad_scaler.unscale_(self.base_optimizer)
        self._direction(vec, probe)
        with self.timer.phase("update"):
            if grad_scaler is not None:
                grad_scaler.step(self.base_optimizer)
            else:
                self.base_optimizer.step()
            self._after_base_step(vec)
        self.n_steps += 1
        return loss.detach()

    @torch.no_grad()
    def measure(
        self, closure: Closure, probe: Probe, rho_max: float, alphas: list[float]
    ) -> AlphaSearch:
        """Run the ascent and an α search from the current θ without stepping.

        For direction-fidelity diagnostics in trials whose update does not
        search α (SGD, GSAM, WSAM): the parameters, BatchNorm statistics and
        optimizer state are left as they were; the gradients are zeroed.
        """
        with frozen_running_stats(self.model):
            _, vec = self._ascent(closure)
        vec.extra["direction"] = self._buffer("direction", vec.params)
        norm_u, norm_g, psi = self._prepare_directions(vec)
        search = self._search_alpha(vec, probe, norm_u, norm_g, psi, rho_max, alphas)
        self.zero_grad(set_to_none=False)
        return search

    def _ascent(self, closure: Closure) -> tuple[torch.Tensor, _Vectors]:
        """The k+1 passes: returns the loss at θ0 and the vectors, with θ = θk and p.grad = gk."""
        timer = self.timer
        with timer.phase("ascent"):
            loss = self._pass(closure)
        vec = self._vectors()
        with timer.phase("update"):
            torch._foreach_copy_(vec.theta0, vec.params)
            self._after_first_pass(vec)
        for i in range(1, self.steps + 1):
            with timer.phase("update"):
                self._ascend(vec)
            with (
                timer.phase("ascent" if i < self.steps else "descent"),
                frozen_running_stats(self.model),
            ):
                self._pass(closure)
            vec.grads = self._grads_of(vec.params)
        return loss, vec

    def _direction(self, vec: _Vectors, probe: Probe | None) -> None:
        """Restore θ0 in place and leave the descent direction d in `p.grad`."""
        raise NotImplementedError

    def _after_first_pass(self, vec: _Vectors) -> None:
        """Hook for optimizers that keep g0 (GSAM, WSAM)."""

    def _after_base_step(self, vec: _Vectors) -> None:
        """Hook for updates outside the base optimizer (decoupled WSAM)."""

    # ------------------------------------------------------------- ascent
    def _ascend(self, vec: _Vectors) -> None:
        """θ ← θ + (ρ/k)·e(g), where e is g/‖g‖ (SAM) or T²g/‖Tg‖ (ASAM).

        The gradient is overwritten: the next pass recomputes it anyway.
        """
        grads = vec.grads
        if self.adaptive:
            for p, g in zip(vec.params, grads, strict=True):
                g.mul_(p.abs().add_(self.eta))  # T·g
            scale = (self.rho / self.steps) / (global_norm(grads) + self.eps)
            for p, g in zip(vec.params, grads, strict=True):
                g.mul_(p.abs().add_(self.eta))  # T²·g
        else:
            scale = (self.rho / self.steps) / (global_norm(grads) + self.eps)
        torch._foreach_mul_(grads, scale.to(grads[0].device) if grads else scale)
        torch._foreach_add_(vec.params, grads)

    # --------------------------------------------------- shared XSAM parts
    def _prepare_directions(self, vec: _Vectors) -> tuple[torch.Tensor, ...]:
        """u = θk − θ0 into a buffer, restore θ0, and return (‖u‖, ‖gk‖, ψ).

        v0 = u/‖u‖ and v1 = gk/‖gk‖; u is kept unnormalised so that no
        extra buffer is needed.
        """
        u = vec.extra["direction"]
        torch._foreach_copy_(u, vec.params)
        torch._foreach_sub_(u, vec.theta0)
        torch._foreach_copy_(vec.params, vec.theta0)
        norm_u = global_norm(u)
        norm_g = global_norm(vec.grads)
        cos_psi = global_dot(u, vec.grads) / ((norm_u + self.eps) * (norm_g + self.eps))
        return norm_u, norm_g, angle(cos_psi)

    def _search_alpha(
        self,
        vec: _Vectors,
        probe: Probe,
        norm_u: torch.Tensor,
        norm_g: torch.Tensor,
        psi: torch.Tensor,
        rho_max: float,
        alphas: list[float],
    ) -> AlphaSearch:
        """Probe L(θ0 + ρm·v(α)) over the grid and return α* (ties: smallest α)."""
        u, g = vec.extra["direction"], vec.grads
        scale_u = rho_max / (norm_u.item() + self.eps)
        scale_g = rho_max / (norm_g.item() + self.eps)
        # α = 1 is probed even when the grid misses it: it is SAM's direction.
        probed = alphas if any(math.isclose(a, 1.0) for a in alphas) else [*alphas, 1.0]
        c0s, c1s = slerp_coefficients(
            psi, torch.tensor(probed, dtype=torch.float64, device=psi.device)
        )
        losses: list[float] = []
        with frozen_running_stats(self.model):
            for c0, c1 in zip(c0s.tolist(), c1s.tolist(), strict=True):
                torch._foreach_copy_(vec.params, vec.theta0)
                torch._foreach_add_(vec.params, u, alpha=c0 * scale_u)
                torch._foreach_add_(vec.params, g, alpha=c1 * scale_g)
                losses.append(float(probe()))
        torch._foreach_copy_(vec.params, vec.theta0)
        best = 0
        for i in range(1, len(alphas)):
            if losses[i] > losses[best]:
                best = i
        i_one = next(i for i, a in enumerate(probed) if math.isclose(a, 1.0))
        return AlphaSearch(
            step=self.n_steps,
            alpha=alphas[best],
            psi=float(psi),
            alphas=list(alphas),
            losses=losses[: len(alphas)],
            loss_v0=losses[0],
            loss_v1=losses[i_one],
            loss_best=losses[best],
        )

    def _set_slerp_direction(
        self,
        vec: _Vectors,
        norm_u: torch.Tensor,
        norm_g: torch.Tensor,
        psi: torch.Tensor,
        alpha: float,
    ) -> None:
        """p.grad ← ‖gk‖·v(α) = c1·gk + c0·‖gk‖·u/‖u‖ (the u buffer is consumed).

        Written so that α = 1 (c0 = 0, c1 = 1) leaves gk bit for bit: SAM.
        """
        c0, c1 = slerp_coefficients(psi, alpha)
        u = vec.extra["direction"]
        torch._foreach_mul_(vec.grads, c1)
        torch._foreach_mul_(u, c0 * norm_g / (norm_u + self.eps))
        torch._foreach_add_(vec.grads, u)

    # ---------------------------------------------------------- plumbing
    def _restore_theta0(self, vec: _Vectors) -> None:
        """θ ← θ0 in place."""
        torch._foreach_copy_(vec.params, vec.theta0)

    @torch.enable_grad()
    def _pass(self, closure: Closure) -> torch.Tensor:
        self.zero_grad(set_to_none=False)
        return closure()

    def _grads_of(self, params: Tensors) -> Tensors:
        grads = []
        for p in params:
            if p.grad is None:  # no gradient on a later pass: count it as zero
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        return grads

    def _vectors(self) -> _Vectors:
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        return _Vectors(
            params=params,
            grads=[p.grad for p in params],
            theta0=self._buffer("theta0", params),
            extra={name: self._buffer(name, params) for name in self._extra_buffers},
        )

    def _buffer(self, name: str, params: Tensors) -> Tensors:
        """Preallocated parameter-shaped buffers, made once per parameter."""
        store = self._buffers.setdefault(name, {})
        out = []
        for p in params:
            buf = store.get(p)
            if buf is None or buf.shape != p.shape or buf.dtype != p.dtype:
                buf = store[p] = torch.empty_like(p, memory_format=torch.preserve_format)
            out.append(buf)
        return out

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    # ---------------------------------------------------------- checkpoint
    def _extra_state(self) -> dict[str, Any]:
        return {
            "n_steps": self.n_steps,
            "rho": self.rho,
            "last_search": None if self.last_search is None else self.last_search.to_dict(),
        }

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.n_steps = state["n_steps"]
        self.rho = state["rho"]
        search = state.get("last_search")
        self.last_search = None if search is None else AlphaSearch(**search)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """The base optimizer's state plus everything that steers the trajectory."""
        return {"base": self.base_optimizer.state_dict(), "sharpness": self._extra_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        self.base_optimizer.load_state_dict(state_dict["base"])
        self.param_groups = self.base_optimizer.param_groups
        self._load_extra_state(state_dict["sharpness"])


def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r} is not allowed; expected {allowed}")
