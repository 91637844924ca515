"""A CPU platform for verl 0.9.1, which ships none (test and testbed support; never installed by the plugin).

`use_cpu_platform()` registers platform "cpu" (device cpu, backend gloo, Ray resource CPU) and selects it with
VERL_PLATFORM=cpu; VERL_ENGINE_DEVICE=cuda picks the FSDP engine (verl's engine registry keys engines by
device; the FSDP2 engine itself runs on CPU).

Standalone on purpose: it imports torch and verl only, never the sspo_verl package, so Ray workers can load it
as a top-level module (PYTHONPATH=<this folder>, VERL_USE_EXTERNAL_MODULES=cpu_platform) while the loss modes
still reach them only through the plugin's entry point. Imported with VERL_PLATFORM=cpu set, it registers
itself; otherwise call `use_cpu_platform()`.

Ray resources, as main_ppo's resource pool asks for them (recipes/cpu_tiny.sh): verl builds a placement group of
one bundle per rank, {ray_resource_name(): 1} = {"CPU": 1}, and starts each worker with
ray_resource_options(1 / max_colocate_count) = {"num_cpus": ...}, so every trainer rank lives on CPU bundles and
no process claims a GPU. One wall remains that no platform hook reaches: before placing anything,
ResourcePoolManager._check_resource_available (verl/single_controller/ray/base.py, lines 226-241 in 0.9.1)
counts only the "GPU" (or "NPU") resource of the Ray nodes. The CPU recipe therefore starts Ray with as many
logical GPUs as ranks (+ray_kwargs.ray_init.num_gpus=N): Ray's resources are logical, nothing ever holds them.
"""

from __future__ import annotations

import contextlib
import os
import types

import torch


def use_cpu_platform() -> None:
    """Register and select a CPU platform for verl in this process (idempotent)."""
    from verl.plugin.platform import PlatformBase, PlatformRegistry

    os.environ["VERL_PLATFORM"] = "cpu"
    os.environ["VERL_ENGINE_DEVICE"] = "cuda"  # selects the FSDP engine implementation, which runs fine on CPU
    if "cpu" in PlatformRegistry._platforms:
        return
    noop = lambda *a, **k: None  # noqa: E731
    device_module = types.SimpleNamespace(
        is_available=lambda: True, current_device=lambda: 0, device_count=lambda: 1, set_device=noop,
        synchronize=noop, manual_seed=torch.manual_seed, manual_seed_all=torch.manual_seed, empty_cache=noop,
        max_memory_allocated=lambda *a, **k: 0, max_memory_reserved=lambda *a, **k: 0,
        memory_allocated=lambda *a, **k: 0, memory_reserved=lambda *a, **k: 0, mem_get_info=lambda *a, **k: (0, 0),
        reset_peak_memory_stats=noop, is_initialized=lambda: True, get_device_name=lambda *a, **k: "CPU",
        get_rng_state=torch.get_rng_state, set_rng_state=torch.set_rng_state,
    )

    @PlatformRegistry.register(platform="cpu")
    class PlatformCPU(PlatformBase):
        device_name = property(lambda self: "cpu")
        vendor_name = property(lambda self: "cpu")
        device_module = property(lambda self: device_module)

        def is_available(self): return True
        def current_device(self): return torch.device("cpu")
        def device_count(self): return 1
        def set_device(self, index): pass
        def synchronize(self, index=None): pass
        def manual_seed(self, seed): torch.manual_seed(seed)
        def manual_seed_all(self, seed): torch.manual_seed(seed)
        def set_allocator_settings(self, settings): pass
        def empty_cache(self): pass
        def get_device_capability(self, index=0): return (None, None)
        def communication_backend_name(self): return "gloo"
        def visible_devices_envvar(self): return "CPU_VISIBLE_DEVICES"
        def profiler_start(self): pass
        def profiler_stop(self): pass
        def ray_resource_name(self): return "CPU"
        def ray_resource_options(self, n): return {"num_cpus": n}
        def ray_noset_envvars(self): return []
        def is_ipc_supported(self): return False
        def cudart(self): return None

        @contextlib.contextmanager
        def nvtx_range(self, msg):
            yield

    # Under Ray verl builds the backend "cpu:gloo,<device>:<backend>" = "cpu:gloo,cpu:gloo", which torch rejects.
    import verl.utils.distributed as verl_distributed

    verl_distributed.initialize_global_process_group_ray.__defaults__ = (None, "gloo")


if os.environ.get("VERL_PLATFORM") == "cpu":
    use_cpu_platform()
