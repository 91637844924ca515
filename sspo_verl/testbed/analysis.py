"""Measures of a testbed run beyond its final accuracy: learning over the cold start, early-curve measures, and the
drift of each mini-batch index. Records as the testbed writes them (grpo.py, jobs.py).

    gain              final held-out accuracy minus the cold start's (step 0)
    auc               mean held-out accuracy over the run: the area under the curve (trapezoids over the evaluated
                      steps) divided by the number of steps; it rewards learning early, where final accuracy does not
    steps_to_target   the first evaluated step with accuracy >= cold start + TARGET_GAIN (None: never)
    drift             per mini-batch index k = 0 .. M-1, the mean over steps (and seeds) of abs_log_ratio, ppo_kl,
                      pg_clipfrac (hard-clip methods), w_below_half (soft methods) and outside_clip_band
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from .grpo import DRIFT_KEYS

TARGET_GAIN = 0.15  # the bar: a clear rise over the cold start


@dataclass
class RunMeasures:
    start: float
    final: float
    best: float
    auc: float
    steps_to_target: int | None

    @property
    def gain(self) -> float:
        return self.final - self.start


def curve(records: list[dict], key: str = "val_acc") -> tuple[np.ndarray, np.ndarray]:
    """(steps, accuracy) of one run's evaluations, sorted by step."""
    pts = sorted((r["step"], r[key]) for r in records if r.get(key) is not None)
    if not pts:
        raise ValueError(f"no {key} in the run's records")
    steps, acc = zip(*pts)
    return np.asarray(steps, dtype=float), np.asarray(acc, dtype=float)


def measure(records: list[dict], key: str = "val_acc") -> RunMeasures:
    """The measures of one run (its records: one method, knob, M and seed)."""
    steps, acc = curve(records, key)
    if steps[0] != 0:
        raise ValueError(f"the run has no {key} at step 0 (the cold start); first at step {steps[0]:g}")
    span = steps[-1] - steps[0]
    auc = float(np.trapezoid(acc, steps) / span) if span > 0 else float(acc[0])
    hit = np.nonzero((acc >= acc[0] + TARGET_GAIN - 1e-9) & (steps > 0))[0]
    return RunMeasures(start=float(acc[0]), final=float(acc[-1]), best=float(acc.max()), auc=auc,
                       steps_to_target=int(steps[hit[0]]) if len(hit) else None)


def group_runs(records: list[dict], keys: tuple[str, ...] = ("method", "knob", "mini_batches")) -> dict:
    """{(values of `keys`): {seed: records}}."""
    groups: dict = defaultdict(lambda: defaultdict(list))
    for r in records:
        groups[tuple(r.get(k, "") for k in keys)][r["seed"]].append(r)
    return {g: dict(seeds) for g, seeds in groups.items()}


def drift_by_index(runs: dict[int, list[dict]]) -> dict[str, list[float]]:
    """{drift key: [mean over steps and seeds at mini-batch index k for k in 0 .. M-1]}."""
    out = {}
    for key in DRIFT_KEYS:
        rows = [r[f"{key}_mb"] for run in runs.values() for r in run if f"{key}_mb" in r]
        if rows:
            out[key] = np.mean(np.asarray(rows, dtype=float), axis=0).tolist()
    return out


def mean_response_tokens(records: list[dict]) -> float:
    """The mean response length in tokens (EOS included) over every rollout of the records' runs and steps."""
    lengths = [r["response_len"] for r in records if "response_len" in r]
    return float(np.mean(lengths)) if lengths else float("nan")


