"""wactorz: a Trio-native actor runtime with OTP-style supervision.

The runtime lives in `wactorz.core`; ready-made agents in `wactorz.agents`;
WebSocket, web and MQTT front doors in `wactorz.interfaces`; configuration in
`wactorz.config`.
"""

import logging
from typing import Any

# A library stays quiet unless the application configures logging.
logging.getLogger("wactorz").addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    # `__version__` is read from the installed metadata on first use: importing
    # importlib.metadata costs some 20 ms, which every `python -m wactorz` would pay
    # before it can handle a Ctrl-C (see `wactorz.__main__`).
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("wactorz")
        except PackageNotFoundError:  # a source tree that was never installed
            found = "0+unknown"
        globals()["__version__"] = found
        return found
    raise AttributeError(f"module 'wactorz' has no attribute {name!r}")
