"""Data preparation to verl's parquet format, offline: the shipped GSM8K jsonl and small hand-made samples."""

import re
from pathlib import Path

import pandas as pd
import pytest

from sspo_verl.data.prepare import SPECS, prepare
from sspo_verl.rewards import compute_score

from ..helpers import require_gsm8k

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
COLUMNS = ["data_source", "prompt", "ability", "reward_model", "extra_info"]  # verl's gsm8k preprocessing


@pytest.fixture(scope="module")
def gsm8k(tmp_path_factory):
    return prepare("gsm8k", tmp_path_factory.mktemp("gsm8k"), local=require_gsm8k())


def test_gsm8k_parquet_has_verls_columns_and_all_rows(gsm8k):
    for split, n in (("train", 7473), ("test", 1319)):
        df = pd.read_parquet(gsm8k[split])
        assert list(df.columns) == COLUMNS and len(df) == n
        row = df.iloc[0]
        assert row["data_source"] == "openai/gsm8k" and row["ability"] == "math"
        assert row["prompt"][0]["role"] == "user" and '"####"' in row["prompt"][0]["content"]
        assert row["reward_model"]["style"] == "rule"
        assert row["extra_info"]["split"] == split and row["extra_info"]["index"] == 0
    assert pd.read_parquet(gsm8k["test"]).iloc[0]["reward_model"]["ground_truth"] == "18"  # Janet's ducks


def test_gsm8k_rows_load_with_verls_rl_dataset(gsm8k, tmp_path):
    # verl's own dataset class reads our parquet (tiny tokenizer from the harness; no downloads)
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from sspo_verl.verl_on_cpu.harness import make_tiny_model

    tokenizer = AutoTokenizer.from_pretrained(make_tiny_model(tmp_path / "m"))
    config = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 512, "filter_overlong_prompts": False,
                               "return_raw_chat": True, "truncation": "right"})
    ds = RLHFDataset(data_files=[str(gsm8k["test"])], tokenizer=tokenizer, config=config)
    assert len(ds) == 1319
    item = ds[0]
    assert item["data_source"] == "openai/gsm8k" and item["reward_model"]["ground_truth"] == "18"


@pytest.mark.parametrize("name,split,n,answer", [("deepmath", "train", 3, "1"), ("math500", "test", 2, "\\frac{5}{6}"),
                                                 ("aime2024", "train", 1, "24")])
def test_math_sets_from_local_samples(tmp_path, name, split, n, answer):
    paths = prepare(name, tmp_path, local=FIXTURES / name)
    df = pd.read_parquet(paths[split])
    assert list(df.columns) == COLUMNS and len(df) == n
    row = df.iloc[0]
    assert row["data_source"] == SPECS[name].data_source
    assert row["reward_model"]["ground_truth"] == answer and "\\boxed{}" in row["prompt"][0]["content"]
    # the reward dispatch scores a boxed reference answer 1 for these rows
    assert compute_score(row["data_source"], f"so \\boxed{{{answer}}}", answer)["score"] == 1.0


def test_missing_local_split_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train.jsonl"):
        prepare("gsm8k", tmp_path / "out", local=tmp_path)


PROG = "python -m sspo_verl.data.prepare: error: "


def _closed_loopback_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the block ends: connecting to it is refused


