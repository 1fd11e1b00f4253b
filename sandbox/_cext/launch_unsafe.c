/* The launcher: the only C code that runs in the Python process.
 *
 * "unsafe" because its child runs between clone and execve on a small stack
 * inside the interpreter's own memory (CLONE_VM, so the start costs the same
 * from a 256 MiB interpreter as from a tiny one, where fork() costs ~10 ms).
 * That child may only make raw system calls on data prepared before the
 * clone: no allocation, no stdio, no libc wrapper that touches shared state
 * (glibc's setresuid/setgroups would signal every Python thread to change
 * credentials; errno is the parent thread's TLS).  A test greps this file's
 * child section for forbidden calls.
 *
 * Sequence (one parent/child step per concern, released by one sync byte):
 *   parent: detached mount trees (open_tree + mount_setattr, idmapped onto a
 *           prepared user namespace with the sandbox's mapping), sockets
 *   parent: clone a helper (CLONE_VM | CLONE_FILES, not CLONE_FS), which
 *           joins the template mount namespace and the pooled network
 *           namespace, takes the sandbox's host uid as its effective uid,
 *           clones the init (every namespace | CLONE_PARENT | CLONE_PIDFD),
 *           writes uid_map and gid_map, then the sync byte, and exits (see
 *           helper_main); a thread with fs state of its own does those
 *           steps itself (clone_direct)
 *   child:  become container root, set the parent-death signal, move fds into
 *           place, execveat the init from its sealed memfd
 *   parent: wait for EOF on the close-on-exec pipe (execve worked) or for a
 *           fixed-size failure record (stage, errno)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/nsfs.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "launch.h"
#include "tcpmetrics.h"
#include "proto.h"

#define STACK_SIZE (128 * 1024)
#define HELPER_STACK_SIZE (16 * 1024)
#define HIGH_FD 900 /* where the child parks fds before moving them down */
#define SBX_CLOSE_RANGE_CLOEXEC (1U << 2) /* linux/close_range.h, 5.11 */

int sbx_abi_version(void) { return SBX_ABI_VERSION; }

/* ---- raw system calls for the child: no errno, no libc state ------------------ */

#include "sys6.h"

#define RAW(n, a, b, c) raw6((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)

/* clone(flags, stack) from a task that shares the interpreter's memory: the
 * new task runs fn(arg) on `stack_top` and exits with its result; the
 * caller gets its pid or -errno, and with CLONE_PIDFD its pidfd in *ptid.
 * glibc's clone() sets errno, the TLS of whichever Python thread this
 * memory's TLS pointer belongs to, when it fails. */
__attribute__((visibility("hidden"))) long sbx_clone_raw(int (*fn)(void *), void *stack_top, unsigned long flags,
                                                         int *ptid, void *arg);
#if defined(__x86_64__)
/* clone(flags rdi, stack rsi, ptid rdx, ctid r10, tls r8) */
__asm__(".text\n.global sbx_clone_raw\n.hidden sbx_clone_raw\n.type sbx_clone_raw,@function\nsbx_clone_raw:\n"
        " and $-16,%rsi\n sub $16,%rsi\n mov %rdi,0(%rsi)\n mov %r8,8(%rsi)\n"
        " mov %rdx,%rdi\n mov %rcx,%rdx\n xor %r10d,%r10d\n xor %r8d,%r8d\n mov $56,%eax\n syscall\n"
        " test %rax,%rax\n jnz 1f\n xor %ebp,%ebp\n pop %rax\n pop %rdi\n call *%rax\n"
        " mov %eax,%edi\n mov $60,%eax\n syscall\n hlt\n1: ret\n");
#elif defined(__aarch64__)
/* clone(flags x0, stack x1, ptid x2, tls x3, ctid x4) */
__asm__(".text\n.global sbx_clone_raw\n.hidden sbx_clone_raw\n.type sbx_clone_raw,%function\nsbx_clone_raw:\n"
        " and x1, x1, #-16\n stp x0, x4, [x1, #-16]!\n mov x0, x2\n mov x2, x3\n mov x3, #0\n mov x4, #0\n"
        " mov x8, #220\n svc 0\n cbnz x0, 1f\n ldp x1, x0, [sp], #16\n blr x1\n mov x8, #93\n svc 0\n1: ret\n");
#else
#error "the launcher is written for x86_64 and aarch64"
#endif

/* ---- child side (runs in the parent's memory: see the top of the file) ----- */

#define SPIN_NS 1000000L /* at most 1 ms of spinning, then a blocking wait */

