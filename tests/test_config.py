import logging
import os
import re
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path

import attrs
import pytest
import yaml

from wactorz import config
from wactorz.config import (
    ConfigError,
    LLMConfig,
    ModelPrice,
    MQTTConfig,
    SandboxConfig,
    Secret,
    Settings,
    WebConfig,
    configure,
    get_settings,
    load_settings,
    override_settings,
    render_settings,
    reset_settings,
    settings_to_dict,
)
from wactorz.config._errors import show
from wactorz.config._loading import field_keys

REPO_CONFIG = Path(__file__).resolve().parents[1] / "wactorz.yaml"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run each test in an empty directory, with no wactorz variables and no live settings."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.upper().startswith("WACTORZ_") or name == "ANTHROPIC_API_KEY":
            monkeypatch.delenv(name)
    reset_settings()
    yield
    reset_settings()


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def load_error(*args: object, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(*args, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


# --- defaults ---------------------------------------------------------------------------------


def test_defaults_start_a_fresh_machine_without_broker_key_or_exposure() -> None:
    settings = load_settings(env={}).settings
    assert settings == Settings()
    assert settings.mqtt.enabled is False
    assert settings.llm.api_key is None
    assert settings.llm.model == "claude-sonnet-4-5"
    assert settings.web.host == "127.0.0.1"
    assert settings.web.token is None
    assert settings.sandbox.enabled is False
    assert settings.sandbox.allow_shell is False
    assert settings.log_level == "INFO"
    assert settings.log_format == "text"


def test_every_source_is_default_without_file_env_or_overrides() -> None:
    loaded = load_settings(env={})
    assert loaded.config_path is None
    assert set(loaded.sources.values()) == {"default"}
    assert "mqtt.port" in loaded.sources
    assert "sandbox.memory_limit_mb" in loaded.sources


@pytest.mark.parametrize(
    ("hostname", "node"),
    [
        ("build-box-7.example.com", "build_box_7"),
        ("plain", "plain"),
        ("--", "wactorz"),
        ("caf\u00e9 host", "caf_host"),
    ],
)
def test_default_node_is_the_sanitized_short_hostname(
    monkeypatch: pytest.MonkeyPatch, hostname: str, node: str
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: hostname)
    assert Settings().node == node


# --- sources and precedence -------------------------------------------------------------------


def test_file_values_replace_defaults_and_are_attributed_to_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "custom.yaml", "mqtt:\n  port: 1884\n  enabled: true\nnode: lab\n")
    loaded = load_settings(path, env={})
    assert loaded.settings.mqtt.port == 1884
    assert loaded.settings.mqtt.enabled is True
    assert loaded.settings.node == "lab"
    assert loaded.config_path == path
    assert loaded.sources["mqtt.port"] == str(path)
    assert loaded.sources["node"] == str(path)
    assert loaded.sources["mqtt.host"] == "default"


def test_precedence_is_default_then_file_then_env_then_override(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        "mqtt:\n  port: 1001\n  host: file.example\n  keepalive: 10\nweb:\n  port: 2001\n",
    )
    env = {"WACTORZ_MQTT__PORT": "1002", "WACTORZ_MQTT__HOST": "env.example"}
    loaded = load_settings(path, env=env, overrides={"mqtt.port": 1003})
    mqtt = loaded.settings.mqtt
    assert (mqtt.port, mqtt.host, mqtt.keepalive, mqtt.qos) == (1003, "env.example", 10, 1)
    assert loaded.settings.web.port == 2001
    assert loaded.sources["mqtt.port"] == "override"
    assert loaded.sources["mqtt.host"] == "WACTORZ_MQTT__HOST"
    assert loaded.sources["mqtt.keepalive"] == str(path)
    assert loaded.sources["web.port"] == str(path)
    assert loaded.sources["mqtt.qos"] == "default"


def test_override_sources_name_the_flag_that_set_a_value() -> None:
    loaded = load_settings(
        env={},
        overrides={"mqtt.port": "1884", "log_level": "debug"},
        override_sources={"mqtt.port": "--mqtt-port"},
    )
    assert loaded.settings.mqtt.port == 1884
    assert loaded.settings.log_level == "DEBUG"
    assert loaded.sources["mqtt.port"] == "--mqtt-port"
    assert loaded.sources["log_level"] == "override"


def test_overrides_set_to_none_are_skipped_like_unset_flags() -> None:
    env = {"WACTORZ_MQTT__PORT": "1884"}
    loaded = load_settings(env=env, overrides={"mqtt.port": None, "node": None})
    assert loaded.settings.mqtt.port == 1884
    assert loaded.sources["mqtt.port"] == "WACTORZ_MQTT__PORT"


def test_overrides_may_give_a_whole_section_as_a_mapping() -> None:
    loaded = load_settings(env={}, overrides={"web": {"port": 9000, "enabled": "no"}})
    assert loaded.settings.web == WebConfig(enabled=False, port=9000)
    assert loaded.sources["web.port"] == "override"
    env = {"WACTORZ_WEB__PORT": "9001"}
    assert load_settings(env=env, overrides={"web": {}}).settings.web.port == 9001


# --- finding the file -------------------------------------------------------------------------


def test_wactorz_yaml_in_the_working_directory_is_read_when_nothing_is_named(
    tmp_path: Path,
) -> None:
    write(tmp_path / "wactorz.yaml", "log_format: json\n")
    loaded = load_settings(env={})
    assert loaded.settings.log_format == "json"
    assert loaded.config_path == Path("wactorz.yaml")
    assert loaded.sources["log_format"] == "./wactorz.yaml"


def test_wactorz_config_names_the_file_and_is_not_itself_a_key(tmp_path: Path) -> None:
    write(tmp_path / "wactorz.yaml", "log_format: json\n")
    named = write(tmp_path / "named.yaml", "log_level: ERROR\n")
    loaded = load_settings(env={"WACTORZ_CONFIG": str(named)})
    assert loaded.config_path == named
    assert loaded.settings.log_level == "ERROR"
    assert loaded.settings.log_format == "text"


def test_an_explicit_path_wins_over_wactorz_config(tmp_path: Path) -> None:
    explicit = write(tmp_path / "explicit.yaml", "node: explicit\n")
    named = write(tmp_path / "named.yaml", "node: named\n")
    loaded = load_settings(explicit, env={"WACTORZ_CONFIG": str(named)})
    assert loaded.settings.node == "explicit"


def test_an_explicit_path_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    message = load_error(tmp_path / "missing.yaml", env={})
    assert "missing.yaml" in message
    assert "does not exist" in message


def test_a_missing_file_named_by_wactorz_config_is_an_error() -> None:
    message = load_error(env={"WACTORZ_CONFIG": "nowhere.yaml"})
    assert "'nowhere.yaml' (from WACTORZ_CONFIG) does not exist" in message


def test_an_empty_file_or_an_emptied_section_leaves_the_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path / "empty.yaml", ""), env={}).settings == Settings()
    emptied = write(tmp_path / "emptied.yaml", "mqtt:\n  # port: 1\n")
    assert load_settings(emptied, env={}).settings == Settings()


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.yaml", "mqtt:\n  port: 1883\n  host: [unclosed\n")
    message = load_error(path, env={})
    assert message.startswith(f"{path}: invalid YAML at line ")


def test_a_file_that_is_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "list.yaml", "- mqtt\n- web\n")
    message = load_error(path, env={})
    assert message == (
        f"{path}: expected a mapping of settings (lines of 'key: value') at the top level, "
        "got a list"
    )