@pytest.mark.parametrize("network", ["offline_mode", "closed_proxy"])
def test_without_network_one_line_points_to_local(tmp_path, network):
    """The Hub unreachable (HF's offline mode with an empty cache, or every request sent to a closed loopback port):
    one line pointing to --local, exit 2, nothing written, in seconds (not huggingface_hub's retries)."""
    import os
    import subprocess
    import sys
    import time

    env = {k: v for k, v in os.environ.items()
           if k.upper() not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "NO_PROXY", "HTTPS_PROXY", "HTTP_PROXY",
                                "ALL_PROXY")}
    env |= {"HF_HOME": str(tmp_path / "hf_home"), "OMP_NUM_THREADS": "1"}  # an empty cache
    if network == "offline_mode":
        env |= {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    else:
        proxy = f"http://127.0.0.1:{_closed_loopback_port()}"
        env |= {"HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "ALL_PROXY": proxy}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "sspo_verl.data.prepare", "gsm8k", "--out", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == "", proc
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(PROG + "cannot download openai/gsm8k from the Hugging Face Hub"), line
    assert "pass --local <folder> holding train.jsonl, test.jsonl (records with the hub's fields 'question' and " \
           "'answer')" in line
    assert not (tmp_path / "out").exists() and time.monotonic() - started < 60


def _jsonl(folder, split, *lines):
    folder.mkdir(exist_ok=True)
    (folder / f"{split}.jsonl").write_text("".join(line + "\n" for line in lines))
    return folder


GOOD_GSM8K = '{"question": "2 + 2?", "answer": "2 + 2 = 4\\n#### 4"}'
BAD_ARGUMENTS = [  # (arguments given a tmp folder, what the one line says)
    (lambda d: ["gsm8k", "--out", str(d / "o"), "--local", str(d / "absent")],
     r"--local .*absent: no such folder; pass the folder holding train.jsonl, test.jsonl"),
    (lambda d: ["gsm8k", "--out", str(d / "o"), "--local", str(_jsonl(d / "l", "train", GOOD_GSM8K))],
     r"--local .*/l: test.jsonl not found; --local needs train.jsonl, test.jsonl \(records with the hub's fields "
     r"'question' and 'answer'\)"),
    (lambda d: ["math500", "--out", str(_jsonl(d / "l", "test", "{}") / "test.jsonl"), "--local", str(d / "l")],
     r"--out .*test.jsonl is a file; pass a folder"),
    (lambda d: ["math500", "--out", str(d / "o"), "--limit", "0"],
     r"argument --limit: '0' is not a positive whole number .*\(see --help\)"),
    (lambda d: ["math500", "--out", str(d / "o"), "--local", str(_jsonl(d / "l", "test", '{"problem": "x"}', "[1]"))],
     r"--local: .*test.jsonl, line 2, is not a JSON object \('\[1\]'\)"),
    (lambda d: ["math500", "--out", str(d / "o"), "--local", str(_jsonl(d / "l", "test", '{"question": "x"}'))],
     r"test.jsonl, record 1, has no field 'problem' \(it has \['question'\]\); HuggingFaceH4/MATH-500 records need "
     r"the fields 'problem' and 'answer'"),
    (lambda d: ["gsm8k", "--out", str(d / "o"),
                "--local", str(_jsonl(_jsonl(d / "l", "train", GOOD_GSM8K), "test", '{"question": "q", "answer": "4"}'))],
     r"test.jsonl, record 1: no '#### <number>' in GSM8K answer: '4'"),
]


@pytest.mark.parametrize("index", range(len(BAD_ARGUMENTS)))
def test_a_bad_argument_or_record_is_one_line_and_writes_nothing(tmp_path, capsys, index):
    from sspo_verl.data.prepare import main

    arguments, message = BAD_ARGUMENTS[index]
    try:
        code = main(arguments(tmp_path))
    except SystemExit as exc:  # argparse's own errors (--limit) exit
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(PROG) and re.search(message, err), err
    assert not (tmp_path / "o").exists()  # a bad test split left no train.parquet behind


def test_limit_and_the_written_files(tmp_path, capsys):
    from sspo_verl.data.prepare import main

    local = _jsonl(_jsonl(tmp_path / "l", "train", GOOD_GSM8K, GOOD_GSM8K.replace("4", "5")), "test", GOOD_GSM8K)
    assert main(["gsm8k", "--out", str(tmp_path / "o"), "--local", str(local), "--limit", "1"]) == 0
    assert len(pd.read_parquet(tmp_path / "o" / "train.parquet")) == 1
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["test.parquet", "train.parquet"]  # no temp files
    assert capsys.readouterr().out.splitlines() == [f"gsm8k train: {tmp_path / 'o' / 'train.parquet'}",
                                                    f"gsm8k test: {tmp_path / 'o' / 'test.parquet'}"]
