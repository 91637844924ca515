"""The fair sweep: every method at several values of its own knob, across off-policy degrees M, 3 seeds; each
method's knob chosen on the val split and reported on the test split (two disjoint held-out sets).

    python -m sspo_verl.testbed.sweep --out docs/results/sweep-cpu              # the committed sweep (about 1.5 h)
    python -m sspo_verl.testbed.sweep --drift-map --out docs/results/drift-map  # drift vs lr and M (minutes)

Knobs (KNOB_GRID): the clip range of grpo_dapo, gmpo and gspo at 0.5x, 1x and 2x their defaults; the temperatures
of sapo and every SSPO gate at SAPO's default 1.0/1.05 and at 0.5x, 1x and 2x the ones calibrated to the clip
0.2/0.28 (sspo_verl.tools.calibrate). M in {1, 2, 4, 8, 16} with the rollout batch fixed (32 prompts x 8 samples).

At M = 1 every ratio is exactly 1 (the old log-probs are recomputed by the same engine on the same weights), so a
clip range or an SSPO temperature cannot change the update: the hard clips pass r = 1 with the same gradient, and
the SSPO kernel's weight is w(0) = 1 exactly for any tau. Those methods run their reference knob once at M = 1 and
share its records with their other knobs, after checking that every step's max |log r| was exactly 0 (else the
other knobs run too). SAPO is not shared: verl's autograd of sigmoid(tau (r - 1)) 4 / tau gives (4 / tau) tau / 4,
1 only up to rounding, so its M = 1 runs differ in the last bits between temperatures; nor is sspo_sapo, whose
on-policy s_i w = (2 / tau)(tau / 2) is 1 only up to rounding too.

Outputs in the run folder: config.json (grid, wall and CPU time, machine load), metrics.jsonl.gz (every record),
runs.json (per run measures), chosen.json, summary.md (best-vs-best table, paired differences, per-knob table,
stability, drift), central.png (test accuracy vs M at the chosen knobs), robustness.png (test accuracy vs each
method's knob), drift.png, stability.png (entropy and importance-weight variances over training at the largest M).
The run folder is resumable (store.py): rerunning the same command skips the finished runs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import sys
import time
from collections import defaultdict
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from .. import cli
from ..loss.methods import METHODS
from . import options, store

SWEEP_METHODS = ["grpo_dapo", "gmpo", "gspo", "sapo", "sspo", "sspo_sigmoid", "sspo_erf", "sspo_softsign"]
MINI_BATCHES = (1, 2, 4, 8, 16)
WIDTH_FACTORS = (0.5, 1.0, 2.0)  # trust-region width vs the reference: clip x f, tau x 1/f
REFERENCE_CLIP = (0.2, 0.28)  # the clip the temperatures are calibrated to (DAPO's)
SAPO_DEFAULT = {"tau_pos": 1.0, "tau_neg": 1.05}
NOT_SHARED_AT_M1 = {"sapo", "sspo_sapo"}  # see the module docstring
DRIFT_MAP_LRS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)

def knob_grid(method: str, widths=WIDTH_FACTORS, sapo_default: bool = True) -> list[tuple[str, dict, float]]:
    """[(label, actor overrides, width factor)] of `method`; the reference knob (width 1) first. widths: the
    factors of the trust region's width relative to the reference; sapo_default: the soft methods also run at
    SAPO's published 1.0/1.05."""
    settings = METHODS[method]
    if "tau_pos" in settings:
        from ..tools.calibrate import taus_from_clip

        tau_pos, tau_neg = taus_from_clip(settings["loss_mode"], *REFERENCE_CLIP)
        grid = [(f"tau {tau_pos / f:.3g}/{tau_neg / f:.3g}" + (" (calibrated to 0.2/0.28)" if f == 1 else ""),
                 {"tau_pos": tau_pos / f, "tau_neg": tau_neg / f}, f) for f in sorted(widths, key=lambda f: f != 1)]
        sapo = SAPO_DEFAULT["tau_pos"]
        return grid + ([("tau 1/1.05 (SAPO default)", dict(SAPO_DEFAULT), tau_pos / sapo)] if sapo_default else [])
    keys = [k for k in ("clip_ratio_low", "clip_ratio_high", "clip_ratio") if k in settings]
    grid = []
    for f in sorted(widths, key=lambda f: f != 1):
        knob = {k: settings[k] * f for k in keys}
        label = f"clip {knob['clip_ratio_low']:.3g}/{knob['clip_ratio_high']:.3g}" + (" (default)" if f == 1 else "")
        grid.append((label, knob, f))
    return grid


