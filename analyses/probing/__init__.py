"""Linear probing of the residual stream, with controls, baselines, causal checks and sweep analyses.

What a probe result needs before it means anything (Hewitt & Liang 2019; Belinkov 2022, "Probing
classifiers: promises, shortcomings, and advances"):

* **Held-out groups.** Probes are fitted on the task's ``train`` split and scored on ``test``; for the
  MiniLM organism those hold disjoint nouns, so accuracy is on unseen *words*. The regularisation
  strength λ is chosen by K-fold cross-validation over *groups* (``group`` column) inside ``train``.
  Accuracy comes with a 95% Wilson score interval (Wilson 1927):
  ``(p̂ + z²/2n ± z·sqrt(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)``.
* **Control task and selectivity** (Hewitt & Liang 2019, arXiv:1909.03368): every input *type* (a word
  form, a token) gets a random label drawn from the task's label distribution; the same probe family
  is fitted to the task and to the control on one random row split where types recur (train and test
  splits pooled: a control label can only be memorised for a type seen in training, so this is not the
  held-out-groups split of ``accuracy``). Selectivity depends on probe capacity: λ is chosen per site
  by K-fold cross-validation of the selectivity inside the split's training rows, and at that one λ
  (``selectivity_lam``), on the same held-out rows, ``selectivity = selectivity_task −
  selectivity_control``, with a 95% cluster-bootstrap interval over control types (the table shows all
  three, so the difference can be checked; ``selectivity_by_lam`` gives the whole grid). A warning is
  logged when the number of types is not much larger than d_model (the control can be memorised).
* **Baselines**: the majority class, a *position-only* probe (one-hot of the probed position: catches
  templates that put the label at a fixed position), and the embedding layer (layer 0 of the curve).
* **Directions**: cos(ridge direction, difference-of-means direction) per site (binary labels).

Probe families. Sweeps over layers × positions × weight draws use closed forms batched over sites in
torch: ridge regression onto one-hot labels, ``W = (AᵀA + λn·P)⁻¹AᵀY`` with ``A`` the standardised
activations plus a ones column (``P`` leaves the intercept unpenalised), solved by Cholesky (batched
``torch.linalg.solve`` on CPU is unreliable, pytorch#142815); cross-validating λ costs one Gram matrix,
since each fold's training Gram is ``G − G_k``. Difference-of-means (nearest class mean) is cheaper
still. For the few sites that matter, :func:`fit_logistic` fits scikit-learn's ``LogisticRegression``
with C chosen on held-out groups (threads limited with ``threadpoolctl``: BLAS oversubscription on a
busy box costs 10×). All probes are multi-class.

Causal check (:func:`causal_check`): a probe can read a property the model never uses (Ravichander et
al. 2021; Elazar et al. 2021), so the concept is erased at a site with LEACE (Belrose et al. 2023,
arXiv:2306.03819; ``concept-erasure`` package) or by mean-projection, against random subspaces of the
same rank, and the activation is steered along the difference-of-means direction (Turner et al.
2023) against random directions of equal norm, while a *behaviour* the property should drive is
measured: next-token loss for a causal model (:func:`loss_behaviour`), the sentence embedding's
readout of the property for MiniLM (:class:`SentenceReadout`).

Sweep analyses: :class:`FrozenProbe` (fitted once on the clean weights, evaluated at each draw:
representational drift) and :class:`RefitProbe` (refitted at each draw: is the information still
there). Layer ``l < n_layers`` is ``resid_pre(l)`` (layer 0 = the embedding), layer ``n_layers`` is the
final ``resid_post``. In post-LN models (MiniLM) these are LayerNorm outputs, which is what the next
block reads. Row labels are read at ``positions``; on padded rows the default is ``"last"`` (:data:`LAST_TOKEN`),
each row's last real token, so they are never read at [PAD] (``-1`` would be, with a warning).

The package, one job per module: ``_labels`` (label specifications), ``_config`` (:class:`ProbeConfig`),
``_data`` (capturing sites), ``_fit`` (ridge and class-mean fitters, statistics), ``_logistic``
(logistic fitters), ``_report`` (:func:`probe`, :class:`ProbeReport`, :func:`plot_probe`),
``_causal`` (erasure and steering checks), ``_analysis`` (:class:`FrozenProbe`, :class:`RefitProbe`).

Example (skipped as a docstring example: fitting the probes with their λ search and control task
takes over ten seconds; ``tests/analyses/test_probing.py`` probes MiniLM the same way)::

    >>> import interp
    >>> from analyses.probing import ProbeConfig, probe, token_at
    >>> model, task = interp.organisms.load("minilm")                      # doctest: +SKIP
    >>> cfg = ProbeConfig(label="label", positions=("sep_pos",), group="noun",
    ...                   control_type=token_at("noun_pos"))
    >>> report = probe(model, task, cfg)                                    # doctest: +SKIP
    >>> report.table()[["site", "accuracy", "selectivity_task", "selectivity_control", "selectivity"]]  # doctest: +SKIP
"""

from __future__ import annotations

import hooks  # noqa: F401  (``analyses.probing.hooks`` stays reachable, as before the split)
from analyses.probing._analysis import FrozenProbe, RefitProbe
from analyses.probing._causal import Behaviour, CausalCheck, SentenceReadout, causal_check, loss_behaviour
from analyses.probing._config import DEFAULT_LAMS, LAST_TOKEN, ProbeConfig
from analyses.probing._data import ProbeData, layer_point, probe_data
from analyses.probing._fit import (
    MeanProbe,
    RidgeProbe,
    _folds,
    _ridge_fixed,
    cluster_bootstrap_interval,
    control_labels,
    fit_diffmeans,
    fit_ridge,
    wilson_interval,
)
from analyses.probing._labels import LabelSpec, fourier_component, occurred_before, principal_split, token_at, token_class
from analyses.probing._logistic import BatchedLogisticProbe, LogisticProbe, fit_logistic, fit_logistic_batched
from analyses.probing._report import ProbeReport, plot_probe, probe, report_from_data

__all__ = [
    "ProbeConfig",
    "ProbeData",
    "ProbeReport",
    "RidgeProbe",
    "MeanProbe",
    "LogisticProbe",
    "BatchedLogisticProbe",
    "fit_logistic_batched",
    "CausalCheck",
    "SentenceReadout",
    "FrozenProbe",
    "RefitProbe",
    "token_at",
    "occurred_before",
    "fourier_component",
    "token_class",
    "principal_split",
    "probe_data",
    "probe",
    "report_from_data",
    "fit_ridge",
    "fit_diffmeans",
    "fit_logistic",
    "wilson_interval",
    "cluster_bootstrap_interval",
    "control_labels",
    "loss_behaviour",
    "causal_check",
    "plot_probe",
    "layer_point",
    "DEFAULT_LAMS",
    "LAST_TOKEN",
    "LabelSpec",
    "Behaviour",
]