def test_an_unreadable_path_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    message = load_error(tmp_path / "dir.yaml", env={})
    assert message.startswith("cannot read config file")


# --- the environment --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["WACTORZ_MQTT__PORT", "wactorz_mqtt__port", "WACTORZ_Mqtt__Port"])
def test_env_keys_nest_with_double_underscores_in_any_case(name: str) -> None:
    loaded = load_settings(env={name: "1884"})
    assert loaded.settings.mqtt.port == 1884
    assert loaded.sources["mqtt.port"] == name


def test_env_sets_top_level_keys() -> None:
    settings = load_settings(env={"WACTORZ_NODE": "x", "WACTORZ_LOG_LEVEL": "warning"}).settings
    assert settings.node == "x"
    assert settings.log_level == "WARNING"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("On", True),
        (" on ", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("OFF", False),
    ],
)
def test_env_booleans_accept_the_usual_words(text: str, value: bool) -> None:
    settings = load_settings(env={"WACTORZ_MQTT__ENABLED": text, "WACTORZ_MQTT__TLS": text})
    assert settings.settings.mqtt.enabled is value
    assert settings.settings.mqtt.tls is value


def test_env_boolean_that_is_no_boolean_is_rejected() -> None:
    message = load_error(env={"WACTORZ_WEB__ENABLED": "maybe"})
    assert message.startswith("web.enabled: 'maybe' from WACTORZ_WEB__ENABLED is not valid")
    assert "true or false" in message


def test_env_numbers_are_parsed_for_the_field_type() -> None:
    env = {
        "WACTORZ_LLM__TEMPERATURE": "0.25",
        "WACTORZ_LLM__MAX_TOKENS": "100",
        "WACTORZ_LLM__TIMEOUT": "5",
        "WACTORZ_MQTT__QOS": "2",
        "WACTORZ_MONITOR__MAILBOX_ALERT_RATIO": " 1 ",
    }
    settings = load_settings(env=env).settings
    assert settings.llm.temperature == 0.25
    assert settings.llm.max_tokens == 100
    assert settings.llm.timeout == 5.0
    assert isinstance(settings.llm.timeout, float)
    assert settings.mqtt.qos == 2
    assert settings.monitor.mailbox_alert_ratio == 1.0