def grids(args) -> dict[str, list[tuple[str, dict, float]]]:
    """{method: its knob grid} of a parsed command line."""
    return {m: knob_grid(m, args.widths, not args.no_sapo_default) for m in args.methods}


def sweep_runs(methods: list[str], mini_batches, seeds: int, grid: dict | None = None):
    """(runs to execute, {shared run: the M = 1 run whose records it reuses}). grid: {method: knob_grid} (default:
    knob_grid's)."""
    from .jobs import Run

    grid_of = grid or {method: knob_grid(method) for method in methods}
    runs, shared = [], {}
    for m in mini_batches:
        for method in methods:
            grid = grid_of[method]
            for seed in range(seeds):
                ref = Run(method, seed, m, tuple(grid[0][1].items()), grid[0][0])
                runs.append(ref)
                for label, knob, _ in grid[1:]:
                    run = Run(method, seed, m, tuple(knob.items()), label)
                    if m == 1 and method not in NOT_SHARED_AT_M1:
                        shared[run] = ref
                    else:
                        runs.append(run)
    return runs, shared


def _cost(run) -> float:
    return run.mini_batches  # a step's time grows with M: start the slow ones first, so the workers end together


def share_on_policy(results: dict, shared: dict) -> list:
    """Copy each shared run's records from its M = 1 reference; returns the shared runs whose reference was not
    exactly on-policy (they must run themselves)."""
    missing = []
    for run, ref in shared.items():
        records = results[ref]["records"]
        if any(r.get("max_abs_log_ratio", 0.0) != 0.0 for r in records):
            missing.append(run)
            continue
        tags = {"knob": run.label, **dict(run.knob)}
        results[run] = {"run": asdict(run), "wall_s": 0.0, "shared_from": ref.label,
                        "records": [{**{k: v for k, v in r.items() if k not in dict(ref.knob)}, **tags} for r in records]}
    return missing


def run_measures(results: dict) -> list[dict]:
    from .analysis import measure

    rows = []
    for run, result in results.items():
        row = {**asdict(run), "wall_s": result["wall_s"], "shared_from": result.get("shared_from")}
        for key in ("val_acc", "test_acc"):
            m = measure(result["records"], key)
            split = key.removesuffix("_acc")
            row.update({f"{split}_start": m.start, f"{split}_final": m.final, f"{split}_best": m.best,
                        f"{split}_auc": m.auc, f"{split}_steps_to_target": m.steps_to_target})
        rows.append(row)
    return rows


def choose(rows: list[dict], methods: list[str], grid: dict | None = None) -> dict[str, dict]:
    """Per method: the knob with the highest val final accuracy, averaged over M and seeds (ties: the reference)."""
    grid = grid or {method: knob_grid(method) for method in methods}
    chosen = {}
    for method in methods:
        scores = defaultdict(list)
        for r in rows:
            if r["method"] == method:
                scores[r["label"]].append(r["val_final"])
        order = [label for label, _, _ in grid[method]]
        best = max(order, key=lambda label: (np.mean(scores[label]), -order.index(label)))
        knob = dict(next(k for label, k, _ in grid[method] if label == best))
        chosen[method] = {"label": best, "knob": knob, "val_final_mean": float(np.mean(scores[best])),
                          "all": {label: float(np.mean(scores[label])) for label in order}}
    return chosen


