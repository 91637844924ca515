"""Temperatures from a clip range (sspo_verl.tools.calibrate): hand-derived closed forms, the numerical solve for every
gate and for a user gate, the CLI, and loud failures where the rule has no unique answer."""

import math
import sys

import pytest
import torch
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

import sspo_verl
from sspo_verl.tools import calibrate as cal
from sspo_verl.loss.gates import GATES

LOG_HI, LOG_LO = math.log(1.28), math.log(0.8)  # DAPO's clip 0.2 / 0.28 as log-ratio edges
SECH2_HALF = 2 * math.acosh(math.sqrt(2))  # sech^2(z / 2) = 1/2 at z = 1.7627
# hand-derived: w = 1/2 at tau |x| = c (docs/GATES.md, "The calibration rule")
HAND = {
    "arctan": (1 / LOG_HI, 1 / abs(LOG_LO)),  # 1 / (1 + z^2) = 1/2 at z = 1: 4.05 and 4.48
    "sigmoid": (SECH2_HALF / LOG_HI, SECH2_HALF / abs(LOG_LO)),
    "erf": (math.sqrt(math.log(2)) / LOG_HI, math.sqrt(math.log(2)) / abs(LOG_LO)),  # exp(-z^2) = 1/2
    "softsign": ((math.sqrt(2) - 1) / LOG_HI, (math.sqrt(2) - 1) / abs(LOG_LO)),  # (1 + z)^-2 = 1/2
    "sapo": (SECH2_HALF / 0.28, SECH2_HALF / 0.2),  # ratio space: 4 sigma(z) sigma(-z) = 1/2 at tau |r - 1| = 1.7627
}


def test_arctan_with_dapo_clip_matches_the_notes():
    tau_pos, tau_neg = cal.taus_from_clip("arctan", 0.2, 0.28)
    assert round(tau_pos, 2) == 4.05 and round(tau_neg, 2) == 4.48
    assert tau_neg > tau_pos  # the paper asks tau_neg > tau_pos; a symmetric-in-log clip band gives it


@pytest.mark.parametrize("gate", list(HAND))
def test_closed_forms_equal_hand_derived_values(gate):
    assert cal.taus_from_clip(gate, 0.2, 0.28) == pytest.approx(HAND[gate], rel=1e-12)


@pytest.mark.parametrize("gate", list(HAND))
def test_numerical_solve_agrees_with_the_closed_form(gate):
    assert cal.taus_from_clip(gate, 0.2, 0.28, numeric=True) == pytest.approx(HAND[gate], rel=1e-9)
    assert cal.taus_from_clip(gate, 0.05, 0.6, numeric=True) == pytest.approx(cal.taus_from_clip(gate, 0.05, 0.6),
                                                                              rel=1e-9)


@pytest.mark.parametrize("gate", list(GATES))
def test_the_gate_weight_is_one_half_at_the_clip_edges(gate):
    """The definition, checked with the gate's own weight function (the one the loss uses)."""
    tau_pos, tau_neg = cal.taus_from_clip(gate, 0.2, 0.28)
    w = GATES[gate].weight
    x = torch.tensor([LOG_HI, LOG_LO], dtype=torch.float64)
    torch.testing.assert_close(w(x, torch.tensor([tau_pos, tau_neg], dtype=torch.float64)),
                               torch.full((2,), 0.5, dtype=torch.float64))
    # inside the band the gate passes more than half, outside less (w falls away from r = 1)
    assert w(torch.tensor(0.9 * LOG_HI), tau_pos) > 0.5 > w(torch.tensor(1.1 * LOG_HI), tau_pos)


def test_sapo_weight_is_the_derivative_of_verls_sapo_gate():
    """sapo_weight = d f / d log r / r with verl's f(r) = sigmoid(tau (r - 1)) 4 / tau: the factor on PPO's gradient."""
    x = torch.linspace(-1.5, 1.5, 31, dtype=torch.float64, requires_grad=True)
    tau = 6.3
    f = torch.sigmoid(tau * (x.exp() - 1)) * 4 / tau
    (df_dx,) = torch.autograd.grad(f.sum(), x)
    torch.testing.assert_close(cal.sapo_weight(x.detach(), tau), df_dx / x.detach().exp())


