"""Datasets -> verl's RL parquet format (the columns of verl's examples/data_preprocess/gsm8k.py):

    data_source, prompt (chat messages), ability, reward_model {style, ground_truth}, extra_info {split, index, ...}

    python -m sspo_verl.data.prepare gsm8k --local ../shared/data/gsm8k --out ~/data/gsm8k   # offline, jsonl
    python -m sspo_verl.data.prepare gsm8k --out ~/data/gsm8k                                 # datasets hub
    python -m sspo_verl.data.prepare deepmath --out ~/data/deepmath
    python -m sspo_verl.data.prepare math500 --out ~/data/math500
    python -m sspo_verl.data.prepare aime2024 --out ~/data/aime2024     (and aime2025)

--local takes a folder of <split>.jsonl files with the hub's field names. Each run writes <out>/<split>.parquet.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from sspo_verl.rewards.gsm8k import reference_answer

GSM8K_INSTRUCTION = 'Solve step by step, then give the final answer as a number after "####".'
BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class DatasetSpec:
    data_source: str  # also what the reward dispatch keys on
    hub_id: str
    hub_config: str | None
    splits: tuple[str, ...]
    question: str  # field holding the problem
    answer: Callable[[dict], str]  # record -> ground truth
    instruction: str


SPECS = {
    "gsm8k": DatasetSpec("openai/gsm8k", "openai/gsm8k", "main", ("train", "test"), "question",
                         lambda r: reference_answer(r["answer"]), GSM8K_INSTRUCTION),
    "deepmath": DatasetSpec("zwhe99/DeepMath-103K", "zwhe99/DeepMath-103K", None, ("train",), "question",
                            lambda r: str(r["final_answer"]), BOXED_INSTRUCTION),
    "math500": DatasetSpec("HuggingFaceH4/MATH-500", "HuggingFaceH4/MATH-500", None, ("test",), "problem",
                           lambda r: str(r["answer"]), BOXED_INSTRUCTION),
    "aime2024": DatasetSpec("HuggingFaceH4/aime_2024", "HuggingFaceH4/aime_2024", None, ("train",), "problem",
                            lambda r: str(r["answer"]), BOXED_INSTRUCTION),
    "aime2025": DatasetSpec("opencompass/AIME2025", "opencompass/AIME2025", "AIME2025-I", ("test",), "question",
                            lambda r: str(r["answer"]), BOXED_INSTRUCTION),
}


def to_verl_row(spec: DatasetSpec, record: dict, split: str, index: int) -> dict:
    question = str(record[spec.question]).strip()
    answer = spec.answer(record)
    return {
        "data_source": spec.data_source,
        "prompt": [{"role": "user", "content": f"{question} {spec.instruction}"}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": answer},
        "extra_info": {"split": split, "index": index, "question": question, "answer": answer},
    }


def read_local(folder: Path, split: str) -> list[dict]:
    path = folder / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --local needs <split>.jsonl files ({split}.jsonl here)")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_hub(spec: DatasetSpec, split: str) -> Iterable[dict]:
    import datasets  # verl depends on it; only this path needs the network

    return datasets.load_dataset(spec.hub_id, spec.hub_config, split=split)


def prepare(name: str, out: Path, local: Path | None = None, limit: int | None = None) -> dict[str, Path]:
    import pandas as pd

    spec = SPECS[name]
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for split in spec.splits:
        records = read_local(local, split) if local else read_hub(spec, split)
        rows = [to_verl_row(spec, r, split, i) for i, r in enumerate(records) if limit is None or i < limit]
        path = out / f"{split}.parquet"
        pd.DataFrame(rows).to_parquet(path)
        written[split] = path
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=sorted(SPECS))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--local", type=Path, default=None, help="folder of <split>.jsonl (offline)")
    parser.add_argument("--limit", type=int, default=None, help="first N records per split")
    args = parser.parse_args(argv)
    for split, path in prepare(args.dataset, args.out.expanduser(), args.local, args.limit).items():
        print(f"{args.dataset} {split}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
