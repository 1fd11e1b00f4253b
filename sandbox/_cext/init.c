/* The sandbox init: a small static program, PID 1 of the sandbox.
 *
 * The launcher clones a child into fresh namespaces and execs this file
 * from a sealed memfd (so the init is not a host file the sandbox could reach
 * or rewrite: the CVE-2019-5736 class).  Fds on entry:
 *   3        the control socket; its first message is the launch plan
 *   4..4+n   detached mount trees the launcher prepared for the plan
 *
 * First it runs the plan: a flat list of mount/mkdir/pivot operations that
 * Python built.  It decides nothing; any failure is reported as one fixed-size
 * record (operation index, errno, detail) and the init exits.  Then it serves
 * requests (exec, kill, open, mkdir), each carrying its own reply socket, and
 * reaps every process, orphans included.  When the control socket hangs up
 * (the owner died or closed the sandbox) it exits, and the kernel kills every
 * process left in the pid namespace.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/openat2.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto.h"

#define CTL_FD 3
#define FIRST_TREE_FD 4
#define MAX_EXECS 4096
#define MAX_FDS 4

static unsigned char msgbuf[SBX_MSG_MAX];

/* ---- small helpers ------------------------------------------------------------ */

static void put_detail(struct sbx_fail *f, const char *a, const char *b)
{
    snprintf(f->detail, sizeof f->detail, "%s%s%s", a ? a : "", (a && b) ? " " : "", b ? b : "");
}

static void send_msg(int fd, uint32_t type, uint32_t id, const void *body, size_t len, int pass_fd)
{
    unsigned char buf[sizeof(struct sbx_msg_hdr) + sizeof(struct sbx_fail) + 64];
    struct sbx_msg_hdr h = {type, id};
    if (len > sizeof buf - sizeof h)
        return;
    memcpy(buf, &h, sizeof h);
    if (len)
        memcpy(buf + sizeof h, body, len);
    struct iovec iov = {buf, sizeof h + len};
    union {
        struct cmsghdr c;
        char b[CMSG_SPACE(sizeof(int))];
    } u;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    if (pass_fd >= 0) {
        memset(&u, 0, sizeof u);
        m.msg_control = u.b;
        m.msg_controllen = sizeof u.b;
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
    }
    /* The host may have gone away: never block, never die of SIGPIPE. */
    (void)sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
}

static void send_fail(int fd, uint32_t type, uint32_t id, uint32_t stage, int err, const char *a,
                      const char *b)
{
    struct sbx_fail f;
    memset(&f, 0, sizeof f);
    f.stage = stage;
    f.err = err;
    put_detail(&f, a, b);
    send_msg(fd, type, id, &f, sizeof f, -1);
}

/* ---- the launch plan -------------------------------------------------------- */

static void setup_fail(uint32_t opindex, int err, const char *what, const char *path)
{
    char idx[32];
    snprintf(idx, sizeof idx, "op%u", opindex);
    struct sbx_fail f;
    memset(&f, 0, sizeof f);
    f.stage = opindex;
    f.err = err;
    snprintf(f.detail, sizeof f.detail, "%s %s", what, path ? path : "");
    send_msg(CTL_FD, SBX_REP_SETUP_FAIL, 0, &f, sizeof f, -1);
    _exit(1);
}

/* Paths of targets.  Before SBX_OP_ROOT they resolve as usual (relative
 * ones against the staging directory).  After it, absolute ones resolve
 * inside the new root with RESOLVE_IN_ROOT: the rootfs is image content, and
 * a symlink such as /dev -> /host/path must not lead a mount out of it. */
static int root_fd = -1;

static int in_root(const char *path) { return root_fd >= 0 && path[0] == '/'; }

