"""wactorz: a Trio-native actor runtime with OTP-style supervision.

The runtime lives in `wactorz.core`; ready-made agents in `wactorz.agents`;
WebSocket, web and MQTT front doors in `wactorz.interfaces`; configuration in
`wactorz.config`.
"""

import logging
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wactorz")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

# A library stays quiet unless the application configures logging.
logging.getLogger("wactorz").addHandler(logging.NullHandler())
