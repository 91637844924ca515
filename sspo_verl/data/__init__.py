"""Datasets to verl's parquet format: python -m sspo_verl.data.prepare --help"""
