"""Datasets -> verl's RL parquet format (the columns of verl's examples/data_preprocess/gsm8k.py):

    data_source, prompt (chat messages), ability, reward_model {style, ground_truth}, extra_info {split, index, ...}

    python -m sspo_verl.data.prepare gsm8k --local ../shared/data/gsm8k --out ~/data/gsm8k   # offline, jsonl
    python -m sspo_verl.data.prepare gsm8k --out ~/data/gsm8k                                 # datasets hub
    python -m sspo_verl.data.prepare deepmath --out ~/data/deepmath
    python -m sspo_verl.data.prepare math500 --out ~/data/math500
    python -m sspo_verl.data.prepare aime2024 --out ~/data/aime2024     (and aime2025)

--local takes a folder of <split>.jsonl files with the hub's field names. Each run writes <out>/<split>.parquet,
after reading and converting every split (a bad record leaves no partial output). Without --local, the Hugging Face
Hub is asked for the dataset before any work; when it cannot be reached the tool says so in one line and points to
--local (with HF_HUB_OFFLINE=1 a copy in the local datasets cache is used instead).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from sspo_verl import cli
from sspo_verl.errors import SSPOError
from sspo_verl.rewards.gsm8k import reference_answer

GSM8K_INSTRUCTION = 'Solve step by step, then give the final answer as a number after "####".'
BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
HUB_TIMEOUT_S = 10  # the Hub check before any work


@dataclass(frozen=True)
class DatasetSpec:
    data_source: str  # also what the reward dispatch keys on
    hub_id: str
    hub_config: str | None
    splits: tuple[str, ...]
    question: str  # field holding the problem
    answer_field: str  # field holding the answer
    instruction: str
    ground_truth: Callable[[str], str] = str  # the answer field's text -> the reward's ground truth

    def answer(self, record: dict) -> str:
        return self.ground_truth(str(record[self.answer_field]))

    def fields(self) -> str:
        return f"{self.question!r} and {self.answer_field!r}"

    def files(self) -> str:
        return ", ".join(f"{split}.jsonl" for split in self.splits)


SPECS = {
    "gsm8k": DatasetSpec("openai/gsm8k", "openai/gsm8k", "main", ("train", "test"), "question", "answer",
                         GSM8K_INSTRUCTION, reference_answer),
    "deepmath": DatasetSpec("zwhe99/DeepMath-103K", "zwhe99/DeepMath-103K", None, ("train",), "question",
                            "final_answer", BOXED_INSTRUCTION),
    "math500": DatasetSpec("HuggingFaceH4/MATH-500", "HuggingFaceH4/MATH-500", None, ("test",), "problem", "answer",
                           BOXED_INSTRUCTION),
    "aime2024": DatasetSpec("HuggingFaceH4/aime_2024", "HuggingFaceH4/aime_2024", None, ("train",), "problem",
                            "answer", BOXED_INSTRUCTION),
    "aime2025": DatasetSpec("opencompass/AIME2025", "opencompass/AIME2025", "AIME2025-I", ("test",), "question",
                            "answer", BOXED_INSTRUCTION),
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


class DataError(SSPOError):
    """A bad --local folder or record, an unwritable --out, or a dataset that cannot be downloaded."""


class MissingSplit(DataError, FileNotFoundError):
    """--local lacks a split's <split>.jsonl."""


def split_files(folder: Path, spec: DatasetSpec) -> dict[str, Path]:
    """{split: <folder>/<split>.jsonl} for every split of `spec`; MissingSplit names the first absent one."""
    if not folder.is_dir():
        raise MissingSplit(f"--local {folder}: no such folder; pass the folder holding {spec.files()} "
                           f"(records with the hub's fields {spec.fields()})")
    files = {split: folder / f"{split}.jsonl" for split in spec.splits}
    for split, path in files.items():
        if not path.is_file():
            raise MissingSplit(f"--local {folder}: {path.name} not found; --local needs {spec.files()} "
                               f"(records with the hub's fields {spec.fields()})")
    return files


def read_local(path: Path) -> list[dict]:
    """The records of one <split>.jsonl; a line that is not a JSON object is a DataError naming it."""
    records = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                raise DataError(f"--local: {path}, line {number}, is not a JSON object ({line.strip()[:60]!r}); "
                                f"each line holds one record with the hub's fields")
            records.append(record)
    return records


def _hub_offline() -> bool:
    """HF_HUB_OFFLINE / HF_DATASETS_OFFLINE: `datasets` may read its cache only."""
    import datasets

    return bool(datasets.config.HF_HUB_OFFLINE)


