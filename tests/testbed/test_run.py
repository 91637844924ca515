"""`python -m sspo_verl.testbed` end to end on a very short configuration: the run folder, determinism, learning."""

import json

import pytest
import torch

from sspo_verl.testbed import policy as pol
from sspo_verl.testbed.arithmetic import ArithmeticTask, build_tokenizer
from sspo_verl.testbed.run import main, method_knob, parse_args

pytestmark = pytest.mark.slow
SHORT = ["--methods", "grpo_dapo,sspo", "--seeds", "1", "--steps", "2", "--sft-steps", "150", "--prompts", "8",
         "--group-size", "4", "--mini-batches", "4", "--heldout", "32", "--eval-every", "1", "--no-quality-gate"]


def _records(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same job in this process (1 worker) and in 2 spawned worker processes."""
    folders = [tmp_path_factory.mktemp(f"run{k}") for k in range(2)]
    for folder, workers in zip(folders, ("1", "2")):
        assert main(SHORT + ["--workers", workers, "--out", str(folder)]) == 0
    return folders


def test_run_folder(two_runs):
    folder = two_runs[0]
    records = _records(folder)
    # per method: 2 RL steps and the final evaluation; the on-policy control (grpo at M = 1) first
    assert [(r["method"], r["step"], r["mini_batches"]) for r in records] == [
        ("grpo", 0, 1), ("grpo", 1, 1), ("grpo", 2, 1), ("grpo_dapo", 0, 4), ("grpo_dapo", 1, 4), ("grpo_dapo", 2, 4),
        ("sspo", 0, 4), ("sspo", 1, 4), ("sspo", 2, 4)]
    step = records[7]
    for key in ("reward", "val_acc", "test_acc", "entropy", "ppo_kl", "token_iw_var", "seq_iw_var", "grad_norm",
                "sspo/token_w_mean", "sspo/seq_s_mean", "abs_log_ratio_mb", "w_below_half_mb", "lr", "tau_pos"):
        assert key in step, key
    assert "sspo/token_w_mean" not in records[4]  # the gate metrics are SSPO's
    assert all("val_acc" in r and "test_acc" in r for r in records)  # step 0 and the final step included
    config = json.loads((folder / "config.json").read_text())
    assert config["rl"]["mini_batches"] == 4 and config["methods"] == ["grpo_dapo", "sspo"]
    assert [c["seed"] for c in config["cold_start"]] == [0] and 0 <= config["cold_start"][0]["val_pass1"] <= 1
    summary = (folder / "summary.md").read_text()
    assert "| grpo_dapo | 1 |" in summary and "| sspo | 1 |" in summary and "| grpo | 1 |" in summary
    assert "## Drift per mini-batch index" in summary and "| grpo_dapo [clip 0.1/0.14] | 4 | pg_clipfrac |" in summary
    for name in ("reward_accuracy.png", "importance_weights.png", "entropy.png"):
        assert (folder / name).read_bytes()[:4] == b"\x89PNG"


def test_deterministic_given_a_seed_whatever_the_workers(two_runs):
    strip = lambda rs: [{k: v for k, v in r.items() if not k.startswith("time_")} for r in rs]  # noqa: E731
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
    assert len(rl_reward) == 3
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
    with pytest.raises(SystemExit):
        parse_args(["--tau-from-clip", "0.2", "0.28", "--tau-pos", "2"])
    assert "--tau-from-clip 0.2 0.28 conflicts with --tau-pos 2.0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--methods", "grpo,sspo"])
    assert "--methods includes grpo, the on-policy control" in capsys.readouterr().err


def test_temperatures_precedence():
    """Explicit temperatures, else --tau-from-clip (each method's own gate), else the sweep's choice, else default."""
    from sspo_verl.tools.calibrate import taus_from_clip
    from sspo_verl.testbed.run import CHOSEN

    args = parse_args(["--methods", "grpo_dapo,sspo_erf,sapo", "--tau-from-clip", "0.2", "0.28"])
    assert dict(method_knob("sspo_erf", args)[0]) == dict(zip(("tau_pos", "tau_neg"), taus_from_clip("erf", 0.2, 0.28)))
    assert dict(method_knob("sapo", args)[0]) == dict(zip(("tau_pos", "tau_neg"), taus_from_clip("sapo", 0.2, 0.28)))
    assert method_knob("grpo_dapo", args) == (tuple(CHOSEN["grpo_dapo"][1].items()), CHOSEN["grpo_dapo"][0]) \
        if "grpo_dapo" in CHOSEN else ((), "")
    explicit = parse_args(["--tau-pos", "2", "--knobs", "default"])
    assert method_knob("sspo", explicit) == ((("tau_pos", 2.0),), "tau 2")
    assert method_knob("grpo_dapo", explicit) == ((), "")
