"""recipes/lib/methods.sh prints a method's lines through sspo_verl.tools.method_lines, with the recipes'
temperature knobs (TAU_POS, TAU_NEG, TAU_FROM_CLIP) applied the way the docs state."""

import subprocess
from pathlib import Path

import pytest

from sspo_verl.loss.methods import METHODS, hydra_overrides

from tests.helpers import assert_one_error_line

METHODS_SH = Path(__file__).resolve().parents[2] / "recipes" / "lib" / "methods.sh"
ACTOR = "actor_rollout_ref.actor."


@pytest.mark.parametrize("method", list(METHODS))
def test_the_recipes_print_the_tables_lines(method):
    out = _shell(method)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == hydra_overrides(method)


def _shell(method: str, **env):
    """`method_overrides <method> [arguments]` as run_recipe calls it, from the repository root: `method` may carry
    the recipe's arguments after it ("sspo key=value")."""
    import os
    import sys

    return subprocess.run(["bash", "-c", f"source {METHODS_SH} && method_overrides {method}"], capture_output=True,
                          text=True, cwd=METHODS_SH.parents[2],
                          env={**{k: v for k, v in os.environ.items() if not k.startswith(("TAU_", "GATE_"))},
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


# ---------------------------------------------------------------------------------------------------
# A gate of the user's own (GATE_MODULE), and TAU_FROM_CLIP for the loss mode the arguments select
# ---------------------------------------------------------------------------------------------------

ROOT = METHODS_SH.parents[2]
MY_GATES = "examples/custom_gate/my_gates.py"  # registers the gate `algebraic`: w = (1 + tau^2 x^2)^(-3/2)
PROG = "python -m sspo_verl.tools.method_lines"


def _algebraic_taus(clip_low: float, clip_high: float) -> tuple[float, float]:
    """By hand: w(x) = (1 + tau^2 x^2)^(-3/2) = 1/2 at tau |x| = sqrt(2^(2/3) - 1), x = log(1 + high), log(1 - low)."""
    import math

    c = math.sqrt(2 ** (2 / 3) - 1)
    return c / math.log1p(clip_high), c / -math.log1p(-clip_low)


def test_the_hand_derived_algebraic_temperatures_are_the_ones_the_issue_quotes():
    assert [round(t, 5) for t in _algebraic_taus(0.2, 0.28)] == [3.10468, 3.43465]


def _lines(out) -> dict:
    assert out.returncode == 0, out.stderr
    return dict(line.split("=", 1) for line in out.stdout.splitlines())


@pytest.mark.slow  # each run imports torch, verl and the plugin (~5 s of CPU)
def test_a_gate_module_makes_its_gate_a_method_calibrated_with_that_gate(tmp_path):
    out = _shell("sspo_algebraic", GATE_MODULE=MY_GATES, TAU_FROM_CLIP="0.2 0.28", PYTHONDONTWRITEBYTECODE="1")
    lines = _lines(out)
    tau_pos, tau_neg = _algebraic_taus(0.2, 0.28)
    assert float(lines[ACTOR + "tau_pos"]) == pytest.approx(tau_pos, rel=1e-5)  # not arctan's 4.05 / 4.48
    assert float(lines[ACTOR + "tau_neg"]) == pytest.approx(tau_neg, rel=1e-5)
    sspo = dict(line.split("=", 1) for line in hydra_overrides("sspo"))
    # the table's sspo row, with the user's loss mode and module (which every verl process then imports)
    assert lines.keys() == sspo.keys()
    assert lines[ACTOR + "policy_loss.loss_mode"] == "sspo_algebraic"
    assert lines["actor_rollout_ref.model.external_lib"] == "my_gates"
    assert lines[ACTOR + "loss_agg_mode"] == sspo[ACTOR + "loss_agg_mode"]


@pytest.mark.slow
def test_tau_from_clip_calibrates_the_gate_the_arguments_select_not_the_methods():
    """issue 20, item 4: method sspo with the arguments' loss_mode=sspo_algebraic got arctan's 4.05 / 4.48."""
    out = _shell("sspo actor_rollout_ref.actor.policy_loss.loss_mode=sspo_algebraic "
                 "actor_rollout_ref.model.external_lib=my_gates", TAU_FROM_CLIP="0.2 0.28",
                 PYTHONPATH=str(ROOT / "examples" / "custom_gate"), PYTHONDONTWRITEBYTECODE="1")
    lines = _lines(out)
    tau_pos, tau_neg = _algebraic_taus(0.2, 0.28)
    assert float(lines[ACTOR + "tau_pos"]) == pytest.approx(tau_pos, rel=1e-5)
    assert float(lines[ACTOR + "tau_neg"]) == pytest.approx(tau_neg, rel=1e-5)
    assert lines[ACTOR + "policy_loss.loss_mode"] == "sspo"  # the arguments come after these lines and win


@pytest.mark.parametrize("method,argument,gate", [
    ("sspo", "+actor_rollout_ref.actor.policy_loss.loss_mode=sspo_erf", "erf"),  # Hydra's add form too
    ("sapo", "actor_rollout_ref.actor.policy_loss.loss_mode=sspo_softsign", "softsign"),
])
def test_tau_from_clip_follows_a_built_in_loss_mode_the_arguments_select(method, argument, gate):
    from sspo_verl.tools.calibrate import taus_from_clip

    lines = _lines(_shell(f"{method} {argument}", TAU_FROM_CLIP="0.2 0.28"))
    tau_pos, tau_neg = taus_from_clip(gate, 0.2, 0.28)
    assert float(lines[ACTOR + "tau_pos"]) == pytest.approx(tau_pos, rel=1e-5)
    assert float(lines[ACTOR + "tau_neg"]) == pytest.approx(tau_neg, rel=1e-5)


def test_a_clip_method_whose_arguments_select_a_soft_gate_gets_that_gates_temperatures():
    from sspo_verl.tools.calibrate import taus_from_clip

    out = _shell("grpo actor_rollout_ref.actor.policy_loss.loss_mode=sapo", TAU_FROM_CLIP="0.2 0.28")
    lines = _lines(out)
    assert lines[ACTOR + "clip_ratio_low"] == "0.2"  # grpo's own lines stay
    assert float(lines[ACTOR + "tau_pos"]) == pytest.approx(taus_from_clip("sapo", 0.2, 0.28)[0], rel=1e-5)


def test_tau_from_clip_refuses_a_loss_mode_it_cannot_calibrate_in_one_line():
    out = _shell("sspo actor_rollout_ref.actor.policy_loss.loss_mode=sspo_algebraic", TAU_FROM_CLIP="0.2 0.28")
    assert_one_error_line(out, PROG, 'TAU_FROM_CLIP="0.2 0.28" for your argument actor_rollout_ref.actor.policy_loss.loss_mode='
                          "sspo_algebraic: Unknown SSPO gate 'algebraic'", "GATE_MODULE=<its .py file>")
    out = _shell("sspo actor_rollout_ref.actor.policy_loss.loss_mode=vanilla", TAU_FROM_CLIP="0.2 0.28")
    assert_one_error_line(out, PROG, "actor_rollout_ref.actor.policy_loss.loss_mode=vanilla selects a loss without temperatures",
                          "unset TAU_FROM_CLIP")


@pytest.mark.parametrize("env,message", [
    ({"GATE_MODULE": "examples/custom_gate/no_such_gates.py"},
     "GATE_MODULE=examples/custom_gate/no_such_gates.py: no such file"),
    ({"GATE_MODULE": "my-gates.py"}, "GATE_MODULE=my-gates.py: no such file"),
    ({"GATE_MODULE": "my gates"}, "GATE_MODULE='my gates' is neither a .py file nor a module name"),
    ({"GATE_MODULE": "no_such_module_ml"}, "GATE_MODULE=no_such_module_ml: importing no_such_module_ml failed "
                                           "(ModuleNotFoundError: No module named 'no_such_module_ml')"),
    ({}, "unknown method 'sspo_algebraic'; choose from grpo, "),
])
def test_a_bad_gate_module_or_a_gate_method_without_one_is_one_line(env, message):
    out = _shell("sspo_algebraic", **env)
    assert_one_error_line(out, PROG, message)
    if not env:
        assert "GATE_MODULE=<its .py file> makes sspo_<gate> a method" in out.stderr


def test_a_gate_module_file_whose_name_is_not_a_module_name_is_refused(tmp_path):
    (tmp_path / "my-gates.py").write_text("raise SystemExit('must not be imported')\n")
    assert_one_error_line(_shell("sspo", GATE_MODULE=str(tmp_path / "my-gates.py")), PROG,
                          "'my-gates' is not a Python module name", "rename it")


@pytest.mark.slow
def test_a_gate_module_that_fails_registers_nothing_or_prints_is_reported_and_never_pollutes_the_lines(tmp_path):
    (tmp_path / "broken_gates.py").write_text(
        "import torch, sspo_verl\n"  # g(1) != 1: register_gate's own check refuses it
        "sspo_verl.register_gate('broken', lambda x, t: x + 1, lambda x, t: torch.ones_like(x), lambda t: 1.0)\n")
    out = _shell("sspo", GATE_MODULE=str(tmp_path / "broken_gates.py"), PYTHONDONTWRITEBYTECODE="1")
    assert_one_error_line(out, PROG, f"GATE_MODULE={tmp_path}/broken_gates.py: importing broken_gates failed (")
    (tmp_path / "empty_gates.py").write_text("print('hello from the module')\n")
    out = _shell("sspo", GATE_MODULE=str(tmp_path / "empty_gates.py"), PYTHONDONTWRITEBYTECODE="1")
    assert out.returncode == 2 and out.stdout == ""  # its print went to stderr, not into the Hydra lines
    assert out.stderr.splitlines()[-1] == (f"{PROG}: error: GATE_MODULE={tmp_path}/empty_gates.py: empty_gates "
                                           "imports but registers no gate; call sspo_verl.register_gate(...) in it "
                                           "(docs/GATES.md, examples/custom_gate/my_gates.py)")
    (tmp_path / "loud_gates.py").write_text(open(ROOT / MY_GATES).read() + "print('registered')\n")
    out = _shell("sspo_algebraic", GATE_MODULE=str(tmp_path / "loud_gates.py"), PYTHONDONTWRITEBYTECODE="1")
    assert _lines(out)[ACTOR + "policy_loss.loss_mode"] == "sspo_algebraic" and "registered" in out.stderr
    out = _shell("sspo_cosine", GATE_MODULE=str(tmp_path / "loud_gates.py"), PYTHONDONTWRITEBYTECODE="1")
    assert out.stderr.splitlines()[-1].endswith(
        f", or one that GATE_MODULE={tmp_path}/loud_gates.py registers: sspo_algebraic")


def _list(**env):
    import os
    import sys

    return subprocess.run([sys.executable, "-m", "sspo_verl.tools.method_lines", "--list"], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, **env})


def test_list_prints_the_tables_methods_on_one_line():
    out = _list()
    assert out.returncode == 0 and out.stdout == " ".join(METHODS) + "\n"


@pytest.mark.slow
def test_list_adds_the_methods_a_gate_module_registers():
    out = _list(GATE_MODULE=MY_GATES, PYTHONDONTWRITEBYTECODE="1")
    assert out.returncode == 0 and out.stdout == " ".join([*METHODS, "sspo_algebraic"]) + "\n"


@pytest.mark.parametrize("argv,message", [
    ([], "give a method, one of: grpo "),
    (["--list", "sspo"], "--list takes no method"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_command_line_errors_are_one_line(argv, message):
    import os
    import sys

    out = subprocess.run([sys.executable, "-m", "sspo_verl.tools.method_lines", *argv], capture_output=True,
                         text=True, env=os.environ)
    assert_one_error_line(out, PROG, message, "(see --help)")


def test_an_external_lib_argument_that_does_not_import_names_the_argument_and_the_fix():
    from sspo_verl.errors import SSPOError
    from sspo_verl.tools.method_lines import import_argument_libs

    with pytest.raises(SSPOError, match=r"^your argument actor_rollout_ref\.model\.external_lib=no_such_gates_ml does "
                                        r"not import here \(ModuleNotFoundError: No module named 'no_such_gates_ml'\); "
                                        r"put its folder on PYTHONPATH, or name its \.py file in GATE_MODULE instead$"):
        import_argument_libs("no_such_gates_ml")
