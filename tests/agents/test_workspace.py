"""Workspace: every operation, every refusal by its rule, traversal, symlink races, atomicity.

All on the real filesystem under pytest's ``tmp_path``: a ``root`` for the workspace and,
beside it, an ``outside`` directory whose contents and times must never change.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import itertools
import json
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from wactorz.agents.workspace import (
    MAX_DEPTH,
    NAME_MAX,
    PATH_MAX,
    Entry,
    EntryKind,
    FileContent,
    Listing,
    Rule,
    Workspace,
    WorkspaceError,
)
from wactorz.core.errors import WactorzError, brief_repr

RESOLVERS = ["openat2", "walk"]
SECRET = b"SECRET: outside the workspace\n"


@pytest.fixture(params=RESOLVERS)
def resolver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@attrs.frozen
class Tree:
    """A workspace over ``root`` and an ``outside`` directory it must never touch."""

    ws: Workspace
    root: Path
    outside: Path


def _make_outside(base: Path) -> Path:
    outside = base / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "secret.txt").write_bytes(SECRET)
    (outside / "f.txt").write_bytes(SECRET)
    (outside / "sub" / "deep.txt").write_bytes(SECRET)
    return outside


def _snapshot(directory: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every name below ``directory`` (itself included): mode, size, mtime, content hash.

    Symlinks are recorded, never followed.
    """
    seen: dict[str, tuple[int, int, int, str]] = {}
    for parent, dirs, files in os.walk(directory):
        for name in [".", *dirs, *files]:
            path = os.path.normpath(os.path.join(parent, name))
            status = os.lstat(path)
            digest = ""
            if stat.S_ISREG(status.st_mode):
                digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            seen[os.path.relpath(path, directory)] = (
                status.st_mode,
                status.st_size,
                status.st_mtime_ns,
                digest,
            )
    return seen


@pytest.fixture
def tree(tmp_path: Path, resolver: str) -> Iterator[Tree]:
    outside = _make_outside(tmp_path)
    before = _snapshot(outside)
    with Workspace(
        tmp_path / "root", resolver=resolver, max_read_bytes=1000, max_write_bytes=1000
    ) as ws:  # type: ignore[arg-type]
        yield Tree(ws, tmp_path / "root", outside)
    assert _snapshot(outside) == before, "something outside the workspace changed"


def _refused(
    rule: Rule, path: str, call: Callable[[], object], *, advice: bool = True
) -> WorkspaceError:
    """Assert ``call`` raises the `WorkspaceError` for ``rule`` about ``path``, named so."""
    with pytest.raises(WorkspaceError) as info:
        call()
    error = info.value
    assert (error.rule, error.path) == (rule, path), str(error)
    assert str(error).startswith(brief_repr(path) + " ")
    if advice:
        assert str(error).endswith(": " + rule.advice)
    return error


# ---- the root --------------------------------------------------------------------------------


def test_a_missing_root_is_made_private_with_its_parents(tmp_path: Path, resolver: str) -> None:
    root = tmp_path / "a" / "b" / "root"
    with Workspace(root, resolver=resolver) as ws:  # type: ignore[arg-type]
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
        assert ws.root == str(root)
        assert ws.resolver == resolver
        assert ws.list().entries == ()


def test_auto_uses_openat2_where_the_kernel_has_it(tmp_path: Path) -> None:
    with Workspace(tmp_path / "root") as ws:
        assert ws.resolver == "openat2"  # this machine's kernel has it; see the module
        assert "openat2" in repr(ws)


def test_an_existing_root_keeps_its_contents(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "kept.txt").write_text("kept")
    with Workspace(tmp_path / "root") as ws:
        assert ws.read("kept.txt").data == "kept"


def test_a_root_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "root").symlink_to(tmp_path / "real")
    error = _refused(
        Rule.SYMLINK, str(tmp_path / "root"), lambda: Workspace(tmp_path / "root"), advice=False
    )
    assert "must be a real directory" in str(error)


def test_a_root_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "root").write_text("")
    _refused(
        Rule.NOT_A_DIRECTORY,
        str(tmp_path / "root"),
        lambda: Workspace(tmp_path / "root"),
        advice=False,
    )


def test_limits_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_read_bytes must be a positive"):
        Workspace(tmp_path, max_read_bytes=0)


def test_a_closed_workspace_refuses_every_call(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "root")
    ws.close()
    ws.close()
    assert ws.closed
    _refused(Rule.CLOSED, "x", lambda: ws.read("x"))
    _refused(Rule.CLOSED, ".", lambda: ws.list())


def test_close_waits_for_calls_in_flight_to_release_the_root(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "root")
    fd = ws._root_fd
    with ws._using_root("x"):
        ws.close()
        os.fstat(fd)  # still ours while a call runs
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)


# ---- read ------------------------------------------------------------------------------------


def test_write_then_read_text(tree: Tree) -> None:
    entry = tree.ws.write("notes.txt", "héllo\n")
    assert entry == Entry("notes.txt", EntryKind.FILE, 7, entry.mtime)
    content = tree.ws.read("notes.txt")
    assert content == FileContent("notes.txt", "héllo\n", 0, 7, 7, eof=True)
    assert (tree.root / "notes.txt").read_text() == "héllo\n"


