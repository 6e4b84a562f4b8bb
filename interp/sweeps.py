"""Sweeps: run analyses at the trained weights and at every draw of a degradation.

``run_sweep`` sets every analysis up on the clean weights w0, records the baseline, then for each
level and each draw the degradation yields (with the degraded weights live in the model) runs every
analysis and records its metrics, with the draw's loss on a fixed evaluation batch, so every row can
be placed on the common axis "measured loss increase" ΔL = L(w) − L(w0) (nats/token), comparable
across degradations where their native levels (nβ, σ, a checkpoint step) are not.

Persistence: with ``out=DIR`` the sweep writes ``config.json`` and appends one JSON line per draw to
``rows.jsonl`` (flushed and fsynced), so a crash or Ctrl-C loses at most the draw in flight; only the
completed draws' keys stay in memory, so a long sweep's memory does not grow with its draws (the
table is read back from the file at the end; BENCHMARKS.md, "Reliability"). Calling
``run_sweep`` again with the same ``out`` and the same configuration resumes: completed draws are not
re-analysed (the degradation still replays its chains, which are deterministic given its seed); a
different configuration in an existing ``out`` is an error, never a merge.

After the sweep the model's parameters are compared with a digest taken before it; a degradation that
left them changed is an error.

Executors (``executor=``): ``"local"`` (default) runs everything in this process, as above;
``"ray"`` or a :class:`~interp.executors.RayExecutor` runs one job per (level, chain) on a Ray
cluster, each job loading the model from a :class:`~interp.executors.ModelRecipe`. Both use the same
per-draw seeds, the same store and the same resume rules, so an ``out`` directory started with one
executor can be finished with the other and the table is identical (``interp.executors``).

Example::

    >>> import interp
    >>> model, task = interp.organisms.load("induction")                 # doctest: +SKIP
    >>> res = interp.run_sweep(model, task, [MyAnalysis()],
    ...                        interp.WeightNoise(relative_sigma=True), levels=[0.05, 0.1])  # doctest: +SKIP
    >>> res.summary()                                                     # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from interp.analysis import Analysis, metric_kind
from interp.results import Results

__all__ = ["run_sweep", "weights_digest"]

log = logging.getLogger(__name__)

BASELINE_KEY = (-1, -1, -1)
#: the key whose per-draw seed seeds the analyses' ``setup`` (the same for every executor)
SETUP_KEY = (-2, -2, -2)
COLUMNS = [
    "degradation", "level", "level_index", "chain", "draw", "baseline",
    "loss", "delta_loss", "analysis", "metric", "kind", "value",
]


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer's bytes, in state-dict order (bit-identity check)."""
    h = hashlib.sha256()
    for name, t in model.state_dict(keep_vars=False).items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# fields that change how a run looks, not what it computes: not part of a sweep's identity
_PRESENTATION = frozenset({"progress"})


def _describe(obj: Any) -> Any:
    """A JSON-able, address-free description of a configured object: its dataclass fields (or those
    of its ``config`` attribute), else its type and ``name``."""
    source = obj if dataclasses.is_dataclass(obj) else getattr(obj, "config", None)
    desc: dict[str, Any] = {"type": type(obj).__name__}
    if dataclasses.is_dataclass(source) and not isinstance(source, type):
        desc.update({
            f.name: _jsonable(getattr(source, f.name))
            for f in dataclasses.fields(source)
            if f.repr and f.name not in _PRESENTATION
        })
    elif hasattr(obj, "name"):
        desc["name"] = _jsonable(obj.name)
    return desc


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return repr(v)


def _level_info(draws: Any) -> dict[str, Any]:
    """What a degradation's draw iterator reports about its level once exhausted: the sampler's
    calibration and per-chain diagnostics (failed chains with their reasons), else nothing."""
    info = {}
    for attr in ("calibration", "chains"):
        value = getattr(draws, attr, None)
        if value is not None:
            info[attr] = _asdict(value)
    return info


