"""A griffe extension for the docs build: the reStructuredText bits of our docstrings, as Markdown.

The docstrings follow the Google style but cross-reference with Sphinx roles (``:class:`~a.b.C```)
and end literal-block introductions with ``::``. mkdocstrings renders Markdown, where both would show
verbatim. Before a docstring is parsed this rewrites

- ``:role:`~a.b.C``` to ```C``` and ``:role:`a.b.C``` to ```a.b.C``` (inline code, any role);
- a trailing ``::`` to ``:`` (the indented block that follows is already a Markdown code block),
  and a line that is only ``::`` to nothing.

Only the text handed to the renderer changes; the source files are untouched.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:[a-z]+:)?[a-z]+:`(~?)([^`]+)`")


def _role(match: re.Match) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def to_markdown(text: str) -> str:
    """The docstring ``text`` with Sphinx roles and ``::`` literal markers turned into Markdown."""
    text = _ROLE.sub(_role, text)
    lines = []
    for line in text.split("\n"):
        stripped = line.rstrip()
        if stripped.strip() == "::":
            line = ""
        elif stripped.endswith("::"):
            line = stripped[:-1]
        lines.append(line)
    return "\n".join(lines)


class RstToMarkdown(griffe.Extension):
    """Rewrite every docstring with :func:`to_markdown` as its object is created (modules included)."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