def test_read_in_pieces_with_offset_and_limit(tree: Tree) -> None:
    (tree.root / "data.bin").write_bytes(bytes(range(10)))
    first = tree.ws.read("data.bin", limit=4, binary=True)
    assert (first.data, first.next_offset, first.size, first.eof) == (bytes(range(4)), 4, 10, False)
    rest = tree.ws.read("data.bin", offset=first.next_offset, binary=True)
    assert (rest.data, rest.next_offset, rest.eof) == (bytes(range(4, 10)), 10, True)
    assert tree.ws.read("data.bin", offset=50, binary=True).data == b""


def test_a_text_piece_cut_inside_a_character_ends_before_it(tree: Tree) -> None:
    (tree.root / "t.txt").write_text("aé€b")  # 1 + 2 + 3 + 1 bytes
    piece = tree.ws.read("t.txt", limit=4)
    assert (piece.data, piece.next_offset, piece.eof) == ("aé", 3, False)
    piece = tree.ws.read("t.txt", offset=3, limit=1)  # less than one character: it whole
    assert (piece.data, piece.next_offset) == ("€", 6)
    assert tree.ws.read("t.txt", offset=6).data == "b"


def test_text_that_is_not_utf8_is_refused_with_advice_to_read_bytes(tree: Tree) -> None:
    (tree.root / "latin1.txt").write_bytes("café".encode("latin-1"))
    error = _refused(Rule.NOT_TEXT, "latin1.txt", lambda: tree.ws.read("latin1.txt"))
    assert "at byte 3" in str(error) and "binary=True" in str(error)
    assert tree.ws.read("latin1.txt", binary=True).data == b"caf\xe9"


def test_a_file_ending_inside_a_character_is_not_text(tree: Tree) -> None:
    (tree.root / "cut.txt").write_bytes("é".encode()[:1])
    _refused(Rule.NOT_TEXT, "cut.txt", lambda: tree.ws.read("cut.txt"))
    _refused(Rule.NOT_TEXT, "cut.txt", lambda: tree.ws.read("cut.txt", limit=1))


def test_file_content_as_json(tree: Tree) -> None:
    (tree.root / "b").write_bytes(b"\x00\xff")
    assert tree.ws.read("b", binary=True).to_json() == {
        "path": "b",
        "encoding": "base64",
        "data": "AP8=",
        "offset": 0,
        "next_offset": 2,
        "size": 2,
        "eof": True,
    }
    (tree.root / "t").write_text("x")
    assert tree.ws.read("t").to_json()["encoding"] == "utf-8"
    json.dumps(tree.ws.read("t").to_json())


def test_reads_over_the_limit_are_refused(tree: Tree) -> None:
    (tree.root / "big").write_bytes(b"x" * 1500)
    error = _refused(Rule.READ_TOO_LARGE, "big", lambda: tree.ws.read("big"))
    assert "1500 bytes from offset 0" in str(error)
    _refused(Rule.READ_TOO_LARGE, "big", lambda: tree.ws.read("big", limit=1001))
    assert len(tree.ws.read("big", offset=500).data) == 1000
    assert len(tree.ws.read("big", limit=1000).data) == 1000


def test_bad_offsets_and_limits_are_refused(tree: Tree) -> None:
    (tree.root / "f").write_text("x")
    _refused(Rule.BAD_ARGUMENT, "f", lambda: tree.ws.read("f", offset=-1))
    _refused(Rule.BAD_ARGUMENT, "f", lambda: tree.ws.read("f", limit=-1))
    _refused(Rule.BAD_ARGUMENT, ".", lambda: tree.ws.list(limit=-1))


def test_reading_a_directory_or_the_root_is_refused(tree: Tree) -> None:
    (tree.root / "d").mkdir()
    _refused(Rule.IS_A_DIRECTORY, "d", lambda: tree.ws.read("d"))
    _refused(Rule.IS_A_DIRECTORY, ".", lambda: tree.ws.read("."), advice=False)
    _refused(Rule.NOT_FOUND, "missing", lambda: tree.ws.read("missing"))
    (tree.root / "file").write_text("")
    _refused(Rule.NOT_A_DIRECTORY, "file/x", lambda: tree.ws.read("file/x"))


# ---- write and append ------------------------------------------------------------------------


def test_write_replaces_a_file_keeping_its_mode_and_leaves_no_temporary(tree: Tree) -> None:
    target = tree.root / "script.sh"
    target.write_text("old")
    target.chmod(0o751)
    inode = target.stat().st_ino
    tree.ws.write("script.sh", b"new")
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o751
    assert target.stat().st_ino != inode, "a new file renamed over the old one"
    assert sorted(p.name for p in tree.root.iterdir()) == ["script.sh"]


def test_write_drops_set_id_bits_as_writing_in_place_would(tree: Tree) -> None:
    target = tree.root / "tool"
    target.write_text("old")
    target.chmod(0o6755)
    tree.ws.write("tool", "new")
    assert stat.S_IMODE(target.stat().st_mode) == 0o755


def test_write_makes_parents_only_when_asked(tree: Tree) -> None:
    _refused(Rule.NOT_FOUND, "a/b/c.txt", lambda: tree.ws.write("a/b/c.txt", "x"))
    entry = tree.ws.write("a/b/c.txt", "x", create_parents=True)
    assert entry.path == "a/b/c.txt" and entry.name == "c.txt"
    assert (tree.root / "a" / "b" / "c.txt").read_text() == "x"


