"""The public API: one screen of names at `wactorz`, each at home in one `wactorz.core` module.

In the manner of Trio's own ``test_exports``: every name a public module exports exists,
the package exports exactly its API (the very objects its home modules hold), nothing
private or internal leaks, the seed's import paths keep working, and classes that are not
meant to be subclassed are marked final.
"""

from __future__ import annotations

import ast
import enum
import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest

import wactorz
from wactorz.core.actor import Actor


def _public_modules() -> list[str]:
    """`wactorz` and every submodule with no private part in its dotted name."""
    found = ["wactorz"]
    for info in pkgutil.walk_packages(wactorz.__path__, "wactorz."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            found.append(info.name)
    return sorted(found)


PUBLIC_MODULES = _public_modules()
CORE_MODULES = [name for name in PUBLIC_MODULES if name.startswith("wactorz.core.")]

HOME_OF: dict[str, str] = wactorz._HOME_OF
"""The package's `__all__`: it has none, so that pdoc documents each name once, at home."""
API = sorted(HOME_OF)

HOME_ONLY = {
    "DEFAULT_MAILBOX_SIZE": "the default of `Actor.mailbox_size`, documented beside it",
    "ReplySlot": "the read-only type of `Envelope.reply`, documented beside it",
    "MAX_TOPIC_BYTES": "a limit `check_topic` enforces for you",
    "MAX_NODE_LENGTH": "part of the WID format's definition",
    "MAX_SEQ": "part of the WID format's definition",
    "WID_FORMAT": "part of the WID format's definition",
    "WIDGenerator": "for tests that drive ids with a fake clock; code wants `new_wid`",
    "sanitize_node": "`ActorSystem` and `new_wid` apply it; WID errors point at it",
    "default_node": "what `ActorSystem()` and the settings name a node by default",
    "is_node_name": "the settings' check of a node name",
    "NodeStatus": "the type of `NodeInfo.status`, documented beside it",
    "RemoteActor": "the stand-in a `RemoteRouter` makes: for routers, not for programs",
    "RemoteRouter": "what a link between nodes implements (the MQTT bridge): not for programs",
    "parse_address": "how the system reads `name@node`; programs write addresses, not parse them",
    "format_address": "`RemoteActorInfo.address` spells one; for routers and error messages",
}
"""Public names of core modules that stay off the one screen, each for a reason."""

INTERNALS = {
    "Mail": "mailbox",
    "Mailbox": "mailbox",
    "MailboxStatistics": "mailbox",
    "Reply": "mailbox",
    "Turns": "turns",
    "RunContext": "turns",
    "run_context": "turns",
    "TURN": "turns",
    "TURN_SECONDS": "turns",
    "CLOCK_EVERY": "turns",
    "EventBus": "events",
    "SubscriptionTable": "topics",
    "filter_problem": "topics",
    "text_problem": "topics",
    "topic_problem": "topics",
    "Runnable": "supervisor",
    "Plan": "strategy",
    "plan_exit": "strategy",
    "ChildView": "strategy",
    "Rules": "strategy",
    "restart_delay": "strategy",
    "to_restart_type": "strategy",
    "brief_repr": "errors",
    "describe_error": "errors",
    "root_cause": "errors",
}
"""What only the runtime (and wactorz's own agents and interfaces) uses, by core module."""


def _exports(module_name: str) -> list[str]:
    if module_name == "wactorz":
        return API
    return list(getattr(importlib.import_module(module_name), "__all__", ()))


# ---- every public module -------------------------------------------------------------------


@pytest.mark.parametrize("module_name", [m for m in PUBLIC_MODULES if m != "wactorz"])
def test_all_names_only_public_things_that_exist(module_name: str) -> None:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        public = {
            name
            for name in dir(module)
            if not name.startswith("_") and not isinstance(getattr(module, name), types.ModuleType)
        }
        assert not public, f"{module_name} has no __all__, so it must not define public names"
        return
    assert all(isinstance(name, str) for name in names)
    assert len(set(names)) == len(names), f"{module_name}.__all__ repeats a name"
    assert not [name for name in names if name.startswith("_")]
    missing = [name for name in names if not hasattr(module, name)]
    assert not missing, f"{module_name}.__all__ names what it does not have: {missing}"


# ---- the package: one screen ---------------------------------------------------------------


def test_the_package_shows_exactly_its_api() -> None:
    public = {name for name in dir(wactorz) if not name.startswith("_")}
    submodules = {name for name in public if sys.modules.get(f"wactorz.{name}") is not None}
    assert public - submodules == set(API)
    for name in submodules:
        assert getattr(wactorz, name) is sys.modules[f"wactorz.{name}"]


def test_type_checkers_see_the_same_api() -> None:
    """The ``if TYPE_CHECKING:`` imports, as mypy reads them, match the runtime table."""
    tree = ast.parse(Path(wactorz.__file__).read_text())
    (block,) = (
        node
        for node in tree.body
        if isinstance(node, ast.If)
        and isinstance(node.test, ast.Name | ast.Attribute)
        and ast.unparse(node.test).split(".")[-1] == "TYPE_CHECKING"
    )
    seen: dict[str, str] = {}
    for node in block.body:
        if isinstance(node, ast.AnnAssign):  # `__version__: str`, which `__getattr__` reads
            assert ast.unparse(node.target).startswith("__")
            continue
        assert isinstance(node, ast.ImportFrom) and node.module is not None
        for alias in node.names:
            assert alias.asname == alias.name, f"import {alias.name} as {alias.name}: a re-export"
            seen[alias.name] = node.module
    assert seen == HOME_OF


@pytest.mark.parametrize("name", API)
def test_each_name_is_the_object_its_home_module_exports(name: str) -> None:
    home = importlib.import_module(HOME_OF[name])
    assert name in home.__all__
    value = getattr(wactorz, name)
    assert value is getattr(home, name)
    if isinstance(value, type | types.FunctionType):
        assert value.__module__ == home.__name__, "the home is where it is defined and documented"
    namespace: dict[str, object] = {}
    exec(f"from wactorz import {name}", namespace)
    assert namespace[name] is value


@pytest.mark.parametrize("module_name", CORE_MODULES)
def test_every_public_core_name_is_on_the_screen_or_stays_home_for_a_reason(
    module_name: str,
) -> None:
    module = importlib.import_module(module_name)
    for name in _exports(module_name):
        if name in HOME_ONLY:
            continue
        assert name in HOME_OF, f"{module_name}.{name}: re-export it from wactorz, or say why not"
        assert getattr(module, name) is getattr(wactorz, name)


def test_supervisor_is_one_class_at_both_of_its_paths() -> None:
    from wactorz.core import registry, supervisor

    assert wactorz.Supervisor is supervisor.Supervisor is registry.Supervisor
    assert HOME_OF["Supervisor"] == "wactorz.core.supervisor"


def test_importing_the_package_leaves_the_core_for_first_use() -> None:
    """``python -m wactorz`` imports the package before it can handle a Ctrl-C: keep it quick."""
    script = (
        "import sys, wactorz\n"
        "assert 'ActorSystem' in dir(wactorz)\n"
        "print(sorted(m for m in ('trio', 'attrs', 'wactorz.core') if m in sys.modules))\n"
        "wactorz.ActorSystem\n"
        "print('wactorz.core.registry' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.split("\n") == ["[]", "True", ""]


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'wactorz' has no attribute 'Actr'"):
        wactorz.Actr  # noqa: B018


def test_the_docstring_lists_the_api_and_every_submodule() -> None:
    doc = wactorz.__doc__ or ""
    assert not [name for name in API if f"`{name}`" not in doc]
    assert not [home for home in set(HOME_OF.values()) if f"`{home}`" not in doc]
    submodules = {
        f"wactorz.{info.name}"
        for info in pkgutil.iter_modules(wactorz.__path__)
        if not info.name.startswith("_")
    }
    mentioned = set(re.findall(r"`(wactorz\.[a-z][a-z_]*)`", doc))
    assert mentioned == submodules


# ---- nothing private or internal leaks -----------------------------------------------------


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_no_private_name_is_exported(module_name: str) -> None:
    assert not [name for name in _exports(module_name) if name.startswith("_")]


@pytest.mark.parametrize("name", sorted(INTERNALS))
def test_internals_are_not_exported_but_the_runtime_still_has_them(name: str) -> None:
    assert name not in dir(wactorz)
    assert not hasattr(wactorz, name)
    for module_name in CORE_MODULES:
        assert name not in _exports(module_name), f"{module_name}.__all__ exports {name}"
    assert hasattr(importlib.import_module(f"wactorz.core.{INTERNALS[name]}"), name)


# ---- the seed's paths (its API reference) --------------------------------------------------

NOT_WRITTEN_YET = pytest.mark.xfail(
    raises=ImportError, strict=True, reason="named by the seed's API reference, not written yet"
)

SEED_PATHS = [
    "wactorz.core.actor:Actor",
    "wactorz.core.actor:Actor._process",
    "wactorz.core.actor:Actor.start",
    "wactorz.core.actor:Actor.stop",
    "wactorz.core.actor:Actor.send",
    "wactorz.core.registry:ActorSystem",
    "wactorz.core.registry:Supervisor",
    "wactorz.agents.monitor_agent:MonitorActor",
    "wactorz.config:Settings",
    "wactorz.config:get_settings",
    "wactorz.config:LLMConfig",
    "wactorz.config:MQTTConfig",
    "wactorz.agents.llm_agent:LLMAgent",
    "wactorz.agents.main_actor:MainActor",
    "wactorz.agents.io_agent:IOAgent",
    "wactorz.agents.code_agent:CodeAgent",
]


@pytest.mark.parametrize("path", SEED_PATHS)
def test_the_seed_paths_import(path: str) -> None:
    module_name, _, qualname = path.partition(":")
    value: object = importlib.import_module(module_name)
    for part in qualname.split("."):
        value = getattr(value, part)
    top = qualname.partition(".")[0]
    if top in HOME_OF:
        assert getattr(importlib.import_module(module_name), top) is getattr(wactorz, top)


def test_process_is_what_an_actor_must_implement() -> None:
    assert Actor.__abstractmethods__ == frozenset({"_process"})


async def test_the_seed_examples_run() -> None:
    from wactorz.core.registry import ActorSystem, Supervisor

    class WorkerActor(Actor):
        async def _process(self, message: dict[str, typing.Any]) -> object:
            return message

    system = ActorSystem()
    await system.start()
    try:
        sup = Supervisor(system, strategy="one_for_one", max_restarts=5, window_s=60)
        sup.add("worker", WorkerActor)
        await sup.start()
        assert await system.ask("worker", {"n": 1}) == {"n": 1}
    finally:
        await system.stop()


# ---- final classes -------------------------------------------------------------------------

MEANT_FOR_SUBCLASSING: dict[type, str] = {
    Actor: "the base class of every actor: implement `_process`, override the hooks",
}
"""Open on purpose. Besides these: exceptions (a family to catch by its base, and a user
may refine `MessageRejected` for their own refusals); `Actor`'s subclasses (an actor is
customised by overriding its hooks, as the tests do with the monitor); protocols (to be
implemented); enums with members, which Python already refuses to extend."""

NOT_FINAL_YET: set[str] = set()
"""Not meant for subclassing, but not marked yet: ``@typing.final`` is to be added."""


def _public_classes() -> dict[str, type]:
    found: dict[str, type] = {}
    for module_name in PUBLIC_MODULES:
        try:
            names = _exports(module_name)
            module = importlib.import_module(module_name)
        except ImportError:
            continue  # reported by test_all_names_only_public_things_that_exist
        for name in names:
            value = getattr(module, name, None)
            if isinstance(value, type):
                found.setdefault(f"{value.__module__}.{value.__qualname__}", value)
    return dict(sorted(found.items()))


def _open_on_purpose(cls: type) -> bool:
    return (
        cls in MEANT_FOR_SUBCLASSING
        or issubclass(cls, BaseException | Actor)
        or typing.Protocol in cls.__bases__
        or (issubclass(cls, enum.Enum) and len(cls) > 0)
        or inspect.isabstract(cls)
    )


@pytest.mark.parametrize(
    "cls",
    [
        pytest.param(
            cls,
            id=path,
            marks=[pytest.mark.xfail(strict=True, reason="to be marked @final")]
            if path in NOT_FINAL_YET
            else [],
        )
        for path, cls in _public_classes().items()
        if not _open_on_purpose(cls)
    ],
)
def test_classes_not_meant_for_subclassing_are_final(cls: type) -> None:
    assert getattr(cls, "__final__", False), f"mark {cls.__qualname__} with @typing.final"
