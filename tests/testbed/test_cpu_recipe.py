"""recipes/cpu_tiny.sh's data and cold start are the testbed's (sspo_verl/testbed/cpu_recipe.py writes them out)."""

from sspo_verl.rewards.arithmetic import SOURCES
from sspo_verl.testbed import cpu_recipe
from sspo_verl.testbed.arithmetic import ArithmeticTask
from sspo_verl.testbed.jobs import ColdStart
from sspo_verl.testbed.run import parse_args


def test_task_and_cold_start_are_the_testbeds_defaults_but_for_its_longer_sft():
    """The task and the cold start are the testbed's, except the SFT length: the byte-level tokenizer needs twice
    the testbed's steps to fit the demonstrations on every seed (cpu_recipe.COLD_START says why)."""
    testbed = parse_args([])  # the default job on CPU
    assert cpu_recipe.TASK == ArithmeticTask(testbed.operands, testbed.max_operand)
    assert cpu_recipe.TESTBED_SFT_STEPS == testbed.sft_steps
    assert cpu_recipe.COLD_START == dict(steps=2 * testbed.sft_steps, batch_size=testbed.sft_batch, lr=ColdStart.lr,
                                         flawed_fraction=testbed.flawed_fraction)
    assert cpu_recipe.GROUP_SIZE == testbed.group_size  # the gate's pass@G: the rollout's group (rollout.n=8)


def test_rows_carry_the_data_source_verls_reward_loop_scores():
    rows = cpu_recipe.validation_rows({"arithmetic": 2, "gsm8k": 1, "math500": 1})
    assert [r["data_source"] for r in rows] == [SOURCES[0]] * 2 + ["openai/gsm8k", "HuggingFaceH4/MATH-500"]
    assert all(r["extra_info"]["split"] == "val" for r in rows)
