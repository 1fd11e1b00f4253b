"""The Python encoders mirror the C structs of sandbox/_cext/proto.h: a tiny
C program compiled with gcc prints the C sizes, offsets and constants, and
decodes what Python encodes exactly as the init does."""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path

import pytest

from sandbox import _core, layout, plan, protocol
from sandbox.spec import IdMap, Mount, make_spec
from tests.conftest import have, require

CEXT = Path(__file__).resolve().parents[2] / "sandbox" / "_cext"
PROTO = CEXT / "proto.h"

# struct name -> (Python struct, its field names in order)
STRUCTS: dict[str, tuple[struct.Struct, list[str]]] = {
    "sbx_plan_hdr": (plan.HDR, ["magic", "version", "nops", "nfds"]),
    "sbx_op_hdr": (plan.OP, ["type", "nstr", "len", "a", "flags", "pad"]),
    "sbx_msg_hdr": (protocol.HDR, ["type", "id"]),
    "sbx_exec_req": (
        protocol.EXEC_REQ,
        ["uid", "gid", "ngroups", "nrlimits", "argc", "envc", "fds", "flags", "caps"],
    ),
    "sbx_rlimit": (protocol.RLIMIT, ["resource", "pad", "cur", "max"]),
    "sbx_kill_req": (protocol.KILL_REQ, ["target", "sig"]),
    "sbx_path_req": (protocol.PATH_REQ, ["flags", "mode"]),
    "sbx_fail": (protocol.FAIL, ["stage", "err", "detail"]),
    "sbx_started": (protocol.STARTED, ["pid", "pad"]),
    "sbx_exited": (protocol.EXITED, ["status", "syscall", "utime_us", "stime_us", "maxrss_kb"]),
}


def _enum(name: str) -> dict[str, int]:
    """NAME = value pairs of one enum in proto.h."""
    text = PROTO.read_text()
    body = re.search(r"enum\s+" + name + r"\s*\{(.*?)\};", text, re.S)
    assert body, name
    text = re.sub(r"/\*.*?\*/", "", body.group(1), flags=re.S)
    return {k: int(v) for k, v in re.findall(r"(\w+)\s*=\s*(\d+)", text)}


def _defines() -> list[str]:
    return re.findall(r"^#define\s+(SBX_\w+)\s+\S", PROTO.read_text(), re.M)


def _probe_source() -> str:
    lines = ["#include <stdio.h>", "#include <stddef.h>", '#include "proto.h"', "int main(void) {"]
    for name, (_, fields) in STRUCTS.items():
        lines.append(f'printf("size {name} %zu\\n", sizeof(struct {name}));')
        for f in fields:
            lines.append(
                f'printf("off {name}.{f} %zu %zu\\n", offsetof(struct {name}, {f}), '
                f"sizeof(((struct {name} *)0)->{f}));"
            )
    for d in _defines():
        if d in ("SBX_PROTO_H",):
            continue
        lines.append(f'printf("def {d} %lld\\n", (long long)({d}));')
    for enum in ("sbx_op", "sbx_msg", "sbx_exec_stage", "sbx_launch_stage"):
        for k in _enum(enum):
            lines.append(f'printf("enum {k} %d\\n", (int){k});')
    lines += ["return 0;", "}"]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def c_facts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    require(have("gcc"), "no gcc to compile the struct probe")
    d = tmp_path_factory.mktemp("abi")
    src, exe = d / "probe.c", d / "probe"
    src.write_text(_probe_source())
    subprocess.run(
        ["gcc", "-std=gnu11", "-Wall", "-Werror", f"-I{CEXT}", "-o", str(exe), str(src)],
        check=True,
        capture_output=True,
    )
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    facts: dict[str, int] = {}
    for line in out.splitlines():
        kind, key, *vals = line.split()
        if kind == "off":
            facts[f"off {key}"] = int(vals[0])
            facts[f"fsize {key}"] = int(vals[1])
        else:
            facts[f"{kind} {key}"] = int(vals[0])
    return facts


