"""The wactorz service for the dashboard's browser tests, in one of two shapes.

Run as ``python -m tests.interfaces.dashboard_service`` from the repository's root, with
settings in the environment as for ``python -m wactorz`` (``WACTORZ_WEB__PORT``,
``WACTORZ_WEB__TOKEN``...). It is the stock service (`wactorz.service.Service`: the same
banner, runtime file and signal handling), changed by ``DASHBOARD_MAIN``:

- ``stand-in`` (the default): its ``main`` is a `tests.interfaces.stand_in_main.StandInMain`
  (with its ``crew`` supervisor) instead of the real MainActor, so that replies stream
  without a language model;
- ``router``: the real MainActor, which may also ``/spawn worker NAME`` (a
  `tests.interfaces.stand_in_main.Worker`), and a ``weather`` agent whose ``forecast``
  tool the LLM agent offers its model. Point the LLM agent at a fake Messages API with
  ``WACTORZ_LLM__BASE_URL`` and ``WACTORZ_LLM__API_KEY``.
"""

from __future__ import annotations

import os
import sys

import attrs
import trio

from tests.interfaces.stand_in_main import StandInMain, Weather, Worker
from wactorz.agents.main_actor import Spawnable
from wactorz.config import configure, load_settings
from wactorz.logs import configure_logging
from wactorz.service import Service, ServiceChild, ServicePlan, plan_service


def _stand_in(plan: ServicePlan) -> ServicePlan:
    stand_in = ServiceChild("main", StandInMain, {"crew": True}, summary="main (stand-in)")
    children = [stand_in if child.name == "main" else child for child in plan.children]
    return attrs.evolve(plan, children=tuple(children))


def _router(plan: ServicePlan) -> ServicePlan:
    children: list[ServiceChild] = []
    for child in plan.children:
        if child.name == "llm":  # its tools' owner starts first
            children.append(ServiceChild("weather", Weather, summary="weather (test agent)"))
        if child.name == "main":
            spawnable = {**child.kwargs["spawnable"], "worker": Spawnable(Worker)}
            child = attrs.evolve(child, kwargs={**child.kwargs, "spawnable": spawnable})
        children.append(child)
    return attrs.evolve(plan, children=tuple(children))


def main() -> int:
    router = os.environ.get("DASHBOARD_MAIN", "stand-in") == "router"
    overrides = {"llm.tools": ["weather"], "llm.max_retries": 0} if router else None
    loaded = load_settings(None, overrides=overrides)
    configure_logging(loaded.settings.log_level, loaded.settings.log_format)
    configure(loaded.settings)
    plan = plan_service(loaded.settings)
    plan = _router(plan) if router else _stand_in(plan)
    return trio.run(Service(loaded, plan).run)


if __name__ == "__main__":
    sys.exit(main())