def test_write_accepts_normalized_paths(tree: Tree) -> None:
    entry = tree.ws.write("./x/../y//z.txt", "x", create_parents=True)
    assert entry.path == "y/z.txt"
    assert (tree.root / "y" / "z.txt").exists()


def test_write_over_a_directory_is_refused(tree: Tree) -> None:
    (tree.root / "d").mkdir()
    _refused(Rule.IS_A_DIRECTORY, "d", lambda: tree.ws.write("d", "x"))


def test_text_that_cannot_be_utf8_and_other_data_are_refused(tree: Tree) -> None:
    _refused(Rule.BAD_ARGUMENT, "f", lambda: tree.ws.write("f", "\ud800"))
    _refused(Rule.BAD_ARGUMENT, "f", lambda: tree.ws.write("f", 42))  # type: ignore[arg-type]
    tree.ws.write("f", bytearray(b"ok"))
    assert (tree.root / "f").read_bytes() == b"ok"


def test_writes_and_appends_over_the_limit_are_refused(tree: Tree) -> None:
    error = _refused(Rule.WRITE_TOO_LARGE, "f", lambda: tree.ws.write("f", b"x" * 1001))
    assert "1001 bytes" in str(error)
    _refused(Rule.WRITE_TOO_LARGE, "f", lambda: tree.ws.append("f", "x" * 1001))
    assert not (tree.root / "f").exists()
    tree.ws.write("f", b"x" * 1000)


def test_append_creates_then_extends(tree: Tree) -> None:
    assert tree.ws.append("log.txt", "one\n").size == 4
    assert tree.ws.append("log.txt", b"two\n").size == 8
    assert (tree.root / "log.txt").read_text() == "one\ntwo\n"


# ---- list and stat ---------------------------------------------------------------------------


def _names(listing: Listing) -> list[str]:
    return [entry.path for entry in listing.entries]


def test_list_shows_direct_entries_sorted_with_their_kinds(tree: Tree) -> None:
    (tree.root / "b.txt").write_text("bb")
    (tree.root / "a").mkdir()
    (tree.root / "a" / "inner").write_text("")
    (tree.root / "link").symlink_to(tree.outside)
    os.mkfifo(tree.root / "pipe")
    listing = tree.ws.list()
    assert [(e.path, e.kind) for e in listing.entries] == [
        ("a", EntryKind.DIRECTORY),
        ("b.txt", EntryKind.FILE),
        ("link", EntryKind.SYMLINK),
        ("pipe", EntryKind.OTHER),
    ]
    assert listing.entries[1].size == 2 and not listing.truncated
    assert _names(tree.ws.list("a")) == ["a/inner"]
    json.dumps(listing.to_json())
    assert listing.to_json()["entries"][0] == {
        "name": "a",
        "path": "a",
        "kind": "dir",
        "size": listing.entries[0].size,
        "mtime": listing.entries[0].mtime,
    }


def test_list_with_a_glob(tree: Tree) -> None:
    for name in ["a.py", ".hidden.py", "b.txt", "src/c.py", "src/deep/d.py", "src/deep/e.txt"]:
        (tree.root / name).parent.mkdir(parents=True, exist_ok=True)
        (tree.root / name).write_text("")
    assert _names(tree.ws.list(pattern="*.py")) == [".hidden.py", "a.py"]
    assert _names(tree.ws.list(pattern="**/*.py")) == [
        ".hidden.py",
        "a.py",
        "src/c.py",
        "src/deep/d.py",
    ]
    assert _names(tree.ws.list(pattern="src/*")) == ["src/c.py", "src/deep"]
    assert _names(tree.ws.list(pattern="**/deep/**/*.txt")) == ["src/deep/e.txt"]
    assert _names(tree.ws.list("src", pattern="**/*.txt")) == ["src/deep/e.txt"]
    assert _names(tree.ws.list(pattern="**")) == _names(tree.ws.list(pattern="**/*"))


def test_list_stops_at_the_limit_and_says_so(tree: Tree) -> None:
    for index in range(5):
        (tree.root / f"f{index}").write_text("")
    listing = tree.ws.list(limit=3)
    assert (_names(listing), listing.truncated) == (["f0", "f1", "f2"], True)
    assert not tree.ws.list(limit=5).truncated
    assert tree.ws.list(pattern="**", limit=3).truncated


def test_list_bounds_how_many_names_it_looks_at(tmp_path: Path) -> None:
    with Workspace(tmp_path / "root", max_list_scan=10) as ws:
        for index in range(20):
            ws.mkdir(f"d{index:02}")
        listing = ws.list(pattern="**/nothing")
        assert (listing.entries, listing.truncated) == ((), True)


def test_list_never_enters_a_symlinked_directory(tree: Tree) -> None:
    (tree.root / "out").symlink_to(tree.outside)
    (tree.root / "in").mkdir()
    (tree.root / "in" / "loop").symlink_to(tree.root)
    assert _names(tree.ws.list(pattern="**")) == ["in", "in/loop", "out"]
    _refused(Rule.SYMLINK, "out", lambda: tree.ws.list("out"))
    _refused(Rule.SYMLINK, "in/loop", lambda: tree.ws.list("in/loop"))


