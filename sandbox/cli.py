"""The `sandbox` command.  `sandbox run` is shaped like `docker run`:

    sandbox run [--rootfs DIR | --image REF] [--env K=V] [--workdir DIR] [--user U[:G]]
                [--mount SRC:DST[:rw]] [--timeout S] [--json] -- CMD...
    sandbox run IMAGE [-- CMD...]       (the image's Entrypoint/Cmd without CMD)

Images: `sandbox pull REF`, `images [--verify]`, `rmi REF`, `prune`
(sandbox/images/cli.py); `sandbox gc` reclaims what killed processes left.

Its exit status is the command's, 128+N when a signal N ended it; 125 when
the sandbox itself could not run the command (bad option, failed start),
126 when the command exists but its execve failed (not executable, not a
binary the kernel runs), 127 when it does not exist (as a shell would say).
Options that argparse refuses are 125 too (not its 2: a command's own
status)."""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
from collections.abc import Sequence
from typing import NoReturn

from . import redact
from .errors import CommandNotFound, ConfigError, ExecError, SandboxError
from .images import cli as images_cli
from .limits import Limits
from .sizes import parse_seconds
from .spec import IdMap, Mount
from .users import is_num

EXIT_SANDBOX = 125
EXIT_CANNOT_EXEC = 126
EXIT_NOT_FOUND = 127


def default_rootfs() -> str:
    """The embedded default rootfs, built by the setup (images/busybox)."""
    home = os.environ.get("SANDBOX_HOME", "/var/lib/sandbox")
    return os.path.join(home, "rootfs", "busybox")


def _kv(option: str, items: Sequence[str]) -> dict[str, str]:
    out = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep:
            # docker's `-e NAME` takes the value from the caller's environment
            if k not in os.environ:
                raise ConfigError(option, f"{it!r}: write NAME=VALUE, or export {it} first")
            v = os.environ[k]
        out[k] = v
    return out


def _secrets(items: Sequence[str]) -> dict[str, bytes]:
    """--secret NAME=@FILE or NAME=env:VAR: never the value itself on the
    command line, where any process of the host could read it."""
    out = {}
    for it in items:
        name, sep, src = it.partition("=")
        if not sep or not (src.startswith("@") or src.startswith("env:")):
            raise ConfigError("--secret", f"{it!r}: write NAME=@FILE or NAME=env:VAR")
        if src.startswith("@"):
            try:
                with open(src[1:], "rb") as f:
                    out[name] = f.read()
            except OSError as e:
                raise ConfigError("--secret", f"{name}: cannot read {src[1:]!r}: {e.strerror}") from None
        else:
            var = src[4:]
            if var not in os.environ:
                raise ConfigError("--secret", f"{name}: the environment has no {var}")
            out[name] = os.environb[var.encode()]
    return out


def _mount(spec: str) -> Mount:
    parts = spec.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("rw", "ro")):
        raise ConfigError("--mount", f"{spec!r}: write SRC:DST, SRC:DST:ro or SRC:DST:rw")
    if not parts[0]:
        # abspath("") is the working directory: `-v "$DIR:/data"` with DIR
        # unset would show the caller's own directory to the sandbox
        raise ConfigError("--mount", f"{spec!r} has no SRC: write the host directory before the colon")
    return Mount(os.path.abspath(parts[0]), parts[1], read_only=not (len(parts) == 3 and parts[2] == "rw"))


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a bad option, which a caller (a judge reading the
    status) cannot tell from the command's own `exit 2`: here it is 125, the
    sandbox's own failure, as docker run's.  Subparsers are of this class
    too (add_subparsers makes them of the parent's)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_SANDBOX, f"{self.prog}: error: {message}\n")


def _seconds(text: str) -> float:
    """--timeout and --cpu-time, checked as Limits checks them but before a
    sandbox starts, and refused naming the option."""
    try:
        return parse_seconds("seconds", float(text))
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("seconds: ")) from None
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None