static long raw_now_ns(void)
{
    struct timespec t;
    RAW(SYS_clock_gettime, CLOCK_MONOTONIC, &t, 0);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

/* 1 once *flag is set, 0 when the budget ran out first. */
static int spin_wait(int *flag)
{
    long end = raw_now_ns() + SPIN_NS;
    for (unsigned i = 0;; i++) {
        if (__atomic_load_n(flag, __ATOMIC_ACQUIRE))
            return 1;
        /* yield, not just pause: the parent may be queued on this very CPU */
        RAW(SYS_sched_yield, 0, 0, 0);
        if ((i & 15) == 15 && raw_now_ns() > end)
            return 0;
    }
}

struct child_ctx {
    int sync_r, sync_w, exec_w, ctl, init_fd;
    int go; /* set by the parent once the maps are written (see spin_wait) */
    int spin; /* spin before a blocking wait (a start someone waits for) */
    int trees[SBX_MAX_TREES];
    unsigned ntrees;
    int pdeathsig;
    char *argv[2];
    char *envp[1];
};

/* A fixed-size failure record (stage, errno) onto the exec pipe. */
static void write_fail(int fd, uint32_t stage, long err)
{
    struct sbx_fail f;
    /* No memset: a plain loop the compiler may not turn into a libc call. */
    volatile char *p = (volatile char *)&f;
    for (size_t i = 0; i < sizeof f; i++)
        p[i] = 0;
    f.stage = stage;
    f.err = (int32_t)-err;
    RAW(SYS_write, fd, &f, sizeof f);
}

static void child_report(int fd, uint32_t stage, long err)
{
    write_fail(fd, stage, err);
    RAW(SYS_exit, 127, 0, 0);
}

static int child_main(void *arg)
{
    struct child_ctx *c = arg;
    long r;
    char byte;

    RAW(SYS_close, c->sync_w, 0, 0);
    /* Spin (yielding) on the shared flag before sleeping on the pipe: the
     * maps take ~30 us to write, and a sleep/wake pair through the pipe cost
     * ~0.3 ms more per start here (vCPU wake-ups are slow).  EOF instead of
     * the byte: the parent failed. */
    if (!(c->spin && spin_wait(&c->go)) && RAW(SYS_read, c->sync_r, &byte, 1) != 1)
        RAW(SYS_exit, 1, 0, 0);
    /* The maps are written: become container root (an unprivileged host uid),
     * so that the exec keeps full capabilities in our own user namespace. */
    if ((r = RAW(SYS_setresgid, 0, 0, 0)) < 0)
        child_report(c->exec_w, SBX_LS_CREDS, r);
    if ((r = RAW(SYS_setgroups, 0, 0, 0)) < 0)
        child_report(c->exec_w, SBX_LS_CREDS, r);
    if ((r = RAW(SYS_setresuid, 0, 0, 0)) < 0)
        child_report(c->exec_w, SBX_LS_CREDS, r);
    /* After the uid change, which clears it.  Only when launched from the
     * main thread: the signal follows the *thread* that cloned us. */
    if (c->pdeathsig)
        RAW(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0);

    /* Park every fd we keep above the others, then move them down to the
     * numbers the init expects (3: control, 4..: trees).  The rest of the
     * interpreter's fds are closed by the init. */
    int exec_w = (int)RAW(SYS_fcntl, c->exec_w, F_DUPFD_CLOEXEC, HIGH_FD);
    if (exec_w < 0)
        child_report(c->exec_w, SBX_LS_FDS, exec_w);
    int init_fd = (int)RAW(SYS_fcntl, c->init_fd, F_DUPFD_CLOEXEC, HIGH_FD);
    int ctl = (int)RAW(SYS_fcntl, c->ctl, F_DUPFD_CLOEXEC, HIGH_FD);
    if (init_fd < 0 || ctl < 0)
        child_report(exec_w, SBX_LS_FDS, init_fd < 0 ? init_fd : ctl);
    int high[SBX_MAX_TREES];
    for (unsigned i = 0; i < c->ntrees; i++)
        if ((high[i] = (int)RAW(SYS_fcntl, c->trees[i], F_DUPFD_CLOEXEC, HIGH_FD)) < 0)
            child_report(exec_w, SBX_LS_FDS, high[i]);
    if ((r = RAW(SYS_dup3, ctl, 3, 0)) < 0)
        child_report(exec_w, SBX_LS_FDS, r);
    for (unsigned i = 0; i < c->ntrees; i++)
        if ((r = RAW(SYS_dup3, high[i], 4 + i, 0)) < 0)
            child_report(exec_w, SBX_LS_FDS, r);

    /* Every other fd of the interpreter (clone copied them all) closes at the
     * execve: none reaches the init, not even for its first instructions.
     * An fd the host held without O_CLOEXEC (one it was writing a file of
     * another sandbox through) kept that file busy for that sandbox's exec
     * (ETXTBSY).  Kernels before 5.11 refuse the flag: the init closes them. */
    RAW(SYS_close_range, 4 + c->ntrees, ~0U, SBX_CLOSE_RANGE_CLOEXEC);

    r = raw6(SYS_execveat, init_fd, (long)"", (long)c->argv, (long)c->envp, AT_EMPTY_PATH, 0);
    child_report(exec_w, SBX_LS_EXEC, r);
    return 1;
}

/* The helper between the launching thread and the init.  A new mount
 * namespace is a copy of its creator's: made from the host's, it copied
 * every host mount (21 here, hundreds on a busy host), and the init's
 * pivot_root then unmounted them all again; 500 host mounts made a start
 * ~1.8 ms slower.  Copied from the template (sbx_make_mntns) it holds three.
 * Joining a mount namespace needs a task whose fs state (root, cwd) is its
 * own, which no Python thread has: this helper is one (no CLONE_FS).  It
 * shares the interpreter's memory and fd table (the init's pidfd lands in
 * it), joins the template and the network namespace, clones the init with
 * CLONE_PARENT (so that the init is the launching thread's child, as if
 * that thread had cloned it: its parent-death signal, its exit signal),
 * writes the init's id maps and lets it go.  The launching thread only
 * waits for the init's execve, as it would for a child of its own: a wait
 * for the helper too cost ~0.3 ms more per launch here (one more sleep and
 * wake-up of a vCPU).  The helper owns the sync pipe and the write end of
 * the exec pipe, in the fd table it shares: it closes them before it exits,
 * which makes the EOF that says the init exec'd. */
struct helper_ctx {
    struct child_ctx *c;
    void *stack_top;     /* the init's */
    unsigned long flags; /* the init's namespaces */
    int mntns, netns;    /* netns: -1 for a new one (in flags) */
    unsigned long owner; /* effective uid to clone with (owner_for); 0: stay root */
    const char *uid_map, *gid_map;
    size_t uid_len, gid_len;
    int pidfd;
    long pid; /* the init's (-1 until cloned) */
    int owner_refused;
};

/* "/proc/<pid>/<name>" into buf (64 bytes), without libc. */
static void proc_path(char *buf, long pid, const char *name)
{
    static const char pre[] = "/proc/";
    char digits[24];
    unsigned n = 0, k = 0;
    for (unsigned i = 0; pre[i]; i++)
        buf[k++] = pre[i];
    do
        digits[n++] = (char)('0' + pid % 10);
    while ((pid /= 10) > 0 && n < sizeof digits);
    while (n)
        buf[k++] = digits[--n];
    buf[k++] = '/';
    for (unsigned i = 0; name[i] && k < 63; i++)
        buf[k++] = name[i];
    buf[k] = 0;
}

static long raw_write_map(long pid, const char *name, const char *map, size_t len)
{
    char path[64];
    proc_path(path, pid, name);
    long fd = raw6(SYS_openat, AT_FDCWD, (long)path, O_WRONLY | O_CLOEXEC, 0, 0, 0);
    if (fd < 0)
        return fd;
    long w = RAW(SYS_write, fd, map, len);
    RAW(SYS_close, fd, 0, 0);
    return w < 0 ? w : (size_t)w == len ? 0 : -EIO;
}

/* A failure: its record, then the pipes closed (a cloned init reads EOF on
 * the sync pipe and exits), then exit. */
static void helper_fail(struct helper_ctx *h, uint32_t stage, long err)
{
    write_fail(h->c->exec_w, stage, err);
    RAW(SYS_close, h->c->sync_w, 0, 0);
    RAW(SYS_close, h->c->sync_r, 0, 0);
    RAW(SYS_close, h->c->exec_w, 0, 0);
    for (;;)
        RAW(SYS_exit, 1, 0, 0);
}

static int helper_main(void *arg)
{
    struct helper_ctx *h = arg;
    struct child_ctx *c = h->c;
    unsigned long flags = h->flags | CLONE_VM | CLONE_PIDFD | CLONE_PARENT | SIGCHLD;
    /* The pooled network namespace, or (not one: its number was reused) a
     * new one, as without the pool */
    if (h->netns >= 0 && RAW(SYS_setns, h->netns, CLONE_NEWNET, 0) == 0)
        flags &= ~(unsigned long)CLONE_NEWNET;
    long r = RAW(SYS_setns, h->mntns, CLONE_NEWNS, 0);
    if (r < 0)
        helper_fail(h, SBX_LS_MNTNS, r);
    /* After setns, which needs the capabilities an effective uid drops. */
    int as_owner = h->owner && RAW(SYS_setresuid, -1, h->owner, -1) == 0;
    r = sbx_clone_raw(child_main, h->stack_top, flags, &h->pidfd, c);
    if (as_owner && (r == -EPERM || r == -EACCES)) {
        /* unprivileged user namespaces refused here (a sysctl, an LSM):
         * host root owns them, as before */
        h->owner_refused = 1;
        as_owner = 0;
        if (RAW(SYS_setresuid, -1, 0, -1) == 0)
            r = sbx_clone_raw(child_main, h->stack_top, flags, &h->pidfd, c);
    }
    if (r < 0)
        helper_fail(h, SBX_LS_CLONE, r);
    h->pid = r;
    /* Back to root, whose CAP_SETUID writing the maps needs; a failure to
     * is a failure to write them. */
    if (as_owner && (r = RAW(SYS_setresuid, -1, 0, -1)) < 0)
        helper_fail(h, SBX_LS_MAPS, r);
    if ((r = raw_write_map(h->pid, "uid_map", h->uid_map, h->uid_len)) < 0 ||
        (r = raw_write_map(h->pid, "gid_map", h->gid_map, h->gid_len)) < 0)
        helper_fail(h, SBX_LS_MAPS, r);
    __atomic_store_n(&c->go, 1, __ATOMIC_RELEASE);
    char byte = 1;
    RAW(SYS_write, c->sync_w, &byte, 1); /* for a child that stopped spinning */
    RAW(SYS_close, c->sync_w, 0, 0);
    RAW(SYS_close, c->sync_r, 0, 0);
    RAW(SYS_close, c->exec_w, 0, 0);
    return 0;
}

/* The template mount namespace's maker: a private copy of the host's
 * namespace whose root it then replaces with a small read-only tmpfs that
 * holds only what an init uses before its pivot_root: /tmp (where its
 * staging tmpfs goes), /dev/null (its stdio until the plan runs), and
 * /proc, a bind of the host's procfs: a user namespace may mount a procfs
 * of its own only where one is fully visible already (mount_too_revealing).
 * The init's pivot_root detaches all three, as it did the host's mounts.
 * Made once per process (sandbox/_core.py), from its own namespace. */
struct template_ctx {
    int sync_r, sync_w, res_w;
};

static long template_setup(void)
{
    long r, proc, null, fs, m;
    if ((r = RAW(SYS_unshare, CLONE_NEWNS, 0, 0)) < 0)
        return r;
    if ((r = raw6(SYS_mount, 0, (long)"/", 0, MS_REC | MS_PRIVATE, 0, 0)) < 0)
        return r;
    if ((proc = RAW(SYS_open_tree, AT_FDCWD, "/proc", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)) < 0)
        return proc;
    if ((null = RAW(SYS_open_tree, AT_FDCWD, "/dev/null", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)) < 0)
        return null;
    if ((fs = RAW(SYS_fsopen, "tmpfs", FSOPEN_CLOEXEC, 0)) < 0)
        return fs;
    if ((r = raw6(SYS_fsconfig, fs, FSCONFIG_SET_STRING, (long)"size", (long)"64k", 0, 0)) < 0 ||
        (r = raw6(SYS_fsconfig, fs, FSCONFIG_SET_STRING, (long)"nr_inodes", (long)"16", 0, 0)) < 0 ||
        (r = raw6(SYS_fsconfig, fs, FSCONFIG_SET_STRING, (long)"mode", (long)"0755", 0, 0)) < 0 ||
        (r = raw6(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, 0, 0, 0, 0)) < 0)
        return r;
    if ((m = RAW(SYS_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC)) < 0)
        return m;
    if ((r = RAW(SYS_mkdirat, m, "tmp", 0755)) < 0 || (r = RAW(SYS_mkdirat, m, "proc", 0555)) < 0 ||
        (r = RAW(SYS_mkdirat, m, "dev", 0755)) < 0)
        return r;
    if ((r = raw6(SYS_openat, m, (long)"dev/null", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444, 0, 0)) < 0)
        return r;
    RAW(SYS_close, r, 0, 0);
    /* On top of "/", then pivot_root(".", ".") from it: the old root ends
     * up on top of the new one, and goes with everything under it. */
    if ((r = raw6(SYS_move_mount, m, (long)"", AT_FDCWD, (long)"/", MOVE_MOUNT_F_EMPTY_PATH, 0)) < 0 ||
        (r = RAW(SYS_fchdir, m, 0, 0)) < 0 ||
        (r = raw6(SYS_move_mount, proc, (long)"", AT_FDCWD, (long)"proc", MOVE_MOUNT_F_EMPTY_PATH, 0)) < 0 ||
        (r = raw6(SYS_move_mount, null, (long)"", AT_FDCWD, (long)"dev/null", MOVE_MOUNT_F_EMPTY_PATH, 0)) < 0)
        return r;
    if ((r = RAW(SYS_pivot_root, ".", ".", 0)) < 0 || (r = RAW(SYS_umount2, ".", MNT_DETACH, 0)) < 0 ||
        (r = RAW(SYS_chdir, "/", 0, 0)) < 0)
        return r;
    struct mount_attr a;
    volatile char *p = (volatile char *)&a;
    for (size_t i = 0; i < sizeof a; i++)
        p[i] = 0;
    a.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
    return raw6(SYS_mount_setattr, AT_FDCWD, (long)"/", 0, (long)&a, sizeof a, 0);
}

static int template_main(void *arg)
{
    struct template_ctx *t = arg;
    char byte;
    RAW(SYS_close, t->sync_w, 0, 0);
    long r = template_setup();
    if (r < 0)
        child_report(t->res_w, SBX_LS_TEMPLATE, r);
    RAW(SYS_close, t->res_w, 0, 0); /* EOF: done; the parent opens our namespace now */
    RAW(SYS_read, t->sync_r, &byte, 1);
    RAW(SYS_exit, 0, 0, 0);
    return 0;
}

/* ---- parent side ------------------------------------------------------------- */

static int fail(struct sbx_launched *out, uint32_t stage, int err, int index)
{
    out->stage = stage;
    out->err = err;
    out->index = index;
    return -1;
}

static int write_map(pid_t pid, const char *name, const char *map)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, name);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t len = strlen(map);
    ssize_t w = write(fd, map, len);
    int e = errno;
    close(fd);
    if (w < 0)
        return -e;
    return (size_t)w == len ? 0 : -EIO;
}