def test_list_of_a_file_is_refused(tree: Tree) -> None:
    (tree.root / "f").write_text("")
    _refused(Rule.NOT_A_DIRECTORY, "f", lambda: tree.ws.list("f"))


def test_glob_patterns_cannot_climb_out(tree: Tree) -> None:
    _refused(Rule.ESCAPE, "../*", lambda: tree.ws.list(pattern="../*"), advice=False)
    _refused(Rule.ESCAPE, "a/../../*", lambda: tree.ws.list(pattern="a/../../*"), advice=False)
    _refused(Rule.ABSOLUTE, "/etc/*", lambda: tree.ws.list(pattern="/etc/*"), advice=False)
    _refused(Rule.NUL_BYTE, "*\x00", lambda: tree.ws.list(pattern="*\x00"))
    _refused(Rule.BAD_ARGUMENT, "''", lambda: tree.ws.list(pattern=""))


def test_stat_reports_the_name_itself(tree: Tree) -> None:
    (tree.root / "f").write_text("abc")
    (tree.root / "link").symlink_to(tree.outside / "secret.txt")
    assert tree.ws.stat("f").kind is EntryKind.FILE and tree.ws.stat("f").size == 3
    link = tree.ws.stat("link")
    assert link.kind is EntryKind.SYMLINK and link.size == len(str(tree.outside / "secret.txt"))
    root = tree.ws.stat(".")
    assert (root.path, root.name, root.kind) == (".", ".", EntryKind.DIRECTORY)


# ---- move, delete, mkdir ---------------------------------------------------------------------


def test_move_renames_and_refuses_to_replace_unless_asked(tree: Tree) -> None:
    tree.ws.write("a.txt", "a")
    tree.ws.write("b.txt", "b")
    entry = tree.ws.move("a.txt", "sub/../c.txt")
    assert (entry.path, entry.kind) == ("c.txt", EntryKind.FILE)
    _refused(Rule.EXISTS, "b.txt", lambda: tree.ws.move("c.txt", "b.txt"))
    tree.ws.move("c.txt", "b.txt", overwrite=True)
    assert tree.ws.read("b.txt").data == "a"
    _refused(Rule.NOT_FOUND, "c.txt", lambda: tree.ws.move("c.txt", "d.txt"))
    _refused(Rule.NOT_FOUND, "no/d.txt", lambda: tree.ws.move("b.txt", "no/d.txt"))


def test_move_a_directory_and_a_symlink_itself(tree: Tree) -> None:
    tree.ws.write("d/f", "x", create_parents=True)
    tree.ws.move("d", "e")
    assert tree.ws.read("e/f").data == "x"
    (tree.root / "link").symlink_to(tree.outside)
    assert tree.ws.move("link", "e/link").kind is EntryKind.SYMLINK
    assert (tree.root / "e" / "link").readlink() == tree.outside


def test_move_into_itself_is_refused_and_onto_itself_is_nothing(tree: Tree) -> None:
    tree.ws.mkdir("d")
    _refused(Rule.BAD_ARGUMENT, "d/e", lambda: tree.ws.move("d", "d/e"), advice=False)
    assert tree.ws.move("d", "./d").path == "d"


def test_move_and_delete_of_the_root_are_refused(tree: Tree) -> None:
    _refused(Rule.ROOT, ".", lambda: tree.ws.move(".", "x"))
    _refused(Rule.ROOT, "a/..", lambda: tree.ws.move("x", "a/.."))
    _refused(Rule.ROOT, ".", lambda: tree.ws.delete("."))
    _refused(Rule.ROOT, "./", lambda: tree.ws.write("./", "x"))
    _refused(Rule.ROOT, ".", lambda: tree.ws.append(".", "x"))


def test_delete_files_directories_and_trees(tree: Tree) -> None:
    tree.ws.write("f", "x")
    assert tree.ws.delete("f").kind is EntryKind.FILE
    tree.ws.mkdir("empty")
    assert tree.ws.delete("empty").kind is EntryKind.DIRECTORY
    tree.ws.write("t/a/b/c", "x", create_parents=True)
    _refused(Rule.NOT_EMPTY, "t", lambda: tree.ws.delete("t"))
    tree.ws.delete("t", recursive=True)
    assert list(tree.root.iterdir()) == []
    _refused(Rule.NOT_FOUND, "t", lambda: tree.ws.delete("t"))


def test_delete_removes_a_symlink_never_its_target(tree: Tree) -> None:
    (tree.root / "file-link").symlink_to(tree.outside / "secret.txt")
    (tree.root / "dir-link").symlink_to(tree.outside)
    (tree.root / "t").mkdir()
    (tree.root / "t" / "inner-link").symlink_to(tree.outside)
    (tree.root / "t" / "sub").mkdir()
    (tree.root / "t" / "sub" / "up").symlink_to("../../../outside")
    assert tree.ws.delete("file-link").kind is EntryKind.SYMLINK
    assert tree.ws.delete("dir-link", recursive=True).kind is EntryKind.SYMLINK
    tree.ws.delete("t", recursive=True)
    assert list(tree.root.iterdir()) == []
    # the fixture checks that everything outside is as it was


def test_a_recursive_delete_stops_at_its_depth_bound(tree: Tree) -> None:
    deep = "/".join(["d"] * (MAX_DEPTH + 2))
    tree.ws.mkdir(deep, parents=True)
    _refused(Rule.TOO_DEEP, "d", lambda: tree.ws.delete("d", recursive=True))


