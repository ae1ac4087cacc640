"""Bridge to real networks: record Gram trajectories, load them, fit UFM parameters (THEORY §8.6).

``Exporter`` / ``Run`` / ``load_run`` (torch-free) live in :mod:`ufm.bridge.io`.
"""

from .io import RUN_SCHEMA, Capture, Exporter, Run, load_run, log_steps, save_run

__all__ = ["RUN_SCHEMA", "Capture", "Exporter", "Run", "load_run", "log_steps", "save_run"]
