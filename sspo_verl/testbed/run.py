"""The off-policy testbed: cold-start a tiny Qwen2 on arithmetic, then compare loss modes under GRPO-style RL
with M mini-batches per rollout batch, every update through verl's FSDP2 engine and ppo_loss.

    python -m sspo_verl.testbed                   # grpo_dapo vs sspo, 3 seeds, CPU (a few minutes on 2 cores)
    python -m sspo_verl.testbed --full            # every method x 3 seeds
    python -m sspo_verl.testbed --device cuda     # a larger model and batch on a GPU

Writes a run folder: config.json, metrics.jsonl (one record per method, seed and step), summary.md (table),
reward_accuracy.png, importance_weights.png, entropy.png.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path

from ..methods import METHODS
from ..report import markdown_table, summarize, write_report

DEFAULT_METHODS = ["grpo_dapo", "sspo"]
FULL_METHODS = ["grpo_dapo", "gspo", "gmpo", "sapo", "sspo", "sspo_sigmoid", "sspo_erf", "sspo_softsign"]
BASELINE = "grpo_dapo"  # vanilla PPO clip with DAPO's clip-higher: the GRPO the paper compares against
PRESETS = {  # per device: model size, rollout batch, cold start
    "cpu": dict(model_size="small", prompts=32, sft_steps=500, sft_batch=64),
    "cuda": dict(model_size="medium", prompts=128, sft_steps=3000, sft_batch=256),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sspo_verl.testbed", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated, from: {', '.join(METHODS)}")
    p.add_argument("--seeds", type=int, default=3, help="seeds per method (each seed has its own cold start)")
    p.add_argument("--full", action="store_true", help=f"every method ({', '.join(FULL_METHODS)}) x 3 seeds")
    p.add_argument("--steps", type=int, default=16, help="RL steps (rollout batches) per run")
    p.add_argument("--prompts", type=int, default=None, help="prompts per rollout batch (default: per device)")
    p.add_argument("--group-size", type=int, default=8, help="samples per prompt (G)")
    p.add_argument("--mini-batches", type=int, default=8, help="optimizer steps per rollout batch (M; 1 = on-policy)")
    p.add_argument("--lr", type=float, default=1e-4, help="actor learning rate (verl's AdamW)")
    p.add_argument("--tau-pos", type=float, default=None, help="SSPO/SAPO temperature for A > 0 (default 1.0)")
    p.add_argument("--tau-neg", type=float, default=None, help="SSPO/SAPO temperature for A <= 0 (default 1.05)")
    p.add_argument("--eval-every", type=int, default=2, help="held-out accuracy every this many steps")
    p.add_argument("--heldout", type=int, default=256, help="held-out problems (greedy)")
    p.add_argument("--operands", type=int, default=3, help="numbers per problem")
    p.add_argument("--max-operand", type=int, default=19, help="largest number in a problem")
    p.add_argument("--sft-steps", type=int, default=None, help="cold-start steps (default: per device)")
    p.add_argument("--model-size", default=None, help="small or medium (default: per device)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--out", default=None, help="run folder (default: runs/testbed-<time>)")
    args = p.parse_args(argv)
    if args.full:
        args.methods, args.seeds = ",".join(FULL_METHODS), 3
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        p.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    for key, value in PRESETS[args.device].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


@contextlib.contextmanager
def _quiet():
    """verl's engine prints memory reports and warnings at start-up; keep the progress lines readable."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _setup_device(device: str) -> None:
    import torch

    from . import cpu_harness as h

    if device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is visible (torch.cuda.is_available() is False)")
        h.init_single_process_group(backend="nccl")
    else:
        h.use_cpu_platform()
        h.init_single_process_group()


def cold_start_checkpoint(args, task, seed: int, path: Path) -> dict:
    """A fresh tiny Qwen2 fine-tuned on reference solutions; returns its greedy held-out accuracy."""
    from . import policy as pol
    from .arithmetic import build_tokenizer

    tokenizer = build_tokenizer()
    pol.make_policy(path, tokenizer, args.model_size, seed=seed)
    model = pol.load_policy(path, args.device)
    t0 = time.perf_counter()
    pol.cold_start(model, tokenizer, task, args.sft_steps, args.sft_batch, lr=3e-3, seed=seed,
                   prompt_len=task.max_prompt_chars, response_len=task.response_len)
    model.save_pretrained(path)
    acc = pol.accuracy(model, tokenizer, task.heldout(args.heldout), task.max_prompt_chars, task.response_len)
    return {"seed": seed, "sft_heldout_acc": acc, "sft_s": time.perf_counter() - t0,
            "parameters": sum(p.numel() for p in model.parameters())}


