"""The rewards the way main_ppo computes them: verl 0.9.1's reward loop (RewardLoopWorker -> NaiveRewardManager,
which calls the reward function in a thread), a plain thread, a Ray task, and RewardLoopManager's aggregation of
a mixed batch (reward_extra_info keyed on the first item's keys)."""

import os
import shutil
import tempfile
import threading

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from verl import DataProto
from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

from sspo_verl.tools.dry_run import compose
from sspo_verl.rewards import RESULT_KEYS, compute_score

# (data_source, response, reference, score) for every dataset the recipes train or validate on
CASES = [
    ("openai/gsm8k", "She pays 3 * 24 = 72 dollars.\n#### 72", "72", 1.0),
    ("openai/gsm8k", "She pays 3 * 24 = 72 dollars.\n#### 71", "72", 0.0),
    ("zwhe99/DeepMath-103K", "The limit is \\boxed{4}.", "4", 1.0),
    ("zwhe99/DeepMath-103K", "The integral is \\boxed{\\frac{\\pi}{4}}.", "\\frac{\\pi}{4}", 1.0),
    ("zwhe99/DeepMath-103K", "The limit is \\boxed{5}.", "4", 0.0),
    ("HuggingFaceH4/MATH-500", "So $x = \\boxed{0.5}$.", "\\frac{1}{2}", 1.0),
    ("HuggingFaceH4/MATH-500", "So $x = \\boxed{\\frac{1}{3}}$.", "\\frac{1}{2}", 0.0),
    ("HuggingFaceH4/aime_2024", "Hence the remainder is \\boxed{204}.", "204", 1.0),
    ("HuggingFaceH4/aime_2024", "Hence the remainder is \\boxed{240}.", "204", 0.0),
    ("opencompass/AIME2025", "The sum of the bases is $\\boxed{70}$.", "70", 1.0),
    ("opencompass/AIME2025", "The sum of the bases is $\\boxed{588}$.", "70", 0.0),
]
OVERRIDES = ["reward.custom_reward_function.path=pkg://sspo_verl.rewards",
             "reward.custom_reward_function.name=compute_score"]


@pytest.fixture(scope="module")
def tokenizer_dir():
    """A byte-level tokenizer (any text round-trips), built here and saved where verl's hf_tokenizer loads it."""
    path = tempfile.mkdtemp(prefix="sspo-tokenizer-")
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab.update({"<pad>": len(vocab), "</s>": len(vocab) + 1})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>").save_pretrained(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def rollout_batch(tokenizer_dir, cases) -> DataProto:
    """What the rollout hands the reward loop: prompts, right-padded responses, attention mask, the row's fields."""
    tok = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    responses = [tok.encode(response) for _, response, _, _ in cases]
    width = max(map(len, responses))
    prompt = torch.full((len(cases), 4), tok.pad_token_id)
    response_ids = torch.tensor([ids + [tok.pad_token_id] * (width - len(ids)) for ids in responses])
    response_mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in responses])
    return DataProto.from_single_dict({
        "prompts": prompt, "responses": response_ids,
        "attention_mask": torch.cat([torch.ones_like(prompt), response_mask], dim=1),
        "data_source": np.array([c[0] for c in cases], dtype=object),
        "reward_model": np.array([{"style": "rule", "ground_truth": c[2]} for c in cases], dtype=object),
        "extra_info": np.array([{"index": i} for i in range(len(cases))], dtype=object),
    })


def test_verls_reward_loop_scores_every_dataset(tokenizer_dir):
    """RewardLoopWorker, as each Ray reward worker builds it from main_ppo's config, scoring one batch."""
    worker = RewardLoopWorker(compose([f"actor_rollout_ref.model.path={tokenizer_dir}", *OVERRIDES]))
    outputs = worker.loop.run_until_complete(worker.compute_score_batch(rollout_batch(tokenizer_dir, CASES)))
    assert [out["reward_score"] for out in outputs] == [c[3] for c in CASES]
    for out, case in zip(outputs, CASES):
        assert tuple(out["reward_extra_info"]) == RESULT_KEYS, case
        assert out["reward_extra_info"]["acc"] == case[3] and out["reward_extra_info"]["scorer_error"] == 0.0


