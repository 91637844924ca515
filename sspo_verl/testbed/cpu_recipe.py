"""What `recipes/cpu_tiny.sh` needs before it can launch verl's main_ppo on a CPU: data and a cold-start policy.

    python -m sspo_verl.testbed.cpu_recipe --out ~/data/sspo_cpu_tiny [--seed 0]   # skips what exists already

writes

    <out>/train.parquet   the testbed's arithmetic task ("7+5-3=" -> "12,9", its train split), data_source
                          sspo/arithmetic
    <out>/val.parquet     three data sources, so verl's reward loop runs its mixed path:
                            sspo/arithmetic          the task's held-out val split
                            openai/gsm8k             sums of its test split as GSM8K-format word problems ("#### <n>")
                            HuggingFaceH4/MATH-500   sums of its test split as math-format problems (\\boxed{})
                          The word and math rows are generated here (no download); the tiny policy was never
                          taught their format, so they score about 0: they are there to exercise the scorers.
    <out>/model/          a tiny Qwen2 (HF folder with its tokenizer) with the testbed's cold start: demonstrations
                          of mixed quality (70% end one off the right total), so RL starts from a policy that is
                          right some of the time and samples the right answer in one of 8 tries far more often.
                          Built once (about a minute on one core, with a progress line), checked by the quality
                          gate (testbed/quality.py) before it takes model/'s place; model/cold_start.json holds its
                          settings and measured quality. A model/ built from other settings is rebuilt; a killed
                          build leaves a model.tmp-<pid> folder that the next run removes.

Rows use verl's RL format (`sspo_verl.data.prepare.to_verl_row`), rewards come from `sspo_verl.rewards`.
The tokenizer has one token per byte (`build_tokenizer`), so any prompt tokenizes without unknown tokens.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Callable

from .. import cli
from ..data.prepare import SPECS, to_verl_row, write_parquet
from ..rewards.arithmetic import SOURCES
from .arithmetic import ArithmeticTask, Problem
from .quality import check_learnable

ARITHMETIC_SOURCE = SOURCES[0]
# The testbed's default task and cold start (python -m sspo_verl.testbed; a test checks they stay equal, but for the
# SFT length below). Written out, not read from the testbed's modules, which import torch: this module runs before
# every cpu_tiny launch.
TASK = ArithmeticTask(n_operands=3, max_operand=9)  # three numbers 0..9 with + and -, answered with the running totals
TRAIN_PROBLEMS = 2048
VAL_PER_SOURCE = {"arithmetic": 64, "gsm8k": 8, "math500": 8}
MAX_POSITIONS = 512  # word problems with their instruction run to ~200 characters
# The cold start: the testbed's (docs/TESTBED.md, "What made RL learn here") with twice its SFT steps. With this
# byte-level tokenizer (258 tokens against the testbed's 16), 300 steps left the demonstrations under-fit on some
# seeds (seed 0: cross-entropy 0.56, sampled pass@1 0.18, below the quality gate), and RL learned little from it;
# 600 steps fit every seed checked (SEEDS_CHECKED; docs/CPU.md) in about 30-45 s on one core.
TESTBED_SFT_STEPS = 300
COLD_START = dict(steps=2 * TESTBED_SFT_STEPS, batch_size=64, lr=3e-3, flawed_fraction=0.7)
MODEL_SIZE = "small"  # the testbed's CPU model, 0.3M parameters
BUILD_THREADS = 1  # torch threads for the build (make_cold_start says why)
PROGRESS_EVERY = 100  # SFT steps between progress lines
GROUP_SIZE = 8  # the recipe's actor_rollout_ref.rollout.n: the quality gate's pass@G is over a group this size
GATE_HELDOUT = 256  # val problems the quality gate measures (the first 64 are the recipe's arithmetic val rows)
SEEDS_CHECKED = range(5)  # seeds whose cold start passed the quality gate when COLD_START was chosen (docs/CPU.md)
PAD, EOS = "<pad>", "</s>"


def _byte_symbols() -> list[str]:
    """The printable symbol byte-level BPE writes for each byte 0..255 (GPT-2's table: printable Latin-1 bytes
    stand for themselves, the others for 256, 257, ... in order)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1), *range(ord("\u00ae"), 256)]
    others = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(others)) for b in range(256)]


