/* Wire formats shared by the launcher, the sandbox init and Python
 * (sandbox/protocol.py and sandbox/plan.py mirror every struct here; a test
 * compares the sizes).  All integers are native-endian: both ends always run
 * on the same machine.
 *
 * Channels:
 *  - the control socket (SOCK_SEQPACKET, one message per request): the host
 *    sends the launch plan first, then requests; the init answers the plan
 *    with READY or SETUP_FAIL.  Its EOF is the init's lifeline: when the owner
 *    dies, the init exits and the kernel kills the whole pid namespace.
 *  - one reply socket per request, passed with the request (SCM_RIGHTS), so
 *    concurrent callers never have to demultiplex a shared stream.
 */
#ifndef SBX_PROTO_H
#define SBX_PROTO_H

#include <stdint.h>

#define SBX_ABI_VERSION 6
#define SBX_PLAN_MAGIC 0x50584253u /* "SBXP" */
#define SBX_DETAIL_MAX 240
#define SBX_MSG_MAX (256 * 1024)

/* ---- launch plan: a header, then a flat list of operations ---------------- */

struct sbx_plan_hdr {
    uint32_t magic;
    uint32_t version;
    uint32_t nops;
    uint32_t nfds; /* detached mounts the launcher put at fd 4, 5, ... */
};

enum sbx_op {
    SBX_OP_MOUNT = 1,      /* s0 source, s1 target, s2 fstype, s3 data; a = flags */
    SBX_OP_MKDIR = 2,      /* s0 path; a = mode; EEXIST is fine */
    SBX_OP_WRITE = 3,      /* s0 path, s1 content; a = mode (created, truncated) */
    SBX_OP_SYMLINK = 4,    /* s0 target, s1 linkpath */
    SBX_OP_ATTACH = 5,     /* a = plan fd index, s0 target: move_mount a detached tree */
    SBX_OP_PIVOT = 6,      /* s0 new root: pivot_root and detach the old one */
    SBX_OP_HOSTNAME = 7,   /* s0 name */
    SBX_OP_CHDIR = 8,      /* s0 path */
    SBX_OP_REMOUNT = 9,    /* s0 path; a = MS_* flags for a bind remount */
    SBX_OP_MKFILE = 10,    /* s0 path; a = mode: an empty file to bind over, if missing */
    SBX_OP_MKDIR_SAFE = 11, /* s0: every missing component made, symlinks refused */
    SBX_OP_ROOT = 12,       /* s0: the new root; from here on, absolute paths of
                               targets and of bind sources resolve inside it
                               (RESOLVE_IN_ROOT), so symlinks in image content
                               cannot lead outside */
    SBX_OP_SECCOMP = 13,    /* binary: the BPF program (struct sock_filter[]) every
                               exec loads last before execve */
    SBX_OP_SECRET = 14,     /* binary: struct sbx_secret, the content, then the path:
                               a file written from memory (mode, owner) */
    SBX_OP_CAPBSET = 15     /* a: the capabilities every exec may keep (bit N = CAP
                               number N); the rest leave the init's bounding set */
};

/* Binary operations: nstr = 0, and `a` = the payload's length in bytes,
 * which follows the header (padded to 8 like the rest). */
struct sbx_secret {
    uint32_t mode;
    uint32_t uid;
    uint32_t gid;
    uint32_t len; /* of the content; the NUL-terminated path follows it */
};

