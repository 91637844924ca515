"""The off-policy testbed: cold-start a tiny Qwen2 on arithmetic, then compare loss modes under GRPO-style RL
with M mini-batches per rollout batch, every update through verl's FSDP2 engine and ppo_loss.

    python -m sspo_verl.testbed                   # on-policy grpo; grpo_dapo and sspo at M = 16; 3 seeds, CPU
    python -m sspo_verl.testbed --full            # every method x 3 seeds
    python -m sspo_verl.testbed --device cuda     # a larger model and batch on a GPU
    python -m sspo_verl.testbed.sweep             # each method's knob x M in {1, 2, 4, 8, 16} x 3 seeds

The methods run at the knobs the committed sweep of their task chose on its val split (`CHOSEN_BY_TASK` below;
--knobs default for the recipes' defaults). Writes a run folder: config.json, metrics.jsonl (one record per method,
seed and step, step 0 and the final evaluation included), summary.md (tables and the comparison with the committed
run), reward_accuracy.png, importance_weights.png, entropy.png; it is resumable (store.py).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

from .. import cli
from ..loss.methods import METHODS
from . import options

DEFAULT_METHODS = ["grpo_dapo", "sspo"]
FULL_METHODS = ["grpo_dapo", "gspo", "gmpo", "sapo", "sspo", "sspo_sigmoid", "sspo_erf", "sspo_softsign", "sspo_sapo"]
BASELINE = "grpo_dapo"  # vanilla PPO clip with DAPO's clip-higher: the GRPO the paper compares against
ON_POLICY_CONTROL = "grpo"  # run at M = 1: does RL learn here at all, with no off-policy drift?
PRESETS = {  # per device: the rollout batch (the task presets, cold start and model: options.py)
    "cpu": dict(prompts=32),
    "cuda": dict(prompts=128),
}

# The knob each method runs at here: the sweep's choice on val (python -m sspo_verl.testbed.sweep writes it to
# docs/results/sweep-cpu/chosen.json; a test keeps the two equal). label -> actor overrides.
CHOSEN: dict[str, tuple[str, dict]] = {
    "grpo_dapo": ("clip 0.1/0.14", {"clip_ratio_low": 0.1, "clip_ratio_high": 0.14}),
    "gmpo": ("clip 0.2/0.2", {"clip_ratio_low": 0.2, "clip_ratio_high": 0.2, "clip_ratio": 0.2}),
    "gspo": ("clip 0.0006/0.0008", {"clip_ratio_low": 0.0006, "clip_ratio_high": 0.0008}),
    "sapo": ("tau 12.6/17.6", {"tau_pos": 12.591051243136327, "tau_neg": 17.62747174039086}),
    "sspo": ("tau 8.1/8.96", {"tau_pos": 8.101755523850889, "tau_neg": 8.962840235449098}),
    "sspo_sigmoid": ("tau 3.57/3.95", {"tau_pos": 3.5703366636059273, "tau_neg": 3.949805324100429}),
    "sspo_erf": ("tau 1.69/1.87", {"tau_pos": 1.6862884799636013, "tau_neg": 1.865513491773223}),
    "sspo_softsign": ("tau 1.68/1.86 (calibrated to 0.2/0.28)",
                      {"tau_pos": 1.677928508505089, "tau_neg": 1.856264991453141}),
}
# The same for --task long: the long sweep's choice (docs/results/sweep-long-cpu/chosen.json; the same test).
CHOSEN_LONG: dict[str, tuple[str, dict]] = {
    "grpo_dapo": ("clip 0.1/0.14", {"clip_ratio_low": 0.1, "clip_ratio_high": 0.14}),
    "gspo": ("clip 0.0003/0.0004 (default)", {"clip_ratio_low": 0.0003, "clip_ratio_high": 0.0004}),
    "gmpo": ("clip 0.2/0.2", {"clip_ratio_low": 0.2, "clip_ratio_high": 0.2, "clip_ratio": 0.2}),
    "sapo": ("tau 6.3/8.81 (calibrated to 0.2/0.28)", {"tau_pos": 6.295525621568164, "tau_neg": 8.81373587019543}),
    "sspo": ("tau 4.05/4.48 (calibrated to 0.2/0.28)", {"tau_pos": 4.050877761925444, "tau_neg": 4.481420117724549}),
    "sspo_sapo": ("tau 12.6/17.6", {"tau_pos": 12.591051243136327, "tau_neg": 17.62747174039086}),
}
CHOSEN_BY_TASK = {"short": CHOSEN, "long": CHOSEN_LONG}  # task preset -> the knobs its committed sweep chose


PROG = "python -m sspo_verl.testbed"


def build_parser() -> cli.ArgumentParser:
    p = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated, from: {', '.join(METHODS)}")
    p.add_argument("--on-policy-control", default=ON_POLICY_CONTROL,
                   help="a method also run at M = 1 (the on-policy control), or 'none'")
    p.add_argument("--seeds", type=int, default=3, help="seeds per method (each seed has its own cold start)")
    p.add_argument("--full", action="store_true", help=f"every method ({', '.join(FULL_METHODS)}) x 3 seeds")
    p.add_argument("--prompts", type=int, default=None, help="prompts per rollout batch (default: per device)")
    p.add_argument("--mini-batches", type=int, default=16,
                   help="optimizer steps per rollout batch (M; 1 = on-policy). 16: the sweep's most off-policy degree, "
                        "moderately stressed at lr 3e-5 (grpo_dapo clips 1.9%% of tokens; docs/results/drift-map), "
                        "the only M at which the sweep tells the methods apart")
    p.add_argument("--knobs", choices=["chosen", "default"], default="chosen",
                   help="chosen: each method's clip range or temperatures chosen by the committed sweep; "
                        "default: the recipes' (sspo_verl/loss/methods.py)")
    p.add_argument("--tau-pos", type=float, default=None, help="SSPO/SAPO temperature for A > 0")
    p.add_argument("--tau-neg", type=float, default=None, help="SSPO/SAPO temperature for A <= 0")
    p.add_argument("--tau-from-clip", type=float, nargs=2, default=None, metavar=("CLIP_LOW", "CLIP_HIGH"),
                   help="SSPO/SAPO temperatures at which each gate passes half its gradient at r = 1 + CLIP_HIGH "
                        "(A > 0) and r = 1 - CLIP_LOW (A <= 0), e.g. 0.2 0.28 (python -m sspo_verl.tools.calibrate)")
    options.add_task_arguments(p)
    options.add_run_arguments(p)
    p.add_argument("--out", default=None, help="run folder (default: runs/testbed-<time>); rerunning the same "
                                               "command on it resumes the job, skipping its finished runs")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """The arguments, every one checked (a bad value: one line naming the flag and the fix, exit 2)."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.full:
        args.methods, args.seeds = ",".join(FULL_METHODS), 3
    args.methods = options.parse_methods(p, args.methods)
    control = None if args.on_policy_control == "none" else args.on_policy_control
    if control is not None:
        options.parse_methods(p, control, "--on-policy-control")
    if control in args.methods:
        p.error(f"--methods includes {control}, the on-policy control (run at M = 1): pass --on-policy-control none, "
                f"or another method")
    args.on_policy_control = control
    if args.tau_from_clip and (args.tau_pos is not None or args.tau_neg is not None):
        p.error(f"--tau-from-clip {' '.join(map(str, args.tau_from_clip))} conflicts with --tau-pos {args.tau_pos} "
                f"--tau-neg {args.tau_neg}: both set the temperatures; give one of them")
    for flag, tau in (("--tau-pos", args.tau_pos), ("--tau-neg", args.tau_neg)):
        if tau is not None and not (math.isfinite(tau) and tau > 0):
            p.error(f"{flag} {tau}: a temperature is a positive number, e.g. 1.0 (SAPO's)")
    if args.tau_from_clip:
        from ..tools.calibrate import edges

        try:
            edges(*args.tau_from_clip)
        except ValueError as exc:
            p.error(f"--tau-from-clip {' '.join(map(str, args.tau_from_clip))}: {exc}")
    if args.prompts is None:
        args.prompts = PRESETS[args.device]["prompts"]
    args.task_spec = options.finish(p, args, [args.mini_batches])
    return args


