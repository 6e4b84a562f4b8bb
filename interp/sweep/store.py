"""The sweep table's schema and its append-only store on disk: columns, keys, records, the out lock.

A sweep's ``out`` directory holds:

- ``config.json``: what identifies the sweep (a rerun with another configuration is refused),
  written with the first record, so a sweep that stored nothing leaves nothing to refuse;
- ``rows.jsonl``: one JSON record per draw, ``{"key": [level_index, chain, draw], "rows": [...],
  "draw": {...}, "sha256": ...}``, appended, flushed and fsynced as each draw completes (a crash
  loses at most the draw in flight; a torn last line is dropped and truncated away on resume). The
  checksum is SHA-256 (16 hex digits) of the record's key, rows and draw as canonical JSON
  (:func:`record_checksum`), so a value changed inside a line that still parses is detected;
- ``levels.json``: the levels finished, with what the degradation reported (calibration, chains);
- ``jobs.json`` / ``failures.json``: the (level, chain) jobs of an executor that runs jobs (Ray);
- ``sweep.lock`` while a sweep writes to it (:mod:`interp.sweep.lock`): a second writer is refused
  (``OutDirInUse``); a lock whose process is dead (same host) is taken over with a warning.

Every key is stored once. Reading back, a line that repeats an earlier key byte for byte is dropped
with a warning (it carries nothing new); a repeated key with different content, a line that is not a
record, a record without ``rows`` or with none, one whose checksum does not match, one keyed to a
level the sweep does not have, and rows without ``config.json`` are errors that name the file and
the line and say how to resume (:class:`StoreCorrupt`). A ``config.json`` that differs from the
rerun's is refused with what differs in words (:func:`config_difference`).

Example::

    >>> from interp.sweep.store import COLUMNS, read_records
    >>> "delta_loss" in COLUMNS
    True
    >>> import interp
    >>> model, task = interp.organisms.load("induction", n_train=64, n_test=64)
    >>> out = getfixture("tmp_path") / "wn"                           # a fresh directory
    >>> res = interp.run_sweep(model, task, [lambda model, task: {"n": 1.0}],
    ...                        interp.WeightNoise(draws_per_level=1), [0.1], out=out, eval_rows=16, progress=False)
    >>> [record["key"] for record in read_records(out / "rows.jsonl")]   # the baseline, then each draw
    [[-1, -1, -1], [0, 0, 0]]
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from interp.sweep.identity import config_difference, legacy_identity
from interp.sweep.lock import DirLock

__all__ = [
    "COLUMNS", "ADDED_COLUMNS", "BASELINE_KEY", "SETUP_KEY", "Store", "read_records", "read_json",
    "StoreCorrupt", "missing_column", "record_checksum",
]

log = logging.getLogger(__name__)

#: the key of the baseline record (the trained weights w0)
BASELINE_KEY = (-1, -1, -1)
#: the key whose per-draw seed seeds the analyses' ``setup`` (the same for every executor)
SETUP_KEY = (-2, -2, -2)
#: the long table's columns, in order
COLUMNS = [
    "degradation", "level", "level_index", "chain", "draw", "baseline",
    "loss", "delta_loss", "divergence", "analysis", "metric", "kind", "value",
]
#: columns added after sweeps were first stored, with the value an older record gets
#: (``divergence``: stored before the behavioural divergence meter, so not measured)
ADDED_COLUMNS: dict[str, Any] = {"divergence": float("nan")}

Key = tuple[int, int, int]


class StoreCorrupt(ValueError):
    """A file of a sweep's ``out`` directory cannot be read; the message says which line and how to
    resume."""


# ----------------------------------------------------------------------------------------- JSON
def jsonable(v: Any) -> Any:
    """``v`` as JSON: numbers, strings, lists and dicts as they are, anything else as its repr."""
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    return repr(v)


def asdict(value: Any) -> Any:
    """A record (dataclasses, tensors, non-finite floats as text) as JSON."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: asdict(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [asdict(v) for v in value]
    if isinstance(value, dict):
        return {str(k): asdict(v) for k, v in value.items()}
    if hasattr(value, "tolist") and hasattr(value, "shape"):  # a tensor or array, without importing torch
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON has no NaN/inf; keep them visible as text
    return jsonable(value)


def read_json(path: Path, *, fix: str) -> Any:
    """A JSON file of the store; :class:`StoreCorrupt` naming the file, the place and ``fix`` when it
    is not JSON."""
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f"line {err.lineno} column {err.colno}" if isinstance(err, json.JSONDecodeError) else "its bytes"
        raise StoreCorrupt(f"{path} is corrupt ({type(err).__name__} at {where}): {fix}") from err