def _progress(r: dict, total_steps: int, started: float) -> str:
    cells = [f"[{r['method']} seed {r['seed']}] step {r['step'] + 1:>2}/{total_steps}",
             f"reward {r['reward']:.3f}"]
    if "val_acc" in r:
        cells.append(f"held-out {r['val_acc']:.3f}")
    cells += [f"kl {r.get('ppo_kl', float('nan')):.4f}", f"token IW var {r.get('token_iw_var', float('nan')):.3g}",
              f"entropy {r['entropy']:.3f}", f"{time.perf_counter() - started:.0f}s"]
    return "  ".join(cells)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    import sspo_verl  # noqa: F401  (the loss modes; verl's entry point also loads them)

    from .arithmetic import ArithmeticTask
    from .grpo import GRPOTrainer, RLConfig

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    logging.getLogger("sspo_verl").setLevel(logging.ERROR)  # grpo_dapo's token-mean is intended here
    out = Path(args.out or f"runs/testbed-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    task = ArithmeticTask(n_operands=args.operands, max_operand=args.max_operand)
    rl = RLConfig(steps=args.steps, prompts=args.prompts, group_size=args.group_size, mini_batches=args.mini_batches,
                  lr=args.lr, eval_every=args.eval_every, heldout=args.heldout)
    taus = {k: v for k, v in (("tau_pos", args.tau_pos), ("tau_neg", args.tau_neg)) if v is not None}
    config = {"argv": sys.argv[1:] if argv is None else list(argv), "methods": args.methods, "seeds": args.seeds,
              "rl": asdict(rl), "task": asdict(task), "device": args.device, "model_size": args.model_size,
              "sft_steps": args.sft_steps, "sft_batch": args.sft_batch, "taus": taus, "torch_threads": torch.get_num_threads()}
    print(f"testbed: {', '.join(args.methods)} x {args.seeds} seeds, {rl.steps} steps of {rl.prompts}x{rl.group_size} "
          f"samples in {rl.mini_batches} mini-batches, lr {rl.lr}, device {args.device} -> {out}", flush=True)
    _setup_device(args.device)

    started = time.perf_counter()
    records: list[dict] = []
    checkpoints = Path(tempfile.mkdtemp(prefix="sspo-testbed-"))
    try:
        with open(out / "metrics.jsonl", "w") as log:
            config["cold_start"] = []
            for seed in range(args.seeds):
                ckpt = checkpoints / f"seed{seed}"
                with _quiet():
                    info = cold_start_checkpoint(args, task, seed, ckpt)
                config["cold_start"].append(info)
                print(f"cold start seed {seed}: held-out accuracy {info['sft_heldout_acc']:.3f} "
                      f"({info['parameters'] / 1e6:.2f}M parameters, {info['sft_s']:.0f}s)", flush=True)
                for method in args.methods:
                    soft = "tau_pos" in METHODS[method]
                    with _quiet():
                        trainer = GRPOTrainer(method, seed, ckpt, task, rl, args.device, **(taus if soft else {}))
                    for k in range(rl.steps):
                        with _quiet():
                            record = trainer.step(k)
                        records.append(record)
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                        print(_progress(record, rl.steps, started), flush=True)
                    records.append(trainer.final_record())
                    log.write(json.dumps(records[-1]) + "\n")
                    del trainer
        config["wall_s"] = time.perf_counter() - started
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        header = (f"# Testbed: {', '.join(args.methods)} x {args.seeds} seeds ({args.device})\n\n"
                  f"`python -m sspo_verl.testbed {' '.join(config['argv'])}`: {rl.steps} RL steps of "
                  f"{rl.prompts} prompts x {rl.group_size} samples, {rl.mini_batches} mini-batches per step, lr {rl.lr}; "
                  f"{task.n_operands}-number arithmetic up to {task.max_operand}; {config['wall_s'] / 60:.1f} min.")
        baseline = BASELINE if BASELINE in args.methods else args.methods[0]
        write_report(records, out, baseline, header)
    finally:
        shutil.rmtree(checkpoints, ignore_errors=True)
    print(markdown_table(summarize(records, baseline)), flush=True)
    print(f"run folder: {out} ({config['wall_s'] / 60:.1f} min)", flush=True)
    return 0
