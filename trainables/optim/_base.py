"""The k-step ascent that SAM, XSAM, GSAM and WSAM share.

One step, in the notation of `xsam-algorithm.md`:

    g0 = ∇L(θ0)                                   (BatchNorm statistics update here only)
    θi = θ(i-1) + (ρ/k)·g(i-1)/‖g(i-1)‖,  gi = ∇L(θi)     for i = 1..k
    d  = direction(θ0, θk, g0, gk)                 (what each subclass defines)
    θ  = θ0 (restored in place);  p.grad = d;  base_optimizer.step()

Subclasses implement `_direction`, which must restore θ0 and leave d in
`p.grad`.

Memory layout (the flat-buffer core). The parameters that take part in a
step (those with a gradient) are grouped by device and dtype; per group θ,
the gradient, θ0, the direction and g0 are each one contiguous buffer. At the
first step every such parameter's storage moves into its group's θ buffer
(`p.data` becomes a view of it; the `Parameter` objects stay the same, so the
model, the param groups and every `state_dict` keep working), and every
`p.grad` becomes a view into the gradient buffer, so autograd accumulates
straight into it. Every norm, dot and axpy of a step is then one kernel per
group, and so is zeroing the gradients. Code that keeps a raw pointer to a
parameter's storage across the first step sees it move once. When a
parameter or a gradient is replaced behind the optimizer's back
(`model.to()`, `zero_grad(set_to_none=True)`, a closure assigning `p.grad`),
the gradient is copied into its view, or the layout is rebuilt when a
parameter changed dtype, device, shape or storage.

With `torch.optim.SGD` as the base optimizer and one parameter group (the
paper's setting), the descent step runs on the flat buffers too, its
momentum buffers being views of one flat buffer kept in the SGD's own state
(`_flat_sgd_step`): the same element-wise arithmetic as SGD's, without its
per-parameter bookkeeping. Other base optimizers, several parameter groups,
`maximize`, a tensor learning rate and gradient scaling take the base
optimizer's own `step`.

Scalars are host floats on the CPU and 0-d device tensors elsewhere (see
`_functional`), so a CUDA step forces no host synchronisation outside the α
search.
"""

from __future__ import annotations

import functools
import inspect
import math
import operator
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.optim import optimizer as _torch_optimizer

from trainables.optim._batchnorm import frozen_running_stats, norm_layers
from trainables.optim._functional import (
    Scalar,
    Tensors,
    angle,
    flat_dot,
    flat_norm,
    slerp_coefficients,
)
from trainables.optim._timing import NullTimer

Closure = Callable[[], torch.Tensor]
Probe = Callable[[], torch.Tensor | float]

_GRAD = operator.attrgetter("grad")
_DATA_PTR = operator.methodcaller("data_ptr")


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


#: flat buffers that are the storage of what exists anyway (θ, the gradients, SGD's
#: momentum), not memory the sharpness-aware step adds
_OWN_STORAGE = frozenset({"theta", "grad", "momentum"})


def _host_scalars(params: Tensors) -> bool:
    """Scalars as host floats: only when every parameter is on the CPU (no sync to pay)."""
    return all(p.device.type == "cpu" for p in params)


