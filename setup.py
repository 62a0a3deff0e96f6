"""Packaging detail pyproject.toml cannot express: the top-level ``sql/`` and ``expectations/`` folders
ship inside the wheel as ``sav_assets/sql`` and ``sav_assets/expectations`` (package-dir mapping).

They stay at the top of the repository, where users read and edit them; an installed wheel carries a
copy inside the package. ``sav_assets.lib.store.sqlfiles.shipped_dir`` finds either.
Everything else (metadata, dependencies, package data patterns) lives in pyproject.toml.
"""

from pathlib import Path

from setuptools import find_namespace_packages, find_packages, setup

HERE = Path(__file__).resolve().parent
SHIPPED = ("sql", "expectations")  # top-level folder -> package sav_assets.<folder>

packages = find_packages(include=["sav_assets", "sav_assets.*"])
package_dir = {}
for folder in SHIPPED:
    pkg = f"sav_assets.{folder}"
    package_dir[pkg] = folder
    packages += [pkg] + [f"{pkg}.{sub}" for sub in find_namespace_packages(where=str(HERE / folder))]

setup(packages=packages, package_dir=package_dir)