# -------------------------------------------------------------------------------------- records
def missing_column(column: str, key: Any) -> Any:
    """The value of a column an older record lacks (:data:`ADDED_COLUMNS`); else a clear error."""
    if column in ADDED_COLUMNS:
        return ADDED_COLUMNS[column]
    raise ValueError(f"record {list(key)} has no {column!r} column: every sweep stores it, so the record is "
                     "damaged. Rerun the sweep (delete its out directory, or the record's line in rows.jsonl "
                     "and resume).")


def record_checksum(key: Any, rows: Any, draw: Any) -> str:
    """The checksum stored with every record: SHA-256 (first 16 hex digits) of its key, rows and
    draw as canonical JSON, so a value changed inside a line that still parses is detected."""
    text = json.dumps([list(key), rows, draw], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_record(rec: Any, n_levels: int | None = None) -> str | None:
    """What is wrong with a parsed record, or None (``n_levels``: the sweep's number of levels, to
    check the key's level index against)."""
    if not isinstance(rec, dict):
        return f"a JSON {type(rec).__name__}, not a record object"
    missing = [k for k in ("key", "rows", "draw") if k not in rec]
    if missing:
        return f"a record without {missing}"
    key = rec["key"]
    if not (isinstance(key, list) and len(key) == 3
            and all(isinstance(k, int) and not isinstance(k, bool) for k in key)):
        return f"a record whose key {key!r} is not [level_index, chain, draw]"
    if tuple(key) != BASELINE_KEY and (key[0] < 0 or key[1] < 0 or key[2] < 0):
        return f"a record whose key {key!r} is neither the baseline {list(BASELINE_KEY)} nor a draw (indices >= 0)"
    if n_levels is not None and key[0] >= n_levels:
        return (f"a record keyed to level index {key[0]}, but the sweep has {n_levels} level(s) "
                f"(indices 0 to {n_levels - 1}, in config.json)")
    if not isinstance(rec["rows"], list) or not all(isinstance(r, dict) for r in rec["rows"]):
        return "a record whose rows are not a list of row objects"
    if not rec["rows"]:
        return 'a record with no rows ("rows": []): every stored draw has at least one metric'
    if not isinstance(rec["draw"], dict):
        return "a record whose draw is not an object"
    return None


def _checksum_problem(rec: dict[str, Any]) -> str | None:
    if "sha256" in rec and rec["sha256"] != record_checksum(rec["key"], rec["rows"], rec["draw"]):
        return ("a record whose content does not match its checksum (a value was changed after the sweep "
                "wrote it)")
    return None


def read_records(rows_file: Path, *, repair: bool = False, n_levels: int | None = None) -> Iterator[dict[str, Any]]:
    """The records of a sweep's ``rows.jsonl``, one at a time, in the order written, each key once.

    A torn final line (a crash mid-write: no newline) is skipped with a warning, and with ``repair``
    truncated away so that appending can go on. A line repeating an earlier line byte for byte is
    dropped with a warning. Anything else that is not a record (garbage, a line cut inside the file, a
    record without ``rows`` or with none, a value changed inside a line (its checksum no longer
    matches), a key outside the sweep's ``n_levels`` levels, one key with two different records)
    raises :class:`StoreCorrupt` naming the file and the line.
    """
    rows_file = Path(rows_file)
    if not rows_file.exists():
        return
    good = 0
    seen: dict[tuple[int, ...], tuple[int, int]] = {}  # key -> (line number, hash of the line)
    with open(rows_file, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                log.warning("Dropping a partially written record at the end of %s (line %d).", rows_file, lineno)
                if repair:
                    with open(rows_file, "r+b") as w:
                        w.truncate(good)
                return
            try:
                rec = json.loads(line)
                problem = _check_record(rec, n_levels)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                problem = f"not JSON ({err})"
            key = tuple(rec["key"]) if problem is None else None
            if problem is None and (key not in seen or seen[key][1] == hash(line)):
                problem = _checksum_problem(rec)  # (a repeated key says more: two sweeps wrote it)
            if problem is not None:
                raise StoreCorrupt(
                    f"{rows_file} line {lineno} is corrupt: {problem}. The {lineno - 1} lines before it are "
                    f"intact: keep them (e.g. `head -n {lineno - 1} rows.jsonl > rows.tmp && mv rows.tmp "
                    "rows.jsonl`, or truncate the file at byte "
                    f"{good}) and rerun the same sweep with the same out to recompute the rest; or delete "
                    "the out directory to start over."
                )
            digest = hash(line)
            if key in seen:
                first, first_digest = seen[key]
                if first_digest == digest:
                    log.warning("%s line %d repeats line %d (key %s) byte for byte: dropped.",
                                rows_file, lineno, first, list(key))
                    good += len(line)
                    continue
                raise StoreCorrupt(
                    f"{rows_file} line {lineno} holds key {list(key)} again, with other values than line "
                    f"{first}: two sweeps wrote into one out directory. Delete one of the two lines (or "
                    "the out directory) and rerun the same sweep to recompute what is missing."
                )
            seen[key] = (lineno, digest)
            good += len(line)
            yield rec


# ---------------------------------------------------------------------------------------- store
def _write_error(path: Path, err: OSError, what: str) -> OSError:
    return type(err)(err.errno, f"Cannot write {path} ({err.strerror or err}): {what}")


class Store:
    """Append-only per-draw storage in ``out`` (locked while open), or in memory when ``out`` is None.

    With ``out`` only the completed keys stay in memory (a sweep's memory does not grow with its
    draws); :meth:`records` reads the records back from ``rows.jsonl`` when the sweep is done. Use
    as a context manager, or call :meth:`close` (it releases the lock).
    """

    def __init__(self, out: str | os.PathLike | None, config: dict[str, Any]):
        self.keys: dict[Key, None] = {}  # completed draws, in the order stored
        self.memory: list[dict[str, Any]] = []  # the records themselves, only when out is None
        self.level_info: dict[int, dict[str, Any]] = {}
        self._jobs: dict[str, Any] | None = None
        self._pending_config: dict[str, Any] | None = None
        self.file = None
        self.lock: DirLock | None = None
        self.path = None if out is None else Path(out)
        levels = config.get("levels")
        self.n_levels = len(levels) if isinstance(levels, list) else None
        if self.path is None:
            return
        check_out(self.path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.lock = DirLock(self.path)
            self.lock.acquire()
        except OSError as err:
            raise _write_error(self.path, err, "nothing was written; give a writable out directory.") from err
        try:
            self._open(config)
        except BaseException:
            self.close()
            raise

    def _open(self, config: dict[str, Any]) -> None:
        assert self.path is not None
        cfg_file, self.rows_file = self.path / "config.json", self.path / "rows.jsonl"
        if cfg_file.exists():
            old = read_json(cfg_file, fix=f"without it the rows in {self.path} cannot be checked against this "
                                          "sweep's configuration: delete the out directory (or use a new one) "
                                          "and start over.")
            if not isinstance(old, dict):
                raise StoreCorrupt(f"{cfg_file} is corrupt (a JSON {type(old).__name__}, not a configuration): delete "
                                   "the out directory (or use a new one) and start over.")
            if "task_data" not in old:  # stored before the data fingerprints: compare what it holds
                log.warning("%s was written before sweeps recorded their data's fingerprint: resuming it "
                            "cannot check that the task's data is the same as before.", cfg_file)
                config = legacy_identity(config, old)
            if old != config:
                diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
                raise ValueError(
                    f"{self.path} holds a sweep with a different configuration (differs in {diff}). "
                    "Use a new output directory, or delete this one to start over. "
                    + config_difference(old, config)
                )
            for rec in read_records(self.rows_file, repair=True, n_levels=self.n_levels):
                self.keys[tuple(rec["key"])] = None
            info_file = self.path / "levels.json"
            if info_file.exists():
                info = read_json(info_file, fix="delete levels.json and rerun the same sweep: its levels are "
                                                "replayed and only draws missing from rows.jsonl are analysed.")
                if not isinstance(info, dict) or not all(isinstance(v, dict) and "n_draws" in v for v in info.values()):
                    raise StoreCorrupt(f"{info_file} is corrupt (not a map of level records with n_draws): delete "
                                       "it and rerun the same sweep; only missing draws are analysed.")
                self.level_info = {int(k): v for k, v in info.items()}
        else:
            if self.rows_file.exists() and self.rows_file.stat().st_size > 0:
                raise StoreCorrupt(
                    f"{self.rows_file} exists without {cfg_file}: its rows cannot be checked against this "
                    "sweep's configuration (config.json was deleted, or the directory holds something "
                    "else). Use a new out directory, or move rows.jsonl away to start over here."
                )
            self._pending_config = config  # written with the first record: a sweep that fails before
            # storing anything (a bad level, an analysis returning a string) leaves no configuration
            # behind to refuse its fixed rerun
        try:
            self.file = open(self.rows_file, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
            self._size = self.rows_file.stat().st_size  # bytes of complete records
        except OSError as err:
            raise _write_error(self.rows_file, err, "nothing was lost; make the out directory writable "
                                                    "and rerun the same sweep to resume.") from err

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def records(self) -> Iterator[dict[str, Any]]:
        """Every stored record (``{"key", "rows", "draw"}``), in the order stored."""
        return iter(self.memory) if self.path is None else read_records(self.rows_file, n_levels=self.n_levels)

    def done(self, key: Key) -> bool:
        return key in self.keys

    def add(self, key: Key, rows: list[dict], draw: dict[str, Any]) -> None:
        """Store one draw's record (durably, with ``out``); a completed key is never added twice."""
        key = tuple(key)
        if key in self.keys:
            raise ValueError(f"key {list(key)} is already stored; a sweep stores every draw once.")
        if not rows:
            raise ValueError(f"draw {list(key)} has no metrics: every analysis returned an empty dict. An "
                             "analysis returns at least one named metric, e.g. {'loss': 0.12}.")
        rec = {"key": list(key), "rows": rows, "draw": draw}
        if self.path is None:
            self.keys[key] = None
            self.memory.append(rec)
            return
        line = json.dumps({**rec, "sha256": record_checksum(key, rows, draw)}) + "\n"
        self._write_config()
        try:
            self.file.write(line)
            self.file.flush()
            os.fsync(self.file.fileno())
        except OSError as err:
            with contextlib.suppress(OSError):  # drop the torn line, if any, so the file stays clean
                self.file.close()
                self.file = None
                with open(self.rows_file, "r+b") as w:
                    w.truncate(self._size)
            raise _write_error(self.rows_file, err, f"the {len(self.keys)} records before this draw are saved "
                                                    "there and nothing else was lost; free space or fix "
                                                    "permissions and rerun the same sweep (same out) to "
                                                    "resume.") from err
        self._size += len(line.encode())
        self.keys[key] = None

    def finish_level(self, level_index: int, info: dict[str, Any]) -> None:
        """Mark a level complete (a resumed run skips it) with what the degradation reported."""
        n = sum(1 for key in self.keys if key[0] == level_index)
        self.level_info[level_index] = {"n_draws": n, **info}
        self._write_json("levels.json", self.level_info, indent=1)

    def level_complete(self, level_index: int) -> bool:
        """Whether a level was finished and every one of its draws' records survived."""
        info = self.level_info.get(level_index)
        n = sum(1 for key in self.keys if key[0] == level_index)
        return info is not None and info["n_draws"] == n

    # ---- per-job bookkeeping of executors that run (level, chain) jobs (``interp.sweep.ray``)
    def jobs(self) -> dict[str, Any]:
        """Completed (level, chain) jobs, ``"LEVEL/CHAIN"`` -> what the job reported."""
        if self._jobs is None:
            f = None if self.path is None else self.path / "jobs.json"
            jobs = {}
            if f is not None and f.exists():
                jobs = read_json(f, fix="delete jobs.json and rerun the same sweep: its jobs run again and only "
                                        "draws missing from rows.jsonl are analysed.")
                if not isinstance(jobs, dict):
                    raise StoreCorrupt(f"{f} is corrupt (not a map of jobs): delete it and rerun the same sweep.")
            self._jobs = jobs
        return self._jobs

    def finish_job(self, name: str, info: dict[str, Any]) -> None:
        self.jobs()[name] = info
        self._write_json("jobs.json", self._jobs, indent=1)

    def record_failures(self, failures: list[dict[str, Any]]) -> None:
        """What failed in the last run (``failures.json``; empty when nothing failed)."""
        self._write_json("failures.json", failures, indent=1)

    def _write_config(self) -> None:
        if self._pending_config is not None:
            config, self._pending_config = self._pending_config, None
            self._write_json("config.json", config, indent=1, sort_keys=True)

    def _write_json(self, name: str, value: Any, **kw: Any) -> None:
        if self.path is None:
            return
        if name != "config.json":
            self._write_config()
        tmp, final = self.path / f"{name}.tmp", self.path / name
        try:
            tmp.write_text(json.dumps(value, **kw))
            tmp.replace(final)
        except OSError as err:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise _write_error(final, err, "its previous version is intact and nothing was lost; free space "
                                           "or fix permissions and rerun the same sweep (same out) to "
                                           "resume.") from err

    def close(self) -> None:
        """Close the rows file and release the lock (idempotent)."""
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
            self.file = None
        if self.lock is not None:
            self.lock.release()


def check_out(out: Path) -> None:
    """``out`` must be a directory or not exist yet (a ValueError naming it otherwise)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"run_sweep(out={str(out)!r}): out must be a directory (or a path to create); "
                         f"{out} is a file. Give another path.")
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ValueError(f"run_sweep(out={str(out)!r}): {parent} is a file, so out cannot be created there.")
