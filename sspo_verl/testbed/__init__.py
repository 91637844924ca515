"""The off-policy testbed: a small real RL experiment on a CPU (`python -m sspo_verl.testbed`).

arithmetic.py  the task, its verifier and splits      policy.py    a tiny Qwen2, its cold start and sampler
grpo.py        one RL step as verl's trainer does it   jobs.py      cold starts and runs in worker processes
run.py         the main job's CLI                      sweep.py     the fair sweep across off-policy degrees
options.py     the flags both CLIs share, presets      store.py     the run folder, resumable after a kill
quality.py     the cold start's quality gate           analysis.py  drift, early-curve and stability measures
committed.py   a run against the committed one         lengths.py   the gap to grpo_dapo against response length
cpu_recipe.py  the task and cold start for recipes/cpu_tiny.sh
"""
