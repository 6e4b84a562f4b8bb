"""A sweep's identity beyond its configuration: fingerprints of the data it runs on, and what differs.

A rerun resumes an ``out`` directory only when it is the same experiment. Names are not enough (a
task named ``"tiny"`` can be built from another corpus or another split seed), so ``config.json``
also holds :func:`data_fingerprint`: SHA-256 over every split of the task's ``datasets`` rows, each
column's name and values in order (numbers as int64/float64, strings length-prefixed, lists as their
lengths then their values: the same values built another way hash the same), and, for a posterior
sampled on an objective of its own, :func:`objective_fingerprint` of the objective's rows. When a
stored identity differs from a rerun's, :func:`config_difference` says what differs in words (the
rows digests, a renamed analysis, parameter by parameter, a version bump).

Example::

    >>> config_difference({"seed": 0, "task": "t"}, {"seed": 1, "task": "t"})
    'What differs: seed differs: 0 stored vs 1 now.'
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import torch

__all__ = ["data_fingerprint", "objective_fingerprint", "tensors_fingerprint", "config_difference",
           "legacy_identity", "IDENTITY_ADDED"]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- data fingerprints
def _update_array(h: Any, arr: Any) -> None:
    """Feed one Arrow array's values (not its buffers: the same values built another way hash the
    same) into ``h``: lists as their lengths then their flattened values, numbers as int64 /
    float64, strings and bytes length-prefixed, nulls as a mask."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(arr, pa.ChunkedArray):
        arr = pa.concat_arrays(arr.chunks) if arr.num_chunks else pa.array([], type=arr.type)
    t = arr.type
    h.update(f"|{len(arr)}:{arr.null_count}|".encode())
    if arr.null_count:
        h.update(np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=np.uint8).tobytes())
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        lengths = pc.fill_null(pc.list_value_length(arr), -1).to_numpy(zero_copy_only=False)
        h.update(np.asarray(lengths, dtype=np.int64).tobytes())
        _update_array(h, pc.list_flatten(arr))
    elif pa.types.is_integer(t) or pa.types.is_boolean(t):
        h.update(np.asarray(pc.fill_null(arr, 0).to_numpy(zero_copy_only=False), dtype=np.int64).tobytes())
    elif pa.types.is_floating(t):
        h.update(np.asarray(pc.fill_null(arr, 0).to_numpy(zero_copy_only=False), dtype=np.float64).tobytes())
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        for v in arr.to_pylist():
            b = b"" if v is None else (v.encode("utf-8", "surrogatepass") if isinstance(v, str) else bytes(v))
            h.update(len(b).to_bytes(8, "little") + b)
    else:  # structs, dictionaries, timestamps, ...: their values as JSON
        h.update(json.dumps(arr.to_pylist(), default=repr, sort_keys=True).encode())


def data_fingerprint(task: Any) -> str | None:
    """SHA-256 of a task's data: every split's rows (each column's name and values, in order),
    from the task's public ``dataset`` (a ``datasets.DatasetDict``); ``None`` for a task without
    one. Two tasks of the same name built from another corpus or another split seed differ here."""
    dataset = getattr(task, "dataset", None)
    if dataset is None or not hasattr(dataset, "keys"):
        return None
    h = hashlib.sha256()
    for split in sorted(dataset.keys()):
        ds = dataset[split]
        table = ds.with_format("arrow")[:] if hasattr(ds, "with_format") else None
        if table is None:
            return None
        h.update(f"split {split} rows {table.num_rows}\n".encode())
        for name in sorted(table.column_names):
            h.update(f"column {name}\n".encode())
            _update_array(h, table.column(name))
    return h.hexdigest()


