"""Gate requirements (paper section 3, docs/GATES.md): g > 0, g(1) = 1, g'(1) = 1, bell-shaped w, bounded log g."""

import math

import pytest
import torch

from sspo_verl.loss.gates import CHECK_TAUS, GATES, Gate, GateRequirementError, check_gate, get_gate

GATE_NAMES = ["arctan", "sigmoid", "erf", "softsign"]
X = torch.cat([torch.linspace(-50, 50, 20001, dtype=torch.float64), torch.tensor([-1e4, -1e3, 1e3, 1e4], dtype=torch.float64)])


def test_builtin_gate_table():
    assert sorted(GATES)[:4] == sorted(GATE_NAMES)


@pytest.mark.parametrize("name", GATE_NAMES)
def test_builtin_gates_pass_the_requirement_check(name):
    check_gate(GATES[name])  # raises on any violation


@pytest.mark.parametrize("name", GATE_NAMES)
@pytest.mark.parametrize("tau", CHECK_TAUS)
def test_requirements_on_a_grid(name, tau):
    gate = GATES[name]
    x = X.clone().requires_grad_(True)
    log_g = gate.log_g(x, tau)
    (w_autograd,) = torch.autograd.grad(log_g.sum(), x)
    w = gate.weight(X, tau)
    zero = torch.zeros(1, dtype=torch.float64)
    assert torch.isfinite(log_g).all()  # (i) g > 0
    assert gate.log_g(zero, tau).item() == 0.0  # (ii) g(1) = 1
    assert gate.weight(zero, tau).item() == 1.0  # (ii) g'(1) = 1 (w(0) = 1 * g'(1) / g(1))
    torch.testing.assert_close(w, w_autograd, rtol=1e-9, atol=1e-12)  # weight is d log g / d log r
    assert (w >= 0).all() and (w <= 1).all()  # (iii) peak 1
    torch.testing.assert_close(w, gate.weight(-X, tau), rtol=0, atol=1e-15)  # w(r) = w(1/r)
    pos = torch.sort(X[X >= 0]).values
    assert (torch.diff(gate.weight(pos, tau)) <= 1e-15).all()  # (iii) falls away from r = 1
    assert gate.weight(torch.tensor([1e4], dtype=torch.float64), tau).item() < 1e-2  # (iii) -> 0
    assert log_g.detach().abs().max().item() <= gate.bound(tau)  # (iv) bounded ...
    far = gate.log_g(torch.tensor([1e6], dtype=torch.float64), tau).item()
    assert far > 0.99 * gate.bound(tau)  # ... and the bound is tight (approached as r -> inf)


def test_known_values():
    # Written out by hand from the formulas in docs/GATES.md, at tau = 2, x = 0.5.
    x = torch.tensor([0.5], dtype=torch.float64)
    expected = {  # (log g, w)
        "arctan": (math.atan(1.0) / 2, 1 / (1 + 1.0)),  # (pi/8, 1/2)
        "sigmoid": (math.tanh(0.5), 1 - math.tanh(0.5) ** 2),  # (2/2) tanh(2*0.5/2)
        "erf": (math.sqrt(math.pi) / 4 * math.erf(1.0), math.exp(-1.0)),
        "softsign": (0.5 / 2.0, 1 / 4.0),  # 0.5 / (1 + 2*0.5), 1 / (1 + 1)^2
    }
    for name, (log_g, w) in expected.items():
        assert GATES[name].log_g(x, 2.0).item() == pytest.approx(log_g, abs=1e-15), name
        assert GATES[name].weight(x, 2.0).item() == pytest.approx(w, abs=1e-15), name
    assert expected["arctan"][0] == pytest.approx(math.pi / 8)


def test_arctan_is_cauchy_shaped():
    # The paper's main gate: w decays quadratically (heavy-tailed), unlike the Gaussian (erf) gate.
    big = torch.tensor([100.0], dtype=torch.float64)
    assert GATES["arctan"].weight(big, 1.0).item() == pytest.approx(1 / (1 + 1e4))
    assert GATES["erf"].weight(big, 1.0).item() == 0.0


def test_unknown_gate_names_the_known_ones():
    with pytest.raises(ValueError, match=r"Unknown SSPO gate 'cosine'.*arctan.*register_gate"):
        get_gate("cosine")


def _gate(log_g, weight=None, bound=lambda t: 1.0 / t, name="bad"):
    if weight is None:  # derive the weight by autograd, so only the intended defect is tested
        def weight(x, t):
            x = x.detach().clone().requires_grad_(True)
            return torch.autograd.grad(log_g(x, t).sum(), x)[0]
    return Gate(name, log_g, weight, bound, "test")


BAD_GATES = {
    # g(r) = r (ungated, GSPO): w = 1 never falls off, log g unbounded
    "ungated": (_gate(lambda x, t: x.clone()), r"w increases|w -> 0"),
    "g(1) != 1": (_gate(lambda x, t: torch.atan(t * x) / t + 0.1, bound=lambda t: 2 / t), r"\(ii\) g\(1\) = 1"),
    "g'(1) != 1": (_gate(lambda x, t: 2 * torch.atan(t * x) / t, bound=lambda t: 4 / t), r"\(ii\) g'\(1\) = 1"),
    "peak off r = 1": (_gate(lambda x, t: torch.atan(t * (x - 0.3)) / t - torch.atan(-0.3 * t) / t, bound=lambda t: 4 / t), r"\(ii\)|\(iii\)"),
    # w(0) = 1 but a second bump: not bell-shaped
    "two bumps": (_gate(lambda x, t: torch.atan(t * x) / t + 0.2 * x ** 3 * torch.exp(-x ** 2), bound=lambda t: 2 / t + 1), r"\(iii\)"),
    "weight disagrees": (_gate(lambda x, t: torch.atan(t * x) / t, weight=lambda x, t: torch.exp(-(t * x) ** 2), bound=lambda t: 2 / t),
                         r"disagrees"),
    # w -> 0.005, not 0: log g grows without bound however large the declared bound
    "w floor": (_gate(lambda x, t: 0.005 * x + 0.995 * torch.atan(t * x) / t, bound=lambda t: 50 + 2 / t), r"w -> 0 fails"),
    # works with a float tau only; the loss passes a (B, T) tensor
    "float-only tau": (_gate(lambda x, t: torch.atan(x * math.sqrt(t)) / math.sqrt(t), bound=lambda t: 2 / t), r"tensor tau"),
    "bound too small": (_gate(lambda x, t: torch.atan(t * x) / t, bound=lambda t: 1.0 / t), r"\(iv\)"),
}


@pytest.mark.parametrize("case", list(BAD_GATES))
def test_check_gate_rejects_gates_that_break_a_requirement(case):
    gate, match = BAD_GATES[case]
    with pytest.raises(GateRequirementError, match=match):
        check_gate(gate)
