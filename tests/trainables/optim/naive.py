"""Deliberately naive reference implementations, written from the papers' equations.

One tensor at a time, fresh tensors everywhere, float64, no cleverness: these
are obviously correct transcriptions of `xsam-algorithm.md` and of the GSAM
update, used to check the optimized core. They share no code with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

EPS = 1e-12


def _norm(vs: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float((v * v).sum()) for v in vs))


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return sum(float((x * y).sum()) for x, y in zip(a, b, strict=True))


def _grads(params: list[torch.Tensor], closure: Callable[[], torch.Tensor]) -> list[torch.Tensor]:
    for p in params:
        p.grad = None
    with torch.enable_grad():
        closure()
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]


def _bn_buffers(model: torch.nn.Module) -> list[torch.Tensor]:
    return [b for name, b in model.named_buffers() if "running" in name or "num_batches" in name]


class NaiveSGD:
    """SGD with momentum and coupled weight decay, as torch.optim.SGD defines it."""

    def __init__(self, params: list[torch.Tensor], lr: float, momentum: float, weight_decay: float):
        self.params, self.lr, self.momentum, self.wd = params, lr, momentum, weight_decay
        self.buf: list[torch.Tensor | None] = [None] * len(params)

    @torch.no_grad()
    def step(self, directions: list[torch.Tensor]) -> None:
        for i, (p, d) in enumerate(zip(self.params, directions, strict=True)):
            d = d + self.wd * p
            if self.buf[i] is None:
                self.buf[i] = d.clone()
            else:
                self.buf[i] = self.momentum * self.buf[i] + d
            p.sub_(self.lr * self.buf[i])


class NaiveXSAM:
    """XSAM step by step from `xsam-algorithm.md` (BatchNorm: snapshot and restore)."""

    def __init__(
        self,
        model,
        params,
        *,
        rho,
        steps,
        rho_max,
        alpha_max,
        alpha_delta,
        alpha,
        lr,
        momentum,
        weight_decay,
    ):
        self.model, self.params = model, params
        self.rho, self.k, self.rho_max = rho, steps, rho_max
        n = math.floor(alpha_max / alpha_delta + 1e-9)
        self.grid = [i * alpha_delta for i in range(n + 1)]
        self.alpha = alpha
        self.sgd = NaiveSGD(params, lr, momentum, weight_decay)
        self.history: list[tuple[float, list[float]]] = []

    def v(self, alpha: float, v0, v1, psi: float) -> list[torch.Tensor]:
        if math.sin(psi) < 1e-8:
            return [(a + b) / 2 for a, b in zip(v0, v1, strict=True)]
        s = math.sin(psi)
        return [
            (math.sin((1 - alpha) * psi) * a + math.sin(alpha * psi) * b) / s
            for a, b in zip(v0, v1, strict=True)
        ]

    @torch.no_grad()
    def step(self, closure, probe=None) -> None:
        theta0 = [p.detach().clone() for p in self.params]
        g = _grads(self.params, closure)
        bn_after_clean_pass = [b.clone() for b in _bn_buffers(self.model)]
        for _ in range(self.k):
            n = _norm(g)
            for p, gi in zip(self.params, g, strict=True):
                p.add_((self.rho / self.k) * gi / (n + EPS))
            g = _grads(self.params, closure)
        u = [p - t for p, t in zip(self.params, theta0, strict=True)]
        nu, ng = _norm(u), _norm(g)
        v0 = [x / (nu + EPS) for x in u]
        v1 = [x / (ng + EPS) for x in g]
        psi = math.acos(max(-1.0, min(1.0, _dot(v0, v1))))
        if probe is not None:
            losses = []
            for a in self.grid:
                for p, t, vi in zip(self.params, theta0, self.v(a, v0, v1, psi), strict=True):
                    p.copy_(t + self.rho_max * vi)
                losses.append(float(probe()))
            best = 0
            for i in range(len(self.grid)):
                if losses[i] > losses[best]:
                    best = i
            self.alpha = self.grid[best]
            self.history.append((self.alpha, losses))
        for p, t in zip(self.params, theta0, strict=True):
            p.copy_(t)
        for b, saved in zip(_bn_buffers(self.model), bn_after_clean_pass, strict=True):
            b.copy_(saved)
        d = [ng * vi for vi in self.v(self.alpha, v0, v1, psi)]
        self.sgd.step(d)


class NaiveGSAM:
    """GSAM (Zhuang et al. 2022): d = g1 − α·(g0 − proj_{g1} g0), k-step ascent."""

    def __init__(self, model, params, *, rho, steps, gsam_alpha, lr, momentum, weight_decay):
        self.model, self.params, self.rho, self.k, self.a = model, params, rho, steps, gsam_alpha
        self.sgd = NaiveSGD(params, lr, momentum, weight_decay)

    @torch.no_grad()
    def step(self, closure) -> None:
        theta0 = [p.detach().clone() for p in self.params]
        g0 = _grads(self.params, closure)
        bn = [b.clone() for b in _bn_buffers(self.model)]
        g = g0
        for _ in range(self.k):
            n = _norm(g)
            for p, gi in zip(self.params, g, strict=True):
                p.add_((self.rho / self.k) * gi / (n + EPS))
            g = _grads(self.params, closure)
        for p, t in zip(self.params, theta0, strict=True):
            p.copy_(t)
        for b, saved in zip(_bn_buffers(self.model), bn, strict=True):
            b.copy_(saved)
        proj = _dot(g0, g) / (_norm(g) ** 2)
        d = [gk - self.a * (a0 - proj * gk) for a0, gk in zip(g0, g, strict=True)]
        self.sgd.step(d)
