"""recipes/lib/methods.sh prints a method's lines through sspo_verl.tools.method_lines, with the recipes'
temperature knobs (TAU_POS, TAU_NEG, TAU_FROM_CLIP) applied the way the docs state."""

import subprocess
from pathlib import Path

import pytest

from sspo_verl.loss.methods import METHODS, hydra_overrides

METHODS_SH = Path(__file__).resolve().parents[2] / "recipes" / "lib" / "methods.sh"
ACTOR = "actor_rollout_ref.actor."


@pytest.mark.parametrize("method", list(METHODS))
def test_the_recipes_print_the_tables_lines(method):
    out = _shell(method)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == hydra_overrides(method)


def _shell(method: str, **env):
    import os
    import sys

    return subprocess.run(["bash", "-c", f"source {METHODS_SH} && method_overrides {method}"], capture_output=True,
                          text=True, env={**{k: v for k, v in os.environ.items() if not k.startswith("TAU_")},
                                          "PYTHON": sys.executable, **env})


@pytest.mark.parametrize("method, gate", [("sspo", "arctan"), ("sspo_erf", "erf"), ("sspo_softsign", "softsign"),
                                          ("sapo", "sapo")])
def test_tau_from_clip_gives_the_calibrated_temperatures_of_the_methods_gate(method, gate):
    from sspo_verl.tools.calibrate import taus_from_clip

    out = _shell(method, TAU_FROM_CLIP="0.2 0.28")
    assert out.returncode == 0, out.stderr
    lines = dict(line.split("=", 1) for line in out.stdout.split())
    tau_pos, tau_neg = taus_from_clip(gate, 0.2, 0.28)
    assert float(lines[ACTOR + "tau_pos"]) == pytest.approx(tau_pos, rel=1e-5)
    assert float(lines[ACTOR + "tau_neg"]) == pytest.approx(tau_neg, rel=1e-5)
    assert lines[ACTOR + "policy_loss.loss_mode"] == METHODS[method]["loss_mode"]


def test_tau_from_clip_conflicts_and_bad_pairs_fail_with_nothing_on_stdout():
    out = _shell("sspo", TAU_FROM_CLIP="0.2 0.28", TAU_POS="2")
    assert out.returncode != 0 and out.stdout == ""  # run_recipe stops on an empty loss block
    assert 'TAU_FROM_CLIP="0.2 0.28" conflicts with TAU_POS="2"' in out.stderr
    out = _shell("sspo", TAU_FROM_CLIP="0.2 0.28", TAU_NEG="2")
    assert out.returncode != 0 and out.stdout == "" and 'TAU_NEG="2"' in out.stderr
    out = _shell("sspo", TAU_FROM_CLIP="0.2")
    assert out.returncode != 0 and out.stdout == "" and "give two numbers" in out.stderr
    out = _shell("sspo", TAU_FROM_CLIP="0.2 1.5x")
    assert out.returncode != 0 and out.stdout == "" and "1.5x" in out.stderr
    out = _shell("sspo", TAU_FROM_CLIP="1.2 0.2")  # the lower edge 1 - 1.2 is not a ratio
    assert out.returncode != 0 and out.stdout == ""
    assert 'TAU_FROM_CLIP="1.2 0.2": clip_low=1.2: the lower edge 1 - clip_low must stay above 0' in out.stderr
    out = _shell("ppo")
    assert out.returncode != 0 and out.stdout == "" and "unknown method 'ppo'; choose from grpo, " in out.stderr


def test_explicit_temperatures_and_clip_methods():
    out = _shell("sspo", TAU_NEG="2.0")
    assert ACTOR + "tau_pos=1.0" in out.stdout and ACTOR + "tau_neg=2.0" in out.stdout
    # temperatures do not apply to the clip methods: a shared TAU_FROM_CLIP leaves them as they are
    assert _shell("grpo_dapo", TAU_FROM_CLIP="0.2 0.28").stdout == _shell("grpo_dapo").stdout
    ignored = _shell("grpo_dapo", TAU_POS="2")  # ... and TAU_POS / TAU_NEG too, saying so
    assert ignored.returncode == 0 and ignored.stdout == _shell("grpo_dapo").stdout
    assert "warning: TAU_POS / TAU_NEG are ignored: grpo_dapo has no temperature" in ignored.stderr
    assert "ignored" not in _shell("grpo_dapo", TAU_FROM_CLIP="0.2 0.28").stderr


@pytest.mark.slow
def test_recipe_dry_run_with_tau_from_clip_and_a_hydra_override_that_wins():
    import os
    import sys

    root = METHODS_SH.parents[2]
    run = lambda *args: subprocess.run(  # noqa: E731
        ["bash", "recipes/gsm8k_qwen2.5_0.5b.sh", "sspo", *args], cwd=root, capture_output=True, text=True,
        timeout=300, env={**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable, "TAU_FROM_CLIP": "0.2 0.28"})
    out = run()
    assert out.returncode == 0, out.stderr[-2000:]
    assert "loss_mode=sspo registered; loss_agg_mode=seq-mean-token-mean; tau_pos=4.05088 tau_neg=4.48142" in out.stdout
    out = run("actor_rollout_ref.actor.tau_neg=6.0")  # verl's composed config: the user's override wins
    assert out.returncode == 0, out.stderr[-2000:]
    assert "; tau_pos=4.05088 tau_neg=6.0\n" in out.stdout