/* Operation flags. */
#define SBX_F_OPTIONAL 1u /* a failure of this operation is not an error */
#define SBX_F_INHERIT 2u  /* SECCOMP: the init loads the filter on itself at the
                             end of its setup and every exec inherits it (the
                             host checked that it allows the init's syscalls) */
#define SBX_F_NOTIFY 4u   /* SECCOMP with INHERIT: the program's kill actions
                             are user notifications; the init takes them, notes
                             the syscall and kills the process (SIGSYS) */

/* Each operation: this header, then nstr NUL-terminated strings, the whole
 * record padded to 8 bytes.  `len` counts header and strings and padding. */
struct sbx_op_hdr {
    uint16_t type;
    uint16_t nstr;
    uint32_t len;
    uint64_t a;
    uint32_t flags;
    uint32_t pad;
};

/* ---- messages ---------------------------------------------------------------- */

enum sbx_msg {
    /* host -> init, on the control socket, each with a reply socket */
    SBX_REQ_EXEC = 1,
    SBX_REQ_KILL = 2,
    SBX_REQ_OPEN = 3,
    SBX_REQ_MKDIR = 4,
    SBX_REQ_CHOWN = 5, /* sbx_path_req with flags = uid, mode = gid */
    SBX_REQ_PTY = 6,   /* no body: the master of a new pty of the sandbox's devpts */
    SBX_REQ_SEAL_SECRETS = 7, /* no body: /run/secrets becomes read-only (after the
                                 host gave the files to a named user) */
    /* init -> host */
    SBX_REP_READY = 100,
    SBX_REP_SETUP_FAIL = 101,
    SBX_REP_STARTED = 102,
    SBX_REP_EXEC_FAIL = 103,
    SBX_REP_EXITED = 104,
    SBX_REP_FD = 105,
    SBX_REP_ERROR = 106,
    SBX_REP_OK = 107
};

struct sbx_msg_hdr {
    uint32_t type;
    uint32_t id;
};

/* Exec request: header, this struct, groups[ngroups] (u32), rlimits[nrlimits],
 * then strings: cwd, argv[argc], env[envc].  fds: reply socket, then the
 * streams whose bits are set in `fds` (bit 0 stdin, 1 stdout, 2 stderr;
 * missing streams are /dev/null), then `(fds >> 8) & 0xff` cgroup files the
 * child writes "0" into before anything else (its per-exec cgroups). */
struct sbx_exec_req {
    uint32_t uid;
    uint32_t gid;
    uint32_t ngroups;
    uint32_t nrlimits;
    uint32_t argc;
    uint32_t envc;
    uint32_t fds;
    uint32_t flags;
    uint64_t caps; /* capabilities to keep (bit N = CAP number N); 0: none */
};

/* sbx_exec_req.flags */
#define SBX_EXEC_NO_STARTED 1u /* exec(): no STARTED record, only EXEC_FAIL or EXITED */
#define SBX_EXEC_TTY 2u        /* stdin is a pty slave: make it the controlling terminal */
/* Reply channels (exec() only): a reply socket the init keeps after the
 * exec, as channel number SBX_EXEC_CHANNEL_OF(flags), for the host's next
 * execs, which then send no socket (a socketpair and three closes less per
 * exec).  KEEP: fds[0] becomes that channel (replacing any socket it had);
 * REUSE: no reply socket comes with the request, the channel is it.  The
 * host uses a channel for one exec at a time, and again only once it read
 * that exec's last record. */
#define SBX_EXEC_KEEP 4u
#define SBX_EXEC_REUSE 8u
/* The host's thread goes to sleep waiting for the reply as soon as it has
 * sent this (exec() in C, sandbox/execio.py): the init yields its CPU to it
 * before the fork (do_exec in init.c).  Not for a sender that goes on
 * running (spawn(), an event loop): the init would wait for it. */
#define SBX_EXEC_WAITS 16u
#define SBX_EXEC_CHANNEL_OF(flags) (((flags) >> 8) & 0xffu)
#define SBX_MAX_CHANNELS 8

struct sbx_rlimit {
    uint32_t resource;
    uint32_t pad;
    uint64_t cur;
    uint64_t max;
};

struct sbx_kill_req {
    uint32_t target; /* exec id */
    uint32_t sig;
};

/* Open and mkdir requests: this struct, then the path; the reply socket as
 * the only fd. */
struct sbx_path_req {
    uint32_t flags;
    uint32_t mode;
};

/* A failure: which step failed, its errno, and a short text (a path, an
 * operation number); NUL-terminated inside detail. */
struct sbx_fail {
    uint32_t stage;
    int32_t err;
    char detail[SBX_DETAIL_MAX];
};

struct sbx_started {
    uint32_t pid; /* as seen inside the sandbox */
    uint32_t pad;
};

struct sbx_exited {
    int32_t status;  /* raw wait status */
    int32_t syscall; /* the syscall a kill action of the seccomp filter stopped
                        in this exec's session, -1 for none; -2: of another
                        architecture */
    int64_t utime_us;
    int64_t stime_us;
    int64_t maxrss_kb;
};

/* Steps of an exec, for failure records. */
enum sbx_exec_stage {
    SBX_ST_FORK = 1,
    SBX_ST_SETSID = 2,
    SBX_ST_STDIO = 3,
    SBX_ST_RLIMIT = 4,
    SBX_ST_GROUPS = 5,
    SBX_ST_GID = 6,
    SBX_ST_UID = 7,
    SBX_ST_CHDIR = 8,
    SBX_ST_EXEC = 9,
    SBX_ST_REQUEST = 10,
    SBX_ST_CAPABILITIES = 11,
    SBX_ST_NO_NEW_PRIVS = 12,
    SBX_ST_SECCOMP = 13,
    SBX_ST_CGROUP = 14,
    SBX_ST_STOPPED = 15 /* stopped by a signal before its execve, and killed */
};

/* Steps of the launcher before the init runs. */
enum sbx_launch_stage {
    SBX_LS_SOCKET = 1,
    SBX_LS_TREE = 2,
    SBX_LS_IDMAP = 3,
    SBX_LS_CLONE = 4,
    SBX_LS_MAPS = 5,
    SBX_LS_CREDS = 6,
    SBX_LS_FDS = 7,
    SBX_LS_EXEC = 8,
    SBX_LS_PLAN = 9,
    SBX_LS_MNTNS = 10,     /* joining the template mount namespace */
    SBX_LS_TEMPLATE = 11   /* making the template mount namespace */
};

#endif
