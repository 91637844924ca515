"""Temperatures from a clip range: the soft gate passes half its gradient where the hard clip cuts it off.

PPO's clip with range (eps_low, eps_high) passes the full gradient inside 1 - eps_low < r < 1 + eps_high and none
outside it, on the side the advantage pushes toward: A > 0 is cut at r = 1 + eps_high, A <= 0 at r = 1 - eps_low.
A soft gate's gradient weight w falls smoothly from 1 at r = 1. The calibration rule puts the gate's half-weight
point on the clip's edges (docs/GATES.md, "The calibration rule"):

    w(log(1 + eps_high), tau_pos) = 1/2        for A > 0
    w(log(1 - eps_low),  tau_neg) = 1/2        for A <= 0

The SSPO gates are written in log space, x = log r, and their weight (paper eq. 15) is w = d log g / d x. Each
built-in gate's weight is a function of tau |x| alone, so the rule has a closed form tau = c / |x_edge|:

    arctan    w = 1 / (1 + tau^2 x^2)      c = 1
    sigmoid   w = sech^2(tau x / 2)        c = 2 arccosh(sqrt 2) = 1.7627
    erf       w = exp(-tau^2 x^2)          c = sqrt(ln 2) = 0.8326
    softsign  w = 1 / (1 + tau |x|)^2      c = sqrt 2 - 1 = 0.4142

SAPO's gate lives in ratio space: its gradient is 4 sigma(tau (r - 1)) sigma(-tau (r - 1)) times the unclipped
PPO gradient, sech^2(tau (r - 1) / 2), so c = 1.7627 with |r_edge - 1| (= eps) in place of |x_edge|.

`sspo_sapo` (SAPO's gate inside SSPO's geometric mean) calibrates as `sapo` does. SSPO's rule cannot serve: its
normalized weight 2 r sigmoid(-tau (r - 1)) stays above r for r < 1 whatever tau (0.8 at r = 0.8), so no tau_neg
halves it there. SAPO's rule is exact where the two objectives meet: for a one-token response sspo_sapo is SAPO
(s_i w = r f'(r), the same factor), so the same temperatures give the same gate (docs/GATES.md, "sspo_sapo").

A gate added with `sspo_verl.register_gate` gets a numerical solve (`solve_tau`), which assumes that at a fixed
edge x the weight falls continuously and strictly from above 1/2 to below it as tau grows from 1e-6 to 1e6; it
checks that on a grid and raises `CalibrationError` when it does not hold.

    python -m sspo_verl.tools.calibrate --gate arctan --clip-low 0.2 --clip-high 0.28
    tau_pos=4.05113 tau_neg=4.48142
"""

from __future__ import annotations

import importlib
import math
import os
import sys
import traceback
from typing import Callable

import torch

from .. import cli
from ..errors import SSPOError, require_module
from ..loss.gates import GATES, RESERVED_GATES, Gate, get_gate

HALF = 0.5
SIGMOID_C = 2.0 * math.acosh(math.sqrt(2.0))  # sech^2(z) = 1/2 at z = arccosh(sqrt 2)
# c with w = 1/2 at tau * |edge| = c, for the built-in gates (their weight is a function of tau |x| alone)
HALF_WEIGHT_C = {"arctan": 1.0, "sigmoid": SIGMOID_C, "erf": math.sqrt(math.log(2.0)), "softsign": math.sqrt(2.0) - 1}
_BUILTIN_WEIGHTS = {name: GATES[name].weight for name in HALF_WEIGHT_C}  # a re-registered name loses its closed form
SAPO = "sapo"
TAU_RANGE = (1e-6, 1e6)  # where the numerical solve looks for the half-weight temperature
_GRID = 1201  # log-spaced temperatures over TAU_RANGE: 100 per decade


class CalibrationError(SSPOError):
    """The half-weight temperature does not exist or is not unique for this gate and edge."""


