"""The package declares exactly the distributions its code imports, no more and no fewer."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _top_levels_imported_by(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _imported_top_levels() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "src" / "wactorz").rglob("*.py"):
        found |= _top_levels_imported_by(path)
    return found - set(sys.stdlib_module_names) - {"wactorz", "__future__"}


RUNTIME_EXTRAS = {"broker": "interfaces/mqtt/_broker_child.py"}
"""Optional extras the package's code imports, each by one module only: the one that runs
in a process of its own when the feature is used (the embedded broker's child)."""


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = set()
    requirements = list(project["dependencies"])
    for extra in RUNTIME_EXTRAS:
        requirements += project["optional-dependencies"][extra]
    for requirement in requirements:
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


def test_an_optional_extra_is_imported_only_by_its_own_process() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for extra, owner in RUNTIME_EXTRAS.items():
        for requirement in project["optional-dependencies"][extra]:
            module = requirement.split("=")[0].split("[")[0].strip().replace("-", "_")
            importers = sorted(
                str(path.relative_to(ROOT / "src" / "wactorz"))
                for path in (ROOT / "src" / "wactorz").rglob("*.py")
                if module in _top_levels_imported_by(path)
            )
            assert importers == [owner], f"{module} (extra {extra!r}) imported by {importers}"
