"""A stand-in for Hugging Face datasets, on the GPU machine only (see ../ray/__init__.py): verl's dataset modules
import it at import time; the testbed builds its data itself and never loads a dataset."""

from tools_gpu_stub import absent_module  # noqa: F401

__getattr__ = absent_module("datasets")
