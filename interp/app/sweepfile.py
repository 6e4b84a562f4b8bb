"""Sweeps described in TOML files (``interp sweep CONFIG.toml``), and rebuilding reports from results.

A sweep file names the model, the degradation and its levels, the analyses and where results go.
Unknown keys anywhere are errors that list what is allowed; nothing in the file is evaluated as code.

Example (``sweep.toml``)::

    out = "runs/induction-tp"          # results, resumable
    seed = 0

    [model]
    organism = "induction"             # a shipped organism (its task comes with it)
    # weights = "retrained/induction.safetensors"   # optional: other weights of the same organism

    [degradation]
    type = "TemperedPosterior"         # or WeightNoise, ActivationNoise, Checkpoints, or a registered one
    localization = 100.0
    chains = 2
    n_draws = 4

    [levels]
    loss_increase = [0.03, 0.1, 0.3]   # or: nbeta = [...], or: values = [...] (σ, steps, ...)

    [[analyses]]
    type = "HeadAblation"
    name = "induction_heads"
    heads = [[1, 0], [1, 1]]

The degradation ``type`` is any registered degradation's class name
(:func:`interp.degradations.registered_degradations`: the shipped four, and every class decorated
with :func:`~interp.degradations.register_degradation` in a module imported before the file is
run, and those installed packages declare in the ``interp.degradations`` entry-point group, which
is how the ``interp sweep`` command line finds them); its table's keys are the class's constructor
arguments.

This module belongs to the app layer (``interp.app``), so it may name classes of ``analyses``.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import tomllib
from pathlib import Path
from typing import Any

__all__ = ["load_sweep_config", "run_sweep_file", "rebuild_report", "ANALYSES"]

#: analysis type name -> "module:Class"
ANALYSES = {
    "CausalScrubbing": "analyses.scrubbing:CausalScrubbing",
    "FrozenProbe": "analyses.probing:FrozenProbe",
    "HeadAblation": "analyses.ablation:HeadAblation",
    "RefitProbe": "analyses.probing:RefitProbe",
    "ResidualNorms": "analyses.norms:ResidualNorms",
    "SparseMLP": "analyses.transcoders:SparseMLP",
}
#: ready-made causal-scrubbing hypotheses, named "SET.NAME" in sweep files (e.g. "induction.correct")
HYPOTHESES = {"induction": "analyses.scrubbing.induction:hypotheses"}

_TOP = {"out", "seed", "model", "degradation", "levels", "analyses"}
_MODEL = {"organism", "weights"}
_LEVELS = {"loss_increase", "nbeta", "values"}


def _unknown(where: str, keys: set[str], allowed: set[str]) -> None:
    extra = sorted(set(keys) - allowed)
    if extra:
        hints = {k: difflib.get_close_matches(k, sorted(allowed), n=1) for k in extra}
        hint = "; ".join(f"{k!r} (did you mean {v[0]!r}?)" if v else repr(k) for k, v in hints.items())
        raise ValueError(f"Unknown key(s) in {where}: {hint}. Allowed: {sorted(allowed)}.")


def _degradations() -> dict[str, type]:
    """The degradation types a sweep file can name: every registered degradation."""
    from interp.degradations import registered_degradations

    return registered_degradations()


def _class(registry: dict[str, Any], name: Any, what: str) -> type:
    """The class ``name`` names in ``registry`` (a class, or a "module:Class" string imported now)."""
    if name not in registry:
        close = difflib.get_close_matches(str(name), sorted(registry), n=2)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"Unknown {what} type {name!r}; available: {sorted(registry)}.{hint}")
    if isinstance(registry[name], type):
        return registry[name]
    module, cls = registry[name].split(":")
    return getattr(importlib.import_module(module), cls)


def _hypothesis(name: Any, where: str) -> Any:
    """A ready-made hypothesis from its "SET.NAME" (``HYPOTHESES``)."""
    family, _, member = str(name).partition(".")
    if family not in HYPOTHESES:
        raise ValueError(f"{where}: hypothesis={name!r}: give SET.NAME with SET one of {sorted(HYPOTHESES)}.")
    module, fn = HYPOTHESES[family].split(":")
    available = getattr(importlib.import_module(module), fn)()
    if member not in available:
        raise ValueError(f"{where}: hypothesis={name!r}: {family} has {sorted(available)}.")
    return available[member]


def _build(cls: type, params: dict[str, Any], where: str) -> Any:
    signature = inspect.signature(cls).parameters
    if "hypothesis" in params and "hypothesis" in signature:
        params["hypothesis"] = _hypothesis(params["hypothesis"], where)
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.values()):
        _unknown(where, set(params), {p for p in signature if p not in ("self", "args")})
    try:
        built = cls(**params)
    except TypeError as err:  # an unknown keyword passed on to a config class
        raise ValueError(f"{where}: {err}") from err
    if callable(getattr(built, "validate_params", None)):  # analyses check their parameters at setup:
        try:                                                # a sweep file checks them before any work
            built.validate_params()
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from err
    return built


def _bad(where: str, key: str, value: Any, allowed: str, fix: str = "") -> ValueError:
    """The sweep file's error for ``key = value`` in ``where``: what is allowed and the fix."""
    return ValueError(f"{where}: {key} = {value!r}: {key} must be {allowed}.{' ' + fix if fix else ''}")


