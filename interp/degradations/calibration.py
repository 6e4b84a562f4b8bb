"""Calibration of a tempered-posterior level: an inverse temperature B for a target loss increase.

For a level given as :class:`~interp.degradations.LossIncrease` Δ, pilot chains measure the mean
loss increase ΔL on the fixed evaluation batch; since E[L] − L(w0) ≈ λ/B near a minimum (Lau et al.
2023, "The Local Learning Coefficient"), B moves by the guess B·ΔL/Δ until Δ is bracketed, then by
interpolation / bisection on log B; the pilot that lands within tolerance moves B once more onto the
target. :func:`resolve_level` turns any level into a :class:`LevelPlan`
(B, step size ε, calibration record). After the level's chains, :func:`assess_calibration` records
the measured ΔL and marks a level **failed** when the calibration did not converge or the chains
missed the target by more than the stated ``acceptance``; :func:`indistinct_levels` finds levels of
one sweep that cannot be told apart; :func:`guess_nbeta` starts a calibration from its calibrated
neighbours (log-log interpolation, ΔL ≈ λ/B beyond them).

Example::

    >>> rec = CalibrationRecord(target=0.1, nbeta=500.0, lr=1e-4, rounds=(), converged=True,
    ...                         units="nats/token")
    >>> class Chain:  # what assess_calibration reads of a ChainDiagnostics
    ...     failed, loss_increase = False, 0.3
    >>> print(assess_calibration(rec, [Chain(), Chain()]).failed)
    the chains' mean loss increase ΔL = 0.3 nats/token is outside ±50% of the target 0.1 (B = 500)
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from interp.checks import bad_value, check_number
from interp.degradations._core import LossIncrease, NBeta

logger = logging.getLogger("interp.degradations")

__all__ = [
    "CalibrationConfig",
    "CalibrationRound",
    "CalibrationRecord",
    "CalibrationFailed",
    "LevelPlan",
    "resolve_level",
    "assess_calibration",
    "indistinct_levels",
    "guess_nbeta",
    "record_from_dict",
]


@dataclass(frozen=True)
class CalibrationConfig:
    """How a :class:`~interp.degradations.LossIncrease` level is turned into an inverse temperature.

    Pilot chains (``pilot_chains`` × (``pilot_burnin`` + ``pilot_draws``·``pilot_thin``) steps; ``None``:
    the sampler's own burnin/draws/thin, so pilots measure exactly what the final chains will, even
    when the loss is still relaxing) measure the mean loss increase on the fixed evaluation batch; ``B`` moves by the λ̂-based guess
    ``B·ΔL/Δ`` (since ΔL ≈ λ/B) until the target is bracketed, then by interpolation / bisection on
    log B. It stops when |ΔL/Δ − 1| ≤ ``tolerance`` or after ``max_rounds``; a pilot within tolerance
    is not taken as it is: B moves once more by the same rule onto the target (with a loose tolerance,
    e.g. 0.5, a pilot at 1.45·Δ would otherwise send the chains to the edge of ``acceptance``; the
    final chains' ΔL is what is checked). A diverging pilot halves ε.

    A level is **failed** (``CalibrationRecord.failed`` says why; ``TemperedPosterior(strict=True)``
    raises :class:`CalibrationFailed` instead) when the calibration did not converge, or when the
    final chains' mean loss increase ΔL misses the target by more than ``acceptance``:
    |ΔL/Δ − 1| > ``acceptance`` (default 0.5, i.e. ΔL outside [0.5·Δ, 1.5·Δ]).
    """

    tolerance: float = 0.1
    max_rounds: int = 8
    pilot_chains: int = 1
    pilot_burnin: int | None = None
    pilot_draws: int | None = None
    pilot_thin: int | None = None
    acceptance: float = 0.5

    def __post_init__(self) -> None:
        c = "CalibrationConfig"
        check_number(c, "tolerance", self.tolerance, fix="Use e.g. tolerance=0.1 (10%).")
        check_number(c, "acceptance", self.acceptance, fix="Use e.g. acceptance=0.5 (ΔL within ±50% of the target).")
        for n in ("max_rounds", "pilot_chains"):
            check_number(c, n, getattr(self, n), integer=True, fix=f"Use a positive integer for {n}.")
        for n in ("pilot_draws", "pilot_thin"):
            check_number(c, n, getattr(self, n), integer=True, none_ok=True,
                         fix=f"Use a positive integer for {n}, or None (the sampler's own value).")
        check_number(c, "pilot_burnin", self.pilot_burnin, integer=True, zero_ok=True, none_ok=True,
                     fix="Use a non-negative integer, or None (the sampler's burnin).")


@dataclass(frozen=True)
class CalibrationRound:
    """One pilot of a calibration: its ``nbeta`` B, step ``lr`` ε, measured ``loss_increase`` and λ̂."""

    nbeta: float
    lr: float
    loss_increase: float
    llc: float
    failed: str | None = None


@dataclass(frozen=True)
class CalibrationRecord:
    """How a target loss increase was reached: the chosen B and ε and every pilot round; ``target``
    and the loss increases are in ``units`` of the ``objective`` sampled on.

    After the level's chains ran (:func:`assess_calibration`): ``measured`` (mean over the chains
    that did not fail of their loss increase on the fixed evaluation batch) and ``measured_se`` (its
    standard error over chains, NaN with one chain). ``failed``: ``None`` for a usable level, else the
    reason (not converged, or ``measured`` outside ``acceptance`` of the target); a sweep records it
    in ``levels.json`` so results can show the level as failed.
    """

    target: float
    nbeta: float
    lr: float
    rounds: tuple[CalibrationRound, ...]
    converged: bool
    objective: str | None = None
    units: str | None = None
    measured: float | None = None
    measured_se: float | None = None
    acceptance: float | None = None
    failed: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the level is usable (not failed)."""
        return self.failed is None


