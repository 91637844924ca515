"""verl's real engine, trainer and Ray workers on a CPU, for tests, the testbed, benchmarks and recipes/cpu_tiny.sh.

cpu_platform.py  a verl platform "cpu" (gloo, Ray CPU bundles): verl 0.9.1 ships none
harness.py       verl's FSDP2 engine and actor config on CPU, rollout batches, a tiny Qwen2 from a config
ray_update.py    one actor update through verl's Ray TrainingWorker group (local or a multi-node cluster)
cpu_rollout.py   the `hf` rollout server (transformers) that main_ppo uses instead of vLLM
fast_poll.py     verl's replay buffer polling every 0.2 s instead of 2 s (a custom sampler; recipes/cpu_tiny.sh)
progress.py      one console line per step, read from verl's file logger while main_ppo runs (recipes/cpu_tiny.sh)

cpu_platform.py and cpu_rollout.py also load as top-level modules in Ray workers (this folder on PYTHONPATH,
VERL_USE_EXTERNAL_MODULES): keep them free of relative imports, and keep every module's name distinct from
the standard library's. Nothing here is part of the plugin: the loss modes never import it.
"""
