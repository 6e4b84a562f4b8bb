"""Oracle tests of the SGLD sampler (Lau et al. 2023; Aoyagi 2024): fixed seeds, tolerances from the maths.

Each statistical check compares an estimate with its exact value within 4 standard errors, the
standard error taken from the spread of independent chains (chain means are independent draws), plus
any exactly known discretisation bias folded into the expected value.
"""

from __future__ import annotations

import math
import statistics as st

import pytest
import torch

from interp.degradations import LossIncrease, TemperedPosterior, estimate_llc
from interp.degradations.oracles import (
    DeepLinearNetwork,
    MonomialPotential,
    aoyagi_llc,
    quadratic_llc,
    rrr_llc,
)

TORCH_THREADS = 1  # this module's tests run on one thread (tests/conftest.py; nothing leaks to others)
SIGMAS = 4.0


def _chain_stats(run, burnin, nbeta):
    """Per-chain mean and variance of B·L after burn-in (L0 = 0 for these potentials)."""
    vals = [[nbeta * x for x in c.losses[burnin:]] for c in run.chains]
    return [st.mean(v) for v in vals], [st.variance(v) for v in vals]


def test_aoyagi_formula_reference_values():
    assert aoyagi_llc([5, 3, 5], 0) == 6.5
    assert aoyagi_llc([6, 4, 4, 6], 2) == 12.0
    # two layers: Aoyagi 2024 must agree with reduced-rank regression (Aoyagi & Watanabe 2005)
    for n in range(1, 6):
        for h in range(1, 6):
            for m in range(1, 6):
                for r in range(0, min(n, h, m) + 1):
                    assert aoyagi_llc([n, h, m], r) == pytest.approx(rrr_llc(n, h, m, r))


@pytest.mark.slow
def test_monomial_potential_gamma_mean_and_variance():
    """K = ½(w1² + w2⁴), γ = 0: B·K ~ Gamma(λ, 1), λ = 1/2 + 1/4, mean = variance = λ. The quadratic
    coordinate's exact step-size bias (½/(1 − εB/4), mean; variance 2·mean²) is added."""
    B, eps, burn = 100.0, 2e-3, 500
    m = MonomialPotential([2, 4])
    run = TemperedPosterior(nbeta=B, localization=0.0, lr=eps, chains=16, n_draws=2500, burnin=burn,
                            eval_rows=0, progress=False).sample(m, m.loss)
    assert not run.failed
    means, variances = _chain_stats(run, burn, B)
    quad = quadratic_llc(B, 1.0, 0.0, eps)
    exp_mean = quad + 0.25
    exp_var = 2 * quad**2 + 0.25  # Var of (quad·χ²₁) + Var Gamma(1/4)
    se_m = st.stdev(means) / math.sqrt(len(means))
    se_v = st.stdev(variances) / math.sqrt(len(variances))
    assert abs(st.mean(means) - exp_mean) < SIGMAS * se_m, (st.mean(means), exp_mean, se_m)
    assert abs(st.mean(variances) - exp_var) < SIGMAS * se_v, (st.mean(variances), exp_var, se_v)
    assert se_m < 0.05 * exp_mean  # the check has teeth


@pytest.mark.parametrize("eps,gamma", [(1e-3, 0.0), (2e-2, 0.0), (1e-3, 50.0)])
def test_quadratic_exact_step_size_bias(eps, gamma):
    """K = ½w², B = 144.76: λ̂ = ½·(B/a)/(1 − εa/4), a = B + γ (0.5188 and 1.8104 for γ = 0)."""
    B = 144.76
    q = MonomialPotential([2])
    est = estimate_llc(q, q.loss, nbeta=B, localization=gamma, lr=eps, chains=16, n_draws=2000,
                       burnin=300, eval_rows=0, progress=False)
    exact = quadratic_llc(B, 1.0, gamma, eps)
    assert not est.failed
    assert abs(est.mean - exact) < SIGMAS * est.stderr, (est.mean, exact, est.stderr)
    assert est.stderr < 0.06 * exact


@pytest.mark.parametrize("factor", [1.0, 1.1])
def test_divergence_detected_at_eps_a_ge_4(factor):
    B = 144.76
    q = MonomialPotential([2])
    eps = factor * 4.0 / B
    run = TemperedPosterior(nbeta=B, localization=0.0, lr=eps, chains=4, n_draws=3000, burnin=0,
                            eval_rows=0, progress=False).sample(q, q.loss)
    assert len(run.failed) == 4
    assert all("explosion" in c.reason or "non-finite" in c.reason for c in run.failed)
    with pytest.raises(RuntimeError, match="Every chain failed"):
        estimate_llc(q, q.loss, nbeta=B, localization=0.0, lr=eps, chains=2, n_draws=3000, burnin=0,
                     eval_rows=0, progress=False)
    assert float(q.w.detach()) == 0.0  # restored