@dataclass(frozen=True)
class LevelPlan:
    """What every chain of one level starts with: inverse temperature ``nbeta`` B, step size ``lr``
    ε, and the ``calibration`` that chose them for a :class:`LossIncrease` level (``None`` otherwise).

    Made by :meth:`TemperedPosterior.plan`; :meth:`TemperedPosterior.run_chain` runs one chain of the
    level from it (in this process or another one, e.g. a Ray job).
    """

    nbeta: float
    lr: float
    calibration: CalibrationRecord | None = None

    def __post_init__(self) -> None:
        check_number("LevelPlan", "nbeta", self.nbeta, fix="Make plans with TemperedPosterior.plan(...).")
        check_number("LevelPlan", "lr", self.lr, fix="Make plans with TemperedPosterior.plan(...).")
        if self.calibration is not None and not isinstance(self.calibration, CalibrationRecord):
            raise bad_value("LevelPlan", "calibration", self.calibration, "a CalibrationRecord or None",
                            "Make plans with TemperedPosterior.plan(...).")


class CalibrationFailed(RuntimeError):
    """A :class:`LossIncrease` level that missed its target, with ``TemperedPosterior(strict=True)``;
    ``calibration`` is the :class:`CalibrationRecord` (its ``failed`` says why)."""

    def __init__(self, calibration: CalibrationRecord) -> None:
        self.calibration = calibration
        super().__init__(
            f"LossIncrease({calibration.target:g}) failed: {calibration.failed}. Fixes: more pilot "
            "rounds or longer pilots (CalibrationConfig(max_rounds=..., pilot_draws=...)), a larger "
            "localization, a smaller lr, a target the model can reach, or strict=False to keep the level "
            "marked failed."
        )


def _num(x: Any) -> float:
    """A float from a stored value (JSON keeps NaN/inf as text)."""
    return float(x) if x is not None else math.nan


def record_from_dict(d: Mapping[str, Any]) -> CalibrationRecord:
    """A :class:`CalibrationRecord` back from its stored form (``levels.json``)."""
    known = {f.name for f in dataclasses.fields(CalibrationRecord)}
    rounds = tuple(CalibrationRound(**{**r, **{k: _num(r[k]) for k in ("nbeta", "lr", "loss_increase", "llc")}})
                   for r in d.get("rounds", ()))
    values = {k: v for k, v in d.items() if k in known and k != "rounds"}
    for k in ("target", "nbeta", "lr", "measured", "measured_se", "acceptance"):
        if values.get(k) is not None:
            values[k] = _num(values[k])
    return CalibrationRecord(rounds=rounds, **values)