def _parser() -> argparse.ArgumentParser:
    ap: argparse.ArgumentParser = _Parser(prog="sandbox", description="Run commands in Linux sandboxes.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run a command in a new sandbox")
    run.add_argument("--rootfs", help="root file system directory (default: the embedded busybox rootfs)")
    run.add_argument("--layer", action="append", default=[], help="a layer directory, lowest first (repeat)")
    run.add_argument("--image", help="an OCI image reference (pulled when missing), e.g. debian:bookworm")
    run.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    run.add_argument("-w", "--workdir", help="working directory (default: the image's, or /)")
    run.add_argument("-u", "--user")
    run.add_argument("-v", "--mount", action="append", default=[], metavar="SRC:DST[:rw]")
    run.add_argument("--hostname", default="sandbox")
    run.add_argument("--read-only", action="store_true")
    run.add_argument("--disk", default="1G", help="size of the writable layer (tmpfs)")
    run.add_argument("--timeout", type=_seconds, help="seconds before the command is killed")
    run.add_argument("-i", "--interactive", action="store_true", help="pass this process's stdin")
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    run.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="NAME=@FILE|NAME=env:VAR",
        help="a secret at /run/secrets/NAME, from a file or an environment variable",
    )
    run.add_argument(
        "--redact-secrets", action="store_true", help="scrub the secrets' values from the command's output"
    )
    run.add_argument("--seccomp", default="default", help='"default", "judge", "none", or a profile file')
    run.add_argument("--cap-add", action="append", default=[], metavar="CAP")
    run.add_argument(
        "--idmap",
        default="auto",
        metavar="auto|shared|HOST_START",
        help="host ids for container 0..65535: its own range (default), the shared one, or from HOST_START",
    )
    lim = run.add_argument_group("limits (as docker run's where Docker has them)")
    lim.add_argument("-m", "--memory", help='memory, e.g. "256M"')
    lim.add_argument("--memory-swap", help="memory plus swap (default: = --memory, no swap; -1: unlimited)")
    lim.add_argument("--cpus", type=float, help="CPU bandwidth in CPUs, e.g. 1.5")
    lim.add_argument("--cpuset-cpus", help='CPUs to run on, e.g. "0-1"')
    lim.add_argument("--pids-limit", type=int, help="processes at once")
    lim.add_argument("--cpu-time", type=_seconds, help="CPU seconds of all its processes")
    lim.add_argument("--output-limit", help="bytes kept per stream; then the command is killed")
    lim.add_argument("--open-files", type=int)
    lim.add_argument("--file-size", help="largest file it may write")
    lim.add_argument("--stack", help="stack size")
    run.add_argument("--network", default="none", help='"none" (default), "bridge", or a network name')
    run.add_argument("-p", "--publish", action="append", default=[], metavar="HOST_PORT:PORT[/udp]")
    run.add_argument("--egress", action="append", metavar="CIDR", help="allow only these destinations")
    run.add_argument("command", nargs=argparse.REMAINDER)
    sub.add_parser("doctor", help="check what this host offers sandboxes, and how to fix the rest")
    images_cli.add_parsers(sub)
    gc = sub.add_parser("gc", help="reclaim what crashed sandbox owners and killed pulls left behind")
    gc.add_argument("--networks", action="store_true", help="remove unused persistent networks too")
    return ap


def _limits(a: argparse.Namespace) -> Limits:
    swap: object = a.memory_swap
    if swap in ("-1", -1):
        swap = -1
    return Limits(
        memory=a.memory,
        memory_swap=swap,  # type: ignore[arg-type]
        cpus=a.cpus,
        cpuset=a.cpuset_cpus,
        pids=a.pids_limit,
        cpu_time=a.cpu_time,
        output=a.output_limit,
        open_files=a.open_files,
        file_size=a.file_size,
        stack=a.stack,
    )


