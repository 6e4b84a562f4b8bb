"""The local learning coefficient estimator: λ̂ = B·(E[L] − L(w0)) with its standard error.

From localized SGLD chains at inverse temperature B (Lau et al. 2023, "The Local Learning
Coefficient: A Singularity-Aware Complexity Measure"): λ̂ per chain is B times the mean minibatch
loss after burn-in minus L(w0); the estimate is the mean over the chains that did not fail.

Example::

    >>> from interp.degradations.oracles import MonomialPotential
    >>> q = MonomialPotential([2])                       # λ = 1/2
    >>> est = estimate_llc(q, q.loss, nbeta=100.0, localization=0.0, lr=1e-3, chains=4, n_draws=400,
    ...                    burnin=100, eval_rows=0, progress=False)
    >>> 0.3 < est.mean < 0.8
    True
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from interp.degradations._chain import ChainDiagnostics
from interp.degradations._select import check_restrict, select_parameters, selected_size
from interp.degradations.calibration import CalibrationRecord
from interp.degradations.llc_table import ComponentLLC, ComponentLLCs
from interp.degradations.sgld import TemperedPosterior

__all__ = ["LLCEstimate", "estimate_component_llcs", "estimate_llc", "extrapolation_weights"]


@dataclass(frozen=True)
class LLCEstimate:
    """Local learning coefficient estimate from the chains that did not fail.

    ``mean`` ± ``stderr``: λ̂ and its standard error, ``stderr² = stderr_chains² + stderr_init²``:
    ``stderr_chains`` the spread of the chains' λ̂ (standard error of their mean) and ``stderr_init``
    = B·SE(L(w0)), the error of the reference loss that every chain shares (0 when L(w0) is computed
    on the whole split, or for a callable target). ``init_loss`` ± ``init_loss_se``: L(w0).
    ``per_chain`` λ̂ of the successful chains, ``specific_heat`` (mean over chains of B²·Var(L) on
    the fixed batch, NaN without one), ``failed`` (``(chain, reason)`` of every failed chain),
    ``chains`` (all diagnostics) and the ``nbeta``, ``lr``, ``localization`` used; ``objective``
    and ``units`` name the loss sampled on (λ̂ is dimensionless: B carries the inverse units).

    With ``estimate_llc(..., extrapolate=...)``: ``mean`` ± ``stderr`` is the value extrapolated
    to ε → 0, ``extrapolation`` holds the estimate at each step size (largest first; the other
    fields describe the first one, at ``lr``), and ``weights`` the coefficients c_j with
    λ̂(0) = Σ c_j·λ̂(ε_j). Without it ``extrapolation`` is empty.
    """

    mean: float
    stderr: float
    per_chain: tuple[float, ...]
    specific_heat: float
    failed: tuple[tuple[int, str], ...]
    chains: tuple[ChainDiagnostics, ...]
    nbeta: float
    lr: float
    localization: float
    calibration: CalibrationRecord | None = None
    objective: str | None = None
    units: str | None = None
    stderr_chains: float = math.nan
    stderr_init: float = math.nan
    init_loss: float = math.nan
    init_loss_se: float = math.nan
    extrapolation: tuple[LLCEstimate, ...] = ()
    weights: tuple[float, ...] = ()


def _check_kwargs(sampler_kwargs: dict[str, Any], func: str = "estimate_llc") -> None:
    unknown = set(sampler_kwargs) - set(TemperedPosterior.field_names())
    if unknown:
        table = func == "estimate_llc" and bool(unknown & {"components", "data"})
        fix = (" A table of per-component or data-restricted λ̂ is estimate_component_llcs(model, target, "
               "components={name: restrict}, data=...)." if table else "")
        extra = ("extrapolate, extrapolate_localization" if func == "estimate_llc"
                 else "components, data, extrapolate")
        raise ValueError(
            f"{func} got unknown argument(s) {sorted(unknown)}; allowed: "
            f"{', '.join(TemperedPosterior.field_names())}, {extra}.{fix}"
        )


def _from_run(run: Any) -> LLCEstimate:
    ok = run.ok
    failed = tuple((c.chain, c.reason or "") for c in run.failed)
    if not ok:
        raise RuntimeError(
            "Every chain failed, no LLC estimate: " + "; ".join(f"chain {c}: {r}" for c, r in failed)
            + ". Lower lr (or let lr=None choose it), or raise localization."
        )
    vals = tuple(c.llc for c in ok)
    mean = sum(vals) / len(vals)
    se_chains = statistics.stdev(vals) / math.sqrt(len(vals)) if len(vals) > 1 else math.nan
    init_se = run.init_loss_se if run.init_loss_se is not None else math.nan
    se_init = float(run.nbeta) * init_se
    heats = [c.specific_heat for c in ok if math.isfinite(c.specific_heat)]
    return LLCEstimate(
        mean=mean, stderr=math.hypot(se_chains, se_init), per_chain=vals,
        specific_heat=sum(heats) / len(heats) if heats else math.nan,
        failed=failed, chains=tuple(run.chains), nbeta=float(run.nbeta), lr=float(run.lr),
        localization=run.cfg.localization, calibration=run.calibration,
        objective=ok[0].objective, units=ok[0].units, stderr_chains=se_chains, stderr_init=se_init,
        init_loss=float(run.init_loss), init_loss_se=init_se,
    )


def extrapolation_weights(lrs: Sequence[float], variances: Sequence[float] | None = None) -> tuple[float, ...]:
    """Coefficients c_j of the ε → 0 intercept of a line λ̂(ε) = λ̂(0) + b·ε through the points at
    step sizes ``lrs``: λ̂(0) = Σ c_j·λ̂(ε_j), Σ c_j = 1, Σ c_j·ε_j = 0. Two points: Richardson,
    (−1, 2) for (ε, ε/2). Three or more: least squares, weighted by 1/``variances`` when they are
    all finite and positive."""
    x = [float(e) for e in lrs]
    w = [1.0] * len(x)
    if variances is not None and all(math.isfinite(v) and v > 0 for v in variances):
        w = [1.0 / v for v in variances]
    sw, sx, sxx = sum(w), sum(wi * xi for wi, xi in zip(w, x)), sum(wi * xi * xi for wi, xi in zip(w, x))
    det = sw * sxx - sx * sx
    return tuple(wi * (sxx - sx * xi) / det for wi, xi in zip(w, x))


def estimate_llc(model: torch.nn.Module, target: Any, level: Any = None, *, extrapolate: bool | int = False,
                 extrapolate_localization: bool | int = False, **sampler_kwargs: Any) -> LLCEstimate:
    """Estimate the local learning coefficient λ̂ = B·(E[L] − L(w0)) with its standard error.

    ``sampler_kwargs`` are :class:`TemperedPosterior` fields (``nbeta``, ``localization``, ``lr``,
    ``chains``, ``draws``, ``burnin``, ``thin``, ``seed``, ...). Failed chains are reported in
    ``failed`` and never averaged; if every chain fails a ``RuntimeError`` names the reasons. The
    standard error includes the error of L(w0) that all chains share (:class:`LLCEstimate`).

    ``extrapolate``: ``False`` (default), ``True`` or ``2`` (chains at ε and ε/2), or ``3`` (ε, ε/2,
    ε/4). The discretisation bias of SGLD is linear in ε for small ε (for the quadratic ½h·w² it is
    exactly λ̂(ε) = λ̂(0)/(1 − ε·a/4), a = B·h + γ), so λ̂ at smaller steps, each run with its burn-in
    and thinning scaled by 1/f (the same time horizon ε·steps) and its own seed, extrapolates to
    ε → 0: 2·λ̂(ε/2) − λ̂(ε) (Richardson), or the weighted least-squares line through three points.
    The error is propagated from each point's standard error (independent runs). ε is the level's
    (``lr``, or the one chosen from the curvature or by calibration); B is kept fixed.

    ``restrict=`` samples only some weights (a weight-restricted λ̂ of one component); for several
    components, or several data distributions, in one table use :func:`estimate_component_llcs`.

    ``extrapolate_localization``: ``False`` (default), ``True`` or ``2`` (γ, γ/2), or ``3`` (γ, γ/2,
    γ/4): the localization bias too. The pull γ/2·‖w − w0‖² freezes directions whose curvature B·h
    is below γ, so λ̂ is low by ≈ Σ ½·γ/(B·h + γ) over the regular directions (first order in γ)
    and by a slowly vanishing amount along singular valleys. Each point runs at B fixed (the
    level's), with its burn-in and draws scaled by γ/γ_j (valleys relax in ≈ 1/(εγ) steps), its
    own seed and, with ``extrapolate``, its own ε → 0 extrapolation; the line through (γ_j, λ̂_j)
    is extrapolated to γ → 0 (weighted least squares, :func:`extrapolation_weights`).
    ``extrapolation`` then holds the estimates at each γ. Measured in BENCHMARKS.md ("Samplers"):
    which setting is within 3% of Aoyagi's value on which networks.
    """
    _check_kwargs(sampler_kwargs)
    if extrapolate_localization is not False:
        return _extrapolate_localization(model, target, level, extrapolate, extrapolate_localization,
                                         sampler_kwargs)
    if extrapolate is False:
        return _from_run(TemperedPosterior(**sampler_kwargs).sample(model, target, level))
    if extrapolate is True:
        extrapolate = 2
    if isinstance(extrapolate, bool) or extrapolate not in (2, 3):
        raise ValueError(f"estimate_llc(extrapolate={extrapolate!r}): give False, True (= 2 step sizes: ε, ε/2) "
                         "or 3 (ε, ε/2, ε/4).")
    import dataclasses

    from interp.degradations._core import NBeta

    base = TemperedPosterior(**sampler_kwargs)
    plan = base.plan(model, target, level)
    points = []
    for j in range(extrapolate):
        f = 0.5 ** j
        sampler = dataclasses.replace(base, lr=plan.lr * f, nbeta=plan.nbeta, burnin=round(base.burnin / f),
                                      thin=round(base.thin / f), seed=base.seed + 7919 * j)
        points.append(_from_run(sampler.sample(model, target, NBeta(plan.nbeta))))
    variances = [p.stderr ** 2 for p in points]
    c = extrapolation_weights([p.lr for p in points], variances)
    mean = sum(ci * p.mean for ci, p in zip(c, points))
    se_chains = math.sqrt(sum((ci * p.stderr_chains) ** 2 for ci, p in zip(c, points)))
    se_init = math.sqrt(sum((ci * p.stderr_init) ** 2 for ci, p in zip(c, points)))
    first = points[0]
    return dataclasses.replace(first, mean=mean, stderr=math.hypot(se_chains, se_init), stderr_chains=se_chains,
                               stderr_init=se_init, calibration=plan.calibration, extrapolation=tuple(points),
                               weights=c)


def estimate_component_llcs(model: torch.nn.Module, target: Any, level: Any = None, *,
                            components: Mapping[str, Any] | None = None, data: Any = None,
                            extrapolate: bool | int = False, **sampler_kwargs: Any) -> ComponentLLCs:
    """Per-component (weight-restricted) and data-restricted λ̂ as a
    :class:`~interp.degradations.llc_table.ComponentLLCs` table (``est["name"].mean``, ``.interval``,
    ``to_frame()``), one :func:`estimate_llc` per component and data distribution.

    ``components``: ``{name: restrict}``, each what ``restrict=`` accepts (a glob, a list of globs,
    a head slice ``"blocks.1.attn.head.0"``, a mapping to masks): one **weight-restricted** λ̂ per
    component, sampling only its weights with the rest at w0 (each with its own calibration for a
    :class:`LossIncrease` level). ``None``: one row ``"all"`` (the ``restrict=`` given, or every weight).
    ``data``: a **data-restricted** λ̂ (Wang et al. 2025): a Task, loss callable or objective
    standing for another data distribution q′, or ``{name: target}`` for several; the posterior is
    built on q′'s loss and λ̂ = B·(E[L′] − L′(w0)) read on it (the definition: sampling on the
    objective and reading another loss would measure a response, not a learning coefficient).
    With several data distributions the table is keyed by ``(component, data)``.
    ``extrapolate`` and ``sampler_kwargs`` are :func:`estimate_llc`'s. Every component is resolved
    against the model before any chain runs (a typo fails first).

    Example::

        >>> from interp.degradations.oracles import DeepLinearNetworks
        >>> net = DeepLinearNetworks([([3, 2, 3], 1), ([2, 2, 2], 0)])
        >>> est = estimate_component_llcs(net, net.loss, components={"a": "nets.0.*", "b": "nets.1.*"},
        ...                               nbeta=100.0, lr=1e-3, localization=1.0, chains=2, n_draws=20, burnin=10,
        ...                               progress=False)
        >>> list(est), est["a"].n_weights
        (['a', 'b'], 12)
    """
    _check_kwargs(sampler_kwargs, "estimate_component_llcs")
    if components is None and data is None:
        raise ValueError("estimate_component_llcs(components=None, data=None): give components={name: restrict} "
                         "and/or data=...; for one λ̂ of the whole model (or of one restrict=) call estimate_llc.")
    if components is not None:
        if not isinstance(components, Mapping) or not components:
            raise ValueError(f"estimate_component_llcs(components={components!r}): give a non-empty mapping "
                             "{name: restrict}, e.g. {'head 1.0': 'blocks.1.attn.head.0', 'mlp 0': "
                             "'blocks.0.mlp.*'}.")
        if sampler_kwargs.get("restrict") is not None:
            raise ValueError("estimate_component_llcs: give either restrict= or components=, not both (each "
                             "component is a restrict of its own).")
        for name, pattern in components.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"estimate_component_llcs(components=...): component name {name!r} must be a "
                                 "non-empty string.")
            if pattern is None:
                raise ValueError(f"estimate_component_llcs(components={{{name!r}: None}}): a component needs a "
                                 "restrict (a glob, a list of globs, a head slice such as 'blocks.1.attn.head.0').")
            check_restrict(pattern, f"estimate_component_llcs(components[{name!r}])")
        comps = dict(components)
    else:
        comps = {"all": sampler_kwargs.get("restrict")}
    if data is not None and sampler_kwargs.get("objective") is not None:
        raise ValueError("estimate_component_llcs: give either objective= or data=, not both (data= is the "
                         "objective of a data-restricted λ̂).")
    if data is None:
        datas: dict[str | None, Any] = {None: None}
    elif isinstance(data, Mapping):
        if not data:
            raise ValueError("estimate_component_llcs(data={}): give a target, or a non-empty {name: target}.")
        datas = dict(data)
    else:
        from interp.degradations._targets import objective_label

        datas = {objective_label(data)[0]: data}
    # resolve every restrict against the model first: a typo fails before any chain runs
    sizes = {name: selected_size(select_parameters(model, r)) for name, r in comps.items()}
    rows = []
    for dname, dtarget in datas.items():
        for name, r in comps.items():
            kw = dict(sampler_kwargs, restrict=r)
            if dtarget is not None:
                kw["objective"] = dtarget
            est = estimate_llc(model, target, level, extrapolate=extrapolate, **kw)
            rows.append(ComponentLLC(component=name, restrict=r, n_weights=sizes[name], data=dname,
                                     estimate=est))
    return ComponentLLCs(rows)


def _extrapolate_localization(model: torch.nn.Module, target: Any, level: Any, extrapolate: bool | int,
                              points: bool | int, sampler_kwargs: dict[str, Any]) -> LLCEstimate:
    """λ̂ at γ, γ/2 (, γ/4), each at the level's B, extrapolated linearly to γ → 0."""
    import dataclasses

    from interp.degradations._core import NBeta

    if points is True:
        points = 2
    if isinstance(points, bool) or points not in (2, 3):
        raise ValueError(f"estimate_llc(extrapolate_localization={points!r}): give False, True (= 2 "
                         "localizations: γ, γ/2) or 3 (γ, γ/2, γ/4).")
    base = TemperedPosterior(**sampler_kwargs)
    if base.localization <= 0:
        raise ValueError(f"estimate_llc(extrapolate_localization={points!r}) with localization="
                         f"{base.localization!r}: there is no localization bias to remove at γ = 0; give "
                         "localization > 0 (e.g. 1.0) or leave extrapolate_localization out.")
    plan = base.plan(model, target, level)
    ests = []
    for j in range(points):
        f = 0.5 ** j
        kw = dict(sampler_kwargs, localization=base.localization * f, nbeta=plan.nbeta,
                  burnin=round(base.burnin / f), n_draws=round(base.n_draws / f), seed=base.seed + 104_729 * j)
        ests.append(estimate_llc(model, target, NBeta(plan.nbeta), extrapolate=extrapolate, **kw))
    c = extrapolation_weights([e.localization for e in ests], [e.stderr ** 2 for e in ests])
    mean = sum(ci * e.mean for ci, e in zip(c, ests))
    se_chains = math.sqrt(sum((ci * e.stderr_chains) ** 2 for ci, e in zip(c, ests)))
    se_init = math.sqrt(sum((ci * e.stderr_init) ** 2 for ci, e in zip(c, ests)))
    return dataclasses.replace(ests[0], mean=mean, stderr=math.hypot(se_chains, se_init), stderr_chains=se_chains,
                               stderr_init=se_init, calibration=plan.calibration, extrapolation=tuple(ests),
                               weights=c)
