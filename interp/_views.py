"""Attention views for reports, and their safe storage beside a sweep's results.

:func:`attention_view` renders attention patterns ``(heads, query, key)`` with circuitsvis as an
offline HTML fragment (its JavaScript bundle embedded). The view's data never runs: its title is
HTML-escaped, and the tokens reach the page as JSON with ``<``, ``>`` and ``&`` written as ``\\u``
escapes, themselves HTML-escaped because circuitsvis writes each token into the page with
``innerHTML`` (a token ``<img src=x onerror=…>`` shows as text).

:func:`save_view` stores a fragment as ``DIR/views/NAME.html`` (a name without path separators or
``..``) and records its SHA-256 in ``DIR/views.json``; :func:`load_views` returns only the recorded
views whose content still matches, so a file planted in ``views/`` is never part of a report.
:func:`write_atomic` writes a file through a temporary file and a rename (a full disk never leaves
a truncated file; its error names the file).

Example::

    >>> import torch
    >>> view = attention_view(["<b>", "x"], torch.eye(2)[None], "L0", heads=["L0H0"])
    >>> "<b>" in view
    False
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["attention_view", "save_view", "load_views", "write_atomic"]


def _script_json(value: Any) -> str:
    """``value`` as JSON safe inside a ``<script>`` block: ``<``, ``>``, ``&`` and the JavaScript line
    separators as \\u escapes (still the same JSON), so no string can close the script or open a tag."""
    text = json.dumps(value, ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def attention_view(tokens: list[str], pattern: Any, title: str, heads: list[str] | None = None) -> str:
    """An offline circuitsvis view of attention patterns ``(heads, query, key)`` as an HTML fragment.

    ``heads`` labels the heads (e.g. ``["L0H0", "L0H1", "L1H0", "L1H1"]``; default ``H0, H1, …``).
    Tokens are shown apart (a space after each that has none) and, like the title, never run: the
    title is HTML-escaped, and the tokens are HTML-escaped (circuitsvis writes them into the page as
    HTML) inside script-safe JSON."""
    import numpy as np
    from circuitsvis.attention import attention_patterns

    attention = np.asarray(pattern.detach().cpu() if hasattr(pattern, "detach") else pattern, dtype=float)
    if attention.ndim != 3:
        raise ValueError(f"attention_view: pattern has shape {attention.shape}; give (heads, query, key).")
    tokens = [str(t) for t in tokens]
    if len(tokens) != attention.shape[-1]:
        raise ValueError(f"attention_view: {len(tokens)} tokens for a pattern over {attention.shape[-1]} "
                         "positions; give one token per position.")
    labels = [str(h) for h in heads] if heads is not None else [f"H{i}" for i in range(attention.shape[0])]
    if len(labels) != attention.shape[0]:
        raise ValueError(f"attention_view: {len(labels)} head labels for {attention.shape[0]} heads.")
    # circuitsvis puts each token into the page as HTML (innerHTML): escape it, so it shows as text
    shown = [html.escape(t if (t[-1:].isspace() or (i + 1 < len(tokens) and tokens[i + 1][:1].isspace()))
                         else t + " ") for i, t in enumerate(tokens)]
    # local_src embeds the JavaScript bundle (the CDN variant would need the network); only the bundle
    # is kept from it: the render call is rebuilt with escaped data and the head labels
    src = attention_patterns(tokens=["x"], attention=np.zeros((1, 1, 1))).local_src
    mount = re.search(r'<div id="(circuits-vis-[0-9a-f-]+)"[^>]*?/?>', src)
    call = src.rfind("CircuitsVis.render(")
    if mount is None or call < 0:
        raise RuntimeError("attention_view: this circuitsvis version renders differently; update interp.")
    props = {"tokens": shown, "attention": attention.tolist(), "headLabels": labels}
    # the mount point is written `<div .../>`, which HTML parses as an *open* div: close it explicitly
    body = src[mount.end():call] + (f'CircuitsVis.render("{mount.group(1)}", CircuitsVis.AttentionPatterns, '
                                    f"{_script_json(props)});\n</script>")
    return (f"<div class='cv-title'>{html.escape(str(title))}</div>\n"
            f'<div id="{mount.group(1)}" style="margin: 15px 0;"></div>{body}')


_VIEW_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_MANIFEST = "views.json"


def _check_view_name(name: Any) -> str:
    if not isinstance(name, str) or not _VIEW_NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"save_view(name={name!r}): a view name is letters, digits, '_', '-' and '.', starting "
                         "with a letter or digit, without path separators or '..' (it names a file in the "
                         "results' views/ folder); e.g. name='attention_0'.")
    return name


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``: an interrupted or
    failed write (a full disk) leaves the old file, never a truncated one; the error names ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise OSError(err.errno, f"Cannot write {path} ({err.strerror or err}): nothing was replaced (a "
                                 "previous file there is unchanged); free space or fix permissions and "
                                 "write it again.") from err


def _manifest(directory: Path) -> dict[str, str]:
    try:
        data = json.loads((directory / _MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        log.warning("%s cannot be read (%s): no attention views are included.", directory / _MANIFEST, err)
        return {}
    views = data.get("views") if isinstance(data, dict) else None
    return {str(k): str(v) for k, v in views.items()} if isinstance(views, dict) else {}


def save_view(directory: str | Path, name: str, fragment: str) -> Path:
    """Store an HTML fragment under ``directory/views/NAME.html`` for later reports and record its
    SHA-256 in ``directory/views.json`` (only recorded views are included by :func:`load_views`).
    ``name`` may not hold path separators or ``..``."""
    name = _check_view_name(name)
    directory = Path(directory)
    path = directory / "views" / f"{name}.html"
    write_atomic(path, fragment)
    views = _manifest(directory)
    views[name] = hashlib.sha256(fragment.encode("utf-8")).hexdigest()
    write_atomic(directory / _MANIFEST, json.dumps({"views": views}, indent=1))
    return path


def load_views(directory: str | Path) -> list[str]:
    """The view fragments this results directory recorded (:func:`save_view`), by name; a file in
    ``views/`` that is not recorded, or whose content changed since, is left out with a warning."""
    directory = Path(directory)
    recorded = _manifest(directory)
    out = []
    for name in sorted(recorded):
        if not _VIEW_NAME.fullmatch(name) or ".." in name:
            log.warning("%s lists the view %r, which is not a valid view name: left out.", directory / _MANIFEST, name)
            continue
        path = directory / "views" / f"{name}.html"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            log.warning("View %s cannot be read (%s): left out of the report.", path, err)
            continue
        if hashlib.sha256(text.encode("utf-8")).hexdigest() != recorded[name]:
            log.warning("View %s changed since the sweep wrote it (its SHA-256 differs from %s): left out of "
                        "the report.", path, directory / _MANIFEST)
            continue
        out.append(text)
    planted = sorted(p.name for p in (directory / "views").glob("*.html") if p.stem not in recorded) \
        if (directory / "views").is_dir() else []
    if planted:
        log.warning("%s holds view file(s) this sweep did not record (%s): left out of the report.",
                    directory / "views", ", ".join(planted[:5]))
    return out
