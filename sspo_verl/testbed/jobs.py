"""Many testbed runs on a few cores: one cold start per seed, then runs (method, knob, M, seed) in worker processes.

The main job and the sweep both go through here. A run is self-contained (its own verl engine built from its seed's
cold-start checkpoint, its own seeded sampler, `threads` torch threads), so its records do not depend on which
worker runs it or on how many workers there are. On the testbed's 0.3M-parameter model, 2 single-threaded
processes finish about 1.7x sooner than 1 process with 2 threads (measured on 2 cores: docs/results, the closing
note): the work is many small kernels, which a second thread barely speeds up.
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

from .arithmetic import ArithmeticTask
from .grpo import RLConfig


@dataclass(frozen=True)
class ColdStart:
    """The supervised cold start of one seed (policy.cold_start), saved to `path`."""

    seed: int
    path: str
    model_size: str = "small"
    steps: int = 300
    batch_size: int = 64
    lr: float = 3e-3
    flawed_fraction: float = 0.5


def job_identity(job: str, args, task: ArithmeticTask, rl: RLConfig, runs: list) -> dict:
    """What decides a job's results (store.RunFolder refuses to mix jobs that differ in any of it): the job's kind,
    task, RL settings, device, threads, cold-start settings and its runs (as the job lists them)."""
    return {"job": job, "task": asdict(task), "rl": asdict(rl), "device": args.device, "threads": args.threads,
            "cold_start": {"model_size": args.model_size, "steps": args.sft_steps, "batch": args.sft_batch,
                           "lr": ColdStart.lr, "flawed_fraction": args.flawed_fraction, "group_size": args.group_size,
                           "heldout": args.heldout},
            "runs": runs}


@dataclass(frozen=True)
class Run:
    """One RL run: `method` with actor overrides `knob` (e.g. (("tau_pos", 4.05), ("tau_neg", 4.48))) at M
    mini-batches, from the cold start of `seed`. `label` names the knob in tables ("" = the method's default);
    `lr` replaces the job's learning rate when given."""

    method: str
    seed: int
    mini_batches: int
    knob: tuple[tuple[str, float], ...] = ()
    label: str = ""
    lr: float | None = None

    @property
    def name(self) -> str:
        return f"{self.method}{f' [{self.label}]' if self.label else ''} M={self.mini_batches} seed {self.seed}"


@contextlib.contextmanager
def quiet():
    """verl's engine prints memory reports and warnings at start-up; keep the progress lines readable."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def setup_process(device: str, threads: int | None) -> None:
    """This process's torch threads, verl's platform and a world of size 1 (once per process)."""
    import torch

    from ..verl_on_cpu import harness as h

    if threads:
        torch.set_num_threads(threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    logging.getLogger("sspo_verl.loss.plugin").setLevel(logging.ERROR)  # grpo_dapo's token-mean is intended here
    import sspo_verl  # noqa: F401  (the loss modes; verl's entry point also loads them)

    if device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is visible (torch.cuda.is_available() is False)")
        h.init_single_process_group(backend="nccl")
    else:
        h.use_cpu_platform()
        h.init_single_process_group()


def cold_start(spec: ColdStart, task: ArithmeticTask, heldout: int, device: str = "cpu", group_size: int = 8) -> dict:
    """Build, fine-tune and save the seed's policy to spec.path (whole or not at all: built in a folder beside it,
    then renamed). Returns what it starts RL from: greedy accuracy on both held-out splits, and on val the sampled
    pass@1 and pass@G (G samples at temperature 1, as a rollout draws them) and the sampled responses' mean length
    in tokens (EOS included, as verl's response_mask counts them)."""
    from . import policy as pol
    from .arithmetic import build_tokenizer

    final = Path(spec.path)
    building = final.with_name(final.name + ".building")
    shutil.rmtree(building, ignore_errors=True)  # a build killed earlier
    tokenizer = build_tokenizer()
    pol.make_policy(building, tokenizer, spec.model_size, seed=spec.seed)
    model = pol.load_policy(building, device)
    t0 = time.perf_counter()
    with quiet():
        pol.cold_start(model, tokenizer, task, spec.steps, spec.batch_size, lr=spec.lr, seed=spec.seed,
                       prompt_len=task.max_prompt_chars, response_len=task.response_len,
                       flawed_fraction=spec.flawed_fraction)
        model.save_pretrained(building)
        tokenizer.save_pretrained(building)  # again: the folder renamed below must hold both, whatever touched it
    sft_s = time.perf_counter() - t0
    P, R = task.max_prompt_chars, task.response_len
    info = {"seed": spec.seed, "sft_s": sft_s, "parameters": sum(p.numel() for p in model.parameters())}
    for split in ("val", "test"):
        info[f"{split}_acc"] = pol.accuracy(model, tokenizer, task.heldout(heldout, split), P, R)
    info.update(pol.sampled_pass(model, tokenizer, task.heldout(heldout, "val"), group_size, P, R, spec.seed, device),
                group_size=group_size)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(building, final)
    return info


def execute(run: Run, checkpoint: str, task: ArithmeticTask, rl: RLConfig, device: str = "cpu") -> dict:
    """All records of one run (steps 0 .. steps, the last one the final evaluation) and its wall time."""
    from .grpo import GRPOTrainer

    t0 = time.perf_counter()
    cfg = replace(rl, mini_batches=run.mini_batches, lr=run.lr or rl.lr)
    tags = {"mini_batches": run.mini_batches, "knob": run.label, **{k: v for k, v in run.knob}}
    with quiet():
        trainer = GRPOTrainer(run.method, run.seed, checkpoint, task, cfg, device, **dict(run.knob))
        records = [trainer.step(k) for k in range(cfg.steps)] + [trainer.final_record()]
    return {"run": asdict(run), "records": [{**r, **tags} for r in records], "wall_s": time.perf_counter() - t0}


def _call(fn_args):
    fn, args = fn_args
    return fn(*args)


def _setup_worker(job_pid: int, device: str, threads: int | None) -> None:
    """A pool worker: it dies with the job's process (Linux), so a job killed on its own (kill PID, not its process
    group) leaves no worker finishing a cold start into a folder that another job may by then own; then
    setup_process."""
    if sys.platform == "linux":
        import ctypes

        PR_SET_PDEATHSIG = 1
        if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != job_pid:  # the job died before the call above took effect
            os._exit(1)
    setup_process(device, threads)


def run_parallel(calls: Iterable[tuple[Callable, tuple]], workers: int, device: str, threads: int | None,
                 on_result: Callable[[int, object], None] | None = None) -> list:
    """fn(*args) for each call, in `workers` spawned processes (in this one when workers == 1), results in call
    order. on_result(index, result) is called as each finishes (progress)."""
    calls = list(calls)
    results: list = [None] * len(calls)
    if workers <= 1:
        setup_process(device, threads)
        for i, call in enumerate(calls):
            results[i] = _call(call)
            if on_result:
                on_result(i, results[i])
        return results
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch / gloo state
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_setup_worker,
                             initargs=(os.getpid(), device, threads)) as pool:
        futures = {pool.submit(_call, call): i for i, call in enumerate(calls)}
        from concurrent.futures import as_completed

        for future in as_completed(futures):
            i = futures[future]
            results[i] = future.result()  # a worker's exception surfaces here, with its traceback
            if on_result:
                on_result(i, results[i])
    return results


