"""The verl plugin: SSPO's gates, its loss (reference and fused) and their registration in verl.

gates.py      the gate family g (eq. 14-18), its checks and the custom-gate registry; SAPO_GATE for sspo_sapo
objective.py  the reference loss, eq. 10 / eq. 13, on verl's (B, T) tensors
fused.py      the same loss as one custom autograd function (what the registered modes run)
plugin.py     registration in verl's POLICY_LOSS_REGISTRY and the actor-config checks
knobs.py      the baselines' settings checked on the driver (one table), the config error type, recipe knobs
methods.py    the compared methods' loss settings (GRPO, DAPO, GSPO, GMPO, SAPO, SSPO, sspo_sapo)

Importing this package is light; `plugin` imports torch and verl.
"""