def test_an_integer_field_refuses_a_fraction() -> None:
    message = load_error(env={"WACTORZ_LLM__MAX_TOKENS": "1.5"})
    assert message == (
        "llm.max_tokens: '1.5' from WACTORZ_LLM__MAX_TOKENS is not valid: "
        "expected an integer greater than 0"
    )


def test_an_empty_env_value_means_none_for_optional_fields(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        "llm:\n  base_url: https://gateway.example\n  api_key: from-file\n"
        "mqtt:\n  username: bob\n  client_id: lab1\n",
    )
    env = {
        "WACTORZ_LLM__BASE_URL": "",
        "WACTORZ_LLM__API_KEY": "",
        "WACTORZ_MQTT__USERNAME": "",
        "WACTORZ_MQTT__CLIENT_ID": " ",
    }
    settings = load_settings(path, env=env).settings
    assert settings.llm.base_url is None
    assert settings.llm.api_key is None
    assert settings.mqtt.username is None
    assert settings.mqtt.client_id is None


def test_anthropic_api_key_fills_the_llm_key() -> None:
    loaded = load_settings(env={"ANTHROPIC_API_KEY": "sk-ant"})
    assert loaded.settings.llm.api_key == Secret("sk-ant")
    assert loaded.sources["llm.api_key"] == "ANTHROPIC_API_KEY"


def test_wactorz_llm_api_key_wins_over_anthropic_api_key() -> None:
    env = {"ANTHROPIC_API_KEY": "sk-conventional", "WACTORZ_LLM__API_KEY": "sk-specific"}
    loaded = load_settings(env=env)
    assert loaded.settings.llm.api_key is not None
    assert loaded.settings.llm.api_key.reveal() == "sk-specific"
    assert loaded.sources["llm.api_key"] == "WACTORZ_LLM__API_KEY"


def test_anthropic_api_key_wins_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "llm:\n  api_key: sk-file\n")
    loaded = load_settings(path, env={"ANTHROPIC_API_KEY": "sk-env"})
    assert loaded.settings.llm.api_key == Secret("sk-env")
    assert load_settings(path, env={"ANTHROPIC_API_KEY": ""}).settings.llm.api_key == Secret(
        "sk-file"
    )


def test_os_environ_is_read_when_no_env_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WACTORZ_MQTT__PORT", "2883")
    assert load_settings().settings.mqtt.port == 2883


# --- unknown keys -----------------------------------------------------------------------------


def test_unknown_key_in_the_file_names_path_file_and_known_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "mqtt:\n  prot: 1884\n")
    message = load_error(path, env={})
    assert message.startswith(
        f"unknown key 'mqtt.prot' in {path} (known keys under mqtt: enabled, host, port, "
    )
    assert message.endswith("; did you mean 'mqtt.port'?")


def test_unknown_top_level_key_in_the_file_lists_the_sections(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "brokers: []\n")
    message = load_error(path, env={})
    assert message == (
        f"unknown key 'brokers' in {path} (known keys: node, log_level, log_format, data_dir, llm, "
        "mqtt, web, monitor, sandbox)"
    )


def test_unknown_key_in_the_env_names_the_variable() -> None:
    message = load_error(env={"WACTORZ_MQTT__PROT": "1884"})
    assert message.startswith("unknown key 'mqtt.prot' from WACTORZ_MQTT__PROT (known keys")


def test_a_single_underscore_in_the_env_gets_a_nesting_hint() -> None:
    message = load_error(env={"WACTORZ_MQTT_PORT": "1884"})
    assert message.startswith("unknown key 'mqtt_port' from WACTORZ_MQTT_PORT")
    assert message.endswith("double underscore: WACTORZ_MQTT__PORT")


def test_unknown_override_key_names_the_override() -> None:
    message = load_error(env={}, overrides={"web.prot": 1}, override_sources={"web.prot": "--x"})
    assert message.startswith("unknown key 'web.prot' from --x (known keys under web:")


# --- bad values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("mqtt:\n  port: 70000\n", "mqtt.port: 70000 from {path} is not valid: "),
        ("mqtt:\n  port: 0\n", "mqtt.port: 0 from {path} is not valid: "),
        ("mqtt:\n  port: abc\n", "mqtt.port: 'abc' from {path} is not valid: "),
        ("mqtt:\n  port: true\n", "mqtt.port: True from {path} is not valid: "),
    ],
)
def test_bad_port_in_the_file_says_what_ports_are_allowed(
    tmp_path: Path, yaml_text: str, expected: str
) -> None:
    path = write(tmp_path / "c.yaml", yaml_text)
    message = load_error(path, env={})
    assert message == expected.format(path=path) + "expected an integer from 1 to 65535"


