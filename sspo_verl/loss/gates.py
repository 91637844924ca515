"""Soft gates for SSPO, written in log space.

A gate g_tau(r) > 0 smooths the trust region around the old policy. SSPO only ever needs

    log g_tau(e^x)                          with x = log r                      (docs/GATES.md, "What a gate does")
    w_tau(x) = d log g / d x = r g'(r) / g(r)  the normalized weight            (paper eq. 15)

so every gate here is a pair of pure tensor functions of x and tau. Requirements (paper, section 3):

    (i)   g > 0                 log g finite everywhere
    (ii)  g(1) = 1, g'(1) = 1   log g(0) = 0 and w(0) = 1   -> on-policy SSPO is the plain policy gradient
    (iii) w bell-shaped         0 <= w <= 1, peak 1 at x = 0, non-increasing in |x|, w -> 0 far from 0

(The companion paper also asks for C1 gates; a grid check cannot prove smoothness, so that one is on you.)

We add two of our own. (iv): |log g| <= bound(tau) < inf. Then the sequence weight
s_i = exp(mean_t log g) lies in [exp(-bound), exp(bound)] for any ratio, so no clamp is needed.
(v): w depends on tau; otherwise tau_pos and tau_neg, the method's only knobs, would change nothing.

`check_gate` tests (i)-(iv) numerically over a grid of x and tau; `GATES` holds the built-in families.
This module knows nothing of verl.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Union

import torch

Tau = Union[torch.Tensor, float]
GateFn = Callable[[torch.Tensor, Tau], torch.Tensor]

# Taus the requirement check sweeps: SAPO's defaults, the range people tune in, and extremes.
CHECK_TAUS = (0.1, 0.25, 0.5, 1.0, 1.05, 2.0, 5.0, 10.0, 50.0)


@dataclass(frozen=True)
class Gate:
    """A soft gate in log space.

    log_g(x, tau): log g_tau(e^x), elementwise.
    weight(x, tau): w_tau(x) = d log_g / dx, elementwise (closed form; autograd of log_g must agree).
    bound(tau): a finite upper bound on |log_g(x, tau)| over all x.
    formula: log g and w as text, for docs, errors and the closing note.
    """

    name: str
    log_g: GateFn
    weight: GateFn
    bound: Callable[[float], float]
    formula: str


# ---------------------------------------------------------------------------------------------------
# Built-in families (docs/GATES.md, "What a gate does"). Each is C-infinity or C1, odd in x, bounded.
# ---------------------------------------------------------------------------------------------------

_SQRT_PI = math.sqrt(math.pi)


def _arctan_log_g(x: torch.Tensor, tau: Tau) -> torch.Tensor:
    return torch.atan(tau * x) / tau


def _arctan_weight(x: torch.Tensor, tau: Tau) -> torch.Tensor:
    return 1.0 / (1.0 + (tau * x) ** 2)  # Cauchy bell, decays as 1 / x^2


def _sigmoid_log_g(x: torch.Tensor, tau: Tau) -> torch.Tensor:
    return (2.0 / tau) * torch.tanh(0.5 * tau * x)  # = (4 / tau) * (sigmoid(tau x) - 1/2)


def _sigmoid_weight(x: torch.Tensor, tau: Tau) -> torch.Tensor:
    return 1.0 - torch.tanh(0.5 * tau * x) ** 2  # sech^2(tau x / 2) = 4 sigmoid(tau x) sigmoid(-tau x)


def _erf_log_g(x: torch.Tensor, tau: Tau) -> torch.Tensor:
    return (_SQRT_PI / 2.0) * torch.erf(tau * x) / tau


def _erf_weight(x: torch.Tensor, tau: Tau) -> torch.Tensor:
    return torch.exp(-((tau * x) ** 2))  # Gaussian bell


def _softsign_log_g(x: torch.Tensor, tau: Tau) -> torch.Tensor:
    return x / (1.0 + tau * x.abs())


def _softsign_weight(x: torch.Tensor, tau: Tau) -> torch.Tensor:
    return 1.0 / (1.0 + tau * x.abs()) ** 2  # polynomial bell, decays as 1 / x^2


GATES: dict[str, Gate] = {
    "arctan": Gate(
        "arctan", _arctan_log_g, _arctan_weight, lambda tau: math.pi / (2.0 * tau),
        "log g = arctan(tau x) / tau;  w = 1 / (1 + tau^2 x^2)",
    ),
    "sigmoid": Gate(
        "sigmoid", _sigmoid_log_g, _sigmoid_weight, lambda tau: 2.0 / tau,
        "log g = (2 / tau) tanh(tau x / 2);  w = sech^2(tau x / 2)",
    ),
    "erf": Gate(
        "erf", _erf_log_g, _erf_weight, lambda tau: _SQRT_PI / (2.0 * tau),
        "log g = sqrt(pi) / (2 tau) erf(tau x);  w = exp(-tau^2 x^2)",
    ),
    "softsign": Gate(
        "softsign", _softsign_log_g, _softsign_weight, lambda tau: 1.0 / tau,
        "log g = x / (1 + tau |x|);  w = 1 / (1 + tau |x|)^2",
    ),
}

DEFAULT_GATE = "arctan"  # the paper's main, Cauchy-shaped gate: loss mode `sspo`


def get_gate(name: str) -> Gate:
    """The gate registered under `name`, or a ValueError that lists the known ones."""
    if name not in GATES:
        raise ValueError(
            f"Unknown SSPO gate {name!r}. Known gates: {sorted(GATES)}. "
            f"Pick one of them (loss mode sspo_<gate>) or add yours with sspo_verl.register_gate(...)."
        )
    return GATES[name]


# ---------------------------------------------------------------------------------------------------
# Requirement check
# ---------------------------------------------------------------------------------------------------


class GateRequirementError(ValueError):
    """A gate violates one of the requirements (i)-(iv) above."""


def _check_grid() -> torch.Tensor:
    dense = torch.linspace(-30.0, 30.0, 6001, dtype=torch.float64)  # step 0.01 through the bell
    wide = torch.logspace(-6, 12, 361, dtype=torch.float64)  # out to log-ratios of +-1e12
    return torch.unique(torch.cat([dense, wide, -wide, torch.zeros(1, dtype=torch.float64)]))  # sorted


def check_gate(gate: Gate, taus: tuple[float, ...] = CHECK_TAUS) -> None:
    """Check requirements (i)-(v) numerically in float64; raise GateRequirementError naming the first failure."""
    x = _check_grid()  # (N,) sorted, contains 0
    zero = int((x == 0).nonzero())
    weights = []  # (N,) per tau, for (v)
    for tau in taus:
        where = f"gate {gate.name!r} at tau={tau}"
        tau_t = torch.full_like(x, tau)  # the loss passes tau as a (B, T) tensor: check the gate the same way
        xg = x.clone().requires_grad_(True)
        try:
            log_g = gate.log_g(xg, tau_t)
        except Exception as exc:
            raise GateRequirementError(f"{where}: log_g(x, tau) failed for a tensor tau ({exc}); use torch ops") from exc
        if log_g.shape != x.shape or log_g.dtype != torch.float64:
            raise GateRequirementError(f"{where}: log_g must be elementwise and keep dtype, got {log_g.shape} {log_g.dtype}")
        (w_autograd,) = torch.autograd.grad(log_g.sum(), xg)
        log_g, w = log_g.detach(), gate.weight(x, tau_t)

        def require(bad: torch.Tensor, what: str) -> None:
            if bool(bad.any()):
                x_bad = x[int(bad.nonzero()[0, 0])].item()
                raise GateRequirementError(f"{where}: {what} (first at x = log r = {x_bad:.6g})")

        require(~torch.isfinite(log_g), "(i) g > 0 fails: log g is not finite")
        require(~torch.isfinite(w), "weight w is not finite")
        require((w - w_autograd).abs() > 1e-7 * (1 + w_autograd.abs()), "weight(x) disagrees with d log_g / dx")
        if abs(log_g[zero].item()) > 1e-12:
            raise GateRequirementError(f"{where}: (ii) g(1) = 1 fails: log g(0) = {log_g[zero].item():.3g}")
        if abs(w[zero].item() - 1.0) > 1e-9:
            raise GateRequirementError(f"{where}: (ii) g'(1) = 1 fails: w(0) = {w[zero].item():.6g}")
        require((w < 0) | (w > 1 + 1e-12), "(iii) 0 <= w <= 1 fails")
        dw = torch.diff(w)
        right = x[1:] > 0  # pairs (x_k, x_k+1) with x_k >= 0: w must not increase
        require(right & (dw > 1e-12), "(iii) w increases away from r = 1 (x > 0)")
        require(~right & (dw < -1e-12), "(iii) w increases away from r = 1 (x < 0)")
        tail = w[x.abs() >= 1e4]
        if tail.max().item() > 1e-4:
            raise GateRequirementError(f"{where}: (iii) w -> 0 fails: w = {tail.max().item():.3g} at |x| >= 1e4")
        bound = float(gate.bound(tau))
        if not math.isfinite(bound) or bound <= 0:
            raise GateRequirementError(f"{where}: (iv) bound(tau) must be finite and > 0, got {bound}")
        require(log_g.abs() > bound * (1 + 1e-12), f"(iv) |log g| exceeds the declared bound {bound:.6g}")
        weights.append(w)
    spread = (torch.stack(weights).amax(0) - torch.stack(weights).amin(0)).max().item()  # over taus, worst x
    if spread <= 1e-6:
        raise GateRequirementError(
            f"gate {gate.name!r}: (v) w does not depend on tau (it varies by {spread:.3g} over tau in {taus}), so "
            f"tau_pos and tau_neg would change nothing; make the gate a function of tau, e.g. of tau * x")