def test_mkdir_with_and_without_parents(tree: Tree) -> None:
    assert tree.ws.mkdir("a").kind is EntryKind.DIRECTORY
    _refused(Rule.EXISTS, "a", lambda: tree.ws.mkdir("a"))
    _refused(Rule.NOT_FOUND, "b/c", lambda: tree.ws.mkdir("b/c"))
    assert tree.ws.mkdir("b/c", parents=True).path == "b/c"
    assert tree.ws.mkdir("b/c", parents=True).path == "b/c"
    assert tree.ws.mkdir(".", parents=True).path == "."
    _refused(Rule.EXISTS, ".", lambda: tree.ws.mkdir("."), advice=False)
    tree.ws.write("f", "")
    _refused(Rule.EXISTS, "f", lambda: tree.ws.mkdir("f", parents=True), advice=False)
    _refused(Rule.NOT_A_DIRECTORY, "f/g", lambda: tree.ws.mkdir("f/g", parents=True))


# ---- the confinement rules -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("../etc/passwd", Rule.ESCAPE),
        ("a/../../x", Rule.ESCAPE),
        ("./..", Rule.ESCAPE),
        ("..", Rule.ESCAPE),
        ("/etc/passwd", Rule.ABSOLUTE),
        ("//x", Rule.ABSOLUTE),
        ("a\x00b", Rule.NUL_BYTE),
        ("x" * (NAME_MAX + 1), Rule.NAME_TOO_LONG),
        ("é" * 128, Rule.NAME_TOO_LONG),  # 256 bytes in 128 characters
        ("/".join(["d" * 200] * 21), Rule.NAME_TOO_LONG),
        ("", Rule.BAD_PATH),
        ("\udcff\ud800", Rule.BAD_PATH),
    ],
)
@pytest.mark.parametrize(
    "operation", ["read", "write", "append", "list", "stat", "delete", "mkdir"]
)
def test_paths_are_refused_by_their_spelling(
    tree: Tree, path: str, rule: Rule, operation: str
) -> None:
    calls: dict[str, Callable[[], object]] = {
        "read": lambda: tree.ws.read(path),
        "write": lambda: tree.ws.write(path, "x", create_parents=True),
        "append": lambda: tree.ws.append(path, "x"),
        "list": lambda: tree.ws.list(path),
        "stat": lambda: tree.ws.stat(path),
        "delete": lambda: tree.ws.delete(path, recursive=True),
        "mkdir": lambda: tree.ws.mkdir(path, parents=True),
    }
    error = _refused(rule, path, calls[operation])
    assert error.rule.is_refusal
    assert isinstance(error, OSError) and isinstance(error, WactorzError)


def test_the_example_message(tree: Tree) -> None:
    with pytest.raises(WorkspaceError) as info:
        tree.ws.read("../etc/passwd")
    assert str(info.value) == (
        "'../etc/passwd' leaves the workspace: paths must stay inside it (no '..' above the root)"
    )


def test_a_path_that_is_not_a_string_is_refused(tree: Tree) -> None:
    _refused(Rule.BAD_PATH, "42", lambda: tree.ws.read(42))  # type: ignore[arg-type]
    _refused(Rule.BAD_PATH, "b'x'", lambda: tree.ws.stat(b"x"))  # type: ignore[arg-type]


def test_move_refuses_by_either_path(tree: Tree) -> None:
    tree.ws.write("f", "x")
    _refused(Rule.ESCAPE, "../f", lambda: tree.ws.move("f", "../f"))
    _refused(Rule.ABSOLUTE, "/tmp/f", lambda: tree.ws.move("/tmp/f", "f"))
    (tree.root / "out").symlink_to(tree.outside)
    _refused(Rule.SYMLINK, "out/f", lambda: tree.ws.move("f", "out/f"), advice=False)
    _refused(Rule.SYMLINK, "out/secret.txt", lambda: tree.ws.move("out/secret.txt", "s"))


def test_a_symlink_on_the_way_is_refused_wherever_it_points(tree: Tree) -> None:
    (tree.root / "real").mkdir()
    (tree.root / "real" / "f.txt").write_text("inside")
    (tree.root / "out").symlink_to(tree.outside)
    (tree.root / "relative-out").symlink_to("../outside")
    (tree.root / "in").symlink_to("real")
    (tree.root / "real" / "up").symlink_to("..")
    for path in ["out/f.txt", "relative-out/f.txt", "in/f.txt", "real/up/real/f.txt"]:
        _refused(Rule.SYMLINK, path, lambda p=path: tree.ws.read(p))  # type: ignore[misc]
        _refused(Rule.SYMLINK, path, lambda p=path: tree.ws.write(p, "x"))  # type: ignore[misc]
        _refused(Rule.SYMLINK, path, lambda p=path: tree.ws.append(p, "x"))  # type: ignore[misc]
        _refused(Rule.SYMLINK, path, lambda p=path: tree.ws.stat(p))  # type: ignore[misc]
        _refused(Rule.SYMLINK, path, lambda p=path: tree.ws.delete(p))  # type: ignore[misc]
        _refused(Rule.SYMLINK, path, lambda p=path: tree.ws.mkdir(p, parents=True))  # type: ignore[misc]
    for path in ["out/new/f", "in/new/f"]:
        _refused(Rule.SYMLINK, path, lambda p=path: tree.ws.write(p, "x", create_parents=True))  # type: ignore[misc]


