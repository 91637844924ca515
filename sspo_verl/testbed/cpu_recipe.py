"""What `recipes/cpu_tiny.sh` needs before it can launch verl's main_ppo on a CPU: data and a cold-start policy.

    python -m sspo_verl.testbed.cpu_recipe --out ~/data/sspo_cpu_tiny        # idempotent: skips what exists

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
                          right some of the time and samples the right answer in one of 8 tries far more often

Rows use verl's RL format (`sspo_verl.data.prepare.to_verl_row`), rewards come from `sspo_verl.rewards`.
The tokenizer has one token per byte (`build_tokenizer`), so any prompt tokenizes without unknown tokens.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ..data.prepare import SPECS, to_verl_row
from ..rewards.arithmetic import SOURCES
from .arithmetic import ArithmeticTask, Problem

ARITHMETIC_SOURCE = SOURCES[0]
# The testbed's default task and cold start (python -m sspo_verl.testbed; a test checks they stay equal). Written
# out, not read from the testbed's modules, which import torch: this module runs before every cpu_tiny launch.
TASK = ArithmeticTask(n_operands=3, max_operand=9)  # three numbers 0..9 with + and -, answered with the running totals
TRAIN_PROBLEMS = 2048
VAL_PER_SOURCE = {"arithmetic": 64, "gsm8k": 8, "math500": 8}
MAX_POSITIONS = 512  # word problems with their instruction run to ~200 characters
# The testbed's cold start (docs/TESTBED.md, "What made RL learn here"): greedy held-out accuracy about 0.3, pass@8 about 0.9
COLD_START = dict(steps=300, batch_size=64, lr=3e-3, flawed_fraction=0.7)
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


def make_cold_start(path: Path, seed: int = 0) -> dict:
    """A tiny Qwen2 (the testbed's small size) fine-tuned on arithmetic solutions; saved with its tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from . import policy as pol

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tokenizer), max_position_embeddings=MAX_POSITIONS, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.eos_token_id, **pol.MODEL_SIZES["small"])
    model = Qwen2ForCausalLM(config)
    t0 = time.perf_counter()
    pol.cold_start(model, tokenizer, TASK, COLD_START["steps"], COLD_START["batch_size"], lr=COLD_START["lr"],
                   seed=seed, prompt_len=TASK.max_prompt_chars, response_len=TASK.response_len,
                   flawed_fraction=COLD_START["flawed_fraction"])
    heldout = TASK.heldout(256, "val")
    greedy = pol.accuracy(model, tokenizer, heldout, TASK.max_prompt_chars, TASK.response_len)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    info = {"greedy_heldout_acc": greedy, "sft_s": round(time.perf_counter() - t0, 1),
            "parameters": sum(p.numel() for p in model.parameters()), **COLD_START}
    (path / "cold_start.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def prepare(out: Path, seed: int = 0) -> dict[str, Path]:
    """Write whatever of train.parquet, val.parquet and model/ is missing under `out`; return their paths."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    paths = {"train": out / "train.parquet", "val": out / "val.parquet", "model": out / "model"}
    if not paths["train"].is_file():
        problems = TASK.problems(TRAIN_PROBLEMS, seed=100 + seed, split="train")
        pd.DataFrame([arithmetic_row(p, "train", i) for i, p in enumerate(problems)]).to_parquet(paths["train"])
    if not paths["val"].is_file():
        pd.DataFrame(validation_rows()).to_parquet(paths["val"])
    if not (paths["model"] / "config.json").is_file():
        tmp = Path(tempfile.mkdtemp(prefix="model.tmp", dir=out))  # a half-written model never takes model/'s place
        try:
            make_cold_start(tmp, seed)
            tmp.rename(paths["model"])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for train.parquet, val.parquet, model/")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = prepare(args.out.expanduser(), args.seed)
    info = json.loads((paths["model"] / "cold_start.json").read_text())
    print(f"cpu_tiny data and cold start in {args.out} (greedy held-out accuracy {info['greedy_heldout_acc']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