def _ms(values) -> str:
    values = [v for v in values if v is not None]
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "n/a"


def best_vs_best_table(rows: list[dict], chosen: dict, mini_batches) -> str:
    """Markdown, test split: each method at its chosen knob, final accuracy per M, AUC and gain."""
    head = ("| method | chosen knob (on val) | " + " | ".join(f"M={m}" for m in mini_batches)
            + " | mean over M | AUC, mean over M | gain over cold start, mean over M |")
    lines = [head, "|---|---|" + "---|" * (len(mini_batches) + 3)]
    for method, c in chosen.items():
        mine = [r for r in rows if r["method"] == method and r["label"] == c["label"]]
        cells = [_ms([r["test_final"] for r in mine if r["mini_batches"] == m]) for m in mini_batches]
        lines.append(f"| {method} | {c['label']} | " + " | ".join(cells) + f" | {_ms([r['test_final'] for r in mine])} "
                     f"| {_ms([r['test_auc'] for r in mine])} | {_ms([r['test_final'] - r['test_start'] for r in mine])} |")
    return "\n".join(lines)


def knob_table(rows: list[dict], grid: dict, mini_batches, split: str = "val") -> str:
    """Markdown: every method and knob (grid: {method: knob_grid}), final accuracy (mean over seeds) per M on
    `split`."""
    lines = [f"| method | knob | " + " | ".join(f"M={m}" for m in mini_batches) + " | mean |",
             "|---|---|" + "---|" * (len(mini_batches) + 1)]
    for method, knobs in grid.items():
        for label, _, _ in knobs:
            mine = [r for r in rows if r["method"] == method and r["label"] == label]
            cells = [f"{np.mean([r[f'{split}_final'] for r in mine if r['mini_batches'] == m]):.3f}" for m in mini_batches]
            lines.append(f"| {method} | {label} | " + " | ".join(cells)
                         + f" | {np.mean([r[f'{split}_final'] for r in mine]):.3f} |")
    return "\n".join(lines)