def test_a_symlink_as_the_file_is_refused_wherever_it_points(tree: Tree) -> None:
    (tree.root / "real.txt").write_text("inside")
    (tree.root / "secret").symlink_to(tree.outside / "secret.txt")
    (tree.root / "alias").symlink_to("real.txt")
    (tree.root / "dangling").symlink_to(tree.outside / "would-be-created.txt")
    for path in ["secret", "alias", "dangling"]:
        _refused(Rule.SYMLINK, path, lambda p=path: tree.ws.read(p))  # type: ignore[misc]
        _refused(Rule.SYMLINK, path, lambda p=path: tree.ws.write(p, "x"))  # type: ignore[misc]
        _refused(Rule.SYMLINK, path, lambda p=path: tree.ws.append(p, "x"))  # type: ignore[misc]
    assert not (tree.outside / "would-be-created.txt").exists()
    _refused(Rule.SYMLINK, "alias", lambda: tree.ws.mkdir("alias", parents=True), advice=False)


def test_a_hard_link_is_refused_for_reading_and_appending(tree: Tree) -> None:
    os.link(tree.outside / "secret.txt", tree.root / "linked")
    error = _refused(Rule.HARD_LINK, "linked", lambda: tree.ws.read("linked"))
    assert "has 2 hard links" in str(error)
    _refused(Rule.HARD_LINK, "linked", lambda: tree.ws.append("linked", "x"))
    tree.ws.write("linked", "replaced")  # replaces the name, not the shared file
    assert (tree.outside / "secret.txt").read_bytes() == SECRET


def test_hard_links_can_be_allowed(tmp_path: Path) -> None:
    with Workspace(tmp_path / "root", allow_hard_links=True) as ws:
        ws.write("a", "shared")
        os.link(tmp_path / "root" / "a", tmp_path / "root" / "b")
        assert ws.read("b").data == "shared"


def _in_a_thread(call: Callable[[], object]) -> BaseException | None:
    """Run ``call`` in a thread; what it raised, or fail if it has not finished in 5 s."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as error:
            outcome.append(error)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "the call blocked"
    return outcome[0]


@pytest.mark.parametrize("kind", ["fifo", "socket", "device"])
def test_special_files_are_refused_without_blocking(tree: Tree, kind: str) -> None:
    path = tree.root / "special"
    try:
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "socket":
            os.mknod(path, 0o600 | stat.S_IFSOCK)
        else:
            os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
    except PermissionError:
        pytest.skip(f"cannot make a {kind} here")
    calls: list[Callable[[], object]] = [
        lambda: tree.ws.read("special"),
        lambda: tree.ws.read("special", binary=True, limit=1),
        lambda: tree.ws.write("special", "x"),
        lambda: tree.ws.append("special", "x"),
    ]
    for call in calls:
        error = _in_a_thread(call)
        assert isinstance(error, WorkspaceError), error
        assert error.rule is Rule.SPECIAL_FILE
        assert {"fifo": "FIFO", "socket": "socket", "device": "device file"}[kind] in str(error)
    assert tree.ws.stat("special").kind is EntryKind.OTHER
    tree.ws.move("special", "moved")
    tree.ws.delete("moved")


def test_a_fifo_swapped_in_after_the_check_is_refused_on_what_was_opened(tree: Tree) -> None:
    """The check after opening, on the descriptor: simulated by skipping the one before."""
    os.mkfifo(tree.root / "pipe")
    with tree.ws._using_root("pipe") as root:
        parent = os.open(".", os.O_PATH, dir_fd=root)
        try:
            original = os.stat

            def stat_says_regular(name: str, **kwargs: object) -> os.stat_result:
                return original(tree.outside / "secret.txt")

            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(os, "stat", stat_says_regular)
                error = _in_a_thread(
                    lambda: tree.ws._open_file(parent, "pipe", os.O_RDONLY, "pipe")
                )
        finally:
            os.close(parent)
    assert isinstance(error, WorkspaceError) and error.rule is Rule.SPECIAL_FILE


# ---- traversal, with hypothesis -------------------------------------------------------------

DIRECTORIES = ["a", "b", "sub", "new"]
FILES = ["f.txt", "top.txt", "new", "a", "outside"]
LINKS = ["out", "abs", "in", "up", "pw", "secret.txt", "pipe"]
DOTS = ["..", "..", ".", ""]
ODD = ["x" * (NAME_MAX + 1), "n\x00ul", "*", "a\\b"]


def _build(root: Path, outside: Path) -> None:
    """Real directories and files under the plain names, links out and in, a FIFO."""
    for directory in ["", "a", "b", "sub", "a/b", "a/sub", "b/a", "sub/a"]:
        (root / directory).mkdir(parents=True, exist_ok=True)
        (root / directory / "f.txt").write_text("inside")
        (root / directory / "top.txt").write_text("inside")
    (root / "out").symlink_to(os.path.relpath(outside, root))
    (root / "abs").symlink_to(outside)
    (root / "in").symlink_to("a")
    (root / "a" / "up").symlink_to("../..")
    (root / "pw").symlink_to(outside / "secret.txt")
    (root / "a" / "secret.txt").symlink_to(outside / "secret.txt")
    os.mkfifo(root / "pipe")


@st.composite
def paths(draw: st.DrawFn) -> str:
    """Mostly names the tree has, with its links out and in, its FIFO and '..'; some noise."""
    prefix = draw(st.sampled_from(["", "./", "/", "//"] + [""] * 12))
    names = []
    count = draw(st.integers(1, 5))
    for index in range(count):
        plain = FILES if index == count - 1 else DIRECTORIES
        groups = [plain] * 5 + [LINKS] * 3 + [DOTS] * 2
        group = draw(st.integers(0, len(groups)))
        if group == len(groups):
            names.append(draw(st.sampled_from(ODD) | st.text(max_size=4)))
        else:
            names.append(draw(st.sampled_from(groups[group])))
    return prefix + "/".join(names)


OPERATIONS: dict[str, Callable[[Workspace, str, str], object]] = {
    "read": lambda ws, p, _: ws.read(p),
    "read-bytes": lambda ws, p, _: ws.read(p, offset=1, limit=3, binary=True),
    "write": lambda ws, p, _: ws.write(p, "written", create_parents=True),
    "append": lambda ws, p, _: ws.append(p, "appended"),
    "list": lambda ws, p, _: ws.list(p),
    "glob": lambda ws, p, q: ws.list(p, pattern=q.lstrip("/") or "*"),
    "stat": lambda ws, p, _: ws.stat(p),
    "move": lambda ws, p, q: ws.move(p, q),
    "move-over": lambda ws, p, q: ws.move(p, q, overwrite=True),
    "delete": lambda ws, p, _: ws.delete(p, recursive=True),
    "mkdir": lambda ws, p, _: ws.mkdir(p, parents=True),
}


_PRISTINE: dict[Path, dict[str, tuple[int, int, int, str]]] = {}
"""The tree `_build` made for each run of the property, to rebuild only after a change
(rebuilding every time costs more than the operations: each write's fsync flushes it)."""


def _inside(root: Path, relative: str) -> bool:
    """Whether the directory holding ``relative`` really is the root or below it."""
    real_root = os.path.realpath(root)
    holder = os.path.realpath(os.path.dirname(os.path.join(root, relative)))
    return holder == real_root or holder.startswith(real_root + os.sep)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operation=st.sampled_from(sorted(OPERATIONS)), path=paths(), other=paths())