def test_nan_chain_reported_not_averaged():
    m = MonomialPotential([2])
    calls = {"n": 0}

    def loss(model):
        calls["n"] += 1
        out = model.loss(model)
        return out * float("nan") if calls["n"] == 2000 else out

    est = estimate_llc(m, loss, nbeta=100.0, localization=0.0, lr=1e-3, chains=3, n_draws=1500,
                       burnin=100, eval_rows=0, vectorize=False, progress=False)
    assert len(est.failed) == 1 and "non-finite" in est.failed[0][1]
    assert len(est.per_chain) == 2 and all(math.isfinite(x) for x in est.per_chain)


def test_loss_scale_invariance():
    """(c·L, B/c) gives the same chain; c a power of two keeps it exact in floating point."""
    c = 4.0
    a = MonomialPotential([2, 4])
    b = MonomialPotential([2, 4], scale=c)
    kw = dict(localization=0.0, lr=1e-3, chains=2, n_draws=200, burnin=0, eval_rows=0, progress=False)
    ra = TemperedPosterior(nbeta=64.0, **kw).sample(a, a.loss)
    rb = TemperedPosterior(nbeta=64.0 / c, **kw).sample(b, b.loss)
    for ca, cb in zip(ra.chains, rb.chains):
        assert [c * x for x in ca.losses] == cb.losses


def test_regular_model_d_over_2():
    """A regular quadratic in d = 6 with curvatures spread over 10×: λ = d/2 (plus the exact
    per-direction step-size bias)."""
    h = torch.tensor([1.0, 2.0, 3.0, 5.0, 7.0, 10.0], dtype=torch.float64)
    rot = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64))[0]
    H = rot @ torch.diag(h) @ rot.T

    class Quad(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(6, dtype=torch.float64))

    model = Quad()
    B, eps = 50.0, 4e-4
    est = estimate_llc(model, lambda m: 0.5 * m.w @ H @ m.w, nbeta=B, localization=0.0, lr=eps,
                       chains=16, n_draws=2000, burnin=300, eval_rows=0, progress=False)
    exact = sum(quadratic_llc(B, float(x), 0.0, eps) for x in h)
    assert abs(exact - 3.0) < 0.1  # d/2 up to the known step-size bias
    assert abs(est.mean - exact) < SIGMAS * est.stderr, (est.mean, exact, est.stderr)


# (widths, rank, B, γ, ε, burn-in, draws): κ = γ/√B = 0.1 in every case.
DLN_CASES = [
    ([4, 3, 4], 1, 100.0, 1.0, 6e-4, 1500, 3000),
    ([5, 3, 5], 0, 1000.0, 10 ** 0.5, 6e-4, 1000, 3000),
    ([6, 4, 4, 6], 2, 100.0, 1.0, 2e-4, 2000, 3000),
]


@pytest.mark.slow
@pytest.mark.parametrize("widths,rank,B,gamma,eps,burn,draws", DLN_CASES,
                         ids=[f"{w}-r{r}" for w, r, *_ in DLN_CASES])
def test_deep_linear_network_matches_aoyagi(widths, rank, B, gamma, eps, burn, draws):
    """Population loss ½‖W_M⋯W_1 − T‖²_F, 8 chains started on the true set (w0): λ̂ within 10% of
    Aoyagi's closed form (12, 6, 6.5 here), and hence away from the value at the neighbouring ranks
    (≥ 17% apart), so the estimate identifies the rank.

    Why these settings (measured, 16 chains: B = 10³, γ = 10, ε = 2e-5 gave −8%, −10%, −17%):

    - Scaling. Near a singular point the loss is (locally) homogeneous; for r = 0 exactly:
      L(w) = ½‖W_2W_1‖² has degree 4, and w = B^{-1/4}·u turns B·L + γ/2‖w‖² into L(u) + κ/2‖u‖²
      with κ = γ/√B. So E[B·L] depends on (B, γ) only through κ, and it tends to λ as κ → 0 only
      like λ − (m − 1)/log(1/κ²) (free energy λ log n − (m − 1) log log n with n ≈ B/γ², m the
      multiplicity; m = 2 for [5,3,5] r = 0). B = 10³, γ = 10 is κ = 0.32, n ≈ 10: far from
      asymptotic. Here κ = 0.1 everywhere.
    - Mixing. The valleys of the true set (W_1 large with W_2 → 0, gauge orbits) are held only by γ:
      they relax in ≈ 1/(εγ) steps: 5·10³ at ε = 2e-5, γ = 10, comparable to the whole chain, so
      chains started at w0 had not spread out yet (later quarters of each chain were higher).
      At fixed κ that time is √B·h/(κ·ε·B·h) ∝ √B (ε ∝ 1/(B·h) for stability, h the top
      curvature: 3.0 for [4,3,4] r=1, 9.7 for [6,4,4,6] r=2), so a smaller B is cheaper: B = 100,
      γ = 1 for r > 0 (εBh ≈ 0.18–0.19). For r = 0 (h = 0) the step is limited by the valley walls,
      curvature ≈ B/γ in w, so ε·B/γ ≈ 0.19.
    - Step size. In u the step is ε√B: ε = 6e-3 at B = 100, γ = 0.32 (same κ, ε√B three times
      larger) overshoots [5,3,5] by +33%: the positive step-size bias of §2, an upper limit on ε.

    Measured (this seed, 8 chains): [4,3,4] r=1 6.04 ± 0.14 (+0.6%), [5,3,5] r=0 6.65 ± 0.13
    (+2.3%), [6,4,4,6] r=2 11.85 ± 0.30 (−1.3%).
    """
    net = DeepLinearNetwork(widths, rank)
    est = estimate_llc(net, net.loss, nbeta=B, localization=gamma, lr=eps, chains=8, n_draws=draws,
                       burnin=burn, eval_rows=0, progress=False)
    exact = aoyagi_llc(widths, rank)
    assert not est.failed
    assert abs(est.mean / exact - 1) < 0.10, (widths, rank, est.mean, exact, est.stderr)
    neighbours = [aoyagi_llc(widths, q) for q in (rank - 1, rank + 1) if 0 <= q <= min(widths)]
    assert all(abs(est.mean - x) > abs(est.mean - exact) for x in neighbours)
    assert est.stderr < 0.05 * exact  # 10% is at least two standard errors


