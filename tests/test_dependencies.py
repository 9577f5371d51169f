"""The package declares exactly the distributions its code imports, no more and no fewer."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imported_top_levels() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "src" / "wactorz").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"wactorz", "__future__"}


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = set()
    for requirement in project["dependencies"]:
        name = requirement.split(";")[0]
        for stop in "<>=!~[ ":
            name = name.split(stop)[0]
        names.add(name.strip().lower().replace("_", "-"))
    return names


def test_every_imported_distribution_is_declared_and_every_declared_one_imported() -> None:
    distributions = packages_distributions()
    imported = {
        dist.lower().replace("_", "-")
        for module in _imported_top_levels()
        for dist in distributions.get(module, [module])
    }
    assert imported == _declared()
