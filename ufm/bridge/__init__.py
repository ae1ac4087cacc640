"""Bridge to real networks: record Gram trajectories, load them, fit UFM parameters (THEORY §8.6).

io.py        the bridge format (:class:`~ufm.results.Run`), ``Exporter`` (torch-free recorder with a
             forward-hook capture), ``load_run`` / ``save_run`` (npz; safetensors and HDF5 optional)
fitting.py   ``fit`` -> :class:`~ufm.results.FitResult`: static ETF + attribute decomposition, the
             input-coupled UFMs (M2, M2-H) and the anchored UFM (M1), side by side; judging, events
estimate.py  least squares of M2 / M2-H on the records, the parametric bootstrap, intervals
clock.py     how observed steps map to model time (known, declared, free)
m2.py        M2 / M2-H as models of a Gram trajectory: pattern and dense engines, flow and GD
report.py    goodness of fit, acceptance thresholds, events, the verdict and the table
networks.py  ``train_network``: reference MLP / causal transformer on the synthetic settings (torch,
             imported only when a network is trained)
"""

from .fitting import fit
from .io import RUN_SCHEMA, Capture, Exporter, Run, load_run, log_steps, save_run
from .networks import gap_summary, train_network

__all__ = ["RUN_SCHEMA", "Capture", "Exporter", "Run", "fit", "gap_summary", "load_run", "log_steps", "save_run",
           "train_network"]