def test_vectorised_equals_sequential():
    d = DeepLinearNetwork([3, 2, 3], 1)
    kw = dict(nbeta=1000.0, localization=10.0, lr=1e-5, chains=3, n_draws=20, burnin=5, eval_rows=0,
              progress=False)
    a = TemperedPosterior(vectorize=True, **kw).sample(d, d.loss)
    b = TemperedPosterior(vectorize=False, **kw).sample(d, d.loss)
    for ca, cb in zip(a.chains, b.chains):
        assert ca.losses == pytest.approx(cb.losses, rel=1e-9, abs=1e-12)


@pytest.mark.slow
def test_calibration_hits_loss_increase_targets():
    """Asked for 0.02, 0.1, 0.3 nats/token on the induction organism, the mean loss increase of the
    final chains (fixed evaluation batch) lands within 25% of each target.

    Measured with this code and these settings (2026-11-22, shared 2-core box under load): 0.0210
    (+4.9%, B = 2600, 4 rounds), 0.1047 (+4.7%, B = 856, 2 rounds), 0.2949 (−1.7%, B = 411, 3 rounds);
    ≈ 65 s per target, 226 s for the test under load average > 5."""
    from interp import organisms

    model, task = organisms.load("induction")
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    sampler = TemperedPosterior(chains=2, n_draws=30, burnin=100, thin=5, progress=False)
    for target in (0.02, 0.1, 0.3):
        run = sampler.sample(model, task, LossIncrease(target))
        assert run.calibration is not None and run.calibration.rounds
        assert not run.failed
        measured = st.mean(c.loss_increase for c in run.chains)
        assert abs(measured / target - 1) < 0.25, (target, measured, run.calibration)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in saved.items())


# ------------------------------------------------------------------ a posterior objective of its own
class _Behavioural:
    """A hand-written objective (the ``interp.objectives.Objective`` protocol): mean squared change
    of a linear model's outputs from those at w0, on fixed rows X. Quadratic in W: Hessian 2·Σ per
    output row (Σ = XᵀX/n), so with full-batch minibatches λ̂(ε) is exactly known per eigenvalue."""

    units = "squared error"

    def __init__(self, x, name="behavioural-mse"):
        self.name, self.x, self.prepared, self.ref = name, x, 0, None

    def prepare(self, model):
        self.prepared += 1
        with torch.no_grad():
            self.ref = model(self.x)

    def tensors(self):
        return {"x": self.x, "ref": self.ref}

    def loss(self, model, batch):
        return (model(batch["x"]) - batch["ref"]).pow(2).sum(-1).mean()

    def __repr__(self):
        return f"_Behavioural({self.name!r})"


