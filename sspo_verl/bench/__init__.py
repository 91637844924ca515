"""Benchmarks (not tests): python -m sspo_verl.bench.losses"""