def test_bad_port_in_the_env_names_the_variable() -> None:
    message = load_error(env={"WACTORZ_MQTT__PORT": "abc"})
    assert message == (
        "mqtt.port: 'abc' from WACTORZ_MQTT__PORT is not valid: expected an integer from 1 to 65535"
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("mqtt.qos", 3, "mqtt.qos: 3 from --qos is not valid: expected one of 0, 1, 2"),
        (
            "llm.temperature",
            2,
            "llm.temperature: 2 from --qos is not valid: expected a number from 0 to 1",
        ),
        (
            "log_level",
            "verbose",
            "log_level: 'verbose' from --qos is not valid: "
            "expected one of DEBUG, INFO, WARNING, ERROR",
        ),
        (
            "log_format",
            "xml",
            "log_format: 'xml' from --qos is not valid: expected one of text, json",
        ),
        (
            "mqtt.topic_prefix",
            "home/#",
            "mqtt.topic_prefix: 'home/#' from --qos is not valid: expected a topic prefix "
            "without '+' or '#', control characters or a leading or trailing '/'",
        ),
        (
            "mqtt.topic_prefix",
            "/home",
            "mqtt.topic_prefix: '/home' from --qos is not valid: expected a topic prefix "
            "without '+' or '#', control characters or a leading or trailing '/'",
        ),
        (
            "node",
            "my-node",
            "node: 'my-node' from --qos is not valid: "
            "expected a name of 1 to 64 letters, digits and underscores",
        ),
        (
            "llm.base_url",
            "gateway.example",
            "llm.base_url: 'gateway.example' from --qos is not valid: "
            "expected an http:// or https:// URL, or empty for none",
        ),
        (
            "monitor.cpu_alert_percent",
            "150",
            "monitor.cpu_alert_percent: '150' from --qos is not valid: "
            "expected a percentage above 0, up to 100",
        ),
        (
            "llm.timeout",
            "inf",
            "llm.timeout: 'inf' from --qos is not valid: "
            "expected a number of seconds greater than 0",
        ),
    ],
)
def test_bad_values_name_key_value_source_and_what_is_allowed(
    key: str, value: object, message: str
) -> None:
    got = load_error(env={}, overrides={key: value}, override_sources={key: "--qos"})
    assert got == message


def test_a_section_that_is_not_a_mapping_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "mqtt: on\n")
    message = load_error(path, env={})
    assert message.startswith(
        f"mqtt: True from {path} is not valid: expected a section with keys enabled, host,"
    )


def test_a_section_given_as_an_env_value_is_reported_not_ignored() -> None:
    message = load_error(env={"WACTORZ_MQTT": "x", "WACTORZ_MQTT__PORT": "1884"})
    assert message.startswith("mqtt: 'x' from WACTORZ_MQTT is not valid: expected a section")


def test_reconnect_backoff_cannot_cap_below_its_start() -> None:
    message = load_error(env={"WACTORZ_MQTT__RECONNECT_MIN_S": "100"})
    assert message == (
        "mqtt.reconnect_max_s: 60.0 (the default) is not valid: "
        "expected a number of seconds no smaller than reconnect_min_s (100.0)"
    )


def test_several_problems_are_counted_in_the_one_line_and_all_kept(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "mqtt:\n  qos: 3\n  prot: 1\nllm:\n  temperature: 2\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert str(info.value).endswith("(and 2 more problems)")
    assert "\n" not in str(info.value)
    assert len(info.value.problems) == 3
    assert any(p.startswith("unknown key 'mqtt.prot'") for p in info.value.problems)
    assert any(p.startswith("mqtt.qos: 3") for p in info.value.problems)
    assert any(p.startswith("llm.temperature: 2") for p in info.value.problems)


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ValueError, match=r"port: 70000 is not valid: expected an integer from 1"):
        MQTTConfig(port=70000)
    with pytest.raises(ValueError, match="qos"):
        MQTTConfig(qos=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reconnect_max_s"):
        MQTTConfig(reconnect_min_s=10, reconnect_max_s=5)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        settings.node = "other"  # type: ignore[misc]


def test_sandbox_root_expands_the_home_directory() -> None:
    loaded = load_settings(env={"WACTORZ_SANDBOX__ROOT": "~/agents"})
    assert loaded.settings.sandbox.root == Path.home() / "agents"
    assert SandboxConfig(root="relative").root == Path("relative")


# --- host names -------------------------------------------------------------------------------

HOST_EXPECTED = (
    "expected an IP address like 127.0.0.1 or ::1, or a host name like broker.lan (labels of "
    "1 to 63 ASCII letters, digits, '-' or '_' joined by dots, none starting or ending with "
    "'-', 253 characters at most)"
)


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "127.0.0.1",
        "::1",
        "broker.lan",
        "my-broker.example.com",
        "0.0.0.0",
        "::",
        "2001:db8::8a2e:370:7334",
        "fe80::1%eth0",
        "broker.lan.",
        "mqtt_broker",
        "Broker-7.LAN",
        "a" * 63 + ".example",
        ".".join(["a" * 62] * 4) + ".b",  # 253 characters
    ],
)
def test_hosts_are_ip_addresses_or_dns_names(host: str) -> None:
    env = {"WACTORZ_MQTT__HOST": host, "WACTORZ_WEB__HOST": host}
    settings = load_settings(env=env).settings
    assert (settings.mqtt.host, settings.web.host) == (host, host)