def _py_layout(st: struct.Struct) -> list[tuple[int, int]]:
    """(offset, size) of each field of a '='-format struct (no padding)."""
    fmt = st.format
    assert fmt[0] == "=", fmt
    out, off = [], 0
    for count, code in re.findall(r"(\d*)([a-zA-Z])", fmt[1:]):
        n = int(count) if count else 1
        if code == "s":
            out.append((off, n))
            off += n
            continue
        size = struct.calcsize("=" + code)
        for _ in range(n):
            out.append((off, size))
            off += size
    return out


@pytest.mark.parametrize("name", list(STRUCTS))
def test_struct_size_and_layout(name: str, c_facts: dict[str, int]) -> None:
    st, fields = STRUCTS[name]
    assert st.size == c_facts[f"size {name}"], (
        f"struct {name}: Python {st.size} bytes, C {c_facts[f'size {name}']}"
    )
    py = _py_layout(st)
    assert len(py) == len(fields), f"{name}: Python has {len(py)} fields, C {len(fields)}"
    for (off, size), f in zip(py, fields, strict=True):
        assert (off, size) == (c_facts[f"off {name}.{f}"], c_facts[f"fsize {name}.{f}"]), f"{name}.{f}"


def test_constants(c_facts: dict[str, int]) -> None:
    assert c_facts["def SBX_PLAN_MAGIC"] == plan.MAGIC
    assert c_facts["def SBX_ABI_VERSION"] == plan.VERSION
    assert c_facts["def SBX_ABI_VERSION"] == _core.ABI_VERSION
    assert _core.lib.sbx_abi_version() == c_facts["def SBX_ABI_VERSION"]
    assert c_facts["def SBX_DETAIL_MAX"] == protocol.DETAIL_MAX
    assert c_facts["def SBX_MSG_MAX"] == protocol.MSG_MAX
    assert c_facts["def SBX_F_OPTIONAL"] == plan.F_OPTIONAL
    assert c_facts["def SBX_EXEC_NO_STARTED"] == protocol.EXEC_NO_STARTED
    assert c_facts["def SBX_EXEC_TTY"] == protocol.EXEC_TTY
    assert c_facts["def SBX_EXEC_KEEP"] == protocol.EXEC_KEEP
    assert c_facts["def SBX_EXEC_REUSE"] == protocol.EXEC_REUSE
    assert c_facts["def SBX_EXEC_WAITS"] == protocol.EXEC_WAITS
    assert c_facts["def SBX_MAX_CHANNELS"] == protocol.MAX_CHANNELS


def test_plan_operations(c_facts: dict[str, int]) -> None:
    c = {k[len("enum SBX_OP_") :]: v for k, v in c_facts.items() if k.startswith("enum SBX_OP_")}
    py = {k[len("OP_") :]: v for k, v in vars(plan).items() if k.startswith("OP_") and isinstance(v, int)}
    assert py == c


def test_message_types(c_facts: dict[str, int]) -> None:
    for prefix in ("REQ_", "REP_"):
        c = {k[len("enum SBX_") :]: v for k, v in c_facts.items() if k.startswith(f"enum SBX_{prefix}")}
        py = {k: v for k, v in vars(protocol).items() if k.startswith(prefix) and isinstance(v, int)}
        assert py == c


def test_exec_stages(c_facts: dict[str, int]) -> None:
    c = {v: k[len("enum SBX_ST_") :] for k, v in c_facts.items() if k.startswith("enum SBX_ST_")}
    assert set(protocol.EXEC_STAGES) == set(c)
    # Python's words for the stages name the same steps ("setgid" for GID, ...).
    for n, word in protocol.EXEC_STAGES.items():
        cw = c[n].lower()
        assert cw in word or word in cw, (n, word, cw)


def test_launch_stages(c_facts: dict[str, int]) -> None:
    c = {v for k, v in c_facts.items() if k.startswith("enum SBX_LS_")}
    assert set(_core._STAGES) == c


def test_kernel_flag_values() -> None:
    """The mount flags plan.py passes to mount(2) are the kernel's."""
    import os

    assert plan.MS_RDONLY == os.ST_RDONLY
    assert plan.MS_NOSUID == os.ST_NOSUID
    assert plan.MS_NODEV == os.ST_NODEV
    assert plan.MS_NOEXEC == os.ST_NOEXEC
    assert (plan.MS_BIND, plan.MS_REC, plan.MS_PRIVATE) == (4096, 16384, 1 << 18)


