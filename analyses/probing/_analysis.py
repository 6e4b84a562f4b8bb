"""Probe sweep analyses: ``FrozenProbe`` (fitted once on w0, representational drift) and ``RefitProbe``.

One-shot counterpart: :func:`analyses.probing.probe`.

Example::

    >>> from analyses.probing import FrozenProbe
    >>> FrozenProbe(label="label", positions=(-1,)).effects
    ('accuracy',)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from analyses._base import Params
from analyses.probing._config import DEFAULT_LAMS, ProbeConfig
from analyses.probing._data import ProbeData, probe_data
from analyses.probing._fit import RidgeProbe, fit_ridge
from analyses.probing._labels import LabelSpec
from interp.checks import check_choice, check_is_fitted

__all__ = ["FrozenProbe", "RefitProbe"]


_FIELDS = ("label", "positions", "layers", "group", "control_type", "lams", "folds", "eval_rows", "batch_size",
           "seed", "progress")


class _ProbeAnalysis(Params):
    effects: tuple[str, ...] = ("accuracy",)
    collaterals: tuple[str, ...] = ()
    #: the ``name`` when none is given
    default_name = "probe"

    def __init__(self, *, label: LabelSpec = "label", positions: tuple[str | int, ...] | None = None,
                 layers: tuple[int, ...] | None = None, group: str | None = None,
                 control_type: LabelSpec | None = "token", lams: tuple[float, ...] = DEFAULT_LAMS, folds: int = 5,
                 eval_rows: int | None = None, batch_size: int = 64, seed: int = 0, progress: bool = False,
                 site: str | None = None, name: str | None = None):
        self.label, self.positions, self.layers, self.group = label, positions, layers, group
        self.control_type, self.lams, self.folds, self.eval_rows = control_type, lams, folds, eval_rows
        self.batch_size, self.seed, self.progress, self.site = batch_size, seed, progress, site
        self.name = name if name is not None else self.default_name

    def validate_params(self) -> None:
        """The probe's parameters are :class:`ProbeConfig`'s fields, checked by it (the one declaration
        of their constraints, shared with :func:`probe`); the validated config is ``probe_config_``."""
        self.probe_config_ = ProbeConfig(**{k: getattr(self, k) for k in _FIELDS})

    def _metrics(self, acc: Tensor, sites: list[str], labels: Tensor | None = None) -> dict[str, float]:
        out = {f"acc_{s}": float(a) for s, a in zip(sites, acc.tolist())}
        out["accuracy"] = out[f"acc_{self.site_}"]
        out["acc_mean"] = float(acc.mean())
        if labels is not None and labels.numel():  # chance: the majority class's share of the test labels
            out["chance"] = float(torch.unique(labels, return_counts=True)[1].max()) / labels.numel()
        return out

    def _fit(self, model: Any, task: Any) -> tuple[RidgeProbe, ProbeData]:
        cfg = self.probe_config_
        train = probe_data(model, task, cfg, "train")
        ridge = fit_ridge(
            train.x, train.y, lams=cfg.lams, groups=train.groups, folds=cfg.folds,
            n_classes=max(train.n_classes, 2), seed=cfg.seed,
        )
        return ridge, train

    def _choose_site(self, ridge: RidgeProbe, model: Any, task: Any, sites: list[str]) -> str:
        """The site of the effect ``accuracy``: ``site`` if given, else the best on clean weights."""
        if self.site is None:
            test = probe_data(model, task, self.probe_config_, "test")
            return sites[int(ridge.accuracy(test.x, test.y).argmax())]
        check_choice(type(self).__name__, "site", self.site, sites,
                     fix="Name a probed site, 'L{layer}@{position}', or None for the best on clean weights.")
        return self.site


class FrozenProbe(_ProbeAnalysis):
    """Probes fitted once on the clean weights, evaluated on each draw (representational drift).

    Arguments: the :class:`ProbeConfig` fields as keywords (checked by :meth:`setup`), ``site`` (the
    site of the effect; ``None``: the best on clean weights), ``name``. Fitted by :meth:`setup`:
    ``probe_config_`` (the validated :class:`ProbeConfig`), ``probe_`` (the ridge probes), ``sites_``
    and ``site_`` (the chosen site; ``site`` itself is never changed).

    Metrics: ``acc_<site>`` per site, ``acc_mean``, the effect ``accuracy`` at ``site_``, and ``chance`` (the
    majority class's share of the test labels: the accuracy a probe has with no information, the floor
    its verdicts are measured from).
    One-shot counterpart: :func:`probe`.
    """

    default_name = "frozen_probe"

    def setup(self, model: Any, task: Any) -> None:
        self.validate_params()
        self.probe_, train = self._fit(model, task)
        self.sites_ = train.sites
        self.site_ = self._choose_site(self.probe_, model, task, self.sites_)

    def __call__(self, model: Any, task: Any) -> dict[str, float]:
        check_is_fitted(self, "probe_", "site_")
        test = probe_data(model, task, self.probe_config_, "test")
        return self._metrics(self.probe_.accuracy(test.x, test.y), test.sites, test.y)


class RefitProbe(_ProbeAnalysis):
    """Probes refitted (λ re-chosen) on each draw: is the information still linearly there?

    Arguments and metrics as :class:`FrozenProbe`; fitted by :meth:`setup`: ``sites_``, ``site_``.
    """

    default_name = "refit_probe"

    def setup(self, model: Any, task: Any) -> None:
        self.validate_params()
        ridge, train = self._fit(model, task)
        self.sites_ = train.sites
        self.site_ = self._choose_site(ridge, model, task, self.sites_)

    def __call__(self, model: Any, task: Any) -> dict[str, float]:
        check_is_fitted(self, "site_")
        ridge, _ = self._fit(model, task)
        test = probe_data(model, task, self.probe_config_, "test")
        return self._metrics(ridge.accuracy(test.x, test.y), test.sites, test.y)