@pytest.mark.parametrize(
    "host",
    [
        "bad host name!!",
        "-x",
        "x-",
        "a..b",
        "",
        " ",
        ".",
        " broker.lan",
        "broker.lan\n",
        "a" * 300,
        ".".join(["a" * 62] * 4) + ".bc",  # 254 characters
        "a" * 64 + ".lan",
        "host:1883",
        "http://x",
        "[::1]",
        "10.0.0.256",
        "1.2.3",
        "b\u00fccher.example",
    ],
)
@pytest.mark.parametrize("key", ["mqtt.host", "web.host"])
def test_a_host_that_is_neither_address_nor_name_is_refused(key: str, host: str) -> None:
    message = load_error(env={}, overrides={key: host}, override_sources={key: "--host"})
    assert message == f"{key}: {show(host)} from --host is not valid: {HOST_EXPECTED}"
    assert len(message) < 400


def test_hosts_are_checked_when_built_in_code_too() -> None:
    with pytest.raises(ValueError, match=r"host: 'bad host name!!' is not valid: expected an IP"):
        MQTTConfig(host="bad host name!!")
    with pytest.raises(ValueError, match=r"host: 'http://x' is not valid"):
        WebConfig(host="http://x")
    with pytest.raises(ValueError, match=r"host: 1883 is not valid"):
        WebConfig(host=1883)  # type: ignore[arg-type]
    assert WebConfig(host="0.0.0.0").host == "0.0.0.0"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("mqtt.host", "a" * 1_000_000),
        ("llm.model", " " * 1_000_000),
        ("node", "-" * 1_000_000),
        ("llm.base_url", "x" * 1_000_000),
        ("mqtt.port", "9" * 100_000),
        ("monitor.interval_s", "1" * 1_000_000),
        ("mqtt.mirror_topics", ["agents/" + "a" * 1_000_000] * 1000),
        ("mqtt.topic_prefix", "#" * 1_000_000),
    ],
)
def test_an_error_about_a_huge_value_is_still_one_short_line(key: str, value: object) -> None:
    message = load_error(env={}, overrides={key: value}, override_sources={key: "--flag"})
    assert message.startswith(f"{key}: ")
    assert " from --flag is not valid: expected " in message
    assert len(message) < 1000


# --- secrets ----------------------------------------------------------------------------------


def test_a_secret_shows_stars_everywhere_and_reveals_on_request() -> None:
    secret = Secret("hunter2")
    assert repr(secret) == "Secret('***')"
    assert str(secret) == "***"
    assert f"{secret}" == "***"
    assert "hunter2" not in " ".join([str(secret), repr(secret), format(secret)])
    assert secret.reveal() == "hunter2"
    assert secret == Secret("hunter2")
    assert secret != Secret("other")
    with pytest.raises(AttributeError):
        secret._value = "x"


def test_secrets_never_appear_in_reprs_renderings_or_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {
        "ANTHROPIC_API_KEY": "sk-ant-topsecret",
        "WACTORZ_MQTT__PASSWORD": "broker-pw-42",
        "WACTORZ_WEB__TOKEN": "web-token-99",
    }
    loaded = load_settings(env=env)
    settings = loaded.settings
    assert settings.llm.api_key is not None
    assert settings.llm.api_key.reveal() == "sk-ant-topsecret"
    with caplog.at_level(logging.INFO):
        logging.getLogger("wactorz.test").info("settings %s / %r", settings, settings)
        logging.getLogger("wactorz.test").info(f"llm {settings.llm}")
    shown = "\n".join(
        [
            repr(settings),
            str(settings),
            f"{settings.mqtt}",
            *loaded.render(),
            *render_settings(settings),
            str(settings_to_dict(settings)),
            caplog.text,
        ]
    )
    for value in env.values():
        assert value not in shown
    assert 'llm.api_key = "***"' in "\n".join(loaded.render())


