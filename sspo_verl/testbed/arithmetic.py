"""The testbed's task: multi-step arithmetic with a verifiable answer, and the character tokenizer for it.

A problem chains `n_operands` numbers with + and -; the solution writes each running total, comma-separated,
then the end-of-sequence token. The last number is the answer, as on GSM8K's `#### 72`:

    prompt   "23+41-17="
    solution "64,47</s>"

The verifier gives 1 when the response is exactly a list of numbers whose last one is the answer
(a strict format, like the GSM8K reward), else 0.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

CHARS = "0123456789+-=,"
HELDOUT_SEED = 1  # the held-out problems: one set for every seed and method
PAD, EOS = "<pad>", "</s>"
_ANSWER = re.compile(r"^(?:-?\d+,)*(-?\d+)$")  # running totals, comma-separated; the last is the answer


@dataclass(frozen=True)
class Problem:
    prompt: str  # "23+41-17="
    solution: str  # "64,47" (without EOS)
    answer: int


@dataclass(frozen=True)
class ArithmeticTask:
    """Chains of `n_operands` numbers in [0, max_operand] joined by + or -."""

    n_operands: int = 3
    max_operand: int = 49

    def __post_init__(self):
        if self.n_operands < 2 or self.max_operand < 1:
            raise ValueError(f"ArithmeticTask needs n_operands >= 2 and max_operand >= 1, got "
                             f"n_operands={self.n_operands}, max_operand={self.max_operand}")

    def sample(self, rng: random.Random) -> Problem:
        numbers = [rng.randint(0, self.max_operand) for _ in range(self.n_operands)]
        ops = [rng.choice("+-") for _ in range(self.n_operands - 1)]
        totals, total = [], numbers[0]
        for op, n in zip(ops, numbers[1:]):
            total = total + n if op == "+" else total - n
            totals.append(total)
        prompt = str(numbers[0]) + "".join(op + str(n) for op, n in zip(ops, numbers[1:])) + "="
        return Problem(prompt=prompt, solution=",".join(map(str, totals)), answer=total)

    def problems(self, n: int, seed: int) -> list[Problem]:
        rng = random.Random(seed)
        return [self.sample(rng) for _ in range(n)]

    def heldout(self, n: int) -> list[Problem]:
        return self.problems(n, seed=HELDOUT_SEED)

    @property
    def max_prompt_chars(self) -> int:
        return self.n_operands * (len(str(self.max_operand)) + 1)

    @property
    def max_solution_chars(self) -> int:
        # each running total has at most len(str(n_operands * max_operand)) digits and a sign, plus a comma
        return (self.n_operands - 1) * (len(str(self.n_operands * self.max_operand)) + 2)

    @property
    def response_len(self) -> int:
        """Response tokens to sample: the longest solution and its EOS."""
        return self.max_solution_chars + 1


def reward(response: str, answer: int) -> float:
    """1.0 when `response` (decoded, without EOS) is a comma-separated list of numbers ending in `answer`, else 0.0.

    Only the format and the last number are checked, as GSM8K's reward checks only the `####` answer."""
    match = _ANSWER.match(response.strip())
    return float(match is not None and int(match.group(1)) == answer)


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
