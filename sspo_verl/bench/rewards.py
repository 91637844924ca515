"""Benchmark of the reward scorers: the worst case on adversarial responses, and the cost of a normal answer.

    python -m sspo_verl.bench.rewards                  # every adversarial response at 64 KiB, 256 KiB and 1 MiB
    python -m sspo_verl.bench.rewards --quick          # 64 KiB only, fewer repeats (CI smoke test)

For each scorer (GSM8K, math-verify) and each adversarial response (the slow inputs of issue 13 and their
relatives: long whitespace after `####` or `\\boxed{`, deep nesting, a 1 MiB number, ...) it reports the median
time of `compute_score`, as verl calls it. The goal is under 50 ms for a 1 MiB response; per size, the worst case
is the line to read, and the ratio between sizes shows how time grows (4x the size: 4x the time when linear).

The happy path: a normal right answer, timed as the worker pool runs it (math-verify in a worker process) and,
as the baseline of the ratio, math-verify called on the same text in this process's main thread (what only works
there, with its signal-based timeout).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

KIB = 1 << 10
SIZES = {"64KiB": 64 * KIB, "256KiB": 256 * KIB, "1MiB": 1024 * KIB}


def adversarial(size: int) -> dict[str, str]:
    """name -> a response of about `size` characters built to make a naive scorer slow."""
    return {
        "spaces after ####": "#### " + " " * size,
        "newlines after ####": "#### " + "\n" * size,
        "spaces after \\boxed{": "\\boxed{" + " " * size,
        "nested braces": "\\boxed{" + "{" * size,
        "balanced nesting": "\\boxed{" + "{" * (size // 2) + "}" * (size // 2) + "}",
        "many \\boxed{": "\\boxed{" * (size // 7),
        "many ####": "####" * (size // 4),
        "many answers": "#### 1 " * (size // 7),
        "one long number": "1," * (size // 2),
        "digits": "9" * size,
        "minus signs": "-" * size,
        "dots": "." * size,
        "dollars after ####": "####" + " $" * (size // 2),
        "unicode digits": "#### " + "\u0661" * size,
        "prose": "The value is 18, so we write \\boxed{18} and #### 18. " * (size // 50),
    }


SCORERS = {"gsm8k": ("openai/gsm8k", "18"), "math-verify": ("HuggingFaceH4/MATH-500", "18")}


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 KiB only, 3 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per case (median; default 7)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    sizes = {"64KiB": SIZES["64KiB"]} if args.quick else SIZES
    logging.getLogger("sspo_verl.rewards").setLevel(logging.ERROR)  # timeouts are part of the measurement

    from sspo_verl.rewards import compute_score, math_answers

    compute_score("HuggingFaceH4/MATH-500", "\\boxed{1}", "1")  # start the math-verify worker outside the timing
    print(f"timeout per math answer: {math_answers.pool().budget_s:g} s; median of {repeats} calls\n")
    print("| scorer | response | " + " | ".join(f"{name} (ms)" for name in sizes) + " |")
    print("|---|---|" + "---|" * len(sizes))
    worst = {scorer: {name: (0.0, "") for name in sizes} for scorer in SCORERS}
    for scorer, (source, reference) in SCORERS.items():
        responses = {name: adversarial(size) for name, size in sizes.items()}
        for case in responses[next(iter(sizes))]:
            cells = []
            for size_name in sizes:
                response = responses[size_name][case]
                ms = 1e3 * _median_s(lambda: compute_score(source, response, reference), repeats)
                cells.append(f"{ms:.2f}")
                worst[scorer][size_name] = max(worst[scorer][size_name], (ms, case))
            print(f"| {scorer} | {case} | " + " | ".join(cells) + " |")
    print()
    for scorer, by_size in worst.items():
        print(f"{scorer} worst case: " + ", ".join(f"{name} {ms:.2f} ms ({case})" for name, (ms, case) in by_size.items()))

    # the happy path: a normal answer through the worker pool, against math-verify in this main thread
    from math_verify import parse, verify

    response, reference = "We find $x = \\frac{1}{2}$, so the answer is \\boxed{0.5}.", "\\frac{1}{2}"
    n = 50 if args.quick else 200
    pooled = _median_s(lambda: compute_score("HuggingFaceH4/MATH-500", response, reference), n)
    gold = parse(f"${reference}$")  # parsed once, as the worker caches it: the ratio is the pool's own cost
    in_process = _median_s(lambda: verify(gold, parse(math_answers.answer_text(response))), n)
    gsm8k = _median_s(lambda: compute_score("openai/gsm8k", "3 * 24 = 72 dollars.\n#### 72", "72"), n)
    print(f"\nhappy path, median of {n}: math-verify via the worker pool {1e3 * pooled:.3f} ms, in this main thread "
          f"{1e3 * in_process:.3f} ms (ratio {pooled / in_process:.2f}); gsm8k {1e3 * gsm8k:.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
