"""Executors: a sweep on a local Ray cluster (2 workers) gives the local executor's table bit for bit;
resume across executors; a failing job is reported and rerun; the CLI's --address path; recipes and
device/dtype options."""

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

import interp
from interp.degradations import CalibrationConfig, LossIncrease, NBeta, TemperedPosterior, WeightNoise
from interp.sweep import LocalExecutor, ModelRecipe, RayExecutor, SweepJobsFailed, resolve_executor
from interp.results import Results

# a degradation defined in a test file alone (tests/interp/degradations/); pytest imports test modules
# by their file name, so this is the same module object as the one it collects
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "degradations"))
from test_degradation_protocol import WeightMask  # noqa: E402

ray = pytest.importorskip("ray")


class Drift:
    """Relative distance of the weights from w0, plus seeded noise (per-draw seeding) offset by a
    seeded draw in setup (setup seeding). Optionally raises above a distance or after some calls
    (in this process), and logs every call to a file (jobs run in other processes)."""

    name = "drift"
    effects = ("distance",)
    collaterals = ()

    def __init__(self, fail_above=None, fail_after=None, log=None):
        self.fail_above, self.fail_after, self.log, self.calls = fail_above, fail_after, log, 0

    def setup(self, model, task):
        self.w0 = [p.detach().clone() for p in model.parameters()]
        self.offset = torch.rand(()).item()

    def __call__(self, model, task):
        self.calls += 1
        if self.log is not None:
            with open(self.log, "a") as f:
                f.write("call\n")
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("interrupted")
        with torch.no_grad():
            num = sum(((p - w) ** 2).sum() for p, w in zip(model.parameters(), self.w0))
            dist = math.sqrt(float(num) / float(sum((w**2).sum() for w in self.w0)))
        if self.fail_above is not None and dist > self.fail_above:
            raise RuntimeError(f"drift {dist:.3f} above {self.fail_above}")
        return {"distance": dist, "noise": torch.rand(()).item() + self.offset}


def analyses(**drift):
    from analyses.ablation import HeadAblation

    return [HeadAblation(heads=((1, 0), (1, 1)), eval_rows=16), Drift(**drift)]


def sampler(**kw):
    return TemperedPosterior(chains=2, n_draws=2, burnin=2, batch_size=8, eval_rows=16, progress=False,
                             calibration=CalibrationConfig(max_rounds=2), **kw)


NOISE = WeightNoise(relative=True, draws_per_level=2, eval_rows=16)
RECIPE = ModelRecipe(organism="induction")


