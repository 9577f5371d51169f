"""The ``wactorz`` command line: run the service, chat with it, try the sandbox, show the
configuration, print the version.

``python -m wactorz`` and the ``wactorz`` script both land in `main`. Flags that change
settings are passed to `wactorz.config.load_settings` as overrides, each recorded with
the flag's name as its source, so that ``wactorz config`` shows where every value came
from and a bad value is reported against the flag that gave it.

Exit statuses: 0 after a clean run (stopped by SIGINT or SIGTERM) or command; 1 when the
service failed to start or its supervisor gave up; 2 for a usage or configuration error;
130 when interrupted by SIGINT before the service could catch it itself; 141 when the
reader of the output went away (``wactorz config | head -1``). ``wactorz chat`` adds its
own (`wactorz.interfaces.web.chat_client`): 1 when its last request ended in an error, 3
when no service could be reached, and 130 when Ctrl-C ended it or cut its last reply short;
``wactorz nodes`` exits with 3 when the broker cannot be reached.

SIGINT and SIGTERM end the process cleanly whenever they come once this module runs: `main`
takes them over first thing, and under ``python -m wactorz`` the top of this module already
does. Until the service is up, SIGINT prints ``wactorz: interrupted`` and exits with 130, and
SIGTERM prints ``wactorz: stopped (SIGTERM)`` and exits with 0: SIGTERM is how a service
manager asks for a stop, and a stop before anything started is as clean as one after. Once
the service is up it handles both itself (exit status 0); a signal after it stopped, or after
a command finished, changes nothing. Before this module runs, while the interpreter starts and
imports the `wactorz` package (some 40 ms), a signal still gets Python's default treatment:
SIGTERM kills the process, SIGINT raises KeyboardInterrupt with a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Final, NoReturn, final

import wactorz

if TYPE_CHECKING:
    from wactorz.config import LoadedSettings

__all__ = ["main"]

PROG: Final = "wactorz"
EXIT_OK: Final = 0
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130
EXIT_BROKEN_PIPE: Final = 141
"""128 + SIGPIPE: what a Unix tool whose output reader went away exits with."""


@final
class _StopSignals:
    """Makes SIGINT and SIGTERM end the process cleanly, whatever moment they come at.

    From `take_over` until `stand_down`, either signal writes its one line on stderr and ends
    the process at once (`os._exit`), with 130 for SIGINT and 0 for SIGTERM. Ending at once,
    rather than raising an exception, is what guarantees no traceback whatever the process was
    doing: importing a module, starting Trio, running a finalizer. Nothing needs cleaning up
    then; no actor has started.

    `stand_down` is for when the service is up: it owns the signals from then on
    (`wactorz.service.Service.run` installs Trio's receivers over these handlers), and a signal
    that reaches these handlers again, once it has stopped, is ignored: the exit status is the
    service's. `finish` is for when the command is done: the signals are ignored outright, since
    Python's shutdown puts its own handlers back to the default, which would let a late SIGTERM
    kill the process on its way out.

    Plain class rather than attrs: it is set up before this module imports anything heavy.
    """

    __slots__ = ("_ending", "_standing_down")

    def __init__(self) -> None:
        self._standing_down = False
        self._ending = False

    def take_over(self) -> None:
        """Handle SIGINT and SIGTERM here from now on (only the main thread can; elsewhere, not).

        Even a signal the parent set to be ignored (a background job of a script starts with
        SIGINT ignored) is taken over: the service catches both signals whatever the parent
        set, and a start-up that ignored what the service then obeys would stop or not
        depending on timing.
        """
        self._standing_down = self._ending = False
        self._set_handlers(self._on_signal)

    def stand_down(self) -> None:
        """The service is up and has the signals: a signal that comes back here is ignored."""
        self._standing_down = True

    def finish(self) -> None:
        """The command is done and the process about to exit: ignore stop signals from now on."""
        self._standing_down = True
        self._set_handlers(signal.SIG_IGN)

    @staticmethod
    def _set_handlers(handler: Callable[[int, FrameType | None], None] | signal.Handlers) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._standing_down or self._ending:
            return
        self._ending = True  # a second signal while this one ends the process adds nothing
        if signum == signal.SIGINT:
            status, message = EXIT_INTERRUPTED, "interrupted"
        else:
            status, message = EXIT_OK, f"stopped ({signal.Signals(signum).name})"
        # os.write to fd 2, not print: the signal may have come in the middle of a print.
        with contextlib.suppress(OSError):
            os.write(2, f"{PROG}: {message}\n".encode())
        os._exit(status)


@final
class _WhenServiceUp:
    """What `wactorz.service.Service.run` reports to once it is up and handles the signals."""

    __slots__ = ("_stop_signals",)

    def __init__(self, stop_signals: _StopSignals) -> None:
        self._stop_signals = stop_signals

    def started(self, value: object = None) -> None:
        self._stop_signals.stand_down()


_stop_signals: Final = _StopSignals()
if __name__ == "__main__":
    # Before the imports below, so that a signal during them is handled too.
    _stop_signals.take_over()

import argparse  # noqa: E402

import attrs  # noqa: E402

_COMMANDS: Final = ("run", "chat", "config", "nodes", "sandbox", "version")

_DESCRIPTION: Final = """\
A Trio-native actor runtime. Without a command, runs the service: an actor system
whose supervised actors (the web front door, the health monitor, and the MQTT bridge
when it is enabled) run until Ctrl-C or SIGTERM. It prints the URL to open. Services on
the same MQTT broker are the nodes of one actor system (see 'wactorz nodes').

Settings come from defaults, then a YAML file (--config, else $WACTORZ_CONFIG, else
./wactorz.yaml if present), then WACTORZ_* environment variables (WACTORZ_MQTT__PORT=1884
sets mqtt.port), then the flags below. 'wactorz config' shows the result."""

_EPILOG: Final = """\
examples:
  wactorz                                   run with the defaults (no broker, no API key)
  wactorz run --node kitchen --mqtt --mqtt-host broker.lan
  wactorz run --node a --broker embedded    two nodes on one machine, nothing to install:
  wactorz run --node b --broker embedded    the first starts a broker, the second uses it
  wactorz nodes                             every node on the broker and what it runs
  wactorz run --web-port 0                  the web interface on any free port
  wactorz --log-format json run             log one JSON object per line
  echo 'what runs?' | wactorz chat          ask the running service, print the reply
  wactorz config                            show every setting and where it came from
  wactorz sandbox doctor                    which isolation layers code runs get here, checked live
  wactorz sandbox run --python -c 'print(1)'   run one snippet in the sandbox
  WACTORZ_MONITOR__INTERVAL_S=1 wactorz config --mqtt-port 1884
  wactorz version

exit status: 0 on a clean stop, 1 if the service failed, 2 for a usage or config error."""


_CHAT_DESCRIPTION: Final = """\
Chat with a running wactorz service over its WebSocket. Each line is sent to the service's
main actor: '/command ...' runs a slash command, '@name message' talks to one actor, and
anything else goes to the conversation's agent. Replies are printed as they stream in.
At a terminal it prompts (with line editing and history); from a pipe it sends each line,
prints the replies, and exits at the end of the input.

Ctrl-C while a reply streams cancels it; Ctrl-C again, or at the prompt, quits. On the
service's own machine, as the user who runs it, no flag is needed: the service's runtime
file says where it listens and holds its token."""

_CHAT_EPILOG: Final = """\
examples:
  wactorz chat                                  talk to the service on this machine
  echo '/status' | wactorz chat                 run one command from a script
  wactorz chat --once 'what runs?'              the same, without a pipe
  wactorz chat --session notes                  resume the conversation 'notes'
  WACTORZ_WEB__TOKEN=... wactorz chat --url http://host:8765/

exit status: 0 when the last request was answered, 1 when it ended in an error,
2 for a usage or config error, 3 when no service could be reached (or it refused the
token, or the connection was lost), 130 when Ctrl-C quit or cut the last reply short."""


@final
@attrs.frozen
class _Override:
    """A command-line flag that sets one configuration key."""

    flag: str
    key: str
    metavar: str
    help: str


_OVERRIDES: Final = (
    _Override("--node", "node", "NAME", "name of this node in actor ids and topics"),
    _Override("--mqtt-host", "mqtt.host", "HOST", "MQTT broker host"),
    _Override("--mqtt-port", "mqtt.port", "PORT", "MQTT broker port"),
    _Override("--mqtt-prefix", "mqtt.topic_prefix", "PREFIX", "prefix of every MQTT topic"),
    _Override(
        "--broker",
        "mqtt.broker",
        "external|embedded",
        "embedded: start an MQTT broker here (amqtt) unless one listens on the port, and "
        "connect to it",
    ),
    _Override("--web-host", "web.host", "HOST", "address the web interface listens on"),
    _Override("--web-port", "web.port", "PORT", "port of the web interface (0: any free)"),
    _Override(
        "--monitor-interval", "monitor.interval_s", "SECONDS", "seconds between health samples"
    ),
)

_SWITCHES: Final = (
    ("mqtt", "mqtt.enabled", "connect to the MQTT broker", "do not connect to an MQTT broker"),
    ("web", "web.enabled", "serve the web interface", "do not serve the web interface"),
    ("monitor", "monitor.enabled", "run the health monitor", "do not run the health monitor"),
    (
        "sandbox",
        "sandbox.enabled",
        "run the code and file agents (sandboxed)",
        "run no agent that runs code or touches files",
    ),
)

# The options that take a value, for telling the command apart from option values.
_VALUE_OPTIONS: Final = frozenset(
    {"--config", "--log-level", "--log-format", *(option.flag for option in _OVERRIDES)}
)


def _add_global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Give ``parser`` the options accepted before and after the command.

    On the command parsers their default is SUPPRESS, so that an option given before the
    command is not reset by the command parser's own default.
    """
    default = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("global options")
    group.add_argument(
        "--config",
        metavar="PATH",
        default=default,
        help="YAML configuration file (default: $WACTORZ_CONFIG, else ./wactorz.yaml if present)",
    )
    group.add_argument(
        "--log-level",
        metavar="{DEBUG,INFO,WARNING,ERROR}",
        default=default,
        help="how much to log (default: the log_level setting, INFO)",
    )
    group.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=default,
        help="text for people, json for log collectors (default: the log_format setting, text)",
    )


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (each overrides the file and the environment)")
    for option in _OVERRIDES:
        group.add_argument(
            option.flag,
            dest=option.key,
            metavar=option.metavar,
            default=argparse.SUPPRESS,
            help=f"{option.help} [{option.key}]",
        )
    for name, key, on, off in _SWITCHES:
        switch = group.add_mutually_exclusive_group()
        for flag, value, text in (
            (f"--{name}", True, f"{on} [{key}]"),
            (f"--no-{name}", False, off),
        ):
            switch.add_argument(
                flag,
                dest=key,
                action="store_const",
                const=value,
                default=argparse.SUPPRESS,
                help=text,
            )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``wactorz`` command."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=PROG, description=_DESCRIPTION, epilog=_EPILOG, formatter_class=formatter
    )
    parser.add_argument(
        "--version", action="version", version=_version_line(), help="print the version and exit"
    )
    _add_global_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run the service until Ctrl-C or SIGTERM (the default)",
        description="Run the service until Ctrl-C or SIGTERM, then stop every actor cleanly.",
        epilog="example: wactorz run --node kitchen --no-monitor",
        formatter_class=formatter,
    )
    config = commands.add_parser(
        "config",
        help="print the effective configuration and where each value came from",
        description=(
            "Print every setting as 'key = value  # source', secrets masked. The settings "
            "flags of 'run' are accepted too, to see what a run with them would use."
        ),
        epilog="example: WACTORZ_MQTT__PORT=1884 wactorz config --node kitchen",
        formatter_class=formatter,
    )
    chat = commands.add_parser(
        "chat",
        help="chat with the running service from the terminal",
        description=_CHAT_DESCRIPTION,
        epilog=_CHAT_EPILOG,
        formatter_class=formatter,
    )
    chat.add_argument(
        "--url",
        metavar="URL",
        help="the service's address, e.g. the banner's http://127.0.0.1:8765/?token=... "
        "(default: the newest running service's runtime file, else web.host and web.port)",
    )
    chat.add_argument(
        "--token",
        metavar="TOKEN",
        help="the service's token (default: the one in --url, the runtime file's, else "
        "web.token; prefer WACTORZ_WEB__TOKEN, which other users cannot see in ps)",
    )
    chat.add_argument(
        "--session",
        metavar="NAME",
        help="resume conversation NAME (1-128 letters, digits, '_', '.', '-'); default: a new one",
    )
    chat.add_argument(
        "--once", metavar="TEXT", help="send TEXT, print the reply and exit (for scripts)"
    )
    nodes = commands.add_parser(
        "nodes",
        help="list the nodes on the MQTT broker and the actors each runs",
        description=(
            "Connect to the MQTT broker of the settings (mqtt.host, mqtt.port, credentials, "
            "TLS), read what every node left there (status, actors, desired set), listen "
            "--wait seconds for heartbeats, and print the nodes. No node needs to run here. "
            "Exit status 3 if the broker cannot be reached."
        ),
        epilog="example: wactorz nodes --mqtt-host broker.lan --json",
        formatter_class=formatter,
    )
    nodes.add_argument(
        "--wait", type=float, default=2.5, metavar="S", help="seconds to listen (default 2.5)"
    )
    nodes.add_argument("--json", action="store_true", help="print one JSON object")
    nodes.add_argument(
        "--forget",
        metavar="NODE",
        help="clear what NODE left on the broker (status, actors, desired set): for a node "
        "retired for good, once it is stopped",
    )
    version = commands.add_parser(
        "version", help="print the version", description="Print the version."
    )
    sandbox = _add_sandbox_commands(commands, formatter)
    for command in (run, config, nodes):
        _add_overrides(command)
    for command in (run, chat, config, nodes, version, *sandbox):
        _add_global_options(command, suppress=True)
    return parser


