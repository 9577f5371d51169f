"""Settings: what wactorz can be configured to do, where each value comes from, and the live copy.

The configuration is one frozen `Settings` tree with a section per subsystem (`LLMConfig`,
`MQTTConfig`, `WebConfig`, `MonitorConfig`, `SandboxConfig`; `ModelPrice` is a row of the
LLM's price table). Every field has a default chosen so
that wactorz starts on a fresh machine with no MQTT broker and no API key, binds nothing beyond
loopback, and runs no code and touches no files until told to.

Sources, later ones winning:

1. the defaults declared on the classes below;
2. a YAML file: the ``path`` given to `load_settings` (the CLI's ``--config``), else the file
   named by ``WACTORZ_CONFIG``, else ``./wactorz.yaml`` if it exists, else none. A file that was
   asked for by name but does not exist is an error;
3. the environment: ``WACTORZ_<KEY>`` with ``__`` between nested keys and key names in any case
   (``WACTORZ_MQTT__PORT=1884`` sets ``mqtt.port``), plus the conventional ``ANTHROPIC_API_KEY``
   for ``llm.api_key`` (``WACTORZ_LLM__API_KEY`` wins over it). Values are parsed for the
   field's type: booleans accept true/false, yes/no, on/off and 1/0 in any case, and an empty
   string means "none" for optional fields;
4. explicit overrides: a mapping of dotted keys to values, ``{"mqtt.port": 1884}`` (the CLI's
   flags).

Anything that is not a known key, or not a valid value for its key, raises `ConfigError`, whose
``str()`` is a single line naming the key, the value, where it came from and what is allowed.
`load_settings` also records the source of every effective value, which
`LoadedSettings.render` prints next to it.

Secrets (API key, MQTT password, web token) are held in `Secret`, which shows ``***`` in every
repr, str and f-string; call `Secret.reveal` at the one place that needs the real value.

The process-wide settings::

    settings = get_settings()   # loaded once, lazily, from the file and the environment

Embedding code and tests replace them with `configure` (install a `Settings` you built or
loaded), `reset_settings` (forget them, so the next `get_settings` loads afresh) or, scoped to a
block, ``with override_settings({"mqtt.enabled": True}):`` which installs the current settings
changed by those dotted keys (or a whole `Settings`) and restores the previous ones on exit.
"""

from wactorz.config import schema
from wactorz.config._current import configure, get_settings, override_settings, reset_settings
from wactorz.config._errors import ConfigError
from wactorz.config._loading import CONFIG_PATH_ENV, ENV_PREFIX, LoadedSettings, load_settings
from wactorz.config._render import render_settings, settings_to_dict
from wactorz.config._secret import Secret
from wactorz.config.schema import *  # noqa: F403  (the schema's own __all__, added below)

__all__ = [
    "CONFIG_PATH_ENV",
    "ENV_PREFIX",
    "ConfigError",
    "LoadedSettings",
    "Secret",
    "configure",
    "get_settings",
    "load_settings",
    "override_settings",
    "render_settings",
    "reset_settings",
    "settings_to_dict",
]
# Every section of the settings, as the schema lists them: a section added there (the one
# file to edit) is exported from here with nothing else to change.
__all__ += schema.__all__