@example(operation="read", path="pw", other="")
@example(operation="read", path="a/secret.txt", other="")
@example(operation="append", path="pw", other="")
@example(operation="read", path="a/up/outside/secret.txt", other="")
@example(operation="write", path="out/new/f.txt", other="")
@example(operation="glob", path=".", other="**/*.txt")
@example(operation="delete", path="abs", other="")
@example(operation="move", path="top.txt", other="out/top.txt")
@example(operation="read", path="pipe", other="")
def test_any_path_stays_inside_or_is_refused(
    tmp_path: Path, resolver: str, operation: str, path: str, other: str
) -> None:
    outside, root = tmp_path / "outside", tmp_path / "root"
    if not outside.exists():
        _make_outside(tmp_path)
        _build(root, outside)
        _PRISTINE[tmp_path] = _snapshot(root)
    elif _snapshot(root) != _PRISTINE[tmp_path]:  # the last example changed it: afresh
        shutil.rmtree(root)
        _build(root, outside)
        _PRISTINE[tmp_path] = _snapshot(root)
    before = _snapshot(outside)
    with Workspace(root, resolver=resolver) as ws:  # type: ignore[arg-type]
        refusal: WorkspaceError | None = None
        try:
            result = OPERATIONS[operation](ws, path, other)
        except WorkspaceError as error:
            refusal = error
        event(f"{operation}: {refusal.rule if refusal else 'done'}")
        if refusal is not None:
            assert str(refusal).startswith(brief_repr(refusal.path))
        else:
            entries: list[Entry] = []
            if isinstance(result, Entry):
                entries = [result]
            elif isinstance(result, Listing):
                entries = [*result.entries, Entry(result.path, EntryKind.DIRECTORY, 0, 0)]
            elif isinstance(result, FileContent):
                full = os.path.join(root, result.path)
                assert os.path.realpath(full) == os.path.normpath(full), "read through a link"
                assert result.data != SECRET and result.data != SECRET.decode()
            for entry in entries:
                assert _inside(root, entry.path), (operation, path, other, entry)
            if operation in ("write", "append", "mkdir"):
                assert isinstance(result, Entry)
                assert os.path.realpath(os.path.join(root, result.path)) == os.path.normpath(
                    os.path.join(root, result.path)
                )
    assert _snapshot(outside) == before


# ---- races -----------------------------------------------------------------------------------

_RENAME_EXCHANGE = 2


def _exchanger() -> Callable[[Path, Path], None]:
    """Swap two names atomically (``renameat2(RENAME_EXCHANGE)``), or in three renames."""
    libc = ctypes.CDLL(None, use_errno=True)
    at_cwd = -100

    def exchange(a: Path, b: Path) -> None:
        if libc.renameat2(at_cwd, bytes(a), at_cwd, bytes(b), _RENAME_EXCHANGE) == 0:
            return
        if ctypes.get_errno() not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(ctypes.get_errno(), "renameat2")
        os.rename(a, a.with_name("swap"))
        os.rename(b, a)
        os.rename(a.with_name("swap"), b)

    return exchange