def _add_sandbox_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    formatter: type[argparse.HelpFormatter],
) -> tuple[argparse.ArgumentParser, ...]:
    """``wactorz sandbox doctor`` and ``wactorz sandbox run``: check a machine's sandbox."""
    sandbox = commands.add_parser(
        "sandbox",
        help="check the sandbox code runs get on this machine, or run one snippet in it",
        description=(
            "Check the sandbox the code agents run snippets in, with the sandbox settings "
            "(sandbox.* in the file and the environment; sandbox.enabled is not needed)."
        ),
        formatter_class=formatter,
    )
    actions = sandbox.add_subparsers(dest="sandbox_command", metavar="ACTION", required=True)
    doctor = actions.add_parser(
        "doctor",
        help="list the isolation layers, why each is on or off, and check them live",
        description=(
            "List every isolation layer, on or off and why, then start one run that tries "
            "what each active layer forbids. Exit status 1 if a layer sandbox.require names "
            "is missing or a live check failed."
        ),
    )
    doctor.add_argument("--json", action="store_true", help="print the report as one JSON object")
    run = actions.add_parser(
        "run",
        help="run one snippet through a real CodeAgent and print its output",
        description=(
            "Run one snippet through a CodeAgent in an actor system, as the service would, "
            "and print its output as it comes (or, with --json, the whole result). The exit "
            "status is the snippet's, 124 if it timed out, 137 if something else killed it."
        ),
        epilog="example: wactorz sandbox run --sh -c 'id; ls /root'",
        formatter_class=formatter,
    )
    language = run.add_mutually_exclusive_group(required=True)
    language.add_argument("--python", dest="language", action="store_const", const="python")
    language.add_argument("--sh", dest="language", action="store_const", const="sh")
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("-c", dest="code", metavar="CODE", help="the program text")
    source.add_argument("file", nargs="?", metavar="FILE", help="a file holding the program")
    run.add_argument("--timeout", type=float, metavar="S", help="wall-clock limit in seconds")
    run.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return sandbox, doctor, run


