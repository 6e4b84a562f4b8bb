"""Per-component learning coefficients as a sweep analysis: :class:`LLC` (e.g. per-head λ̂ at every
checkpoint of ``Checkpoints``).

At whatever weights the model holds (the trained weights, a checkpoint, a draw), each component's
weight-restricted λ̂ = B·(E[L] − L(w)) samples only that component's weights with localized SGLD
around the current weights w, the rest fixed (Lau et al. 2023; Wang, Hoogland, van Wingerden,
Furman, Murfet 2025, "Differentiation and specialization of attention heads via the refined local
learning coefficient", ICLR). It wraps ``interp.degradations.estimate_component_llcs``.
Metrics per component ``c``: ``c`` (λ̂) and ``c_stderr``.

Example::

    >>> import analyses
    >>> a = analyses.LLC(components={"L1H0": "blocks.1.attn.head.0"}, nbeta=30.0, chains=2, n_draws=10)
    >>> a.effects
    ('L1H0',)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from analyses._base import Params
from interp.checks import bad_value, check_number
from interp.degradations import TemperedPosterior, estimate_component_llcs

__all__ = ["LLC"]


class LLC(Params):
    """Weight-restricted λ̂ of named components at every draw.

    Args:
        components: ``{name: restrict}``, each what ``restrict=`` accepts, including head slices
            ``"blocks.1.attn.head.0"`` and lists of patterns (all the nodes of a hypothesis).
        nbeta: inverse temperature B (``None``: give ``level``).
        level: a level for the estimate instead of ``nbeta`` (e.g. ``LossIncrease(0.05)``).
        localization: γ, as for :class:`~interp.degradations.TemperedPosterior`.
        lr: step size ε (``None``: from the curvature).
        chains: chains per component.
        n_draws: draws per chain.
        burnin: steps discarded first.
        batch_size: minibatch rows per step.
        seed: seeds the noise and the minibatch order.
        sampler: ``"sgld"`` or ``"rmsprop"``.
        name: the analysis name in sweep results.

    The task's loss is the objective. Nothing is fitted: :meth:`setup` only checks the components
    against the model (a typo fails before any work).
    """

    collaterals = ()

    def __init__(self, components: Mapping[str, Any], nbeta: float | None = 100.0, level: Any = None,
                 localization: float = 100.0, lr: float | None = None, chains: int = 4, n_draws: int = 100,
                 burnin: int = 100, batch_size: int = 32, seed: int = 0, sampler: str = "sgld",
                 name: str = "llc") -> None:
        self.components, self.nbeta, self.level, self.localization = components, nbeta, level, localization
        self.lr, self.chains, self.n_draws, self.burnin = lr, chains, n_draws, burnin
        self.batch_size, self.seed, self.sampler, self.name = batch_size, seed, sampler, name
        if not isinstance(components, Mapping) or not components or not all(
                isinstance(k, str) and k for k in components):
            raise bad_value("LLC", "components", components, "a non-empty mapping {name: restrict}",
                            "Use e.g. components={'L1H0': 'blocks.1.attn.head.0', 'mlp0': 'blocks.0.mlp.*'}.")
        if nbeta is None and level is None:
            raise bad_value("LLC", "nbeta", nbeta, "a number > 0 when no level is given",
                            "Use e.g. nbeta=100.0, or level=LossIncrease(0.05).")
        check_number("LLC", "nbeta", nbeta, none_ok=True)
        # every sampler setting is checked here, by the sampler itself
        self._sampler_kwargs = dict(nbeta=nbeta, localization=localization, lr=lr, chains=chains, n_draws=n_draws,
                                    burnin=burnin, batch_size=batch_size, seed=seed, sampler=sampler, progress=False)
        TemperedPosterior(**self._sampler_kwargs)
        self.effects = tuple(components)

    def setup(self, model: Any, task: Any) -> None:
        for restrict in self.components.values():
            TemperedPosterior(**self._sampler_kwargs, restrict=restrict).check(model)

    def __call__(self, model: Any, task: Any) -> dict[str, float]:
        table = estimate_component_llcs(model, task, self.level, components=dict(self.components),
                                        **self._sampler_kwargs)
        out: dict[str, float] = {}
        for comp in self.components:
            row = table[comp]
            out[comp] = row.mean
            out[f"{comp}_stderr"] = row.stderr if math.isfinite(row.stderr) else math.nan
        return out
