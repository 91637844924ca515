"""Data preparation to verl's parquet format, offline: the shipped GSM8K jsonl and small hand-made samples."""

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