static int make_tree(const struct sbx_tree *t)
{
    unsigned rec = t->recursive ? AT_RECURSIVE : 0;
    int fd = open_tree(AT_FDCWD, t->path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | rec);
    if (fd < 0)
        return -errno;
    struct mount_attr a;
    memset(&a, 0, sizeof a);
    a.attr_set = t->attr_set;
    a.attr_clr = t->attr_clr;
    if (t->userns_fd >= 0) {
        a.attr_set |= MOUNT_ATTR_IDMAP;
        a.userns_fd = (uint64_t)t->userns_fd;
    }
    if ((a.attr_set || a.attr_clr) && mount_setattr(fd, "", AT_EMPTY_PATH | rec, &a, sizeof a) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

static void close_all(int *fds, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* The host uid that container root maps onto: the second field of the
 * map's first line ("0 100000 65536"); 0 if there is none. */
static unsigned long map_host_start(const char *map)
{
    char *end;
    unsigned long inside = strtoul(map, &end, 10);
    if (end == map || inside != 0)
        return 0;
    const char *p = end;
    unsigned long host = strtoul(p, &end, 10);
    return end == p ? 0 : host;
}

/* Any uid change of a task sharing our memory makes the process not
 * dumpable (the helper's and the child's): put back once the child has its
 * own memory (or is gone). */
static void restore_dumpable(int was)
{
    if (was > 0 && prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != was)
        prctl(PR_SET_DUMPABLE, was, 0, 0, 0);
}

static int owner_refused; /* a kernel or LSM refused the unprivileged clone once */

/* A user namespace belongs to the effective uid that creates it, and the
 * kernel charges what its users hold (inotify instances, pending signals,
 * POSIX message queue bytes: ucounts) to that owner too, against the
 * owner's own limits.  Cloned by host root, a sandbox could use up root's
 * (128 inotify instances: systemd and udev then fail).  So the helper
 * clones with the sandbox's host uid as its effective uid (a raw setresuid
 * of its own; its real and saved uids stay 0).  0: not applicable, or
 * refused before: clone as root. */
static unsigned long owner_for(unsigned long flags, const char *uid_map)
{
    unsigned long owner = map_host_start(uid_map);
    if (!(flags & CLONE_NEWUSER) || owner > 0xfffffffeUL || owner_refused || geteuid() != 0)
        return 0;
    return owner;
}

/* Threads whose fs state (root, cwd) is their own (sbx_own_fs: the warm
 * pool's thread) join the template themselves for the clone and go back,
 * where a helper costs a task more and its wait (~40 us per launch here,
 * and back-to-back the pool fell behind by it). */
static __thread int fs_own;

int sbx_own_fs(void)
{
    if (!fs_own && unshare(CLONE_FS) < 0)
        return -errno;
    fs_own = 1;
    return 0;
}

int sbx_fs_own(void) { return fs_own; }

/* The thread could not step back into its namespaces or its root: it must
 * not run on in another one.  Say why on stderr, then abort. */
__attribute__((noreturn)) static void die_setns(const char *where, int fd)
{
    char msg[160];
    int n = snprintf(msg, sizeof msg, "sandbox: %s: setns back to fd %d failed: %s; aborting\n", where, fd,
                     strerror(errno));
    if (n > 0)
        (void)!write(2, msg, (size_t)n);
    abort();
}

static int become_owner(unsigned long flags, const char *uid_map, int *pdeathsig)
{
    unsigned long owner = owner_for(flags, uid_map);
    if (!owner)
        return -1;
    if (prctl(PR_GET_PDEATHSIG, pdeathsig, 0, 0, 0) < 0)
        *pdeathsig = 0;
    return RAW(SYS_setresuid, -1, owner, -1) < 0 ? -1 : 0;
}

static void back_to_root(int pdeathsig)
{
    if (RAW(SYS_setresuid, -1, 0, -1) < 0)
        abort(); /* this thread would go on without its capabilities: never */
    /* the uid change cleared the thread's parent-death signal: put back */
    if (pdeathsig > 0)
        prctl(PR_SET_PDEATHSIG, pdeathsig, 0, 0, 0);
}

/* The clone from this very thread (fs_own), in the template mount namespace
 * and the given network namespace, as the range's owner: the child's pid,
 * or -1 with *err and *stage.  Back in its own namespaces and cwd after
 * (setns puts a thread at the namespace's root; its root was that already:
 * a chrooted process may not make user namespaces at all). */
static pid_t clone_direct(struct child_ctx *c, void *stack_top, unsigned long flags, int mntns, int netns,
                          const char *uid_map, int *pidfd, int *err, uint32_t *stage)
{
    int back_mnt = open("/proc/thread-self/ns/mnt", O_RDONLY | O_CLOEXEC);
    int back_net = netns >= 0 ? open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC) : -1;
    int cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    int in_net = 0, in_mnt = 0;
    pid_t pid = -1;
    *err = 0;
    *stage = SBX_LS_MNTNS;
    /* as in helper_main: the pooled network namespace, else a new one */
    if (back_net >= 0 && (in_net = setns(netns, CLONE_NEWNET) == 0))
        flags &= ~(unsigned long)CLONE_NEWNET;
    if (back_mnt < 0 || cwd < 0)
        *err = errno;
    else if (!(in_mnt = setns(mntns, CLONE_NEWNS) == 0) && (*err = errno) == EINVAL &&
             ioctl(mntns, NS_GET_NSTYPE) == CLONE_NEWNS)
        fs_own = 0; /* a thread this one started shares its fs state (CLONE_FS) now: the helper, from here on */
    if (in_mnt) {
        *stage = SBX_LS_CLONE;
        int pdeathsig = 0;
        int as_owner = become_owner(flags, uid_map, &pdeathsig) == 0;
        pid = clone(child_main, stack_top, (int)(flags | CLONE_VM | CLONE_PIDFD | SIGCHLD), c, pidfd);
        *err = errno;
        if (as_owner) {
            back_to_root(pdeathsig);
            if (pid < 0 && (*err == EPERM || *err == EACCES)) {
                owner_refused = 1; /* as in helper_main */
                pid = clone(child_main, stack_top, (int)(flags | CLONE_VM | CLONE_PIDFD | SIGCHLD), c, pidfd);
                *err = errno;
            }
        }
        if (setns(back_mnt, CLONE_NEWNS) < 0 || fchdir(cwd) < 0)
            die_setns("sbx_launch (mount namespace)", back_mnt);
    }
    if (in_net && setns(back_net, CLONE_NEWNET) < 0)
        die_setns("sbx_launch", back_net);
    int fds[3] = {back_mnt, back_net, cwd};
    close_all(fds, 3);
    return pid;
}

/* Launch the init into the namespaces in `flags`, from this thread
 * (clone_direct) or through the helper (helper_main): its pid, with its
 * pidfd in *pidfd, once it has exec'd; or -1 with out's stage and errno.
 * Everything the helper and the child read sits in *c and the helper's
 * context, prepared here before the clone. */
static pid_t clone_child(struct child_ctx *c, unsigned long flags, int mntns, int netns, const char *uid_map,
                         const char *gid_map, int *pidfd, struct sbx_launched *out)
{
    /* Stacks per thread, kept: an munmap while the child's CPU still holds
     * our address space would cost a TLB-shootdown IPI to it. */
    static __thread void *stack, *hstack;
    if (!stack)
        stack = mmap(NULL, STACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (!hstack)
        hstack = mmap(NULL, HELPER_STACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK,
                      -1, 0);
    if (stack == MAP_FAILED || hstack == MAP_FAILED) {
        int e = errno;
        if (stack == MAP_FAILED)
            stack = NULL;
        if (hstack == MAP_FAILED)
            hstack = NULL;
        return fail(out, SBX_LS_CLONE, e, -1);
    }
    int sync[2], ex[2];
    if (pipe2(sync, O_CLOEXEC) < 0) {
        return fail(out, SBX_LS_SOCKET, errno, -1);
    }
    if (pipe2(ex, O_CLOEXEC) < 0) {
        int e = errno;
        close(sync[0]);
        close(sync[1]);
        return fail(out, SBX_LS_SOCKET, e, -1);
    }
    c->sync_r = sync[0];
    c->sync_w = sync[1];
    c->exec_w = ex[1];
    struct helper_ctx h;
    memset(&h, 0, sizeof h);
    h.c = c;
    h.stack_top = (char *)stack + STACK_SIZE;
    h.flags = flags;
    h.mntns = mntns;
    h.netns = netns;
    h.owner = owner_for(flags, uid_map);
    h.uid_map = uid_map;
    h.gid_map = gid_map;
    h.uid_len = strlen(uid_map);
    h.gid_len = strlen(gid_map);
    h.pid = -1;
    h.pidfd = -1;
    /* No signal handler of the interpreter may run on the helper's or the
     * child's stack. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
    pid_t hp = -1;
    int clone_errno = 0;
    uint32_t stage = SBX_LS_CLONE;
    if (fs_own) {
        h.pid = clone_direct(c, h.stack_top, flags, mntns, netns, uid_map, &h.pidfd, &clone_errno, &stage);
    }
    if (!fs_own) {
        hp = clone(helper_main, (char *)hstack + HELPER_STACK_SIZE, CLONE_VM | CLONE_FILES | CLONE_SIGHAND | SIGCHLD,
                   &h);
        clone_errno = errno;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (fs_own ? h.pid < 0 : hp < 0) { /* (fs_own: clone_direct's failure, else the helper's clone) */
        close(sync[0]);
        close(sync[1]);
        close(ex[0]);
        close(ex[1]);
        restore_dumpable(dumpable);
        return fail(out, stage, clone_errno, -1);
    }
    if (fs_own) {
        /* what the helper does after its clone (helper_main) */
        close(sync[0]);
        close(ex[1]);
        int r = write_map(h.pid, "uid_map", uid_map);
        if (r == 0)
            r = write_map(h.pid, "gid_map", gid_map);
        if (r < 0) {
            close(sync[1]); /* the child reads EOF and exits */
            close(ex[0]);
            waitpid(h.pid, NULL, __WALL);
            close(h.pidfd);
            restore_dumpable(dumpable);
            return fail(out, SBX_LS_MAPS, -r, -1);
        }
        __atomic_store_n(&c->go, 1, __ATOMIC_RELEASE);
        char byte = 1;
        ssize_t w = write(sync[1], &byte, 1); /* for a child that stopped spinning */
        close(sync[1]);
        (void)w;
    }
    /* Else the helper owns sync[0], sync[1] and ex[1] now (see helper_ctx).
     * EOF: the execve replaced the child's memory; the stacks are ours
     * again.  Spin a little first, for the reason given in child_main. */
    struct sbx_fail f;
    ssize_t n;
    fcntl(ex[0], F_SETFL, O_NONBLOCK);
    long end = raw_now_ns() + (c->spin ? SPIN_NS : 0);
    while ((n = read(ex[0], &f, sizeof f)) < 0 && errno == EAGAIN && raw_now_ns() < end)
        sched_yield(); /* the helper or the child may be queued on this very CPU */
    fcntl(ex[0], F_SETFL, 0);
    while (n < 0 && (errno == EAGAIN || errno == EINTR))
        n = read(ex[0], &f, sizeof f);
    close(ex[0]);
    /* The helper is gone by now, or about to be (its last step closed
     * ex[1]).  ECHILD: someone else's waitpid(-1) reaped it; what it wrote
     * is in h. */
    while (hp > 0 && waitpid(hp, NULL, __WALL) < 0 && errno == EINTR)
        ;
    if (h.owner_refused)
        owner_refused = 1;
    if (n == (ssize_t)sizeof f || h.pid <= 0) {
        if (h.pid > 0) {
            waitpid((pid_t)h.pid, NULL, __WALL);
            close(h.pidfd);
        }
        restore_dumpable(dumpable);
        if (n == (ssize_t)sizeof f)
            return fail(out, f.stage, f.err, -1);
        return fail(out, SBX_LS_CLONE, ECHILD, -1); /* the helper vanished */
    }
    restore_dumpable(dumpable); /* EOF: the child has exec'd, its memory is its own */
    *pidfd = h.pidfd;
    return (pid_t)h.pid;
}

int sbx_launch(const struct sbx_launch *l, struct sbx_launched *out)
{
    memset(out, 0, sizeof *out);
    out->pid = out->pidfd = out->ctl = -1;
    if (l->ntrees > SBX_MAX_TREES)
        return fail(out, SBX_LS_TREE, E2BIG, -1);
    struct child_ctx c;
    memset(&c, 0, sizeof c);
    for (unsigned i = 0; i < SBX_MAX_TREES; i++)
        c.trees[i] = -1;
    for (unsigned i = 0; i < l->ntrees; i++) {
        int fd = make_tree(&l->trees[i]);
        if (fd < 0) {
            close_all(c.trees, i);
            return fail(out, SBX_LS_TREE, -fd, (int)i);
        }
        c.trees[i] = fd;
    }
    c.ntrees = l->ntrees;
    int ctl[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ctl) < 0) {
        close_all(c.trees, c.ntrees);
        return fail(out, SBX_LS_SOCKET, errno, -1);
    }
    /* The plan waits in the socket for the init to read it. */
    if (send(ctl[0], l->plan, l->plan_len, MSG_NOSIGNAL) != (ssize_t)l->plan_len) {
        int e = errno;
        close_all(c.trees, c.ntrees);
        close(ctl[0]);
        close(ctl[1]);
        return fail(out, SBX_LS_PLAN, e ? e : EMSGSIZE, -1);
    }
    c.ctl = ctl[1];
    c.init_fd = l->init_fd;
    c.pdeathsig = l->pdeathsig;
    c.spin = l->spin;
    c.argv[0] = "sandbox-init";
    c.argv[1] = NULL;
    c.envp[0] = NULL;
    int pidfd = -1;
    /* A network namespace made ahead of time (making one costs ~0.4 ms in
     * clone): the helper joins it before the clone. */
    pid_t pid = clone_child(&c, l->clone_flags, l->mntns_fd, l->netns_fd, l->uid_map, l->gid_map, &pidfd, out);
    close_all(c.trees, c.ntrees);
    close(ctl[1]);
    if (pid < 0) {
        close(ctl[0]);
        return -1;
    }
    out->pid = pid;
    out->pidfd = pidfd;
    out->ctl = ctl[0];
    return 0;
}

/* A user namespace with the given maps, held by an fd: idmapped mounts are
 * made onto it before each launch (the sandbox's own namespace does not exist
 * yet then; the same maps give the same ownership). */
static int hold_child(void *arg)
{
    struct child_ctx *c = arg;
    char byte;
    RAW(SYS_close, c->sync_w, 0, 0);
    RAW(SYS_read, c->sync_r, &byte, 1);
    RAW(SYS_exit, 0, 0, 0);
    return 0;
}

int sbx_make_userns(const char *uid_map, const char *gid_map, struct sbx_launched *out)
{
    memset(out, 0, sizeof *out);
    void *stack = mmap(NULL, STACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK,
                       -1, 0);
    if (stack == MAP_FAILED)
        return fail(out, SBX_LS_CLONE, errno, -1);
    int sync[2];
    if (pipe2(sync, O_CLOEXEC) < 0) {
        munmap(stack, STACK_SIZE);
        return fail(out, SBX_LS_SOCKET, errno, -1);
    }
    struct child_ctx c;
    memset(&c, 0, sizeof c);
    c.sync_r = sync[0];
    c.sync_w = sync[1];
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = clone(hold_child, (char *)stack + STACK_SIZE, CLONE_NEWUSER | CLONE_VM | SIGCHLD, &c);
    int e = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(sync[0]);
    if (pid < 0) {
        close(sync[1]);
        munmap(stack, STACK_SIZE);
        return fail(out, SBX_LS_CLONE, e, -1);
    }
    int r = write_map(pid, "uid_map", uid_map);
    if (r == 0)
        r = write_map(pid, "gid_map", gid_map);
    int fd = -1;
    if (r == 0) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/ns/user", (int)pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            r = -errno;
    }
    close(sync[1]);
    waitpid(pid, NULL, __WALL);
    munmap(stack, STACK_SIZE);
    if (r < 0)
        return fail(out, SBX_LS_MAPS, -r, -1);
    return fd;
}