def sapo_weight(log_ratio: torch.Tensor, tau) -> torch.Tensor:
    """SAPO's gradient weight relative to the unclipped PPO gradient: 4 sigma(tau (r - 1)) sigma(-tau (r - 1)).

    verl's SAPO gate is f(r) = sigmoid(tau (r - 1)) * 4 / tau, so d f / d theta = 4 sigma (1 - sigma) * r grad log pi."""
    z = tau * (log_ratio.exp() - 1.0)
    return 4.0 * torch.sigmoid(z) * torch.sigmoid(-z)


def gate_name(name: str) -> str:
    """A gate name from a gate, an SSPO loss mode (sspo = arctan, sspo_<gate>) or `sapo`; sspo_sapo is `sapo` too."""
    if name == SAPO:
        return SAPO
    if name == "sspo":
        return "arctan"
    name = name.removeprefix("sspo_")
    get_gate(name)  # a clear error naming the known gates
    return name


def weight_function(name: str) -> Callable[[torch.Tensor, object], torch.Tensor]:
    """w(x = log r, tau) of a gate, an SSPO loss mode, or SAPO (in ratio space, see `sapo_weight`)."""
    name = gate_name(name)
    return sapo_weight if name == SAPO else GATES[name].weight


def edges(clip_low: float, clip_high: float, names: tuple[str, str] = ("clip_low=", "clip_high=")) -> tuple[float, float]:
    """The clip's edges as log-ratios: (log(1 + clip_high) for A > 0, log(1 - clip_low) for A <= 0).

    names: how the two values are named in errors (the CLI passes its flags, "--clip-low ", "--clip-high ")."""
    for name, eps in zip(names, (clip_low, clip_high)):
        if isinstance(eps, bool) or not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
            raise CalibrationError(f"{name}{eps!r}: a clip range is a positive number, e.g. 0.2 (GRPO) or 0.28 (DAPO)")
    if clip_low >= 1:
        raise CalibrationError(f"{names[0]}{clip_low}: the lower edge 1 - clip_low must stay above 0 (use a value "
                               f"below 1)")
    return math.log1p(clip_high), math.log1p(-clip_low)


def closed_form_tau(name: str, edge: float) -> float | None:
    """tau = c / |edge| for a built-in gate (|r - 1| for SAPO); None when `name` has no closed form."""
    name = gate_name(name)
    if name == SAPO:
        return SIGMOID_C / abs(math.expm1(edge))
    if name in HALF_WEIGHT_C and GATES[name].weight is _BUILTIN_WEIGHTS[name]:
        return HALF_WEIGHT_C[name] / abs(edge)
    return None


def solve_tau(weight: Callable[[torch.Tensor, object], torch.Tensor], edge: float, name: str = "gate") -> float:
    """The tau with weight(edge, tau) = 1/2, found numerically (float64).

    Assumes w(edge, tau) is continuous and strictly decreasing in tau over TAU_RANGE, above 1/2 at its low end and
    below it at its high end: checked on a log grid of 100 temperatures per decade, else CalibrationError."""
    if not (math.isfinite(edge) and edge != 0):
        raise CalibrationError(f"edge={edge}: the half-weight point must be a finite log-ratio other than 0")
    taus = torch.logspace(math.log10(TAU_RANGE[0]), math.log10(TAU_RANGE[1]), _GRID, dtype=torch.float64)
    x = torch.full_like(taus, edge)
    w = _weights(weight, x, taus, name)  # (_GRID,)
    where = f"{name} at log r = {edge:.6g}"
    if not bool(torch.isfinite(w).all()):
        bad = taus[~torch.isfinite(w)][0].item()
        raise CalibrationError(f"{where}: w is not finite at tau = {bad:.3g}")
    rising = torch.diff(w) > 1e-12
    if bool(rising.any()):
        k = int(rising.nonzero()[0, 0])
        raise CalibrationError(
            f"{where}: w rises with tau between tau = {taus[k].item():.4g} (w = {w[k].item():.6g}) and "
            f"{taus[k + 1].item():.4g} (w = {w[k + 1].item():.6g}); the calibration assumes w falls as tau grows at "
            f"a fixed ratio, so the half-weight temperature may not be unique. Pass tau_pos / tau_neg yourself.")
    if not (w[0].item() > HALF > w[-1].item()):
        raise CalibrationError(
            f"{where}: w goes from {w[0].item():.6g} to {w[-1].item():.6g} for tau in [{TAU_RANGE[0]:g}, "
            f"{TAU_RANGE[1]:g}] and never crosses 1/2, so no temperature halves the gradient at this edge. "
            f"Pass tau_pos / tau_neg yourself.")
    k = int((w <= HALF).nonzero()[0, 0])  # first grid point at or below 1/2: the root lies in (taus[k-1], taus[k]]
    lo, hi = math.log(taus[k - 1].item()), math.log(taus[k].item())
    for _ in range(80):  # bisection in log tau: the bracket shrinks to float64 resolution
        mid = 0.5 * (lo + hi)
        if _weights(weight, x[:1], torch.tensor([math.exp(mid)], dtype=torch.float64), name).item() > HALF:
            lo = mid
        else:
            hi = mid
    tau = math.exp(0.5 * (lo + hi))
    w_tau = _weights(weight, x[:1], torch.tensor([tau], dtype=torch.float64), name).item()
    if abs(w_tau - HALF) > 1e-6:  # a jump across 1/2: w is not continuous there
        raise CalibrationError(f"{where}: w jumps across 1/2 near tau = {tau:.6g} (w = {w_tau:.6g}); the "
                               f"calibration assumes w is continuous in tau. Pass tau_pos / tau_neg yourself.")
    return tau


