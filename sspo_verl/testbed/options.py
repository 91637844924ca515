"""The flags the testbed's main job and its sweep share, the task presets, and their checks.

Every check runs when the arguments are parsed, before any work: a bad value ends in one line naming the flag
and the fix (sspo_verl.cli), never in a traceback from a worker after the cold start.

    --task short   3 numbers from 0 to 9 (responses of about 5 tokens): the committed main job and sweep
    --task long    12 numbers from 0 to 9, totals written 3 wide (45 tokens): the long-response setting, with its
                   own cold start and RL settings (lr 5e-5, 16 steps, 128 held-out problems)
A flag given explicitly (--operands, --sft-steps, ...) overrides its preset's value.
"""

from __future__ import annotations

import argparse
import math
import os

from ..errors import require_module
from ..loss.methods import METHODS

# task presets: the task, a cold start inside the learnable range for it (quality.py; docs/TESTBED.md), and the RL
# settings its results were measured at
TASKS = {
    "short": dict(operands=3, max_operand=9, total_width=0, flawed_fraction=0.7, sft_steps=300, sft_batch=64,
                  model_size="small", lr=3e-5, steps=30, heldout=256, eval_every=2),
    # 45-token responses; lr 5e-5: M = 16 clips about as many tokens as the short task's M = 16 at 3e-5, and
    # grpo_dapo's held-out accuracy there peaks within a few steps and then falls (docs/TESTBED.md)
    "long": dict(operands=12, max_operand=9, total_width=3, flawed_fraction=0.5, sft_steps=2000, sft_batch=64,
                 model_size="small", lr=5e-5, steps=16, heldout=128, eval_every=4),
}
CUDA = dict(model_size="medium", sft_steps=1500, sft_batch=256)  # --device cuda: a larger model and cold start
TASK_KEYS = ("operands", "max_operand", "total_width", "flawed_fraction", "sft_steps", "sft_batch", "model_size", "lr",
             "steps", "heldout", "eval_every")


