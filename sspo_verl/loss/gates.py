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

`check_gate` tests (i)-(v) numerically over a grid of x and tau; `GATES` holds the built-in families.

One gate-like object is not an SSPO gate: `SAPO_GATE`, SAPO's own gate f(r) = (4/tau) sigmoid(tau (r - 1)) in ratio
space, which the paper's first objective (loss mode `sspo_sapo`) puts inside the geometric mean. f(1) = 2/tau, so
requirement (ii) fails, but w(1) = tau/2 = 1 / f(1): s_i w = 1 on-policy, the plain policy gradient again. It is
not in `GATES` (it would fail `check_gate`); `get_gate("sapo")` returns it, and the reference and fused losses
run it through the same `log_g` / `weight` contract.
This module knows nothing of verl.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F

from ..errors import SSPOError

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
    log_g_at_one(tau): None for an SSPO gate (g(1) = 1). Otherwise log g_tau(1) of a gate with g(1) != 1 that is
        unbiased because w(1) = 1 / g(1) (SAPO_GATE); the metrics divide it out, so that 1 means on-policy.
    log_g_sup(tau): sup over x of log_g, where it is smaller than `bound` (SAPO_GATE); it caps s_i. None: bound.
    """

    name: str
    log_g: GateFn
    weight: GateFn
    bound: Callable[[float], float]
    formula: str
    log_g_at_one: Optional[Callable[[Tau], Tau]] = None
    log_g_sup: Optional[Callable[[float], float]] = None

    def max_log_g(self, tau: float) -> float:
        """An upper bound on log g_tau over all x: what caps the sequence weight s_i = exp(mean_t log g)."""
        return self.bound(tau) if self.log_g_sup is None else self.log_g_sup(tau)


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


# ---------------------------------------------------------------------------------------------------
# SAPO's gate in ratio space: the paper's first objective, loss mode `sspo_sapo` (docs/GATES.md, "sspo_sapo")
# ---------------------------------------------------------------------------------------------------

_LOG_2, _LOG_4 = math.log(2.0), math.log(4.0)


def _same_shape(tau: Tau, x: torch.Tensor) -> bool:
    return not isinstance(tau, torch.Tensor) or tau.shape == x.shape


def _log(tau: Tau, like: torch.Tensor) -> Tau:
    return torch.log(tau) if isinstance(tau, torch.Tensor) else torch.tensor(math.log(tau), dtype=like.dtype)


def sapo_log_f_and_weight(x: torch.Tensor, tau: Tau) -> tuple[torch.Tensor, torch.Tensor]:
    """log f and w = d log f / d log r for f(r) = (4 / tau) sigmoid(tau (r - 1)), r = e^x, with no exp(x):

        u = tau (r - 1) = tau expm1(x)
        log f = log(4 / tau) + logsigmoid(u)                 in [log(4/tau) + logsigmoid(-tau), log(4/tau)]
        w     = tau r sigmoid(-u) = exp(log tau + x + logsigmoid(u) - u)      (logsigmoid(-u) = logsigmoid(u) - u)

    Finite for any finite x in float32: r = exp(x) overflows for x > 88, and tau r sigmoid(-u) is then inf * 0.
    Not differentiable (it works in place); `SAPO_GATE.log_g` is, with this w as its derivative. (B, T) -> two (B, T).
    """
    log_tau = _log(tau, x)
    u = torch.expm1(x).mul_(tau) if _same_shape(tau, x) else tau * torch.expm1(x)  # (B, T)
    log_sig = F.logsigmoid(u)  # (B, T)
    log_f = torch.sub(log_sig, log_tau).add_(_LOG_4)
    w = log_sig.sub_(u).add_(x).add_(log_tau).exp_()  # reuses log_sig
    return log_f, w


class _SapoLogF(torch.autograd.Function):
    """log f(e^x) with the stable closed-form derivative w: autograd of the formula is 0 * inf = NaN for x > 88."""

    @staticmethod
    def forward(ctx, x, tau):
        log_f, w = sapo_log_f_and_weight(x.detach(), tau)
        ctx.save_for_backward(w)
        return log_f

    @staticmethod
    def backward(ctx, grad):
        (w,) = ctx.saved_tensors
        return grad * w, None


def _sapo_log_f(x: torch.Tensor, tau: Tau) -> torch.Tensor:
    return _SapoLogF.apply(x, tau)


def _sapo_weight(x: torch.Tensor, tau: Tau) -> torch.Tensor:
    return sapo_log_f_and_weight(x.detach(), tau)[1]


def _sapo_log_f_at_one(tau: Tau) -> Tau:
    return _LOG_2 - (torch.log(tau) if isinstance(tau, torch.Tensor) else math.log(tau))  # f(1) = 2 / tau


def _sapo_bound(tau: float) -> float:
    top = _LOG_4 - math.log(tau)  # log f at r -> inf
    return max(abs(top), abs(top - (tau + math.log1p(math.exp(-tau)))))  # and at r -> 0: top - softplus(tau)


SAPO_GATE = Gate(
    "sapo", _sapo_log_f, _sapo_weight, _sapo_bound,
    "f(r) = (4 / tau) sigmoid(tau (r - 1)) in ratio space: log f = log(4 / tau) + logsigmoid(tau (e^x - 1)); "
    "w = tau r sigmoid(-tau (r - 1)); f(1) = 2 / tau, w(1) = tau / 2",
    log_g_at_one=_sapo_log_f_at_one,
    log_g_sup=lambda tau: _LOG_4 - math.log(tau),
)
# Gates with a loss mode sspo_<name> that are not SSPO gates (not in GATES, never passed to check_gate); their names
# cannot be registered.
RESERVED_GATES: dict[str, Gate] = {SAPO_GATE.name: SAPO_GATE}


class GateError(SSPOError):
    """A gate that cannot be used: an unknown or unusable name, or a gate function that breaks a requirement."""


class UnknownGateError(GateError):
    """A gate name that is neither registered nor reserved."""


def known_gates() -> list[str]:
    """Every gate name that has a loss mode sspo_<name>: the registered SSPO gates and the reserved ones."""
    return sorted(GATES) + sorted(RESERVED_GATES)


def get_gate(name: str) -> Gate:
    """The gate behind loss mode sspo_<name> (an SSPO gate or a reserved one), or an error listing the known ones."""
    gate = GATES.get(name) or RESERVED_GATES.get(name)
    if gate is None:
        raise UnknownGateError(
            f"Unknown SSPO gate {name!r}. Known gates: {known_gates()}. "
            f"Pick one of them (loss mode sspo_<gate>) or add yours with sspo_verl.register_gate(...)."
        )
    return gate


# ---------------------------------------------------------------------------------------------------
# Requirement check
# ---------------------------------------------------------------------------------------------------


class GateRequirementError(GateError):
    """A gate violates one of the requirements (i)-(iv) above."""


def _check_grid() -> torch.Tensor:
    dense = torch.linspace(-30.0, 30.0, 6001, dtype=torch.float64)  # step 0.01 through the bell
    wide = torch.logspace(-6, 12, 361, dtype=torch.float64)  # out to log-ratios of +-1e12
    return torch.unique(torch.cat([dense, wide, -wide, torch.zeros(1, dtype=torch.float64)]))  # sorted


def _elementwise(fn: GateFn, what: str, x: torch.Tensor, tau: torch.Tensor, where: str) -> torch.Tensor:
    """fn(x, tau) checked to be a tensor shaped and typed like x; else a GateRequirementError with the fix."""
    try:
        out = fn(x, tau)
    except Exception as exc:
        raise GateRequirementError(
            f"{where}: {what}(x, tau) raised {type(exc).__name__}: {exc}. It must take a tensor tau shaped like x "
            f"(the loss passes tau as a (B, T) tensor) and use torch ops only") from exc
    if not isinstance(out, torch.Tensor) or out.shape != x.shape or out.dtype != x.dtype:
        got = f"a {out.dtype} tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else repr(out)[:80]
        raise GateRequirementError(
            f"{where}: {what}(x, tau) must return a tensor shaped and typed like x ({x.dtype}, {tuple(x.shape)}), got "
            f"{got}; compute it elementwise with torch ops")
    return out


def check_gate(gate: Gate, taus: tuple[float, ...] = CHECK_TAUS) -> None:
    """Check requirements (i)-(v) numerically in float64 (and that float32, the loss's dtype, stays finite); raise
    GateRequirementError naming the first failure and what to fix."""
    for what in ("log_g", "weight", "bound"):
        if not callable(getattr(gate, what)):
            raise GateRequirementError(f"gate {gate.name!r}: {what} must be a function, got {getattr(gate, what)!r}")
    x = _check_grid()  # (N,) sorted, contains 0
    zero = int((x == 0).nonzero())
    weights = []  # (N,) per tau, for (v)
    for tau in taus:
        where = f"gate {gate.name!r} at tau={tau}"
        tau_t = torch.full_like(x, tau)  # the loss passes tau as a (B, T) tensor: check the gate the same way
        xg = x.clone().requires_grad_(True)
        log_g = _elementwise(gate.log_g, "log_g", xg, tau_t, where)
        try:
            (w_autograd,) = torch.autograd.grad(log_g.sum(), xg)
        except RuntimeError as exc:
            raise GateRequirementError(f"{where}: log_g(x, tau) is not differentiable in x ({exc}); write it with "
                                       f"torch ops, without .detach(), .item() or numpy") from exc
        log_g, w = log_g.detach(), _elementwise(gate.weight, "weight", x, tau_t, where)

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
        try:
            bound = float(gate.bound(tau))
        except Exception as exc:
            raise GateRequirementError(f"{where}: bound(tau) must return a number for a float tau, it raised "
                                       f"{type(exc).__name__}: {exc}") from exc
        if not math.isfinite(bound) or bound <= 0:
            raise GateRequirementError(f"{where}: (iv) bound(tau) must be finite and > 0, got {bound}")
        require(log_g.abs() > bound * (1 + 1e-12), f"(iv) |log g| exceeds the declared bound {bound:.6g}")
        weights.append(w)
    spread = (torch.stack(weights).amax(0) - torch.stack(weights).amin(0)).max().item()  # over taus, worst x
    if spread <= 1e-6:
        raise GateRequirementError(
            f"gate {gate.name!r}: (v) w does not depend on tau (it varies by {spread:.3g} over tau in {taus}), so "
            f"tau_pos and tau_neg would change nothing; make the gate a function of tau, e.g. of tau * x")
    x32 = x.float()  # the loss runs in float32 (bf16 inputs are upcast): the gate must stay finite there too
    for tau in taus:
        where = f"gate {gate.name!r} at tau={tau} in float32"
        tau32 = torch.full_like(x32, tau)
        for what, fn in (("log_g", gate.log_g), ("weight", gate.weight)):
            out = _elementwise(fn, what, x32, tau32, where)
            if not bool(torch.isfinite(out).all()):
                x_bad = x32[int((~torch.isfinite(out)).nonzero()[0, 0])].item()
                raise GateRequirementError(f"{where}: {what} is not finite at x = log r = {x_bad:.6g} (it is in "
                                           f"float64): compute it without intermediates that overflow float32")