def _with_command(argv: Sequence[str]) -> list[str]:
    """``argv``, with ``run`` put in front if it names no command (and asks for no help)."""
    args = list(argv)
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("-h", "--help", "--version") or arg in _COMMANDS:
            return args
        elif arg in _VALUE_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            return args  # an unknown command: let argparse say so
    return ["run", *args]


def _overrides(args: argparse.Namespace) -> tuple[dict[str, object], dict[str, str]]:
    """The settings the flags in ``args`` give, and the flag each came from."""
    given = vars(args)
    overrides: dict[str, object] = {}
    sources: dict[str, str] = {}
    for option in _OVERRIDES:
        if option.key in given:
            overrides[option.key] = given[option.key]
            sources[option.key] = option.flag
    for name, key, _, _ in _SWITCHES:
        if key in given:
            overrides[key] = given[key]
            sources[key] = f"--{name}" if given[key] else f"--no-{name}"
    for flag, key in (("--log-level", "log_level"), ("--log-format", "log_format")):
        if given.get(key) is not None:
            overrides[key] = given[key]
            sources[key] = flag
    return overrides, sources


def _load(args: argparse.Namespace) -> LoadedSettings:
    from wactorz.config import load_settings

    overrides, sources = _overrides(args)
    return load_settings(args.config, overrides=overrides, override_sources=sources)


