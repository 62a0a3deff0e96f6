"""One source for every tunable: run-config fields whose defaults are read from the lib they feed.

A ``dg.Config`` field is declared as ``points_per_side: int = lib_field(LabelerConfig, "points_per_side",
"...")``: the default shown in the Launchpad is the lib dataclass's (or a lib function's keyword
default), written once, and ``to_lib`` builds the lib object back from the config. Tuples in the lib
are lists in run config (YAML has no tuples) and become tuples again in ``to_lib``.
``tests/defs/test_config_parity.py`` checks every pair.
"""

import dataclasses
import inspect
from typing import Any

from pydantic import Field


def lib_default(owner: Any, name: str) -> Any:
    """The default of field ``name`` of a lib dataclass, or of keyword ``name`` of a lib function."""
    if dataclasses.is_dataclass(owner):
        f = {f.name: f for f in dataclasses.fields(owner)}[name]
        value = f.default_factory() if f.default is dataclasses.MISSING else f.default
    else:
        value = inspect.signature(owner).parameters[name].default
    return list(value) if isinstance(value, tuple) else value


def lib_field(owner: Any, name: str, description: str) -> Any:
    """A pydantic ``Field`` whose default is ``lib_default(owner, name)``."""
    return Field(default=lib_default(owner, name), description=description)


def to_lib(cls: type, config: Any, **renamed: str) -> Any:
    """An instance of the lib dataclass ``cls`` from a ``dg.Config``: every field of ``cls`` taken from
    the config field of the same name (or ``renamed[lib_name]``); lists become tuples again."""
    kw = {}
    for f in dataclasses.fields(cls):
        value = getattr(config, renamed.get(f.name, f.name))
        kw[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**kw)