def _linear(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(3, 2, bias=False).double()


def _never(*_):
    raise AssertionError("the target passed to draws must not be sampled on when objective= is set")


def test_objective_is_sampled_on_and_named_everywhere():
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    model, obj = _linear(), _Behavioural(x)
    w0 = model.weight.detach().clone()
    sampler = TemperedPosterior(objective=obj, nbeta=50.0, localization=0.0, lr=1e-3, chains=2, n_draws=3,
                                burnin=5, batch_size=16, eval_rows=16, vectorize=False, progress=False)
    draws = list(sampler.draws(model, _never))
    assert obj.prepared == 1 and len(draws) == 6
    assert all(d.objective == "behavioural-mse" and d.units == "squared error" for d in draws)
    assert all(d.loss > 0 for d in draws)  # the objective is 0 at w0 and > 0 away from it
    assert torch.equal(model.weight, w0)
    est = estimate_llc(model, _never, objective=obj, nbeta=50.0, localization=0.0, lr=1e-3, chains=2,
                       n_draws=20, burnin=5, batch_size=16, eval_rows=16, progress=False)
    assert (est.objective, est.units) == ("behavioural-mse", "squared error")
    assert all(c.units == "squared error" for c in est.chains)


def test_objective_regular_model_gives_exact_llc():
    """Linear model, behavioural squared error, full-batch minibatches: a quadratic in the 6 weights
    with Hessian eigenvalues 2·eig(Σ) (twice each), so λ̂(ε) = Σ_i ½·(B·h_i/a_i)/(1 − ε·a_i/4) → d/2."""
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    model, obj = _linear(), _Behavioural(x)
    B, eps = 40.0, 2e-3
    est = estimate_llc(model, None, objective=obj, nbeta=B, localization=0.0, lr=eps, chains=16, n_draws=1500,
                       burnin=300, batch_size=32, eval_rows=0, progress=False)
    h = torch.linalg.eigvalsh(2 * x.T @ x / len(x)).tolist() * 2
    exact = sum(quadratic_llc(B, v, 0.0, eps) for v in h)
    assert abs(exact - 3.0) < 0.3
    assert abs(est.mean - exact) < SIGMAS * est.stderr, (est.mean, exact, est.stderr)
    assert est.stderr < 0.06 * exact


def test_loss_increase_calibrates_in_the_objectives_units():
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    model, obj = _linear(), _Behavioural(x)
    sampler = TemperedPosterior(objective=obj, localization=1.0, chains=2, n_draws=200, thin=5, burnin=100,
                                batch_size=32, eval_rows=32, progress=False)
    run = sampler.sample(model, None, LossIncrease(0.05))
    rec = run.calibration
    assert rec.units == "squared error" and rec.objective == "behavioural-mse" and rec.converged
    measured = st.mean(c.loss_increase for c in run.chains)
    assert abs(measured / 0.05 - 1) < 0.3  # ΔL ≈ λ/B = 3/B: the behavioural scale, not a task's


def test_a_pilot_within_a_loose_tolerance_is_moved_onto_the_target():
    """With tolerance=0.5 a first pilot at 1.43× the target stops the calibration; B then moves by
    ΔL/Δ onto the target instead of sending the chains to the edge of the ±50% acceptance (the MiniLM
    demo's levels at 0.01 and 0.03 failed that way: one pilot at 1.47× and 1.49×, chains at 1.52×,
    1.53×). The quadratic objective has ΔL ≈ λ/B with λ = d/2 = 3 (λ̂ = 3.2–3.3 measured at this step
    size and localization): starting at B = 3/0.065 the pilot measures about 1.4× the target, and
    B·ΔL/Δ lands on it up to the pilot's and the chains' sampling errors (each about 1–2%): within
    10%, where the pilot's own B gives about 40% too much."""
    from interp.degradations import CalibrationConfig

    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    model, obj = _linear(), _Behavioural(x)
    sampler = TemperedPosterior(objective=obj, localization=1.0, chains=2, n_draws=100, thin=5, burnin=100,
                                nbeta=3 / 0.065, batch_size=32, eval_rows=32, progress=False,
                                calibration=CalibrationConfig(tolerance=0.5))
    rec = sampler.sample(model, None, LossIncrease(0.05)).calibration
    (pilot,) = rec.rounds
    assert rec.converged and abs(pilot.loss_increase / 0.05 - 1.4) < 0.1
    assert rec.nbeta == pytest.approx(pilot.nbeta * pilot.loss_increase / 0.05)
    assert abs(rec.measured / 0.05 - 1) < 0.1, rec


def test_objective_is_part_of_the_configuration():
    x = torch.zeros(4, 3, dtype=torch.float64)
    a = TemperedPosterior(objective=_Behavioural(x, "a"))
    b = TemperedPosterior(objective=_Behavioural(x, "b"))
    assert a != b and a != TemperedPosterior() and a == TemperedPosterior(objective=_Behavioural(x, "a"))
    assert "objective=_Behavioural('a')" in repr(a) and repr(a) != repr(b)
    assert a.objective_id == "_Behavioural('a')" and TemperedPosterior().objective_id is None

    def loss(m):
        return m.weight.sum()

    assert "0x" not in TemperedPosterior(objective=loss).objective_id
    with pytest.raises(ValueError, match="objective"):
        TemperedPosterior(objective=42)


def test_draws_round_trip():
    import dataclasses

    s = TemperedPosterior(n_draws=7, eval_rows=3, chains=2)
    assert s.n_draws == 7 and "n_draws=7" in repr(s)
    assert dataclasses.replace(s, chains=3) == TemperedPosterior(n_draws=7, eval_rows=3, chains=3)
    kwargs = {n: getattr(s, n) for n in TemperedPosterior.field_names()}
    assert TemperedPosterior(**kwargs) == s
    with pytest.raises(TypeError, match="draws"):  # one name per argument: the method is draws()
        TemperedPosterior(draws=7)


# -------------------------------------------------------------- a calibration that missed is failed
def test_calibration_that_missed_is_marked_failed_or_raises():
    """Issue repro: on modadd, 2 chains × 1 draw after 20 steps at LossIncrease(0.5): the pilots
    explode and the closest B gives ΔL ≫ 0.5. The level is marked failed with the reason (and the
    measured ΔL), or raises with strict=True; the weights are restored either way."""
    from interp import organisms
    from interp.degradations import CalibrationFailed

    model, task = organisms.load("modadd")
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    run = TemperedPosterior(chains=2, n_draws=1, burnin=20, progress=False).sample(model, task, LossIncrease(0.5))
    rec = run.calibration
    assert rec.failed is not None and not rec.ok and "did not converge" in rec.failed
    assert rec.measured is not None and rec.acceptance == 0.5
    with pytest.raises(CalibrationFailed, match=r"LossIncrease\(0.5\) failed: calibration to ΔL = 0.5 nats/token"):
        list(TemperedPosterior(chains=2, n_draws=1, burnin=20, strict=True, progress=False).draws(
            model, task, LossIncrease(0.5)))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in saved.items())