def build_tokenizer(path: str | Path | None = None):
    """A byte-level BPE tokenizer with no merges: one token per byte, so any text tokenizes and decodes back.

    It is Qwen2's own tokenizer family (byte-level pre-tokenizer and decoder) without its merges, so
    `AutoTokenizer`, which builds a Qwen2Tokenizer for any folder whose config says qwen2, keeps it as it is."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {symbol: b for b, symbol in enumerate(_byte_symbols())} | {PAD: 256, EOS: 257}  # token id = byte value
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=PAD)  # no byte is unknown
    hf.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    if path is not None:
        hf.save_pretrained(path)
    return hf


def arithmetic_row(problem: Problem, split: str, index: int) -> dict:
    """A verl RL row for the arithmetic task; the prompt is the sum itself, as the cold start saw it."""
    return {
        "data_source": ARITHMETIC_SOURCE,
        "prompt": [{"role": "user", "content": problem.prompt}],
        "ability": "arithmetic",
        "reward_model": {"style": "rule", "ground_truth": str(problem.answer)},
        "extra_info": {"split": split, "index": index, "solution": problem.solution},
    }


def _words(problem: Problem) -> str:
    """'23+41-17=' as a short word problem."""
    parts = problem.prompt.rstrip("=").replace("-", " -").replace("+", " +").split()
    text = f"Ann has {int(parts[0])} coins."
    for part in parts[1:]:
        text += f" She gets {int(part[1:])}." if part[0] == "+" else f" She spends {int(part[1:])}."
    return text + " How many coins does she have now?"


def validation_rows(n: dict[str, int] = VAL_PER_SOURCE) -> list[dict]:
    """The task's val split plus sums of its test split in GSM8K and MATH format (generated, never downloaded)."""
    rows = [arithmetic_row(p, "val", i) for i, p in enumerate(TASK.heldout(n["arithmetic"], "val"))]
    rest = TASK.heldout(n["gsm8k"] + n["math500"], "test")
    for i, p in enumerate(rest[:n["gsm8k"]]):
        record = {"question": _words(p), "answer": f"{p.prompt}{p.answer}\n#### {p.answer}"}
        rows.append(to_verl_row(SPECS["gsm8k"], record, "val", i))
    for i, p in enumerate(rest[n["gsm8k"]:n["gsm8k"] + n["math500"]]):
        record = {"problem": f"Compute ${p.prompt.rstrip('=')}$.", "answer": str(p.answer)}
        rows.append(to_verl_row(SPECS["math500"], record, "val", i))
    return rows


def build_settings(seed: int) -> dict:
    """What a cold start is built from: a model/ folder built from other settings is rebuilt, not reused."""
    return {"seed": seed, **COLD_START, "model_size": MODEL_SIZE, "tokenizer": "bytes", "max_positions": MAX_POSITIONS}


def quality(model, tokenizer, seed: int, heldout: int = GATE_HELDOUT, group_size: int = GROUP_SIZE) -> dict:
    """What RL starts from, on the task's val split: greedy accuracy, and sampled pass@1 and pass@G (G samples
    per problem at temperature 1, as the recipe's rollout draws a group): the quality gate's inputs."""
    from . import policy as pol

    problems = TASK.heldout(heldout, "val")
    P, R = TASK.max_prompt_chars, TASK.response_len  # one token per character (bytes)
    sampled = pol.sampled_pass(model, tokenizer, problems, group_size, P, R, seed)
    return {"val_acc": pol.accuracy(model, tokenizer, problems, P, R), "val_pass1": sampled["val_pass1"],
            "val_pass_g": sampled["val_pass_g"], "group_size": group_size, "heldout": heldout}