def describe_cold_start(info: dict) -> str:
    g = info.get("group_size", 8)
    return (f"held-out greedy accuracy val {info['val_acc']:.3f} test {info['test_acc']:.3f}, sampled pass@1 "
            f"{info['val_pass1']:.3f} pass@{g} {info['val_pass_g']:.3f}, {info.get('sample_response_tokens', 0):.1f} "
            f"response tokens ({info['parameters'] / 1e6:.2f}M parameters, {info['sft_s']:.0f}s)")


def ensure_cold_starts(folder, args, task: ArithmeticTask, need_weights: set[int],
                       log: Callable[[str], None] = print) -> tuple[list[dict], dict[int, str]]:
    """The cold starts of seeds 0 .. args.seeds - 1 in the run folder (store.RunFolder): a seed's finished cold
    start is reused, the others built (in parallel) and saved as each finishes. Seeds in `need_weights` must have
    their checkpoint on disk (their runs are still to do). Returns (infos by seed, {seed: checkpoint path}).
    args: the CLI's (seeds, model_size, sft_steps, sft_batch, flawed_fraction, heldout, workers, device, threads,
    group_size)."""
    folder.cold_dir.mkdir(parents=True, exist_ok=True)
    specs = {seed: ColdStart(seed, str(folder.cold_start_path(seed)), args.model_size, args.sft_steps, args.sft_batch,
                             flawed_fraction=args.flawed_fraction) for seed in range(args.seeds)}
    infos = {seed: folder.cold_start_info(seed, seed in need_weights) for seed in specs}
    for seed, info in infos.items():
        if info is not None:
            log(f"cold start seed {seed} (in {folder.cold_dir}, reused): {describe_cold_start(info)}")
    todo = [specs[seed] for seed, info in infos.items() if info is None]

    def done(i, info):
        folder.save_cold_start(info["seed"], info)
        infos[info["seed"]] = info
        log(f"cold start seed {info['seed']}: {describe_cold_start(info)}")

    if todo:
        log(f"building {len(todo)} cold start(s) of {args.sft_steps} steps in {folder.cold_dir} ...")
        run_parallel([(cold_start, (s, task, args.heldout, args.device, args.group_size)) for s in todo],
                     min(args.workers, len(todo)), args.device, args.threads, done)
    return [infos[seed] for seed in sorted(infos)], {seed: s.path for seed, s in specs.items()}