static int open_at_root(const char *path, int flags, mode_t mode)
{
    if (!in_root(path))
        return open(path, flags | O_CLOEXEC, mode);
    struct open_how how = {.flags = (uint64_t)(flags | O_CLOEXEC), .mode = mode,
                           .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
    const char *rel = path + strspn(path, "/");
    return (int)syscall(SYS_openat2, root_fd, *rel ? rel : ".", &how, sizeof how);
}

/* The directory holding `path` (resolved as above) and the last component. */
static int open_parent(const char *path, char *base, size_t basesz)
{
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    if (!*name || !strcmp(name, ".") || !strcmp(name, "..") || strlen(name) >= basesz)
        return -EINVAL;
    strcpy(base, name);
    char dir[4096];
    size_t n = slash ? (size_t)(slash - path) : 0;
    if (n >= sizeof dir)
        return -ENAMETOOLONG;
    memcpy(dir, path, n);
    dir[n] = 0;
    if (!slash)
        strcpy(dir, ".");
    else if (n == 0)
        strcpy(dir, "/");
    int fd = open_at_root(dir, O_PATH | O_DIRECTORY, 0);
    return fd < 0 ? -errno : fd;
}

/* A target for mount(2) and friends: a path that names exactly the file
 * resolved above, through the host's /proc (still mounted before the pivot). */
static int target_path(const char *path, char *out, size_t outsz, int *fd)
{
    *fd = -1;
    if (!in_root(path)) {
        snprintf(out, outsz, "%s", path);
        return 0;
    }
    *fd = open_at_root(path, O_PATH, 0);
    if (*fd < 0)
        return -errno;
    snprintf(out, outsz, "/proc/self/fd/%d", *fd);
    return 0;
}

/* Make every missing directory of an absolute path under the new root,
 * refusing symlinks and "..": the path is a user's mount destination. */
static int mkdir_safe(const char *path)
{
    char comp[256];
    int dfd = root_fd >= 0 ? dup(root_fd) : open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    const char *p = path;
    while (*p) {
        p += strspn(p, "/");
        if (!*p)
            break;
        size_t n = strcspn(p, "/");
        if (n >= sizeof comp) {
            close(dfd);
            return -ENAMETOOLONG;
        }
        memcpy(comp, p, n);
        comp[n] = 0;
        p += n;
        if (!strcmp(comp, "..") || !strcmp(comp, ".")) {
            close(dfd);
            return -EINVAL;
        }
        int nfd = openat(dfd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (nfd < 0 && errno == ENOENT) {
            if (mkdirat(dfd, comp, 0755) < 0 && errno != EEXIST) {
                int e = errno;
                close(dfd);
                return -e;
            }
            nfd = openat(dfd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
        if (nfd < 0) {
            /* a symlink: O_PATH|O_DIRECTORY|O_NOFOLLOW gives ENOTDIR or ELOOP */
            int e = errno;
            close(dfd);
            return -e;
        }
        close(dfd);
        dfd = nfd;
    }
    close(dfd);
    return 0;
}

static int write_file(const char *path, const char *content, mode_t mode)
{
    int fd = open_at_root(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, mode);
    if (fd < 0)
        return -errno;
    size_t len = strlen(content), off = 0;
    while (off < len) {
        ssize_t w = write(fd, content + off, len - off);
        if (w < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
        off += (size_t)w;
    }
    close(fd);
    return 0;
}

/* One operation; 0 or a negative errno, with *what naming the step. */
static int run_op(const struct sbx_op_hdr *op, const char *s[4], uint32_t nfds, const char **what)
{
    const char *s0 = s[0] && *s[0] ? s[0] : NULL, *s1 = s[1] && *s[1] ? s[1] : NULL;
    const char *s2 = s[2] && *s[2] ? s[2] : NULL, *s3 = s[3] && *s[3] ? s[3] : NULL;
    char tgt[64], base[256];
    int tfd = -1, r = 0, dfd;
    switch (op->type) {
    case SBX_OP_MOUNT:
        *what = s2 ? s2 : "mount";
        if (!s1)
            return -EINVAL;
        if ((r = target_path(s1, tgt, sizeof tgt, &tfd)) == 0 &&
            mount(s0, tgt, s2, (unsigned long)op->a, s3) < 0)
            r = -errno;
        break;
    case SBX_OP_REMOUNT:
        *what = "remount";
        if (!s0)
            return -EINVAL;
        if ((r = target_path(s0, tgt, sizeof tgt, &tfd)) == 0 &&
            mount(NULL, tgt, NULL, MS_REMOUNT | MS_BIND | (unsigned long)op->a, NULL) < 0)
            r = -errno;
        break;
    case SBX_OP_MKDIR:
        *what = "mkdir";
        if (!s0)
            return -EINVAL;
        if ((dfd = open_parent(s0, base, sizeof base)) < 0)
            return dfd;
        if (mkdirat(dfd, base, (mode_t)op->a) < 0 && errno != EEXIST)
            r = -errno;
        close(dfd);
        break;
    case SBX_OP_MKDIR_SAFE:
        *what = "mkdir";
        return s0 ? mkdir_safe(s0) : -EINVAL;
    case SBX_OP_WRITE:
        *what = "write";
        return s0 ? write_file(s0, s[1] ? s[1] : "", (mode_t)op->a) : -EINVAL;
    case SBX_OP_MKFILE:
        *what = "create";
        if (!s0)
            return -EINVAL;
        if ((tfd = open_at_root(s0, O_WRONLY | O_CREAT, (mode_t)op->a)) < 0 && errno != EISDIR)
            r = -errno;
        break;
    case SBX_OP_SYMLINK:
        *what = "symlink";
        if (!s0 || !s1)
            return -EINVAL;
        if ((dfd = open_parent(s1, base, sizeof base)) < 0)
            return dfd;
        if (symlinkat(s0, dfd, base) < 0 && errno != EEXIST)
            r = -errno;
        close(dfd);
        break;
    case SBX_OP_ATTACH:
        *what = "attach";
        if (!s0 || op->a >= nfds)
            return -EBADF;
        /* move_mount does not follow a magic link at the target: pass the fd */
        if ((r = target_path(s0, tgt, sizeof tgt, &tfd)) == 0 &&
            (tfd >= 0 ? move_mount(FIRST_TREE_FD + (int)op->a, "", tfd, "",
                                   MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)
                      : move_mount(FIRST_TREE_FD + (int)op->a, "", AT_FDCWD, tgt, MOVE_MOUNT_F_EMPTY_PATH)) < 0)
            r = -errno;
        break;
    case SBX_OP_ROOT:
        *what = "root";
        if (!s0)
            return -EINVAL;
        if ((root_fd = open(s0, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
            return -errno;
        break;
    case SBX_OP_PIVOT:
        /* pivot_root(".", ".") stacks the old root on top of the new one;
         * detaching it leaves only the new root (as runc does). */
        *what = "pivot_root";
        if (!s0 || chdir(s0) < 0 || syscall(SYS_pivot_root, ".", ".") < 0 ||
            umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
            return s0 ? -errno : -EINVAL;
        if (root_fd >= 0)
            close(root_fd);
        root_fd = -1;
        break;
    case SBX_OP_HOSTNAME:
        *what = "sethostname";
        if (!s0 || sethostname(s0, strlen(s0)) < 0)
            return s0 ? -errno : -EINVAL;
        break;
    case SBX_OP_CHDIR:
        *what = "chdir";
        if (!s0 || chdir(s0) < 0)
            return s0 ? -errno : -EINVAL;
        break;
    default:
        *what = "plan";
        return -EINVAL;
    }
    if (tfd >= 0)
        close(tfd);
    return r;
}

static void run_plan(const unsigned char *buf, size_t len, uint32_t *nfds_out)
{
    struct sbx_plan_hdr h;
    if (len < sizeof h)
        setup_fail(0, EINVAL, "plan", "too short");
    memcpy(&h, buf, sizeof h);
    if (h.magic != SBX_PLAN_MAGIC || h.version != SBX_ABI_VERSION)
        setup_fail(0, EPROTO, "plan", "bad magic or version");
    *nfds_out = h.nfds;
    size_t off = sizeof h;
    for (uint32_t i = 0; i < h.nops; i++) {
        struct sbx_op_hdr op;
        if (off + sizeof op > len)
            setup_fail(i, EINVAL, "plan", "truncated");
        memcpy(&op, buf + off, sizeof op);
        if (op.len < sizeof op || op.len > len - off || op.nstr > 4)
            setup_fail(i, EINVAL, "plan", "bad record");
        const char *s[4] = {NULL, NULL, NULL, NULL};
        const char *p = (const char *)buf + off + sizeof op, *end = (const char *)buf + off + op.len;
        for (unsigned k = 0; k < op.nstr; k++) {
            const char *z = memchr(p, 0, (size_t)(end - p));
            if (!z)
                setup_fail(i, EINVAL, "plan", "unterminated string");
            s[k] = p;
            p = z + 1;
        }
        const char *what = "plan";
        int r = run_op(&op, s, h.nfds, &what);
        if (r < 0 && !(op.flags & SBX_F_OPTIONAL)) {
            /* name the path the step was about: the target where there is one */
            const char *path = op.type == SBX_OP_MOUNT || op.type == SBX_OP_SYMLINK ? s[1] : s[0];
            setup_fail(i, -r, what, path);
        }
        off += op.len;
    }
}

/* ---- exec ------------------------------------------------------------------ */

struct slot {
    uint32_t id;
    pid_t pid;
    int reply;
};
static struct slot slots[MAX_EXECS];

static struct slot *find_slot_pid(pid_t pid)
{
    for (int i = 0; i < MAX_EXECS; i++)
        if (slots[i].pid == pid)
            return &slots[i];
    return NULL;
}

static struct slot *find_slot_id(uint32_t id)
{
    for (int i = 0; i < MAX_EXECS; i++)
        if (slots[i].pid > 0 && slots[i].id == id)
            return &slots[i];
    return NULL;
}

/* In the forked child: report why we could not exec, and leave. */
static _Noreturn void child_fail(int errfd, uint32_t stage, int err, const char *detail)
{
    struct sbx_fail f;
    memset(&f, 0, sizeof f);
    f.stage = stage;
    f.err = err;
    put_detail(&f, detail, NULL);
    (void)!write(errfd, &f, sizeof f);
    _exit(127);
}

/* execvpe, but with PATH taken from the exec's own environment. */
static int exec_search(const char *file, char *const argv[], char *const envp[])
{
    if (strchr(file, '/')) {
        execve(file, argv, envp);
        return -errno;
    }
    const char *path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    for (char *const *e = envp; *e; e++)
        if (!strncmp(*e, "PATH=", 5))
            path = *e + 5;
    int err = -ENOENT;
    char buf[4096];
    while (*path) {
        size_t n = strcspn(path, ":");
        if (n + strlen(file) + 2 <= sizeof buf) {
            memcpy(buf, n ? path : ".", n ? n : 1);
            size_t m = n ? n : 1;
            buf[m] = '/';
            strcpy(buf + m + 1, file);
            execve(buf, argv, envp);
            /* Like execvp: remember a permission problem, keep looking. */
            if (errno == EACCES)
                err = -EACCES;
            else if (errno != ENOENT && errno != ENOTDIR)
                return -errno;
        }
        path += n;
        if (*path == ':')
            path++;
    }
    return err;
}

static void kill_exec(pid_t pid, int sig)
{
    /* The exec's own process group, then anything else left in its session:
     * children that left the group but not the session. */
    kill(-pid, sig);
    DIR *d = opendir("/proc");
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        char *endp;
        long p = strtol(de->d_name, &endp, 10);
        if (*endp || p <= 1)
            continue;
        char path[64], stat[512];
        snprintf(path, sizeof path, "/proc/%ld/stat", p);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, stat, sizeof stat - 1);
        close(fd);
        if (n <= 0)
            continue;
        stat[n] = 0;
        /* The command name may hold spaces and parentheses: skip to the last ')'. */
        char *q = strrchr(stat, ')');
        int ppid, pgrp, sid;
        char st;
        if (q && sscanf(q + 1, " %c %d %d %d", &st, &ppid, &pgrp, &sid) == 4 && sid == pid)
            kill((pid_t)p, sig);
    }
    closedir(d);
}

static void do_exec(uint32_t id, const unsigned char *body, size_t len, int *fds, int nfds)
{
    int reply = fds[0];
    struct sbx_exec_req r;
    if (len < sizeof r) {
        send_fail(reply, SBX_REP_EXEC_FAIL, id, SBX_ST_REQUEST, EINVAL, "short request", NULL);
        return;
    }
    memcpy(&r, body, sizeof r);
    size_t need = sizeof r + (size_t)r.ngroups * 4 + (size_t)r.nrlimits * sizeof(struct sbx_rlimit);
    int nstreams = __builtin_popcount(r.fds & 7);
    if (r.ngroups > 65536 || r.nrlimits > 64 || need > len || r.argc == 0 || r.argc > 65536 ||
        r.envc > 65536 || nstreams != nfds - 1) {
        send_fail(reply, SBX_REP_EXEC_FAIL, id, SBX_ST_REQUEST, EINVAL, "bad request", NULL);
        return;
    }
    struct slot *s = find_slot_pid(0);
    if (!s) {
        send_fail(reply, SBX_REP_EXEC_FAIL, id, SBX_ST_FORK, EAGAIN, "too many execs", NULL);
        return;
    }
    gid_t groups[r.ngroups ? r.ngroups : 1];
    memcpy(groups, body + sizeof r, (size_t)r.ngroups * 4);
    struct sbx_rlimit rl[r.nrlimits ? r.nrlimits : 1];
    memcpy(rl, body + sizeof r + (size_t)r.ngroups * 4, (size_t)r.nrlimits * sizeof *rl);
    /* Strings: cwd, argv..., env...; all must be terminated inside the message. */
    size_t nstr = 1 + (size_t)r.argc + r.envc;
    char **strs = calloc(nstr + 2, sizeof *strs);
    if (!strs) {
        send_fail(reply, SBX_REP_EXEC_FAIL, id, SBX_ST_FORK, ENOMEM, "request", NULL);
        return;
    }
    char *p = (char *)body + need, *end = (char *)body + len;
    for (size_t k = 0; k < nstr; k++) {
        char *z = memchr(p, 0, (size_t)(end - p));
        if (!z) {
            free(strs);
            send_fail(reply, SBX_REP_EXEC_FAIL, id, SBX_ST_REQUEST, EINVAL, "bad strings", NULL);
            return;
        }
        strs[k] = p;
        p = z + 1;
    }
    const char *cwd = strs[0];
    char **argv = strs + 1;
    /* argv and env are each NULL-terminated in place: copy env behind a NULL. */
    char **envp = calloc(r.envc + 1, sizeof *envp);
    if (!envp) {
        free(strs);
        send_fail(reply, SBX_REP_EXEC_FAIL, id, SBX_ST_FORK, ENOMEM, "request", NULL);
        return;
    }
    memcpy(envp, strs + 1 + r.argc, r.envc * sizeof *envp);
    argv[r.argc] = NULL; /* overwrites envp[0]'s slot in strs, already copied */
    int stream[3] = {-1, -1, -1};
    for (int k = 0, next = 1; k < 3; k++)
        if (r.fds & (1u << k))
            stream[k] = fds[next++];

    int ep[2];
    if (pipe2(ep, O_CLOEXEC) < 0) {
        send_fail(reply, SBX_REP_EXEC_FAIL, id, SBX_ST_FORK, errno, "pipe", NULL);
        goto out;
    }
    pid_t pid = fork();
    if (pid < 0) {
        send_fail(reply, SBX_REP_EXEC_FAIL, id, SBX_ST_FORK, errno, "fork", NULL);
        close(ep[0]);
        close(ep[1]);
        goto out;
    }
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (setsid() < 0)
            child_fail(ep[1], SBX_ST_SETSID, errno, "setsid");
        for (int k = 0; k < 3; k++) {
            int fd = stream[k] >= 0 ? stream[k] : open("/dev/null", k ? O_WRONLY : O_RDONLY);
            if (fd < 0 || dup2(fd, k) < 0)
                child_fail(ep[1], SBX_ST_STDIO, errno, "/dev/null");
        }
        /* Keep only 0-2 and the error pipe (moved to 3, close-on-exec). */
        if (dup3(ep[1], 3, O_CLOEXEC) < 0)
            child_fail(ep[1], SBX_ST_STDIO, errno, "dup");
        close_range(4, ~0U, 0);
        for (uint32_t k = 0; k < r.nrlimits; k++) {
            struct rlimit lim = {rl[k].cur, rl[k].max};
            if (setrlimit((int)rl[k].resource, &lim) < 0)
                child_fail(3, SBX_ST_RLIMIT, errno, "setrlimit");
        }
        if (setgroups(r.ngroups, groups) < 0)
            child_fail(3, SBX_ST_GROUPS, errno, "setgroups");
        if (setresgid(r.gid, r.gid, r.gid) < 0)
            child_fail(3, SBX_ST_GID, errno, "setgid");
        if (setresuid(r.uid, r.uid, r.uid) < 0)
            child_fail(3, SBX_ST_UID, errno, "setuid");
        if (chdir(cwd) < 0)
            child_fail(3, SBX_ST_CHDIR, errno, cwd);
        int e = exec_search(argv[0], argv, envp);
        child_fail(3, SBX_ST_EXEC, -e, argv[0]);
    }
    close(ep[1]);
    struct sbx_fail f;
    ssize_t n;
    do
        n = read(ep[0], &f, sizeof f);
    while (n < 0 && errno == EINTR);
    close(ep[0]);
    if (n == (ssize_t)sizeof f) {
        /* It never ran: reap it here so no EXITED follows the failure. */
        waitpid(pid, NULL, 0);
        f.detail[SBX_DETAIL_MAX - 1] = 0;
        send_msg(reply, SBX_REP_EXEC_FAIL, id, &f, sizeof f, -1);
        goto out;
    }
    struct sbx_started st = {(uint32_t)pid, 0};
    send_msg(reply, SBX_REP_STARTED, id, &st, sizeof st, -1);
    s->id = id;
    s->pid = pid;
    s->reply = reply;
    reply = -1;
out:
    for (int k = 0; k < 3; k++)
        if (stream[k] >= 0)
            close(stream[k]);
    if (reply >= 0)
        close(reply);
    free(envp);
    free(strs);
}

static void reap(void)
{
    for (;;) {
        int status;
        struct rusage ru;
        pid_t pid = wait4(-1, &status, WNOHANG, &ru);
        if (pid <= 0)
            return;
        struct slot *s = find_slot_pid(pid);
        if (!s)
            continue; /* an orphan that ended up with us */
        struct sbx_exited ex = {
            .status = status,
            .utime_us = (int64_t)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec,
            .stime_us = (int64_t)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec,
            .maxrss_kb = ru.ru_maxrss,
        };
        send_msg(s->reply, SBX_REP_EXITED, s->id, &ex, sizeof ex, -1);
        close(s->reply);
        s->pid = 0;
        s->reply = -1;
    }
}

static void do_path(uint32_t type, uint32_t id, const unsigned char *body, size_t len, int reply)
{
    struct sbx_path_req r;
    if (len < sizeof r + 2 || body[len - 1] != 0) {
        send_fail(reply, SBX_REP_ERROR, id, SBX_ST_REQUEST, EINVAL, "bad request", NULL);
        return;
    }
    memcpy(&r, body, sizeof r);
    const char *path = (const char *)body + sizeof r;
    if (type == SBX_REQ_MKDIR) {
        if (mkdir(path, r.mode & 07777) < 0)
            send_fail(reply, SBX_REP_ERROR, id, 0, errno, path, NULL);
        else
            send_msg(reply, SBX_REP_OK, id, NULL, 0, -1);
        return;
    }
    /* O_NONBLOCK so that a FIFO planted by the sandbox cannot stall the init;
     * anything but a regular file or a directory is refused. */
    int fd = open(path, (int)(r.flags & ~(unsigned)O_CREAT) | (r.flags & O_CREAT) | O_NONBLOCK | O_NOCTTY | O_CLOEXEC,
                  r.mode & 07777);
    if (fd < 0) {
        send_fail(reply, SBX_REP_ERROR, id, 0, errno, path, NULL);
        return;
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0 || !(S_ISREG(sb.st_mode) || S_ISDIR(sb.st_mode))) {
        close(fd);
        send_fail(reply, SBX_REP_ERROR, id, 0, EINVAL, path, "is not a regular file or directory");
        return;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    send_msg(reply, SBX_REP_FD, id, NULL, 0, fd);
    close(fd);
}

static void serve(void)
{
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        _exit(1);
    for (;;) {
        struct pollfd pf[2] = {{CTL_FD, POLLIN, 0}, {sfd, POLLIN, 0}};
        if (poll(pf, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            _exit(1);
        }
        if (pf[1].revents) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) > 0)
                ;
            reap();
        }
        if (!pf[0].revents)
            continue;
        union {
            struct cmsghdr c;
            char b[CMSG_SPACE(MAX_FDS * sizeof(int))];
        } u;
        struct iovec iov = {msgbuf, sizeof msgbuf};
        struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof u.b};
        ssize_t n = recvmsg(CTL_FD, &m, MSG_CMSG_CLOEXEC);
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
            _exit(0); /* the owner is gone: the pid namespace goes with us */
        if (n < 0)
            continue;
        int fds[MAX_FDS], nfds = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
                for (int j = 0; j < k; j++) {
                    int fd;
                    memcpy(&fd, CMSG_DATA(c) + j * sizeof(int), sizeof fd);
                    if (nfds < MAX_FDS)
                        fds[nfds++] = fd;
                    else
                        close(fd);
                }
            }
        struct sbx_msg_hdr h;
        if ((size_t)n < sizeof h || nfds < 1 || (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
            for (int j = 0; j < nfds; j++)
                close(fds[j]);
            continue;
        }
        memcpy(&h, msgbuf, sizeof h);
        const unsigned char *body = msgbuf + sizeof h;
        size_t blen = (size_t)n - sizeof h;
        switch (h.type) {
        case SBX_REQ_EXEC:
            do_exec(h.id, body, blen, fds, nfds);
            nfds = 0; /* do_exec owns them */
            break;
        case SBX_REQ_KILL: {
            struct sbx_kill_req k;
            if (blen >= sizeof k) {
                memcpy(&k, body, sizeof k);
                struct slot *s = find_slot_id(k.target);
                if (s && k.sig > 0 && k.sig < 65)
                    kill_exec(s->pid, (int)k.sig);
            }
            send_msg(fds[0], SBX_REP_OK, h.id, NULL, 0, -1);
            break;
        }
        case SBX_REQ_OPEN:
        case SBX_REQ_MKDIR:
            do_path(h.type, h.id, body, blen, fds[0]);
            break;
        default:
            send_fail(fds[0], SBX_REP_ERROR, h.id, SBX_ST_REQUEST, EINVAL, "unknown request", NULL);
        }
        for (int j = 0; j < nfds; j++)
            close(fds[j]);
    }
}

int main(void)
{
    /* Our stdio came from the host: replace it before anything else. */
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0)
        _exit(1);
    for (int k = 0; k < 3; k++)
        dup2(null, k);
    close(null);

    /* The launcher blocked every signal around the clone; only SIGCHLD stays
     * blocked (for the signalfd).  As PID 1 of its namespace, the init gets
     * no signal from inside that it has no handler for. */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    ssize_t n = recv(CTL_FD, msgbuf, sizeof msgbuf, 0);
    if (n <= 0)
        _exit(1);
    uint32_t nfds = 0;
    struct sbx_plan_hdr h;
    if ((size_t)n >= sizeof h) {
        memcpy(&h, msgbuf, sizeof h);
        /* Close whatever else the host process had open: only the control
         * socket and the plan's trees stay. */
        if (h.nfds < 1024)
            close_range(FIRST_TREE_FD + h.nfds, ~0U, 0);
    }
    run_plan(msgbuf, (size_t)n, &nfds);
    if (nfds)
        close_range(FIRST_TREE_FD, FIRST_TREE_FD + nfds - 1, 0);
    for (int i = 0; i < MAX_EXECS; i++)
        slots[i].reply = -1;
    send_msg(CTL_FD, SBX_REP_READY, 0, NULL, 0, -1);
    serve();
    return 0;
}