def _table(raw: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = raw[key]
    if not isinstance(value, dict):
        raise _bad(str(path), key, value, f"a table, written [{key}] on a line of its own with its keys below",
                   "See `interp sweep --help` for the format.")
    return dict(value)


def _read_toml(path: Path) -> dict[str, Any]:
    """The file's TOML, with one clear error for a missing path, a directory, non-UTF-8 or bad TOML."""
    if path.is_dir():
        raise ValueError(f"Sweep file {path} is a directory; give the path of a TOML file (e.g. {path}/sweep.toml).")
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise FileNotFoundError(f"Sweep file {path} not found.") from err
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"Sweep file {path} is not UTF-8 text (byte {data[err.start]:#04x} at offset "
                         f"{err.start}); save it as UTF-8.") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path} is not valid TOML: {err}") from err


def load_sweep_config(path: str | Path) -> dict[str, Any]:
    """Parse and validate a sweep file; returns its parts built (model, task, degradation, ...).

    Every key is checked (its type and value) before anything is loaded or built, so a bad file fails
    in a moment with one error naming the key, its value and what is allowed.
    """
    path = Path(path)
    raw = _read_toml(path)
    _unknown(str(path), set(raw), _TOP)
    for key in ("model", "degradation", "levels", "analyses"):
        if key not in raw:
            raise ValueError(f"{path}: missing [{key}]: a sweep file needs [model], [degradation], [levels] and "
                             f"[[analyses]]; add the [{key}] section (see `interp sweep --help` for the format).")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise _bad(str(path), "seed", seed, "a whole number >= 0", "Use e.g. seed = 0.")
    out = raw.get("out", str(path.with_suffix("")))
    if not isinstance(out, str) or not out.strip():
        raise _bad(str(path), "out", out, "a directory path in quotes", 'Use e.g. out = "runs/my-sweep".')
    model_cfg = _table(raw, "model", path)
    deg_cfg = _table(raw, "degradation", path)
    levels_cfg = _table(raw, "levels", path)
    specs = raw["analyses"]
    if not isinstance(specs, list) or not all(isinstance(a, dict) for a in specs):
        raise _bad(str(path), "analyses", specs, "an array of tables, one [[analyses]] (double brackets) per "
                   "analysis, each with its type = ...")
    if not specs:
        raise _bad(str(path), "analyses", specs, "at least one analysis",
                   'Add an [[analyses]] table, e.g. type = "ResidualNorms".')
    _unknown(f"{path} [model]", set(model_cfg), _MODEL)
    if "organism" not in model_cfg:
        raise ValueError(f"{path} [model]: give organism = NAME (see `interp organisms list`).")
    from interp import organisms

    if not isinstance(model_cfg["organism"], str):
        raise _bad(f"{path} [model]", "organism", model_cfg["organism"],
                   f"the name of a shipped organism in quotes, one of {organisms.names()}")
    if not isinstance(model_cfg.get("weights", ""), str):
        raise _bad(f"{path} [model]", "weights", model_cfg["weights"], "a path to a .safetensors file in quotes")
    for where, cfg in [(f"{path} [degradation]", deg_cfg)] + [
            (f"{path} [[analyses]] #{i + 1}", a) for i, a in enumerate(specs)]:
        if not isinstance(cfg.get("type"), str):
            registry = _degradations() if "degradation" in where else ANALYSES
            raise _bad(where, "type", cfg.get("type"), f"a name in quotes, one of {sorted(registry)}")
    _unknown(f"{path} [levels]", set(levels_cfg), _LEVELS)
    if len(levels_cfg) != 1:
        raise ValueError(f"{path} [levels]: give exactly one of {sorted(_LEVELS)}.")
    (kind, values), = levels_cfg.items()
    if not isinstance(values, list) or not values:
        raise ValueError(f"{path} [levels] {kind}: give a non-empty list, e.g. {kind} = [0.1, 0.3].")

    model, task = organisms.load(model_cfg["organism"])
    if "weights" in model_cfg:
        from interp.organisms._weights import load_bridge

        model = load_bridge((path.parent / model_cfg["weights"]).resolve())

    deg_cls = _class(_degradations(), deg_cfg.pop("type"), "degradation")
    degradation = _build(deg_cls, deg_cfg, f"{path} [degradation]")

    from interp.degradations import LossIncrease, NBeta

    wrap = {"loss_increase": LossIncrease, "nbeta": NBeta, "values": lambda v: v}[kind]
    levels = [wrap(v) for v in values]

    analyses = []
    for i, a_cfg in enumerate(specs):
        a_cfg = dict(a_cfg)
        a_cls = _class(ANALYSES, a_cfg.pop("type"), "analysis")
        analyses.append(_build(a_cls, a_cfg, f"{path} [[analyses]] #{i + 1}"))
    return {"model": model, "task": task, "degradation": degradation, "levels": levels,
            "analyses": analyses, "out": Path(path.parent / out), "seed": seed}