def method_knob(method: str, args) -> tuple[tuple[tuple[str, float], ...], str]:
    """(actor overrides, label) of `method` in this job: explicit temperatures, else --tau-from-clip, else the
    sweep's chosen knob (--knobs chosen), else the recipes' default."""
    soft = "tau_pos" in METHODS[method]
    if soft and (args.tau_pos is not None or args.tau_neg is not None):
        knob = {k: v for k, v in (("tau_pos", args.tau_pos), ("tau_neg", args.tau_neg)) if v is not None}
        return tuple(knob.items()), "tau " + "/".join(f"{v:.3g}" for v in knob.values())
    if soft and args.tau_from_clip:
        from ..tools.calibrate import taus_from_clip

        low, high = args.tau_from_clip
        tau_pos, tau_neg = taus_from_clip(METHODS[method]["loss_mode"], low, high)
        return (("tau_pos", tau_pos), ("tau_neg", tau_neg)), f"tau from clip {low:g}/{high:g}"
    chosen = CHOSEN_BY_TASK[args.task]
    if args.knobs == "chosen" and method in chosen:
        label, knob = chosen[method]
        return tuple(knob.items()), label
    return (), ""


def main(argv=None) -> int:
    args = parse_args(argv)
    return cli.run(PROG, job, args, sys.argv[1:] if argv is None else list(argv))