def _unreachable(spec: DatasetSpec, why: str) -> DataError:
    return DataError(f"cannot download {spec.hub_id} from the Hugging Face Hub ({why}): without network, pass "
                     f"--local <folder> holding {spec.files()} (records with the hub's fields {spec.fields()})")


def _network_errors() -> tuple[type[BaseException], ...]:
    """What huggingface_hub raises when the Hub cannot be reached or refuses the dataset (it uses httpx since
    1.0, requests before; both raise OSError subclasses for some failures)."""
    from huggingface_hub.errors import HfHubHTTPError

    errors: tuple[type[BaseException], ...] = (OSError, HfHubHTTPError)
    try:
        import httpx
    except ImportError:
        return errors
    return errors + (httpx.HTTPError,)


def check_hub(spec: DatasetSpec) -> None:
    """Before any work: the Hub answers for this dataset, or a one-line DataError pointing to --local. Offline mode
    (HF_HUB_OFFLINE=1) skips the check: the dataset may be in the local cache (read_hub says when it is not)."""
    if _hub_offline():
        return
    from huggingface_hub import HfApi

    try:
        HfApi().dataset_info(spec.hub_id, timeout=HUB_TIMEOUT_S)
    except _network_errors() as exc:
        raise _unreachable(spec, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no answer'}") from None


def read_hub(spec: DatasetSpec, split: str) -> Iterable[dict]:
    import datasets  # verl depends on it; only this path needs the network

    try:
        return datasets.load_dataset(spec.hub_id, spec.hub_config, split=split)
    except ConnectionError as exc:  # offline mode and not in the cache, or the Hub went away since check_hub
        why = ("HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set and the local datasets cache has no copy"
               if _hub_offline() else str(exc).splitlines()[0])
        raise _unreachable(spec, why) from None


def to_rows(spec: DatasetSpec, records: Iterable[dict], split: str, where: str, limit: int | None) -> list[dict]:
    """verl rows of the first `limit` records; a record without the spec's fields is a DataError naming it."""
    rows = []
    for index, record in enumerate(records):
        if limit is not None and index >= limit:
            break
        try:
            rows.append(to_verl_row(spec, record, split, index))
        except KeyError as exc:
            raise DataError(f"{where}, record {index + 1}, has no field {exc.args[0]!r} (it has {sorted(record)[:8]}); "
                            f"{spec.hub_id} records need the fields {spec.fields()}") from None
        except ValueError as exc:  # e.g. a GSM8K answer without '#### <number>'
            raise DataError(f"{where}, record {index + 1}: {exc}") from None
    return rows


def write_parquet(rows: list[dict], path: Path) -> None:
    """Atomically: a killed run leaves the old file or none, never half of one."""
    import pandas as pd

    tmp = path.with_name(f".{path.name}.tmp")
    pd.DataFrame(rows).to_parquet(tmp)
    os.replace(tmp, path)


def prepare(name: str, out: Path, local: Path | None = None, limit: int | None = None) -> dict[str, Path]:
    """<out>/<split>.parquet for every split of dataset `name`; every split is read and converted before any file
    is written, so a bad record leaves no partial output."""
    spec = SPECS[name]
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; pass a folder for the <split>.parquet files")
    files = split_files(local, spec) if local else None
    if not local:
        check_hub(spec)
    rows = {}
    for split in spec.splits:
        if files:
            rows[split] = to_rows(spec, read_local(files[split]), split, f"--local: {files[split]}", limit)
        else:
            rows[split] = to_rows(spec, read_hub(spec, split), split, f"{spec.hub_id} ({split})", limit)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, split_rows in rows.items():
        written[split] = out / f"{split}.parquet"
        write_parquet(split_rows, written[split])
    return written


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number (the first N records per split)")
    return value


def main(argv=None) -> int:
    parser = cli.ArgumentParser(prog="python -m sspo_verl.data.prepare", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(SPECS))
    parser.add_argument("--out", type=Path, required=True, help="folder for <split>.parquet")
    parser.add_argument("--local", type=Path, default=None, help="folder of <split>.jsonl (offline)")
    parser.add_argument("--limit", type=_positive_int, default=None, help="first N records per split")
    args = parser.parse_args(argv)
    return cli.run(parser.prog, _main, args)


def _main(args: argparse.Namespace) -> None:
    local = args.local.expanduser() if args.local else None
    try:
        written = prepare(args.dataset, args.out.expanduser(), local, args.limit)
    except OSError as exc:  # --out not writable, a --local file unreadable
        if exc.filename is None:
            raise
        raise DataError(f"{exc.filename or ''}: {exc.strerror or exc}; check the path and its permissions") from None
    for split, path in written.items():
        print(f"{args.dataset} {split}: {path}")


if __name__ == "__main__":
    sys.exit(main())