class _Group:
    """The step's parameters of one device and dtype, with their flat buffers.

    Attributes:
        params: the parameters, in parameter-group order.
        flat: name → flat buffer; ``"grad"`` always, plus ``"theta0"``,
            ``"direction"``, ``"g0"`` as the optimizer asks for them.
        views: name → the buffer's views in the parameters' shapes.
    """

    def __init__(self, params: Tensors) -> None:
        self.params = params
        self._numels = [p.numel() for p in params]
        theta = torch.cat([p.detach().reshape(-1) for p in params])
        grad = torch.zeros_like(theta)
        self.flat: dict[str, torch.Tensor] = {"theta": theta, "grad": grad}
        self.views: dict[str, Tensors] = {"theta": self._shaped(theta), "grad": self._shaped(grad)}
        for p, view in zip(params, self.views["theta"], strict=True):
            p.data = view
        # `module._apply` (model.to()) swaps a parameter's or a gradient's storage
        # under the same tensor object, so a view is ours only while it points here.
        self._theta_ptrs = [v.data_ptr() for v in self.views["theta"]]
        self._grad_ptrs = [v.data_ptr() for v in self.views["grad"]]

    def zero_grads(self) -> None:
        """Zero the flat gradient, and any gradient that is no longer a view of it."""
        self.flat["grad"].zero_()
        if self._grads_in_place():
            return
        for p, view, ptr in zip(self.params, self.views["grad"], self._grad_ptrs, strict=True):
            g = p.grad
            if g is not None and (g is not view or g.data_ptr() != ptr):
                g.zero_()

    def _grads_in_place(self) -> bool:
        """Whether every `p.grad` is its view and every parameter and view still points
        into its buffer: the common case, checked without a Python loop."""
        return (
            all(map(operator.is_, map(_GRAD, self.params), self.views["grad"]))
            and list(map(_DATA_PTR, self.params)) == self._theta_ptrs
            and list(map(_DATA_PTR, self.views["grad"])) == self._grad_ptrs
        )

    def _shaped(self, flat: torch.Tensor) -> Tensors:
        return [v.view(p.shape) for v, p in zip(flat.split(self._numels), self.params, strict=True)]

    def adopt(self, name: str, tensors: Tensors) -> Tensors:
        """Copy `tensors` (shaped like the parameters) into buffer `name`; returns its views."""
        self.buffer(name)
        torch._foreach_copy_(self.views[name], tensors)
        return self.views[name]

    def buffer(self, name: str) -> torch.Tensor:
        """The flat buffer `name`, allocated on first use and kept with the layout."""
        flat = self.flat.get(name)
        if flat is None:
            flat = self.flat[name] = torch.empty_like(self.flat["grad"])
            self.views[name] = self._shaped(flat)
        return flat

    def attach_grads(self) -> bool:
        """Make every `p.grad` its view into the flat gradient; False if a parameter changed.

        A missing gradient becomes a zero view; one that autograd or a closure
        left elsewhere is copied in. Fast when nothing moved: one C-level
        comparison of identities and pointers.
        """
        if self._grads_in_place():
            return True
        for p, ptr in zip(self.params, self._theta_ptrs, strict=True):
            if p.data_ptr() != ptr:
                return False  # the parameter left θ's buffer (model.to(), p.data = …)
        for p, view, ptr in zip(self.params, self.views["grad"], self._grad_ptrs, strict=True):
            g = p.grad
            if g is view:
                if view.data_ptr() == ptr:
                    continue
                return False  # its storage was swapped (model.to()): lay out afresh
            if p.dtype != view.dtype or p.device != view.device or p.shape != view.shape:
                return False
            if g is None:
                view.zero_()
            else:
                view.copy_(g)
            p.grad = view
        return True


class _Layout:
    """Every parameter taking part in a step, grouped by device and dtype.

    Vector operations by buffer name (``"grad"``, ``"theta0"``, …) run one
    kernel per group; scalars are host floats when every group is on the CPU.
    """

    def __init__(self, params: Tensors, all_params: Tensors) -> None:
        self.params = params
        by_key: dict[tuple[torch.device, torch.dtype], Tensors] = {}
        for p in params:
            by_key.setdefault((p.device, p.dtype), []).append(p)
        self.groups = [_Group(ps) for ps in by_key.values()]
        self.host = _host_scalars(params)
        held = set(map(id, params))
        #: parameters outside the layout, whose gradients are zeroed one by one
        self.others = [p for p in all_params if id(p) not in held]
        self._flats: dict[str, Tensors] = {}
        self._view_of = {
            id(p): (group, i) for group in self.groups for i, p in enumerate(group.params)
        }

    def holds(self, params: Tensors) -> bool:
        return len(params) == len(self.params) and all(map(operator.is_, params, self.params))

    def attach_grads(self) -> bool:
        return all(group.attach_grads() for group in self.groups)

    def flats(self, name: str) -> Tensors:
        """Buffer `name` of every group (allocated on first use; the list is kept)."""
        flats = self._flats.get(name)
        if flats is None:
            flats = self._flats[name] = [group.buffer(name) for group in self.groups]
        return flats

    def norm(self, name: str) -> Scalar:
        return flat_norm(self.flats(name), self.host)

    def dot(self, a: str, b: str) -> Scalar:
        return flat_dot(self.flats(a), self.flats(b), self.host)

    def contains(self, p: torch.Tensor) -> bool:
        return id(p) in self._view_of

    def view_of(self, name: str, p: torch.Tensor) -> torch.Tensor:
        """The view of buffer `name` that matches parameter `p`."""
        group, i = self._view_of[id(p)]
        group.buffer(name)
        return group.views[name][i]

    def zero_grads(self) -> None:
        """Zero every gradient of the optimizer's parameters, one kernel per group."""
        for group in self.groups:
            group.zero_grads()
        for p in self.others:
            if p.grad is not None:
                p.grad.zero_()

    def copy_from_params(self, name: str) -> None:
        """Buffer `name` ← θ."""
        for group in self.groups:
            group.buffer(name).copy_(group.flat["theta"])

    def copy_to_params(self, name: str) -> None:
        """θ ← buffer `name`."""
        for group in self.groups:
            group.flat["theta"].copy_(group.flat[name])


