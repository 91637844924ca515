"""Soft Sequence Policy Optimization (arXiv 2602.19327) as a verl plugin.

Importing this package (verl does so through the `verl.plugins` entry point at every `import verl`)
registers the loss modes `sspo` and `sspo_<gate>` in verl's POLICY_LOSS_REGISTRY.
"""

from .gates import GATES, Gate, check_gate, get_gate
from .objective import sspo_token_loss
from .plugin import check_actor_config, register_gate, register_loss_modes

__version__ = "0.1.0"
__all__ = ["GATES", "Gate", "check_gate", "get_gate", "sspo_token_loss", "check_actor_config", "register_gate"]

LOSS_MODES = register_loss_modes()