def mean_std(values) -> tuple[float, float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return (float(np.mean(values)), float(np.std(values))) if values else (float("nan"), float("nan"))


def learning_table(records: list[dict], key: str = "val_acc") -> str:
    """Markdown: per method (and knob, M): cold start, final, gain, AUC, steps to cold start + TARGET_GAIN."""
    split = key.removesuffix("_acc")
    lines = [f"| method | knob | M | seeds | cold start ({split}) | final ({split}) | gain | AUC | "
             f"steps to +{TARGET_GAIN:g} |", "|---|---|---|---|---|---|---|---|---|"]
    for (method, knob, m), seeds in group_runs(records).items():
        ms = [measure(run, key) for run in seeds.values()]
        reached = [x.steps_to_target for x in ms if x.steps_to_target is not None]
        cells = [f"{mean_std([getattr(x, a) for x in ms])[0]:.3f}" for a in ("start", "final")]
        g, gs = mean_std([x.gain for x in ms])
        auc = mean_std([x.auc for x in ms])[0]
        to = f"{np.mean(reached):.1f} ({len(reached)}/{len(ms)})" if reached else f"never (0/{len(ms)})"
        lines.append(f"| {method} | {knob or 'default'} | {m} | {len(ms)} | {cells[0]} | {cells[1]} | "
                     f"{g:+.3f} ± {gs:.3f} | {auc:.3f} | {to} |")
    return "\n".join(lines)


def drift_table(records: list[dict]) -> str:
    """Markdown: per method (and knob, M) and mini-batch index, the drift means (see the module docstring)."""
    groups = group_runs(records)
    width = max((m for _, _, m in groups), default=1)
    lines = ["| method | M | measure | " + " | ".join(f"k={k}" for k in range(width)) + " |",
             "|---|---|---|" + "---|" * width]
    for (method, knob, m), seeds in groups.items():
        for key, values in drift_by_index(seeds).items():
            cells = [f"{v:.3g}" for v in values] + [""] * (width - len(values))
            lines.append(f"| {method}{f' [{knob}]' if knob else ''} | {m} | {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def stability_table(runs: dict[tuple[str, int, int], list[dict]]) -> str:
    """Markdown, per method and M (runs: {(method, M, seed): records}): the paper's stability measures.

    token / sequence IW variance: mean over steps of the variance of r_t and of exp(mean_t log r_t) (grpo.py);
    entropy: the rollout policy's mean token entropy at the first and the last step, and its lowest over training;
    collapses: runs whose final held-out accuracy fell below half their best and at least 0.05 under it, or whose
    loss was not finite (the rule of sspo_verl.tools.report, shared with the comparison tool)."""
    from ..tools.report import summarize

    groups: dict = defaultdict(dict)
    for (method, m, seed), records in runs.items():
        groups[(method, m)][seed] = records
    lines = ["| method | M | seeds | token IW variance | sequence IW variance | entropy first step | entropy last step "
             "| lowest entropy | collapses |", "|---|---|---|---|---|---|---|---|---|"]
    for (method, m), seeds in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        steps = [[r for r in sorted(recs, key=lambda r: r["step"]) if "entropy" in r] for recs in seeds.values()]
        mean = lambda key: np.mean([r[key] for run in steps for r in run if key in r])  # noqa: E731
        first, last = np.mean([run[0]["entropy"] for run in steps]), np.mean([run[-1]["entropy"] for run in steps])
        lowest = np.mean([min(r["entropy"] for r in run) for run in steps])
        collapses = summarize([r for recs in seeds.values() for r in recs], method)[0].collapses
        lines.append(f"| {method} | {m} | {len(seeds)} | {mean('token_iw_var'):.3g} | {mean('seq_iw_var'):.3g} | "
                     f"{first:.3f} | {last:.3f} | {lowest:.3f} | {collapses}/{len(seeds)} |")
    return "\n".join(lines)


PHASES = ("eval", "sample", "reward", "old_log_prob", "update", "sync")  # grpo.GRPOTrainer.step's time_<phase>


def time_table(records: list[dict]) -> str:
    """Markdown: where a step spends its time, per M (mean seconds per step over every run's steps)."""
    by_m: dict = defaultdict(list)
    for r in records:
        if "time_s" in r:
            by_m[r.get("mini_batches", 0)].append(r)
    lines = ["| M | steps | " + " | ".join(PHASES) + " | total s/step |", "|---|---|" + "---|" * (len(PHASES) + 1)]
    for m, steps in sorted(by_m.items()):
        total = np.mean([r["time_s"] for r in steps])
        cells = [f"{np.mean([r.get(f'time_{p}', 0.0) for r in steps]):.3f} "
                 f"({100 * np.mean([r.get(f'time_{p}', 0.0) for r in steps]) / total:.0f}%)" for p in PHASES]
        lines.append(f"| {m} | {len(steps)} | " + " | ".join(cells) + f" | {total:.3f} |")
    return "\n".join(lines)
