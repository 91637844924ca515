"""Commands around the plugin, each `python -m sspo_verl.tools.<name>`.

preflight     checks a launch's loss settings against verl before Ray starts (and a Ray cluster's nodes)
method_lines  a method's Hydra lines for a recipe, temperatures from its knobs (recipes/lib/methods.sh)
dry_run       composes verl's trainer config with a recipe's overrides and resolves the loss, no model loaded
calibrate     temperatures at which a gate passes half its gradient at a PPO clip range's edges
compare       reads verl runs' logs into one table and figures (report.py draws them)
demo          each loss mode's per-token gradient weight on real verl objects
"""
