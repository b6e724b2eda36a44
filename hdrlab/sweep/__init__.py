"""W&B sweeps for hdrlab: sweep-file validation and macros, the offline agent, the online path.

* :mod:`hdrlab.sweep.config` — load/validate sweep YAML with the ``sweeps`` engine, expand
  ``command:`` macros like ``wandb agent``;
* :mod:`hdrlab.sweep.agent` — :class:`OfflineSweepAgent`, a resumable local agent on
  ``sweeps.next_run`` / ``sweeps.stop_runs``;
* :mod:`hdrlab.sweep.online` — create the sweep on W&B and run standard agents;
* :mod:`hdrlab.sweep.overrides` — trial overrides (``hdrlab sweep FILE -- ARGS``) and
  repository-relative paths in trial commands.

Importing this package does not import torch, wandb or the ``sweeps`` engine.
"""

from hdrlab.sweep.agent import OfflineSweepAgent, SweepLockedError, load_state, read_metric_history
from hdrlab.sweep.config import SweepSpec, expand_command, grid_points, load_sweep, validate_sweep_config

__all__ = [
    "OfflineSweepAgent",
    "SweepLockedError",
    "SweepSpec",
    "expand_command",
    "grid_points",
    "load_state",
    "load_sweep",
    "read_metric_history",
    "validate_sweep_config",
]
