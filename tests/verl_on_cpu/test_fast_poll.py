"""The CPU recipe's replay buffer (sspo_verl/verl_on_cpu/fast_poll.py), built the way verl builds a custom sampler:
verl's own `PPOTrainer._build_replay_buffer` on verl's composed config with the recipe's overrides."""

from __future__ import annotations

import time

import pytest

from sspo_verl.errors import SSPOError
from sspo_verl.tools.dry_run import compose

SAMPLER = ["trainer.v1.sampler.custom_sampler.path=pkg://sspo_verl.verl_on_cpu.fast_poll",
           "trainer.v1.sampler.custom_sampler.name=FastPollReplayBuffer"]


def trainer(overrides: list[str]):
    """What `_build_replay_buffer` reads of verl's PPOTrainer: its config, its mode, its refill method and its
    filter-metric check (verl's own), without the workers the real trainer starts."""
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    class Trainer:
        _resolve_filter_groups_metric = PPOTrainer._resolve_filter_groups_metric

        def __init__(self):
            self.config = compose(overrides)
            self.trainer_mode = self.config.trainer.v1.trainer_mode

        def _add_prompts_to_generate(self, count):
            raise AssertionError("not called here")

    return Trainer()


def build(*overrides: str):
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    return PPOTrainer._build_replay_buffer(trainer([*SAMPLER, *overrides]))


def test_verl_builds_it_from_the_recipes_overrides_and_it_polls_quickly():
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    from sspo_verl.verl_on_cpu.fast_poll import POLL_INTERVAL_S, FastPollReplayBuffer

    buffer = build()
    assert type(buffer) is FastPollReplayBuffer and isinstance(buffer, ReplayBuffer)
    assert buffer.poll_interval == POLL_INTERVAL_S <= 0.25  # verl's own waits 2.0 s
    assert build("+trainer.v1.sampler.sampler_kwargs.poll_interval=0.5").poll_interval == 0.5
    # verl's wait between two polls is this interval (the 2 s of every CPU step before)
    t0 = time.perf_counter()
    buffer._wait_for_next_poll("train", time.time())
    assert time.perf_counter() - t0 < 0.5


def test_without_the_override_verl_polls_every_two_seconds():
    """The premise: verl's default buffer waits 2 s between polls, and no config key changes it."""
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    assert PPOTrainer._build_replay_buffer(trainer([])).poll_interval == 2.0


@pytest.mark.parametrize("override, named", [
    ("+trainer.v1.sampler.sampler_kwargs.poll_interval=0", "poll_interval=0"),
    ("+trainer.v1.sampler.sampler_kwargs.poll_interval=fast", "poll_interval='fast'"),
    ("algorithm.filter_groups.enable=True", "algorithm.filter_groups.enable=True"),
    ("trainer.v1.sampler.sync_refill_failed_groups=True", "sync_refill_failed_groups=True"),
])
def test_a_setting_it_cannot_honour_is_refused_by_name(override, named):
    extra = ["algorithm.filter_groups.metric=acc"] if "filter_groups" in override else []
    with pytest.raises(SSPOError, match=named.replace("[", r"\[")) as err:
        build(override, *extra)
    assert "custom_sampler.path=null" in str(err.value) or "poll_interval" in named


def test_an_asynchronous_trainer_mode_is_refused():
    with pytest.raises(SSPOError, match="trainer_mode=colocate_async.*custom_sampler.path=null"):
        build("trainer.v1.trainer_mode=colocate_async")
