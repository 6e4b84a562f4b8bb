"""interp: mechanistic interpretability on trained and naturally degraded weights.

Every analysis runs on the trained weights and on degraded copies: samples of the tempered local
Bayesian posterior (SGLD at a grid of temperatures), plus Gaussian weight noise, activation noise and
earlier checkpoints as baselines. Real mechanisms persist over a range of temperatures; spurious ones
dissolve.

Importing ``interp`` is cheap: TransformerLens, torch-heavy modules and the organisms load on first
use of the names below.

Example::

    >>> import interp
    >>> model, task = interp.organisms.load("induction")      # doctest: +SKIP
    >>> task.evaluate(model)["accuracy"] > 0.9                  # doctest: +SKIP
    True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY = {
    "Task": "interp.tasks",
    "load_model": "interp.models",
    "organisms": "interp.organisms",
    "Analysis": "interp.analysis",
    "sweep": "interp.sweep",
    "run_sweep": "interp.sweep",
    "LocalExecutor": "interp.sweep",
    "RayExecutor": "interp.sweep",
    "ModelRecipe": "interp.sweep",
    "SweepJobsFailed": "interp.sweep",
    "Results": "interp.results",
    "verdicts": "interp.verdicts",
    "dissolution": "interp.dissolve",
    "Dissolution": "interp.dissolve",
    "DissolutionComparison": "interp.dissolve",
    "compare_dissolutions": "interp.dissolve",
    "objectives": "interp.objectives",
    "Objective": "interp.objectives",
    "Behavioural": "interp.objectives",
    "CorpusLoss": "interp.objectives",
    "DivergenceMeter": "interp.objectives",
    "checks": "interp.checks",
    "degradations": "interp.degradations",
    "TemperedPosterior": "interp.degradations",
    "WeightNoise": "interp.degradations",
    "ActivationNoise": "interp.degradations",
    "Checkpoints": "interp.degradations",
    "Draw": "interp.degradations",
    "estimate_llc": "interp.degradations",
    "NBeta": "interp.degradations",
    "LossIncrease": "interp.degradations",
}

__all__ = sorted(_LAZY) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from interp import checks, objectives, organisms, sweep, verdicts
    from interp.models import load_model
    from interp.analysis import Analysis
    from interp.objectives import Behavioural, CorpusLoss, DivergenceMeter, Objective
    from interp.results import Results
    from interp.sweep import LocalExecutor, ModelRecipe, RayExecutor, SweepJobsFailed, run_sweep
    from interp.tasks import Task


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'interp' has no attribute {name!r}")
    mod = importlib.import_module(module)
    value = mod if module == f"interp.{name}" else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