def make_cold_start(path: Path, seed: int = 0, log: Callable[[str], None] = print) -> dict:
    """A tiny Qwen2 (the testbed's small size) fine-tuned on arithmetic demonstrations (COLD_START), with its
    quality measured (`quality`); saved with its tokenizer and cold_start.json. Single-threaded: the model's many
    small kernels gain little from a second thread and thrash on a loaded machine (the 300-step build took 753 s
    with torch's default threads on 2 busy cores; this one 32 s on one thread, docs/CPU.md)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from transformers.utils import logging as hf_logging

    from . import policy as pol

    hf_logging.disable_progress_bar()  # "Writing model shards": the build prints its own progress
    threads = torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)
    try:
        tokenizer = build_tokenizer()
        torch.manual_seed(seed)
        config = Qwen2Config(vocab_size=len(tokenizer), max_position_embeddings=MAX_POSITIONS,
                             tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
                             **pol.MODEL_SIZES[MODEL_SIZE])
        model = Qwen2ForCausalLM(config)
        steps, t0, losses = COLD_START["steps"], time.perf_counter(), []

        def progress(step: int, loss: float) -> None:
            losses.append(loss)
            if (step + 1) % PROGRESS_EVERY == 0 or step + 1 == steps:
                log(f"  SFT step {step + 1}/{steps}: demonstration cross-entropy {loss:.3f} "
                    f"({time.perf_counter() - t0:.0f} s)")

        pol.cold_start(model, tokenizer, TASK, steps, COLD_START["batch_size"], lr=COLD_START["lr"], seed=seed,
                       prompt_len=TASK.max_prompt_chars, response_len=TASK.response_len,
                       flawed_fraction=COLD_START["flawed_fraction"], on_step=progress)
        sft_s = time.perf_counter() - t0
        measured = quality(model, tokenizer, seed)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
    finally:
        torch.set_num_threads(threads)
    tail = losses[-PROGRESS_EVERY:]
    info = {**measured, "greedy_heldout_acc": measured["val_acc"], "final_sft_loss": sum(tail) / len(tail),
            "sft_s": round(sft_s, 1), "build_s": round(time.perf_counter() - t0, 1),
            "parameters": sum(p.numel() for p in model.parameters()), "settings": build_settings(seed)}
    (path / "cold_start.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def check_quality(info: dict, model_dir: Path, seed: int) -> None:
    """The quality gate (testbed/quality.py): a cold start outside the learnable range is an error, never used."""
    check_learnable(
        info, where=f"the cpu_tiny cold start in {model_dir} (seed {seed}, {info['settings']['steps']} SFT steps)",
        fix=f"build one from another seed (COLD_START_SEED=1 bash recipes/cpu_tiny.sh ..., or python -m "
            f"sspo_verl.testbed.cpu_recipe --out {model_dir.parent} --seed 1); every seed 0-{len(SEEDS_CHECKED) - 1} "
            f"passed when this setting was chosen, so please report it")


@contextlib.contextmanager
def _exclusive(out: Path):
    """One preparation at a time per folder (a second waits); the lock goes with its process, even on SIGKILL."""
    import fcntl

    with open(out / ".prepare.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _remove_leftovers(out: Path, log: Callable[[str], None]) -> None:
    """What a killed preparation left (its temporary model folder or parquet); called under the lock, so no
    running preparation owns them."""
    for leftover in [*out.glob("model.tmp*"), *out.glob("model.old-*"), *out.glob(".*.parquet.tmp")]:
        log(f"cpu_tiny: removing {leftover.name}, left by an interrupted preparation")
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()


def _stored_info(model_dir: Path) -> dict | None:
    try:
        return json.loads((model_dir / "cold_start.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _build_model(out: Path, model_dir: Path, seed: int, log: Callable[[str], None]) -> dict:
    """Build into model.tmp-<pid>, pass the gate, then put it in model/'s place (an older model/ goes)."""
    tmp = out / f"model.tmp-{os.getpid()}"
    old = out / f"model.old-{os.getpid()}"
    log(f"cpu_tiny: building the cold start in {model_dir} (once per DATA_DIR; about a minute on one core): "
        f"{COLD_START['steps']} SFT steps, then the quality gate on {GATE_HELDOUT} val problems")
    try:
        tmp.mkdir()
        info = make_cold_start(tmp, seed, log)
        log(f"  greedy val accuracy {info['val_acc']:.3f}, sampled pass@1 {info['val_pass1']:.3f}, "
            f"pass@{GROUP_SIZE} {info['val_pass_g']:.3f} ({info['build_s']:.0f} s in all)")
        check_quality(info, model_dir, seed)
        if model_dir.exists():
            model_dir.rename(old)
        tmp.rename(model_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return info


def prepare(out: Path, seed: int = 0, log: Callable[[str], None] = print) -> dict[str, Path]:
    """Write whatever of train.parquet, val.parquet and model/ is missing under `out` (or, for model/, was built
    from other settings); check the cold start's quality; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"train": out / "train.parquet", "val": out / "val.parquet", "model": out / "model"}
    with _exclusive(out):
        _remove_leftovers(out, log)
        if not paths["train"].is_file():
            problems = TASK.problems(TRAIN_PROBLEMS, seed=100 + seed, split="train")
            write_parquet([arithmetic_row(p, "train", i) for i, p in enumerate(problems)], paths["train"])
        if not paths["val"].is_file():
            write_parquet(validation_rows(), paths["val"])
        info = _stored_info(paths["model"])
        if info is None or info.get("settings") != build_settings(seed):
            if info is not None:
                log(f"cpu_tiny: {paths['model']} was built from other settings ({info.get('settings', 'unrecorded')}"
                    f"); rebuilding it")
            elif paths["model"].exists():
                log(f"cpu_tiny: {paths['model']} has no cold_start.json (not built here, or not finished); rebuilding it")
            info = _build_model(out, paths["model"], seed, log)
        else:
            check_quality(info, paths["model"], seed)  # the gate may have moved since it was built
    return paths


def _interrupted(signum, frame):
    raise SystemExit(128 + signum)  # `kill` (SIGTERM) unwinds like Ctrl-C: the temporary model folder goes


def main(argv=None) -> int:
    parser = cli.ArgumentParser(prog="python -m sspo_verl.testbed.cpu_recipe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for train.parquet, val.parquet, model/")
    parser.add_argument("--seed", type=int, default=0, help="cold-start seed (the recipe's COLD_START_SEED)")
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"--seed {args.seed}: give a whole number >= 0")
    signal.signal(signal.SIGTERM, _interrupted)
    return cli.run(parser.prog, _prepare_and_report, args.out.expanduser(), args.seed)


def _prepare_and_report(out: Path, seed: int) -> int:
    paths = prepare(out, seed, log=lambda line: print(line, flush=True))
    info = _stored_info(paths["model"])
    print(f"cpu_tiny data and cold start in {out} (greedy val accuracy {info['val_acc']:.2f}, sampled pass@1 "
          f"{info['val_pass1']:.2f}, pass@{info['group_size']} {info['val_pass_g']:.2f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