def job(args, argv: list[str]) -> int:
    from ..tools.report import markdown_table, summarize, write_report
    from . import analysis, committed, jobs
    from .grpo import RLConfig
    from .store import WALL_LINE, RunFolder

    out = Path(args.out or f"runs/testbed-{time.strftime('%Y%m%d-%H%M%S')}")
    task = args.task_spec
    rl = RLConfig(steps=args.steps, prompts=args.prompts, group_size=args.group_size, mini_batches=args.mini_batches,
                  lr=args.lr, warmup_steps=args.warmup_steps, eval_every=args.eval_every, heldout=args.heldout)
    runs = []
    for seed in range(args.seeds):
        if args.on_policy_control:
            runs.append(jobs.Run(args.on_policy_control, seed, 1))
        for method in args.methods:
            knob, label = method_knob(method, args)
            runs.append(jobs.Run(method, seed, rl.mini_batches, knob, label))
    command = "python -m sspo_verl.testbed " + " ".join(argv)
    folder = RunFolder(out, jobs.job_identity("testbed", args, task, rl, [asdict(r) for r in runs]), command)
    folder.claim()
    print(f"testbed: {', '.join(args.methods)} (M = {rl.mini_batches}) and {args.on_policy_control or 'no'} on-policy "
          f"control (M = 1) x {args.seeds} seeds, {rl.steps} steps of {rl.prompts}x{rl.group_size} samples, lr {rl.lr} "
          f"(warm-up {rl.warmup_steps}), {task.n_operands}-number task, device {args.device}, {args.workers} "
          f"worker(s) -> {out}", flush=True)
    gate_fix = None if args.no_quality_gate else options.gate_fix(args)
    results, cold = jobs.run_job(folder, runs, args, task, rl, gate_fix)
    records = [r for run in runs for r in results[run]["records"]]
    with open(out / "metrics.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    invocations = folder.invocations
    config = {"argv": argv, "task_preset": args.task, "methods": args.methods,
              "on_policy_control": args.on_policy_control, "seeds": args.seeds, "rl": asdict(rl), "task": asdict(task),
              "device": args.device, "model_size": args.model_size, "sft_steps": args.sft_steps,
              "sft_batch": args.sft_batch, "flawed_fraction": args.flawed_fraction, "workers": args.workers,
              "threads": args.threads, "runs": [asdict(r) for r in runs], "cold_start": cold,
              "mean_response_tokens": analysis.mean_response_tokens(records),
              "wall_s": sum(i["wall_s"] for i in invocations), "invocations": invocations,
              "run_wall_s": [results[run]["wall_s"] for run in runs]}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    header = (f"# Testbed: {', '.join(args.methods)} x {args.seeds} seeds ({args.device})\n\n"
              f"`{command}`: {rl.steps} RL steps of "
              f"{rl.prompts} prompts x {rl.group_size} samples, {rl.mini_batches} mini-batches per step "
              f"({args.on_policy_control or 'no'} on-policy control at 1), lr {rl.lr} with {rl.warmup_steps} warm-up "
              f"steps; {task.n_operands}-number arithmetic up to {task.max_operand} (responses of "
              f"{config['mean_response_tokens']:.1f} tokens on average), cold start of {args.sft_steps} steps on "
              f"demonstrations {args.flawed_fraction:.0%} flawed.\n\n"
              f"{WALL_LINE}{config['wall_s'] / 60:.1f} min with {args.workers} worker(s)"
              f"{f' over {len(invocations)} invocations' if len(invocations) > 1 else ''}.")
    baseline = BASELINE if BASELINE in args.methods else args.methods[0]
    path = write_report(records, out, baseline, header)
    extra = ["", "## Learning over the cold start (held-out val split; test in metrics.jsonl)", "",
             analysis.learning_table(records), "", "## Learning on the test split", "",
             analysis.learning_table(records, "test_acc"), "",
             "## Drift per mini-batch index (mean over steps and seeds)", "",
             "abs_log_ratio: mean |log r|; ppo_kl: verl's; pg_clipfrac: the hard clip's share of tokens; w_below_half: "
             "the soft gate's tokens below half weight; outside_clip_band: tokens a 0.2/0.28 token clip would cut, "
             "the same yardstick for every method.", "", analysis.drift_table(records), ""]
    path.write_text(path.read_text() + "\n".join(extra))
    folder.finish()
    print(markdown_table(summarize(records, baseline)), flush=True)
    print(analysis.learning_table(records), flush=True)
    print(committed.compare(records, config, out), flush=True)
    print(f"run folder: {out} ({config['wall_s'] / 60:.1f} min)", flush=True)
    return 0