def _chain_increase(c: Any) -> float:
    """A chain's mean loss increase on the fixed batch (NaN if it failed): a ChainDiagnostics or its
    stored dict."""
    if not isinstance(c, Mapping):
        return math.nan if c.failed else c.loss_increase
    evals, init = c.get("eval_losses"), c.get("init_eval_loss")
    if c.get("failed") or not evals or init is None:
        return math.nan
    vals = [_num(x) for x in evals]
    return sum(vals) / len(vals) - _num(init)


def assess_calibration(calibration: CalibrationRecord | Mapping[str, Any] | None, chains: Sequence[Any],
                       config: CalibrationConfig | None = None, strict: bool = False) -> CalibrationRecord | None:
    """The calibration record with the final chains' measured loss increase and its verdict.

    ``chains``: the level's :class:`~interp.degradations.ChainDiagnostics` (all of them: from one
    ``draws()`` call, or gathered from ``run_chain`` jobs; their stored dicts work too, as does a
    stored record). ``measured`` is the mean of the successful chains' ``loss_increase``; the level
    fails when it is outside ``acceptance`` of the target (or when every chain failed, or when it
    had already failed to converge). ``None`` (a level that was not calibrated) stays ``None``.
    With ``strict`` a failed level raises :class:`CalibrationFailed`.
    """
    if calibration is None:
        return None
    if isinstance(calibration, Mapping):
        calibration = record_from_dict(calibration)
    acceptance = (config or CalibrationConfig()).acceptance
    vals = [v for v in map(_chain_increase, chains) if math.isfinite(v)]
    measured = sum(vals) / len(vals) if vals else math.nan
    se = statistics.stdev(vals) / math.sqrt(len(vals)) if len(vals) > 1 else math.nan
    failed = calibration.failed
    if failed is None:
        if not vals:
            failed = "every chain of the level failed, so its loss increase was not measured"
        elif not abs(measured / calibration.target - 1) <= acceptance:
            failed = (f"the chains' mean loss increase ΔL = {measured:.4g} {calibration.units} is outside "
                      f"±{100 * acceptance:.3g}% of the target {calibration.target:g} (B = {calibration.nbeta:.4g})")
    out = dataclasses.replace(calibration, measured=measured, measured_se=se, acceptance=acceptance, failed=failed)
    if failed is not None:
        logger.warning("LossIncrease(%g) level failed: %s", calibration.target, failed)
        if strict:
            raise CalibrationFailed(out)
    return out


def _level_stats(info: Any) -> tuple[float | None, float, float]:
    """(B, mean loss increase, its standard error) of a level: a SamplingRun or a ``levels.json``
    record ``{"calibration": {...}, "chains": [{...}, ...]}``."""
    chains = getattr(info, "chains", None)
    if chains is None and isinstance(info, Mapping):
        chains = info.get("chains") or []
    chains = list(chains or [])
    nbeta = None
    if chains:
        first = chains[0]
        nbeta = first.get("nbeta") if isinstance(first, Mapping) else first.nbeta
    rows = [v for v in map(_chain_increase, chains) if math.isfinite(v)]
    mean = sum(rows) / len(rows) if rows else math.nan
    se = statistics.stdev(rows) / math.sqrt(len(rows)) if len(rows) > 1 else math.nan
    return (None if nbeta is None else _num(nbeta)), mean, se


