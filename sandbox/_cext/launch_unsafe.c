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
 *           prepared user namespace with the sandbox's mapping), sockets,
 *           clone(every namespace | CLONE_VM | CLONE_PIDFD) with the
 *           sandbox's host uid as effective uid (become_owner)
 *   parent: write uid_map and gid_map, then the sync byte
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
#define HIGH_FD 900 /* where the child parks fds before moving them down */
#define SBX_CLOSE_RANGE_CLOEXEC (1U << 2) /* linux/close_range.h, 5.11 */

int sbx_abi_version(void) { return SBX_ABI_VERSION; }

/* ---- raw system calls for the child: no errno, no libc state ------------------ */

#include "sys6.h"

__attribute__((noreturn)) static void die_setns(const char *where, int fd);
#define RAW(n, a, b, c) raw6((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)

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

static void child_report(int fd, uint32_t stage, long err)
{
    struct sbx_fail f;
    /* No memset: a plain loop the compiler may not turn into a libc call. */
    volatile char *p = (volatile char *)&f;
    for (size_t i = 0; i < sizeof f; i++)
        p[i] = 0;
    f.stage = stage;
    f.err = (int32_t)-err;
    RAW(SYS_write, fd, &f, sizeof f);
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

/* A user namespace belongs to the effective uid that creates it, and the
 * kernel charges what its users hold (inotify instances, pending signals,
 * POSIX message queue bytes: ucounts) to that owner too, against the
 * owner's own limits.  Cloned by host root, a sandbox could use up root's
 * (128 inotify instances: systemd and udev then fail).  So this thread
 * clones with the sandbox's host uid as its effective uid: a raw setresuid,
 * this thread only, whose effective capabilities go and come back with it
 * (its real and saved uids stay 0).  The uid change also clears the
 * thread's parent-death signal: put back.  0 once done (-1: not applicable
 * or refused: clone as before). */
static void restore_dumpable(int was)
{
    if (was > 0 && prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != was)
        prctl(PR_SET_DUMPABLE, was, 0, 0, 0);
}

static int owner_refused; /* a kernel or LSM refused the unprivileged clone once */

static int become_owner(unsigned long flags, const char *uid_map, int *pdeathsig)
{
    unsigned long owner = map_host_start(uid_map);
    if (!(flags & CLONE_NEWUSER) || owner == 0 || owner > 0xfffffffeUL || owner_refused || geteuid() != 0)
        return -1;
    if (prctl(PR_GET_PDEATHSIG, pdeathsig, 0, 0, 0) < 0)
        *pdeathsig = 0;
    return RAW(SYS_setresuid, -1, owner, -1) < 0 ? -1 : 0;
}

static void back_to_root(int pdeathsig)
{
    if (RAW(SYS_setresuid, -1, 0, -1) < 0)
        abort(); /* this thread would go on without its capabilities: never */
    if (pdeathsig > 0)
        prctl(PR_SET_PDEATHSIG, pdeathsig, 0, 0, 0);
}

/* Clone a child into the namespaces in `flags`, write its maps, and let it
 * exec the init (or, for a bare user namespace, just wait).  Everything the
 * child reads sits in *c, prepared here before the clone. */
static pid_t clone_child(struct child_ctx *c, unsigned long flags, const char *uid_map,
                         const char *gid_map, int *pidfd, struct sbx_launched *out)
{
    /* One stack per thread, kept: an munmap while the child's CPU still holds
     * our address space would cost a TLB-shootdown IPI to it. */
    static __thread void *stack;
    if (!stack) {
        stack = mmap(NULL, STACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (stack == MAP_FAILED) {
            stack = NULL;
            return fail(out, SBX_LS_CLONE, errno, -1);
        }
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
    /* No signal handler of the interpreter may run on the child's stack. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    /* Any uid change of a task sharing our memory makes the process not
     * dumpable (the child's own, to container root, and ours above): put
     * back once the child has its own memory (or is gone). */
    int dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), pdeathsig = 0;
    int as_owner = become_owner(flags, uid_map, &pdeathsig) == 0;
    pid_t pid = clone(child_main, (char *)stack + STACK_SIZE, (int)(flags | CLONE_VM | CLONE_PIDFD | SIGCHLD),
                      c, pidfd);
    int clone_errno = errno;
    if (as_owner) {
        back_to_root(pdeathsig);
        if (pid < 0 && (clone_errno == EPERM || clone_errno == EACCES)) {
            /* unprivileged user namespaces refused here (a sysctl, an LSM):
             * host root owns them, as before */
            owner_refused = 1;
            pid = clone(child_main, (char *)stack + STACK_SIZE,
                        (int)(flags | CLONE_VM | CLONE_PIDFD | SIGCHLD), c, pidfd);
            clone_errno = errno;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(sync[0]);
    close(ex[1]);
    if (pid < 0) {
        close(sync[1]);
        close(ex[0]);
        restore_dumpable(dumpable);
        return fail(out, SBX_LS_CLONE, clone_errno, -1);
    }
    int r = write_map(pid, "uid_map", uid_map);
    if (r == 0)
        r = write_map(pid, "gid_map", gid_map);
    if (r < 0) {
        close(sync[1]); /* the child reads EOF and exits */
        close(ex[0]);
        waitpid(pid, NULL, __WALL);
        close(*pidfd);
        restore_dumpable(dumpable);
        return fail(out, SBX_LS_MAPS, -r, -1);
    }
    __atomic_store_n(&c->go, 1, __ATOMIC_RELEASE);
    char byte = 1;
    ssize_t w = write(sync[1], &byte, 1); /* for a child that stopped spinning */
    close(sync[1]);
    (void)w;
    /* EOF: the execve replaced the child's memory; the stack is ours again.
     * Spin a little first, for the reason given in child_main. */
    struct sbx_fail f;
    ssize_t n;
    fcntl(ex[0], F_SETFL, O_NONBLOCK);
    long end = raw_now_ns() + (c->spin ? SPIN_NS : 0);
    while ((n = read(ex[0], &f, sizeof f)) < 0 && errno == EAGAIN && raw_now_ns() < end)
        sched_yield(); /* the child may be queued on this very CPU */
    fcntl(ex[0], F_SETFL, 0);
    while (n < 0 && (errno == EAGAIN || errno == EINTR))
        n = read(ex[0], &f, sizeof f);
    close(ex[0]);
    if (n == (ssize_t)sizeof f) {
        waitpid(pid, NULL, __WALL);
        close(*pidfd);
        restore_dumpable(dumpable);
        return fail(out, f.stage, f.err, -1);
    }
    restore_dumpable(dumpable); /* EOF: the child has exec'd, its memory is its own */
    return pid;
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
    unsigned long flags = l->clone_flags;
    int orig_net = -1;
    if (l->netns_fd >= 0) {
        /* A network namespace made ahead of time (making one costs ~0.4 ms
         * in clone): this thread steps into it for the clone, then back. */
        orig_net = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (orig_net >= 0 && setns(l->netns_fd, CLONE_NEWNET) == 0)
            flags &= ~(unsigned long)CLONE_NEWNET;
        else if (orig_net >= 0) {
            close(orig_net);
            orig_net = -1;
        }
    }
    pid_t pid = clone_child(&c, flags, l->uid_map, l->gid_map, &pidfd, out);
    if (orig_net >= 0) {
        if (setns(orig_net, CLONE_NEWNET) < 0)
            die_setns("sbx_launch", orig_net); /* this thread would stay in the sandbox's network: never */
        close(orig_net);
    }
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

/* The thread could not step back into the host's network namespace: it
 * must not run on in another one.  Say why on stderr, then abort. */
__attribute__((noreturn)) static void die_setns(const char *where, int fd)
{
    char msg[160];
    int n = snprintf(msg, sizeof msg, "sandbox: %s: setns back to fd %d failed: %s; aborting\n", where, fd,
                     strerror(errno));
    if (n > 0)
        (void)!write(2, msg, (size_t)n);
    abort();
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
        die_setns("sbx_make_netns", orig); /* as above: this thread must not stay in the new namespace */
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
