"""What the sync and the async front ends share: option handling, the launch,
exec requests and results.  Everything here is free of blocking I/O; the
front ends (`_sync.py`, `_async.py`) only move bytes."""

from __future__ import annotations

import array
import dataclasses
import errno
import itertools
import os
import socket
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import _core, cgroup, files, idranges, interrupts, layout, netpool, protocol, redact, users
from . import network as _network
from . import warm as _warm
from .collector import Collector
from .errors import (
    ConfigError,
    ExecError,
    HostError,
    LaunchError,
    ProtocolError,
    SandboxClosed,
    os_error_text,
)
from .limits import Limits, check_limits
from .reaper import reaper
from .sizes import parse_seconds
from .spec import DEFAULT_DISK, DEFAULT_PATH, Mount, Spec, check_abs_path, check_argv, check_env, make_spec
from .spec import IdMap as IdMap
from .watchdog import watchdog

if TYPE_CHECKING:
    from .network.lifecycle import Attachment

NO_LIMITS = Limits()  # frozen: one for every sandbox without limits
START_TIMEOUT = 30.0  # seconds for the init to finish its setup
# ... for a warm one (made ahead): one stuck in its setup is replaced by a
# cold launch after this long, where the start waited START_TIMEOUT for it
WARM_READY_TIMEOUT = 2.0
REPLY_SIZE = 4096
FD_SPACE = socket.CMSG_SPACE(4 * 4)
FIXED_MAX = 64  # exec requests kept encoded (see _exec_message)
USERS_MAX = 16  # resolved exec users kept per sandbox (see _plain_user)


def _network_netns() -> int:
    fd = _core.make_netns()
    if fd < 0:
        raise HostError(f"bridge mode needs a network namespace: {os_error_text(-fd)}")
    return fd


INIT_GONE = "the sandbox is gone: its init exited"
REPLY_CLOSED = "the sandbox's init closed the reply channel: it died or was closed"
OVERSIZED = "an oversized reply from the sandbox"


_FIXED: dict[tuple[int, int, users.User], tuple[Spec, Limits, protocol.ExecFixed]] = {}


def decode_reply(data: bytes) -> protocol.Reply:
    """A reply from the sandbox (untrusted): ProtocolError when malformed."""
    try:
        return protocol.decode(data)
    except protocol.Malformed as e:
        raise ProtocolError(f"a malformed reply from the sandbox: {e}") from None


def send_request(ctl: socket.socket, msg: bytes, fds: Sequence[int]) -> None:
    """One request and its fds, as one atomic SEQPACKET message: safe from
    several threads at once."""
    try:
        ctl.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    except (BrokenPipeError, ConnectionResetError) as e:
        raise SandboxClosed(INIT_GONE) from e


def recv_reply(sock: socket.socket) -> tuple[protocol.Reply, int | None]:
    """One reply and at most one passed fd (anything more is closed)."""
    # close-on-exec at once: an fd received without it (a file being written
    # into a sandbox) was inherited by a sandbox launched meanwhile from
    # another thread, until its init closed it, and an exec of that file in
    # the first sandbox failed with ETXTBSY (seen once in CI)
    data, anc, flags, _ = sock.recvmsg(REPLY_SIZE, FD_SPACE, socket.MSG_CMSG_CLOEXEC)
    fd = None
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            got = array.array("i")
            got.frombytes(payload[: len(payload) - len(payload) % 4])
            for f in got:
                if fd is None:
                    fd = f
                else:
                    os.close(f)
    if not data:
        if fd is not None:
            os.close(fd)
        raise SandboxClosed(REPLY_CLOSED)
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        if fd is not None:
            os.close(fd)
        raise ProtocolError(OVERSIZED)
    try:
        return decode_reply(data), fd
    except ProtocolError:
        if fd is not None:
            os.close(fd)
        raise


