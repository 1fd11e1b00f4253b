"""The mount layout of a sandbox, as a launch plan.  This is where it is
decided; the C init only executes it.

Inside the sandbox's own mount namespace (so all of it vanishes with the
sandbox, and nothing ever shows in the host's mount table):

  /tmp (host's, shadowed)   staging tmpfs, size = disk limit
     0 1 2 ...              the layers: detached, idmapped, read-only trees
     u w                    overlay upper and work dirs (the writable layer)
     tmp shm                bound at /tmp and /dev/shm: one budget for all
     r                      the overlay: the new root
  then, resolved inside r:  /proc, /dev (a read-only template with six
                            device nodes, plus devpts, shm, mqueue), /tmp, /etc/hostname,
                            /etc/hosts, the user's mounts; pivot_root into r.
"""

from __future__ import annotations

import dataclasses
import functools
import os

from . import _core, bpf, devices, users
from .plan import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, Plan
from .spec import Spec

STAGE = "/tmp"


def hosts_file(hostname: str) -> str:
    return f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"


def build(spec: Spec) -> tuple[bytes, tuple[_core.Tree, ...]]:
    """The encoded plan and its trees.  All but the secrets is cached by spec
    (sandboxes made from one spec share it); secrets are added per launch, so
    that no cache ever holds them."""
    # Secrets for a named user are given to it, then sealed, after the start:
    # by an init that does not carry the filter yet (it denies mount).
    late_seal = bool(spec.secrets) and users.needs_lookup(spec.user)
    # a mount source's kind (file or directory) decides the plan's mount
    # point: asked at each build, since the path may name another kind now
    dirs = tuple(os.path.isdir(m.src) for m in spec.mounts)
    base, trees = _cached(dataclasses.replace(spec, secrets=()), late_seal, dirs)
    return base.encode(_secrets(spec) if spec.secrets else None), trees


@functools.lru_cache(maxsize=256)
def _cached(spec: Spec, late_seal: bool, dirs: tuple[bool, ...]) -> tuple[Plan, tuple[_core.Tree, ...]]:
    p, trees = _build(spec, late_seal, dirs)
    return p, tuple(trees)


SECRETS_DIR = "/run/secrets"
SECRETS_SIZE = 8 << 20