def test_final_chains_outside_acceptance_fail_the_level():
    """A converged calibration whose final chains measure ΔL outside the stated acceptance."""
    from interp.degradations import CalibrationConfig, CalibrationFailed, CalibrationRecord, assess_calibration

    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    model, obj = _linear(), _Behavioural(x)
    kw = dict(objective=obj, localization=1.0, chains=2, n_draws=200, thin=5, burnin=100, batch_size=32,
              eval_rows=32, vectorize=False, progress=False)
    good = TemperedPosterior(**kw).sample(model, None, LossIncrease(0.05)).calibration
    assert good.ok and abs(good.measured / 0.05 - 1) < 0.3 and good.measured_se > 0
    tight = TemperedPosterior(calibration=CalibrationConfig(acceptance=1e-6), **kw)
    bad = tight.sample(model, None, LossIncrease(0.05)).calibration
    assert bad.converged and "outside ±0.0001% of the target 0.05" in bad.failed
    with pytest.raises(CalibrationFailed):
        TemperedPosterior(calibration=CalibrationConfig(acceptance=1e-6), strict=True, **kw).sample(
            model, None, LossIncrease(0.05))
    # the per-chain path: a sweep gathers run_chain diagnostics and assesses them once
    plan = tight.plan(model, None, LossIncrease(0.05))
    chains = [tight.run_chain(model, None, LossIncrease(0.05), plan, c) for c in range(2)]
    for r in chains:
        list(r)
        assert r.calibration.measured is None  # one chain alone is not judged
    assert tight.assess(plan, [r.chains[0] for r in chains]) == bad
    assert assess_calibration(None, []) is None
    rec = CalibrationRecord(target=0.1, nbeta=1.0, lr=1.0, rounds=(), converged=True, units="u")
    assert "every chain of the level failed" in assess_calibration(rec, []).failed


def test_levels_that_cannot_be_told_apart_are_warned(caplog):
    from interp.degradations import indistinct_levels
    from interp.degradations._chain import ChainDiagnostics

    def chains(B, incs):
        return [ChainDiagnostics(chain=i, nbeta=B, lr=1e-3, localization=1.0, burnin=0, init_loss=0.0,
                                 init_eval_loss=0.0, n_params=4, eval_losses=[v - 0.01, v + 0.01])
                for i, v in enumerate(incs)]

    levels = {"NBeta(300)": {"chains": chains(300.0, [0.10, 0.11, 0.12])},
              "NBeta(3000)": {"chains": chains(3000.0, [0.105, 0.115, 0.11])},
              "NBeta(30)": {"chains": chains(30.0, [1.0, 1.1, 0.9])},
              "LossIncrease(0.5)": {"calibration": {}, "chains": [vars(c) for c in chains(30.0, [0.5, 0.6])]}}
    with caplog.at_level("WARNING", logger="interp.degradations"):
        msgs = indistinct_levels(levels)
    assert len(msgs) == 2 and len(caplog.records) == 2
    assert "NBeta(300) and NBeta(3000)" in msgs[0] and "agree within 2 standard errors" in msgs[0]
    assert "NBeta(30) and LossIncrease(0.5)" in msgs[1] and "B = 30" in msgs[1]


def test_assess_calibration_reads_stored_records():
    """What a sweep stores in levels.json (asdict, NaN as text) can be assessed after the fact."""
    import dataclasses as dc
    import json

    from interp.degradations import CalibrationRecord, CalibrationRound, assess_calibration
    from interp.degradations._chain import ChainDiagnostics

    rec = CalibrationRecord(target=0.1, nbeta=50.0, lr=1e-3, converged=True, units="nats/token",
                            rounds=(CalibrationRound(50.0, 1e-3, float("nan"), float("nan"), failed="boom"),
                                    CalibrationRound(50.0, 5e-4, 0.1, 5.0)))
    chains = [ChainDiagnostics(chain=i, nbeta=50.0, lr=5e-4, localization=1.0, burnin=0, init_loss=0.0,
                               init_eval_loss=1.0, n_params=4, eval_losses=[1.0 + v, 1.0 + v]) for i, v in
              enumerate([0.3, 0.35])]
    live = assess_calibration(rec, chains)
    stored = json.loads(json.dumps(dc.asdict(rec), default=str).replace("NaN", '"nan"'))
    again = assess_calibration(stored, [dc.asdict(c) for c in chains])
    assert again.failed == live.failed and "0.325" in again.failed
    assert again.measured == pytest.approx(live.measured) and math.isnan(again.rounds[0].llc)