@pytest.fixture(scope="module")
def organism():
    return interp.organisms.load("induction", device="cpu")


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module (2 CPUs: 2 workers); jobs and this process both use one
    torch thread, so float reductions agree bit for bit."""
    from ray import cloudpickle

    for module in (__name__, WeightMask.__module__):  # workers cannot import tests/
        cloudpickle.register_pickle_by_value(sys.modules[module])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    torch.set_num_threads(threads)


def same(a: Results, b: Results) -> None:
    pd.testing.assert_frame_equal(a.table, b.table, check_exact=True)
    pd.testing.assert_frame_equal(a.draws, b.draws, check_exact=True)
    assert a.meta["levels"] == b.meta["levels"] and a.meta["config"] == b.meta["config"]


@pytest.mark.slow
@pytest.mark.parametrize(("degradation", "levels"), [
    (NOISE, [0.05, 0.3]),
    (sampler(vectorize=False), [LossIncrease(0.05), NBeta(300.0)]),  # one job per (level, chain)
    (sampler(), [NBeta(300.0)]),  # chains vectorised locally: one job per level
    # RMSProp-SGLD per chain: each job's preconditioner starts afresh, as in the local chain
    (sampler(vectorize=False, sampler="rmsprop"), [LossIncrease(0.05)]),
    # a user's degradation: its default chain_jobs, one job per level
    (WeightMask(draws_per_level=2, seed=3), [0.05, 0.2]),
], ids=["weight-noise", "sampler-per-chain", "sampler-vectorised", "rmsprop-per-chain", "user-degradation"])
def test_ray_table_identical_to_local(cluster, organism, degradation, levels):
    model, task = organism
    local = interp.run_sweep(model, task, analyses(), degradation, levels, eval_rows=32, progress=False)
    on_ray = interp.run_sweep(RECIPE, task, analyses(), degradation, levels, eval_rows=32, progress=False,
                              executor=RayExecutor(address=cluster))
    same(local, on_ray)
    t = on_ray.table
    assert set(t.analysis) == {"head_ablation", "drift"} and t.baseline.sum() == 5 + 2
    chains = 2 if isinstance(degradation, TemperedPosterior) else 1
    assert len(on_ray.draws) == len(levels) * chains * 2
    if isinstance(levels[0], LossIncrease):  # calibrated once per level, shared by both chain jobs
        info = on_ray.meta["levels"][0]
        assert info["calibration"]["target"] == 0.05
        assert {c["nbeta"] for c in info["chains"]} == {info["calibration"]["nbeta"]}


@pytest.mark.slow
def test_local_partial_sweep_resumes_on_ray(cluster, organism, tmp_path):
    """Some jobs done locally (chain 0 of the level), the rest run on Ray: only missing draws are
    analysed, and the table is the uninterrupted local one."""
    model, task = organism
    deg, levels = sampler(vectorize=False), [NBeta(300.0)]
    full = interp.run_sweep(model, task, analyses(), deg, levels, eval_rows=32, progress=False)
    with pytest.raises(RuntimeError, match="interrupted"):
        interp.run_sweep(model, task, analyses(fail_after=3), deg, levels, out=tmp_path, eval_rows=32,
                         progress=False)
    assert len((tmp_path / "rows.jsonl").read_text().splitlines()) == 3  # baseline + chain 0's draws
    log = tmp_path / "calls.log"
    resumed = interp.run_sweep(RECIPE, task, analyses(log=log), deg, levels, out=tmp_path, eval_rows=32,
                               progress=False, executor=RayExecutor(address=cluster))
    assert len(log.read_text().splitlines()) == 1 + 2  # the baseline (setup job) + chain 1's draws
    same(resumed, full)
    assert set(json.loads((tmp_path / "jobs.json").read_text())) == {"0/0", "0/1"}


@pytest.mark.slow
def test_failing_job_is_reported_and_rerun(cluster, organism, tmp_path):
    model, task = organism
    levels = [0.02, 0.5]
    with pytest.raises(SweepJobsFailed, match=r"1 of 2 sweep jobs failed.*level 1 \(0.5\) chain all: "
                                              r"RuntimeError: drift .* above 0.1") as err:
        interp.run_sweep(RECIPE, task, analyses(fail_above=0.1), NOISE, levels, out=tmp_path, eval_rows=32,
                         progress=False, executor="ray")
    (failure,) = err.value.failures
    assert (failure["level_index"], failure["chain"], failure["level"]) == (1, None, 0.5)
    assert json.loads((tmp_path / "failures.json").read_text())[0]["error"] == failure["error"]
    partial = err.value.results  # the job that succeeded is kept, the failure is in the metadata
    assert set(partial.table.level_index) == {-1, 0} and partial.meta["failed_jobs"] == [failure]
    assert set(json.loads((tmp_path / "levels.json").read_text())) == {"0"}
    # the same sweep again runs only the failed job (level 0 is complete)
    log = tmp_path / "calls.log"
    resumed = interp.run_sweep(RECIPE, task, analyses(log=log), NOISE, levels, out=tmp_path, eval_rows=32,
                               progress=False, executor="ray")
    assert len(log.read_text().splitlines()) == 1 + 2
    assert json.loads((tmp_path / "failures.json").read_text()) == []
    same(resumed, interp.run_sweep(model, task, analyses(), NOISE, levels, eval_rows=32, progress=False))




@pytest.mark.slow
def test_cli_sweep_with_address_matches_local(cluster, tmp_path, sweep_file):
    """`interp sweep FILE --executor ray --address HOST:PORT` gives the local CLI run's table."""
    from interp.app.cli import main

    for name in ("local", "ray"):
        sweep_file(tmp_path / f"{name}.toml", name)
    assert main(["-q", "sweep", str(tmp_path / "local.toml")]) == 0
    assert main(["-q", "sweep", str(tmp_path / "ray.toml"), "--executor", "ray", "--address", cluster]) == 0
    assert (tmp_path / "ray" / "report.html").exists()
    local, on_ray = (Results.load(tmp_path / name / "results") for name in ("local", "ray"))
    pd.testing.assert_frame_equal(local.table, on_ray.table, check_exact=True)
    with pytest.raises(ValueError, match="already connected to the Ray cluster"):
        RayExecutor(address="10.0.0.1:6379").connect()