def test_sspo_sapo_calibrates_as_sapo_because_the_sspo_rule_has_no_answer_below_one():
    from sspo_verl.loss.gates import SAPO_GATE

    assert cal.taus_from_clip("sspo_sapo", 0.2, 0.28) == pytest.approx(HAND["sapo"], rel=1e-12)  # 6.30, 8.81
    assert cal.taus_from_clip(SAPO_GATE, 0.2, 0.28) == cal.taus_from_clip("sspo_sapo", 0.2, 0.28)
    # SSPO's rule on sspo_sapo's normalized weight w 2 / tau = 2 r sigmoid(-tau (r - 1)): at r = 0.8 it rises from
    # 0.8 to 1.6 as tau grows, never down to 1/2
    normalized = lambda x, t: SAPO_GATE.weight(x, t) * 2 / t  # noqa: E731
    w_08 = normalized(torch.full((3,), LOG_LO, dtype=torch.float64), torch.tensor([1e-6, 1.0, 1e3], dtype=torch.float64))
    torch.testing.assert_close(w_08, torch.tensor([0.8, 1.6 / (1 + math.exp(-0.2)), 1.6], dtype=torch.float64))
    with pytest.raises(cal.CalibrationError, match=r"w rises with tau .* \(w = 0\.8\)"):
        cal.solve_tau(normalized, LOG_LO, "sspo_sapo")
    # (above 1 it would: 2.56 sigmoid(-0.28 tau) = 1/2 at tau = -logit(1 / 5.12) / 0.28 = 5.06)
    assert cal.solve_tau(normalized, LOG_HI, "sspo_sapo") == pytest.approx(-math.log(1 / (5.12 - 1)) / 0.28, rel=1e-9)


def test_loss_modes_name_their_gates():
    assert cal.taus_from_clip("sspo", 0.2, 0.28) == cal.taus_from_clip("arctan", 0.2, 0.28)
    assert cal.taus_from_clip("sspo_erf", 0.1, 0.1) == cal.taus_from_clip("erf", 0.1, 0.1)
    with pytest.raises(ValueError, match="Unknown SSPO gate 'cosine'"):
        cal.taus_from_clip("sspo_cosine", 0.2, 0.28)


@pytest.fixture
def algebraic_gate():
    """The register_gate docstring's user gate: w = (1 + tau^2 x^2)^(-3/2), half weight at tau |x| = sqrt(2^(2/3) - 1)."""
    mode = sspo_verl.register_gate("algebraic", lambda x, t: x / torch.sqrt(1 + (t * x) ** 2),
                                   lambda x, t: (1 + (t * x) ** 2) ** -1.5, lambda t: 1 / t)
    yield mode
    GATES.pop("algebraic", None)
    POLICY_LOSS_REGISTRY.pop(mode, None)


def test_registered_user_gate_is_solved_numerically(algebraic_gate):
    c = math.sqrt(2 ** (2 / 3) - 1)
    assert cal.closed_form_tau("algebraic", LOG_HI) is None
    assert cal.taus_from_clip("algebraic", 0.2, 0.28) == pytest.approx((c / LOG_HI, c / abs(LOG_LO)), rel=1e-9)
    assert cal.taus_from_clip(algebraic_gate, 0.2, 0.28) == cal.taus_from_clip("algebraic", 0.2, 0.28)
    assert cal.taus_from_clip(GATES["algebraic"], 0.2, 0.28) == cal.taus_from_clip("algebraic", 0.2, 0.28)


def test_cli_prints_both_temperatures(capsys):
    assert cal.main(["--gate", "arctan", "--clip-low", "0.2", "--clip-high", "0.28"]) == 0
    assert capsys.readouterr().out == "tau_pos=4.05088 tau_neg=4.48142\n"