def check_cold_starts(infos: list[dict], fix: str) -> None:
    """The quality gate (quality.check_learnable) on every seed's cold start: the error names the seed, its measured
    values and the fix. The cold starts stay in the run folder (the same command with --no-quality-gate uses them)."""
    from .quality import check_learnable

    for info in infos:
        check_learnable(info, f"the cold start of seed {info['seed']}", fix)


def execute_all(runs: list[Run], checkpoints: dict[int, str], task: ArithmeticTask, rl: RLConfig, workers: int,
                device: str, threads: int | None, log: Callable[[str], None] = print,
                save: Callable[[Run, dict], None] | None = None) -> list[dict]:
    """Every run's result (see `execute`), in the order of `runs`; save(run, result) as each finishes."""
    started, count = time.perf_counter(), [0]

    def done(i, result):
        if save is not None:
            save(runs[i], result)
        count[0] += 1
        recs = result["records"]
        accs = [r["val_acc"] for r in recs if "val_acc" in r]
        log(f"[{count[0]}/{len(runs)}] {runs[i].name}: val accuracy {accs[0]:.3f} -> {accs[-1]:.3f} (best "
            f"{max(accs):.3f}), test {recs[-1]['test_acc']:.3f}; {result['wall_s']:.0f}s "
            f"({time.perf_counter() - started:.0f}s in all)")

    return run_parallel([(execute, (r, checkpoints[r.seed], task, rl, device)) for r in runs], workers, device,
                        threads, done)


def run_job(folder, runs: list[Run], args, task: ArithmeticTask, rl: RLConfig, gate_fix: str | None,
            log: Callable[[str], None] = print,
            prepare: Callable[[dict], dict] = lambda result: result) -> tuple[dict, list[dict]]:
    """The runs of a job through its run folder (store.RunFolder): finished runs are read back, the others executed
    from their seed's cold start (built or reused, then passed through the quality gate unless gate_fix is None)
    and saved as each completes. prepare(result) -> what is saved (e.g. rounded records).
    Returns ({run: result}, cold-start infos by seed)."""
    pending = [run for run in runs if folder.result(run) is None]
    if len(pending) < len(runs):
        log(f"{len(runs) - len(pending)} of {len(runs)} runs already finished in {folder.out}: skipping them")
    infos, checkpoints = ensure_cold_starts(folder, args, task, {run.seed for run in pending}, log)
    if gate_fix is not None:
        check_cold_starts(infos, gate_fix)
    if pending:
        execute_all(pending, checkpoints, task, rl, args.workers, args.device, args.threads, log,
                    save=lambda run, result: folder.save_result(run, prepare(result)))
    return {run: folder.result(run) for run in runs}, infos
