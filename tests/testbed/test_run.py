"""`python -m sspo_verl.testbed` end to end on a very short configuration: the run folder, determinism, learning."""

import json

import pytest
import torch

from sspo_verl.testbed import policy as pol
from sspo_verl.testbed.arithmetic import ArithmeticTask, build_tokenizer
from sspo_verl.testbed.run import main, parse_args

pytestmark = pytest.mark.slow
SHORT = ["--methods", "grpo_dapo,sspo", "--seeds", "1", "--steps", "2", "--operands", "2", "--max-operand", "9",
         "--sft-steps", "80", "--prompts", "8", "--group-size", "4", "--mini-batches", "4", "--heldout", "32"]


def _records(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    folders = [tmp_path_factory.mktemp(f"run{k}") for k in range(2)]
    for folder in folders:
        assert main(SHORT + ["--out", str(folder)]) == 0
    return folders


def test_run_folder(two_runs):
    folder = two_runs[0]
    records = _records(folder)
    # per method: 2 RL steps and the final evaluation
    assert [(r["method"], r["step"]) for r in records] == [("grpo_dapo", 0), ("grpo_dapo", 1), ("grpo_dapo", 2),
                                                           ("sspo", 0), ("sspo", 1), ("sspo", 2)]
    step = records[3]
    for key in ("reward", "val_acc", "entropy", "ppo_kl", "token_iw_var", "seq_iw_var", "grad_norm",
                "sspo/token_w_mean", "sspo/seq_s_mean"):
        assert key in step, key
    assert "sspo/token_w_mean" not in records[0]  # the gate metrics are SSPO's
    config = json.loads((folder / "config.json").read_text())
    assert config["rl"]["mini_batches"] == 4 and config["methods"] == ["grpo_dapo", "sspo"]
    summary = (folder / "summary.md").read_text()
    assert "| grpo_dapo | 1 |" in summary and "| sspo | 1 |" in summary
    for name in ("reward_accuracy.png", "importance_weights.png", "entropy.png"):
        assert (folder / name).read_bytes()[:4] == b"\x89PNG"


def test_deterministic_given_a_seed(two_runs):
    strip = lambda rs: [{k: v for k, v in r.items() if k != "time_s"} for r in rs]  # noqa: E731
    assert strip(_records(two_runs[0])) == strip(_records(two_runs[1]))


def test_learning_happens(two_runs, tmp_path):
    """Reward after the cold start and RL steps is above what a random policy of the same shape earns."""
    args = parse_args(SHORT)
    task = ArithmeticTask(args.operands, args.max_operand)
    tok = build_tokenizer()
    random_policy = pol.load_policy(pol.make_policy(tmp_path, tok, args.model_size, seed=0))
    problems = [p for p in task.problems(args.prompts, seed=100) for _ in range(args.group_size)]
    ids, mask = pol.encode_prompts(tok, problems, task.max_prompt_chars)
    resp, resp_mask = pol.sample(random_policy, ids, mask, task.response_len, tok.eos_token_id,
                                 tok.pad_token_id, generator=torch.Generator().manual_seed(0))
    random_reward = pol.rewards_of(tok, problems, resp, resp_mask).mean().item()
    rl_reward = [r["reward"] for r in _records(two_runs[0]) if r["step"] == 1]
    assert min(rl_reward) > random_reward + 0.1


def test_bad_arguments_fail_at_parse_time(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--methods", "grpo,ppo"])
    assert "unknown method(s) ppo" in capsys.readouterr().err
    from sspo_verl.testbed.grpo import RLConfig

    with pytest.raises(ValueError, match="mini_batches=3 must divide prompts=8"):
        RLConfig(prompts=8, group_size=4, mini_batches=3)
    with pytest.raises(ValueError, match="mini_batches=16 must divide prompts=8 .*whole groups"):
        RLConfig(prompts=8, group_size=4, mini_batches=16)  # 32 samples split in 16 would cut groups in half