def _flat_sgd_step(base: torch.optim.Optimizer, vec: _Layout) -> bool:
    """`torch.optim.SGD`'s update of θ on the flat buffers; False, doing nothing, where it cannot.

    The arithmetic is SGD's, element for element: d = g + λ·θ; with momentum
    μ, b = g-clone on the first step, else b ← μ·b + (1 − τ)·d, and d = b
    (Nesterov: d + μ·b); θ ← θ − lr·d. The momentum buffers stay in SGD's own
    state as views of one flat buffer per group, so its `state_dict`, a
    loaded state and a later fallback to its own `step` all see the same
    values. `p.grad` keeps the direction (SGD does not change it either).
    Hooks registered on the base optimizer's own `step` do not run on this path
    (the sharpness-aware optimizer's `step`, which schedulers wrap, is the one called).
    """
    if type(base) is not torch.optim.SGD or len(base.param_groups) != 1:
        return False
    hp = base.param_groups[0]
    lr = hp["lr"]
    if hp["maximize"] or hp.get("differentiable") or hp.get("fused") or not isinstance(lr, float):
        return False
    weight_decay, momentum = hp["weight_decay"], hp["momentum"]
    buffers: list[Tensors | None] = []
    if momentum != 0:
        for group in vec.groups:
            held = [base.state[p].get("momentum_buffer") for p in group.params]
            views = group.views.get("momentum")
            if views is not None and all(map(operator.is_, held, views)):
                buffers.append(views)
            elif all(b is None for b in held):
                buffers.append(None)  # SGD's first step: b = d
            elif all(
                b is not None and b.shape == p.shape
                for b, p in zip(held, group.params, strict=True)
            ):
                buffers.append(held)  # a loaded state: copied into the flat buffer below
            else:
                return False  # some parameters without a buffer: SGD handles that itself
    for i, group in enumerate(vec.groups):
        theta, d = group.flat["theta"], group.flat["grad"]
        if weight_decay != 0:
            d = d.add(theta, alpha=weight_decay)
        if momentum != 0:
            held = buffers[i]
            if held is None:
                group.buffer("momentum").copy_(d)
            else:
                if held is not group.views.get("momentum"):
                    group.adopt("momentum", held)
                group.flat["momentum"].mul_(momentum).add_(d, alpha=1 - hp["dampening"])
            if held is not group.views["momentum"]:
                for p, view in zip(group.params, group.views["momentum"], strict=True):
                    base.state[p]["momentum_buffer"] = view
            b = group.flat["momentum"]
            d = d.add(b, alpha=momentum) if hp["nesterov"] else b
        theta.add_(d, alpha=-lr)
    return True


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
        eps: added to every norm that divides (> 0).
        model: when given, its BatchNorm running statistics are those of the
            clean pass at θ0 only.
        **base_kwargs: passed to `base_optimizer` (lr, momentum, …); with every
            parameter on the CPU, `foreach=True` unless given (same values, less time).
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
        _check(eps > 0, "eps", eps, "> 0")
        super().__init__(params, dict(base_kwargs))
        on_cpu = all(p.device.type == "cpu" for g in self.param_groups for p in g["params"])
        if on_cpu and "foreach" not in base_kwargs and _takes(base_optimizer, "foreach"):
            # PyTorch's CPU default is its Python loop over parameters (on CUDA it
            # picks the multi-tensor path itself); the multi-tensor path runs the
            # same kernels, value for value, in a third less time on the 1-D CNN.
            base_kwargs = {**base_kwargs, "foreach": True}
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        self.rho = rho
        self.steps = steps
        self.adaptive = adaptive
        self.eta = eta
        self.eps = eps
        self.model = model
        #: BatchNorm layers held to θ0's statistics (those of `model` when it was given)
        self._norms = norm_layers(model)
        self.timer = NullTimer()
        self.n_steps = 0
        self.last_search: AlphaSearch | None = None
        self._layout: _Layout | None = None

    @property
    def _buffers(self) -> dict[str, dict[int, torch.Tensor]]:
        """The parameter-sized buffers kept besides θ, the gradients and the base optimizer's
        state (which the flat buffers hold in place of their per-parameter tensors):
        name → group → flat buffer."""
        if self._layout is None:
            return {}
        out: dict[str, dict[int, torch.Tensor]] = {}
        for i, group in enumerate(self._layout.groups):
            for name, flat in group.flat.items():
                if name not in _OWN_STORAGE:
                    out.setdefault(name, {})[i] = flat
        return out

    @staticmethod
    def profile_hook_step(func: Callable[..., Any]) -> Callable[..., Any]:
        """PyTorch's wrapper of `step` (step hooks, a profiler label), entered only when it
        has work: a step hook registered here or globally, or a profiler running.

        Its `record_function` alone costs about 0.05 ms a step with no profiler
        running, a fifth of this optimizer's own work on a small model.
        """
        hooked = torch.optim.Optimizer.profile_hook_step(func)

        @functools.wraps(func)
        def wrapper(self: SharpnessAware, *args: Any, **kwargs: Any) -> Any:
            if (
                self._optimizer_step_pre_hooks
                or self._optimizer_step_post_hooks
                or _torch_optimizer._global_optimizer_pre_hooks
                or _torch_optimizer._global_optimizer_post_hooks
                or torch.autograd._profiler_enabled()
            ):
                return hooked(self, *args, **kwargs)
            return func(self, *args, **kwargs)

        return wrapper

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
            elif not _flat_sgd_step(self.base_optimizer, vec):
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
        with frozen_running_stats(self._norms):
            _, vec = self._ascent(closure)
        norm_u, norm_g, psi = self._prepare_directions(vec)
        search = self._search_alpha(vec, probe, norm_u, norm_g, psi, rho_max, alphas)
        self.zero_grad(set_to_none=False)
        return search

    def _ascent(self, closure: Closure) -> tuple[torch.Tensor, _Layout]:
        """The k+1 passes: returns the loss at θ0 and the layout, with θ = θk and p.grad = gk."""
        timer = self.timer
        with timer.phase("ascent"):
            loss = self._pass(closure)
        with timer.phase("update"):
            vec = self._vectors()
            vec.copy_from_params("theta0")
            self._after_first_pass(vec)
        # Passes at θ1…θk keep the BatchNorm statistics of θ0's pass; only the
        # ascent's arithmetic runs between them, so one switch covers them all.
        with frozen_running_stats(self._norms):
            for i in range(1, self.steps + 1):
                with timer.phase("update"):
                    self._ascend(vec)
                with timer.phase("ascent" if i < self.steps else "descent"):
                    self._pass(closure)
                if not vec.attach_grads():
                    raise RuntimeError("a parameter changed dtype, device or shape during a step")
        return loss, vec

    def _direction(self, vec: _Layout, probe: Probe | None) -> None:
        """Restore θ0 in place and leave the descent direction d in `p.grad`."""
        raise NotImplementedError

    def _after_first_pass(self, vec: _Layout) -> None:
        """Keeps the clean gradient g0 in the ``g0`` buffer of an optimizer that declares one.

        GSAM and WSAM declare it (`_extra_buffers`); a subclass may override this hook.
        """
        if "g0" in self._extra_buffers:
            for g0, g in zip(vec.flats("g0"), vec.flats("grad"), strict=True):
                g0.copy_(g)

    def _after_base_step(self, vec: _Layout) -> None:
        """Hook for updates outside the base optimizer (decoupled WSAM)."""

    # ------------------------------------------------------------- ascent
    def _ascend(self, vec: _Layout) -> None:
        """θ ← θ + (ρ/k)·e(g), where e is g/‖g‖ (SAM) or T²g/‖Tg‖ (ASAM).

        The gradient may be overwritten: the next pass zeroes and recomputes it.
        """
        if self.adaptive:
            ts = [theta.abs().add_(self.eta) for theta in vec.flats("theta")]  # T = |θ| + η
            for t, g in zip(ts, vec.flats("grad"), strict=True):
                g.mul_(t)  # T·g
            scale = (self.rho / self.steps) / (vec.norm("grad") + self.eps)
            for t, g in zip(ts, vec.flats("grad"), strict=True):
                g.mul_(t)  # T²·g
        else:
            scale = (self.rho / self.steps) / (vec.norm("grad") + self.eps)
        for theta, g in zip(vec.flats("theta"), vec.flats("grad"), strict=True):
            if isinstance(scale, torch.Tensor):  # a device scalar: scale in place, then add
                theta.add_(g.mul_(scale))
            else:
                theta.add_(g, alpha=scale)

    # --------------------------------------------------- shared XSAM parts
    def _prepare_directions(self, vec: _Layout) -> tuple[Scalar, Scalar, Scalar]:
        """u = θk − θ0 into the direction buffer, restore θ0, and return (‖u‖, ‖gk‖, ψ).

        v0 = u/‖u‖ and v1 = gk/‖gk‖; u is kept unnormalised so that no
        extra buffer is needed.
        """
        for u, theta, theta0 in zip(
            vec.flats("direction"), vec.flats("theta"), vec.flats("theta0"), strict=True
        ):
            torch.sub(theta, theta0, out=u)
        self._restore_theta0(vec)
        norm_u = vec.norm("direction")
        norm_g = vec.norm("grad")
        cos_psi = vec.dot("direction", "grad") / ((norm_u + self.eps) * (norm_g + self.eps))
        return norm_u, norm_g, angle(cos_psi)

    def _search_alpha(
        self,
        vec: _Layout,
        probe: Probe,
        norm_u: Scalar,
        norm_g: Scalar,
        psi: Scalar,
        rho_max: float,
        alphas: list[float],
    ) -> AlphaSearch:
        """Probe L(θ0 + ρm·v(α)) over the grid and return α* (ties: smallest α)."""
        # The search reads every probe loss on the host anyway: one sync for the scalars.
        psi = float(psi)
        scale_u = rho_max / (float(norm_u) + self.eps)
        scale_g = rho_max / (float(norm_g) + self.eps)
        # α = 1 is probed even when the grid misses it: it is SAM's direction.
        probed = alphas if any(math.isclose(a, 1.0) for a in alphas) else [*alphas, 1.0]
        losses: list[float] = []
        with frozen_running_stats(self._norms):
            for alpha in probed:
                c0, c1 = slerp_coefficients(psi, alpha)
                for group in vec.groups:
                    theta = group.flat["theta"].copy_(group.flat["theta0"])
                    theta.add_(group.flat["direction"], alpha=c0 * scale_u)
                    theta.add_(group.flat["grad"], alpha=c1 * scale_g)
                losses.append(float(probe()))
        self._restore_theta0(vec)
        best = 0
        for i in range(1, len(alphas)):
            if losses[i] > losses[best]:
                best = i
        i_one = next(i for i, a in enumerate(probed) if math.isclose(a, 1.0))
        return AlphaSearch(
            step=self.n_steps,
            alpha=alphas[best],
            psi=psi,
            alphas=list(alphas),
            losses=losses[: len(alphas)],
            loss_v0=losses[0],
            loss_v1=losses[i_one],
            loss_best=losses[best],
        )

    def _set_slerp_direction(
        self,
        vec: _Layout,
        norm_u: Scalar,
        norm_g: Scalar,
        psi: Scalar,
        alpha: float,
    ) -> None:
        """p.grad ← ‖gk‖·v(α) = c1·gk + c0·‖gk‖·u/‖u‖ (the u buffer is consumed).

        Written so that α = 1 (c0 = 0, c1 = 1) leaves gk bit for bit: SAM.
        """
        c0, c1 = slerp_coefficients(psi, alpha)
        c_u = c0 * norm_g / (norm_u + self.eps)
        for g, u in zip(vec.flats("grad"), vec.flats("direction"), strict=True):
            g.mul_(c1)
            if isinstance(c_u, torch.Tensor):
                g.add_(u.mul_(c_u))
            else:
                g.add_(u, alpha=c_u)

    # ---------------------------------------------------------- plumbing
    def _restore_theta0(self, vec: _Layout) -> None:
        """θ ← θ0 in place."""
        vec.copy_to_params("theta0")

    @torch.enable_grad()
    def _pass(self, closure: Closure) -> torch.Tensor:
        self.zero_grad(set_to_none=False)
        return closure()

    def _vectors(self) -> _Layout:
        """The layout of this step's parameters (those with a gradient), gradients attached."""
        all_params = [p for group in self.param_groups for p in group["params"]]
        params = [p for p in all_params if p.grad is not None]
        layout = self._layout
        if layout is None or not layout.holds(params) or not layout.attach_grads():
            # first step, or the set of parameters with a gradient changed, or a
            # parameter changed dtype/device/shape (model.to()): lay out afresh
            layout = self._layout = _Layout(params, all_params)
            layout.attach_grads()
        for name in self._extra_buffers:
            layout.flats(name)
        return layout

    def zero_grad(self, set_to_none: bool = True) -> None:
        if set_to_none or self._layout is None:
            self.base_optimizer.zero_grad(set_to_none=set_to_none)
        else:
            self._layout.zero_grads()

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


def _takes(cls: type, name: str) -> bool:
    """Whether `cls(...)` accepts the keyword argument `name`."""
    try:
        return name in inspect.signature(cls).parameters
    except (TypeError, ValueError):  # no signature to read: do not guess
        return False


def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r} is not allowed; expected {allowed}")
