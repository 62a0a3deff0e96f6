"""Scale tests: a real multi-node Ray cluster on loopback (a package so its conftest does not shadow tests/conftest.py)."""