# ------------------------------------------------------------------- the error of L(w0) is shared
def test_init_loss_on_the_whole_small_split_has_no_seed_dependence():
    """Default: L(w0) on every row of a small training split, so it does not depend on the seed
    (before: 8 minibatches of the chains' stream, a different L(w0) per seed, the error left out)."""
    from interp import organisms

    model, task = organisms.load("modadd")
    kw = dict(nbeta=100.0, chains=2, n_draws=2, burnin=1, batch_size=32, eval_rows=8, progress=False)
    runs = [TemperedPosterior(seed=s, **kw).sample(model, task) for s in (0, 1)]
    assert runs[0].init_loss == runs[1].init_loss and runs[0].init_loss_se == 0.0
    train = task.tensors("train", columns=("input_ids", "target_mask"))
    assert len(train["input_ids"]) <= 4096
    with torch.no_grad():
        rows = len(train["input_ids"])
        full = sum(float(task.loss(model, {k: v[i:i + 32] for k, v in train.items()})) * len(range(i, min(i + 32, rows)))
                   for i in range(0, rows, 32)) / rows
    assert runs[0].init_loss == pytest.approx(full, rel=1e-12)
    old = [TemperedPosterior(seed=s, init_batches=2, **kw).sample(model, task) for s in (0, 1)]
    assert old[0].init_loss != old[1].init_loss and old[0].init_loss_se > 0