def setup_error(reply: protocol.Reply) -> Exception:
    if reply.type != protocol.REP_SETUP_FAIL:
        return ProtocolError(f"the sandbox's init answered its plan with message type {reply.type}")
    try:
        f = protocol.decode_fail(reply.body)
    except protocol.Malformed as e:
        return ProtocolError(f"a malformed setup failure: {e}")
    what, _, path = f.detail.partition(" ")
    hint = ""
    if what == "overlay":
        hint = "the layers must be on a file system overlayfs accepts as a lower layer (not overlayfs itself)"
    elif f.errno == errno.EROFS:
        hint = "the rootfs is read-only: create the path in the image, or drop read_only=True"
    elif path.startswith("/") and f.errno in (errno.ENOTDIR, errno.ELOOP):
        hint = "a path of the mount destination is a symlink or a file in the image"
    return LaunchError(f"setup step {f.stage} ({what})", f.errno, path, hint)


def read_stream(fd: int) -> bytes:
    """One read of a command's output: b"" at its end, which for a pty is EIO."""
    try:
        return os.read(fd, 65536)
    except OSError as e:
        if e.errno == errno.EIO:
            return b""
        raise


def stdin_bytes(stdin: object) -> bytes | None:
    """exec()'s stdin: bytes, or str (as UTF-8), or None."""
    if stdin is None or isinstance(stdin, bytes):
        return stdin
    if isinstance(stdin, str):
        return stdin.encode()
    raise ExecError(f"stdin: expected bytes or str, got {type(stdin).__name__}")


PIPE = -1
DEVNULL = -3


@dataclass
class Spawning:
    """An exec on its way: our ends of its pipes, the fds that go with the
    request, and its reply socket."""

    col: Collector
    mine: dict[int, int] = field(default_factory=dict)
    theirs: list[int] = field(default_factory=list)
    mask: int = 0
    req_id: int = 0
    msg: bytes = b""
    reply: socket.socket | None = None

    def sent(self) -> None:
        """The init has its copies now: close ours."""
        for fd in self.theirs:
            os.close(fd)
        self.theirs = []

    def abort(self) -> None:
        self.col.abandon()
        self.sent()
        for fd in self.mine.values():
            os.close(fd)
        self.mine = {}
        if self.reply is not None:
            self.reply.close()


