"""wactorz: a Trio-native actor runtime with OTP-style supervision.

The runtime lives in `wactorz.core`; ready-made agents in `wactorz.agents`;
WebSocket, web and MQTT front doors in `wactorz.interfaces`; configuration in
`wactorz.config`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wactorz")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