def plot(rows: list[dict], results: dict, chosen: dict, grid: dict, mini_batches, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .analysis import drift_by_index

    methods = list(grid)
    written = []
    # central: test accuracy vs M at the chosen knob (final, and AUC)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for method in methods:
        label = chosen[method]["label"]
        for ax, key in zip(axes, ("test_final", "test_auc")):
            vals = [[r[key] for r in rows if r["method"] == method and r["label"] == label and r["mini_batches"] == m]
                    for m in mini_batches]
            ax.errorbar(mini_batches, [np.mean(v) for v in vals], yerr=[np.std(v) for v in vals], capsize=3,
                        marker="o", label=f"{method} [{label}]", alpha=0.85)
    start = np.mean([r["test_start"] for r in rows])
    for ax, title in zip(axes, ("final test accuracy", "test accuracy, mean over the run (AUC)")):
        ax.axhline(start, color="gray", ls=":", label=f"cold start ({start:.3f})")
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(mini_batches), [str(m) for m in mini_batches])
        ax.set_xlabel("M: optimizer steps per rollout batch (off-policy degree)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Each method at its knob chosen on val; mean ± std over seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "central.png", dpi=110)
    plt.close(fig)
    written.append(out / "central.png")

    # robustness: test final accuracy vs the knob's trust-region width, one line per M
    cols = 4
    fig, axes = plt.subplots(math.ceil(len(methods) / cols), cols, figsize=(16, 3.6 * math.ceil(len(methods) / cols)),
                             squeeze=False, sharey=True)
    for ax, method in zip(axes.flat, methods):
        knobs = sorted(grid[method], key=lambda g: g[2])
        for m in mini_batches:
            ys = [np.mean([r["test_final"] for r in rows if r["method"] == method and r["label"] == label
                           and r["mini_batches"] == m]) for label, _, _ in knobs]
            ax.plot([w for _, _, w in knobs], ys, marker="o", label=f"M={m}")
        for label, _, w in knobs:
            if label == chosen[method]["label"]:
                ax.axvline(w, color="k", ls="--", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_title(method, fontsize=9)
        ax.set_xlabel("trust-region width vs reference (clip x f, tau x 1/f)", fontsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(methods):]:
        ax.axis("off")
    axes[0][0].set_ylabel("final test accuracy")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Robustness: final test accuracy (mean over seeds) vs each method's knob; dashed: chosen on val",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "robustness.png", dpi=110)
    plt.close(fig)
    written.append(out / "robustness.png")

    # drift per mini-batch index at the largest M, chosen knobs
    m_max = max(mini_batches)
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for method in methods:
        runs = {run.seed: res["records"] for run, res in results.items()
                if run.method == method and run.label == chosen[method]["label"] and run.mini_batches == m_max}
        drift = drift_by_index(runs)
        for ax, key in zip(axes, ("abs_log_ratio", "outside_clip_band", "pg_clipfrac" if "pg_clipfrac" in drift
                                  else "w_below_half")):
            if key in drift:
                ax.plot(range(m_max), drift[key], marker=".", label=method)
    for ax, title in zip(axes, ("mean |log r|", "tokens outside a 0.2/0.28 clip band",
                                "hard-clip fraction (clip methods) or w < 1/2 (soft)")):
        ax.set_title(f"{title}, M={m_max}", fontsize=9)
        ax.set_xlabel("mini-batch index k")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "drift.png", dpi=110)
    plt.close(fig)
    written.append(out / "drift.png")

    # stability over training at the largest M, chosen knobs: entropy and importance-weight variances per step
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for method in methods:
        runs = [res["records"] for run, res in results.items()
                if run.method == method and run.label == chosen[method]["label"] and run.mini_batches == m_max]
        for ax, key in zip(axes, ("entropy", "token_iw_var", "seq_iw_var")):
            steps = sorted({r["step"] for recs in runs for r in recs if key in r})
            ax.plot(steps, [np.mean([r[key] for recs in runs for r in recs if r["step"] == k and key in r])
                            for k in steps], marker=".", label=method)
    for ax, title in zip(axes, ("rollout policy entropy", "token importance-weight variance",
                                "sequence importance-weight variance")):
        ax.set_title(f"{title}, M={m_max} (mean over seeds)", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[1].set_yscale("symlog", linthresh=1e-4)
    axes[2].set_yscale("symlog", linthresh=1e-6)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "stability.png", dpi=110)
    plt.close(fig)
    written.append(out / "stability.png")
    return written


def _rounded(record: dict) -> dict:
    """Floats to 5 significant digits: the committed metrics stay a few MB."""
    def r(v):
        if isinstance(v, float):
            return float(f"{v:.5g}")
        if isinstance(v, list):
            return [r(x) for x in v]
        return v
    return {k: r(v) for k, v in record.items()}


PROG = "python -m sspo_verl.testbed.sweep"


def build_parser() -> cli.ArgumentParser:
    p = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--methods", default=",".join(SWEEP_METHODS))
    p.add_argument("--mini-batches", default=",".join(map(str, MINI_BATCHES)), help="M values, comma-separated")
    p.add_argument("--widths", default=",".join(map(str, WIDTH_FACTORS)),
                   help="each method's knobs: trust-region widths relative to its reference (clip x f, tau x 1/f), "
                        "comma-separated; 1 (the reference) is always included")
    p.add_argument("--no-sapo-default", action="store_true",
                   help="leave SAPO's published temperatures 1.0/1.05 out of the soft methods' knobs")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--prompts", type=int, default=32)
    options.add_task_arguments(p)
    options.add_run_arguments(p)
    p.set_defaults(threads=1)
    p.add_argument("--drift-map", action="store_true",
                   help=f"instead: grpo_dapo at lr {DRIFT_MAP_LRS} x the M values, --seeds seeds: the drift per "
                        f"mini-batch index and the clip fraction (LLM-like < 1%%, stressed > 10%%)")
    p.add_argument("--report", action="store_true",
                   help="only rebuild summary.md, chosen.json and the figures of the finished run in --out")
    p.add_argument("--out", required=True, help="run folder; rerunning the same command on it resumes the sweep, "
                                                "skipping its finished runs")
    return p


def _numbers(p, flag: str, text: str, kind):
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        p.error(f"{flag} {text!r}: give comma-separated numbers, e.g. {flag} 1,4,16")
    if not values:
        p.error(f"{flag} {text!r} names no value")
    return values


def parse_args(argv=None):
    """The arguments, every one checked (a bad value: one line naming the flag and the fix, exit 2)."""
    p = build_parser()
    args = p.parse_args(argv)
    args.methods = options.parse_methods(p, args.methods)
    args.mini_batches = _numbers(p, "--mini-batches", args.mini_batches, int)
    args.widths = _numbers(p, "--widths", args.widths, float)
    if any(not (math.isfinite(w) and w > 0) for w in args.widths):
        p.error(f"--widths {','.join(map(str, args.widths))}: each width is a positive factor, e.g. 0.5,1,2")
    args.widths = tuple(sorted(set(args.widths) | {1.0}, key=lambda f: (f != 1, f)))
    args.task_spec = options.finish(p, args, list(args.mini_batches))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    return cli.run(PROG, job, args, sys.argv[1:] if argv is None else list(argv))


def job(args, argv: list[str]) -> int:
    if args.report:
        report(Path(args.out), *load(Path(args.out)))
        return 0
    from . import jobs
    from .grpo import RLConfig
    from .store import RunFolder

    out = Path(args.out)
    task = args.task_spec
    rl = RLConfig(steps=args.steps, prompts=args.prompts, group_size=args.group_size, mini_batches=1, lr=args.lr,
                  warmup_steps=args.warmup_steps, eval_every=args.eval_every, heldout=args.heldout)
    grid = grids(args)
    if args.drift_map:
        runs = [jobs.Run("grpo_dapo", seed, m, label=f"lr {lr:g}", lr=lr)
                for lr in DRIFT_MAP_LRS for m in args.mini_batches for seed in range(args.seeds)]
        shared = {}
    else:
        runs, shared = sweep_runs(args.methods, args.mini_batches, args.seeds, grid)
    command = f"{PROG} " + " ".join(argv)
    identity = jobs.job_identity("drift-map" if args.drift_map else "sweep", args, task, rl,
                                 sorted(store.run_key(r) for r in runs))
    folder = RunFolder(out, identity, command)
    folder.claim()
    config = {"argv": argv, "task_preset": args.task, "methods": args.methods,
              "mini_batches": list(args.mini_batches), "seeds": args.seeds, "rl": asdict(rl), "task": asdict(task),
              "flawed_fraction": args.flawed_fraction, "sft_steps": args.sft_steps, "sft_batch": args.sft_batch,
              "model_size": args.model_size, "device": args.device, "workers": args.workers, "threads": args.threads,
              "grid": {m: [(label, knob) for label, knob, _ in g] for m, g in grid.items()},
              "runs_executed": len(runs), "runs_shared_at_m1": len(shared), "cpu_count": os.cpu_count(),
              "loadavg_start": os.getloadavg()}
    print(f"sweep: {len(runs)} runs to execute ({len(shared)} more share an M = 1 run), {args.workers} worker(s) "
          f"x {args.threads} thread(s) -> {out}", flush=True)
    loads = []

    def log(line: str) -> None:
        loads.append(os.getloadavg()[0])
        print(line, flush=True)

    gate_fix = None if args.no_quality_gate else options.gate_fix(args)
    order = sorted(runs, key=_cost, reverse=True)
    results, config["cold_start"] = jobs.run_job(folder, order, args, task, rl, gate_fix, log, prepare=_rounded_result)
    missing = share_on_policy(results, shared)
    if missing:
        print(f"{len(missing)} M = 1 runs were not exactly on-policy: running them", flush=True)
        more, _ = jobs.run_job(folder, missing, args, task, rl, gate_fix, log, prepare=_rounded_result)
        results.update(more)
    config["runs_not_shared"] = len(missing)
    invocations = folder.invocations
    config["invocations"] = invocations
    config["wall_s"] = sum(i["wall_s"] for i in invocations)
    config["cpu_s"] = sum(i["cpu_s"] for i in invocations)
    config["loadavg_end"] = os.getloadavg()
    config["loadavg_1min_mean_during"] = float(np.mean(loads)) if loads else None

    ordered = sorted(results.items(), key=lambda kv: (kv[0].mini_batches, kv[0].method, kv[0].label, kv[0].seed))
    records = [{**r, "lr_setting": run.lr or rl.lr} for run, result in ordered for r in result["records"]]
    from .analysis import mean_response_tokens

    config["mean_response_tokens"] = mean_response_tokens(records)
    with gzip.open(out / "metrics.jsonl.gz", "wt") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    rows = run_measures(dict(ordered))
    (out / "runs.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    report(out, dict(ordered), rows, config, args)
    folder.finish()
    return 0


def _rounded_result(result: dict) -> dict:
    """What the run folder keeps of a run: its records rounded (_rounded), so the committed folders stay small;
    the report is built from these, whether the job ran through or was resumed."""
    return {**result, "records": [_rounded(r) for r in result["records"]]}


def report(out: Path, results: dict, rows: list[dict], config: dict, args) -> None:
    """summary.md (and, for a sweep, chosen.json and the figures) from a finished run's results."""
    if args.drift_map:
        text = drift_map_summary(results, config, args)
    else:
        chosen = choose(rows, args.methods, grids(args))
        (out / "chosen.json").write_text(json.dumps(chosen, indent=2) + "\n")
        plot(rows, results, chosen, grids(args), args.mini_batches, out)
        text = sweep_summary(rows, results, chosen, config, args)
    (out / "summary.md").write_text(text)
    print(text, flush=True)


def load(out: Path) -> tuple[dict, list[dict], dict, argparse.Namespace]:
    """(results, rows, config, args) of a finished run folder, to rebuild its report (--report)."""
    from .jobs import Run

    config = json.loads((out / "config.json").read_text())
    rows = json.loads((out / "runs.json").read_text())
    args = parse_args([a for a in config["argv"] if a != "--report"] + ["--out", str(out)])
    knobs = {(m, label): tuple(knob.items()) for m, grid in grids(args).items() for label, knob, _ in grid}
    results: dict = {}
    row_of = {(r["method"], r["label"], r["mini_batches"], r["seed"], r["lr"]): r for r in rows}
    with gzip.open(out / "metrics.jsonl.gz", "rt") as f:
        for line in f:
            rec = json.loads(line)
            lr = None if not args.drift_map else rec["lr_setting"]
            run = Run(rec["method"], rec["seed"], rec["mini_batches"], () if args.drift_map else
                      knobs[(rec["method"], rec["knob"])], rec["knob"], lr)
            row = row_of[(run.method, run.label, run.mini_batches, run.seed, run.lr)]
            results.setdefault(run, {"records": [], "wall_s": row["wall_s"], "shared_from": row["shared_from"]})
            results[run]["records"].append(rec)
    return results, rows, config, args


def paired_differences(rows: list[dict], chosen: dict, method: str, baseline: str, m: int,
                       split: str = "test") -> dict[int, float]:
    """{seed: final accuracy of `method` minus the baseline's}, each at its chosen knob, at M = m (same cold start,
    same first rollout batch in each seed)."""
    def finals(name):
        return {r["seed"]: r[f"{split}_final"] for r in rows if r["method"] == name
                and r["label"] == chosen[name]["label"] and r["mini_batches"] == m}

    mine, base = finals(method), finals(baseline)
    return {seed: mine[seed] - base[seed] for seed in sorted(mine) if seed in base}


def paired_table(rows: list[dict], chosen: dict, baseline: str, mini_batches) -> str:
    """Markdown, test split: each method at its chosen knob minus the baseline at its own, seed by seed (same cold
    start, same first rollout batch): mean [min, max] over seeds, and in how many seeds the method was ahead."""
    lines = [f"| method | " + " | ".join(f"M={m}" for m in mini_batches) + " |", "|---|" + "---|" * len(mini_batches)]
    for method in chosen:
        if method == baseline:
            continue
        cells = []
        for m in mini_batches:
            d = np.array(list(paired_differences(rows, chosen, method, baseline, m).values()))
            cells.append(f"{d.mean():+.3f} [{d.min():+.3f}, {d.max():+.3f}] {int((d > 0).sum())}/{len(d)}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)




def _wall(config: dict) -> str:
    sessions = len(config.get("invocations", []))
    return (f"{config['wall_s'] / 60:.1f} min wall{f' over {sessions} invocations' if sessions > 1 else ''}, "
            f"{config['cpu_s'] / 60:.1f} min CPU on {config['cpu_count']} cores "
            f"({config['workers']} workers x {config['threads']} thread); 1-min load average "
            f"{config['loadavg_start'][0]:.1f} at the start, {config['loadavg_1min_mean_during'] or float('nan'):.1f} "
            f"on average while it ran")


def stability_table(results: dict, chosen: dict) -> str:
    """analysis.stability_table of each method at its chosen knob, per M."""
    from .analysis import stability_table as table

    return table({(run.method, run.mini_batches, run.seed): res["records"] for run, res in results.items()
                  if run.label == chosen[run.method]["label"]})


def sweep_summary(rows, results, chosen, config, args) -> str:
    from .analysis import drift_table, time_table

    starts = [c["val_acc"] for c in config["cold_start"]], [c["test_acc"] for c in config["cold_start"]]
    m_max = max(args.mini_batches)
    chosen_records = [r for run, res in results.items() if run.label == chosen[run.method]["label"]
                      and run.mini_batches == m_max for r in res["records"]]
    return "\n".join([
        f"# Sweep: {len(args.methods)} methods x their knobs x M in {list(args.mini_batches)} x {args.seeds} seeds",
        "",
        f"`python -m sspo_verl.testbed.sweep {' '.join(config['argv'])}`: {config['runs_executed']} runs executed, "
        f"{config['runs_shared_at_m1']} M = 1 runs shared (exactly on-policy).",
        f"{args.steps} RL steps of {args.prompts} prompts x {args.group_size} samples, lr {args.lr} (warm-up "
        f"{args.warmup_steps}); {args.operands}-number arithmetic up to {args.max_operand}"
        f"{f', totals written {args.total_width} wide' if args.total_width else ''}, responses of "
        f"{config.get('mean_response_tokens', float('nan')):.1f} tokens on average; cold start "
        f"{args.sft_steps} steps on demonstrations {args.flawed_fraction:.0%} flawed: greedy accuracy val "
        f"{np.mean(starts[0]):.3f}, test {np.mean(starts[1]):.3f} (mean of {args.seeds} seeds).",
        "", f"{store.WALL_LINE}{_wall(config)}.", "",
        "Each method's knob is chosen by its val final accuracy (mean over M and seeds); the tables report the "
        "test split, which took no part in the choice.",
        "",
        "## Best vs best (test split, mean ± std over seeds)", "",
        best_vs_best_table(rows, chosen, args.mini_batches), "",
        "![central](central.png)", "",
        "The spread over seeds is mostly the cold start's (each seed has its own). Paired by seed, against "
        f"{args.methods[0]} at its chosen knob: mean [min, max] of the difference in final test accuracy, and the "
        "seeds in which the method was ahead.", "",
        paired_table(rows, chosen, args.methods[0], [m for m in args.mini_batches if m > 1]), "",
        "## Every knob (final accuracy, mean over seeds)", "", "### val (where the knob is chosen)", "",
        knob_table(rows, grids(args), args.mini_batches, "val"), "", "### test", "",
        knob_table(rows, grids(args), args.mini_batches, "test"), "",
        "![robustness](robustness.png)", "",
        "## Stability at the chosen knobs (every M)", "",
        "The paper's stability claims, measured: the variance of the token and sequence importance weights (mean "
        "over steps, mini-batch 0 included as in verl's metrics), the rollout policy's entropy over training, and "
        "collapses.", "", stability_table(results, chosen), "", "![stability](stability.png)", "",
        f"## Drift per mini-batch index at M = {m_max}, chosen knobs (mean over steps and seeds)", "",
        drift_table(chosen_records), "", "![drift](drift.png)", "",
        "## Where a step spends its time (every executed run; seconds per step, share of the step)", "",
        f"eval: greedy decoding of both held-out splits (every {args.eval_every} steps); sample: the rollout (KV-cached sampler); "
        "reward: verifier and GRPO advantages; old_log_prob: verl's engine forward over the batch; update: the M "
        "train_batch calls (forward, backward, Adam); sync: lr scheduler step and the weight sync to the sampler.", "",
        time_table([r for res in results.values() if not res.get("shared_from") for r in res["records"]]), ""])


def drift_map_summary(results, config, args) -> str:
    from .analysis import drift_by_index, measure

    def cells(lr, fn):
        out = []
        for m in args.mini_batches:
            runs = {run.seed: res["records"] for run, res in results.items() if run.lr == lr and run.mini_batches == m}
            out.append(fn(runs))
        return f"| {lr:g} | " + " | ".join(out) + " |"

    def steps(runs):
        return [r for recs in runs.values() for r in recs if "pg_clipfrac" in r]

    measures = [
        ("hard-clip fraction, mean over all mini-batches (verl's pg_clipfrac)",
         lambda runs: f"{100 * np.mean([r['pg_clipfrac'] for r in steps(runs)]):.2f}%"),
        ("hard-clip fraction of the most clipped rollout batch (its mean over the M mini-batches)",
         lambda runs: f"{100 * max(r['pg_clipfrac'] for r in steps(runs)):.1f}%"),
        ("hard-clip fraction at the last mini-batch index (k = M - 1)",
         lambda runs: f"{100 * drift_by_index(runs)['pg_clipfrac'][-1]:.2f}%"),
        ("mean abs(log r) over all mini-batches", lambda runs: f"{np.mean([r['abs_log_ratio'] for r in steps(runs)]):.3f}"),
        ("ppo_kl, mean over all mini-batches", lambda runs: f"{np.mean([r['ppo_kl'] for r in steps(runs)]):.4f}"),
        (f"final val accuracy (cold start {np.mean([c['val_acc'] for c in config['cold_start']]):.3f})",
         lambda runs: f"{np.mean([measure(recs).final for recs in runs.values()]):.3f}"),
    ]
    lrs = sorted({run.lr for run in results})
    lines = [f"# Drift map: grpo_dapo (clip 0.2/0.28) at lr x M, {args.seeds} seed(s), {args.steps} steps", "",
             f"`python -m sspo_verl.testbed.sweep {' '.join(config['argv'])}`.", "", f"{store.WALL_LINE}{_wall(config)}.", "",
             "LLM-like: a clip fraction under 1% (verl's reports for GRPO 0.2/0.28 with 4 mini-batches: about 0.03%); "
             "stressed: over 10%. The first rollout batch trains at lr 0 (verl's warm-up starts there). Where the "
             "policy collapses (lr >= 3e-4), its groups stop having mixed rewards, their advantages are 0 and nothing "
             "is clipped: the time-averaged clip fraction falls again while |log r| keeps growing.", ""]
    for title, fn in measures:
        lines += [f"## {title}", "", "| lr | " + " | ".join(f"M={m}" for m in args.mini_batches) + " |",
                  "|---|" + "---|" * len(args.mini_batches)] + [cells(lr, fn) for lr in lrs] + [""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