def cmd_gc(networks: bool = False) -> int:
    """Each part reclaims its own: cgroups of dead owners, id range leases,
    network objects (veths, leases, rules), then the image store."""
    from . import idranges, images, network
    from .cgroup import gc

    for path in gc.collect(everywhere=True):
        print(f"gc: removed cgroup {path}")
    for start in idranges.gc():
        print(f"gc: removed the lease of host ids {start}.. (its process is gone)")
    for line in network.gc(networks=networks):
        print(f"gc: removed {line}")
    for line in images.gc():
        print(f"gc: {line}")
    return 0


def _stream(p: object, out: int, err: int) -> dict[int, redact.Scrubber]:
    """Copy the command's output to ours as it comes.  With redact_secrets,
    through a Scrubber per stream: what each holds back at the return goes
    before the rest that wait() collects (_rest)."""
    from ._sync import Process

    assert isinstance(p, Process)
    col = p._col
    scrubbers = {n: redact.Scrubber(col.redact) for n in (1, 2) if col.redact}
    files = {
        f.fileno(): (f, dst, n) for n, f, dst in ((1, p.stdout, out), (2, p.stderr, err)) if f is not None
    }
    while files:
        ready, _, _ = select.select(list(files), [], [], col.remaining())
        if not ready:
            return scrubbers  # the deadline: wait() kills it
        for fd in ready:
            f, dst, n = files[fd]
            data = os.read(fd, 65536)
            if not data:
                del files[fd]
                continue
            kept = col.passed(n, data)  # the output limit holds here too
            s = scrubbers.get(n)
            os.write(dst, s.feed(kept) if s is not None else kept)
            if len(kept) < len(data):
                if col.limits.closes_output:
                    del files[fd]
                    f.close()  # the command's next write gets EPIPE
                elif not col.killed:
                    col.killed = True
                    p.kill()
            if p.poll() is not None:
                return scrubbers
    return scrubbers


def _rest(scrubbers: dict[int, redact.Scrubber], n: int, data: bytes, cut: bool) -> bytes:
    """What a stream still gives after _stream: its scrubber's held bytes
    and wait()'s (scrubbed already, but a secret may begin in the held part).
    `cut`: the output cap ended the streams, maybe inside a secret: a held
    start of one goes too (redact.scrub)."""
    s = scrubbers.get(n)
    return data if s is None else redact.scrub(s.end() + data, s.found, cut)


def _network(a: argparse.Namespace) -> dict[str, object]:
    from .network import Network

    publish: dict[int | str, int | str] = {}
    for it in a.publish:
        host, sep, port = it.partition(":")
        if not sep or not is_num(host):
            raise ConfigError("--publish", f"{it!r}: write HOST_PORT:PORT, e.g. 8080:80 or 5353:53/udp")
        proto = port.partition("/")[2]
        publish[f"{host}/{proto}" if proto else int(host)] = int(port) if is_num(port) else port
    net = a.network if a.network in ("none", "bridge") else Network(a.network)
    return {"network": net, "publish": publish or None, "egress": a.egress}


def _idmap(text: str) -> IdMap | str:
    if text in ("auto", "shared"):
        return text
    if not is_num(text):  # (not isdigit(): '²' passed it, and int() then raised ValueError)
        raise ConfigError("--idmap", f"{text!r}: write auto, shared, or the first host id, e.g. 300000")
    return IdMap(int(text))