def _version_line() -> str:
    return f"{PROG} {wactorz.__version__}"


def _command_version(args: argparse.Namespace) -> int:
    import platform

    import trio

    print(f"{_version_line()} (Python {platform.python_version()}, trio {trio.__version__})")
    return 0


def _command_config(args: argparse.Namespace) -> int:
    loaded = _load(args)
    where = str(loaded.config_path) if loaded.config_path is not None else "none (defaults)"
    print(f"# config file: {where}")
    for line in loaded.render():
        print(line)
    return 0


def _command_nodes(args: argparse.Namespace) -> int:
    settings = _load(args).settings
    if args.wait <= 0:
        _fail(f"--wait takes a number of seconds greater than 0, not {args.wait}")
    from wactorz.interfaces.mqtt.nodes_command import run_nodes_command
    from wactorz.logs import configure_logging

    configure_logging("ERROR" if settings.log_level != "DEBUG" else "DEBUG", settings.log_format)
    return run_nodes_command(settings.mqtt, args.wait, args.json, args.forget)


def _command_run(args: argparse.Namespace) -> int:
    loaded = _load(args)
    if loaded.settings.mqtt.broker == "embedded":
        from wactorz.interfaces.mqtt.embedded import amqtt_missing

        missing = amqtt_missing()
        if missing is not None:
            _fail(missing)
    import trio

    from wactorz.config import configure
    from wactorz.logs import configure_logging
    from wactorz.service import Service

    settings = loaded.settings
    configure_logging(settings.log_level, settings.log_format)
    configure(settings)
    service = Service(loaded)
    return trio.run(functools.partial(service.run, task_status=_WhenServiceUp(_stop_signals)))