def tensors_fingerprint(tensors: Any) -> str:
    """SHA-256 of a dict of tensors (names, shapes, dtypes, bytes)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(json.dumps([name, list(t.shape), str(t.dtype)]).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def objective_fingerprint(degradation: Any) -> str | None:
    """SHA-256 of the data a degradation samples on when it is not the task's (a posterior's
    ``objective``): the objective's task's data, else the rows of its ``tensors()``; ``None`` when the
    degradation samples on the task itself."""
    objective = getattr(degradation, "objective", None)
    if objective is None:
        return None
    inner = getattr(objective, "task", None)
    if inner is not None and data_fingerprint(inner) is not None:
        return data_fingerprint(inner)
    if data_fingerprint(objective) is not None:  # the objective is a Task
        return data_fingerprint(objective)
    tensors = getattr(objective, "tensors", None)
    if callable(tensors):
        try:
            rows = tensors()
        except Exception as err:  # noqa: BLE001 - an objective that needs prepare() first: not checked
            log.info("The objective's rows cannot be read before sampling (%s); its data is not part of "
                     "the sweep's identity.", err)
            return None
        if isinstance(rows, dict) and all(isinstance(v, torch.Tensor) for v in rows.values()):
            return tensors_fingerprint(rows)
    return None


# ------------------------------------------------------------------------------ identity checks
#: what a sweep's identity gained with the data fingerprints (absent from older config.json files)
IDENTITY_ADDED = ("task_data", "objective_data")
_ANALYSIS_ADDED = ("name", "params", "version")


def legacy_identity(config: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """``config`` as a sweep stored before the data fingerprints (``old``) would have recorded it:
    without the fingerprints, and without the analysis fields ``old`` lacks."""
    legacy = {k: v for k, v in config.items() if k not in IDENTITY_ADDED}
    before = old.get("analyses")
    if isinstance(legacy.get("analyses"), list) and isinstance(before, list) and len(before) == len(legacy["analyses"]):
        legacy["analyses"] = [
            {k: v for k, v in a.items() if k not in _ANALYSIS_ADDED or (isinstance(b, dict) and k in b)}
            if isinstance(a, dict) else a
            for a, b in zip(legacy["analyses"], before)
        ]
    return legacy


def _short(value: Any, n: int = 80) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= n else text[: n - 1] + "…"


def _digest(value: Any) -> str:
    return "none" if value is None else f"{str(value)[:12]}…"


def _analyses_difference(old: Any, new: Any) -> list[str]:
    if not (isinstance(old, list) and isinstance(new, list)):
        return [f"analyses differ: {_short(old)} vs {_short(new)}"]
    name = (lambda a: a.get("name", a.get("type")) if isinstance(a, dict) else a)  # noqa: E731
    old_by, new_by = {name(a): a for a in old}, {name(a): a for a in new}
    out = []
    if list(old_by) != list(new_by):
        gone, added = [n for n in old_by if n not in new_by], [n for n in new_by if n not in old_by]
        out.append(f"analyses differ: stored {list(old_by)}, now {list(new_by)}"
                   + (f" ({gone} not given now, {added} new: a renamed analysis is another analysis, never "
                      "merged with the old one's rows)" if gone or added else " (another order)"))
    for n in old_by:
        a, b = old_by[n], new_by.get(n)
        if b is None or a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            fields = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            parts = []
            for k in fields:
                x, y = a.get(k), b.get(k)
                if isinstance(x, dict) and isinstance(y, dict):  # constructor parameters: name each one
                    parts += [f"{k}.{j} {_short(x.get(j), 40)} vs {_short(y.get(j), 40)}"
                              for j in sorted(set(x) | set(y)) if x.get(j) != y.get(j)]
                else:
                    parts.append(f"{k} {_short(x, 40)} vs {_short(y, 40)}")
            hint = " (its version changed: the analysis says its output changed)" if "version" in fields else ""
            out.append(f"analysis {n!r} differs: {'; '.join(parts)}{hint}")
        else:
            out.append(f"analysis {n!r} differs: {_short(a)} vs {_short(b)}")
    return out


def config_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What differs between a stored sweep's identity and this one's, in words."""
    parts = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key == "task_data":
            parts.append(f"task data differs: rows digest {_digest(a)} stored vs {_digest(b)} now (a task "
                         f"named {new.get('task')!r} with other rows: another corpus, split or seed)")
        elif key == "objective_data":
            parts.append(f"objective data differs: rows digest {_digest(a)} stored vs {_digest(b)} now (the "
                         "posterior samples on other data)")
        elif key == "weights":
            parts.append(f"the model's weights differ: digest {_digest(a)} stored vs {_digest(b)} now")
        elif key == "analyses":
            parts.extend(_analyses_difference(a, b))
        else:
            parts.append(f"{key} differs: {_short(a)} stored vs {_short(b)} now")
    return "What differs: " + "; ".join(parts) + "." if parts else ""