/* The template mount namespace (template_main), held by an fd: every
 * init's mount namespace is copied from it (helper_main). */
int sbx_make_mntns(struct sbx_launched *out)
{
    memset(out, 0, sizeof *out);
    void *stack = mmap(NULL, HELPER_STACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK,
                       -1, 0);
    if (stack == MAP_FAILED)
        return fail(out, SBX_LS_TEMPLATE, errno, -1);
    int sync[2], res[2];
    if (pipe2(sync, O_CLOEXEC) < 0) {
        munmap(stack, HELPER_STACK_SIZE);
        return fail(out, SBX_LS_SOCKET, errno, -1);
    }
    if (pipe2(res, O_CLOEXEC) < 0) {
        int e = errno;
        close(sync[0]);
        close(sync[1]);
        munmap(stack, HELPER_STACK_SIZE);
        return fail(out, SBX_LS_SOCKET, e, -1);
    }
    struct template_ctx t = {sync[0], sync[1], res[1]};
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = clone(template_main, (char *)stack + HELPER_STACK_SIZE, CLONE_VM | SIGCHLD, &t);
    int e = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(sync[0]);
    close(res[1]);
    int fd = -1;
    if (pid < 0) {
        fail(out, SBX_LS_TEMPLATE, e, -1);
    } else {
        struct sbx_fail f;
        ssize_t n;
        while ((n = read(res[0], &f, sizeof f)) < 0 && errno == EINTR)
            ;
        if (n == (ssize_t)sizeof f) {
            fail(out, f.stage, f.err, -1);
        } else {
            char path[64];
            snprintf(path, sizeof path, "/proc/%d/ns/mnt", (int)pid);
            if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
                fail(out, SBX_LS_TEMPLATE, errno, -1);
        }
    }
    close(sync[1]); /* the maker exits */
    close(res[0]);
    if (pid >= 0)
        waitpid(pid, NULL, __WALL);
    munmap(stack, HELPER_STACK_SIZE);
    return fd;
}

