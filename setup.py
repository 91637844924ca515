import ast
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def package_constant(name: str) -> str:
    """A string constant of sspo_verl/__init__.py, its one source (read, not imported: setup.py runs before the
    package's dependencies are installed)."""
    for node in ast.parse((HERE / "sspo_verl" / "__init__.py").read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [name]:
            return ast.literal_eval(node.value)
    raise RuntimeError(f"sspo_verl/__init__.py defines no {name}")


VERL_RANGE = package_constant("VERL_RANGE")
setup(
    name="sspo-verl",
    version=package_constant("__version__"),
    description="Soft Sequence Policy Optimization (SSPO) policy losses for verl",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["sspo_verl", "sspo_verl.*"]),
    python_requires=">=3.10",
    # torch is not pinned here: install the build you want first (CPU wheel, or your cluster's CUDA build).
    # verl[verl-core]: what verl's main_ppo imports besides verl itself (TransferQueue, zmq, msgspec, fastapi,
    # uvicorn, cachetools, ...); with bare `verl` the plugin loads but no recipe can launch.
    install_requires=["verl[verl-core]" + VERL_RANGE, "torch>=2.4", "packaging"],
    extras_require={
        "math": ["math-verify==0.9.0"],  # DeepMath / MATH500 / AIME rewards
        "compare": ["matplotlib>=3.7"],  # python -m sspo_verl.tools.compare (its plots)
        "testbed": ["matplotlib>=3.7"],  # python -m sspo_verl.testbed (its plots)
        "test": ["pytest>=7", "pytest-xdist>=3.5,<4", "sybil>=9,<11", "math-verify==0.9.0", "matplotlib>=3.7", "tensorboard"],
        "gpu": ["vllm", "flash-attn"],
    },
    # `import verl` loads this entry point in every process (driver and Ray workers): importing sspo_verl.loss.plugin
    # registers the loss modes. It names the module, not the package, so that `import sspo_verl` stays light.
    entry_points={"verl.plugins": ["sspo = sspo_verl.loss.plugin"]},
)
