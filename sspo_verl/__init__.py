"""Soft Sequence Policy Optimization (arXiv 2602.19327) as a verl plugin.

The loss modes `sspo`, `sspo_<gate>` and `sspo_sapo` are registered in verl's POLICY_LOSS_REGISTRY by `sspo_verl.loss.plugin`, which
verl's `verl.plugins` entry point imports in every process at `import verl`. `import sspo_verl` also registers them
when verl is already loaded (as with `actor_rollout_ref.model.external_lib=sspo_verl`).

Importing the package itself is light (no torch, no verl), so `sspo_verl.rewards` and `sspo_verl.data` cost a
reward worker nothing; the public names below load the plugin on first use, and always reflect what is registered
(`LOSS_MODES` is read from verl's registry on each access, `GATES` is the live table). Their user errors are
`sspo_verl.errors.SSPOError`s.
"""

from __future__ import annotations

import importlib
import sys

# One source each: setup.py reads these two lines (without importing the package), the plugin and preflight the rest.
__version__ = "0.1.0"
VERL_RANGE = ">=0.9.1,<0.10"  # the verl versions sspo-verl is tested with
__all__ = ["GATES", "Gate", "check_gate", "get_gate", "sspo_token_loss", "check_actor_config", "register_gate",
           "LOSS_MODES"]

DEPENDENCY_HINT = ("install torch first (your cluster's CUDA build, or `pip install torch==2.13.0` for CPU), then "
                   f"`pip install 'verl{VERL_RANGE}'`, in the Python that runs verl")


def missing_dependency(exc: ModuleNotFoundError) -> ModuleNotFoundError:
    """A ModuleNotFoundError for torch / verl that says what to install (other names pass through unchanged)."""
    root = (exc.name or "").split(".")[0]
    if root not in ("torch", "verl"):
        return exc
    return ModuleNotFoundError(f"sspo_verl's loss modes need {root}, which is not installed: {DEPENDENCY_HINT}.",
                               name=exc.name)


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module 'sspo_verl' has no attribute {name!r}")
    try:
        plugin = importlib.import_module(".loss.plugin", __name__)
    except ModuleNotFoundError as exc:
        raise missing_dependency(exc) from exc
    return getattr(plugin, name)


if "verl" in sys.modules:  # verl is loaded (external_lib, or verl's own entry point): register now
    from .loss import plugin  # noqa: F401