def run_sweep_file(path: str | Path, progress: bool = True) -> Path:
    """Run the sweep a TOML file describes; saves results and ``report.html`` in its ``out``."""
    from interp.sweep import run_sweep

    cfg = load_sweep_config(path)
    results = run_sweep(cfg["model"], cfg["task"], cfg["analyses"], cfg["degradation"], cfg["levels"],
                        out=cfg["out"] / "sweep", seed=cfg["seed"], progress=progress)
    results.save(cfg["out"] / "results")
    return rebuild_report(cfg["out"])


def rebuild_report(directory: str | Path) -> Path:
    """(Re)write ``DIR/report.html`` from the results saved in ``DIR``.

    ``DIR`` may hold saved results (``results/`` or ``table.parquet``), one sweep's ``rows.jsonl``, or
    several sweep directories (one per degradation), which are combined.
    """
    from interp.report import load_views, write_report
    from interp.results import Results

    directory = Path(directory)
    _check_results_directory(directory)
    if (directory / "results" / "table.parquet").exists():
        results = Results.load(directory / "results")
    elif (directory / "table.parquet").exists() or (directory / "rows.jsonl").exists():
        results = Results.load(directory)
    else:
        sweeps = sorted(p.parent for p in directory.glob("*/rows.jsonl"))
        if not sweeps:
            raise FileNotFoundError(f"{directory} holds no results (no results/, table.parquet or rows.jsonl).")
        results = Results.concat(_separate_sweeps([(p, Results.load(p)) for p in sweeps]))
    if not len(results.table):
        raise ValueError(f"{directory} holds no rows yet: its sweep stored nothing (it was stopped before its "
                         "baseline was analysed). Rerun the same `interp sweep`/`interp demo` command to resume, "
                         "then report.")
    return write_report(results, directory / "report.html", views=load_views(directory))