def _weights(weight, x: torch.Tensor, taus: torch.Tensor, name: str) -> torch.Tensor:
    try:
        w = weight(x, taus)
    except Exception as exc:
        raise CalibrationError(f"{name}: weight(x, tau) failed for a tensor tau ({exc}); use torch ops") from exc
    if not isinstance(w, torch.Tensor) or w.shape != x.shape:
        raise CalibrationError(f"{name}: weight(x, tau) must return a tensor shaped like x, got "
                               f"{getattr(w, 'shape', type(w).__name__)}")
    return w.to(torch.float64)


def tau_for_edge(name: str, edge: float, numeric: bool = False) -> float:
    """The temperature that halves the gradient at the log-ratio `edge`: closed form when the gate has one (and
    `numeric` is False), else `solve_tau`."""
    name = gate_name(name)
    tau = None if numeric else closed_form_tau(name, edge)
    return tau if tau is not None else solve_tau(weight_function(name), edge, name)


def taus_from_clip(gate: str | Gate, clip_low: float, clip_high: float, numeric: bool = False) -> tuple[float, float]:
    """(tau_pos, tau_neg) with w = 1/2 at r = 1 + clip_high for A > 0 and at r = 1 - clip_low for A <= 0.

    gate: a gate name (a registered user gate too), an SSPO loss mode (`sspo`, `sspo_<gate>`, `sspo_sapo`), `sapo`,
    or a Gate.
    numeric: solve numerically even where a closed form exists (to check one against the other)."""
    x_pos, x_neg = edges(clip_low, clip_high)
    if isinstance(gate, Gate) and RESERVED_GATES.get(gate.name) is gate:
        gate = gate.name  # SAPO_GATE (sspo_sapo): SAPO's rule, as for its name
    if isinstance(gate, Gate):
        return solve_tau(gate.weight, x_pos, gate.name), solve_tau(gate.weight, x_neg, gate.name)
    return tau_for_edge(gate, x_pos, numeric), tau_for_edge(gate, x_neg, numeric)


