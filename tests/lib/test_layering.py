"""The shape of ``sav_assets.lib``: no Dagster anywhere under it, stage groups that only import their
own level or below, and no import circle between modules.

Levels (low to high): the shared helpers in ``lib/util.py``, then ``store`` < ``video`` < ``sav`` <
``ingest`` < ``label`` < ``qc`` < ``dataset`` < ``train``. A module may import its own group and any
lower one; imports inside functions count too (they are still dependencies).
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

LIB = pathlib.Path(__file__).resolve().parents[2] / "sav_assets" / "lib"
LEVELS = {"util": 0, "cluster": 1, "store": 2, "video": 3, "sav": 4, "ingest": 5, "label": 6, "qc": 7,
          "dataset": 8, "train": 9}


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for p in sorted(LIB.rglob("*.py")):
        rel = p.relative_to(LIB).with_suffix("")
        parts = [x for x in rel.parts if x != "__init__"]
        out[".".join(["sav_assets", "lib", *parts])] = p
    return out


def _imports(path: pathlib.Path) -> set[str]:
    """Every ``sav_assets.*`` / ``dagster*`` module a file imports, at any depth of the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (use absolute imports)"
            mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return found


def _group(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] != ["sav_assets", "lib"] or len(parts) < 3:
        return None
    return parts[2]


def test_lib_never_imports_dagster():
    mods = _modules()
    assert len(mods) > 30, "the lib tree was not found"
    offenders = sorted(str(p.relative_to(LIB)) for p in mods.values()
                       if any(m == "dagster" or m.startswith(("dagster.", "dagster_")) for m in _imports(p)))
    assert offenders == []


def test_every_lib_module_lives_in_a_stage_group():
    loose = sorted(m for m in _modules() if _group(m) not in LEVELS and m != "sav_assets.lib")
    assert loose == []


def test_groups_import_only_their_level_or_below():
    bad = []
    for mod, path in _modules().items():
        g = _group(mod)
        if g is None:
            continue
        for imp in _imports(path):
            h = _group(imp)
            if h is not None and h in LEVELS and LEVELS[h] > LEVELS[g]:
                bad.append(f"{mod} -> {imp}")
    assert bad == []


def test_no_import_circle_at_module_level():
    """Module-level imports between lib modules form a DAG (a circle makes import order matter)."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        deps = set()
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            deps.update(n for n in names if n in mods and n != mod and not mod.startswith(n + "."))
        graph[mod] = deps
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(n: str, stack: list[str]) -> bool:
        state[n] = 1
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                cycle.extend(stack[stack.index(d):] + [n, d] if d in stack else [n, d])
                return True
            if state.get(d) is None and visit(d, stack + [n]):
                return True
        state[n] = 2
        return False

    for n in sorted(graph):
        if state.get(n) is None and visit(n, [n]):
            break
    assert cycle == []


def test_lib_importable_without_dagster():
    """The GPU machine has torch but no Dagster: every module of sav_assets.lib imports with dagster hidden."""
    code = ("import sys; sys.modules['dagster'] = None\n"
            "import importlib\n"
            f"for m in {sorted(_modules())!r}: importlib.import_module(m)\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