def test_an_invalid_secret_value_is_masked_in_the_error(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "mqtt:\n  password: 424242\n")
    message = load_error(path, env={})
    assert "424242" not in message
    assert message == (
        f"mqtt.password: '***' from {path} is not valid: expected a string, or empty for none"
    )


def test_code_may_pass_a_plain_string_as_a_secret() -> None:
    llm = LLMConfig(api_key="sk-code")
    assert llm.api_key == Secret("sk-code")
    assert LLMConfig(api_key="").api_key is None


def test_revealed_dump_loads_back_into_equal_settings(tmp_path: Path) -> None:
    original = load_settings(
        env={"ANTHROPIC_API_KEY": "sk-1", "WACTORZ_MQTT__PORT": "1999", "WACTORZ_NODE": "n1"}
    ).settings
    dumped = settings_to_dict(original, reveal_secrets=True)
    assert dumped["llm"]["api_key"] == "sk-1"
    assert settings_to_dict(original)["llm"]["api_key"] == "***"
    path = write(tmp_path / "dump.yaml", yaml.safe_dump(dumped))
    assert load_settings(path, env={}).settings == original


# --- rendering and provenance -----------------------------------------------------------------


def aligned_columns(lines: Iterable[str]) -> set[int]:
    """Where the ``# source`` comments start, on the lines short enough to be aligned (a
    default such as the price table is longer, and is not padded by design)."""
    return {line.index("  # ") for line in lines if line.index("  # ") <= 60}


def test_render_prints_every_key_with_its_value_and_source(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "mqtt:\n  host: broker.lan\n")
    loaded = load_settings(
        path,
        env={"WACTORZ_MQTT__PORT": "1884", "WACTORZ_NODE": "lab"},
        overrides={"log_level": "DEBUG"},
        override_sources={"log_level": "--log-level"},
    )
    lines = loaded.render()
    assert len(lines) == len(loaded.sources)
    assert len(aligned_columns(lines)) == 1, "sources are aligned"
    rendered = {}
    for line in lines:
        assignment, source = line.split("  # ")
        key, value = assignment.rstrip().split(" = ")
        rendered[key] = (value, source)
    assert rendered["mqtt.host"] == ('"broker.lan"', str(path))
    assert rendered["mqtt.port"] == ("1884", "WACTORZ_MQTT__PORT")
    assert rendered["node"] == ('"lab"', "WACTORZ_NODE")
    assert rendered["log_level"] == ('"DEBUG"', "--log-level")
    assert rendered["mqtt.enabled"] == ("false", "default")
    assert rendered["llm.api_key"] == ("null", "default")
    assert rendered["sandbox.root"] == ('".wactorz/sandbox"', "default")


def test_render_without_sources_prints_plain_assignments() -> None:
    lines = render_settings(Settings(node="n"))
    assert lines[0] == 'node = "n"'
    assert all("  # " not in line for line in lines)  # no source comments ("shared/#" is a value)


def rendered(settings: Settings, sources: dict[str, str] | None = None) -> dict[str, str]:
    """The lines `render_settings` makes of *settings* (with *sources*, if given), by key."""
    lines = render_settings(settings, sources)
    assert len(lines) == len(list(field_keys()))
    return {line.split(" = ", 1)[0]: line for line in lines}


def test_render_shows_a_long_value_cut_with_its_length() -> None:
    lines = rendered(Settings(node="n", llm=LLMConfig(model="a" * 1_000_000)))
    assert lines["llm.model"] == f'llm.model = "{"a" * 77}…" (1000000 characters)'
    assert len(lines["llm.model"]) <= 120
    assert lines["node"] == 'node = "n"'


def test_render_counts_escapes_against_the_cut_and_escapes_lone_surrogates() -> None:
    settings = Settings(
        node="n", llm=LLMConfig(model="\x01" * 1000), sandbox=SandboxConfig(root="caf\udce9")
    )
    lines = rendered(settings)
    escapes = "\\u0001" * 12
    assert lines["llm.model"] == f'llm.model = "{escapes}…" (1000 characters)'
    # An undecodable byte from the environment must not stop the output in a UTF-8 terminal.
    assert lines["sandbox.root"] == 'sandbox.root = "caf\\udce9"'
    "\n".join(lines.values()).encode("utf-8")


