"""A stand-in for Ray, on the GPU machine only (tools/gpu_testbed/run.sh puts it on PYTHONPATH).

verl imports ray when it is imported (verl/protocol.py, decorators such as @ray.remote); the testbed's single
process never starts or calls Ray. Attribute access returns placeholders, decorators return what they decorate,
and any real call raises, so a code path that needs Ray fails loudly instead of doing nothing."""

from tools_gpu_stub import absent_module  # noqa: F401  (a sibling module on the same PYTHONPATH entry)

__getattr__ = absent_module("ray")
