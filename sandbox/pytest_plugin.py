"""The pytest plugin: a fresh sandbox per test.

Registered through the ``pytest11`` entry point (loaded automatically once
the package is installed) and loadable by hand with ``pytest -p sandbox``.

    import pytest
    from sandbox import Limits

    @pytest.mark.sandbox(image="python", limits=Limits(memory="256M", pids=64))
    def test_prints(sandbox):
        assert sandbox.exec(["python3", "-c", "print(1)"]).stdout == b"1\\n"

    def test_two(sandbox_factory):
        a, b = sandbox_factory(), sandbox_factory(hostname="b")

- ``sandbox``: function-scoped, closed after the test.  Its options come
  from the closest ``@pytest.mark.sandbox(...)`` (any keyword of
  ``Sandbox(...)``: ``image=``, ``network=``, ``limits=``, ``mounts=``...;
  markers on the class or module fill in what the closer ones leave out,
  but the file system, ``image=``, ``rootfs=`` or ``layers=``, comes whole
  from the closest that names one, and ``limits=`` merges field by field
  across every layer, a factory call's too; ``limits=None`` drops them),
  then the command line
  (``--sandbox-image``, ``--sandbox-network``, ``--sandbox-memory``,
  ``--sandbox-timeout``), then the ini keys of the same names
  (``sandbox_image = python``), then ``image="debian"``.  The memory
  size and the timeout are checked when pytest starts (as ``Limits``
  checks them): a bad one is one usage error, before any test runs.
- ``sandbox_factory(**kwargs)``: makes as many sandboxes as the test wants,
  each with those defaults overridden by ``kwargs``; all closed at teardown.
- Each image is resolved once per session (pulled when the store lacks it),
  under a file lock beside the store, so that pytest-xdist workers sharing
  the store pull it once between them.
- A failing test's report gets a "sandbox: last exec" section per sandbox:
  the argv, the verdict and the tails of stdout and stderr of its last exec.

Nothing here creates a sandbox, starts a thread or touches the store unless
a test asks for one of the fixtures: a suite that never does pays only for
the import.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # the SDK is imported by the fixtures only
    from . import Sandbox
    from .result import ExecResult

DEFAULT_IMAGE = "debian"
TAIL = 2000  # bytes of stdout and stderr shown in a failing test's report
MARKER = (
    "sandbox(image=..., network=..., limits=..., **kwargs): options of the `sandbox` and "
    "`sandbox_factory` fixtures (any keyword of sandbox.Sandbox)"
)
_OPTIONS = {
    # name: (help, what it becomes in Sandbox(...))
    "image": "image of the sandbox fixtures (default: debian)",
    "network": "network= of the sandbox fixtures",
    "memory": "memory limit of the sandbox fixtures (Limits.memory, e.g. 256M)",
    "timeout": "default wall-clock timeout of each exec in the sandbox fixtures, in seconds",
}
_DEFAULTS = pytest.StashKey[dict[str, Any]]()  # _defaults(config), made at configure time


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sandbox", "sandbox fixtures (sandbox.pytest_plugin)")
    for name, text in _OPTIONS.items():
        group.addoption(f"--sandbox-{name}", dest=f"sandbox_{name}", default=None, help=text)
        parser.addini(f"sandbox_{name}", text, default=None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)
    # Checked once, here: a bad --sandbox-memory is one usage error before
    # any test runs, not the same error in every test using a fixture.
    config.stash[_DEFAULTS] = _defaults(config)


# -- options ---------------------------------------------------------------------


def _setting(config: pytest.Config, name: str) -> tuple[str, str] | None:
    """An option's value and where it was given (to name it in an error):
    the command line, else the ini file.  None when neither gives one, and
    when the command line gives it empty (`--sandbox-timeout=`: none here,
    whatever the ini file says)."""
    value = config.getoption(f"sandbox_{name}", None)
    if value is not None:
        return (str(value), f"--sandbox-{name}") if value != "" else None
    if value := config.getini(f"sandbox_{name}"):
        return str(value), f"sandbox_{name} (ini)"
    return None


def _checked(where: str, name: str, value: object) -> object:
    """One field of Limits, checked as Limits checks it (the same units and
    bounds, sandbox/limits.py), or a usage error naming the option."""
    from .errors import ConfigError
    from .limits import Limits

    one: dict[str, Any] = {name: value}
    try:
        return getattr(Limits(**one), name)
    except ConfigError as e:
        raise pytest.UsageError(f"{where}: {str(e).removeprefix(e.option + ': ')}") from None


def _checked_network(value: str, where: str) -> str:
    """A network= given as text: "none" or "bridge" (a Network object is
    given in code, with the marker), checked as Sandbox checks it."""
    from .errors import ConfigError
    from .network import options

    try:
        options.check(value, None, None)
    except ConfigError as e:
        raise pytest.UsageError(f'{where}: {value!r} is not a network: use "none" or "bridge"') from e
    return value


def _defaults(config: pytest.Config) -> dict[str, Any]:
    """What the command line and the ini file say, as Sandbox keywords."""
    image = _setting(config, "image")
    out: dict[str, Any] = {"image": image[0] if image else DEFAULT_IMAGE}
    if network := _setting(config, "network"):
        out["network"] = _checked_network(*network)
    limits: dict[str, object] = {}
    if memory := _setting(config, "memory"):
        limits["memory"] = _checked(memory[1], "memory", memory[0])
    if timeout := _setting(config, "timeout"):
        text, where = timeout
        try:
            seconds = float(text)
        except ValueError:
            raise pytest.UsageError(f"{where}: {text!r} is not a number of seconds, e.g. 30 or 2.5") from None
        limits["timeout"] = _checked(where, "timeout", seconds)
    if limits:
        out["limits"] = limits
    return out


# The keywords that say what the sandbox's file system is: the closest
# marker (or the factory call) naming any of them replaces all three.
_TREE = ("image", "rootfs", "layers")


def _names_tree(kw: dict[str, Any]) -> bool:
    return any(kw.get(k) is not None for k in _TREE)


def _marker_kwargs(node: pytest.Item) -> dict[str, Any]:
    """The closest marker's keywords win; farther ones fill in the rest,
    except the file system (_TREE), taken whole from the closest marker that
    names one.  One positional argument is the image:
    ``@pytest.mark.sandbox("python")``."""
    out: dict[str, Any] = {}
    for mark in node.iter_markers("sandbox"):
        if len(mark.args) > 1:
            raise pytest.UsageError(
                f"{node.nodeid}: @pytest.mark.sandbox takes at most one positional argument "
                f"(the image), got {mark.args!r}: pass the rest as keywords"
            )
        kw = dict(mark.kwargs)
        if mark.args:
            kw.setdefault("image", mark.args[0])
        if _names_tree(out):
            # a module's rootfs= must not displace a test's image= (nor the reverse)
            kw = {k: v for k, v in kw.items() if k not in _TREE}
        for k, v in kw.items():
            if k == "limits" and out.get(k) is not None and v is not None:
                out[k] = _limits_over(v, out[k])  # a farther marker's limits, field by field
            else:
                out.setdefault(k, v)
    return out


def _merge(*layers: dict[str, Any]) -> dict[str, Any]:
    """Later layers override earlier ones, except `limits`, merged field by
    field at every layer (the command line's and ini's, the markers', a
    factory call's): `limits=Limits(pids=64)` keeps the memory of the layers
    before; `limits=None` drops them all.  A layer that names the file
    system (image, rootfs or layers) replaces the one earlier layers named:
    a test's rootfs= the default image, a factory call's image= a marker's
    rootfs=."""
    out: dict[str, Any] = {}
    for layer in layers:
        if _names_tree(layer):
            for k in _TREE:
                out.pop(k, None)
        for k, v in layer.items():
            if k == "limits" and out.get(k) is not None and v is not None:
                v = _limits_over(out[k], v)
            out[k] = v
    return out


def _limits_over(base: object, top: object) -> object:
    """`top`'s limits over `base`'s, field by field (either a Limits or a dict)."""
    from .limits import check_limits

    def given(x: object) -> dict[str, object]:
        lim = check_limits("limits", x)
        if lim is None:
            return {}
        return {f.name: v for f in fields(lim) if (v := getattr(lim, f.name)) is not None}

    return {**given(base), **given(top)}


# -- images, once per session ------------------------------------------------------


class _Images:
    """Resolves each image once per process, and once across the processes
    sharing a store (pytest-xdist workers): the first pulls under an
    exclusive lock on a file beside the store, the others wait for it and
    then find the image there."""

    def __init__(self) -> None:
        self._done: set[str] = set()

    def ensure(self, ref: str) -> None:
        if ref in self._done:
            return
        from .images import open_image
        from .images.store import Store

        store = Store()
        key = hashlib.sha256(str(store.root).encode()).hexdigest()[:16]
        lock = os.path.join(tempfile.gettempdir(), f"sandbox-pytest-{os.getuid()}-{key}.lock")
        with open(lock, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # released when f closes
            _, hold = open_image(ref, store=store)
            hold.release()  # each Sandbox(image=...) takes its own hold
        self._done.add(ref)


_IMAGES = _Images()


# -- recording the last exec ---------------------------------------------------------


@dataclass
class _Record:
    """What a sandbox of a fixture ran last: the result, or the error."""

    label: str
    argv: object = None  # as exec() was given it (_recorded_argv)
    result: ExecResult | None = None
    error: BaseException | None = None
    execs: int = 0

    def text(self) -> str:
        if not self.execs:
            return f"{self.label}: no exec"
        head = f"{self.label}: exec #{self.execs}\nargv: {self.argv!r}"
        if self.result is None:
            return f"{head}\nerror: {type(self.error).__name__}: {self.error}"
        r = self.result
        mem = "?" if r.max_memory is None else f"{r.max_memory / 2**20:.1f} MiB"
        lines = [
            head,
            f"reason: {r.reason} ({r.describe()})",
            f"wall {r.wall_time:.3f} s, cpu {r.cpu_time:.3f} s, max memory {mem}"
            + (", output truncated" if r.truncated else ""),
        ]
        for name, data in (("stdout", r.stdout), ("stderr", r.stderr)):
            tail = _shown(data[-TAIL:])
            cut = f"last {TAIL} of {len(data)} bytes" if len(data) > TAIL else f"{len(data)} bytes"
            lines.append(f"--- {name} ({cut}) ---")
            if tail:
                lines.append(tail.rstrip("\n"))
        return "\n".join(lines)


# the sandbox's output is untrusted: a terminal's control sequences in it
# (cursor moves, a title, a hyperlink) would act on the reader's terminal;
# they are shown escaped, lines and tabs as they are
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)] if c not in (0x09, 0x0A)}


def _shown(data: bytes) -> str:
    return data.decode("utf-8", "replace").translate(_CONTROLS)


def _recorded_argv(argv: object) -> object:
    """What the report shows of an exec's argv.  A list or tuple is copied
    (the caller may change its list after the exec); anything else is kept
    as it is, for exec() to refuse: list() of it raised the recorder's own
    TypeError in place of the SDK's ConfigError (`exec(5)`), made a str a
    list of characters, and emptied an iterator before exec() saw it."""
    return list(argv) if isinstance(argv, (list, tuple)) else argv


def _recording(sb: Sandbox, rec: _Record) -> None:
    """Wrap the instance's exec so that each call leaves its outcome in `rec`."""
    from .errors import ExecFailed

    inner: Callable[..., ExecResult] = sb.exec

    def exec(argv: Any, *args: Any, **kwargs: Any) -> ExecResult:
        rec.argv, rec.result, rec.error = _recorded_argv(argv), None, None
        rec.execs += 1
        try:
            rec.result = inner(argv, *args, **kwargs)
        except ExecFailed as e:  # check=True: the result is in the error
            rec.result = e.result
            raise
        except BaseException as e:
            rec.error = e
            raise
        return rec.result

    setattr(sb, "exec", exec)  # noqa: B010 - an instance attribute shadows the method


_RECORDS = pytest.StashKey[list[_Record]]()


@dataclass
class _Made:
    """The sandboxes one test made, closed at its teardown."""

    node: pytest.Item
    defaults: dict[str, Any]
    sandboxes: list[Sandbox] = field(default_factory=list)

    def make(self, label: str, **kwargs: Any) -> Sandbox:
        from . import Sandbox

        opts = _merge(self.defaults, kwargs)
        if opts.get("image") is not None:
            _IMAGES.ensure(str(opts["image"]))
        sb = Sandbox(**opts)
        try:
            sb.start()
        except BaseException:
            sb.close()
            raise
        self.sandboxes.append(sb)
        rec = _Record(f"sandbox {label} ({_describe(opts)})")
        self.node.stash.setdefault(_RECORDS, []).append(rec)
        _recording(sb, rec)
        return sb

    def close(self) -> None:
        errors = []
        for sb in reversed(self.sandboxes):
            try:
                sb.close()
            except Exception as e:  # close the others all the same
                errors.append(e)
        self.sandboxes.clear()
        if errors:
            raise errors[0]


def _describe(opts: dict[str, Any]) -> str:
    if opts.get("image") is not None:
        return f"image {opts['image']}"
    return f"rootfs {opts['rootfs']}" if opts.get("rootfs") is not None else "layers"


@contextmanager
def _made(request: pytest.FixtureRequest) -> Iterator[_Made]:
    node = request.node
    assert isinstance(node, pytest.Item)
    defaults = request.config.stash.get(_DEFAULTS, None) or _defaults(request.config)
    made = _Made(node, _merge(defaults, _marker_kwargs(node)))
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    """A running sandbox for this test, configured by @pytest.mark.sandbox
    and the --sandbox-* options; closed after the test."""
    with _made(request) as made:
        yield made.make("fixture")


@pytest.fixture
def sandbox_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., Sandbox]]:
    """``sandbox_factory(**kwargs)`` makes a running sandbox (the marker's
    and command line's options, overridden by kwargs); all of them are
    closed after the test."""
    with _made(request) as made:
        count = iter(range(1, 1 << 30))

        def factory(**kwargs: Any) -> Sandbox:
            return made.make(f"#{next(count)}", **kwargs)

        yield factory


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    records = item.stash.get(_RECORDS, None)
    if records and report.failed:
        for rec in records:
            report.sections.append((f"sandbox: last exec ({rec.label})", rec.text()))
    return report
