"""Per-component learning coefficients as a sweep analysis: :class:`LLC` (e.g. per-head λ̂ at every
checkpoint of ``Checkpoints``).

At whatever weights the model holds (the trained weights, a checkpoint, a draw), each component's
weight-restricted λ̂ = B·(E[L] − L(w)) samples only that component's weights with localized SGLD
around the current weights w, the rest fixed (Lau et al. 2023; Wang, Hoogland, van Wingerden,
Furman, Murfet 2025, "Differentiation and specialization of attention heads via the refined local
learning coefficient", ICLR). It wraps ``interp.degradations.estimate_component_llcs``.
Metrics per component ``c``: ``c`` (λ̂) and ``c_stderr``.

Beside a verdict, :func:`estimate_node_llcs` gives the weight-restricted λ̂ of a causal-scrubbing
hypothesis's nodes (all of them together, and each alone): the complexity of the weights a claim rests
on, to read next to the temperature at which the claim dissolves (the survival heuristic: at equal
importance, a circuit of lower λ̂ should be noised away later). :func:`node_components` names the
nodes' weights as ``restrict=`` patterns.

Example::

    >>> import analyses
    >>> a = analyses.LLC(components={"L1H0": "blocks.1.attn.head.0"}, nbeta=30.0, chains=2, n_draws=10)
    >>> a.effects
    ('L1H0',)
    >>> from analyses.scrubbing import MLP, Head, Hypothesis
    >>> node_components(Hypothesis([MLP(1, inputs=[Head(1, 0)])]))
    {'MLP1': 'blocks.1.mlp.*', 'L1H0': 'blocks.1.attn.head.0'}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial
from typing import Any

from analyses._base import Params
from interp.checks import bad_value, check_number
from interp.degradations import ComponentLLCs, TemperedPosterior, estimate_component_llcs, head_pattern

__all__ = ["LLC", "estimate_node_llcs", "node_components"]

#: the row of :func:`estimate_node_llcs` for every node of the hypothesis together
ALL_NODES = "all nodes"


def node_components(hypothesis: Any) -> dict[str, Any]:
    """``{label: restrict}`` for the weights of every node a causal-scrubbing hypothesis claims, in
    the order :meth:`~analyses.scrubbing.Hypothesis.nodes` walks them: ``"L{l}H{h}"`` a head's slice
    (its Q/K/V rows and O columns), ``"MLP{l}"`` the block's MLP weights, ``"embed"`` / ``"pos_embed"``
    the embeddings. A node claimed twice (read through two paths) appears once."""
    nodes = getattr(hypothesis, "nodes", None)
    if not callable(nodes):
        raise bad_value("node_components", "hypothesis", hypothesis, "a causal-scrubbing Hypothesis (with nodes())",
                        "Build one with analyses.scrubbing.Hypothesis([...]), or give restrict patterns to "
                        "interp.degradations.estimate_component_llcs directly.")
    out: dict[str, Any] = {}
    for node in nodes():
        summands = getattr(node, "summands", None)
        for s in (summands() if callable(summands) else ()):
            if s[0] == "head":
                out.setdefault(f"L{s[1]}H{s[2]}", head_pattern(s[1], s[2]))
            elif s[0] == "mlp":
                out.setdefault(f"MLP{s[1]}", f"blocks.{s[1]}.mlp.*")
            elif s[0] in ("embed", "pos_embed"):
                out.setdefault(s[0], s[0])
            else:
                raise bad_value("node_components", "node", node, "a Head, MLP, Embed or PosEmbed node",
                                "Weights of other nodes have no restrict pattern; give them to "
                                "estimate_component_llcs as a glob or a mask.")
    if not out:
        raise bad_value("node_components", "hypothesis", hypothesis, "a hypothesis that claims at least one node",
                        "Hypothesis([]) claims nothing, so it has no weights to sample.")
    return out


def estimate_node_llcs(model: Any, target: Any, hypothesis: Any, level: Any = None, *, each: bool = True,
                       **kwargs: Any) -> ComponentLLCs:
    """Weight-restricted λ̂ of a hypothesis's nodes: the row ``"all nodes"`` samples every node's
    weights together (the rest at w0), and with ``each`` every node alone too (rows named as in
    :func:`node_components`). ``level`` and ``kwargs`` are
    :func:`~interp.degradations.estimate_component_llcs`'s (``nbeta``, ``localization``, ``lr``,
    ``chains``, ...); at the hypothesis's dissolution point use its ``nbeta``.

    Example::

        est = estimate_node_llcs(model, task, hypothesis, nbeta=dissolution.nbeta, localization=100.0)
        est["all nodes"].mean, est["L1H0"].interval
    """
    comps = node_components(hypothesis)
    table = {ALL_NODES: list(comps.values())}
    if each:
        table.update(comps)
    return estimate_component_llcs(model, target, level, components=table, **kwargs)


def _check_components(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, Mapping) or not value or not all(isinstance(k, str) and k for k in value):
        raise bad_value(owner, name, value, "a non-empty mapping {name: restrict}",
                        "Use e.g. components={'L1H0': 'blocks.1.attn.head.0', 'mlp0': 'blocks.0.mlp.*'}.")


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

    The task's loss is the objective. Parameters are checked by :meth:`setup` (``param_constraints``,
    then the sampler settings by :class:`~interp.degradations.TemperedPosterior` itself), which also
    checks the components against the model (a typo fails before any work); nothing is fitted.
    """

    collaterals = ()
    param_constraints = {
        "components": _check_components,
        "nbeta": partial(check_number, none_ok=True, fix="Use e.g. nbeta=100.0, or level=LossIncrease(0.05)."),
    }

    def __init__(self, components: Mapping[str, Any], *, nbeta: float | None = 100.0, level: Any = None,
                 localization: float = 100.0, lr: float | None = None, chains: int = 4, n_draws: int = 100,
                 burnin: int = 100, batch_size: int = 32, seed: int = 0, sampler: str = "sgld",
                 name: str = "llc") -> None:
        self.components, self.nbeta, self.level, self.localization = components, nbeta, level, localization
        self.lr, self.chains, self.n_draws, self.burnin = lr, chains, n_draws, burnin
        self.batch_size, self.seed, self.sampler, self.name = batch_size, seed, sampler, name

    @property
    def effects(self) -> tuple[str, ...]:
        """One effect per component: its λ̂."""
        return tuple(self.components) if isinstance(self.components, Mapping) else ()

    def _sampler_kwargs(self) -> dict[str, Any]:
        return dict(nbeta=self.nbeta, localization=self.localization, lr=self.lr, chains=self.chains,
                    n_draws=self.n_draws, burnin=self.burnin, batch_size=self.batch_size, seed=self.seed,
                    sampler=self.sampler, progress=False)

    def validate_params(self) -> None:
        """:attr:`param_constraints`, a level or ``nbeta``, and every sampler setting (checked by the sampler)."""
        super().validate_params()
        if self.nbeta is None and self.level is None:
            raise bad_value("LLC", "nbeta", self.nbeta, "a number > 0 when no level is given",
                            "Use e.g. nbeta=100.0, or level=LossIncrease(0.05).")
        TemperedPosterior(**self._sampler_kwargs())

    def setup(self, model: Any, task: Any) -> None:
        self.validate_params()
        for restrict in self.components.values():
            TemperedPosterior(**self._sampler_kwargs(), restrict=restrict).check(model)

    def __call__(self, model: Any, task: Any) -> dict[str, float]:
        table = estimate_component_llcs(model, task, self.level, components=dict(self.components),
                                        **self._sampler_kwargs())
        out: dict[str, float] = {}
        for comp in self.components:
            row = table[comp]
            out[comp] = row.mean
            out[f"{comp}_stderr"] = row.stderr if math.isfinite(row.stderr) else math.nan
        return out
