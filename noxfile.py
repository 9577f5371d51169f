"""Developer tasks: ``nox -s tests``, ``nox -s lint``, ``nox -s docs``, ``nox -s bench``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """Run the whole test suite (what CI runs)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff on everything, ``mypy --strict`` on the package."""
    session.install("-e", ".[lint,test]")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "noxfile.py")
    session.run("mypy", "--strict", "src/wactorz")


@nox.session
def docs(session: nox.Session) -> None:
    """Render the API reference as HTML into build/docs/api/python/."""
    session.install("-e", ".")  # pdoc is a dependency: the service renders the reference too
    session.run("pdoc", "--output-directory", "build/docs/api/python", "wactorz")


@nox.session
def bench(session: nox.Session) -> None:
    """Measure the runtime against raw Trio (``nox -s bench -- --quick`` for a short run)."""
    session.install("-e", ".[bench]")
    session.run("python", "-m", "benchmarks", *session.posargs)
