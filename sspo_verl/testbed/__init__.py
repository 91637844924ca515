"""The CPU testbed and its harness for verl's real engine (see cpu_harness.py)."""