def _command_chat(args: argparse.Namespace) -> int:
    loaded = _load(args)
    import trio

    from wactorz.interfaces.web import chat_client

    if args.session is not None and not chat_client.SESSION_PATTERN.fullmatch(args.session):
        _fail(f"--session takes 1 to 128 letters, digits, '_', '.' or '-', not {args.session!r}")
    try:
        target = chat_client.find_service(url=args.url, token=args.token, web=loaded.settings.web)
    except ValueError as exc:
        _fail(str(exc))
    interactive = args.once is None and sys.stdin.isatty() and sys.stdout.isatty()
    lines: chat_client.LineSource
    if args.once is not None:
        lines = chat_client.OnceLines(args.once)
    elif interactive:
        lines = chat_client.PromptLines()
    else:
        lines = chat_client.PipeLines(sys.stdin.fileno())
    run = functools.partial(
        chat_client.run_chat,
        target,
        lines,
        session=args.session,
        greet=interactive,
        on_signals_ready=_stop_signals.stand_down,
    )
    with _terminal_kept(interactive):
        try:
            return trio.run(run)
        except chat_client.ServiceNotFound as exc:
            print(f"{PROG} chat: {exc}", file=sys.stderr)
            return chat_client.EXIT_UNREACHABLE


@contextlib.contextmanager
def _terminal_kept(interactive: bool) -> Iterator[None]:
    """Put the terminal's settings back afterwards: a prompt left waiting when the chat
    ends (Ctrl-C at the prompt) would otherwise leave it in line-editing mode."""
    if not interactive:
        yield
        return
    import termios

    saved = termios.tcgetattr(sys.stdin.fileno())
    try:
        yield
    finally:
        with contextlib.suppress(termios.error):
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)


