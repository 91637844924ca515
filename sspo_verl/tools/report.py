"""Plots and a markdown table from per-step metric records, for the testbed and for real verl runs.

A record is one step of one run: {"method", "seed", "step", and any of the metrics below}. The testbed writes
them directly; `sspo_verl.tools.compare` maps verl's logged keys onto the same names.

    reward        mean training reward of the step's rollouts
    val_acc       held-out accuracy (evaluated every few steps)
    entropy       mean token entropy of the rollout policy
    ppo_kl, grad_norm, pg_clipfrac, token_iw_var, seq_iw_var, sspo/<gate metric>
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COLLAPSE_FRACTION = 0.5  # a run collapses when its final held-out accuracy is below half its best ...
COLLAPSE_MIN_DROP = 0.05  # ... and at least this far below it (so evaluation noise near zero is no collapse)
MAX_PLOTTED = 20  # rows (methods) beyond which the plots are skipped: more bands than that is no figure anyone reads


@dataclass
class MethodSummary:
    method: str
    seeds: int
    final_acc_mean: float
    final_acc_std: float
    steps_to_target: list[int | None]  # per seed: first step after the start with val_acc >= the baseline's final mean
    collapses: int
    final_reward: float  # mean reward over the last quarter of steps, seeds averaged
    token_iw_var: float  # mean over steps and seeds (nan when not logged)
    final_entropy: float


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(records: list[dict], path: str | Path) -> None:
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def _runs(records: list[dict]) -> dict[str, dict[int, list[dict]]]:
    """method -> seed -> records sorted by step."""
    runs: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        runs[r["method"]][r["seed"]].append(r)
    return {m: {s: sorted(rs, key=lambda r: r["step"]) for s, rs in seeds.items()} for m, seeds in runs.items()}


def _series(run: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["step"], r[key]) for r in run if r.get(key) is not None]
    steps, vals = zip(*pts) if pts else ((), ())
    return np.asarray(steps, dtype=float), np.asarray(vals, dtype=float)


def _mean(values) -> float:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def _std(values) -> float:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.std(values)) if values else float("nan")


def summarize(records: list[dict], baseline: str) -> list[MethodSummary]:
    """One summary per method, the baseline first. The target accuracy is the baseline's mean final accuracy."""
    runs = _runs(records)
    if baseline not in runs:
        raise ValueError(f"baseline {baseline!r} has no records; methods present: {', '.join(sorted(runs))}")

    def final_acc(run):
        _, acc = _series(run, "val_acc")
        return float(acc[-1]) if len(acc) else float("nan")

    target = _mean(final_acc(run) for run in runs[baseline].values())
    out = []
    for method in [baseline] + sorted(m for m in runs if m != baseline):
        seeds = runs[method]
        finals = [final_acc(run) for run in seeds.values()]
        to_target, collapses, rewards, iw, entropy = [], 0, [], [], []
        for run in seeds.values():
            steps, acc = _series(run, "val_acc")
            steps, acc = steps[np.isfinite(acc)], acc[np.isfinite(acc)]
            # steps after the first update only: step 0 is the shared starting point, not something a method reached
            hit = np.nonzero((acc >= target - 1e-9) & (steps > steps.min(initial=0)))[0] if math.isfinite(target) else []
            to_target.append(int(steps[hit[0]]) if len(hit) else None)
            losses = [r.get("pg_loss") for r in run if r.get("pg_loss") is not None]
            dropped = len(acc) and acc[-1] < COLLAPSE_FRACTION * acc.max() and acc.max() - acc[-1] >= COLLAPSE_MIN_DROP
            if dropped or not all(map(math.isfinite, losses)):
                collapses += 1
            _, rew = _series(run, "reward")
            rewards.append(_mean(rew[-max(1, len(rew) // 4):]))
            iw.append(_mean(_series(run, "token_iw_var")[1]))
            ent = _series(run, "entropy")[1]
            entropy.append(float(ent[-1]) if len(ent) else float("nan"))
        out.append(MethodSummary(method, len(seeds), _mean(finals), _std(finals),
                                 to_target, collapses, _mean(rewards), _mean(iw), _mean(entropy)))
    return out


HELD_OUT = "held-out acc"  # what val_acc is called where the caller does not name its metric


def markdown_table(summaries: list[MethodSummary], held_out: str = HELD_OUT) -> str:
    """The summary table; `held_out` names the metric the records' val_acc holds (its column headers)."""
    baseline = summaries[0].method
    lines = [f"| method | seeds | final {held_out} (mean ± std) | steps to {baseline}'s final acc | collapses "
             f"| reward, last quarter | token IW variance | final entropy |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        reached = [t for t in s.steps_to_target if t is not None]
        steps = f"{np.mean(reached):.1f} ({len(reached)}/{s.seeds})" if reached else f"never (0/{s.seeds})"
        acc = f"{s.final_acc_mean:.3f} ± {s.final_acc_std:.3f}" if math.isfinite(s.final_acc_mean) else "n/a"
        lines.append(f"| {s.method} | {s.seeds} | {acc} | {steps} "
                     f"| {s.collapses}/{s.seeds} | {s.final_reward:.3f} | {_fmt(s.token_iw_var)} | {_fmt(s.final_entropy)} |")
    return "\n".join(lines)


def _fmt(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.3g}"


def _band(ax, runs: dict[int, list[dict]], key: str, label: str, log: bool = False) -> bool:
    """Mean over seeds with a ±1 std band (min-max on a log scale), on the steps every seed logged.
    False when no seed logged `key`."""
    series = [_series(run, key) for run in runs.values()]
    series = [(s, v) for s, v in series if len(s)]
    if not series:
        return False
    common = sorted(set.intersection(*(set(s.tolist()) for s, _ in series)))
    if not common:
        return False
    vals = np.stack([np.interp(common, s, v) for s, v in series])  # (seeds, steps)
    mean, std = vals.mean(0), vals.std(0)
    low, high = (vals.min(0), vals.max(0)) if log else (mean - std, mean + std)
    (line,) = ax.plot(common, mean, label=label)
    ax.fill_between(common, low, high, color=line.get_color(), alpha=0.2)
    if log and (vals > 0).any():  # a series of zeros (an on-policy run's variance) has no log scale
        ax.set_yscale("log")
    return True


FIGURES = {  # file -> panels (record key, title, log scale); each panel's y axis is labelled with its key
    "reward_accuracy.png": [("reward", "training reward", False), ("val_acc", "held-out accuracy", False)],
    "importance_weights.png": [("token_iw_var", "token importance-weight variance", True),
                               ("seq_iw_var", "sequence importance-weight variance", True),
                               ("ppo_kl", "ppo_kl (pi_old vs pi)", False)],
    "entropy.png": [("entropy", "token entropy", False)],
}


def figures(records: list[dict], title: str = "", held_out: str = HELD_OUT) -> dict[str, "matplotlib.figure.Figure"]:
    """file name -> figure, for every figure with at least one logged series. A panel whose key no run logged
    says so instead of drawing an empty axis; the val_acc panel is titled with `held_out`, the metric it holds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, out = _runs(records), {}
    for name, panels in FIGURES.items():
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
        drawn = False
        for ax, (key, label, log) in zip(axes[0], panels):
            panel_drawn = False
            for method, seeds in runs.items():
                panel_drawn |= _band(ax, seeds, key, f"{method} ({len(seeds)} seeds)", log)
            ax.set_title(label + (f"\n{held_out.replace('`', '')}" if key == "val_acc" and held_out != HELD_OUT else ""))
            ax.set_xlabel("step")
            ax.set_ylabel(key)
            if panel_drawn:
                ax.grid(alpha=0.3)
            else:
                ax.text(0.5, 0.5, f"no run logged {key}", ha="center", va="center", transform=ax.transAxes)
                ax.set_xticks([])
                ax.set_yticks([])
            drawn |= panel_drawn
        if drawn:
            next(ax for ax in axes[0] if ax.lines).legend(fontsize=8)
            fig.suptitle(title, fontsize=9)
            fig.tight_layout()
            out[name] = fig
        else:
            plt.close(fig)
    return out


def plot(records: list[dict], out_dir: str | Path, title: str = "", held_out: str = HELD_OUT) -> list[Path]:
    """reward_accuracy.png, importance_weights.png, entropy.png in `out_dir`; returns the files written."""
    import matplotlib.pyplot as plt

    written = []
    for name, fig in figures(records, title, held_out).items():
        fig.savefig(Path(out_dir) / name, dpi=110)
        plt.close(fig)
        written.append(Path(out_dir) / name)
    return written


def write_report(records: list[dict], out_dir: str | Path, baseline: str, header: str = "",
                 held_out: str = HELD_OUT) -> Path:
    """summary.md (the table, the plots, the collapse rule) and the plots, in `out_dir`; `held_out` names the metric
    the records' val_acc holds."""
    out_dir = Path(out_dir)
    summaries = summarize(records, baseline)
    table = markdown_table(summaries, held_out)
    if len(summaries) <= MAX_PLOTTED:
        images = plot(records, out_dir, title=header.splitlines()[0].lstrip("# ") if header else "", held_out=held_out)
    else:
        images = []
        table += (f"\n\nNo plots: {len(summaries)} rows, more than {MAX_PLOTTED} bands per panel (compare fewer runs; "
                  f"python -m sspo_verl.tools.compare --where keeps some of the testbed's).")
    text = [header, "", table, "",
            f"Collapse: final held-out accuracy{f' ({held_out})' if held_out != HELD_OUT else ''} below "
            f"{COLLAPSE_FRACTION:g} x the run's best and at least "
            f"{COLLAPSE_MIN_DROP:g} below it, or a non-finite loss. "
            f"Steps to target: the first evaluation after the start at or above {baseline}'s mean final accuracy, "
            f"mean over the seeds that reached it (how many did).", ""]
    text += [f"![{p.stem}]({p.name})" for p in images]
    path = out_dir / "summary.md"
    path.write_text("\n".join(text).lstrip() + "\n")
    return path
