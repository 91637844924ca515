"""sspo_verl.methods is the Python twin of recipes/lib/methods.sh: the two tables must agree."""

import subprocess
from pathlib import Path

import pytest

from sspo_verl.methods import METHODS, actor_settings

METHODS_SH = Path(__file__).resolve().parents[1] / "recipes" / "lib" / "methods.sh"
ACTOR = "actor_rollout_ref.actor."


def _shell_settings(method: str) -> dict:
    out = subprocess.run(["bash", "-c", f"source {METHODS_SH} && method_overrides {method}"], check=True,
                         capture_output=True, text=True).stdout.split()
    settings = {}
    for line in out:
        key, value = line.split("=", 1)
        if key.startswith(ACTOR):
            key = key.removeprefix(ACTOR).removeprefix("policy_loss.")
            settings[key] = value if key in ("loss_mode", "loss_agg_mode") else float(value)
    return settings


@pytest.mark.parametrize("method", list(METHODS))
def test_python_table_equals_the_recipes_table(method):
    assert _shell_settings(method) == METHODS[method]


def test_actor_settings_applies_temperatures_only_to_soft_methods():
    assert actor_settings("sspo_erf", tau_pos=0.5)["tau_pos"] == 0.5
    with pytest.raises(ValueError, match="temperatures apply to sapo and sspo"):
        actor_settings("grpo_dapo", tau_pos=0.5)
    with pytest.raises(ValueError, match="unknown method 'ppo'"):
        actor_settings("ppo")
