"""ufm: exact optima, simulations and metrics for the unconstrained features model.

The public API is re-exported here and imported lazily, so ``import ufm`` is
cheap: sympy, cvxpy, numba and matplotlib load only when a function needs them.

Main entry points
-----------------
UFMProblem, LayerPeeledProblem   problem data (:mod:`ufm.problems`)
AnchoredUFM, InputCoupledUFM     semantic-aware models M1, M2 (THEORY §8.1-8.2)
solve                            ``solve(problem, method="closed_form")`` -> Solution
simulate                         ``simulate(problem, steps, lr, ...)`` -> Trajectory (GD or gradient flow)
dynamics                         theory curves on the same time grid -> TheoryCurve (modes, semantic gap, peak)
sweep                            ``sweep(task, grid, seeds=..., backend="loky"|"threads"|"dask"|"sequential")``
                                 -> SweepResult: grids x seeds on joblib or Dask, cached and resumable
phase_diagram                    structure before collapse over sigma, attribute strength, weight decay, setting
                                 -> SweepResult (theory peak and transition, exact end state; ufm.phase)
closed_form                      analytic optima and thresholds (THEORY §1-3)
metrics                          NC1-NC4, CDNV, ETF distance, semantic scores, effective rank
settings                         synthetic settings with latent factors (factorial, hierarchy, ntp_contexts)
fit                              ``fit(run_or_grams, setting=...)`` -> FitResult: static ETF + attribute decomposition,
                                 input-coupled (M2) and anchored (M1) fits to observed Gram trajectories (ufm.bridge)
bridge                           Run (the bridge format), Exporter (record from a training loop), load_run,
                                 reference networks (torch)
symbolic                         sympy expressions behind every closed form
losses                           loss objects, objectives and gradients (registry: loss_registry)
Status, UFMError                 every result has ``success``, ``status`` (a Status) and ``message``; ``throw=True``
NoMethodApplies, NotConverged    raises these (UFMError subclasses) instead of returning a failed result
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_ATTRS = {
    "UFMProblem": ("ufm.problems", "UFMProblem"),
    "LayerPeeledProblem": ("ufm.problems", "LayerPeeledProblem"),
    "Solution": ("ufm.results", "Solution"),
    "load": ("ufm.results", "load"),
    "AnchoredUFM": ("ufm.problems", "AnchoredUFM"),
    "InputCoupledUFM": ("ufm.problems", "InputCoupledUFM"),
    "Trajectory": ("ufm.results", "Trajectory"),
    "TheoryCurve": ("ufm.results", "TheoryCurve"),
    "simulate": ("ufm._simulate", "simulate"),
    "solve": ("ufm._solve", "solve"),
    "sweep": ("ufm._sweep", "sweep"),
    "SweepResult": ("ufm.results", "SweepResult"),
    "NoMethodApplies": ("ufm.results", "NoMethodApplies"),
    "NotConverged": ("ufm.results", "NotConverged"),
    "UFMError": ("ufm.results", "UFMError"),
    "Status": ("ufm.results", "Status"),
    "Setting": ("ufm.settings", "Setting"),
    "factorial": ("ufm.settings", "factorial"),
    "hierarchy": ("ufm.settings", "hierarchy"),
    "ntp_contexts": ("ufm.settings", "ntp_contexts"),
    "phase_diagram": ("ufm.phase", "phase_diagram"),
    "fit": ("ufm.bridge.fitting", "fit"),
    "FitResult": ("ufm.results", "FitResult"),
    "Run": ("ufm.results", "Run"),
}
_MODULES = ("bridge", "closed_form", "dynamics", "label_smoothing", "loss_registry", "losses", "metrics", "phase", "plotting", "problems", "results", "settings", "symbolic")

__all__ = sorted(set(_ATTRS) | set(_MODULES))


def __getattr__(name: str):
    if name in _ATTRS:
        module, attr = _ATTRS[name]
        value = getattr(importlib.import_module(module), attr)
    elif name in _MODULES:
        value = importlib.import_module(f"ufm.{name}")
    else:
        raise AttributeError(f"module 'ufm' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return __all__
