"""The Ray executor: one Ray task per (level, chain) job of a sweep, each loading its model from a recipe.

A sweep is the grid of jobs J = {(ℓ, c)}: level ℓ of the degradation, chain c.
:func:`~interp.sweep.run_sweep` takes ``executor="local"`` (default: every job in this process, one
after another) or ``executor="ray"`` / :class:`RayExecutor` (one Ray task per job, on whatever
cluster Ray is connected to). Both produce the same table, bit for bit on the same hardware:

- the analyses are set up once on w0 with their randomness seeded by s(seed, SETUP) and every draw's
  analyses by s(seed, ℓ, c, d), s = first 8 bytes of SHA-256 of the JSON list (the same seeds in any
  process, :func:`interp.sweep.kernel.seed_for`);
- each degradation says how a level splits into jobs (``chain_jobs(model, task)``, asked once in the
  setup job): ``[None]``, one job per level that runs ``draws`` exactly as locally (the noise
  baselines, checkpoints, and a sampler that runs its chains as one vectorised batch), or chain
  indices: the level is then planned once (``degradation.plan``; for the tempered posterior its nβ =
  B and step size ε, for a :class:`~interp.degradations.LossIncrease` level the calibration, shared
  by all chains), each chain c runs alone (``degradation.run_chain``, for the sampler with its own
  noise stream seed·1000003 + c and the shared minibatch order, exactly as chain c of the sequential
  in-process sampler), and the level's record is assessed on all its chains
  (``degradation.assess``); so the table stays bit-identical.

The Ray path never ships a live model: a job loads it from a :class:`ModelRecipe` (an organism name,
a ``load_model`` name or directory, or a safetensors weights file) and checks that its weights digest
equals the one the sweep was configured with; the task, the set-up analyses and the degradation are
pickled (Ray's cloudpickle). Results are persisted per job as jobs complete, into the same store as
the local executor (``rows.jsonl``, ``levels.json``, plus ``jobs.json``), so a sweep started with one
executor resumes with the other; completed jobs are never rerun. A job that still fails after Ray's
retries (``max_retries`` for dead workers, ``retry_exceptions`` for errors) is recorded in
``failures.json`` and the sweep ends with :class:`SweepJobsFailed` naming it; nothing is dropped
quietly, and running the sweep again retries just the missing jobs.

What pickles (checked with the shipped classes): ``HeadAblation``, ``ResidualNorms``, ``FrozenProbe``,
``RefitProbe`` (with plain ``pickle`` too) and ``CausalScrubbing`` (its hypotheses hold local
functions: cloudpickle only, which Ray uses), before and after ``setup``; ``TemperedPosterior``,
``WeightNoise``, ``ActivationNoise``, ``Checkpoints(organism name or paths)``. Not picklable: a
``Checkpoints`` of live ``(step, model)`` pairs (bridges do not pickle: pass the organism name or
weight files instead), and a ``restrict`` predicate that is a lambda defined in ``__main__`` is
pickled by value (fine) but one closing over a model is not.

Bit-identity caveats: the same device, dtype, library versions and torch thread count
(``torch.set_num_threads``; a job uses ``cpus_per_job`` threads) as the local run.

Example (a Ray cluster: the local machine here; ``address="ray://HOST:10001"`` or ``"auto"`` for an
existing one; the CLI: ``interp sweep FILE.toml --executor ray --address ray://HOST:10001``)::

    >>> import interp
    >>> from interp.sweep import ModelRecipe, RayExecutor
    >>> _, task = interp.organisms.load("induction", n_train=64, n_test=64)
    >>> def head_norm(model, task):
    ...     return {"norm": float(model.blocks[0].attn.W_O.detach().norm())}
    >>> res = interp.run_sweep(ModelRecipe(organism="induction"), task, [head_norm],
    ...                        interp.WeightNoise(relative=True), [0.05, 0.2],
    ...                        executor=RayExecutor(num_cpus=2), out="runs/wn")         # doctest: +SKIP

(Skipped as a docstring example: starting Ray takes longer than the rest of them together;
``tests/interp/sweep/test_executors.py`` runs this sweep on a local Ray cluster and checks that its
table is the local executor's.)
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from interp.sweep import kernel
from interp.sweep.kernel import weights_digest
from interp.sweep.store import BASELINE_KEY, Store, asdict, jsonable

__all__ = ["ModelRecipe", "RayExecutor", "SweepJobsFailed"]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ recipe
@dataclass(frozen=True)
class ModelRecipe:
    """How to load a model in any process: what Ray jobs get instead of a live model.

    Exactly one source: ``organism`` (a shipped organism, :func:`interp.organisms.load`; with
    ``weights``, other weights of the same architecture, as ``[model] weights`` in a sweep file),
    ``model`` (a Hugging Face hub name or ``save_pretrained`` directory, :func:`interp.load_model`), or
    ``weights`` alone (a safetensors file written by an organism's ``train``, self-describing).

    Args:
        organism: organism name (``interp.organisms.names()``).
        model: hub id or local directory for :func:`interp.load_model`.
        weights: path to a safetensors weights file (must exist where the job runs).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... ``None``: CUDA when available (a Ray job:
            CUDA when the job was given GPUs, ``RayExecutor(gpus_per_job=...)``).
        dtype: floating dtype name or ``torch.dtype`` (stored by name); ``None``: as loaded.
        kwargs: extra keyword arguments for ``organisms.load`` / ``load_model`` (a dict or pairs).
    """

    organism: str | None = None
    model: str | None = None
    weights: str | None = None
    device: str | None = None
    dtype: str | None = None
    kwargs: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        from interp.models import resolve_device, resolve_dtype

        if self.organism is not None and self.model is not None or self.model is not None and self.weights is not None:
            raise ValueError(
                f"ModelRecipe(organism={self.organism!r}, model={self.model!r}, weights={self.weights!r}): "
                "give one source: organism (optionally with weights), model, or weights alone."
            )
        if self.organism is None and self.model is None and self.weights is None:
            raise ValueError(
                "ModelRecipe(): give organism='induction' (see interp.organisms.names()), "
                "model='gpt2' or a save_pretrained directory, or weights='file.safetensors'."
            )
        if self.organism is not None:
            from interp import organisms

            if self.organism not in organisms.names():
                raise ValueError(
                    f"ModelRecipe(organism={self.organism!r}): unknown organism; available: "
                    f"{organisms.names()}."
                )
        for name in ("model", "weights"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, (str, os.PathLike)):
                    raise ValueError(f"ModelRecipe({name}={value!r}): give a string or a path.")
                object.__setattr__(self, name, os.fspath(value))
        if self.device is not None:
            object.__setattr__(self, "device", str(resolve_device(self.device)))
        if self.dtype is not None:
            object.__setattr__(self, "dtype", str(resolve_dtype(self.dtype)).removeprefix("torch."))
        kwargs = self.kwargs
        if isinstance(kwargs, Mapping):
            kwargs = kwargs.items()
        try:
            pairs = tuple(sorted((str(k), v) for k, v in kwargs))
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"ModelRecipe(kwargs={self.kwargs!r}): give a dict of keyword arguments for "
                "organisms.load / load_model, e.g. kwargs={'seed': 0}."
            ) from err
        for key in ("device", "dtype"):
            if key in dict(pairs):
                raise ValueError(f"ModelRecipe(kwargs={self.kwargs!r}): pass {key}= as its own field.")
        object.__setattr__(self, "kwargs", pairs)

    def load(self) -> Any:
        """The model, a ``TransformerBridge`` in eval mode on ``device`` with ``dtype``."""
        from interp.models import load_model, place

        kwargs = dict(self.kwargs)
        if self.model is not None:
            return load_model(self.model, device=self.device, dtype=self.dtype, **kwargs)
        if self.weights is None:
            from interp import organisms

            model, _ = organisms.load(self.organism, device=self.device, dtype=self.dtype, **kwargs)
            return model
        from interp.organisms._weights import load_bridge

        return place(load_bridge(self.weights), self.device, self.dtype)

    def on(self, device: str | None) -> ModelRecipe:
        """This recipe with ``device`` filled in where it was left to the default."""
        return self if self.device is not None or device is None else dataclasses.replace(self, device=device)


# --------------------------------------------------------------------------------------- executors
@dataclass(frozen=True)
class RayExecutor:
    """One Ray task per (level, chain) job.

    Args:
        address: the cluster: ``None`` (the one this process is connected to; else the one in
            ``RAY_ADDRESS``; else a new local cluster on this machine), ``"auto"`` (the cluster this
            node belongs to), ``"ray://HOST:10001"`` (Ray Client) or a GCS address ``"HOST:6379"``.
        num_cpus: CPUs of a new local cluster (only with ``address=None``; ``None``: all).
        cpus_per_job: CPUs Ray reserves for each job.
        gpus_per_job: GPUs Ray reserves for each job (fractions share a GPU); a recipe without a
            device then loads the model on CUDA, else on CPU.
        max_retries: retries of a job whose worker died (Ray's ``max_retries``).
        retry_exceptions: also retry a job that raised (Ray's ``retry_exceptions``): ``False``,
            ``True`` or a tuple of exception types. Analyses are deterministic, so retrying an
            error helps only with transient ones (e.g. CUDA out of memory).
        runtime_env: Ray runtime environment for the jobs (e.g. ``{"pip": [...]}``), when the
            cluster's nodes lack ``interp``.
    """

    address: str | None = None
    num_cpus: int | None = None
    cpus_per_job: float = 1.0
    gpus_per_job: float = 0.0
    max_retries: int = 3
    retry_exceptions: bool | tuple[type[BaseException], ...] = False
    runtime_env: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        c = "RayExecutor"
        if self.address is not None and not (isinstance(self.address, str) and self.address.strip()):
            raise ValueError(f"{c}(address={self.address!r}): give None, 'auto', 'ray://HOST:10001' or 'HOST:PORT'.")
        if self.num_cpus is not None:
            if isinstance(self.num_cpus, bool) or not isinstance(self.num_cpus, int) or self.num_cpus < 1:
                raise ValueError(f"{c}(num_cpus={self.num_cpus!r}): give a positive integer or None (all).")
            if self.address is not None:
                raise ValueError(
                    f"{c}(num_cpus={self.num_cpus}, address={self.address!r}): num_cpus sizes a new local "
                    "cluster; an existing cluster has its own resources. Drop one of them."
                )
        for name, lo in (("cpus_per_job", 0.0), ("gpus_per_job", 0.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < lo:
                raise ValueError(f"{c}({name}={v!r}): give a number >= {lo:g}.")
        if self.cpus_per_job == 0 and self.gpus_per_job == 0:
            raise ValueError(f"{c}(cpus_per_job=0, gpus_per_job=0): a job needs some resource; use cpus_per_job=1.")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < -1:
            raise ValueError(f"{c}(max_retries={self.max_retries!r}): give an integer >= 0 (-1: retry forever).")
        r = self.retry_exceptions
        if not (isinstance(r, bool) or isinstance(r, tuple) and all(isinstance(t, type) and issubclass(t, BaseException) for t in r)):
            raise ValueError(f"{c}(retry_exceptions={r!r}): give True, False or a tuple of exception classes.")

    # --------------------------------------------------------------------------------- connection
    def connect(self) -> bool:
        """Connect to (or start) the cluster; ``True`` when this call initialised Ray."""
        import ray

        if ray.is_initialized():
            if self.address not in (None, "auto"):
                current = ray.get_runtime_context().gcs_address
                if self.address != current:
                    raise ValueError(
                        f"RayExecutor(address={self.address!r}): this process is already connected to "
                        f"the Ray cluster at {current!r}. Call ray.shutdown() first, or pass address=None "
                        "to use the connected cluster."
                    )
            return False
        kwargs: dict[str, Any] = {"address": self.address, "logging_level": logging.WARNING}
        if self.address is None:
            kwargs["include_dashboard"] = False
            if self.num_cpus is not None:
                kwargs["num_cpus"] = self.num_cpus
        if self.runtime_env is not None:
            kwargs["runtime_env"] = dict(self.runtime_env)
        ray.init(**kwargs)
        return True

    # ---------------------------------------------------------------------------------------- run
    def run(self, model: Any, task: Any, analyses: list[Any], degradation: Any, levels: list[Any], *,
            out: str | os.PathLike | None, seed: int, eval_rows: int, progress: bool) -> Any:
        """The sweep of :func:`~interp.sweep.run_sweep` with every job a Ray task."""
        import ray
        from tqdm.auto import tqdm

        if not isinstance(model, ModelRecipe):
            raise ValueError(
                f"The Ray executor loads the model in every job from a recipe and never ships a live "
                f"{type(model).__name__}: pass model=ModelRecipe(organism='induction') (or "
                "model='gpt2' / a save_pretrained directory, or weights='file.safetensors')."
            )
        recipe = model.on("cuda" if self.gpus_per_job > 0 else "cpu")
        deg_name = kernel.degradation_name(degradation)
        threads = max(1, int(self.cpus_per_job))
        started = self.connect()
        try:
            def remote(fn: Any, **extra: Any) -> Any:
                return ray.remote(fn).options(
                    num_cpus=self.cpus_per_job, num_gpus=self.gpus_per_job, max_retries=self.max_retries,
                    retry_exceptions=list(self.retry_exceptions) if isinstance(self.retry_exceptions, tuple)
                    else self.retry_exceptions, **extra)

            task_ref, deg_ref = ray.put(task), ray.put(degradation)
            ready_ref, summary_ref = remote(_setup_job, num_returns=2).remote(
                recipe, task_ref, analyses, deg_ref, seed, eval_rows, deg_name, threads)
            summary = ray.get(summary_ref)  # a failed setup fails the sweep: nothing can run
            digest, base_loss = summary["digest"], summary["base_loss"]
            config = kernel.sweep_config(task, analyses, degradation, levels, seed, eval_rows, digest)
            store = Store(out, config)
            try:
                if not store.done(BASELINE_KEY):
                    store.add(BASELINE_KEY, summary["rows"], {})
                chains_of = {li: list(summary["chain_jobs"]) for li in range(len(levels))}
                pending: dict[Any, tuple[int, int | None, Any]] = {}
                for li, level in enumerate(levels):
                    if store.level_complete(li):
                        continue
                    todo = [c for c in chains_of[li] if _job_name(li, c) not in store.jobs()]
                    if not todo:
                        _finish_level(store, li, chains_of[li], degradation)
                        continue
                    prep = (remote(_prepare_job).remote(recipe, task_ref, deg_ref, level, digest, threads)
                            if todo[0] is not None else None)
                    for c in todo:
                        done = [k for k in store.keys if k[0] == li and (c is None or k[1] == c)]
                        ref = remote(_job).remote(recipe, task_ref, ready_ref, deg_ref, li, level, c, prep,
                                                  done, seed, eval_rows, base_loss, deg_name, digest, threads)
                        pending[ref] = (li, c, level)
                failures = self._gather(pending, store, chains_of, tqdm(
                    total=len(pending), desc=f"{deg_name} jobs (ray)", disable=not progress), degradation)
                store.record_failures(failures)
            finally:
                store.close()
        finally:
            if started:
                ray.shutdown()
        results = kernel.make_results(store, config)
        if failures:
            results.meta["failed_jobs"] = failures
            raise SweepJobsFailed(failures, results, out, len(pending))
        return results

    @staticmethod
    def _gather(pending: dict[Any, tuple[int, int | None, Any]], store: Any,
                chains_of: dict[int, list[int | None]], bar: Any, degradation: Any) -> list[dict[str, Any]]:
        """Persist each job's rows as it completes; failed jobs are collected, never dropped."""
        import ray

        failures: list[dict[str, Any]] = []
        waiting = dict(pending)
        with bar:
            while waiting:
                ready, _ = ray.wait(list(waiting), num_returns=1)
                for ref in ready:
                    li, c, level = waiting.pop(ref)
                    bar.update(1)
                    try:
                        result = ray.get(ref)
                    except Exception as err:  # noqa: BLE001 - every failure is recorded and reported
                        cause = getattr(err, "cause", None) or err
                        failures.append({"level_index": li, "chain": c, "level": jsonable(level),
                                         "error": f"{type(cause).__name__}: {cause}", "detail": str(err)})
                        log.error("job level %d (%r), chain %s failed: %s: %s", li, level,
                                  "all" if c is None else c, type(cause).__name__, cause)
                        continue
                    for rec in result["records"]:
                        store.add(tuple(rec["key"]), rec["rows"], rec["draw"])
                    store.finish_job(_job_name(li, c), result["info"])
                    if all(_job_name(li, x) in store.jobs() for x in chains_of[li]):
                        _finish_level(store, li, chains_of[li], degradation)
        return sorted(failures, key=lambda f: (f["level_index"], -1 if f["chain"] is None else f["chain"]))


class SweepJobsFailed(RuntimeError):
    """Some (level, chain) jobs of a Ray sweep failed after their retries.

    Attributes: ``failures`` (``[{"level_index", "chain", "level", "error", "detail"}]``; chain
    ``None``: the level's only job), ``results`` (the :class:`~interp.results.Results` of every job
    that succeeded, with ``meta["failed_jobs"]``) and ``out`` (where they are saved). Running the
    same sweep again with the same ``out`` retries only the failed jobs.
    """

    def __init__(self, failures: list[dict[str, Any]], results: Any, out: Any, n_jobs: int) -> None:
        self.failures, self.results, self.out = failures, results, out
        listed = "; ".join(
            f"level {f['level_index']} ({f['level']}) chain {'all' if f['chain'] is None else f['chain']}: {f['error']}"
            for f in failures)
        where = f"saved in {out} (failures.json lists these)" if out is not None else "in .results"
        super().__init__(
            f"{len(failures)} of {n_jobs} sweep jobs failed after their retries: {listed}. The other jobs' "
            f"results are {where}; fix the cause and run the same sweep again (same out) to run only the "
            "failed jobs."
        )


# ------------------------------------------------------------------------------------- job layout
def _job_name(li: int, chain: int | None) -> str:
    return f"{li}/{'*' if chain is None else chain}"


def _finish_level(store: Any, li: int, chains: list[int | None], degradation: Any) -> None:
    """Mark a level complete with the same record the local executor writes (a calibrated level's
    record assessed on all its chains, the degradation's ``assess``, as ``draws`` does)."""
    infos = [store.jobs()[_job_name(li, c)] for c in chains]
    if chains == [None]:
        info = infos[0]["level_info"]
    else:
        info = {}
        info_chains = [i["chain"] for i in infos]
        calibration = next((i["calibration"] for i in infos if i.get("calibration") is not None), None)
        if calibration is not None:
            info["calibration"] = asdict(degradation.assess(calibration, [c for c in info_chains if c is not None]))
        info["chains"] = info_chains
    store.finish_level(li, info)


# --------------------------------------------------------------------------------- inside a worker
_MODELS: dict[str, Any] = {}  # repr(recipe) -> model: one per worker process, reused across jobs


def _worker_model(recipe: ModelRecipe, digest: str | None, threads: int) -> Any:
    """The recipe's model (cached per worker), checked bit-identical to the sweep's weights; torch
    uses ``threads`` threads in this job (float reductions depend on it)."""
    import torch

    torch.set_num_threads(threads)
    model = _MODELS.get(repr(recipe))
    if model is not None and digest is not None and weights_digest(model) != digest:
        model = None  # a cached copy that is not w0 any more: load afresh
    if model is None:
        _MODELS.clear()
        model = recipe.load()
        _MODELS[repr(recipe)] = model
    if digest is not None and weights_digest(model) != digest:
        _MODELS.clear()
        raise RuntimeError(
            f"{recipe} loads weights that differ from the sweep's (digest {digest[:12]}...) on this "
            "node: a different file, package version or dtype. Make every node load the same weights."
        )
    return model


def _check_restored(model: Any, digest: str, what: str,
                    blame: str = "the degradation did not restore them") -> None:
    if weights_digest(model) != digest:
        _MODELS.clear()
        raise RuntimeError(f"The model's weights differ after {what}: {blame}.")


def _setup_job(recipe: ModelRecipe, task: Any, analyses: list[Any], degradation: Any, seed: int,
               eval_rows: int, deg_name: str, threads: int) -> tuple[list[Any], dict[str, Any]]:
    """Set the analyses up on w0 and analyse the baseline; returns the set-up analyses (they stay
    in Ray's object store for the jobs) and the weights digest, baseline loss and rows, and the jobs
    a level splits into on this model (the degradation's ``chain_jobs``)."""
    model = _worker_model(recipe, None, threads)
    digest = weights_digest(model)
    try:
        kernel.setup_analyses(analyses, model, task, seed, digest)
    except RuntimeError:
        _MODELS.clear()
        raise
    base_loss = kernel.measure_loss(model, task, kernel.eval_batch(task, eval_rows))
    rows = kernel.analyse(analyses, model, task, BASELINE_KEY, None, base_loss, base_loss, seed, deg_name,
                          divergence=0.0)
    _check_restored(model, digest, "the analyses at the trained weights", "an analysis changed them")
    chain_jobs = degradation.chain_jobs(model, task)
    _check_restored(model, digest, "asking the degradation how it splits a level into jobs (chain_jobs)")
    if not (isinstance(chain_jobs, list) and chain_jobs and (chain_jobs == [None] or all(
            isinstance(c, int) and not isinstance(c, bool) for c in chain_jobs))):
        raise ValueError(f"{type(degradation).__name__}.chain_jobs returned {chain_jobs!r}: it must return [None] "
                         "(one job per level) or a non-empty list of chain indices.")
    return analyses, {"digest": digest, "base_loss": base_loss, "rows": rows, "chain_jobs": chain_jobs}


def _prepare_job(recipe: ModelRecipe, task: Any, degradation: Any, level: Any, digest: str,
                 threads: int) -> Any:
    """A sampler level's plan (B and ε, calibrated for a loss-increase level), shared by its chains:
    the degradation's ``plan``, the same step as ``draws`` before its chains."""
    model = _worker_model(recipe, digest, threads)
    plan = degradation.plan(model, task, level)
    _check_restored(model, digest, "calibration")
    return plan


def _job(recipe: ModelRecipe, task: Any, analyses: list[Any], degradation: Any, li: int, level: Any,
         chain: int | None, plan: Any, done: Sequence[Sequence[int]], seed: int,
         eval_rows: int, base_loss: float, deg_name: str, digest: str, threads: int) -> dict[str, Any]:
    """One (level, chain) job: its draws and every analysis at each; returns the records and what
    the degradation reported (chain diagnostics, calibration)."""
    model = _worker_model(recipe, digest, threads)
    batch = kernel.eval_batch(task, eval_rows)
    meter = kernel.divergence_meter(model, task, eval_rows)  # at w0, before the draws
    done_keys = {tuple(k) for k in done}
    draws = (degradation.draws(model, task, level) if chain is None
             else degradation.run_chain(model, task, level, plan, chain))
    records = []
    try:
        for draw in draws:
            key = (li, int(draw.chain), int(draw.draw))
            if key in done_keys:
                continue
            loss = kernel.measure_loss(model, task, batch)
            div = kernel.measure_divergence(meter, model)
            rows = kernel.analyse(analyses, model, task, key, level, loss, base_loss, seed, deg_name,
                                  divergence=div)
            records.append({"key": list(key), "rows": rows, "draw": kernel.draw_record(draw)})
    finally:
        kernel.close_draws(draws)  # restores w0 now, on every path
    _check_restored(model, digest, f"level {li} chain {chain}")
    if chain is None:
        info = {"level_info": kernel.level_info(draws)}
    else:
        chains = getattr(draws, "chains", None) or []
        info = {"chain": asdict(chains[0]) if chains else None,
                "calibration": None if plan.calibration is None else asdict(plan.calibration)}
    return {"records": records, "info": info}