def _asdict(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _asdict(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_asdict(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _asdict(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON has no NaN/inf; keep them visible as text
    return _jsonable(value)


def _draw_record(draw: Any) -> dict[str, Any]:
    """A draw's own fields (B, ε, step, its loss, ...) minus the level, which the table holds."""
    fields = dataclasses.asdict(draw) if dataclasses.is_dataclass(draw) else {
        k: v for k, v in vars(draw).items() if not k.startswith("_")
    }
    return {k: _jsonable(v) for k, v in fields.items() if k != "level"}


def _versions() -> dict[str, str]:
    """Versions of Python and the packages that determine the numbers."""
    import importlib.metadata
    import platform

    out = {"python": platform.python_version()}
    for pkg in ("interp", "torch", "transformer-lens", "transformers", "numpy"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _seed_for(seed: int, key: tuple[int, int, int]) -> int:
    """A per-draw seed for the analyses' own randomness, the same on a resumed run."""
    digest = hashlib.sha256(json.dumps([seed, *key]).encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63)


def read_records(rows_file: Path, *, repair: bool = False) -> Iterator[dict[str, Any]]:
    """The records of a sweep's ``rows.jsonl``, one at a time, in the order written (each key once:
    the store never re-adds a completed key). A torn final line (a crash mid-write) is skipped, and
    with ``repair`` truncated away so that appending can go on."""
    if not rows_file.exists():
        return
    good = 0
    with open(rows_file, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                log.warning("Dropping a partially written record at the end of %s.", rows_file)
                if repair:
                    with open(rows_file, "r+b") as w:
                        w.truncate(good)
                return
            good += len(line)
            yield json.loads(line)


class _Store:
    """Append-only per-draw storage in ``out``, or in memory when ``out`` is None.

    With ``out`` only the completed keys stay in memory (a sweep's memory does not grow with its
    draws); :meth:`records` reads the records back from ``rows.jsonl`` when the sweep is done.
    """

    def __init__(self, out: str | os.PathLike | None, config: dict[str, Any]):
        self.keys: dict[tuple[int, int, int], None] = {}  # completed draws, in the order stored
        self.memory: list[dict[str, Any]] = []  # the records themselves, only when out is None
        self.level_info: dict[int, dict[str, Any]] = {}
        self.path = None if out is None else Path(out)
        if self.path is None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        cfg_file, self.rows_file = self.path / "config.json", self.path / "rows.jsonl"
        if cfg_file.exists():
            old = json.loads(cfg_file.read_text())
            if old != config:
                diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
                raise ValueError(
                    f"{self.path} holds a sweep with a different configuration (differs in {diff}). "
                    "Use a new output directory, or delete this one to start over."
                )
            for rec in read_records(self.rows_file, repair=True):
                self.keys[tuple(rec["key"])] = None
            info_file = self.path / "levels.json"
            if info_file.exists():
                self.level_info = {int(k): v for k, v in json.loads(info_file.read_text()).items()}
        else:
            tmp = cfg_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(config, indent=1, sort_keys=True))
            tmp.replace(cfg_file)
        self.file = open(self.rows_file, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def records(self) -> Iterator[dict[str, Any]]:
        """Every stored record (``{"key", "rows", "draw"}``), in the order stored."""
        return iter(self.memory) if self.path is None else read_records(self.rows_file)

    def done(self, key: tuple[int, int, int]) -> bool:
        return key in self.keys

    def add(self, key: tuple[int, int, int], rows: list[dict], draw: dict[str, Any]) -> None:
        rec = {"key": list(key), "rows": rows, "draw": draw}
        self.keys[key] = None
        if self.path is None:
            self.memory.append(rec)
            return
        self.file.write(json.dumps(rec) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def finish_level(self, level_index: int, info: dict[str, Any]) -> None:
        """Mark a level complete (a resumed run skips it) with what the degradation reported."""
        n = sum(1 for key in self.keys if key[0] == level_index)
        self.level_info[level_index] = {"n_draws": n, **info}
        if self.path is not None:
            tmp = self.path / "levels.json.tmp"
            tmp.write_text(json.dumps(self.level_info, indent=1))
            tmp.replace(self.path / "levels.json")

    def level_complete(self, level_index: int) -> bool:
        """Whether a level was finished and every one of its draws' records survived."""
        info = self.level_info.get(level_index)
        n = sum(1 for key in self.keys if key[0] == level_index)
        return info is not None and info["n_draws"] == n

    # ---- per-job bookkeeping of executors that run (level, chain) jobs (``interp.executors``)
    def jobs(self) -> dict[str, Any]:
        """Completed (level, chain) jobs, ``"LEVEL/CHAIN"`` -> what the job reported."""
        if not hasattr(self, "_jobs"):
            f = None if self.path is None else self.path / "jobs.json"
            self._jobs = json.loads(f.read_text()) if f is not None and f.exists() else {}
        return self._jobs

    def finish_job(self, name: str, info: dict[str, Any]) -> None:
        self.jobs()[name] = info
        self._write_json("jobs.json", self._jobs)

    def record_failures(self, failures: list[dict[str, Any]]) -> None:
        """What failed in the last run (``failures.json``; empty when nothing failed)."""
        self._write_json("failures.json", failures)

    def _write_json(self, name: str, value: Any) -> None:
        if self.path is not None:
            tmp = self.path / f"{name}.tmp"
            tmp.write_text(json.dumps(value, indent=1))
            tmp.replace(self.path / name)

    def close(self) -> None:
        if self.path is not None:
            self.file.close()


def _check_analyses(analyses: Sequence[Analysis]) -> None:
    names = [getattr(a, "name", None) for a in analyses]
    for a, name in zip(analyses, names):
        if not isinstance(a, Analysis):
            raise ValueError(
                f"{a!r} is not an Analysis: it needs `name`, `effects`, `collaterals`, "
                "`setup(model, task)` and `__call__(model, task) -> dict[str, float]`."
            )
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"Analysis names must be unique; repeated: {dupes}. Give each a distinct name.")


def _fork_rng():
    """``torch.random.fork_rng`` over the CPU and every initialised CUDA device."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    return torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if cuda else [])


def _setup_analyses(analyses: Sequence[Analysis], model: torch.nn.Module, task: Any, seed: int) -> None:
    """Every analysis's ``setup`` on the clean weights, its randomness seeded from ``seed`` (so every
    executor, in any process, sets up the same state); the caller's RNG state is left untouched."""
    for a in analyses:
        with _fork_rng():
            torch.manual_seed(_seed_for(seed, SETUP_KEY))
            a.setup(model, task)


def _eval_batch(task: Any, eval_rows: int) -> dict[str, torch.Tensor] | None:
    return task.tensors("test", rows=eval_rows) if getattr(task, "has_loss", True) else None


def _measure_loss(model: torch.nn.Module, task: Any, eval_batch: dict[str, torch.Tensor] | None) -> float:
    """The loss on the sweep's fixed evaluation batch (NaN for a task without a loss)."""
    if eval_batch is None:
        return float("nan")
    with torch.no_grad():
        return float(task.loss(model, eval_batch))


def _analyse(analyses: Sequence[Analysis], model: torch.nn.Module, task: Any, key: tuple[int, int, int],
             level: Any, loss: float, base_loss: float, seed: int, deg_name: str) -> list[dict]:
    """The table rows of one draw (or the baseline): every analysis, seeded per draw."""
    rows = []
    for a in analyses:
        with _fork_rng():  # the caller's RNG state is left untouched
            torch.manual_seed(_seed_for(seed, key))
            metrics = a(model, task)
        for metric, value in metrics.items():
            rows.append({
                "degradation": deg_name, "level": _jsonable(level), "level_index": key[0],
                "chain": key[1], "draw": key[2], "baseline": key == BASELINE_KEY,
                "loss": loss, "delta_loss": loss - base_loss, "analysis": a.name,
                "metric": metric, "kind": metric_kind(a, metric), "value": float(value),
            })
    return rows


def _sweep_config(task: Any, analyses: Sequence[Analysis], degradation: Any, levels: Sequence[Any],
                  seed: int, eval_rows: int, digest: str) -> dict[str, Any]:
    """What identifies a sweep (its ``config.json``): the executor is not part of it."""
    return {
        "task": getattr(task, "name", repr(task)),
        "analyses": [_describe(a) for a in analyses],
        "degradation": _describe(degradation),
        "levels": _jsonable(levels),
        "seed": seed,
        "eval_rows": eval_rows,
        "weights": digest,
    }


def _degradation_name(degradation: Any) -> str:
    return getattr(degradation, "name", type(degradation).__name__)


def _results(store: _Store, config: dict[str, Any]) -> Results:
    meta = {"config": config, "versions": _versions(),
            "levels": dict(sorted(store.level_info.items()))}
    return Results.from_records(store.records(), meta)


def run_sweep(
    model: Any,
    task: Any,
    analyses: Sequence[Analysis],
    degradation: Any,
    levels: Sequence[Any],
    *,
    out: str | os.PathLike | None = None,
    seed: int = 0,
    eval_rows: int = 256,
    progress: bool = True,
    executor: Any = "local",
) -> Results:
    """Run ``analyses`` at w0 and at every draw of ``degradation`` at each of ``levels``.

    Args:
        model: the model (its weights are changed only inside the degradation's draws), or a
            :class:`~interp.executors.ModelRecipe` that loads it (needed by the Ray executor, which
            never ships a live model).
        task: the ``Task`` analyses and losses use.
        analyses: objects following the :class:`~interp.analysis.Analysis` protocol, unique names.
        degradation: an object with ``draws(model, task, level)`` yielding draws with ``chain`` and
            ``draw`` fields (``TemperedPosterior``, ``WeightNoise``, ``ActivationNoise``, ``Checkpoints``).
        levels: the degradation's levels (nβ or target loss increases, σ, checkpoint steps).
        out: directory to persist rows to as they are produced, and to resume from.
        seed: seeds the analyses' own randomness, per draw (resumed runs reproduce it).
        eval_rows: test rows of the fixed batch on which every draw's loss is measured.
        progress: show progress bars (``tqdm.auto``, notebook-friendly).
        executor: ``"local"`` (default: this process), ``"ray"`` (a Ray cluster: the one this
            process is connected to, else a new local one) or a configured
            :class:`~interp.executors.RayExecutor` (address, resources per job, retries).

    Returns:
        :class:`~interp.results.Results` with the long table of every (draw, analysis, metric).

    Raises:
        interp.executors.SweepJobsFailed: (Ray) some (level, chain) jobs failed after their
            retries; the others are saved, the failures are listed (and in ``out/failures.json``),
            and running the same sweep again retries only what is missing.
    """
    from interp.executors import LocalExecutor, ModelRecipe, resolve_executor

    executor = resolve_executor(executor)
    analyses = list(analyses)
    _check_analyses(analyses)
    levels = list(levels)
    if not levels:
        raise ValueError("levels is empty: give at least one degradation level.")
    if not isinstance(executor, LocalExecutor):
        return executor.run(model, task, analyses, degradation, levels, out=out, seed=seed,
                            eval_rows=eval_rows, progress=progress)
    if isinstance(model, ModelRecipe):
        model = model.load()
    return _run_local(model, task, analyses, degradation, levels, out=out, seed=seed,
                      eval_rows=eval_rows, progress=progress)


def _run_local(model: torch.nn.Module, task: Any, analyses: list[Analysis], degradation: Any,
               levels: list[Any], *, out: str | os.PathLike | None, seed: int, eval_rows: int,
               progress: bool) -> Results:
    """The in-process sweep (``executor="local"``)."""
    from tqdm.auto import tqdm

    digest = weights_digest(model)
    deg_name = _degradation_name(degradation)
    config = _sweep_config(task, analyses, degradation, levels, seed, eval_rows, digest)
    store = _Store(out, config)
    eval_batch = _eval_batch(task, eval_rows)

    try:
        _setup_analyses(analyses, model, task, seed)
        base_loss = _measure_loss(model, task, eval_batch)
        if not store.done(BASELINE_KEY):
            rows = _analyse(analyses, model, task, BASELINE_KEY, None, base_loss, base_loss, seed, deg_name)
            store.add(BASELINE_KEY, rows, {})
        for li, level in enumerate(tqdm(levels, desc=f"{deg_name} levels", disable=not progress)):
            if store.level_complete(li):
                continue  # finished in an earlier run
            draws = degradation.draws(model, task, level)
            for draw in tqdm(draws, desc=f"level {level}", leave=False, disable=not progress):
                key = (li, int(draw.chain), int(draw.draw))
                if store.done(key):
                    continue
                loss = _measure_loss(model, task, eval_batch)
                rows = _analyse(analyses, model, task, key, level, loss, base_loss, seed, deg_name)
                store.add(key, rows, _draw_record(draw))
            store.finish_level(li, _level_info(draws))
    finally:
        store.close()
        if weights_digest(model) != digest:
            msg = (
                "The model's weights differ from before the sweep: the degradation did not restore "
                f"them ({type(degradation).__name__}). Results up to here are in {out or 'memory'}."
            )
            if sys.exc_info()[0] is None:
                raise RuntimeError(msg)
            log.error(msg)  # do not mask the exception in flight
    return _results(store, config)