# -- decoding Python's bytes with the C structs, as the init does -------------------------

_DECODER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "proto.h"
static unsigned char buf[SBX_MSG_MAX + 1];
static int die(const char *why, unsigned i) { printf("ERROR %s at %u\n", why, i); return 1; }
int main(int argc, char **argv) {
    size_t len = fread(buf, 1, sizeof buf, stdin);
    if (!strcmp(argv[1], "plan")) {
        struct sbx_plan_hdr h;
        if (len < sizeof h) return die("short", 0);
        memcpy(&h, buf, sizeof h);
        if (h.magic != SBX_PLAN_MAGIC || h.version != SBX_ABI_VERSION) return die("magic", 0);
        printf("plan nops=%u nfds=%u\n", h.nops, h.nfds);
        size_t off = sizeof h;
        for (unsigned i = 0; i < h.nops; i++) {
            struct sbx_op_hdr op;
            if (off + sizeof op > len) return die("truncated", i);
            memcpy(&op, buf + off, sizeof op);
            if (op.len < sizeof op || op.len > len - off || op.nstr > 4) return die("bad record", i);
            if (op.len % 8) return die("unaligned", i);
            printf("op type=%u nstr=%u a=%llu flags=%u", op.type, op.nstr,
                   (unsigned long long)op.a, op.flags);
            const char *p = (const char *)buf + off + sizeof op, *end = (const char *)buf + off + op.len;
            for (unsigned k = 0; k < op.nstr; k++) {
                const char *z = memchr(p, 0, (size_t)(end - p));
                if (!z) return die("unterminated", i);
                printf(" [%s]", p);
                p = z + 1;
            }
            printf("\n");
            off += op.len;
        }
        if (off != len) return die("trailing bytes", h.nops);
        return 0;
    }
    /* exec: a message header, then the request as do_exec reads it */
    struct sbx_msg_hdr mh;
    struct sbx_exec_req r;
    if (len < sizeof mh + sizeof r) return die("short", 0);
    memcpy(&mh, buf, sizeof mh);
    const unsigned char *body = buf + sizeof mh;
    size_t blen = len - sizeof mh;
    memcpy(&r, body, sizeof r);
    printf("msg type=%u id=%u\n", mh.type, mh.id);
    printf("req uid=%u gid=%u ngroups=%u nrlimits=%u argc=%u envc=%u fds=%u\n", r.uid, r.gid, r.ngroups,
           r.nrlimits, r.argc, r.envc, r.fds);
    const unsigned char *q = body + sizeof r;
    for (unsigned k = 0; k < r.ngroups; k++) {
        unsigned g;
        memcpy(&g, q + 4 * k, 4);
        printf("group %u\n", g);
    }
    q += 4 * r.ngroups;
    for (unsigned k = 0; k < r.nrlimits; k++) {
        struct sbx_rlimit rl; memcpy(&rl, q + k * sizeof rl, sizeof rl);
        printf("rlimit %u %llu %llu\n", rl.resource, (unsigned long long)rl.cur, (unsigned long long)rl.max);
    }
    q += r.nrlimits * sizeof(struct sbx_rlimit);
    const char *p = (const char *)q, *end = (const char *)body + blen;
    for (unsigned k = 0; k < 1 + r.argc + r.envc; k++) {
        const char *z = memchr(p, 0, (size_t)(end - p));
        if (!z) return die("unterminated", k);
        printf("str [%s]\n", p);
        p = z + 1;
    }
    if (p != end) return die("trailing bytes", 0);
    return 0;
}
"""


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require(have("gcc"), "no gcc to compile the decoder")
    d = tmp_path_factory.mktemp("dec")
    (d / "dec.c").write_text(_DECODER)
    subprocess.run(
        ["gcc", "-std=gnu11", "-Wall", "-Werror", f"-I{CEXT}", "-o", str(d / "dec"), str(d / "dec.c")],
        check=True,
        capture_output=True,
    )
    return d / "dec"


def _decode(decoder: Path, mode: str, data: bytes) -> list[str]:
    r = subprocess.run([str(decoder), mode], input=data, capture_output=True, check=False)
    out = r.stdout.decode().splitlines()
    assert r.returncode == 0, out
    return out


def test_plan_decodes_as_the_init_reads_it(decoder: Path) -> None:
    p = plan.Plan(nfds=2)
    p.mount("tmpfs", "/tmp", "tmpfs", plan.MS_NOSUID, "size=1024", optional=True)
    p.mkdir("a/b", 0o700)
    p.write("hostname", "x" * 13)  # odd lengths: padding
    p.symlink("pts/ptmx", "/dev/ptmx")
    p.attach(1, "/data")
    p.remount("/etc/hosts", plan.MS_RDONLY)
    p.hostname("h")
    p.mount("", "/", "", plan.MS_REC | plan.MS_PRIVATE)  # empty strings stay strings
    assert _decode(decoder, "plan", p.encode()) == [
        "plan nops=8 nfds=2",
        f"op type={plan.OP_MOUNT} nstr=4 a={plan.MS_NOSUID} flags=1 [tmpfs] [/tmp] [tmpfs] [size=1024]",
        f"op type={plan.OP_MKDIR} nstr=1 a={0o700} flags=0 [a/b]",
        f"op type={plan.OP_WRITE} nstr=2 a={0o644} flags=0 [hostname] [{'x' * 13}]",
        f"op type={plan.OP_SYMLINK} nstr=2 a=0 flags=1 [pts/ptmx] [/dev/ptmx]",
        f"op type={plan.OP_ATTACH} nstr=1 a=1 flags=0 [/data]",
        f"op type={plan.OP_REMOUNT} nstr=1 a={plan.MS_RDONLY} flags=0 [/etc/hosts]",
        f"op type={plan.OP_HOSTNAME} nstr=1 a=0 flags=0 [h]",
        f"op type={plan.OP_MOUNT} nstr=4 a={plan.MS_REC | plan.MS_PRIVATE} flags=0 [] [/] [] []",
    ]


def test_layout_plan_decodes(decoder: Path, tmp_path: Path) -> None:
    """The plan of a real spec (two layers, a mount) is well formed for the init."""
    for d in ("lower", "upper", "src"):
        (tmp_path / d).mkdir()
    spec = make_spec(
        layers=[tmp_path / "lower", tmp_path / "upper"],
        idmap=IdMap(100000),
        mounts=[Mount(tmp_path / "src", "/data")],
        hostname="judge-1",
    )
    built, trees = layout.build(spec)
    data = built if isinstance(built, bytes) else built.encode()
    out = _decode(decoder, "plan", data)
    nops = sum(1 for line in out if line.startswith("op type="))
    assert out[0] == f"plan nops={nops} nfds={len(trees)}"
    paths = [t.path for t in trees]
    assert paths[:2] == [str(tmp_path / "lower"), str(tmp_path / "upper")]  # layers first, lowest first
    text = "\n".join(out)
    assert "lowerdir=1:0,upperdir=u,workdir=w" in text
    assert f"op type={plan.OP_HOSTNAME} nstr=1 a=0 flags=0 [judge-1]" in out
    src = paths.index(str(tmp_path / "src"))
    assert f"op type={plan.OP_ATTACH} nstr=1 a={src} flags=0 [/data]" in out
    assert trees[src].idmap is False  # user mounts keep host ownership
    assert any(line.startswith(f"op type={plan.OP_PIVOT}") for line in out)


def test_exec_request_decodes_as_the_init_reads_it(decoder: Path) -> None:
    msg = protocol.encode_exec(
        7, ["sh", "-c", "echo hi"], ["A=1", "B="], "/tmp", 1000, 1001, [1001, 27], [(7, 64, 128)], 0b110
    )
    out = _decode(decoder, "exec", msg)
    assert out == [
        f"msg type={protocol.REQ_EXEC} id=7",
        "req uid=1000 gid=1001 ngroups=2 nrlimits=1 argc=3 envc=2 fds=6",
        "group 1001",
        "group 27",
        "rlimit 7 64 128",
        "str [/tmp]",
        "str [sh]",
        "str [-c]",
        "str [echo hi]",
        "str [A=1]",
        "str [B=]",
    ]