# A batch as a validation set mixing our rows with rows verl's preprocessing scripts write, whose data sources only
# verl's default scorer knows (its reward: math_dapo gives -1 for a wrong answer). (source, response, reference, reward)
MIXED = [
    ("openai/gsm8k", "She pays 3 * 24 = 72 dollars.\n#### 72", "72", 1.0),
    ("DigitalLearningGmbH/MATH-lighteval", "So $x = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}", 1.0),
    ("math_dapo", "The remainder is 240.\nAnswer: 240", "204", -1.0),
    ("sspo/arithmetic", "20,18", "18", 1.0),
]


@pytest.mark.parametrize("order", [1, -1], ids=["ours_first", "verls_first"])
def test_verls_reward_loop_scores_a_batch_mixing_our_sources_and_verls(tokenizer_dir, order):
    """verl takes reward_extra_info's keys from the first item: a delegated source must return the same ones."""
    cases = MIXED[::order]
    worker = RewardLoopWorker(compose([f"actor_rollout_ref.model.path={tokenizer_dir}", *OVERRIDES]))
    outputs = worker.loop.run_until_complete(worker.compute_score_batch(rollout_batch(tokenizer_dir, cases)))
    assert [out["reward_score"] for out in outputs] == [c[3] for c in cases]
    for out, case in zip(outputs, cases):
        assert tuple(out["reward_extra_info"]) == RESULT_KEYS, case
        assert out["reward_extra_info"]["acc"] == float(case[3] == 1.0)


def test_verls_reward_loop_stops_on_a_source_nobody_scores(tokenizer_dir):
    from sspo_verl.rewards import UnknownDataSource

    cases = MIXED + [("nowhere/data", "#### 1", "1", None)]
    worker = RewardLoopWorker(compose([f"actor_rollout_ref.model.path={tokenizer_dir}", *OVERRIDES]))
    with pytest.raises(UnknownDataSource, match=r"data_source='nowhere/data'.*nor has verl's default_compute_score"):
        worker.loop.run_until_complete(worker.compute_score_batch(rollout_batch(tokenizer_dir, cases)))


def test_a_plain_thread_scores_like_the_main_thread():
    results = {}

    def run():
        results.update({i: compute_score(src, resp, ref)["score"] for i, (src, resp, ref, _) in enumerate(CASES)})

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert [results[i] for i in range(len(CASES))] == [c[3] for c in CASES]


@pytest.mark.slow
def test_ray_reward_workers_and_a_mixed_batch(tokenizer_dir):
    """Under Ray: a task scores every dataset, and RewardLoopManager (the Ray reward workers main_ppo starts)
    aggregates a batch that mixes GSM8K and math rows in both orders; verl takes the first item's keys."""
    import ray
    from verl.experimental.reward_loop.reward_loop import RewardLoopManager

    assert os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0"  # tests/conftest.py: loopback only
    temp_dir = tempfile.mkdtemp(prefix="sspo-ray-")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp_dir)
    try:
        @ray.remote
        def score_in_a_task(cases):
            from sspo_verl.rewards import compute_score

            return [compute_score(src, resp, ref)["score"] for src, resp, ref, _ in cases]

        assert ray.get(score_in_a_task.remote(CASES)) == [c[3] for c in CASES]

        cfg = compose([f"actor_rollout_ref.model.path={tokenizer_dir}", "reward.num_workers=1", *OVERRIDES])
        manager = RewardLoopManager(cfg)
        for cases in (CASES, CASES[::-1]):  # GSM8K first, then a math row first
            out = manager.compute_rm_score(rollout_batch(tokenizer_dir, cases))
            assert out.meta_info["reward_extra_keys"] == list(RESULT_KEYS)
            assert out.non_tensor_batch["acc"].tolist() == [c[3] for c in cases]
            assert out.batch["rm_scores"].sum(-1).tolist() == [c[3] for c in cases]
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
