"""A Ray worker sees the custom loss mode `sspo_algebraic` only through external_lib, as verl's workers get it.

    python examples/custom_gate/run_in_ray.py     (starts and stops a local, loopback-only Ray; ~15 s)
"""

import os
import sys

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read at `import ray`: bind 127.0.0.1 only
HERE = os.path.dirname(os.path.abspath(__file__))
# external_lib is a module name: its folder must be on PYTHONPATH in every worker (on a cluster: on every node,
# or in the job's runtime_env). The local Ray started below inherits this environment.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")]))
os.environ["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ left beside my_gates.py

import ray  # noqa: E402

MODE = "sspo_algebraic"


# max_calls=1: each call runs in a fresh worker process, like each verl worker, so nothing registered by one
# call leaks into the next one.
@ray.remote(max_calls=1)
def worker(external_lib):
    import torch
    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    from verl.utils.import_utils import import_external_libs
    from verl.workers.config import FSDPActorConfig, PolicyLossConfig

    # What verl's worker does with actor_rollout_ref.model.external_lib: HFModelConfig imports it, before the
    # actor config is built and the loss function is looked up. `import verl` already loaded the built-in sspo modes.
    import_external_libs(external_lib)
    try:
        loss_fn = get_policy_loss_fn(MODE)
    except ValueError as exc:  # "Unsupported loss mode: sspo_algebraic. Supported modes are: [...]"
        return {"pid": os.getpid(), "error": str(exc).split(".")[0]}
    config = FSDPActorConfig(strategy="fsdp2", rollout_n=1, ppo_mini_batch_size=2, ppo_micro_batch_size_per_gpu=2,
                             use_torch_compile=False, policy_loss=PolicyLossConfig(loss_mode=MODE),
                             loss_agg_mode="seq-mean-token-mean", tau_pos=1.0, tau_neg=1.05)
    log_prob = torch.tensor([[-1.0, -2.0, -0.5], [-0.7, -1.2, 0.0]], requires_grad=True)  # (B, T) = (2, 3)
    old_log_prob = torch.tensor([[-1.5, -1.0, -0.5], [-0.2, -1.2, 0.0]])  # (B, T)
    advantages = torch.tensor([[2.0], [-1.0]]).expand(2, 3)  # (B, T) one advantage per response
    mask = torch.tensor([[True, True, True], [True, True, False]])  # (B, T)
    loss, metrics = loss_fn(old_log_prob=old_log_prob, log_prob=log_prob, advantages=advantages,
                            response_mask=mask, loss_agg_mode="seq-mean-token-mean", config=config,
                            rollout_is_weights=None)
    loss.backward()
    return {"pid": os.getpid(), "loss": loss.item(), "seq_s_mean": metrics["actor/sspo/seq_s_mean"],
            "grad_norm": log_prob.grad.norm().item()}


ray.init(address="local", num_cpus=1, include_dashboard=False)  # "local": a new Ray, never a running cluster's
try:
    with_lib = ray.get(worker.remote(external_lib="my_gates"))  # actor_rollout_ref.model.external_lib=my_gates
    without = ray.get(worker.remote(external_lib=None))  # the launch forgot external_lib
finally:
    ray.shutdown()

print(f"driver pid {os.getpid()}")
print(f"with external_lib=my_gates (worker pid {with_lib['pid']}): {MODE} loss {with_lib['loss']:.6f}, "
      f"seq_s_mean {with_lib['seq_s_mean']:.6f}, grad norm {with_lib['grad_norm']:.6f}")
print(f"without external_lib (worker pid {without['pid']}): {without.get('error', 'NOT REFUSED')}")
sys.exit(0 if "loss" in with_lib and "error" in without else 1)
