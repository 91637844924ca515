"""One SSPO actor update through verl's Ray `TrainingWorker` group on CPU, as a cluster runs it.

The workers get the CPU platform from `cpu_platform.py` (a top-level module on their PYTHONPATH) and the
loss modes only through sspo_verl's `verl.plugins` entry point: nothing here imports the plugin inside them.
Prints one JSON line: loss, grad_norm, the SSPO metrics, and the node of every rank.

    python -m sspo_verl.verl_on_cpu.ray_update --ranks 2                     # local Ray on loopback
    python -m sspo_verl.verl_on_cpu.ray_update --address 10.77.0.1:6379 --ranks-per-node 1,1

As the payload of a multi-node recipe (PAYLOAD=..., in place of main_ppo) it receives the recipe's Hydra
overrides and trains with their loss settings (loss_mode, tau_pos, tau_neg, loss_agg_mode).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from functools import partial
from pathlib import Path

MODULES_DIR = Path(__file__).resolve().parent


def loss_settings(loss_mode: str, overrides: list[str]) -> dict:
    """The actor's loss keys: from a recipe's Hydra overrides when given (the multi-node payload), else
    `loss_mode` with tau 1.0 / 1.05 (and the harness's seq-mean-token-mean)."""
    if not overrides:
        from sspo_verl.loss.methods import TAU_NEG, TAU_POS

        return {"loss_mode": loss_mode, "tau_pos": TAU_POS, "tau_neg": TAU_NEG}
    from sspo_verl.tools.preflight import settings_from_overrides

    s = settings_from_overrides(overrides)
    return {"loss_mode": s.loss_mode, "tau_pos": s.knobs["tau_pos"], "tau_neg": s.knobs["tau_neg"],
            "loss_agg_mode": s.loss_agg_mode}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default=None, help="a running Ray cluster (default: start one on loopback)")
    parser.add_argument("--ranks", type=int, default=1, help="training ranks on one node (local Ray)")
    parser.add_argument("--ranks-per-node", default=None, help="e.g. 1,1: ranks on each node of the cluster")
    parser.add_argument("--loss-mode", default="sspo")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="a recipe's Hydra overrides: their loss settings replace "
                        "--loss-mode and the default tau 1.0 / 1.05 and seq-mean-token-mean")
    args = parser.parse_args(argv)
    if args.address is None and os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") != "0":
        # a local Ray must bind loopback only, which Ray decides at `import ray`; importing sspo_verl (the package
        # of this module) has imported it already, so start again with the variable set
        os.execvpe(sys.executable, [sys.executable, "-m", "sspo_verl.verl_on_cpu.ray_update",
                                    *(sys.argv[1:] if argv is None else argv)],
                   {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})

    import ray

    from sspo_verl.verl_on_cpu import harness as h

    h.use_cpu_platform()
    loss = loss_settings(args.loss_mode, args.overrides)
    from verl.single_controller.ray import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup
    from verl.trainer.config import CheckpointConfig
    from verl.utils import tensordict_utils as tu
    from verl.workers.config import FSDPEngineConfig, FSDPOptimizerConfig, HFModelConfig
    from verl.workers.config.engine import TrainingWorkerConfig
    from verl.workers.engine_workers import TrainingWorker
    from verl.workers.utils.losses import ppo_loss

    ranks_per_node = [int(n) for n in args.ranks_per_node.split(",")] if args.ranks_per_node else [args.ranks]
    work = Path(tempfile.mkdtemp(prefix="sspo-ray-update-"))
    worker_env = {
        "PYTHONPATH": os.pathsep.join([str(MODULES_DIR), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "VERL_USE_EXTERNAL_MODULES": "cpu_platform",
        "VERL_PLATFORM": "cpu",
        "VERL_ENGINE_DEVICE": "cuda",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1"),
    }
    if args.address is None:
        ray.init(num_cpus=sum(ranks_per_node), include_dashboard=False, log_to_driver=False,
                 _temp_dir=str(work / "ray"), runtime_env={"env_vars": worker_env})
    else:
        ray.init(address=args.address, log_to_driver=False, runtime_env={"env_vars": worker_env})
    try:
        model = h.make_tiny_model(work / "model", seed=args.seed)
        engine_config = FSDPEngineConfig(
            strategy="fsdp2", model_dtype="fp32", use_torch_compile=False, use_dynamic_bsz=False,
            mixed_precision={"param_dtype": "fp32", "reduce_dtype": "fp32", "buffer_dtype": "fp32"},
            micro_batch_size_per_gpu=2, max_token_len_per_gpu=1 << 14,
        )
        cfg = TrainingWorkerConfig(
            model_type="language_model",
            model_config=HFModelConfig(path=str(model), use_remove_padding=False, enable_gradient_checkpointing=False,
                                       override_config={"attn_implementation": "sdpa"}),
            engine_config=engine_config, optimizer_config=FSDPOptimizerConfig(lr=1e-3, clip_grad=1.0),
            checkpoint_config=CheckpointConfig(),
        )
        pool = RayResourcePool(process_on_nodes=ranks_per_node, use_gpu=False, max_colocate_count=1)
        group = RayWorkerGroup(resource_pool=pool, ray_cls_with_init=RayClassWithInitArgs(cls=ray.remote(TrainingWorker), config=cfg))
        group.reset()
        actor_cfg = h.actor_config(mini_batch_size=args.batch, micro_batch_size=2, **loss)
        group.set_loss_fn(partial(ppo_loss, config=actor_cfg))
        td = h.rollout_batch(args.batch, 8, 24, h.TINY_QWEN2["vocab_size"], seed=args.seed, micro_batch_size=2)
        # old log-probs off the initial policy, so the second epoch runs off-policy and the gate has work to do
        tu.assign_non_tensor(td, mini_batch_size=args.batch, epochs=2, seed=args.seed, dataloader_kwargs={"shuffle": False})
        out = group.train_mini_batch(td)  # a DataProtoFuture over the ranks' outputs
        out = out.get() if hasattr(out, "get") and not hasattr(out, "batch_size") else out
        out = out[0] if isinstance(out, list) else out
        metrics = {k: ([float(x) for x in v] if isinstance(v, list) else float(v)) for k, v in tu.get(out, "metrics").items()}
        nodes = ray.get([w.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()) for w in group.workers])
        print(json.dumps({"loss_mode": loss["loss_mode"], "world_size": group.world_size, "rank_nodes": nodes,
                          "metrics": metrics}))
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
