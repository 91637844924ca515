"""verl's synchronous replay buffer, polling for finished rollouts every 0.2 s instead of every 2 s.

verl 0.9.1's trainer asks its replay buffer (`verl/trainer/ppo/v1/replay_buffer.py`, `ReplayBuffer.sample`) for a
batch right after it hands the prompts to the agent loop; while the groups are not all finished, the buffer sleeps
`poll_interval`, fixed at 2.0 s (no config key reaches it). On a GPU a rollout takes far longer than 2 s. On the
CPU recipe the 128 samples are done in 1.4-1.8 s on a quiet 2-core machine (the server generates them in a fraction
of that; the agent loop's per-sample work takes the rest), so every step waited until the 2 s poll, and until the
4 s one whenever the machine was busy enough to pass 2 s.

verl's extension point for the sampler is the custom-sampler setting, which builds this class with the same
arguments as its own:

    trainer.v1.sampler.custom_sampler.path=pkg://sspo_verl.verl_on_cpu.fast_poll
    trainer.v1.sampler.custom_sampler.name=FastPollReplayBuffer
    +trainer.v1.sampler.sampler_kwargs.poll_interval=0.2          # seconds (default POLL_INTERVAL_S)

Why not poll more often: each poll asks the transfer queue's controller for the metadata of every key
(`tq.kv_list()`), which competes with the agent loop's own writes to that controller. At 0.05 s the generation phase
took 2.8-3.3 s on the shared 2-core machine where verl's 2 s poll found it finished by 2.0 s on half the steps
(docs/CPU.md, "Measured").

Everything else is verl's ReplayBuffer. verl builds a custom sampler without the arguments of DAPO's group
filtering (algorithm.filter_groups) and of refilling failed groups (trainer.v1.sampler.sync_refill_failed_groups),
so this class refuses a config that turns either on rather than silently not doing it; it is the synchronous
buffer, so it refuses the asynchronous trainer modes too.
"""

from __future__ import annotations

from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

from ..errors import SSPOError

POLL_INTERVAL_S = 0.2  # the module's docstring says why not less


class FastPollReplayBuffer(ReplayBuffer):
    """ReplayBuffer with `poll_interval` from `trainer.v1.sampler.sampler_kwargs.poll_interval` (seconds)."""

    def __init__(self, *, trainer_mode, sampler_kwargs, refill_fn=None, **kwargs):
        if trainer_mode != "sync":
            raise SSPOError(f"trainer.v1.trainer_mode={trainer_mode}: FastPollReplayBuffer is verl's synchronous "
                            f"replay buffer; add trainer.v1.sampler.custom_sampler.path=null for the {trainer_mode} one")
        poll = sampler_kwargs.get("poll_interval", POLL_INTERVAL_S) if sampler_kwargs else POLL_INTERVAL_S
        if isinstance(poll, bool) or not isinstance(poll, (int, float)) or not 0 < poll <= 60:
            raise SSPOError(f"trainer.v1.sampler.sampler_kwargs.poll_interval={poll!r}: give seconds in (0, 60], "
                             f"e.g. {POLL_INTERVAL_S}")
        _refuse_what_verl_does_not_pass(getattr(refill_fn, "__self__", None))
        super().__init__(trainer_mode=trainer_mode, sampler_kwargs=sampler_kwargs, refill_fn=refill_fn, poll_interval=float(poll), **kwargs)


def _refuse_what_verl_does_not_pass(trainer) -> None:
    """verl passes a custom sampler neither the group-filtering metric nor sync_refill_failed_groups: a config that
    asks for them would run without them. The trainer (the owner of refill_fn) holds the config."""
    config = getattr(trainer, "config", None)
    if config is None:
        return
    filter_groups = config.algorithm.get("filter_groups", None)
    asked = []
    if filter_groups is not None and filter_groups.get("enable", False):
        asked.append("algorithm.filter_groups.enable=True")
    if config.trainer.v1.sampler.get("sync_refill_failed_groups", False):
        asked.append("trainer.v1.sampler.sync_refill_failed_groups=True")
    if asked:
        raise SSPOError(f"{' and '.join(asked)} need verl's own replay buffer, which polls every 2 s: add "
                         f"trainer.v1.sampler.custom_sampler.path=null (verl builds a custom sampler without them)")