def test_cli_imports_a_module_that_registers_a_gate(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_gates.py").write_text(
        "import torch, sspo_verl\n"
        "sspo_verl.register_gate('cubic', lambda x, t: x / torch.sqrt(1 + (t * x) ** 2),\n"
        "                        lambda x, t: (1 + (t * x) ** 2) ** -1.5, lambda t: 1 / t)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert cal.main(["--gate", "sspo_cubic", "--clip-low", "0.2", "--clip-high", "0.28", "--import", "my_gates"]) == 0
        out = capsys.readouterr().out
        c = math.sqrt(2 ** (2 / 3) - 1)
        assert out == f"tau_pos={c / LOG_HI:.6g} tau_neg={c / abs(LOG_LO):.6g}\n"
    finally:
        GATES.pop("cubic", None)
        POLICY_LOSS_REGISTRY.pop("sspo_cubic", None)
        sys.modules.pop("my_gates", None)


@pytest.mark.parametrize("argv, message", [
    (["--gate", "cosine", "--clip-low", "0.2", "--clip-high", "0.28"], "Unknown SSPO gate 'cosine'"),
    # the flag the user typed, not the Python parameter behind it
    (["--gate", "arctan", "--clip-low", "1.2", "--clip-high", "0.28"], "--clip-low 1.2: the lower edge 1 - clip_low"),
    (["--gate", "arctan", "--clip-low", "0.2", "--clip-high", "-0.28"], "--clip-high -0.28: a clip range is a positive"),
    (["--gate", "arctan", "--clip-low", "0.2", "--clip-high", "nan"], "--clip-high nan: a clip range is a positive"),
    (["--clip-low", "0.2", "--clip-high", "0.28"], "--gate is required (or --plot PNG) (see --help)"),
    (["--gate", "arctan", "--clip-low", "wide", "--clip-high", "0.28"], "argument --clip-low: invalid float value: 'wide'"),
    (["--plot", "/no/such/folder/w.png", "--clip-low", "0.2", "--clip-high", "0.28"],
     "--plot /no/such/folder/w.png: the folder /no/such/folder does not exist"),
    # a bad clip range is reported before the module is imported (arguments first)
    (["--import", "no_such_gates", "--gate", "x", "--clip-low", "0", "--clip-high", "0.28"], "--clip-low 0.0: a clip range"),
    (["--import", "no_such_gates", "--gate", "x", "--clip-low", "0.2", "--clip-high", "0.28"],
     "--import no_such_gates: No module named 'no_such_gates' (is its folder on PYTHONPATH?)"),
])
def test_cli_rejects_bad_input_in_one_line(argv, message, capsys):
    try:
        code = cal.main(argv)
    except SystemExit as ended:  # argparse's own errors end in parse_args
        code = ended.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m sspo_verl.tools.calibrate: error: ")
    assert message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("source, message", [
    ("import sspo_verl\nsspo_verl.register_gate('flat', lambda x, t: 0 * x * t, lambda x, t: 0 * x * t, lambda t: 1.0)\n",
     "--import bad_gates_cli: gate 'flat' at tau=0.1: (ii) g'(1) = 1 fails"),
    ("raise NameError('oops')\n", "--import bad_gates_cli: importing it raised NameError: oops ("),
])
def test_cli_reports_an_imported_modules_error_in_one_line(source, message, tmp_path, monkeypatch, capsys):
    (tmp_path / "bad_gates_cli.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert cal.main(["--import", "bad_gates_cli", "--gate", "arctan", "--clip-low", "0.2", "--clip-high", "0.28"]) == 2
    finally:
        sys.modules.pop("bad_gates_cli", None)
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert "flat" not in GATES


def test_cli_without_matplotlib_says_what_to_install_before_any_work(monkeypatch, capsys, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    assert cal.main(["--plot", str(tmp_path / "w.png"), "--clip-low", "0.2", "--clip-high", "0.28"]) == 2
    err = capsys.readouterr().err
    assert "needs matplotlib, which is not installed: pip install 'sspo-verl[compare]'" in err and err.count("\n") == 1
    assert not (tmp_path / "w.png").exists()


def test_a_weight_that_rises_with_tau_is_refused():
    """w = f(x / tau) widens the gate as tau grows: the half-weight temperature is no longer the rule's."""
    with pytest.raises(cal.CalibrationError, match="rises with tau"):
        cal.solve_tau(lambda x, t: 1 / (1 + (x / t) ** 2), LOG_HI, "inverse")


def test_a_weight_that_never_reaches_one_half_is_refused():
    with pytest.raises(cal.CalibrationError, match="never crosses 1/2"):
        cal.solve_tau(lambda x, t: 0.6 + 0.4 / (1 + (t * x) ** 2), LOG_HI, "floored")


def test_a_weight_that_jumps_across_one_half_is_refused():
    step = lambda x, t: torch.where(t * x.abs() < 1, torch.ones_like(x), torch.full_like(x, 0.2))  # noqa: E731
    with pytest.raises(cal.CalibrationError, match="jumps across 1/2"):
        cal.solve_tau(step, LOG_HI, "step")


def test_a_weight_that_is_not_elementwise_in_tau_is_refused():
    with pytest.raises(cal.CalibrationError, match="shaped like x"):
        cal.solve_tau(lambda x, t: torch.tensor(0.5), LOG_HI, "scalar")