def test_llc_stderr_includes_the_init_loss_error():
    """λ̂'s error is √(SE_chains² + (B·SE(L0))²), both parts reported; on a large split SE(L0) is
    the standard error of 64 minibatches without replacement, which matches the spread of L(w0)
    over seeds."""
    x = torch.randn(20000, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    class Noisy(_Behavioural):  # a loss with row-to-row spread at w0: L(w0) has sampling error
        def loss(self, model, batch):
            return super().loss(model, batch) + batch["x"][:, 0].square().mean()

    model, obj = _linear(), Noisy(x)
    kw = dict(objective=obj, nbeta=50.0, localization=0.0, lr=2e-3, chains=4, n_draws=100, burnin=50,
              batch_size=32, eval_rows=0, progress=False)
    est = estimate_llc(model, None, **kw)
    assert est.stderr_init == pytest.approx(50.0 * est.init_loss_se) and est.stderr_init > 0
    assert est.stderr == pytest.approx(math.hypot(est.stderr_chains, est.stderr_init))
    l0 = [TemperedPosterior(seed=s, chains=1, n_draws=1, burnin=0, **{k: v for k, v in kw.items() if k not in
                                                                   ("chains", "n_draws", "burnin")}).sample(model, None)
          for s in range(12)]
    spread = st.stdev(r.init_loss for r in l0)
    assert 0.5 < spread / est.init_loss_se < 1.6, (spread, est.init_loss_se)  # sd of an sd over 12 seeds ≈ 21%
    quad = MonomialPotential([2])
    q = estimate_llc(quad, quad.loss, nbeta=100.0, localization=0.0, lr=1e-3, chains=4, n_draws=200,
                     burnin=50, eval_rows=0, progress=False)
    assert q.stderr_init == 0.0 and q.stderr == q.stderr_chains


# --------------------------------------------------------------------- extrapolation to ε → 0
def test_extrapolated_llc_matches_the_exact_limit_on_the_quadratic():
    """K = ½Σ w_i² in d = 20 (λ = d/2, γ = 0): λ̂(ε) = (d/2)/(1 − εB/4) exactly, +11% at εB = 0.4.
    Richardson 2λ̂(ε/2) − λ̂(ε) removes the linear term (residual −(d/2)·x²/2·(1 + O(x)), x = εB/4:
    −0.6% here) and lands on d/2 within its propagated error, while λ̂(ε) alone is 4 errors off."""
    d, B = 20, 144.76
    q = MonomialPotential([2] * d)
    eps = 0.4 / B
    est = estimate_llc(q, q.loss, nbeta=B, localization=0.0, lr=eps, chains=16, n_draws=1000, burnin=100,
                       eval_rows=0, progress=False, extrapolate=True)
    (at_eps, at_half) = est.extrapolation
    assert at_eps.lr == eps and at_half.lr == eps / 2 and est.weights == pytest.approx((-1.0, 2.0))
    assert at_eps.mean == pytest.approx(quadratic_llc(B, 1.0, 0.0, eps) * d, abs=SIGMAS * at_eps.stderr)
    assert at_half.mean == pytest.approx(quadratic_llc(B, 1.0, 0.0, eps / 2) * d, abs=SIGMAS * at_half.stderr)
    assert est.stderr == pytest.approx(math.hypot(at_eps.stderr, 2 * at_half.stderr))
    assert abs(est.mean - d / 2) < SIGMAS * est.stderr, (est.mean, est.stderr)
    assert abs(at_eps.mean - d / 2) > SIGMAS * est.stderr  # the check has teeth
    with pytest.raises(ValueError, match="extrapolate"):
        estimate_llc(q, q.loss, nbeta=B, lr=eps, extrapolate=4)


@pytest.mark.slow
def test_extrapolated_llc_on_a_deep_linear_network_matches_aoyagi():
    """[4, 3, 4] at full rank 3 (Aoyagi λ = 7.5: a smooth true set, so the localization bias is
    small), B = 100, γ = 1, ε from the curvature (ε·(B·ĥ + γ) = 0.2): λ̂(ε) is +3.7% (the step-size
    bias), and the three-point line through ε, ε/2, ε/4 (same time horizon each) lands within 3%.

    Measured (this seed, 32 chains, 2026-12-06): 7.775 ± 0.066 at ε, 7.624 ± 0.067 at ε/2,
    7.517 ± 0.090 at ε/4; Richardson 7.474 ± 0.149 (−0.3%), line 7.448 ± 0.098 (−0.7%).
    On the singular [5, 4, 3, 5] at rank 1 (λ = 7.5) the same settings give 8.05, 7.51, 7.06 and an
    ε → 0 value of 6.8–7.0: there the localization (κ = γ/√B = 0.1) bias, −7 to −11%, remains,
    which no step-size extrapolation can remove.
    """
    net = DeepLinearNetwork([4, 3, 4], 3)
    est = estimate_llc(net, net.loss, nbeta=100.0, localization=1.0, chains=32, n_draws=3000, burnin=2000,
                       eval_rows=0, progress=False, extrapolate=3)
    exact = aoyagi_llc([4, 3, 4], 3)
    assert [p.lr for p in est.extrapolation] == pytest.approx([est.lr, est.lr / 2, est.lr / 4])
    assert sum(est.weights) == pytest.approx(1.0)
    assert abs(est.mean / exact - 1) < 0.03, (est.mean, est.stderr, [p.mean for p in est.extrapolation])
    assert est.stderr < 0.015 * exact  # 3% is at least two standard errors
    assert est.extrapolation[0].mean / exact - 1 > 0.03  # at ε alone the step-size bias shows


# ------------------------------------------------------------ vectorised chains on a user's own loss
class _LinearDLN(torch.nn.Module):
    """A deep linear network written the ordinary way (``nn.Linear`` layers, no bridge, no hooks)."""

    def __init__(self, widths, rank, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.layers = torch.nn.ModuleList(
            [torch.nn.Linear(a, b, bias=False) for a, b in zip(widths[:-1], widths[1:])])
        with torch.no_grad():
            for layer in self.layers:
                layer.weight.zero_()
                layer.weight[:rank, :rank] = torch.eye(rank) + 0.3 * torch.randn(rank, rank, generator=g)
            self.true = self.product().clone()

    def product(self, weights=None):
        ws = weights if weights is not None else [layer.weight for layer in self.layers]
        out = ws[0]
        for w in ws[1:]:
            out = w @ out
        return out


def test_vectorised_chains_check_a_user_loss_that_reads_captured_parameters():
    """A loss reading parameters captured outside the module (here a list made once) is invisible to
    ``functional_call``: vectorised, every chain's loss was the live w0's (λ̂ = 0 on [5, 4, 3, 5] rank
    1, Aoyagi 7.5) with no warning, because at w0 itself the gradient is 0 either way. Checked at
    distinct points near w0, it falls back to sequential chains with a warning and gives exactly the
    sequential numbers; an ordinary loss through the module keeps the vectorised path."""
    net = _LinearDLN([5, 4, 3, 5], rank=1)
    captured = [layer.weight for layer in net.layers]

    def captured_loss(model):
        return 0.5 * ((net.product(captured) - net.true) ** 2).sum()

    def module_loss(model):
        return 0.5 * ((model.product() - model.true) ** 2).sum()

    kw = dict(nbeta=100.0, localization=1.0, chains=4, n_draws=200, burnin=200, progress=False)
    seq = estimate_llc(net, captured_loss, vectorize=False, **kw)
    with pytest.warns(RuntimeWarning, match="vectorised chains disabled"):
        auto = estimate_llc(net, captured_loss, **kw)
    assert auto.per_chain == seq.per_chain and seq.mean > 3  # the sequential value, not 0
    with pytest.warns(RuntimeWarning, match="vectorised chains disabled"):
        assert not TemperedPosterior(**kw).vectorizes(net, captured_loss)
    assert TemperedPosterior(**kw).vectorizes(net, module_loss)
    vec = estimate_llc(net, module_loss, **kw)
    assert vec.mean == pytest.approx(seq.mean, rel=1e-6)  # same chains up to float rounding


# -------------------------------------------------------------------- RMSProp-preconditioned SGLD
RMS = dict(sampler="rmsprop", eval_rows=0, progress=False)


def test_rmsprop_monomial_potential_gamma_oracle():
    """K = ½(w1² + w2⁴), γ = 0: λ = 3/4. The preconditioner G ≤ 1/η, so the quadratic coordinate's
    step-size bias is at most that of SGLD at ε/η: ½/(1 − (ε/η)·B/4) − ½ (+2.6% at ε/η = 2e-3)."""
    B, lr = 100.0, 2e-4
    m = MonomialPotential([2, 4])
    est = estimate_llc(m, m.loss, nbeta=B, localization=0.0, lr=lr, chains=16, n_draws=2500, burnin=500, **RMS)
    bias = quadratic_llc(B, 1.0, 0.0, lr / 0.1) - 0.5
    assert not est.failed
    assert -SIGMAS * est.stderr < est.mean - 0.75 < SIGMAS * est.stderr + bias, (est.mean, est.stderr, bias)
    assert est.stderr < 0.05 * 0.75


def test_rmsprop_deep_linear_network_matches_aoyagi():
    """[4, 3, 4] rank 1 (λ = 6) at B = 100, γ = 1 (κ = 0.1, as the SGLD oracle) with the automatic
    step (ε·(B·ĥ + γ)/η = 0.2): within 10%, closer to 6 than to the neighbouring ranks (3.5, 7.5)."""
    net = DeepLinearNetwork([4, 3, 4], 1)
    est = estimate_llc(net, net.loss, nbeta=100.0, localization=1.0, chains=8, n_draws=1500, burnin=1000, **RMS)
    assert abs(est.mean / 6.0 - 1) < 0.10 and est.stderr < 0.05 * 6.0, (est.mean, est.stderr)
    assert est.lr == pytest.approx(0.1 * TemperedPosterior(nbeta=100.0, localization=1.0).plan(net, net.loss).lr)


def test_rmsprop_vectorised_stacked_and_single_chain_runs_agree(organism):
    """The same chains vectorised (vmap), one after another, and one chain alone (a Ray job), on a
    deep linear network and on the stacked native-bridge path of the organism."""
    d = DeepLinearNetwork([3, 2, 3], 1)
    kw = dict(nbeta=1000.0, localization=10.0, lr=1e-5, chains=3, n_draws=20, burnin=5, **RMS)
    a = TemperedPosterior(vectorize=True, **kw).sample(d, d.loss)
    b = TemperedPosterior(vectorize=False, **kw).sample(d, d.loss)
    for ca, cb in zip(a.chains, b.chains):
        assert ca.losses == pytest.approx(cb.losses, rel=1e-9, abs=1e-12)
    model, task = organism
    s = TemperedPosterior(nbeta=30.0, localization=100.0, chains=2, n_draws=3, burnin=3, batch_size=8,
                          restrict="blocks.1.*", sampler="rmsprop", eval_rows=8, progress=False)
    assert s.vectorizes(model, task)
    stacked = s.sample(model, task)
    alone = s.run_chain(model, task, None, s.plan(model, task), 1)
    list(alone)
    assert alone.chains[0].losses == pytest.approx(stacked.chains[1].losses, rel=1e-4)


def test_rmsprop_divergence_detected_and_bad_settings_rejected():
    q = MonomialPotential([2])
    run = TemperedPosterior(nbeta=144.76, localization=0.0, lr=1.0, chains=2, n_draws=500, burnin=0,
                            **RMS).sample(q, q.loss)
    assert len(run.failed) == 2 and float(q.w.detach()) == 0.0
    for bad in (dict(sampler="adam"), dict(rmsprop_alpha=1.0), dict(rmsprop_eps=0.0)):
        with pytest.raises(ValueError, match="TemperedPosterior"):
            TemperedPosterior(**bad)


def test_localization_extrapolation_on_the_quadratic():
    """K = ½w², B = 10: the pull γ = 5 holds λ̂ at ½·B/(B + γ) = 1/3 (exact, with the step-size factor
    1/(1 − εa/4)); points at γ and γ/2 extrapolated linearly to γ → 0 give exactly the combination
    2·λ̂(γ/2) − λ̂(γ) of the exact values (0.466 against λ = ½: the rest is the curvature of
    B/(B + γ) in γ), which the estimate must match within its error."""
    B, gamma, lr = 10.0, 5.0, 2e-3
    q = MonomialPotential([2])
    est = estimate_llc(q, q.loss, nbeta=B, localization=gamma, lr=lr, chains=48, n_draws=1500, burnin=200,
                       eval_rows=0, progress=False, extrapolate_localization=2)
    exact = 2 * quadratic_llc(B, 1.0, gamma / 2, lr) - quadratic_llc(B, 1.0, gamma, lr)
    assert [p.localization for p in est.extrapolation] == [gamma, gamma / 2]
    assert est.weights == pytest.approx((-1.0, 2.0))
    assert abs(est.mean - exact) < SIGMAS * est.stderr, (est.mean, exact, est.stderr)
    assert abs(est.mean - 0.5) < abs(est.extrapolation[0].mean - 0.5) - 2 * est.stderr
    with pytest.raises(ValueError, match="no localization bias to remove"):
        estimate_llc(q, q.loss, nbeta=B, localization=0.0, lr=lr, extrapolate_localization=True)
