"""The off-policy testbed: a small real RL experiment on a CPU (`python -m sspo_verl.testbed`).

arithmetic.py  the task, its verifier and splits      policy.py    a tiny Qwen2, its cold start and sampler
grpo.py        one RL step as verl's trainer does it   jobs.py      runs in parallel worker processes
run.py         the CLI and presets                     sweep.py     the fair sweep across off-policy degrees
analysis.py    drift and effect measures               cpu_recipe.py  the task and cold start for recipes/cpu_tiny.sh
"""