def test_render_shows_a_long_list_by_its_first_items_and_its_length() -> None:
    def shown(filters: list[str]) -> str:
        settings = Settings(node="n", mqtt=MQTTConfig(mirror_topics=filters))
        return rendered(settings)["mqtt.mirror_topics"]

    many = shown([f"t{index}/#" for index in range(20_000)])
    assert many.startswith('mqtt.mirror_topics = ["t0/#", "t1/#", ')
    assert many.endswith('", …] (20000 items)')
    assert len(many) <= 120
    assert shown(["x" * 10_000]) == f'mqtt.mirror_topics = ["{"x" * 75}…"] (1 item)'
    assert shown(["shared/#", "y" * 10_000]) == 'mqtt.mirror_topics = ["shared/#", …] (2 items)'
    assert shown(["shared/#", "lab/+/temp"]) == 'mqtt.mirror_topics = ["shared/#", "lab/+/temp"]'


def test_one_long_value_does_not_push_the_source_column_out_for_the_others() -> None:
    loaded = load_settings(env={"WACTORZ_NODE": "n"})
    normal = rendered(loaded.settings, loaded.sources)
    long_url = "https://gateway.example/" + "v" * 36  # shown whole, but longer than the column
    changed = loaded.settings.with_overrides({"llm.model": "m" * 5000, "llm.base_url": long_url})
    lines = rendered(changed, loaded.sources)
    assert lines["llm.base_url"] == f'llm.base_url = "{long_url}"  # default'
    assert lines["llm.model"].endswith('…" (5000 characters)  # default')
    for key, line in lines.items():
        if key not in ("llm.model", "llm.base_url"):
            assert line == normal[key]
    assert len(aligned_columns(normal.values())) == 1


def test_render_shows_a_long_source_by_its_end() -> None:
    source = "/deep" * 100 + "/site.yaml"
    line = rendered(Settings(node="n"), {"node": source})["node"]
    shown = line.split("  # ", 1)[1]
    assert shown == "…" + source[-119:]
    assert shown.endswith("/deep/site.yaml")


def test_rendering_huge_values_is_quick_and_small() -> None:
    huge = 2_000_000
    settings = Settings(
        llm=LLMConfig(model="a" * huge, base_url="https://" + "b" * huge),
        mqtt=MQTTConfig(mirror_topics=["d" * 60_000] * 100),
        sandbox=SandboxConfig(root="r" * huge),
    )
    sources = {".".join(key): "x" * huge for key in field_keys()}
    lines = render_settings(settings, sources)
    # Each line is bounded (a cut value, a cut source), whatever the values hold.
    assert max(len(line) for line in lines) < 250
    assert sum(len(line) + 1 for line in lines) < 200 * len(lines)


# --- the process-wide settings ----------------------------------------------------------------


def test_get_settings_loads_once_from_file_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "wactorz.yaml", "node: from_file\n")
    monkeypatch.setenv("WACTORZ_MQTT__PORT", "1884")
    first = get_settings()
    assert first.node == "from_file"
    assert first.mqtt.port == 1884
    monkeypatch.setenv("WACTORZ_MQTT__PORT", "1999")
    assert get_settings() is first


def test_reset_settings_makes_the_next_call_load_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    first = get_settings()
    monkeypatch.setenv("WACTORZ_NODE", "reloaded")
    reset_settings()
    second = get_settings()
    assert second is not first
    assert second.node == "reloaded"


def test_get_settings_raises_config_error_and_retries_next_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WACTORZ_MQTT__QOS", "7")
    with pytest.raises(ConfigError, match=r"mqtt\.qos"):
        get_settings()
    monkeypatch.setenv("WACTORZ_MQTT__QOS", "0")
    assert get_settings().mqtt.qos == 0


def test_configure_installs_the_given_settings() -> None:
    mine = Settings(node="embedded")
    configure(mine)
    assert get_settings() is mine


def test_override_settings_changes_keys_for_the_block_and_restores_after() -> None:
    before = get_settings()
    with override_settings({"mqtt.enabled": True, "mqtt.port": "1884"}) as inside:
        assert get_settings() is inside
        assert inside.mqtt.enabled is True
        assert inside.mqtt.port == 1884
        assert inside.node == before.node
    assert get_settings() is before


def test_override_settings_restores_after_an_exception_and_accepts_whole_settings() -> None:
    before = get_settings()
    replacement = Settings(node="other")

    def fail_inside_the_block() -> None:
        with override_settings(replacement):
            assert get_settings() is replacement
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside_the_block()
    assert get_settings() is before


def test_override_settings_validates_its_changes() -> None:
    with pytest.raises(ConfigError, match=r"mqtt\.port: 0 from override is not valid"):
        override_settings({"mqtt.port": 0}).__enter__()


def test_with_overrides_keeps_secrets_and_other_values() -> None:
    base = Settings(node="n", llm=LLMConfig(api_key="sk-keep"))
    changed = base.with_overrides({"llm.model": "claude-opus-4-1"})
    assert changed.llm.api_key == Secret("sk-keep")
    assert changed.llm.model == "claude-opus-4-1"
    assert changed.node == "n"