def indistinct_levels(levels: Mapping[Any, Any], sigmas: float = 2.0, warn: bool = True) -> list[str]:
    """Pairs of a sweep's sampler levels that cannot be told apart: the same inverse temperature B
    (e.g. two targets that calibrated, or were clamped, to one B), or mean loss increases within
    ``sigmas`` combined standard errors of each other. ``levels``: label -> a :class:`SamplingRun`
    or its ``levels.json`` record. Returns one message per pair (and logs each as a warning)."""
    stats = {k: _level_stats(v) for k, v in levels.items()}
    keys = list(stats)
    out = []
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            (ba, ma, sa), (bb, mb, sb) = stats[a], stats[b]
            if ba is not None and bb is not None and math.isclose(ba, bb, rel_tol=1e-9):
                out.append(f"levels {a} and {b} cannot be told apart: both sample at B = {ba:.4g}")
            elif all(math.isfinite(x) for x in (ma, mb, sa, sb)) and abs(ma - mb) <= sigmas * math.hypot(sa, sb):
                out.append(f"levels {a} and {b} cannot be told apart: their loss increases {ma:.4g} ± {sa:.2g} "
                           f"and {mb:.4g} ± {sb:.2g} agree within {sigmas:g} standard errors")
    if warn:
        for msg in out:
            logger.warning("%s", msg)
    return out


# -------------------------------------------------------------------------------------- calibrate
def resolve_level(eng: Any, level: Any) -> LevelPlan:
    """A level's inverse temperature B and step size ε, with the calibration that chose them for a
    :class:`LossIncrease` level (``None`` otherwise): what every run of a level's chains starts with,
    in this process or in a Ray job. A calibration that did not converge is marked failed here (and
    raises :class:`CalibrationFailed` with ``strict=True``)."""
    cfg = eng.cfg
    if isinstance(level, LossIncrease):
        calibration = _calibrate(eng, level.delta)
        if not calibration.converged:
            best = min((r for r in calibration.rounds if r.failed is None and r.loss_increase > 0),
                       key=lambda r: abs(math.log(r.loss_increase / calibration.target)))
            calibration = dataclasses.replace(calibration, acceptance=cfg.calibration.acceptance, failed=(
                f"calibration to ΔL = {calibration.target:g} {calibration.units} did not converge in "
                f"{len(calibration.rounds)} rounds: the closest pilot, B = {best.nbeta:.4g}, gave ΔL = "
                f"{best.loss_increase:.4g} ({sum(r.failed is not None for r in calibration.rounds)} pilots "
                "diverged)"))
            if getattr(cfg, "strict", False):
                raise CalibrationFailed(calibration)
        return LevelPlan(calibration.nbeta, calibration.lr, calibration)
    if level is None:
        if cfg.nbeta is None:
            raise ValueError(
                "TemperedPosterior(nbeta=None) and no level given: pass level=NBeta(B), "
                "a number B or LossIncrease(delta), or set nbeta=... on the sampler."
            )
        nbeta = float(cfg.nbeta)
    elif isinstance(level, NBeta):
        nbeta = float(level.value)
    elif isinstance(level, (int, float)) and not isinstance(level, bool):
        nbeta = float(NBeta(float(level)).value)
    else:
        raise ValueError(
            f"level={level!r}: TemperedPosterior takes None, a number or NBeta (inverse "
            "temperature B) or LossIncrease(delta)."
        )
    return LevelPlan(nbeta, cfg.lr if cfg.lr is not None else eng.auto_lr(nbeta), None)


