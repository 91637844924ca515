"""The testbed's task: multi-step arithmetic with a verifiable answer, and the character tokenizer for it.

A problem chains `n_operands` numbers with + and -; the solution writes each running total, comma-separated,
then the end-of-sequence token. The last number is the answer, as on GSM8K's `#### 72`:

    prompt   "23+41-17="
    solution "64,47</s>"

The verifier gives 1 when the response is exactly a list of numbers whose last one is the answer
(a strict format, like the GSM8K reward), else 0. It is verl's scorer of data_source `sspo/arithmetic`
(`sspo_verl.rewards.arithmetic`), so the testbed and a main_ppo run score a response the same way.

Every problem belongs to one split by a hash of its prompt: "val" and "test" (the two held-out sets: a sweep
chooses its knobs on one and reports on the other) and "train" (the cold start and the RL prompts), so no
held-out problem is ever trained on, and the two held-out sets are disjoint.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..rewards.arithmetic import score

CHARS = "0123456789+-=,"
SPLITS = ("train", "val", "test")
HELDOUT_SEEDS = {"val": 1, "test": 2}  # each held-out set is one fixed sample: the same for every seed and method
_SPLIT_BUCKETS = 8  # crc32(prompt) % 8: bucket 0 is val, 1 is test, the rest (3/4 of the problems) train
PAD, EOS = "<pad>", "</s>"


@dataclass(frozen=True)
class Problem:
    prompt: str  # "23+41-17="
    solution: str  # "64,47" (without EOS)
    answer: int


@dataclass(frozen=True)
class ArithmeticTask:
    """Chains of `n_operands` numbers in [0, max_operand] joined by + or -.

    total_width: each running total written with at least this many characters, zero-padded after its sign
    ("012", "-03" at width 3; 0: as short as possible). The verifier reads them as the same integers; the k-th total
    then starts at the same place in every solution, which a small model finds easier to line up with the k-th
    number of the prompt on long chains (the long-response preset)."""

    n_operands: int = 3
    max_operand: int = 49
    total_width: int = 0

    def __post_init__(self):
        if self.n_operands < 2 or self.max_operand < 1 or self.total_width < 0:
            raise ValueError(f"ArithmeticTask needs n_operands >= 2, max_operand >= 1 and total_width >= 0, got "
                             f"n_operands={self.n_operands}, max_operand={self.max_operand}, "
                             f"total_width={self.total_width}")

    def write(self, total: int) -> str:
        """A running total as the solution writes it."""
        return f"{total:0{self.total_width}d}" if self.total_width else str(total)

    def sample(self, rng: random.Random) -> Problem:
        numbers = [rng.randint(0, self.max_operand) for _ in range(self.n_operands)]
        ops = [rng.choice("+-") for _ in range(self.n_operands - 1)]
        totals, total = [], numbers[0]
        for op, n in zip(ops, numbers[1:]):
            total = total + n if op == "+" else total - n
            totals.append(total)
        prompt = str(numbers[0]) + "".join(op + str(n) for op, n in zip(ops, numbers[1:])) + "="
        return Problem(prompt=prompt, solution=",".join(map(self.write, totals)), answer=total)

    @property
    def size(self) -> int:
        """How many distinct problems there are (prompts differ)."""
        return (self.max_operand + 1) ** self.n_operands * 2 ** (self.n_operands - 1)

    @property
    def max_heldout(self) -> int:
        """The most problems `heldout` draws from one split: a split holds about size / 8 problems, less a margin."""
        return int(0.6 * self.size / _SPLIT_BUCKETS)

    def problems(self, n: int, seed: int, split: str = "train") -> list[Problem]:
        """`n` problems of `split` drawn with replacement (a stream of prompts), deterministic in `seed`."""
        _check_split(split)
        rng = random.Random(seed)
        out = []
        while len(out) < n:
            p = self.sample(rng)
            if split_of(p.prompt) == split:
                out.append(p)
        return out

    def heldout(self, n: int, split: str = "val") -> list[Problem]:
        """`n` distinct problems of the held-out `split` ("val" or "test"): one fixed set per split."""
        if split not in HELDOUT_SEEDS:
            raise ValueError(f"held-out split {split!r}: choose one of {', '.join(HELDOUT_SEEDS)}")
        most = self.max_heldout
        if n > most:
            raise ValueError(f"{n} held-out problems asked of a task with {self.size} problems (about "
                             f"{self.size // _SPLIT_BUCKETS} per held-out split): ask for at most {most}, "
                             f"or raise max_operand / n_operands")
        rng, seen, out = random.Random(HELDOUT_SEEDS[split]), set(), []
        while len(out) < n:
            p = self.sample(rng)
            if split_of(p.prompt) == split and p.prompt not in seen:
                seen.add(p.prompt)
                out.append(p)
        return out

    @property
    def max_prompt_chars(self) -> int:
        return self.n_operands * (len(str(self.max_operand)) + 1)

    @property
    def max_solution_chars(self) -> int:
        # each running total has at most len(str(n_operands * max_operand + 1)) digits (+ 1: a flawed
        # demonstration's final total, see `flawed`) and a sign, or total_width characters, plus a comma
        return (self.n_operands - 1) * (max(self.total_width, len(str(self.n_operands * self.max_operand + 1)) + 1) + 1)

    @property
    def response_len(self) -> int:
        """Response tokens to sample: the longest solution and its EOS."""
        return self.max_solution_chars + 1


def flawed(problem: Problem, task: ArithmeticTask | None = None) -> str:
    """The solution with its final total off by one (answer + 1): a demonstration of mixed quality's wrong half,
    written as `task` writes totals (default: as short as possible).

    A cold start on a mix of right and flawed demonstrations gives a policy that samples the right answer some of
    the time on every problem (pass@k far above pass@1): something for RL to sharpen (testbed-probe.md)."""
    totals = problem.solution.split(",")
    return ",".join(totals[:-1] + [(task or ArithmeticTask()).write(problem.answer + 1)])


def split_of(prompt: str) -> str:
    """The split a problem belongs to, from a hash of its prompt (stable across processes and Python versions)."""
    bucket = zlib.crc32(prompt.encode()) % _SPLIT_BUCKETS
    return "val" if bucket == 0 else "test" if bucket == 1 else "train"


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: choose one of {', '.join(SPLITS)}")


def reward(response: str, answer: int) -> float:
    """1.0 when `response` (decoded, without EOS) is a comma-separated list of numbers ending in `answer`, else 0.0.

    Only the format and the last number are checked, as GSM8K's reward checks only the `####` answer."""
    return float(score(response, answer).correct)


def build_tokenizer(path: str | Path | None = None):
    """A character-level HF tokenizer over CHARS plus <pad> and </s> (saved to `path` when given).

    The chat template is the identity, so verl's data path would see the prompt as it is."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(CHARS)} | {PAD: len(CHARS), EOS: len(CHARS) + 1}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=PAD))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=PAD)
    hf.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    if path is not None:
        hf.save_pretrained(path)
    return hf