def plot_weights(path, clip_low: float = 0.2, clip_high: float = 0.28, gates: list[str] | None = None):
    """A figure of every gate's w(r) at its calibrated temperatures beside the hard clip's step, for A > 0 and
    A <= 0 (and the arctan gate at SAPO's 1.0 / 1.05 for scale). Returns the path written."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gates = gates or [*GATES, SAPO]
    x_pos, x_neg = edges(clip_low, clip_high)
    r = torch.logspace(math.log10(0.25), math.log10(4.0), 801, dtype=torch.float64)  # (N,)
    x = r.log()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for ax, positive, edge in ((axes[0], True, x_pos), (axes[1], False, x_neg)):
        step = (x <= x_pos) if positive else (x >= x_neg)
        ax.plot(r, step.double(), color="k", lw=2.2, label=f"hard clip {clip_low:g}/{clip_high:g} (PPO, DAPO)")
        for name in gates:
            tau = taus_from_clip(name, clip_low, clip_high)[0 if positive else 1]
            ax.plot(r, weight_function(name)(x, tau), label=f"{name}, tau = {tau:.3g}")
        sapo_tau = 1.0 if positive else 1.05
        ax.plot(r, GATES["arctan"].weight(x, sapo_tau), color="gray", ls="--",
                label=f"arctan at SAPO's default tau = {sapo_tau:g}")
        ax.axhline(HALF, color="gray", lw=0.7, ls=":")
        ax.axvline(math.exp(edge), color="k", lw=0.7, ls=":")
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xticks([0.25, 0.5, 0.8, 1, 1.28, 2, 4], ["0.25", "0.5", "0.8", "1", "1.28", "2", "4"])
        ax.legend(fontsize=7, loc="upper right")
        ax.set_xlabel("ratio r = pi / pi_old")
        ax.set_title(f"A {'> 0' if positive else '<= 0'}: half weight at r = {math.exp(edge):.3g}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("gradient weight w")
    fig.suptitle("Soft gates calibrated to a clip range: w = 1/2 where the hard clip cuts the gradient off", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


PROG = "python -m sspo_verl.tools.calibrate"
CLI_FLAGS = ("--clip-low ", "--clip-high ")


def main(argv=None) -> int:
    p = cli.ArgumentParser(prog=PROG, description="Temperatures at which a soft gate passes half its gradient at a PPO "
                                                  "clip range's edges (A > 0: r = 1 + clip-high; A <= 0: r = 1 - clip-low).")
    p.add_argument("--gate", help=f"{', '.join(GATES)}, a user gate, sspo / sspo_<gate>, sspo_sapo, or {SAPO}")
    p.add_argument("--plot", metavar="PNG", help="instead: draw every gate's w(r) at its calibrated temperatures")
    p.add_argument("--clip-low", type=float, required=True, help="e.g. 0.2")
    p.add_argument("--clip-high", type=float, required=True, help="e.g. 0.28")
    p.add_argument("--import", dest="modules", action="append", default=[], metavar="MODULE",
                   help="a module to import first, e.g. one that calls sspo_verl.register_gate (repeatable)")
    p.add_argument("--numeric", action="store_true", help="solve numerically even where a closed form exists")
    args = p.parse_args(argv)
    if not args.gate and not args.plot:
        p.error("--gate is required (or --plot PNG)")
    return cli.run(p.prog, _calibrate, args)


def _calibrate(args) -> int:
    edges(args.clip_low, args.clip_high, CLI_FLAGS)  # the arguments first, before any work
    if args.plot:
        require_module("matplotlib", "compare", f"{PROG} --plot")
        folder = os.path.dirname(os.path.abspath(args.plot))
        if not os.path.isdir(folder):
            raise CalibrationError(f"--plot {args.plot}: the folder {folder} does not exist; create it or pick another path")
    for module in args.modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise CalibrationError(f"--import {module}: {exc} (is its folder on PYTHONPATH?)") from exc
        except SSPOError as exc:  # e.g. its register_gate refused the gate: the message says why
            raise type(exc)(f"--import {module}: {exc}") from exc
        except Exception as exc:  # a bug in the user's module: where, in one line
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            raise CalibrationError(f"--import {module}: importing it raised {type(exc).__name__}: {exc} "
                                   f"({frame.filename}, line {frame.lineno})") from exc
    if args.plot:
        print(plot_weights(args.plot, args.clip_low, args.clip_high))
        return 0
    tau_pos, tau_neg = taus_from_clip(args.gate, args.clip_low, args.clip_high, numeric=args.numeric)
    print(f"tau_pos={tau_pos:.6g} tau_neg={tau_neg:.6g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
