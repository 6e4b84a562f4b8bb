"""Fault tests: a sweep killed with SIGKILL resumes to the same table; a diverging chain is recorded
as failed and kept out visibly; the model's weights (and hooks, flags, modes) come back bit-identical
from every failure path, wherever the failure happens (hypothesis picks the step)."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hooks
from interp.degradations import ActivationNoise, Checkpoints, TemperedPosterior, WeightNoise
from interp.results import Results
from interp.sweep import run_sweep
from reliability_tiny import (
    TINY_CONFIG,
    LossProbe,
    TinyLM,
    fault_sweep,
    hook_count,
    model_flags,
    state_bytes,
    tiny_bridge,
    tiny_task,
)

HERE = Path(__file__).resolve().parents[2]  # tests/: reliability_tiny.py
FAST = settings(max_examples=20, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# ------------------------------------------------------------------------------------------ SIGKILL
@pytest.mark.parametrize("kind", ["TemperedPosterior", "WeightNoise"])
def test_sigkill_mid_sweep_resumes_to_the_uninterrupted_table(tmp_path, kind):
    from interp.organisms._weights import save_bridge

    weights = save_bridge(tiny_bridge(), TINY_CONFIG, tmp_path / "tiny.safetensors")
    reference = fault_sweep(str(weights), None, kind, sleep=0.0)
    n_records = 1 + len(reference.draws)  # baseline + one record per draw

    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)])}
    child = subprocess.Popen([sys.executable, str(HERE / "reliability_tiny.py"), str(weights), str(out), kind, "0.15"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rows = out / "rows.jsonl"
    deadline = time.monotonic() + 120
    try:
        while True:  # wait until some, not all, draws are persisted
            n = len(rows.read_bytes().splitlines()) if rows.exists() else 0
            if n >= 4:
                break
            if child.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the sweep child exited (rc={child.returncode}) or stalled before writing rows: "
                            f"{child.stderr.read().decode()[-2000:]}")
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
        child.stderr.close()
    persisted = len(rows.read_bytes().splitlines())
    assert 4 <= persisted < n_records, "the kill has to land mid-sweep"

    resumed = fault_sweep(str(weights), str(out), kind, sleep=0.0)
    pd.testing.assert_frame_equal(resumed.table, reference.table)
    pd.testing.assert_frame_equal(Results.load(out).table, reference.table)
    assert len(rows.read_text().splitlines()) == n_records  # nothing duplicated, nothing lost


# ------------------------------------------------------------------------------- diverging chains
def test_diverging_chain_is_recorded_failed_with_its_reason_and_excluded(tmp_path):
    model, task = tiny_bridge(), tiny_task()
    before = state_bytes(model)
    # chain 1's noise is the same as chain 0's at a different seed; max_loss_increase makes any chain
    # whose loss rises by more than 1e-6 fail: at B = 1e5, ε = 1e-3 both chains blow past it at once
    sampler = TemperedPosterior(localization=1.0, lr=1e-3, chains=2, n_draws=3, burnin=1, batch_size=8,
                                eval_rows=8, init_batches=1, max_loss_increase=0.5, progress=False)
    res = run_sweep(model, task, [LossProbe()], sampler, [10.0, 1e5], out=tmp_path, eval_rows=8, progress=False)
    assert state_bytes(model) == before
    levels = res.meta["levels"]
    good, bad = levels[0]["chains"], levels[1]["chains"]
    assert not any(c["failed"] for c in good)
    assert all(c["failed"] for c in bad) and all(c["reason"] for c in bad)
    assert all("loss" in c["reason"] and "step" in c["reason"] for c in bad)
    # a failed chain contributes no draws: the diverged level has no rows, only its failure record
    table = res.table
    assert set(table.loc[~table["baseline"], "level_index"]) == {0}
    assert len(res.draws) == 2 * 3
    # the record survives on disk (levels.json) for a later look, with the reason
    on_disk = json.loads((tmp_path / "levels.json").read_text())
    assert on_disk["1"]["chains"][0]["failed"] and on_disk["1"]["chains"][0]["reason"] == bad[0]["reason"]


@pytest.mark.filterwarnings("ignore:vectorised chains disabled:RuntimeWarning")  # a failing loss cannot be vmapped: it falls back, as designed
def test_chain_failing_midway_keeps_its_reason_and_only_its_finite_draws():
    model, task = tiny_bridge(), tiny_task()
    before = state_bytes(model)
    calls = {"n": 0}

    class NaNAfter:
        """The task, whose loss is NaN at its 8th and 9th evaluations (one chain, mid-run)."""

        def __init__(self, task):
            self.task, self.name, self.has_loss, self.dataset = task, task.name, True, task.dataset

        def tensors(self, *a, **k):
            return self.task.tensors(*a, **k)

        def loss(self, model, batch):
            calls["n"] += 1
            out = self.task.loss(model, batch)
            return out * math.nan if 8 <= calls["n"] <= 9 else out

    run = TemperedPosterior(nbeta=100.0, localization=100.0, lr=1e-4, chains=2, n_draws=4, burnin=0,
                            batch_size=8, eval_rows=0, init_batches=1, progress=False).draws(model, NaNAfter(task))
    draws = list(run)
    assert state_bytes(model) == before
    failed = run.failed
    assert len(failed) == 1 and "non-finite loss (nan) at step" in failed[0].reason
    assert all(math.isfinite(d.loss) for d in draws)
    per_chain = {c: sum(d.chain == c for d in draws) for c in (0, 1)}
    assert per_chain[1 - failed[0].chain] == 4 and per_chain[failed[0].chain] < 4  # stopped at the NaN


class PoisonedTask:
    """The task; its loss is NaN once, at the first evaluation after ``poison()`` was called."""

    def __init__(self, task):
        self.task, self.name, self.has_loss, self.dataset, self.armed = task, task.name, True, task.dataset, False

    def tensors(self, *a, **k):
        return self.task.tensors(*a, **k)

    def loss(self, model, batch):
        out = self.task.loss(model, batch)
        if self.armed:
            self.armed = False
            return out * math.nan
        return out


class PoisonAfter(LossProbe):
    """Arms the task's NaN right after analysing its ``n``-th draw: the chain's next step diverges."""

    def __init__(self, task, n):
        super().__init__()
        self.target, self.n = task, n

    def __call__(self, model, task):
        out = super().__call__(model, task)
        if self.calls == self.n + 1:  # the baseline is call 1
            self.target.armed = True
        return out


def _midway_sweep():
    model, task = tiny_bridge(), tiny_task()
    poisoned = PoisonedTask(task)
    sampler = TemperedPosterior(nbeta=100.0, localization=100.0, lr=1e-4, chains=2, n_draws=4, burnin=0,
                                batch_size=8, eval_rows=8, init_batches=1, vectorize=False, progress=False)
    before = state_bytes(model)
    res = run_sweep(model, poisoned, [PoisonAfter(poisoned, 2)], sampler, [100.0], eval_rows=8, progress=False)
    assert state_bytes(model) == before
    return res


def test_chain_diverging_mid_sweep_is_recorded_with_its_reason():
    res = _midway_sweep()
    chains = res.meta["levels"][0]["chains"]
    assert [c["failed"] for c in chains] == [True, False]
    assert chains[0]["reason"].startswith("non-finite loss (nan) at step")
    assert sorted(res.draws.groupby("chain").size().to_dict().items()) == [(0, 2), (1, 4)]


def test_chain_diverging_mid_sweep_is_excluded_visibly_from_the_summary(tmp_path):
    res = _midway_sweep()
    failed = res.failed_chains()
    assert failed[["level_index", "chain"]].values.tolist() == [[0, 0]]
    assert failed["reason"].iloc[0].startswith("non-finite loss (nan) at step")
    assert len(res.table.query("chain == 0")) > 0  # its draws stay in the table as recorded
    s = res.summary().query("metric == 'loss' and level_index == 0").iloc[0]
    ok = res.table.query("metric == 'loss' and chain == 1")["value"]
    assert s["n_chains"] == 1 and s["n_failed_chains"] == 1 and s["n_draws"] == len(ok)
    assert s["mean"] == pytest.approx(ok.mean())
    # the same after a save/load round trip and inside concatenated results
    again = Results.load(res.save(tmp_path / "saved"))
    both = Results.concat([again, res])
    nested = Results.concat([Results.concat([again])])  # parts of parts are kept, flat
    assert len(nested.meta["parts"]) == 1 and "levels" in nested.meta["parts"][0]
    for r in (again, both, nested):
        assert r.summary().query("metric == 'loss' and level_index == 0")["n_failed_chains"].tolist() == [1]


# ------------------------------------------------------------------- randomised failure restoration
class Injected(Exception):
    """The failure the tests inject (also tried as KeyboardInterrupt)."""


class FailingTask:
    """A Task whose loss raises at its ``fail_at``-th call (counting every forward the target runs)."""

    def __init__(self, task, fail_at, exc):
        self.task, self.fail_at, self.exc, self.calls = task, fail_at, exc, 0
        self.name, self.has_loss, self.dataset = task.name, True, task.dataset

    def tensors(self, *a, **k):
        return self.task.tensors(*a, **k)

    def loss(self, model, batch):
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.exc(f"loss failure at call {self.calls}")
        return self.task.loss(model, batch)


@contextlib.contextmanager
def failing_hook(model, fail_at, exc):
    """An outer hook that raises at its ``fail_at``-th forward (a user's hook going wrong mid-run)."""
    seen = {"n": 0}

    def fn(x):
        seen["n"] += 1
        if seen["n"] == fail_at:
            raise exc(f"hook failure at forward {seen['n']}")
        return None

    with hooks.apply(model, [hooks.Hook(hooks.resid_post(0), fn)]):
        yield


def _consume(draws, fail_at, exc):
    for i, _ in enumerate(draws, 1):
        if i == fail_at:
            raise exc(f"consumer failure at draw {i}")


def _degradations(model):
    """name -> (degradation, level) on the tiny bridge; checkpoints are noisy copies of it."""
    g = torch.Generator().manual_seed(1)
    states = [(s, {k: v + 0.1 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                   for k, v in model.state_dict().items()}) for s in (10, 20, 30)]
    return {
        "TemperedPosterior": (TemperedPosterior(nbeta=100.0, localization=100.0, lr=1e-4, chains=2, n_draws=3,
                                                burnin=1, batch_size=8, eval_rows=8, init_batches=2,
                                                progress=False), None),
        "WeightNoise": (WeightNoise(sigma=0.1, draws_per_level=4, eval_rows=8), None),
        "ActivationNoise": (ActivationNoise(sigma=0.5, draws_per_level=4, eval_rows=8), None),
        "Checkpoints": (Checkpoints(source=states, eval_rows=8), None),
    }


def _assert_untouched(model, before, flags, n_hooks):
    assert state_bytes(model) == before, "weights changed after a failure"
    assert model_flags(model) == flags, "requires_grad / grads / train-eval modes changed after a failure"
    assert hook_count(model) == n_hooks, "a hook was left on the model after a failure"


@functools.lru_cache(maxsize=1)
def shared_bridge():
    """One tiny bridge for the randomised tests (each example checks it comes back unchanged)."""
    model, task = tiny_bridge(), tiny_task()
    model(task.tensors("test", rows=2)["input_ids"])  # TransformerLens adds its own LayerNorm pre-hooks once
    return model, task


@pytest.mark.filterwarnings("ignore:vectorised chains disabled:RuntimeWarning")  # a failing loss cannot be vmapped: it falls back, as designed
@FAST
@given(kind=st.sampled_from(["TemperedPosterior", "WeightNoise", "ActivationNoise", "Checkpoints"]),
       where=st.sampled_from(["loss", "hook", "consumer"]),
       fail_at=st.integers(1, 12),
       exc=st.sampled_from([Injected, KeyboardInterrupt]))
def test_weights_bit_identical_after_failure_anywhere(kind, where, fail_at, exc):
    model, task = shared_bridge()
    before, flags, n_hooks = state_bytes(model), model_flags(model), hook_count(model)
    degradation, level = _degradations(model)[kind]
    target = FailingTask(task, fail_at, exc) if where == "loss" else task
    ctx = failing_hook(model, fail_at, exc) if where == "hook" else contextlib.nullcontext()
    try:
        with ctx:
            _consume(degradation.draws(model, target, level), fail_at if where == "consumer" else -1, exc)
    except (Injected, KeyboardInterrupt):
        pass  # may also finish first when fail_at lies past the last call
    _assert_untouched(model, before, flags, n_hooks)


class FailingInVectorisedChains(FailingTask):
    """A Task whose loss raises at its ``fail_at``-th call of the vectorised chain loop: calls are
    counted from the second one made inside ``torch.func.vmap`` (the first is the sampler's one-time
    check that the vectorised gradient equals the plain one, where a failure turns the run into
    sequential chains), the plain per-chain evaluations at each draw included."""

    def __init__(self, task, fail_at, exc):
        super().__init__(task, fail_at, exc)
        self.vmapped = 0

    def loss(self, model, batch):
        out = self.task.loss(model, batch)
        self.vmapped += bool(torch._C._functorch.is_functorch_wrapped_tensor(out))
        if self.vmapped >= 2:
            self.calls += 1
            if self.calls == self.fail_at:
                raise self.exc(f"loss failure at call {self.calls} of the vectorised chains")
        return out


#: 3 chains of burnin 1 + 3 draws: 4 vectorised steps and 3 × 3 per-chain evaluations, 9 draws
VECTORISED_CALLS, VECTORISED_DRAWS = 4 + 3 * 3, 3 * 3


@FAST
@given(where=st.sampled_from(["loss", "consumer"]), fail_at=st.integers(1, 14),
       exc=st.sampled_from([Injected, KeyboardInterrupt]))
def test_vectorised_chains_restore_after_failure_anywhere(where, fail_at, exc):
    """TinyLM's chains run stacked (``vmap`` over ``functional_call``; the run's ``stacking`` says
    so) and fail at any call of the stacked loop's loss or at any draw its consumer takes."""
    model, task = TinyLM(), tiny_task()
    before, flags, n_hooks = state_bytes(model), model_flags(model), hook_count(model)
    sampler = TemperedPosterior(nbeta=100.0, localization=10.0, lr=1e-3, chains=3, n_draws=3, burnin=1,
                                batch_size=8, eval_rows=8, init_batches=2, vectorize=True, progress=False)
    target = FailingInVectorisedChains(task, fail_at, exc) if where == "loss" else task
    run = sampler.draws(model, target)
    raised = False
    try:
        _consume(run, fail_at if where == "consumer" else -1, exc)
    except (Injected, KeyboardInterrupt):
        raised = True
    stacking = run.stacking
    del run  # abandoned, as a consumer's failed loop leaves it: dropping it restores the weights
    assert stacking is not None and stacking.chains_per_batch == 3, stacking  # all 3 chains stacked
    assert raised == (fail_at <= (VECTORISED_CALLS if where == "loss" else VECTORISED_DRAWS))
    _assert_untouched(model, before, flags, n_hooks)


@FAST
@given(kind=st.sampled_from(["TemperedPosterior", "WeightNoise", "ActivationNoise", "Checkpoints"]),
       fail_at=st.integers(1, 13), exc=st.sampled_from([Injected, KeyboardInterrupt]))
def test_run_sweep_restores_after_an_analysis_fails_anywhere(kind, fail_at, exc):
    model, task = shared_bridge()
    before, flags, n_hooks = state_bytes(model), model_flags(model), hook_count(model)
    degradation, _ = _degradations(model)[kind]
    levels = {"TemperedPosterior": [100.0, 300.0], "WeightNoise": [0.1, 0.2], "ActivationNoise": [0.5, 1.0],
              "Checkpoints": [10, 30]}[kind]
    calls = {"TemperedPosterior": 13, "WeightNoise": 9, "ActivationNoise": 9, "Checkpoints": 3}[kind]
    probe = LossProbe(fail_at=1 + (fail_at - 1) % calls, exc=exc)  # baseline call, then one per draw
    with pytest.raises(exc):
        run_sweep(model, task, [probe], degradation, levels, eval_rows=8, progress=False)
    _assert_untouched(model, before, flags, n_hooks)


# ------------------------------------------------------------------------- notebook interrupts
INTERRUPT_CHILD = """
import sys, torch
from reliability_tiny import LossProbe, hook_count, tiny_bridge, tiny_task
from interp.degradations import ActivationNoise, Checkpoints, TemperedPosterior, WeightNoise
from interp.sweep import run_sweep, weights_digest

torch.set_num_threads(1)  # the import-time work below; undone after collection
TORCH_THREADS = 1  # this module's tests run on one thread (tests/conftest.py; nothing leaks to others)
model, task = tiny_bridge(), tiny_task()
model(task.tensors("test", rows=2)["input_ids"])  # TransformerLens adds its LayerNorm pre-hooks once
g = torch.Generator().manual_seed(1)
states = [(s, {k: v + 0.1 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
               for k, v in model.state_dict().items()}) for s in (10, 20, 30)]
kinds = {
    "WeightNoise": (WeightNoise(relative=True, draws_per_level=3, eval_rows=8), [0.1]),
    "TemperedPosterior": (TemperedPosterior(localization=100.0, lr=1e-4, chains=2, n_draws=2, burnin=1,
                                            batch_size=8, eval_rows=8, init_batches=2, progress=False), [300.0]),
    "Checkpoints": (Checkpoints(source=states, eval_rows=8), [None]),
    "ActivationNoise": (ActivationNoise(sigma=0.5, draws_per_level=3, eval_rows=8), [0.5]),
}
w0, n_hooks = weights_digest(model), hook_count(model)
for kind, (degradation, levels) in kinds.items():
    probe = LossProbe(fail_at=2, exc=KeyboardInterrupt)  # the baseline, then Ctrl-C at the first draw
    try:
        run_sweep(model, task, [probe], degradation, levels, eval_rows=8)  # default progress bars
    except KeyboardInterrupt as err:
        sys.last_value = err  # as IPython keeps it: the traceback, its frames and their locals stay alive
    else:
        raise SystemExit(kind + ": no interrupt")
    print(kind, weights_digest(model) == w0, hook_count(model) == n_hooks, flush=True)
"""


def test_interrupted_sweep_restores_at_once_while_the_exception_is_kept(tmp_path):
    """Ctrl-C in an analysis mid-sweep, the exception kept alive (IPython's sys.last_value): the
    weights are bit-identical to w0 and ActivationNoise's hooks are gone right after, for every
    degradation (the draw iterator is closed in a finally, not when garbage collection gets to it)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)])}
    done = subprocess.run([sys.executable, "-c", INTERRUPT_CHILD], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert lines == {k: "True True" for k in ("WeightNoise", "TemperedPosterior", "Checkpoints", "ActivationNoise")}


def test_analysis_changing_weights_in_setup_is_named_not_the_degradation():
    model, task = shared_bridge()
    before, saved = state_bytes(model), next(model.parameters()).detach().clone()

    class Meddler(LossProbe):
        def setup(self, model, task):
            super().setup(model, task)
            with torch.no_grad():
                next(model.parameters()).add_(1.0)

    try:
        with pytest.raises(RuntimeError, match=r"Analysis 'meddler' changed the model's weights in setup\(\)"):
            run_sweep(model, task, [LossProbe(), Meddler(name="meddler")], WeightNoise(draws_per_level=2, eval_rows=8),
                      [0.1], eval_rows=8, progress=False)
    finally:
        with torch.no_grad():
            next(model.parameters()).copy_(saved)
    assert state_bytes(model) == before


# ------------------------------------------------------------------------------ concurrent writers

# `interp sweep FILE`, with every analysed draw held until GATE exists: whichever process takes the
# out directory's lock waits there, so the other one certainly arrives while the first is mid-sweep
GATED_CLI = """
import os, sys, time
import interp.sweep.kernel as kernel
analyse, gate = kernel.analyse, sys.argv[2]
def held(*args, **kwargs):
    while not os.path.exists(gate):
        time.sleep(0.05)
    return analyse(*args, **kwargs)
kernel.analyse = held
from interp.app.cli import main
sys.exit(main(["-q", "sweep", sys.argv[1]]))
"""


@pytest.mark.slow
def test_two_concurrent_cli_sweeps_into_one_out(tmp_path, sweep_file):
    """Two `interp sweep FILE` processes into one out at once: exactly one proceeds, the other fails
    with an error naming the lock and the pid that holds it; the table equals an uninterrupted run."""
    from interp.app.cli import main

    sweep_file(tmp_path / "both.toml", "shared")
    sweep_file(tmp_path / "alone.toml", "alone")
    gate = tmp_path / "gate"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)]), "OMP_NUM_THREADS": "1"}
    with contextlib.ExitStack() as pipes:  # each Popen's exit closes its pipes and reaps it
        procs = [pipes.enter_context(subprocess.Popen(
            [sys.executable, "-c", GATED_CLI, str(tmp_path / "both.toml"), str(gate)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)) for _ in range(2)]
        try:
            deadline = time.monotonic() + 240
            while all(p.poll() is None for p in procs):  # the loser exits; the winner waits at the gate
                assert time.monotonic() < deadline, "neither sweep exited"
                time.sleep(0.1)
            loser = next(p for p in procs if p.poll() is not None)
            winner = next(p for p in procs if p is not loser)
            assert winner.poll() is None, "both sweeps ended: the second was not refused while the first ran"
            gate.touch()
            assert winner.wait(240) == 0, winner.stderr.read()[-3000:]
        finally:
            gate.touch()
            for p in procs:
                if p.poll() is None:
                    p.kill()
        err = loser.stderr.read()
    assert loser.returncode != 0
    lock = tmp_path / "shared" / "sweep" / "sweep.lock"
    assert f"the lock {lock} is held by process {winner.pid}" in err, err[-2000:]
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err[-2000:]
    assert not lock.exists()  # released by the winner
    assert main(["-q", "sweep", str(tmp_path / "alone.toml")]) == 0
    shared, alone = (Results.load(tmp_path / name / "results").table for name in ("shared", "alone"))
    pd.testing.assert_frame_equal(shared, alone, check_exact=True)
    pd.testing.assert_frame_equal(Results.load(tmp_path / "shared" / "sweep").table, alone, check_exact=True)
    assert len((tmp_path / "shared" / "sweep" / "rows.jsonl").read_text().splitlines()) == 1 + 2 * 2


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    import json
    import socket

    from interp.sweep.lock import OutDirInUse

    model, task = shared_bridge()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "run"
    out.mkdir()
    (out / "sweep.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": 0}))
    sweep = functools.partial(run_sweep, model, task, [LossProbe()], WeightNoise(draws_per_level=2, eval_rows=8),
                              [0.1], eval_rows=8, progress=False, out=out)
    with caplog.at_level("WARNING", logger="interp.sweep.lock"):
        res = sweep()
    assert f"Taking over the stale lock {out / 'sweep.lock'} of process {dead.pid}" in caplog.text
    assert len(res.draws) == 2 and not (out / "sweep.lock").exists()
    # a live holder (this test's parent process, on this host) is refused, naming the lock and its pid
    (out / "sweep.lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "started": 0}))
    with pytest.raises(OutDirInUse, match=rf"the lock {out / 'sweep.lock'} is held by process {os.getppid()} "):
        sweep()
    assert (out / "sweep.lock").exists()  # someone else's lock is never removed


# ----------------------------------------------------------------------------------------- load
def _conversion_entries(model) -> int:
    """Entries TransformerLens' hook shape conversions hold (grow per hooked forward unless cleared)."""
    return sum(len(getattr(getattr(hp, "hook_conversion", None), "_conversion_state", {}) or {})
               for hp in model.hook_dict.values())


def test_no_hook_handle_or_cache_growth_over_many_draws():
    import gc

    from analyses.ablation import HeadAblation
    from analyses.norms import ResidualNorms

    model, task = tiny_bridge(), tiny_task()

    def sweep(n_draws):
        analyses = [HeadAblation(((0, 0), (0, 1)), method="resample", eval_rows=4), ResidualNorms(eval_rows=4, batch_size=4, writes=False),
                    LossProbe()]
        run_sweep(model, task, analyses, ActivationNoise(points=[hooks.attn_out(0), hooks.resid_post(0)], draws_per_level=n_draws, eval_rows=4), [0.1, 0.2],
                  eval_rows=4, progress=False)
        gc.collect()
        return len(gc.get_objects())

    sweep(2)  # warm-up: lazily built caches (resolved points, TransformerLens pre-hooks) exist from here on
    n_hooks, before = hook_count(model), len(gc.get_objects())
    after_few = sweep(3)
    assert hook_count(model) == n_hooks and _conversion_entries(model) == 0
    after_many = sweep(15)
    assert hook_count(model) == n_hooks and _conversion_entries(model) == 0
    # 30 draws leave no more live objects behind than 6 do (a leak of one object per forward would be
    # hundreds); the slack covers interpreter noise, not per-draw growth
    assert after_many - after_few < 25, (before, after_few, after_many)