/* A network namespace with only `lo`, up, for a later launch (see netpool.py).
 * It belongs to the host's user namespace, so the sandbox's root can use it
 * but not reconfigure it; ports below 1024 and ICMP echo sockets are opened
 * to every uid inside, as Docker does. */
static void write_sysctl(const char *path, const char *value)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t w = write(fd, value, strlen(value));
        (void)w;
        close(fd);
    }
}


/* What sbx_netns_idle reads of the calling thread's network namespace,
 * opened while the thread is inside it, so that the check can run later
 * from anywhere: its sockstat, sockstat6 and ip6_flowlabel files (a
 * /proc/<pid>/net file stays bound to the namespace it was opened in:
 * single_open_net takes a reference to that struct net), and a generic
 * netlink socket made in it, for the TCP metrics flush (tcpmetrics.h).
 * They hold the namespace: close them with its fd, or it lives on.  Opened
 * once, they spare every check two setns and two procfs path lookups (a
 * check took ~32 us of CPU in a loop here, ~3 us with the preads alone).
 * 0, or -errno with nothing left open. */
int sbx_netns_files(int stats[SBX_NETNS_STATS])
{
    static const char *const paths[SBX_NETNS_STATS - 1] = {
        "/proc/thread-self/net/sockstat", "/proc/thread-self/net/sockstat6", "/proc/thread-self/net/ip6_flowlabel"};
    int e = 0;
    for (int i = 0; i < SBX_NETNS_STATS; i++)
        stats[i] = -1;
    for (int i = 0; i < SBX_NETNS_STATS - 1 && !e; i++) {
        stats[i] = open(paths[i], O_RDONLY | O_CLOEXEC);
        if (stats[i] < 0)
            e = -errno;
    }
    if (!e) {
        stats[SBX_NETNS_STATS - 1] = sbx_tcpm_socket(); /* it flushes this namespace's TCP metrics later */
        if (stats[SBX_NETNS_STATS - 1] < 0)
            e = stats[SBX_NETNS_STATS - 1];
    }
    if (e) {
        for (int i = 0; i < SBX_NETNS_STATS; i++) {
            if (stats[i] >= 0)
                close(stats[i]);
            stats[i] = -1;
        }
    }
    return e;
}