# --- the documented file at the repository root -----------------------------------------------


def test_repository_wactorz_yaml_yields_exactly_the_defaults() -> None:
    assert load_settings(REPO_CONFIG, env={}).settings == Settings()


def test_repository_wactorz_yaml_documents_every_key() -> None:
    text = REPO_CONFIG.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    written = {
        f"{section}.{key}" if isinstance(values, dict) else section
        for section, values in data.items()
        for key in (values if isinstance(values, dict) else [None])
    }
    every_key = set(load_settings(env={}).sources)
    # The node default depends on the machine, so it can only be shown commented out.
    assert every_key - written == {"node"}
    assert "\n# node: " in text
    assert written <= every_key


def test_module_docstring_documents_how_to_replace_the_settings() -> None:
    doc = config.__doc__ or ""
    for name in ("get_settings", "configure", "reset_settings", "override_settings"):
        assert name in doc


# ---- the LLM agent's settings -------------------------------------------------------------------


def test_llm_prices_start_from_the_defaults_and_entries_add_to_or_replace_them(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path / "c.yaml",
        "llm:\n  prices:\n    my-model: {input: 2, output: 8}\n"
        "    claude-haiku-4-5: {input: 0.5, output: 2, cache_write: 0.6, cache_read: 0.05}\n",
    )
    prices = load_settings(path, env={}).settings.llm.prices
    assert prices["claude-sonnet-4-5"] == ModelPrice(3.0, 15.0, 3.75, 0.30)
    assert prices["claude-haiku-4-5"] == ModelPrice(0.5, 2.0, 0.6, 0.05)
    assert prices["my-model"] == ModelPrice(2.0, 8.0, 2.5, 0.2)  # cache prices as Anthropic's
    assert prices["my-model"].cost(1_000_000, 0, 0, 0) == 2.0


def test_a_negative_price_names_its_key() -> None:
    message = load_error(
        env={"WACTORZ_LLM__PRICES__X__INPUT": "-1", "WACTORZ_LLM__PRICES__X__OUTPUT": "1"}
    )
    assert "llm.prices" in message and "per million tokens" in message


def test_llm_tools_are_actor_names_from_a_list_or_a_comma_separated_string() -> None:
    assert load_settings(env={}).settings.llm.tools == ("io", "code", "main")
    loaded = load_settings(env={"WACTORZ_LLM__TOOLS": "io, weather"})
    assert loaded.settings.llm.tools == ("io", "weather")
    assert load_settings(env={"WACTORZ_LLM__TOOLS": ""}).settings.llm.tools == ()
    assert "actor names" in load_error(env={"WACTORZ_LLM__TOOLS": "io,no spaces"})


def test_the_history_file_is_under_the_data_dir_unless_given() -> None:
    settings = load_settings(env={"WACTORZ_DATA_DIR": "/srv/w"}).settings
    assert settings.llm.history_file(settings.data_dir) == Path("/srv/w/history.sqlite3")
    given = load_settings(env={"WACTORZ_LLM__HISTORY_PATH": "/x/h.db"}).settings
    assert given.llm.history_file(given.data_dir) == Path("/x/h.db")


# ---- nodes ----------------------------------------------------------------------------------


def test_node_settings_name_kinds_by_import_path_and_allow_only_those_kinds(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(
        "mqtt:\n"
        "  kinds: {echo: 'myapp.actors:Echo'}\n"
        "  spawn_allow: [echo]\n"
        "  remote_allow: [echo, 'sensor-*']\n"
    )
    env = {"WACTORZ_MQTT__KINDS__LEDGER": "myapp.books:Ledger.Inner"}
    mqtt = load_settings(path, env=env).settings.mqtt
    assert mqtt.kinds == {"echo": "myapp.actors:Echo", "ledger": "myapp.books:Ledger.Inner"}
    assert (mqtt.spawn_allow, mqtt.remote_allow) == (("echo",), ("echo", "sensor-*"))
    assert (mqtt.broker, mqtt.heartbeat_s, mqtt.node_down_after_s) == ("external", 2.0, 6.0)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WACTORZ_MQTT__SPAWN_ALLOW": "echo"}, "kinds named in mqtt.kinds (unknown: echo)"),
        ({"WACTORZ_MQTT__KINDS__ECHO": "not a path"}, "written 'package.module:Class'"),
        ({"WACTORZ_MQTT__NODE_DOWN_AFTER_S": "1"}, "larger than heartbeat_s (2.0)"),
        ({"WACTORZ_MQTT__BROKER": "inside"}, "one of external, embedded"),
        ({"WACTORZ_MQTT__REMOTE_ALLOW": "a b"}, "shell-style patterns"),
    ],
)
def test_node_settings_that_cannot_work_are_refused_saying_what_would(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(None, env=env)