def _secrets(spec: Spec) -> Plan:
    """After the pivot: a small tmpfs at /run/secrets, a file per secret,
    mode 0400, owned by the sandbox's default user (numeric ones; a named
    user is looked up after the start, the files are given to it, and the
    tmpfs is made read-only then)."""
    p = Plan()
    uid = gid = 0
    if spec.user and all(part.isascii() and part.isdigit() for part in spec.user.split(":")):
        parts = spec.user.split(":")
        uid = int(parts[0])
        gid = int(parts[1]) if len(parts) > 1 else uid
    if spec.read_only:
        # nothing can be made in a read-only root: a small tmpfs on /run first
        p.mkdir_safe("/run")
        p.mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=1m,mode=0755")
    p.mkdir_safe(SECRETS_DIR)
    p.mount("tmpfs", SECRETS_DIR, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"size={SECRETS_SIZE},mode=0755")
    for sec in spec.secrets:
        p.secret(f"{SECRETS_DIR}/{sec.name}", sec.content, 0o400, uid, gid)
    if not users.needs_lookup(spec.user):
        # read-only, unless the files must still go to a named user after the start
        p.remount(SECRETS_DIR, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    return p


def _build(spec: Spec, late_seal: bool, dirs: tuple[bool, ...]) -> tuple[Plan, list[_core.Tree]]:
    p = Plan()
    trees: list[_core.Tree] = []
    # Nothing we mount may propagate back to the host (it could not anyway
    # from a less privileged namespace; being explicit costs one syscall).
    p.mount("", "/", "", MS_REC | MS_PRIVATE)
    p.mount("tmpfs", STAGE, "tmpfs", MS_NOSUID | MS_NODEV, f"size={spec.disk},mode=0755")
    p.chdir(STAGE)
    single_ro = spec.read_only and len(spec.layers) == 1
    for i, layer in enumerate(spec.layers):
        ro = _core.MOUNT_ATTR_RDONLY | _core.MOUNT_ATTR_NOSUID | _core.MOUNT_ATTR_NODEV
        trees.append(_core.Tree(layer, idmap=True, attr_set=ro if single_ro else 0))
        p.mkdir(str(i))
        p.attach(i, str(i))
    if single_ro:
        root = "0"
    else:
        # Overlay's first lowerdir is the top one; the relative names keep the
        # option string short (it must fit in a page, for 100+ layers too).
        opts = "lowerdir=" + ":".join(str(i) for i in reversed(range(len(spec.layers))))
        if not spec.read_only:
            p.mkdir("u")
            p.mkdir("w")
            opts += ",upperdir=u,workdir=w"
        # userxattr: overlay keeps its metadata in user.overlay.* xattrs, the
        # only ones a user namespace may write.
        root = "r"
        p.mkdir(root)
        p.mount("overlay", root, "overlay", MS_NOSUID | MS_NODEV, opts + ",userxattr")
    p.root(root)

    p.mkdir("/proc", optional=True)
    p.mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    # /dev: the read-only template (devices.py), then the writable parts
    trees.append(
        _core.Tree(
            devices.template(),
            idmap=True,
            attr_set=_core.MOUNT_ATTR_RDONLY | _core.MOUNT_ATTR_NOSUID | _core.MOUNT_ATTR_NOEXEC,
        )
    )
    p.mkdir("/dev", optional=True)
    p.attach(len(trees) - 1, "/dev")
    p.mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
    p.mkdir("shm", 0o1777)
    p.mount("shm", "/dev/shm", "", MS_BIND)
    p.mount("mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, optional=True)
    _ipc_limits(p, spec.disk)
    # after /dev: the masks are binds of the sandbox's own, read-only /dev/null
    _mask_proc(p, "/dev/null")
    # /tmp and /dev/shm are directories of the staging tmpfs: the writable
    # layer, /tmp and shm share one `disk` budget (a tmpfs is RAM).
    p.mkdir("tmp", 0o1777)
    p.mkdir("/tmp", optional=True)
    p.mount("tmp", "/tmp", "", MS_BIND)

    p.write("hostname", spec.hostname + "\n")
    p.write("hosts", hosts_file(spec.hostname))
    for name in ("hostname", "hosts"):
        target = f"/etc/{name}"
        p.mkfile(target, optional=spec.read_only)
        p.mount(name, target, "", MS_BIND, optional=spec.read_only)
        if spec.read_only:
            # a bind remount sets exactly the flags given: keep the tmpfs's nosuid, nodev
            p.remount(target, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, optional=True)

    for m, is_dir in zip(spec.mounts, dirs, strict=True):
        attrs = _core.MOUNT_ATTR_NOSUID | _core.MOUNT_ATTR_NODEV
        if m.read_only:
            attrs |= _core.MOUNT_ATTR_RDONLY
        trees.append(_core.Tree(os.fspath(m.src), recursive=True, attr_set=attrs))
        if is_dir:
            p.mkdir_safe(m.dst)
        else:
            p.mkdir_safe(os.path.dirname(m.dst))
            p.mkfile(m.dst)
        p.attach(len(trees) - 1, m.dst)

    if spec.seccomp:
        inherit = not late_seal and bpf.init_can_carry(spec.seccomp, spec.caps)
        notified = bpf.kills_as_notifications(spec.seccomp) if inherit else None
        if notified is not None:
            # the verdict can then name the syscall a kill action stopped
            p.seccomp(notified, inherit=True, notify=True)
        else:
            p.seccomp(spec.seccomp, inherit=inherit)
    p.pivot(root)
    p.hostname(spec.hostname)
    p.capbset(spec.caps)
    p.nfds = len(trees)
    return p, trees


# SysV IPC objects belong to the sandbox's IPC namespace, not to the exec
# that made them: they outlive it and its memory limit (the kernel's shmall
# is ~16 EiB), so each exec could leave its limit's worth behind, for the
# sandbox's life.  SysV shared memory is shmem, as /dev/shm is: it gets the
# sandbox's `disk` size as its own total (shmall, in pages); message queues
# and semaphore sets are few (msgmni: 32 queues of 16 KiB at most).  Not
# shm_rmid_forced: it removes a segment nobody has attached yet (`ipcmk
# -M` and a later attach).  Written while /proc/sys is still writable: the
# IPC namespace is the sandbox's, its sysctls are its own (a kernel that
# refuses the write keeps its defaults).
def _ipc_limits(p: Plan, disk: int) -> None:
    values = (
        ("kernel/shmall", str(max(disk // os.sysconf("SC_PAGE_SIZE"), 1))),
        ("kernel/msgmni", "32"),
        ("kernel/sem", "250 32000 32 128"),
    )
    for name, value in values:
        p.write(f"/proc/sys/{name}", value + "\n", optional=True)


# Host information that /proc shows to anyone: timers and keys of host
# processes, kernel symbols and page maps, ACPI.  Docker masks most of these;
# the kpage* files and kallsyms are added (kallsyms shows zeros to non-root,
# but names the loaded code).  Files get /dev/null, directories an empty,
# read-only tmpfs; /proc/sys becomes read-only (what a user namespace may
# still write there is its own hostname and IPC limits).
MASKED_FILES = (
    "/proc/timer_list", "/proc/sched_debug", "/proc/keys", "/proc/key-users", "/proc/kallsyms",
    "/proc/kcore", "/proc/kpagecount", "/proc/kpageflags", "/proc/kpagecgroup", "/proc/latency_stats",
    "/proc/timer_stats", "/proc/sysrq-trigger", "/proc/vmallocinfo",
)  # fmt: skip
MASKED_DIRS = ("/proc/acpi", "/proc/asound", "/proc/scsi", "/proc/driver")
READ_ONLY = ("/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq")


def _mask_proc(p: Plan, null: str) -> None:
    """`null`: the new root's /dev/null.  Absolute sources, like targets,
    resolve inside the new root (init.c, bind_mount): an image's symlink
    cannot make a mask a host file, nor the read-only /proc/sys the host's
    procfs; each is the sandbox's own."""
    for f in MASKED_FILES:
        p.mount(null, f, "", MS_BIND, optional=True)  # optional: absent on some kernels
    # one empty directory of the staging tmpfs, made a read-only mount of its
    # own, bound onto each: a bind copies its source mount's flags, and a
    # mount costs less than a superblock: a tmpfs of its own took 37-50 us of
    # CPU to mount and unmount here, a bind and mount_setattr 18-22 (a loop
    # of each in a mount namespace)
    p.mkdir("empty", 0o555)
    p.mount("empty", "empty", "", MS_BIND)
    p.remount("empty", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for d in MASKED_DIRS:
        p.mount("empty", d, "", MS_BIND, optional=True)
    for d in READ_ONLY:
        p.mount(d, d, "", MS_BIND | MS_REC, optional=True)
        p.remount(d, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, optional=True)
