"""The wactorz service plus a stand-in MainActor (and its ``crew``), for client tests.

Run as ``python -m tests.interfaces.dashboard_service`` from the repository's root, with
settings in the environment as for ``python -m wactorz`` (``WACTORZ_WEB__PORT``,
``WACTORZ_WEB__TOKEN``...). It is the stock service (`wactorz.service.Service`: the same
banner, runtime file and signal handling) whose ``main`` is a
`tests.interfaces.stand_in_main.StandInMain` (with its ``crew`` supervisor) instead of
the real MainActor, so that replies stream without a language model.
"""

from __future__ import annotations

import sys

import attrs
import trio

from tests.interfaces.stand_in_main import StandInMain
from wactorz.config import configure, load_settings
from wactorz.logs import configure_logging
from wactorz.service import Service, ServiceChild, plan_service


def main() -> int:
    loaded = load_settings(None)
    configure_logging(loaded.settings.log_level, loaded.settings.log_format)
    configure(loaded.settings)
    plan = plan_service(loaded.settings)
    stand_in = ServiceChild("main", StandInMain, {"crew": True}, summary="main (stand-in)")
    children = [stand_in if child.name == "main" else child for child in plan.children]
    plan = attrs.evolve(plan, children=tuple(children))
    return trio.run(Service(loaded, plan).run)


if __name__ == "__main__":
    sys.exit(main())