def add_task_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=sorted(TASKS), default="short",
                   help="a task preset: " + "; ".join(f"{name}: {preset['operands']} numbers up to "
                                                       f"{preset['max_operand']}, cold start of {preset['sft_steps']} "
                                                       f"steps, lr {preset['lr']:g}, {preset['steps']} steps"
                                                       for name, preset in TASKS.items()))
    p.add_argument("--operands", type=int, default=None, help="numbers per problem (default: the --task preset's)")
    p.add_argument("--max-operand", type=int, default=None, help="largest number in a problem (default: the preset's)")
    p.add_argument("--total-width", type=int, default=None,
                   help="write each running total with at least this many characters, zero-padded (012, -03); 0: as "
                        "short as possible (default: the preset's)")
    p.add_argument("--flawed-fraction", type=float, default=None,
                   help="share of cold-start demonstrations whose final total is off by one (RL sharpens it away; "
                        "default: the preset's)")
    p.add_argument("--sft-steps", type=int, default=None, help="cold-start steps (default: the preset's)")
    p.add_argument("--sft-batch", type=int, default=None, help="cold-start batch (default: the preset's)")
    p.add_argument("--model-size", default=None, help="small or medium (default: the preset's; medium on cuda)")
    p.add_argument("--no-quality-gate", action="store_true",
                   help="run RL even from a cold start outside the learnable range (sspo_verl/testbed/quality.py); "
                        "for experiments on the range itself")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """RL and execution flags (the per-job defaults of steps, prompts and M stay with each CLI)."""
    p.add_argument("--group-size", type=int, default=8, help="samples per prompt (G)")
    p.add_argument("--steps", type=int, default=None, help="RL steps (rollout batches) per run (default: the preset's)")
    p.add_argument("--lr", type=float, default=None, help="actor learning rate, verl's AdamW (default: the preset's)")
    p.add_argument("--warmup-steps", type=int, default=5,
                   help="verl's linear lr warm-up, in rollout batches (the scheduler steps once per batch)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="held-out accuracy every this many steps (default: the preset's)")
    p.add_argument("--heldout", type=int, default=None,
                   help="problems in each held-out split (val, test), greedy (default: the preset's)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--workers", type=int, default=None,
                   help="runs in parallel, one process each (default: 2 on CPU, 1 on CUDA)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: 1 on CPU)")


def parse_methods(p: argparse.ArgumentParser, text: str, flag: str = "--methods") -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"{flag}: unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if not methods:
        p.error(f"{flag} {text!r} names no method; choose from {', '.join(METHODS)}")
    return methods


def _positive(p, args, flags: dict[str, str], minimum=1) -> None:
    for attr, flag in flags.items():
        value = getattr(args, attr)
        if value is not None and value < minimum:
            p.error(f"{flag} {value}: must be at least {minimum}")


def default_workers(device: str) -> int:
    """2 processes on a CPU with 2 or more cores (the testbed's target), 1 on a 1-core machine or a GPU (one device)."""
    return 1 if device == "cuda" else max(1, min(2, os.cpu_count() or 1))


def finish(p: argparse.ArgumentParser, args: argparse.Namespace, mini_batches: list[int], needs_plots: bool = True):
    """Fill the preset's values into the flags left unset, then check everything; p.error on the first bad value.
    Returns the task (arithmetic.ArithmeticTask)."""
    from .arithmetic import ArithmeticTask
    from .policy import MAX_POSITIONS, MODEL_SIZES

    preset = {**TASKS[args.task], **(CUDA if args.device == "cuda" else {})}
    for key in TASK_KEYS:
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    if args.workers is None:
        args.workers = default_workers(args.device)
    if args.threads is None and args.device == "cpu":
        args.threads = 1
    _positive(p, args, {"seeds": "--seeds", "steps": "--steps", "prompts": "--prompts", "eval_every": "--eval-every",
                        "heldout": "--heldout", "sft_steps": "--sft-steps", "sft_batch": "--sft-batch",
                        "workers": "--workers", "threads": "--threads", "max_operand": "--max-operand"})
    _positive(p, args, {"group_size": "--group-size", "operands": "--operands"}, minimum=2)
    _positive(p, args, {"warmup_steps": "--warmup-steps", "total_width": "--total-width"}, minimum=0)
    if not (math.isfinite(args.lr) and args.lr > 0):
        p.error(f"--lr {args.lr}: the learning rate must be a positive number, e.g. 3e-5")
    if not 0.0 <= args.flawed_fraction < 1.0:
        p.error(f"--flawed-fraction {args.flawed_fraction}: must be in [0, 1) (some demonstrations must be right), "
                f"e.g. 0.7")
    if args.model_size not in MODEL_SIZES:
        p.error(f"--model-size {args.model_size}: choose one of {', '.join(MODEL_SIZES)}")
    for m in mini_batches:
        if m < 1 or args.prompts % m:
            p.error(f"--mini-batches {m} must divide --prompts {args.prompts} (a mini-batch holds whole groups of "
                    f"--group-size {args.group_size} samples): choose a divisor of {args.prompts}")
    task = ArithmeticTask(n_operands=args.operands, max_operand=args.max_operand, total_width=args.total_width)
    positions = task.max_prompt_chars + task.response_len
    if positions > MAX_POSITIONS:
        p.error(f"--operands {args.operands} --max-operand {args.max_operand} --total-width {args.total_width}: a "
                f"problem and its longest solution take {positions} tokens, more than the policy's {MAX_POSITIONS} "
                f"positions: use fewer operands (at most {max_operands(args.max_operand, args.total_width)} here)")
    if args.heldout > task.max_heldout:
        p.error(f"--heldout {args.heldout}: the task has about {task.size // 8} problems per held-out split "
                f"(--operands {args.operands} --max-operand {args.max_operand}): use --heldout {task.max_heldout} or "
                f"fewer, or raise --operands / --max-operand")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda: no CUDA device is visible (torch.cuda.is_available() is False): use --device cpu")
    if needs_plots:
        try:
            require_module("matplotlib", "testbed", f"{p.prog} (its figures)")
        except ModuleNotFoundError as exc:
            p.error(str(exc))
    return task


def max_operands(max_operand: int, total_width: int = 0) -> int:
    """The most numbers a problem can chain with the policy's positions."""
    from .arithmetic import ArithmeticTask
    from .policy import MAX_POSITIONS

    n = 2
    while True:
        task = ArithmeticTask(n + 1, max_operand, total_width)
        if task.max_prompt_chars + task.response_len > MAX_POSITIONS:
            return n
        n += 1


def gate_fix(args) -> str:
    """What a user can change when a cold start fails the quality gate (quality.check_learnable's `fix`)."""
    return (f"a start that rarely samples the right answer needs more cold-start steps (--sft-steps, now "
            f"{args.sft_steps}) or fewer flawed demonstrations (--flawed-fraction, now {args.flawed_fraction}); one "
            f"already right, more flawed demonstrations; --no-quality-gate runs RL from it anyway")
