"""A gate of your own, registered as verl loss mode `sspo_algebraic` when this module is imported.

verl's workers import it when the launch says (with this folder on every node's PYTHONPATH)
    actor_rollout_ref.model.external_lib=my_gates
    actor_rollout_ref.actor.policy_loss.loss_mode=sspo_algebraic
"""

import torch

import sspo_verl

# In log space, x = log r:  log g = x / sqrt(1 + tau^2 x^2),  w = d log g / dx = (1 + tau^2 x^2)^(-3/2).
# g > 0, g(1) = 1 and g'(1) = 1 (log g(0) = 0, w(0) = 1), w is a bell in x, and |log g| < 1 / tau bounds the
# sequence weight. register_gate checks all of that numerically and raises if one fails.
LOSS_MODE = sspo_verl.register_gate(
    "algebraic",
    log_g=lambda x, tau: x / torch.sqrt(1 + (tau * x) ** 2),
    weight=lambda x, tau: (1 + (tau * x) ** 2) ** -1.5,
    bound=lambda tau: 1 / tau,
    formula="log g = x / sqrt(1 + tau^2 x^2);  w = (1 + tau^2 x^2)^(-3/2)",
)