/* A new network namespace with `lo` up: its fd, or -errno.  With `stats`,
 * also sbx_netns_files of it. */
int sbx_make_netns(int stats[SBX_NETNS_STATS])
{
    for (int i = 0; stats && i < SBX_NETNS_STATS; i++)
        stats[i] = -1;
    int orig = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (orig < 0)
        return -errno;
    if (unshare(CLONE_NEWNET) < 0) {
        int e = errno;
        close(orig);
        return -e;
    }
    int fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    int e = fd < 0 ? errno : 0;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s >= 0) {
        struct ifreq ifr;
        memset(&ifr, 0, sizeof ifr);
        strcpy(ifr.ifr_name, "lo");
        ifr.ifr_flags = IFF_UP | IFF_LOOPBACK | IFF_RUNNING;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0 && !e)
            e = errno;
        close(s);
    }
    write_sysctl("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0");
    write_sysctl("/proc/sys/net/ipv4/ping_group_range", "0 2147483647");
    if (stats && !e)
        e = -sbx_netns_files(stats);
    if (setns(orig, CLONE_NEWNET) < 0)
        die_setns("sbx_make_netns", orig); /* this thread must not stay in the new namespace */
    close(orig);
    if (e) {
        for (int i = 0; stats && i < SBX_NETNS_STATS; i++) {
            if (stats[i] >= 0)
                close(stats[i]);
            stats[i] = -1;
        }
        if (fd >= 0)
            close(fd);
        return -e;
    }
    return fd;
}