def test_a_directory_swapped_for_a_symlink_mid_call_never_leads_outside(
    tmp_path: Path, resolver: str
) -> None:
    """A thread flips ``d`` between a real directory and a link to outside, as fast as it can."""
    outside = _make_outside(tmp_path)
    (outside / "sub" / "f.txt").write_bytes(SECRET)
    before = _snapshot(outside)
    root = tmp_path / "root"
    (root / "d" / "sub").mkdir(parents=True)
    (root / "d" / "f.txt").write_text("inside")
    (root / "d" / "sub" / "f.txt").write_text("inside")
    (root / "evil").symlink_to(outside)
    exchange = _exchanger()
    stop = threading.Event()
    swaps = itertools.count()

    def swapper() -> None:
        while not stop.is_set():
            exchange(root / "d", root / "evil")
            next(swaps)

    outcomes: dict[str, int] = {"ok": 0, "refused": 0}
    thread = threading.Thread(target=swapper, daemon=True)
    with Workspace(root, resolver=resolver) as ws:  # type: ignore[arg-type]
        thread.start()
        try:
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                for call in (
                    lambda: ws.read("d/f.txt"),
                    lambda: ws.read("d/sub/f.txt"),
                    lambda: ws.write("d/f.txt", "inside"),
                    lambda: ws.write("d/sub/new.txt", "inside"),
                    lambda: ws.append("d/sub/f.txt", ""),
                    lambda: ws.list("d/sub"),
                    lambda: ws.list("d", pattern="**"),
                    lambda: ws.stat("d/secret.txt"),
                    lambda: ws.mkdir("d/sub/made", parents=True),
                    lambda: ws.delete("d/sub/made", recursive=True),
                    lambda: ws.move("d/sub/new.txt", "d/sub/moved.txt", overwrite=True),
                ):
                    try:
                        result = call()
                    except WorkspaceError:
                        outcomes["refused"] += 1
                        continue
                    outcomes["ok"] += 1
                    if isinstance(result, FileContent):
                        assert result.data == "inside"
                    if isinstance(result, Listing):
                        names = {entry.name for entry in result.entries}
                        assert "secret.txt" not in names and "deep.txt" not in names
                    if isinstance(result, Entry):
                        assert result.name != "secret.txt"
        finally:
            stop.set()
            thread.join()
    assert _snapshot(outside) == before
    assert next(swaps) > 100, "the swapper hardly ran"
    assert outcomes["ok"] > 0 and outcomes["refused"] > 0, outcomes


def test_a_reader_sees_the_old_content_or_the_new_never_a_mix(tmp_path: Path) -> None:
    size = 1 << 20
    versions = [bytes([letter]) * size for letter in b"AB"]
    with Workspace(tmp_path / "root", max_read_bytes=size, max_write_bytes=size) as ws:
        ws.write("big", versions[0])
        stop = threading.Event()
        writes = itertools.count()

        def writer() -> None:
            for version in itertools.cycle(versions):
                if stop.is_set():
                    return
                ws.write("big", version)
                next(writes)

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 1.5
            reads = 0
            while time.monotonic() < deadline:
                assert ws.read("big", binary=True).data in versions
                with open(tmp_path / "root" / "big", "rb") as plain:
                    assert plain.read() in versions
                reads += 1
        finally:
            stop.set()
            thread.join()
        assert reads > 10 and next(writes) > 10
        assert [entry.name for entry in ws.list().entries] == ["big"], "a temporary is left"


def test_calls_from_many_threads_at_once(tmp_path: Path, resolver: str) -> None:
    with Workspace(tmp_path / "root", resolver=resolver) as ws:  # type: ignore[arg-type]
        errors: list[BaseException] = []

        def work(index: int) -> None:
            try:
                for step in range(50):
                    ws.write(f"t{index}/f{step}", str(step), create_parents=True)
                    assert ws.read(f"t{index}/f{step}").data == str(step)
                    ws.append(f"t{index}/log", f"{step}\n")
                ws.delete(f"t{index}", recursive=True)
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=work, args=(index,)) for index in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert ws.list().entries == ()


def test_descriptors_are_all_closed(tree: Tree) -> None:
    """Every call, succeeding or refused, leaves as many open descriptors as it found."""
    (tree.root / "out").symlink_to(tree.outside)
    os.mkfifo(tree.root / "pipe")
    opened = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        tree.ws.write("d/f", "x", create_parents=True)
        tree.ws.read("d/f")
        tree.ws.append("d/f", "y")
        tree.ws.list(pattern="**")
        tree.ws.stat("d/f")
        tree.ws.move("d", "e")
        tree.ws.delete("e", recursive=True)
        for call in (
            lambda: tree.ws.read("out/secret.txt"),
            lambda: tree.ws.read("pipe"),
            lambda: tree.ws.write("out/x", "x"),
            lambda: tree.ws.list("pipe"),
            lambda: tree.ws.read("missing"),
        ):
            with pytest.raises(WorkspaceError):
                call()
    assert len(os.listdir("/proc/self/fd")) == opened


def test_the_limits_are_the_documented_ones() -> None:
    assert (NAME_MAX, PATH_MAX) == (255, 4095)
    assert Rule.ESCAPE.is_refusal and not Rule.NOT_FOUND.is_refusal
    assert all(rule.advice for rule in Rule)
