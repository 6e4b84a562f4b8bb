"""Logistic-regression probes: batched Newton/IRLS over sites, and scikit-learn's at one site.

Example::

    >>> import torch
    >>> from analyses.probing import fit_logistic_batched
    >>> x = torch.randn(2, 200, 8, generator=torch.Generator().manual_seed(0)); y = (x[0, :, 0] > 0).long()
    >>> float(fit_logistic_batched(x, y).accuracy(x, y)[0]) > 0.9
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from analyses.probing._fit import _chol_solve, _folds
from interp.checks import check_number

__all__ = ["BatchedLogisticProbe", "fit_logistic_batched", "LogisticProbe", "fit_logistic"]


@dataclass
class BatchedLogisticProbe:
    """Logistic probes for all sites (binary: one sigmoid; multi-class: one-vs-rest sigmoids)."""

    weight: Float[Tensor, "site k d"]
    bias: Float[Tensor, "site k"]
    n_classes: int
    iterations: int

    def scores(self, x: Float[Tensor, "site n d"]) -> Float[Tensor, "site n k"]:
        return x @ self.weight.transpose(1, 2) + self.bias[:, None]

    def predict(self, x: Float[Tensor, "site n d"]) -> Int[Tensor, "site n"]:
        s = self.scores(x)
        return (s[..., 0] > 0).long() if self.n_classes == 2 else s.argmax(-1)

    def accuracy(self, x: Float[Tensor, "site n d"], y: Int[Tensor, "n"]) -> Float[Tensor, "site"]:
        return (self.predict(x) == y).float().mean(-1)

    @property
    def direction(self) -> Float[Tensor, "site d"]:
        """Binary probes: the weight vector in raw activation coordinates."""
        return self.weight[:, 0]


def fit_logistic_batched(
    x: Float[Tensor, "site n d"],
    y: Int[Tensor, "n"],
    *,
    C: float = 1.0,
    tol: float = 1e-6,
    max_iter: int = 50,
    n_classes: int | None = None,
) -> BatchedLogisticProbe:
    """L2-regularised logistic regression for all sites at once by Newton's method (IRLS).

    Minimises scikit-learn's ``LogisticRegression(C=C)`` objective on standardised features,
    ``(1/n)·Σᵢ log-loss + ‖w‖²/(2Cn)`` (intercept unpenalised). Each step solves
    ``H Δ = ∇`` with the exact Hessian ``H = (1/n)·ZᵀDZ + P/(Cn)`` (``Z = [(x − μ)/σ, 1]``,
    ``D = diag(pᵢ(1 − pᵢ))``: one float32 GEMM per site) by batched float64 Cholesky (never batched
    ``torch.linalg.solve``: pytorch#142815), with a backtracking (Armijo) line search whose
    candidates cost nothing (``Z(w − αΔ) = Zw − α·ZΔ``). Stops with scikit-learn's lbfgs criterion,
    ``max |∇| ≤ tol`` at every site, with a tighter default: at weak regularisation the objective is
    flat, and scikit-learn's default ``tol=1e-4`` stops up to 2 points of held-out accuracy away from
    the optimum on MiniLM tokens (its ``tol=1e-6`` lands within 0.03 points); Newton's last steps are
    quadratic, so 1e-6 costs about 10% more than 1e-4 here (BENCHMARKS.md). Multi-class labels:
    one-vs-rest sigmoids, batched. Cost per step: about one Gram matrix per site (one ridge fit),
    so a fit costs 8-12 ridge fits; it matches scikit-learn's accuracy, it is not the fast path
    (:func:`fit_ridge` is; BENCHMARKS.md).
    """
    if x.dim() != 3 or x.shape[1] != len(y):
        raise ValueError(f"x must be [site, n, d] with n = len(y) = {len(y)}; got {tuple(x.shape)}.")
    check_number("fit_logistic_batched", "C", C, fix="C is the inverse regularisation strength, as in scikit-learn.")
    check_number("fit_logistic_batched", "tol", tol)
    check_number("fit_logistic_batched", "max_iter", max_iter, integer=True, minimum=1)
    c = max(int(n_classes or int(y.max()) + 1), 2)
    s_n, n, d = x.shape
    targets = y.float()[:, None] if c == 2 else torch.nn.functional.one_hot(y, c).float()  # [n, k]
    k = targets.shape[1]
    mean = x.mean(1, keepdim=True)
    z = x - mean  # the one copy of x
    scale = (torch.linalg.vector_norm(z, dim=1, keepdim=True) / math.sqrt(max(n - 1, 1))).clamp_min(1e-6)
    z.div_(scale)
    lam = 1.0 / (C * n)
    w = torch.zeros(s_n, d, k)
    b = torch.zeros(s_n, 1, k)
    logits = torch.zeros(s_n, n, k)
    eye = torch.eye(d + 1, dtype=torch.float64)
    pen = eye.clone()
    pen[d, d] = 0.0

    def objective(lg: Tensor, ww: Tensor) -> Tensor:  # [site]
        ll = torch.nn.functional.softplus(lg) - lg * targets
        return ll.mean(1).sum(-1) + 0.5 * lam * (ww * ww).sum((-1, -2))

    obj = objective(logits, w)
    done = 0
    for done in range(1, max_iter + 1):
        p = torch.sigmoid(logits)
        r = (p - targets).transpose(1, 2)  # [site, k, n]
        g_w = (r @ z).transpose(1, 2) / n + lam * w  # [site, d, k]
        g_b = r.sum(-1)[:, None] / n  # [site, 1, k]
        grad = torch.cat([g_w, g_b], 1)  # [site, d1, k]
        if grad.abs().amax((1, 2)).max() <= tol:
            break
        h = _hessian(z, (p * (1 - p)).transpose(1, 2)) + lam * pen + 1e-10 * eye
        step = _chol_solve(torch.linalg.cholesky(h), grad.transpose(1, 2)[..., None].double())[..., 0]
        step = step.float().transpose(1, 2)  # [site, d1, k]
        zs = torch.baddbmm(step[:, d:], z, step[:, :d])  # [site, n, k]
        alpha, new_obj = _armijo(objective, obj, logits, w, zs, step[:, :d], (grad * step).sum((1, 2)))
        if not bool((alpha > 0).any()):
            break  # no site can decrease its objective further in float32
        a3 = alpha[:, None, None]
        w, b = w - a3 * step[:, :d], b - a3 * step[:, d:]
        logits = logits - a3 * zs
        obj = new_obj
    rw = (w / scale.transpose(1, 2)).transpose(1, 2)  # [site, k, d] raw coordinates
    rb = b[:, 0] - (rw * mean).sum(-1)
    return BatchedLogisticProbe(rw, rb, c, done)


def _hessian(z: Float[Tensor, "site n d"], curv: Float[Tensor, "site k n"]) -> Tensor:
    """(1/n)·ZᵀDZ per site and class, ``Z = [z, 1]``, ``D = diag(curv)``: ``[site, k, d+1, d+1]``
    in float64 (one float32 GEMM per site and class)."""
    s_n, n, d = z.shape
    k = curv.shape[1]
    h = torch.empty(s_n, k, d + 1, d + 1, dtype=torch.float64)
    for j in range(k):
        zd = z * curv[:, j, :, None].sqrt()
        h[:, j, :d, :d] = zd.transpose(1, 2) @ zd
        h[:, j, :d, d] = h[:, j, d, :d] = (curv[:, j : j + 1] @ z)[:, 0]
        h[:, j, d, d] = curv[:, j].sum(-1)
    return h / n


#: step lengths tried by the line search, longest first
_STEP_LENGTHS = (1.0, 0.5, 0.25, 0.1, 0.03, 0.01)


def _armijo(objective: Any, obj: Tensor, logits: Tensor, w: Tensor, zs: Tensor, step_w: Tensor,
            decrease: Tensor) -> tuple[Tensor, Tensor]:
    """Backtracking line search per site: the first step length α with sufficient decrease,
    f(w − αΔ) ≤ f(w) − 10⁻⁴·α·∇·Δ (0 where none has), and the objective there."""
    alpha = torch.zeros(len(obj))
    new_obj = obj.clone()
    for a in _STEP_LENGTHS:
        cand = objective(logits - a * zs, w - a * step_w)
        take = (alpha == 0) & (cand <= obj - 1e-4 * a * decrease)
        alpha = torch.where(take, a, alpha)
        new_obj = torch.where(take, cand, new_obj)
        if bool((alpha > 0).all()):
            break
    return alpha, new_obj


@dataclass
class LogisticProbe:
    """A scikit-learn logistic-regression probe at one site, C chosen on held-out groups."""

    model: Any
    mean: Float[Tensor, "d"]
    scale: Float[Tensor, "d"]
    C: float
    cv_accuracy: dict[float, float]

    def predict(self, x: Float[Tensor, "n d"]) -> Int[Tensor, "n"]:
        z = ((x - self.mean) / self.scale).double().numpy()
        return torch.as_tensor(self.model.predict(z)).long()

    def accuracy(self, x: Float[Tensor, "n d"], y: Int[Tensor, "n"]) -> float:
        return (self.predict(x) == y).float().mean().item()

    @property
    def direction(self) -> Float[Tensor, "d"]:
        """Binary probes: the weight vector in raw activation coordinates."""
        coef = torch.as_tensor(self.model.coef_, dtype=torch.float32)
        return coef[0] / self.scale if coef.shape[0] == 1 else (coef[1] - coef[0]) / self.scale


def fit_logistic(
    x: Float[Tensor, "n d"],
    y: Int[Tensor, "n"],
    *,
    groups: Int[Tensor, "n"] | None = None,
    Cs: Sequence[float] = (0.01, 0.1, 1.0, 10.0),
    folds: int = 5,
    threads: int = 1,
    seed: int = 0,
    max_iter: int = 1000,
) -> LogisticProbe:
    """Cross-validated logistic regression (scikit-learn, lbfgs) at one site; C chosen on held-out groups."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    mean, scale = x.mean(0), x.std(0).clamp_min(1e-6)
    z = ((x - mean) / scale).double().numpy()
    yn = y.numpy()
    fold = _folds(torch.arange(len(y)) if groups is None else groups, folds, seed).numpy()
    cv: dict[float, float] = {}
    with threadpool_limits(limits=threads):
        for C in Cs:
            correct = 0
            for k in range(folds):
                tr, te = fold != k, fold == k
                m = LogisticRegression(C=C, max_iter=max_iter).fit(z[tr], yn[tr])
                correct += int((m.predict(z[te]) == yn[te]).sum())
            cv[float(C)] = correct / len(yn)
        best = max(cv.values())
        C = max(c for c, v in cv.items() if v >= best - 0.5 / len(yn))
        model = LogisticRegression(C=C, max_iter=max_iter).fit(z, yn)
    return LogisticProbe(model, mean, scale, C, cv)