def cmd_run(a: argparse.Namespace) -> int:
    from ._base import PIPE
    from ._sync import Sandbox

    argv = a.command[1:] if a.command[:1] == ["--"] else a.command
    image = a.image
    cmd = a.command
    positional_image = cmd[:1] != ["--"] and (len(cmd) == 1 or cmd[1:2] == ["--"])
    if image is None and not (a.rootfs or a.layer) and positional_image:
        image, argv = cmd[0], cmd[2:]  # sandbox run IMAGE [-- CMD...], as docker run
    if not argv and image is None:
        raise ConfigError("COMMAND", "nothing to run: give it after --, e.g. sandbox run -- echo hi")
    if sum(map(bool, (a.layer, a.rootfs, image))) > 1:
        raise ConfigError("--image", "give one of IMAGE (--image), --rootfs or --layer")
    kw: dict[str, object] = {"layers": a.layer} if a.layer else {"rootfs": a.rootfs or default_rootfs()}
    if image is not None:
        images_cli.ensure(image)  # a pull shows its progress
        kw = {"image": image}
    with Sandbox(
        **kw,  # type: ignore[arg-type]
        env=_kv("--env", a.env),
        workdir=a.workdir,
        user=a.user,
        hostname=a.hostname,
        mounts=[_mount(m) for m in a.mount],
        read_only=a.read_only,
        disk=a.disk,
        secrets=_secrets(a.secret),
        redact_secrets=a.redact_secrets,
        seccomp=None if a.seccomp == "none" else a.seccomp,
        cap_add=a.cap_add,
        idmap=_idmap(a.idmap),
        limits=_limits(a),
        **_network(a),  # type: ignore[arg-type]
    ) as sb:
        if not argv and sb.image is not None:
            argv = sb.image.argv()
        if not argv:
            raise ConfigError("COMMAND", f"the image {image} has no Entrypoint or Cmd: give one after --")
        data = sys.stdin.buffer.read() if a.interactive else None
        if a.json:
            r = sb.exec(argv, stdin=data, timeout=a.timeout)
            print(r.to_json())
            a.json_printed = True  # a failing close() after it prints no second object
        else:
            p = sb.spawn(argv, stdin=PIPE if data is not None else -3, timeout=a.timeout)
            if data is not None:
                r = p.communicate(data)
                sys.stdout.buffer.write(r.stdout)
                sys.stderr.buffer.write(r.stderr)
            else:
                held = _stream(p, sys.stdout.fileno(), sys.stderr.fileno())
                r = p.wait()
                sys.stdout.buffer.write(_rest(held, 1, r.stdout, r.truncated))
                sys.stderr.buffer.write(_rest(held, 2, r.stderr, r.truncated))
            sys.stdout.flush()
            if r.reason == "timeout":
                print(f"sandbox: killed after the {a.timeout} s timeout", file=sys.stderr)
            elif r.reason not in ("exited", "signaled"):
                print(f"sandbox: ended by {r.describe()} (reason {r.reason})", file=sys.stderr)
    if r.signal is not None:
        return 128 + r.signal
    return r.exit_code or 0


def _status_of(e: SandboxError) -> int:
    if isinstance(e, CommandNotFound):
        return EXIT_NOT_FOUND
    if isinstance(e, ExecError) and e.stage == "exec":
        return EXIT_CANNOT_EXEC  # found, but its execve failed (EACCES, ENOEXEC, ...)
    return EXIT_SANDBOX


def main(argv: Sequence[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    try:
        if a.cmd == "run":
            return cmd_run(a)
        if a.cmd in images_cli.COMMANDS:
            return images_cli.main(a)
        if a.cmd == "gc":
            return cmd_gc(a.networks)
        if a.cmd == "doctor":
            from . import doctor

            checks = doctor.run()
            print(doctor.report(checks))
            return 1 if any(c.status == doctor.FAIL for c in checks) else 0
    except SandboxError as e:
        status = _status_of(e)
        print(f"sandbox: {e}", file=sys.stderr)
        if a.cmd == "run" and a.json and not getattr(a, "json_printed", False):
            # a reader of --json parses stdout whatever happened: one object
            # there too (the message is the sandbox's, maybe untrusted: as data)
            print(json.dumps({"error": type(e).__name__, "message": str(e), "status": status}))
        return status
    return EXIT_SANDBOX


if __name__ == "__main__":
    sys.exit(main())
