"""analyses: interpretability analyses that run on trained and on degraded weights.

Every analysis follows one protocol (DESIGN.md): ``setup(model, task)`` runs once on the clean
weights (fit a probe, compute ablation means, train a sparse MLP) and ``__call__(model, task)``
returns ``dict[str, float]`` at the baseline and at every draw of a degradation, reporting where it
makes sense both its *effect* and its *collateral*. Analyses intervene only through ``hooks``.

Importing ``analyses`` is cheap; each analysis module loads its heavy dependencies on first use.
"""

__all__: list[str] = []