def _command_sandbox(args: argparse.Namespace) -> int:
    import trio

    from wactorz.logs import configure_logging

    settings = _load(args).settings
    configure_logging(settings.log_level, settings.log_format)
    if args.sandbox_command == "doctor":
        from wactorz.agents.sandbox_commands import doctor

        return trio.run(doctor, settings.sandbox, args.json)
    from wactorz.agents.sandbox_commands import run_snippet

    if args.code is not None:
        code = args.code
    else:
        try:
            with open(args.file, encoding="utf-8") as file:
                code = file.read()
        except (OSError, UnicodeDecodeError) as exc:
            _fail(f"cannot read {args.file}: {exc}")
    return trio.run(run_snippet, settings.sandbox, args.language, code, args.timeout, args.json)


_COMMAND_FUNCTIONS: Final = {
    "run": _command_run,
    "chat": _command_chat,
    "config": _command_config,
    "nodes": _command_nodes,
    "sandbox": _command_sandbox,
    "version": _command_version,
}


def _fail(message: str) -> NoReturn:
    print(f"{PROG}: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``wactorz`` command on ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    Configuration errors are printed as one line on stderr (exit status 2), never as a
    traceback; so is an interrupt that arrives before the service catches it (130). Output
    whose reader went away (``wactorz config | head -1``) ends the command quietly (141).

    Without ``argv``, `main` is running the process's own command line: it makes SIGINT and
    SIGTERM end the process cleanly as the module docstring says, and leaves them ignored when
    it returns, the process being about to exit. Given an ``argv`` (as embedding code and
    tests do) it leaves the signal handlers alone, and a KeyboardInterrupt raised while it runs
    is reported as an interrupt.
    """
    if argv is None:
        _stop_signals.take_over()
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    finally:
        if argv is None:
            _stop_signals.finish()


def _main(argv: Sequence[str]) -> int:
    from wactorz.config import ConfigError

    status = EXIT_INTERRUPTED
    try:
        try:
            args = build_parser().parse_args(_with_command(argv))
            status = _COMMAND_FUNCTIONS[args.command or "run"](args)
        except ConfigError as exc:
            _fail(f"config error: {exc}")
        finally:
            # A reader that went away shows here, rather than as noise in Python's flush at exit.
            sys.stdout.flush()
    except* KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
    return status


def _discard_stdout() -> None:
    """Point stdout at the null device: its reader is gone, and Python flushes it at exit."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