class SandboxBase:
    """Options, validation and protocol shared by Sandbox and AsyncSandbox."""

    def __init__(
        self,
        rootfs: str | os.PathLike[str] | None = None,
        *,
        image: str | None = None,
        layers: Sequence[str | os.PathLike[str]] | None = None,
        hostname: str = "sandbox",
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        user: str | int | None = None,
        mounts: Sequence[Mount] = (),
        disk: str | int | None = None,
        read_only: bool = False,
        idmap: IdMap | str | None = None,
        seccomp: str | os.PathLike[str] | dict[str, object] | None = "default",
        cap_add: Sequence[str] = (),
        secrets: Mapping[str, bytes | str | os.PathLike[str]] | None = None,
        redact_secrets: bool = False,
        seccomp_log: bool = False,
        limits: Limits | dict[str, object] | None = None,
        network: str | _network.Network = "none",
        publish: Mapping[int | str, int | str] | None = None,
        egress: Sequence[str] | None = None,
        warm: bool = True,
    ) -> None:
        self._net = _network.check(network, publish, egress)
        if self._net is not None:
            _network.warm_up()
        if not isinstance(warm, bool):
            raise ConfigError("warm", f"expected True or False, got {warm!r}")
        lim = check_limits("limits", limits) or NO_LIMITS
        if disk is not None and lim.disk is not None:
            raise ConfigError("disk", "given twice, as disk= and as limits.disk: keep one")
        if disk is None:
            disk = DEFAULT_DISK if lim.disk is None else int(lim.disk)
        self._limits = lim
        self._group: cgroup.Group | None = None
        self._group_lock = threading.Lock()
        resolved = None
        image_user = None
        if image is not None:
            # an OCI image (pulled when missing): its layers, and its defaults under ours
            from .images.for_sandbox import resolve

            resolved = resolve(image, rootfs=rootfs, layers=layers, env=env, workdir=workdir, user=user)
            if user is None and resolved.user is not None:
                image_user = str(resolved.user)  # a failure to resolve it is the image's, not `user`
            layers, env, workdir, user = resolved.layers, resolved.env, resolved.workdir, resolved.user
        workdir = "/" if workdir is None else workdir
        self._spec = make_spec(
            rootfs=rootfs,
            layers=layers,
            hostname=hostname,
            env=env,
            workdir=workdir,
            user=user,
            mounts=mounts,
            disk=disk,
            read_only=read_only,
            idmap=idmap,
            seccomp=seccomp,
            cap_add=cap_add,
            secrets=secrets,
            redact_secrets=redact_secrets,
            seccomp_log=seccomp_log,
        )
        self.image = resolved.image if resolved else None
        # taken once the options are valid, so that a bad one leaves nothing held
        self._image_hold = resolved.hold() if resolved else None
        self._resolved = resolved
        # set up ahead of time (sandbox/warm.py): not with per-launch secrets or leases
        self._warm = _warm.enabled(warm) and not self._spec.secrets and self._net is None
        self._was_warm = False
        self._launched: _core.Launched | None = None
        self._closed = False
        self._ids = itertools.count(1)
        self._userdb: tuple[bytes | None, bytes | None] | None = None
        self._users: dict[str | None, users.User] = {}  # see _plain_user
        self._image_user = image_user  # the image's User, where it is the sandbox's
        self._att: Attachment | None = None

    # -- lifecycle -------------------------------------------------------------

    def _launch(self) -> _core.Launched:
        if self._closed:
            raise SandboxClosed("this sandbox was closed: make a new Sandbox")
        if self._launched is not None:
            raise SandboxClosed("this sandbox is already started")
        # the sandbox's cgroup first (where its limits need one): its execs' are children of it
        self._group = cgroup.make_sandbox_group(self._limits)
        try:
            if self._warm:
                pool = _warm.pool()
                launched = pool.take(self._spec)
                if launched is not None:
                    self._was_warm = True  # its READY is read as a cold one's
                    return launched
            return self._launch_cold()
        except BaseException:
            # (also an interrupt in the warm pool's wait: the group was left on the host)
            with interrupts.deferred():
                self._drop_group()
            raise

    @staticmethod
    def _first_reply(launched: _core.Launched) -> BaseException | None:
        """Read the init's first reply (it is there): None for READY, else
        why the setup failed."""
        try:
            reply, fd = recv_reply(launched.ctl)
        except SandboxClosed as e:
            err = LaunchError("setup", 0, "", "the init died during setup")
            err.__cause__ = e
            return err
        if fd is not None:
            os.close(fd)
        return None if reply.type == protocol.REP_READY else setup_error(reply)

    def _ready_timeout(self) -> float:
        return WARM_READY_TIMEOUT if self._was_warm else START_TIMEOUT

    @staticmethod
    def _not_ready(timeout: float) -> LaunchError:
        """No READY in `timeout` seconds: for `_setup_failed`."""
        return LaunchError("setup", 110, "", f"the init did not finish its setup in {timeout:g} s")

    def _setup_failed(self, launched: _core.Launched, err: BaseException) -> _core.Launched:
        """The first reply was not READY (or none came).  A warm sandbox's failure (made
        ahead, by another thread, maybe at a worse time) is not the caller's:
        it is launched cold instead, and a failure then is its own."""
        if not self._was_warm:
            self._reap(launched)
            raise err
        self._was_warm = False
        try:
            with interrupts.deferred():
                _core.reap(launched)
        except BaseException:
            self._drop_group()
            raise
        return self._launch_cold()  # drops the group itself if it fails

    def _launch_cold(self) -> _core.Launched:
        umap, ids = idranges.for_launch(self._spec.idmap)
        netns: int | None = None
        launched: _core.Launched | None = None
        try:
            netns = netpool.pool.take(returned=self._net is None)
            spec = self._spec
            if self._net is not None:
                # bridge mode: the namespace is configured before the launch
                if netns is None:
                    netns = _network_netns()
                self._att = _network.attach(self._net, spec, netns)
                spec = dataclasses.replace(spec, mounts=spec.mounts + self._att.mounts)
            plan, trees = layout.build(spec)
            launched = _core.launch(plan, trees, umap, umap, netns_fd=-1 if netns is None else netns)
            # (attribute stores only, up to launched(): nothing to interrupt)
            if ids is not None:
                launched.release, ids = ids.release, None  # held until the init is reaped
            if self._net is None:
                # no network: the namespace goes back to the pool when the sandbox is reaped
                launched.netns, netns = netns, None
            netpool.pool.launched()
            if netns is not None:
                fd, netns = netns, None
                os.close(fd)  # bridge mode: the init holds its namespace itself
            return launched
        except BaseException:
            # A failure, or an interrupt (KeyboardInterrupt) anywhere above:
            # an init that runs is stopped first (its id lease and namespace
            # go back once it is gone), then what is still held here.
            with interrupts.deferred():
                if launched is not None:
                    _core.reap(launched)
                if ids is not None:
                    ids.release()
                netpool.pool.launched()
                if netns is not None:
                    if self._net is None:
                        netpool.pool.give_back(netns)  # unused
                    else:
                        os.close(netns)
                self._drop_group()
                self._detach_network()
            raise

    def _exec_group(self) -> cgroup.Group:
        """The group an exec's own group goes in: the sandbox's.  A sandbox
        without cgroup limits gets one at its first exec that needs it."""
        with self._group_lock:
            if self._group is None:
                if self._launched is None:
                    raise SandboxClosed("the sandbox is not running")
                self._group = cgroup.make_sandbox_group(self._limits, always=True)
            assert self._group is not None
            return self._group

    def _drop_group(self) -> None:
        with self._group_lock:
            g, self._group = self._group, None
        if g is not None:
            cgroup.dispose(g)

    def _release_image(self) -> None:
        """On close: prune and rmi may take the image's layers again."""
        hold, self._image_hold = getattr(self, "_image_hold", None), None
        if hold is not None:
            hold.release()

    def _detach_network(self) -> None:
        att, self._att = self._att, None
        if att is not None:
            _network.detach(att)

    def _ctl(self) -> socket.socket:
        return self._running().ctl

    def _running(self) -> _core.Launched:
        launched = self._launched
        if launched is None:
            raise SandboxClosed("the sandbox is not running: use it as a context manager or call start()")
        if not launched.mine:
            # its init, cgroups and requests are the parent's: a child's
            # execs collided with the parent's (cgroup names, replies)
            raise SandboxClosed(
                f"this sandbox belongs to process {launched.owner} (inherited over a fork): "
                "start a new Sandbox in this process"
            )
        return launched

    def close(self) -> None:
        """Stop every process of the sandbox and free what it held (in the
        background: `sandbox.wait_closed()` waits for it).  Idempotent.

        The sandbox lets go of its init only once the reaper has it: an
        interrupt in between (KeyboardInterrupt) left a zombie init with
        its cgroups, lease and fds, which a second close() (or the garbage
        collector) now frees."""
        self._closed = True
        launched = self._launched
        if launched is not None:
            self._reap(launched)  # the image is released once the init is gone
            self._launched = None
        else:
            self._drop_group()  # one an interrupted start() made
            self._release_image()

    def _reap(self, launched: _core.Launched) -> None:
        """Kill the init; once it is gone (sandbox/reaper.py: in the background),
        free what the sandbox held.  A sandbox inherited over a fork is the
        parent's: a child only closes its fds."""
        # after the wait: the pid namespace is gone, and with it every process
        # of the sandbox; nothing runs on the image's layers any more
        after = [self._drop_group, self._detach_network, self._release_image]
        if not reaper.reap(launched, after):
            return  # on its way already (a second close), or another process's
        if self._net is not None:
            # on a network: gone before its address may go to another sandbox
            reaper.wait(launched)
        if self._warm:
            # the next one for these options is asked for now (and made while
            # the caller's next exec runs: sandbox/warm.py)
            res = self._resolved
            _warm.pool().started(self._spec, (lambda: res.hold().release) if res is not None else None)

    def __del__(self) -> None:
        # A sandbox dropped while running: stop it first, then say so, as Popen does.
        launched = getattr(self, "_launched", None)
        if launched is not None:
            text = f"{self!r} was never closed: use it as a context manager"
            with interrupts.deferred():  # an exception here is only printed: the reap would be lost
                self._reap(launched)
            self._launched = None
            if launched.mine:  # not in a forked child, which never owned it
                warnings.warn(text, ResourceWarning, stacklevel=1)

    @property
    def pid(self) -> int | None:
        """The init's pid on the host, while the sandbox runs."""
        return self._launched.pid if self._launched else None

    @property
    def hostname(self) -> str:
        return self._spec.hostname

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self._launched else "created")
        return f"<{type(self).__name__} {self._spec.hostname} {state} layers={len(self._spec.layers)}>"

    # -- exec --------------------------------------------------------------------

    def _exec_args(
        self, argv: object, env: object, cwd: object, user: object, timeout: object
    ) -> tuple[list[str], list[tuple[str, str]], str, str | None, float | None]:
        args = check_argv(argv)
        extra = check_env("env", env)
        wd = self._spec.workdir if cwd is None else check_abs_path("cwd", cwd)
        if user is not None and (not isinstance(user, (str, int)) or isinstance(user, bool)):
            raise ConfigError("user", f"expected 'name', 'uid' or 'uid:gid', got {user!r}")
        u = str(user) if user is not None else self._spec.user
        t = None if timeout is None else parse_seconds("timeout", timeout)
        return args, extra, wd, u, t

    def _exec_message(
        self,
        argv: list[str],
        extra: list[tuple[str, str]],
        cwd: str,
        user: users.User,
        fds_mask: int,
        flags: int,
        req_id: int,
        limits: Limits,
    ) -> bytes:
        # The environment, ids and rlimits of an exec with the sandbox's own
        # limits and no extra env are the same every time: encoded once per
        # user, for every sandbox of the same (kept) Spec and Limits (~8 us
        # of an exec's ~60 us of Python, measured in a loop)
        # (not with secrets: the entry would keep the Spec, and them, in memory)
        plain = not extra and limits is self._limits and not self._spec.secrets
        # the entry holds the Spec and the Limits: their ids are not reused meanwhile
        key = (id(self._spec), id(limits), user)
        hit = _FIXED.get(key) if plain else None
        fixed = hit[2] if hit is not None else None
        if fixed is None:
            env = {"PATH": DEFAULT_PATH, "HOSTNAME": self._spec.hostname, "HOME": user.home}
            env.update(self._spec.env)
            env.update(extra)
            fixed = protocol.exec_fixed(
                user.uid, user.gid, list(user.groups), limits.rlimits(), [f"{k}={v}" for k, v in env.items()]
            )
            if plain:
                if len(_FIXED) >= FIXED_MAX:
                    _FIXED.clear()
                _FIXED[key] = (self._spec, limits, fixed)
        try:
            return protocol.encode_exec_fixed(req_id, fixed, argv, cwd, fds_mask, flags, self._spec.caps)
        except ValueError as e:
            raise ConfigError("argv", f"{e}; pass large data through stdin or files") from None

    def _plain_user(self, spec: str | None) -> users.User | None:
        """The exec user of a spec that needs no lookup in the sandbox's
        files (none, or numeric ids), resolved once; None for a name."""
        u = self._users.get(spec)
        if u is None and not users.needs_lookup(spec):
            u = self._users[spec] = self._resolve_user(spec)
            if len(self._users) > USERS_MAX:
                self._users.clear()
        return u

    def _user_op(self, spec: str | None) -> files.Op[users.User]:
        """The exec user; names are looked up in the sandbox's own files."""
        if users.needs_lookup(spec):
            if self._userdb is None:
                pw = yield from files.read_bytes("/etc/passwd", True, users.MAX_DB)
                gr = yield from files.read_bytes("/etc/group", True, users.MAX_DB)
                self._userdb = (pw, gr)
            return self._resolve_user(spec, *self._userdb)
        return self._resolve_user(spec)

    def _resolve_user(
        self, spec: str | None, passwd: bytes | None = None, group: bytes | None = None
    ) -> users.User:
        """users.resolve; where `spec` is the image's User, a failure says
        so (an ImageError with the fix), not that the caller's `user` is bad."""
        try:
            return users.resolve("user", spec, passwd, group)
        except ConfigError as e:
            if spec is None or spec != self._image_user:
                raise
            from .images.errors import ImageError

            why = str(e).removeprefix("user: ")
            raise ImageError(
                f"{self.image.ref if self.image else 'the image'}: the image's User {spec!r} cannot be used "
                f"({why}); pass user= to choose the user"
            ) from None

    def _after_start_op(self) -> files.Op[None]:
        """After READY: secrets of a sandbox whose user is a name go to that
        user (the name is looked up in the sandbox's own /etc/passwd)."""
        if self._spec.secrets and users.needs_lookup(self._spec.user):
            u = yield from self._user_op(self._spec.user)
            for sec in self._spec.secrets:
                yield from files.chown(f"{layout.SECRETS_DIR}/{sec.name}", u.uid, u.gid)
            yield from files.seal_secrets()  # read-only now, as for numeric users

    def _prepare_spawn(
        self,
        streams: tuple[int, int, int],
        user: users.User,
        timeout: float | None,
        args: list[str],
        extra: list[tuple[str, str]],
        wd: str,
        quiet: bool,
        pty: tuple[int, int] | None = None,
        limits: Limits | None = None,
        make_pipes: bool = True,
    ) -> Spawning:
        """Pipes for the requested streams (PIPE or DEVNULL each) and the exec
        request; the caller sends `msg` with `theirs`, then calls `sent()`.
        `quiet`: no STARTED record (exec() reads the exit record only).
        `make_pipes=False`: neither pipes nor the reply socket; the streams'
        bits are in `mask & 7`, and sandbox/execio.py makes them as it sends."""
        stdin, stdout, stderr = streams
        found: tuple[bytes, ...] = ()
        if self._spec.redact_secrets:
            found = redact.forms(tuple(x.content for x in self._spec.secrets))
        if limits is not None and limits.disk is not None:
            for fd in pty or ():
                os.close(fd)
            raise ConfigError(
                "limits.disk",
                "the disk is the sandbox's (its writable layer): set it on the Sandbox, not per exec",
            )
        lim = self._limits.merge(limits)
        if timeout is not None:
            lim = dataclasses.replace(lim, timeout=timeout)
        sp = Spawning(Collector(args, limits=lim, redact=found))
        try:
            if pty is not None:
                # A pty of ours (of the sandbox's devpts) is the command's only
                # terminal (stdin, stdout and stderr, merged): the master stays here.
                master, slave = pty
                sp.mine[1] = master
                sp.mine[0] = os.dup(master)
                sp.theirs += [slave, os.dup(slave), os.dup(slave)]
                sp.mask = 7
            else:
                for n, want, reading in ((0, stdin, False), (1, stdout, True), (2, stderr, True)):
                    if want == PIPE:
                        sp.mask |= 1 << n
                        if make_pipes:
                            r, w = os.pipe2(os.O_CLOEXEC)
                            sp.mine[n], there = (r, w) if reading else (w, r)
                            sp.theirs.append(there)
            sp.req_id = next(self._ids)
            if lim.needs_cgroup:
                # its own cgroup, entered by the exec's child before anything else
                sp.col.group = self._exec_group().child(lim)
                cg_fds = sp.col.group.attach_files()
                sp.theirs += cg_fds
                sp.mask |= len(cg_fds) << 8
            flags = (protocol.EXEC_NO_STARTED if quiet else 0) | (protocol.EXEC_TTY if pty else 0)
            sp.msg = self._exec_message(args, extra, wd, user, sp.mask, flags, sp.req_id, lim)
            if make_pipes:
                sp.reply, rtheirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                sp.theirs.insert(0, rtheirs.detach())
        except BaseException:
            sp.abort()
            raise
        sp.col.arm()
        watchdog.watch(sp.col)
        return sp