def test_address_connects_another_process_to_the_cluster(cluster):
    """What `--address` does in a fresh process (a driver joining an existing, possibly multi-node,
    cluster): RayExecutor.connect() -> ray.init(address=...), then jobs run on that cluster's workers."""
    code = textwrap.dedent(f"""
        import ray
        from interp.sweep import RayExecutor
        assert RayExecutor(address={cluster!r}).connect()
        assert ray.get_runtime_context().gcs_address == {cluster!r}
        print(int(ray.cluster_resources()["CPU"]))
        ray.shutdown()
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-1] == "2"


# ---------------------------------------------------------------------------- no cluster needed
def test_ray_executor_needs_a_recipe_not_a_live_model(organism):
    model, task = organism
    with pytest.raises(ValueError, match=r"never ships a live TransformerBridge.*ModelRecipe\(organism="):
        interp.run_sweep(model, task, analyses(), NOISE, [0.1], executor=RayExecutor(), progress=False)


def test_recipe_runs_locally_like_the_model(organism):
    model, task = organism
    a = interp.run_sweep(model, task, analyses(), NOISE, [0.1], eval_rows=16, progress=False)
    b = interp.run_sweep(ModelRecipe(organism="induction", device="cpu"), task, analyses(), NOISE, [0.1],
                         eval_rows=16, progress=False, executor=LocalExecutor())
    same(a, b)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, r"give organism='induction'"),
    ({"organism": "inductoin"}, "unknown organism"),
    ({"organism": "induction", "model": "gpt2"}, "give one source"),
    ({"model": "gpt2", "weights": "w.safetensors"}, "give one source"),
    ({"organism": "induction", "device": "gpu"}, "device='gpu' is not a torch device"),
    ({"organism": "induction", "dtype": "int8"}, "dtype='int8'"),
    ({"organism": "induction", "kwargs": {"device": "cpu"}}, "pass device= as its own field"),
])
def test_recipe_validation_names_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelRecipe(**kwargs)


def test_recipe_is_normalised_and_picklable():
    import pickle

    r = ModelRecipe(organism="induction", dtype=torch.bfloat16, device="cpu", kwargs={"seed": 1})
    assert (r.dtype, r.device, r.kwargs) == ("bfloat16", "cpu", (("seed", 1),))
    assert pickle.loads(pickle.dumps(r)) == r and r.on("cuda") is r
    assert ModelRecipe(organism="induction").on("cpu").device == "cpu"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"address": "auto", "num_cpus": 2}, "num_cpus sizes a new local cluster"),
    ({"cpus_per_job": -1}, r"cpus_per_job=-1"),
    ({"cpus_per_job": 0}, "a job needs some resource"),
    ({"max_retries": 1.5}, "max_retries"),
    ({"retry_exceptions": "yes"}, "retry_exceptions"),
])
def test_ray_executor_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RayExecutor(**kwargs)


def test_resolve_executor():
    assert resolve_executor("local") == LocalExecutor() and resolve_executor("ray") == RayExecutor()
    with pytest.raises(ValueError, match="executor='dask'"):
        resolve_executor("dask")


def test_cli_ray_options_need_the_ray_executor(tmp_path, capsys, sweep_file):
    from interp.app.cli import main

    path = sweep_file(tmp_path / "s.toml", "x")
    assert main(["sweep", str(path), "--address", "auto"]) == 2
    assert "--address only apply with --executor ray" in capsys.readouterr().err


def test_device_and_dtype_options(organism):
    """Device plumbing on the CPU (no GPU in CI): models load where asked, in the dtype asked, and a
    sweep runs in float64 end to end."""
    model, task = interp.organisms.load("induction", device="cpu", dtype="float64")
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    res = interp.run_sweep(model, task, analyses(), NOISE, [0.1], eval_rows=16, progress=False)
    assert res.table.value.notna().all()
    with pytest.raises(ValueError, match="dtype='float8'"):
        interp.organisms.load("induction", dtype="float8")
    from interp.models import default_device, resolve_dtype

    assert default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype(None) is torch.float32