def _calibrate(eng: Any, target: float) -> CalibrationRecord:
    cfg, cal = eng.cfg, eng.cfg.calibration
    if eng.obj.fixed is None:
        raise ValueError("LossIncrease levels need the fixed evaluation batch: set eval_rows > 0.")
    B = float(cfg.nbeta) if cfg.nbeta is not None else min(eng.d / 2, 100.0) / target
    lr_scale = 1.0
    rounds: list[CalibrationRound] = []
    lo: tuple[float, float] | None = None  # (log B, log ΔL) with ΔL > target: B too small
    hi: tuple[float, float] | None = None  # ΔL < target: B too large
    best: tuple[float, float, float] | None = None  # (|log ratio|, B, lr)
    converged = False

    def step_size(b: float) -> float:
        return lr_scale * (eng.auto_lr(b) if cfg.lr is None else min(cfg.lr, 2 * cfg.lr_safety / (
            eng.max_precondition * (b * eng.curvature() + cfg.localization))))

    for _ in range(cal.max_rounds):
        lr = step_size(B)
        recs: list[Any] = []
        burnin = cfg.burnin if cal.pilot_burnin is None else cal.pilot_burnin
        draws = cfg.n_draws if cal.pilot_draws is None else cal.pilot_draws
        thin = cfg.thin if cal.pilot_thin is None else cal.pilot_thin
        for _d in eng.run(B, lr, cal.pilot_chains, burnin, draws, thin, None, recs, yield_draws=False,
                          chain_ids=tuple(10_000 + c for c in range(cal.pilot_chains))):
            pass
        bad = [r for r in recs if r.failed]
        if bad:
            rounds.append(CalibrationRound(B, lr, math.nan, math.nan, failed=bad[0].reason))
            lr_scale /= 2
            logger.info("calibration pilot diverged at B=%.4g, ε=%.3g: halving ε", B, lr)
            continue
        inc = sum(r.loss_increase for r in recs) / len(recs)
        llc = sum(r.llc for r in recs) / len(recs)
        rounds.append(CalibrationRound(B, lr, inc, llc))
        logger.info("calibration: B=%.4g ε=%.3g ΔL=%.4g (target %.4g) λ̂=%.4g", B, lr, inc, target, llc)
        if inc > 0:
            err = abs(math.log(inc / target))
            if best is None or err < best[0]:
                best = (err, B, lr)
            converged = abs(inc / target - 1) <= cal.tolerance
        lb = math.log(B)
        if inc > target:
            lo = (lb, math.log(inc))
        else:
            hi = (lb, math.log(inc) if inc > 0 else -math.inf)
        if inc <= 0:
            nb = lb - math.log(10)
        else:
            nb = lb + math.log(inc / target)  # ΔL ≈ λ/B
        if lo is not None and hi is not None:
            if math.isfinite(hi[1]) and lo[1] != hi[1]:
                # interpolate log B linearly in log ΔL between the bracket ends
                tlog = math.log(target)
                nb = lo[0] + (hi[0] - lo[0]) * (lo[1] - tlog) / (lo[1] - hi[1])
            if not (min(lo[0], hi[0]) < nb < max(lo[0], hi[0])):
                nb = 0.5 * (lo[0] + hi[0])  # bisection on log B
        nb = min(max(nb, lb - math.log(30)), lb + math.log(30))
        B = math.exp(nb)
        if converged:
            break
    if best is None:
        raise RuntimeError(
            f"Calibration to a loss increase of {target} {eng.obj.units} failed: every pilot diverged or "
            f"lowered the loss (rounds: {rounds}). w0 may not be a minimum; try a larger localization."
        )
    if not converged:
        _, B, lr = best
        logger.warning("calibration to ΔL=%.4g did not converge in %d rounds; using the closest B=%.4g",
                       target, cal.max_rounds, B)
    else:  # the pilot within tolerance, moved onto the target by the law above (the chains are checked)
        lr = step_size(B)
    return CalibrationRecord(target=target, nbeta=B, lr=lr, rounds=tuple(rounds), converged=converged,
                             objective=eng.obj.name, units=eng.obj.units)


def guess_nbeta(evaluated: Sequence[Mapping[str, float]], target: float) -> float | None:
    """nβ for a target Δ interpolated log-log between calibrated neighbours (``value``: their Δ,
    ``nbeta``: their calibrated nβ; ΔL ≈ λ/nβ beyond them); ``None`` without one."""
    import numpy as np

    known = sorted((float(p["value"]), float(p["nbeta"])) for p in evaluated
                   if float(p.get("value", 0.0)) > 0 and math.isfinite(float(p.get("nbeta", math.nan))))
    if not known:
        return None
    x, b = np.log([k[0] for k in known]), np.log([k[1] for k in known])
    t = math.log(target)
    if len(known) == 1 or t <= x[0] or t >= x[-1]:
        i = 0 if t <= x[0] else -1
        return float(math.exp(b[i] - (t - x[i])))
    return float(math.exp(np.interp(t, x, b)))