def _separate_sweeps(loaded: list[tuple[Path, Any]]) -> list[Any]:
    """Several sweeps of one directory, each its own series: two sweeps of the same degradation
    (say σ 0.05 and σ 0.3 in two directories) are told apart by their directory's name, never pooled
    by level index; the same sweep twice (a copy: identical configuration) is an error, never a
    doubled count."""
    import json

    names: dict[str, list[tuple[Path, Any]]] = {}
    for path, res in loaded:
        if not len(res.table):
            continue  # stored nothing yet: nothing to report from it
        for name in res.table["degradation"].unique():
            names.setdefault(str(name), []).append((path, res))
    out = []
    for path, res in loaded:
        if not len(res.table):
            continue
        name = str(res.table["degradation"].iloc[0])
        same = names.get(name, [])
        if len(same) > 1:
            config = json.dumps(res.meta.get("config"), sort_keys=True)
            twins = [str(p) for p, r in same
                     if p != path and json.dumps(r.meta.get("config"), sort_keys=True) == config]
            if twins:
                raise ValueError(
                    f"{path} and {twins[0]} hold the same sweep (identical config.json): a copy. Reporting both "
                    "would count every draw twice; move one of them out of this directory and report again."
                )
            res = type(res)(res.table.assign(degradation=f"{name} [{path.name}]"),
                            res.draws, res.meta)
        out.append(res)
    return out


def _stored_nothing(rows_file: Path) -> bool:
    """Whether a ``rows.jsonl`` holds no complete record (empty, or one torn line: a killed sweep)."""
    with open(rows_file, "rb") as f:
        return not f.readline().endswith(b"\n")


def _check_results_directory(directory: Path) -> None:
    """One clear error for a directory that is missing, empty, foreign or half written."""
    hint = "give the directory `interp sweep` or `interp demo --out` wrote (it holds results/ or rows.jsonl)."
    if not directory.exists():
        raise FileNotFoundError(f"Results directory {directory} does not exist; {hint}")
    if not directory.is_dir():
        raise ValueError(f"{directory} is a file, not a results directory; {hint}")
    entries = sorted(p.name for p in directory.iterdir())
    if not entries:
        raise ValueError(f"{directory} is empty: there are no results to report yet; {hint}")
    saved = directory / "results"
    if saved.is_dir() and not (saved / "table.parquet").exists():
        raise ValueError(f"{saved} has no table.parquet: the results were not saved completely. Rerun the "
                         "same `interp sweep`/`interp demo` command: finished draws are kept and it resumes.")
    stores = [p.parent for p in (directory / "rows.jsonl", *directory.glob("*/rows.jsonl")) if p.exists()]
    for store in stores:
        if not (store / "config.json").exists() and _stored_nothing(store / "rows.jsonl"):
            running = " (its sweep.lock says a sweep is still writing to it, or was killed)" \
                if (store / "sweep.lock").exists() else ""
            raise ValueError(f"{store} holds no rows yet{running}: its sweep stopped before storing its first "
                             "draw. Rerun the same `interp sweep`/`interp demo` command: it resumes there (or "
                             "starts, if nothing was stored); then report.")
        if not (store / "config.json").exists():
            raise ValueError(f"{store / 'rows.jsonl'} has no config.json beside it, so its rows cannot be "
                             "told apart from another sweep's: not a complete interp sweep directory. Rerun "
                             "the sweep into a new out directory.")
    if not saved.is_dir() and not (directory / "table.parquet").exists() and not stores:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise ValueError(f"{directory} holds no interp results (it has {shown}; no results/, table.parquet "
                         f"or rows.jsonl); {hint}")