/* The number after `key` in `text`, or -1 where it is missing. */
static long stat_field(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    if (!p)
        return -1;
    return strtol(p + strlen(key), NULL, 10);
}

/* Whether a network namespace a sandbox used holds nothing of it any more,
 * so that the next sandbox may have it (see netpool.py): 1 when no socket
 * of any family is left in it but our netlink one (nor a TIME_WAIT one,
 * nor a fragment queue),
 * nor an IPv6 flow label (one outlives its socket by its linger, up to
 * 150 s for an unprivileged process, and the next sandbox would read it in
 * /proc/net/ip6_flowlabel, and could not make it itself); 0 when something
 * is, -errno when it could not be read.  The counts are the namespace's
 * own (sockstat: sock_inuse_get and tw_refcount are per netns; the
 * kernel's own sockets are not counted).  `stats` are its files that
 * sbx_netns_files opened: a read from offset 0 makes the seq_file show them
 * anew, so three preads are the whole check, from whichever namespace this
 * thread is in.  Then, for a namespace that passes, its TCP metrics are
 * flushed (tcpmetrics.h): a failure there is -errno too, and the namespace
 * is not used again. */
int sbx_netns_idle(const int stats[SBX_NETNS_STATS])
{
    char buf[SBX_NETNS_STATS - 1][1024];
    ssize_t n[SBX_NETNS_STATS - 1];
    for (int i = 0; i < SBX_NETNS_STATS - 1; i++) {
        n[i] = pread(stats[i], buf[i], sizeof buf[i] - 1, 0);
        if (n[i] < 0)
            return -errno;
        buf[i][n[i]] = 0;
    }
    /* one socket is ours: the netlink one of sbx_make_netns */
    if (stat_field(buf[0], "sockets: used ") != 1 || stat_field(buf[0], " tw ") != 0 ||
        stat_field(buf[0], "FRAG: inuse ") != 0 || stat_field(buf[1], "FRAG6: inuse ") != 0)
        return 0;
    const char *nl = memchr(buf[2], '\n', (size_t)n[2]); /* a header line, then one line per label */
    if (!nl || nl + 1 < buf[2] + n[2])
        return 0;
    int e = sbx_tcpm_flush(stats[SBX_NETNS_STATS - 1]); /* last: only a namespace that is used again */
    return e < 0 ? e : 1;
}

/* SIGKILL to an init, which first goes off the calling thread's CPU (see
 * _core.kill): one call, where three from Python each released and retook
 * the interpreter lock.  0, or -errno (a gone init is 0). */
int sbx_kill_init(int pidfd, int pid)
{
    cpu_set_t cpus;
    int me = sched_getcpu();
    if (me >= 0 && sched_getaffinity(0, sizeof cpus, &cpus) == 0 && CPU_COUNT(&cpus) > 1) {
        CPU_CLR(me, &cpus);
        sched_setaffinity(pid, sizeof cpus, &cpus); /* gone, or not ours: it dies where it is */
    }
    if (syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0) < 0)
        return errno == ESRCH ? 0 : -errno;
    return 0;
}
