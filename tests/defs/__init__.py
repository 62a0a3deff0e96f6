"""Dagster-layer tests: a package, so that its conftest (the tiny lake) and test module names stay apart
from tests/conftest.py and tests/lib/ (pytest imports rootless test modules by file name)."""
