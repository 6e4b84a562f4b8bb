"""``ProbeConfig``: what to probe, where and how, validated at construction.

Example::

    >>> from analyses.probing import ProbeConfig
    >>> ProbeConfig(label="label", positions=("sep_pos",), folds=3).folds
    3
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

from analyses.probing._labels import LabelSpec
from interp.checks import bad_value, check_number

__all__ = ["ProbeConfig", "DEFAULT_LAMS", "LAST_TOKEN"]

LAST_TOKEN = "last"
"""The position ``"last"``: each row's last real token (the last 1 of its ``attention_mask``; the
last position of an unpadded row). Unlike ``-1``, never a padding token."""

DEFAULT_LAMS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


@dataclass(frozen=True)
class ProbeConfig:
    """What to probe, where, and how.

    Args:
        label: a column with one integer label per row, or a callable ``f(data) -> [rows]`` (one
            label per row) or ``-> [rows, pos]`` (one label per token, −1 where not probed).
        positions: for row labels, where to read each row: column names holding a per-row position
            (``"sep_pos"``), integer positions (``0``, ``-1``) or ``"last"`` (:data:`LAST_TOKEN`: each
            row's last real token, padding skipped). ``None`` (default): ``("last",)`` for row labels
            on padded rows (with an ``attention_mask``), none for per-token labels. A position that reads padding in some rows (``-1`` on padded
            rows) gets a warning.
        layers: layer indices (0 … n_layers; n_layers is the final ``resid_post``); ``None``: all.
        group: column of group ids (strings or ints) for λ cross-validation on held-out groups;
            ``None``: random rows.
        control_type: the Hewitt & Liang *type* of an example: a column, a callable like
            :class:`token_at`, or ``"token"`` (the token at the probed position).
        lams: ridge penalties λ (on standardised features, per example: ``λ·n``).
        folds: cross-validation folds for λ.
        eval_rows: rows taken from each split, train (fitting) and test (evaluation); ``None``: all.
        batch_size: rows per forward pass.
        seed: control labels, folds and the control split.
        progress: show progress bars.
    """

    label: LabelSpec = "label"
    positions: tuple[Union[str, int], ...] | None = None
    layers: tuple[int, ...] | None = None
    group: str | None = None
    control_type: LabelSpec | None = "token"
    lams: tuple[float, ...] = DEFAULT_LAMS
    folds: int = 5
    eval_rows: int | None = None
    batch_size: int = 64
    seed: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.label, str) or callable(self.label)):
            raise ValueError(f"label={self.label!r}: give a column name or a callable(data) -> labels.")
        if self.positions is None:
            return self._check_rest()
        if isinstance(self.positions, (str, int)):
            raise ValueError(f"positions={self.positions!r}: give a tuple of positions, e.g. "
                             f"positions=({self.positions!r},).")
        object.__setattr__(self, "positions", tuple(self.positions))
        for p in self.positions:
            if not isinstance(p, (str, int)) or isinstance(p, bool):
                raise ValueError(f"positions entry {p!r}: must be a column name, an int position or "
                                 f"{LAST_TOKEN!r} (the last real token).")
        self._check_rest()

    def _check_rest(self) -> None:
        c = "ProbeConfig"
        if self.layers is not None:
            if isinstance(self.layers, (str, bytes)) or not isinstance(self.layers, Sequence) or not self.layers:
                raise bad_value(c, "layers", self.layers, "a non-empty sequence of layer indices or None (all)")
            for x in self.layers:
                check_number(c, "layers", x, integer=True, zero_ok=True,
                             fix=f"Give layer indices, e.g. layers=(0, 3); got {self.layers!r}.")
            object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        if isinstance(self.lams, (str, bytes)) or not isinstance(self.lams, Sequence) or not self.lams:
            raise bad_value(c, "lams", self.lams, f"a non-empty sequence of ridge penalties > 0, e.g. {DEFAULT_LAMS}")
        for x in self.lams:
            check_number(c, "lams", x,
                         fix=f"Give positive ridge penalties, e.g. {DEFAULT_LAMS}; got {self.lams!r}.")
        object.__setattr__(self, "lams", tuple(float(x) for x in self.lams))
        check_number(c, "folds", self.folds, integer=True, minimum=2, fix="Cross-validation needs at least 2 folds.")
        check_number(c, "eval_rows", self.eval_rows, integer=True, minimum=4, none_ok=True,
                     fix="At least 4 rows per split, or None for all.")
        check_number(c, "batch_size", self.batch_size, integer=True)
        check_number(c, "seed", self.seed, integer=True, zero_ok=True)
