from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="sspo-verl",
    version="0.1.0",
    description="Soft Sequence Policy Optimization (SSPO) policy losses for verl",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["sspo_verl", "sspo_verl.*"]),
    python_requires=">=3.10",
    # torch is not pinned here: install the build you want first (CPU wheel, or your cluster's CUDA build).
    install_requires=["verl>=0.9.1,<0.10", "torch>=2.4", "packaging"],
    extras_require={
        "math": ["math-verify==0.9.0"],  # DeepMath / MATH500 / AIME rewards
        "compare": ["matplotlib>=3.7"],  # python -m sspo_verl.compare (its plots)
        "testbed": ["matplotlib>=3.7", "verl[verl-core]>=0.9.1,<0.10"],  # python -m sspo_verl.testbed / .compare
        "test": ["pytest>=7", "verl[verl-core]>=0.9.1,<0.10", "math-verify==0.9.0", "matplotlib>=3.7", "tensorboard"],
        "gpu": ["vllm", "flash-attn"],
    },
    # `import verl` loads this entry point in every process (driver and Ray workers): importing sspo_verl.plugin
    # registers the loss modes. It names the module, not the package, so that `import sspo_verl` stays light.
    entry_points={"verl.plugins": ["sspo = sspo_verl.plugin"]},
)
