/* The sandbox init: a small static program, PID 1 of the sandbox, linked
 * with no libc (see rt.h for why).
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
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>

#include "proto.h"
#include "rt.h"

#define CTL_FD 3
#define FIRST_TREE_FD 4
#define MAX_EXECS 4096
#define MAX_FDS 12 /* reply socket, 3 streams, up to 8 cgroup files */
#define MAX_ARGS 65536
#define MAX_GROUPS 65536
#define MAX_RLIMITS 64

/* Large buffers live in .bss: untouched pages cost nothing. */
static unsigned char msgbuf[SBX_MSG_MAX];
static char *strs[1 + 2 * MAX_ARGS + 2];
static char *envp_buf[MAX_ARGS + 1];
static uint32_t groups_buf[MAX_GROUPS];
static struct sbx_rlimit rl_buf[MAX_RLIMITS];
/* The seccomp program from the plan (BPF_MAXINSNS is 4096 instructions):
 * copied here for the execs to load, or, for the init's own filter, loaded
 * from the plan in msgbuf before anything else lands there (two page faults
 * less for a filter of ~570 instructions). */
static unsigned char seccomp_prog[4096 * 8];
static const unsigned char *seccomp_filter = seccomp_prog;
static unsigned short seccomp_len; /* instructions; 0: none */
static uint64_t bset_left = ~0ull;  /* the init's bounding set (SBX_OP_CAPBSET) */
static int seccomp_inherited;      /* loaded on the init itself: execs have it already */
static int seccomp_notify;         /* ... with its kill actions as notifications to us */
static int notify_fd = -1;         /* the listener of those */
#ifdef SBX_TIMING
#include <time.h>
static uint32_t timing[64];
#endif

void *memcpy(void *d, const void *s, size_t n)
{
    unsigned char *dp = d;
    const unsigned char *sp = s;
    while (n--)
        *dp++ = *sp++;
    return d;
}

void *memmove(void *d, const void *s, size_t n)
{
    unsigned char *dp = d;
    const unsigned char *sp = s;
    if (dp < sp)
        while (n--)
            *dp++ = *sp++;
    else
        while (n--)
            dp[n] = sp[n];
    return d;
}

void *memset(void *d, int c, size_t n)
{
    unsigned char *dp = d;
    while (n--)
        *dp++ = (unsigned char)c;
    return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    for (; n; n--, x++, y++)
        if (*x != *y)
            return *x - *y;
    return 0;
}

/* ---- system calls --------------------------------------------------------- */

static int xclose(int fd) { return (int)SYS1(SYS_close, fd); }
static int xopen(const char *p, int flags, int mode) { return (int)SYS4(SYS_openat, AT_FDCWD, p, flags, mode); }
static long xread(int fd, void *b, size_t n) { return SYS3(SYS_read, fd, b, n); }
static long xwrite(int fd, const void *b, size_t n) { return SYS3(SYS_write, fd, b, n); }
static int xdup2(int a, int b) { return (int)SYS3(SYS_dup3, a, b, 0); }
static int xclose_range(unsigned a, unsigned b) { return (int)SYS3(SYS_close_range, a, b, 0); }
static int xmount(const char *s, const char *t, const char *f, unsigned long fl, const void *d)
{
    return (int)SYS5(SYS_mount, s, t, f, fl, d);
}
static int xmkdirat(int d, const char *p, int mode) { return (int)SYS3(SYS_mkdirat, d, p, mode); }
static int xopenat(int d, const char *p, int flags, int mode) { return (int)SYS4(SYS_openat, d, p, flags, mode); }
static int xchdir(const char *p) { return (int)SYS1(SYS_chdir, p); }
static int xkill(int pid, int sig) { return (int)SYS2(SYS_kill, pid, sig); }
static int xsigmask(int how, const uint64_t *set) { return (int)SYS4(SYS_rt_sigprocmask, how, set, 0, 8); }

static void msg_fail(struct sbx_fail *f, uint32_t stage, int err, const char *a, const char *b)
{
    memset(f, 0, sizeof *f);
    f->stage = stage;
    f->err = err;
    if (a)
        rt_append(f->detail, sizeof f->detail, a);
    if (a && b)
        rt_append(f->detail, sizeof f->detail, " ");
    if (b)
        rt_append(f->detail, sizeof f->detail, b);
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
        u.c.cmsg_level = SOL_SOCKET;
        u.c.cmsg_type = SCM_RIGHTS;
        u.c.cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(&u.c), &pass_fd, sizeof(int));
    }
    /* The host may have gone away: never block, never die of SIGPIPE. */
    SYS3(SYS_sendmsg, fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
}

static void send_fail(int fd, uint32_t type, uint32_t id, uint32_t stage, int err, const char *a,
                      const char *b)
{
    struct sbx_fail f;
    msg_fail(&f, stage, err, a, b);
    send_msg(fd, type, id, &f, sizeof f, -1);
}

/* ---- the launch plan -------------------------------------------------------- */

__attribute__((noreturn)) static void setup_fail(uint32_t opindex, int err, const char *what, const char *path)
{
    send_fail(CTL_FD, SBX_REP_SETUP_FAIL, 0, opindex, err, what, path ? path : "");
    sys_exit(1);
}

/* Paths of targets.  Before SBX_OP_ROOT they resolve as usual (relative
 * ones against the staging directory).  After it, absolute ones resolve
 * inside the new root with RESOLVE_IN_ROOT: the rootfs is image content, and
 * a symlink such as /dev -> /host/path must not lead a mount out of it. */
static int root_fd = -1;

static int in_root(const char *path) { return root_fd >= 0 && path[0] == '/'; }

static int open_at_root(const char *path, int flags, int mode)
{
    if (!in_root(path))
        return xopen(path, flags | O_CLOEXEC, mode);
    struct open_how how = {.flags = (uint64_t)(flags | O_CLOEXEC), .mode = (uint64_t)mode,
                           .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
    while (*path == '/')
        path++;
    return (int)SYS4(SYS_openat2, root_fd, *path ? path : ".", &how, sizeof how);
}

/* The directory holding `path` (resolved as above), and its last component. */
static int open_parent(const char *path, char *base, size_t basesz)
{
    const char *slash = rt_strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    if (!*name || rt_streq(name, ".") || rt_streq(name, "..") || rt_strlen(name) >= basesz)
        return -EINVAL;
    base[0] = 0;
    rt_append(base, basesz, name);
    char dir[4096];
    size_t n = slash ? (size_t)(slash - path) : 0;
    if (n >= sizeof dir)
        return -ENAMETOOLONG;
    memcpy(dir, path, n);
    dir[n] = 0;
    if (!slash) {
        dir[0] = '.';
        dir[1] = 0;
    } else if (n == 0) {
        dir[0] = '/';
        dir[1] = 0;
    }
    return open_at_root(dir, O_PATH | O_DIRECTORY, 0);
}

static int proc_fd = -1; /* the new root's /proc, while a run of targets in it lasts */

static void drop_proc_fd(void)
{
    if (proc_fd >= 0)
        xclose(proc_fd);
    proc_fd = -1;
}

/* A mount target, naming exactly the file resolved above, in one of three
 * forms:
 *   {fd, ""}           the target itself, opened with O_PATH (fd: ours)
 *   {proc_fd, name}    an entry of the new root's /proc (see below)
 *   {AT_FDCWD, path}   a path resolved as usual (not in the new root)
 * The fd forms go to the calls that take an fd (move_mount, mount_setattr),
 * or become the working directory for mount(2) (mount_at).  As a
 * "/proc/self/fd/N" magic link, they cost mount(2) a lookup in the host's
 * procfs that is always cold (the init is a new process each time): ~36% of
 * mount(2)'s time in a profile of back-to-back starts. */
struct target {
    int dfd;
    const char *name;
    int fd; /* to close, or -1 */
};

#define NAME_MAX_RUN 200 /* longer: resolved whole, so that target_path() fits in 256 */

static int resolve_target(const char *path, struct target *t, int proc_run)
{
    t->dfd = AT_FDCWD;
    t->name = path;
    t->fd = -1;
    if (!in_root(path))
        return 0;
    /* The masks of /proc entries (two dozen): past /proc itself, what they
     * name is in the sandbox's own procfs, the kernel's entries and not the
     * image's files.  So only /proc is resolved in the root, once for the
     * run of them: an openat2 and a close less per mask.  Any other target
     * in the root ends the run (it could be a mount over /proc).  Not for
     * ATTACH (user mounts): their destination is resolved whole, its last
     * symlink followed inside the root, as it always was. */
    const char *name = path + 6; /* one component under /proc, not "." nor ".." */
    if (proc_run && rt_startswith(path, "/proc/") && *name && !rt_haschr(name, '/') &&
        !rt_streq(name, ".") && !rt_streq(name, "..") && rt_strlen(name) < NAME_MAX_RUN) {
        if (proc_fd < 0 && (proc_fd = open_at_root("/proc", O_PATH | O_DIRECTORY, 0)) < 0) {
            int e = proc_fd;
            proc_fd = -1;
            return e;
        }
        t->dfd = proc_fd;
        t->name = name;
        return 0;
    }
    drop_proc_fd();
    int fd = open_at_root(path, O_PATH, 0);
    if (fd < 0)
        return fd;
    t->dfd = t->fd = fd;
    t->name = "";
    return 0;
}

/* The AT_* flags that name the target in calls taking (dfd, name, flags):
 * a /proc entry's last symlink, if it were one, is not followed (none is;
 * safer); a plain path's is, as mount(2) does. */
static unsigned target_at(const struct target *t)
{
    return !*t->name ? AT_EMPTY_PATH : t->dfd != AT_FDCWD ? AT_SYMLINK_NOFOLLOW : 0;
}

/* The target as a path, for mount(2): the fd forms through the host's /proc
 * (still mounted before the pivot).  NULL if it does not fit. */
static const char *target_path(const struct target *t, char *out, size_t outsz)
{
    if (t->dfd == AT_FDCWD)
        return t->name;
    if (rt_strlen(t->name) + 40 > outsz)
        return NULL;
    out[0] = 0;
    rt_append(out, outsz, "/proc/self/fd/");
    rt_append_uint(out, outsz, (unsigned long)t->dfd);
    if (*t->name) {
        rt_append(out, outsz, "/");
        rt_append(out, outsz, t->name);
    }
    return out;
}

/* A MOUNT that bind_mount() does: MS_BIND, with or without MS_REC, and no
 * other flag (mount(2) ignores most others given with MS_BIND, not all:
 * MS_REMOUNT makes it a remount).  Any other goes to mount(2) as before. */
static int is_bind(const struct sbx_op_hdr *op)
{
    return op->type == SBX_OP_MOUNT && (op->a & ~(uint64_t)MS_REC) == MS_BIND;
}

/* A clone that a bind could not attach (an optional target that is
 * missing), with its source: the next operation takes it if it binds the
 * same source, else it is closed.  Closing a clone that was never attached
 * unmounts it, and an unmount waits for an RCU grace period: that made a
 * missing mask cost 13 us here, where it cost 5 with mount(2).  Nothing
 * changed in between (the bind failed, and it is the very next operation),
 * so the clone is what a new open_tree would give. */
static int spare_tree = -1;
static const char *spare_src;
static int spare_rec;

static void drop_spare(void)
{
    if (spare_tree >= 0)
        xclose(spare_tree);
    spare_tree = -1;
}

/* Where a bind's source and target are not both directories (or both
 * not), mount(2) says ENOTDIR and move_mount EINVAL: the plan's failure is
 * told with mount(2)'s errno (the host turns ENOTDIR into a hint).  Only
 * looked at after a failure. */
static int bind_error(int r, int tree, const struct target *t)
{
    struct stat a, b;
    if (r == -EINVAL && SYS4(SYS_newfstatat, tree, "", &a, AT_EMPTY_PATH) == 0 &&
        SYS4(SYS_newfstatat, t->dfd, t->name, &b, target_at(t)) == 0 &&
        S_ISDIR(a.st_mode) != S_ISDIR(b.st_mode))
        return -ENOTDIR;
    return r;
}

/* A bind's source in the new root (an absolute path once SBX_OP_ROOT ran),
 * opened with O_PATH as open_at_root() resolves it: inside the root, its
 * symlinks too.  As a plain path, an image's /dev -> ../../../../x made
 * the masks' "r/dev/null" a host file of the image's choosing, and the
 * read-only /proc/sys was the host's procfs (with any mount under it).
 * Kept for the next bind of the same source onto a /proc entry (the masks:
 * a dozen binds of /dev/null, one openat2): a mount there can only change
 * which file of the root the path names, and only if the image leads /dev
 * into /proc.  Dropped at any other operation. */
static int src_fd = -1;
static const char *src_path;

static void drop_src(void)
{
    if (src_fd >= 0)
        xclose(src_fd);
    src_fd = -1;
}

/* mount(2) with MS_BIND [| MS_REC], as a clone of the source put onto the
 * target.  A source in the new root resolves as above; any other as
 * mount(2) resolves it (a plain path, its last symlink followed: the
 * staging directory's own files).  The target resolves as target_at()
 * says.  The clone has its source mount's flags, as a bind has. */
static int bind_mount(const char *src, int rec, const struct target *t)
{
    int tree = -1;
    if (spare_tree >= 0 && rt_streq(spare_src, src) && spare_rec == rec) {
        tree = spare_tree;
        spare_tree = -1;
    }
    drop_spare();
    if (src_fd >= 0 && !(rt_streq(src_path, src) && t->dfd == proc_fd))
        drop_src();
    if (tree < 0 && in_root(src)) {
        if (src_fd < 0 && (src_fd = open_at_root(src, O_PATH, 0)) < 0) {
            int e = src_fd;
            src_fd = -1;
            return e;
        }
        src_path = src;
        tree = (int)SYS3(SYS_open_tree, src_fd, "",
                         OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | (rec ? AT_RECURSIVE : 0));
    } else if (tree < 0) {
        tree = (int)SYS3(SYS_open_tree, AT_FDCWD, src,
                         OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (rec ? AT_RECURSIVE : 0));
    }
    if (tree < 0)
        return tree;
    unsigned at = target_at(t), flags = MOVE_MOUNT_F_EMPTY_PATH;
    if (at & AT_EMPTY_PATH)
        flags |= MOVE_MOUNT_T_EMPTY_PATH;
    else if (!(at & AT_SYMLINK_NOFOLLOW))
        flags |= MOVE_MOUNT_T_SYMLINKS;
    int r = (int)SYS5(SYS_move_mount, tree, "", t->dfd, t->name, flags);
    if (r < 0) {
        r = bind_error(r, tree, t);
        spare_tree = tree;
        spare_src = src;
        spare_rec = rec;
    } else {
        xclose(tree); /* attached: only the fd goes */
    }
    return r;
}

/* The working directory's fd, while mount_at() needs to come back to it
 * (dropped where the plan changes directory). */
static int cwd_fd = -1;

static void drop_cwd_fd(void)
{
    if (cwd_fd >= 0)
        xclose(cwd_fd);
    cwd_fd = -1;
}

/* Filesystems whose mount(2) resolves no path but its target (source and
 * options name no file): for them the working directory can change. */
static int names_no_file(const char *fstype)
{
    static const char *const types[] = {"proc", "devpts", "mqueue", "tmpfs"};
    for (size_t i = 0; fstype && i < sizeof types / sizeof *types; i++)
        if (rt_streq(fstype, types[i]))
            return 1;
    return 0;
}

/* mount(2), for all but binds: new filesystems (proc, devpts, mqueue).
 * Onto a directory resolved in the root, from that directory as the working
 * directory: the target is ".", which needs no lookup at all, and names
 * exactly the directory.  The first "/proc/self/fd/N" of a plan makes the
 * init's /proc/<pid> entries (flushed again at its exit): with only these
 * three mounts still going through it, a whole sandbox cycle cost ~40 us
 * more CPU here than with none.  fsopen + fsconfig + fsmount + move_mount
 * cost more than this for proc, and more than mount(2) for devpts and
 * mqueue (a call per option).  The working directory is put back at once,
 * or the plan stops (its relative paths would resolve elsewhere).  Other
 * mounts (a source or options that may be relative paths: overlay, a bind
 * with other flags), and a target fchdir refuses (a file: mount(2) says
 * ENOTDIR too), go the old way. */
static int mount_at(const char *src, const char *fstype, unsigned long flags, const char *data,
                    const struct target *t, uint32_t opindex)
{
    char path[256];
    const char *p;
    int here = !*t->name && !(flags & (MS_BIND | MS_MOVE)) && names_no_file(fstype);
    if (here && cwd_fd < 0) {
        int fd = xopen(".", O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
        cwd_fd = fd < 0 ? -1 : fd;
    }
    if (here && cwd_fd >= 0 && SYS1(SYS_fchdir, t->fd) == 0) {
        int r = xmount(src, ".", fstype, flags, data);
        int e = (int)SYS1(SYS_fchdir, cwd_fd);
        if (e < 0)
            setup_fail(opindex, -e, "chdir", "back to the working directory");
        return r;
    }
    if (!(p = target_path(t, path, sizeof path)))
        return -ENAMETOOLONG;
    return xmount(src, p, fstype, flags, data);
}

/* mount(2) with MS_REMOUNT | MS_BIND | flags, as mount_setattr(2): the four
 * flags set as given and cleared where not (as the remount of a bind does;
 * atime flags are kept by both).  The target must be a mount's root, as for
 * the remount; a locked flag (from a more privileged namespace) cannot be
 * cleared by either (EPERM). */
static int remount(const struct target *t, uint64_t ms)
{
    if (ms & ~(uint64_t)(MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC))
        return -EINVAL;
    struct mount_attr a = {
        .attr_set = (ms & MS_RDONLY ? MOUNT_ATTR_RDONLY : 0) | (ms & MS_NOSUID ? MOUNT_ATTR_NOSUID : 0) |
                    (ms & MS_NODEV ? MOUNT_ATTR_NODEV : 0) | (ms & MS_NOEXEC ? MOUNT_ATTR_NOEXEC : 0),
        .attr_clr = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
    };
    return (int)SYS5(SYS_mount_setattr, t->dfd, t->name, target_at(t), &a, sizeof a);
}

/* Make every missing directory of an absolute path under the new root,
 * refusing symlinks and "..": the path is a user's mount destination. */
static int mkdir_safe(const char *path)
{
    char comp[256];
    int dfd = root_fd >= 0 ? (int)SYS3(SYS_fcntl, root_fd, F_DUPFD_CLOEXEC, 0)
                           : xopen("/", O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
    if (dfd < 0)
        return dfd;
    const char *p = path;
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        size_t n = 0;
        while (p[n] && p[n] != '/')
            n++;
        if (n >= sizeof comp) {
            xclose(dfd);
            return -ENAMETOOLONG;
        }
        memcpy(comp, p, n);
        comp[n] = 0;
        p += n;
        if (rt_streq(comp, "..") || rt_streq(comp, ".")) {
            xclose(dfd);
            return -EINVAL;
        }
        int nfd = xopenat(dfd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
        if (nfd == -ENOENT) {
            int r = xmkdirat(dfd, comp, 0755);
            if (r < 0 && r != -EEXIST) {
                xclose(dfd);
                return r;
            }
            nfd = xopenat(dfd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
        }
        xclose(dfd);
        if (nfd < 0)
            return nfd; /* a symlink: ENOTDIR or ELOOP with O_NOFOLLOW */
        dfd = nfd;
    }
    xclose(dfd);
    return 0;
}

static int write_file(const char *path, const char *content, int mode)
{
    int fd = open_at_root(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, mode);
    if (fd < 0)
        return fd;
    size_t len = rt_strlen(content), off = 0;
    while (off < len) {
        long w = xwrite(fd, content + off, len - off);
        if (w < 0) {
            xclose(fd);
            return (int)w;
        }
        off += (size_t)w;
    }
    xclose(fd);
    return 0;
}

/* One operation; 0 or a negative errno, with *what naming the step. */
static int run_op(const struct sbx_op_hdr *op, const char *s[4], uint32_t index, uint32_t nfds,
                  const char **what)
{
    const char *s0 = s[0] && *s[0] ? s[0] : NULL, *s1 = s[1] && *s[1] ? s[1] : NULL;
    const char *s2 = s[2] && *s[2] ? s[2] : NULL, *s3 = s[3] && *s[3] ? s[3] : NULL;
    char base[256];
    struct target t = {AT_FDCWD, "", -1};
    int tfd = -1, r = 0, dfd;
    switch (op->type) {
    case SBX_OP_MOUNT:
        *what = s2 ? s2 : "mount";
        if (!s1)
            return -EINVAL;
        if ((r = resolve_target(s1, &t, 1)) < 0)
            return r;
        if (is_bind(op))
            r = s0 ? bind_mount(s0, (op->a & MS_REC) != 0, &t) : -EINVAL;
        else
            r = mount_at(s0, s2, (unsigned long)op->a, s3, &t, index);
        break;
    case SBX_OP_REMOUNT:
        *what = "remount";
        if (!s0)
            return -EINVAL;
        if ((r = resolve_target(s0, &t, 1)) == 0)
            r = remount(&t, op->a);
        break;
    case SBX_OP_MKDIR:
        *what = "mkdir";
        if (!s0)
            return -EINVAL;
        if ((dfd = open_parent(s0, base, sizeof base)) < 0)
            return dfd;
        r = xmkdirat(dfd, base, (int)op->a);
        if (r == -EEXIST)
            r = 0;
        xclose(dfd);
        break;
    case SBX_OP_MKDIR_SAFE:
        *what = "mkdir";
        return s0 ? mkdir_safe(s0) : -EINVAL;
    case SBX_OP_WRITE:
        *what = "write";
        return s0 ? write_file(s0, s[1] ? s[1] : "", (int)op->a) : -EINVAL;
    case SBX_OP_MKFILE:
        *what = "create";
        if (!s0)
            return -EINVAL;
        /* read-only: an existing file of a lower layer is not copied up;
         * non-blocking: an image's FIFO there would wait for a writer */
        tfd = open_at_root(s0, O_RDONLY | O_CREAT | O_NONBLOCK | O_NOCTTY, (int)op->a);
        if (tfd < 0 && tfd != -EISDIR)
            r = tfd;
        break;
    case SBX_OP_SYMLINK:
        *what = "symlink";
        if (!s0 || !s1)
            return -EINVAL;
        if ((dfd = open_parent(s1, base, sizeof base)) < 0)
            return dfd;
        r = (int)SYS3(SYS_symlinkat, s0, dfd, base);
        if (r == -EEXIST)
            r = 0;
        xclose(dfd);
        break;
    case SBX_OP_ATTACH:
        *what = "attach";
        if (!s0 || op->a >= nfds)
            return -EBADF;
        /* a plain target's last symlink is not followed (move_mount's rule) */
        if ((r = resolve_target(s0, &t, 0)) == 0)
            r = (int)SYS5(SYS_move_mount, FIRST_TREE_FD + (int)op->a, "", t.dfd, t.name,
                          MOVE_MOUNT_F_EMPTY_PATH | (*t.name ? 0 : MOVE_MOUNT_T_EMPTY_PATH));
        break;
    case SBX_OP_ROOT:
        *what = "root";
        if (!s0)
            return -EINVAL;
        root_fd = xopen(s0, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
        return root_fd < 0 ? root_fd : 0;
    case SBX_OP_PIVOT:
        /* pivot_root(".", ".") stacks the old root on top of the new one;
         * detaching it leaves only the new root (as runc does). */
        *what = "pivot_root";
        if (!s0)
            return -EINVAL;
        drop_cwd_fd();
        if ((r = xchdir(s0)) < 0 || (r = (int)SYS2(SYS_pivot_root, ".", ".")) < 0 ||
            (r = (int)SYS2(SYS_umount2, ".", MNT_DETACH)) < 0 || (r = xchdir("/")) < 0)
            return r;
        if (root_fd >= 0)
            xclose(root_fd);
        root_fd = -1;
        drop_proc_fd();
        break;
    case SBX_OP_HOSTNAME:
        *what = "sethostname";
        return s0 ? (int)SYS2(SYS_sethostname, s0, rt_strlen(s0)) : -EINVAL;
    case SBX_OP_CHDIR:
        *what = "chdir";
        drop_cwd_fd();
        return s0 ? xchdir(s0) : -EINVAL;
    case SBX_OP_CAPBSET:
        /* Once for the sandbox: every exec's child inherits the init's
         * bounding set, where a drop per capability in each child cost
         * ~60 us per exec here (each drop makes new credentials).  The
         * init's own effective set is untouched: the bounding set only
         * limits what an execve can give, and the init never execs. */
        *what = "capbset";
        for (int cap = 0; cap < 64; cap++) {
            if (op->a & (1ull << cap))
                continue;
            r = (int)SYS2(SYS_prctl, PR_CAPBSET_DROP, cap);
            if (r == -EINVAL)
                break; /* past the last capability this kernel knows */
            if (r < 0)
                return r;
        }
        bset_left = op->a;
        return 0;
    default:
        *what = "plan";
        return -EINVAL;
    }
    if (tfd >= 0)
        xclose(tfd);
    if (t.fd >= 0)
        xclose(t.fd);
    return r;
}

/* The binary operations: a seccomp program kept for the execs, and secrets,
 * written from memory into the sandbox's tmpfs (they never touch a disk). */
static int run_binary_op(const struct sbx_op_hdr *op, const unsigned char *pay, size_t len)
{
    if (op->type == SBX_OP_SECCOMP) {
        if (len == 0 || len % 8 || len > sizeof seccomp_prog)
            return -EINVAL;
        seccomp_len = (unsigned short)(len / 8);
        seccomp_inherited = (op->flags & SBX_F_INHERIT) ? -1 : 0; /* -1: load at the end of setup */
        if (seccomp_inherited) {
            seccomp_filter = pay; /* msgbuf holds the plan until serve() */
        } else {
            memcpy(seccomp_prog, pay, len);
            seccomp_filter = seccomp_prog;
        }
        seccomp_notify = seccomp_inherited && (op->flags & SBX_F_NOTIFY);
        return 0;
    }
    struct sbx_secret sec;
    if (len < sizeof sec + 2)
        return -EINVAL;
    memcpy(&sec, pay, sizeof sec);
    if (sec.len > len - sizeof sec - 2)
        return -EINVAL;
    const char *path = (const char *)pay + sizeof sec + sec.len;
    if (!rt_memchr(path, 0, len - sizeof sec - sec.len))
        return -EINVAL;
    int fd = open_at_root(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, (int)(sec.mode & 0777));
    if (fd < 0)
        return fd;
    const unsigned char *data = pay + sizeof sec;
    for (size_t off = 0; off < sec.len;) {
        long w = xwrite(fd, data + off, sec.len - off);
        if (w <= 0) {
            xclose(fd);
            return w < 0 ? (int)w : -EIO;
        }
        off += (size_t)w;
    }
    int r = (int)SYS3(SYS_fchown, fd, sec.uid, sec.gid);
    xclose(fd);
    return r;
}

static uint32_t run_plan(const unsigned char *buf, size_t len)
{
    struct sbx_plan_hdr h;
    if (len < sizeof h)
        setup_fail(0, EINVAL, "plan", "too short");
    memcpy(&h, buf, sizeof h);
    if (h.magic != SBX_PLAN_MAGIC || h.version != SBX_ABI_VERSION)
        setup_fail(0, EPROTO, "plan", "bad magic or version");
    size_t off = sizeof h;
    for (uint32_t i = 0; i < h.nops; i++) {
        struct sbx_op_hdr op;
        if (off + sizeof op > len)
            setup_fail(i, EINVAL, "plan", "truncated");
        memcpy(&op, buf + off, sizeof op);
        if (op.len < sizeof op || op.len > len - off || op.nstr > 4)
            setup_fail(i, EINVAL, "plan", "bad record");
        if (op.type == SBX_OP_SECCOMP || op.type == SBX_OP_SECRET) {
            const unsigned char *pay = buf + off + sizeof op;
            if (op.a > op.len - sizeof op)
                setup_fail(i, EINVAL, "plan", "bad payload");
            int r = run_binary_op(&op, pay, (size_t)op.a);
            if (r < 0)
                setup_fail(i, -r, op.type == SBX_OP_SECCOMP ? "seccomp" : "secret", "");
            off += op.len;
            continue;
        }
        const char *s[4] = {NULL, NULL, NULL, NULL};
        const char *p = (const char *)buf + off + sizeof op, *end = (const char *)buf + off + op.len;
        for (unsigned k = 0; k < op.nstr; k++) {
            const char *z = rt_memchr(p, 0, (size_t)(end - p));
            if (!z)
                setup_fail(i, EINVAL, "plan", "unterminated string");
            s[k] = p;
            p = z + 1;
        }
        const char *what = "plan";
        if (!is_bind(&op)) {
            drop_spare(); /* only the very next bind may take it */
            drop_src();
        }
#ifdef SBX_TIMING
        struct timespec t0, t1;
        SYS2(SYS_clock_gettime, CLOCK_MONOTONIC, &t0);
#endif
        int r = run_op(&op, s, i, h.nfds, &what);
#ifdef SBX_TIMING
        SYS2(SYS_clock_gettime, CLOCK_MONOTONIC, &t1);
        if (i < 64)
            timing[i] = (uint32_t)((t1.tv_sec - t0.tv_sec) * 1000000000L + t1.tv_nsec - t0.tv_nsec);
#endif
        if (r < 0 && !(op.flags & SBX_F_OPTIONAL)) {
            /* name the path the step was about: the target where there is one */
            const char *path = op.type == SBX_OP_MOUNT || op.type == SBX_OP_SYMLINK ? s[1] : s[0];
            setup_fail(i, -r, what, path);
        }
        off += op.len;
    }
    drop_spare();
    drop_src();
    drop_cwd_fd();
    drop_proc_fd();
    return h.nfds;
}

/* ---- exec ------------------------------------------------------------------ */

struct slot {
    uint32_t id;
    int pid;
    int reply;
    int channel; /* reply is channels[channel], kept after the exec; -1: its own */
    int syscall; /* see sbx_exited.syscall */
    int held[2]; /* our copies of its stdout and stderr pipes (-1: none), see do_exec */
};
/* Slots past nslots were never used: searches stop there, and their pages
 * (112 KiB in all) are never touched.  Each page of ours touched first costs
 * a page fault, ~3 us here, and setting all of them up front took 28 of an
 * init's 41 faults before READY; a scan of all of them per exec, as many
 * cache misses.  A slot's fields are all set when it is taken (do_exec). */
static struct slot slots[MAX_EXECS];
static int nslots;
static int channels[SBX_MAX_CHANNELS]; /* reply channels (proto.h), -1 where none */
static struct slot *chan_user[SBX_MAX_CHANNELS]; /* the exec running on each, or NULL */

/* The slot of a running exec (pid > 0), or NULL */
static struct slot *find_slot_pid(int pid)
{
    for (int i = 0; i < nslots; i++)
        if (slots[i].pid == pid)
            return &slots[i];
    return NULL;
}

/* A free slot (not taken yet: do_exec sets every field), or NULL */
static struct slot *free_slot(void)
{
    for (int i = 0; i < nslots; i++)
        if (slots[i].pid == 0)
            return &slots[i];
    return nslots < MAX_EXECS ? &slots[nslots++] : NULL;
}

static struct slot *find_slot_id(uint32_t id)
{
    for (int i = 0; i < nslots; i++)
        if (slots[i].pid > 0 && slots[i].id == id)
            return &slots[i];
    return NULL;
}

/* What an exec's child needs; it shares our memory (rt_clone_vm) and
 * writes its failure, if any, into `fail` before it exits (we only wait
 * meanwhile: wait_exec). */
struct child {
    const struct sbx_exec_req *r;
    const int *stream;
    const int *cgroup; /* files to write "0" into: v1 `tasks`, v2 `cgroup.procs` */
    int ncgroup;
    const char *cwd;
    char **argv;
    int failed;
    struct sbx_fail fail;
    int tid; /* nonzero until the child no longer runs in our memory (rt_clone_vm) */
};
static unsigned char child_stack[64 * 1024] __attribute__((aligned(16)));
/* The sandbox's /dev/null, opened once (serve): a stream an exec does not
 * pipe is a dup of it, one openat less per exec.  -1: opened per exec. */
static int null_fd[2] = {-1, -1}; /* for reading (stdin), for writing */
/* Set once in serve(): the init's ids are 0, 0 and no supplementary group
 * (what the default user asks for); no_new_privs is set on the init. */
static int init_is_root, init_nnp;

static int child_fail(struct child *c, uint32_t stage, int err, const char *detail)
{
    msg_fail(&c->fail, stage, err, detail, NULL);
    c->failed = 1;
    return 127;
}

static int exec_search(const char *file, char *const argv[], char *const envp[]);

/* How often wait_exec looks for a child stopped before its execve. */
#define STOP_CHECK_NS (10 * 1000 * 1000)

static const char *stop_name(int sig)
{
    return sig == SIGSTOP   ? "SIGSTOP"
           : sig == SIGTSTP ? "SIGTSTP"
           : sig == SIGTTIN ? "SIGTTIN"
           : sig == SIGTTOU ? "SIGTTOU"
                            : "a signal";
}

/* Until the child no longer runs in our memory: exec'd, or gone (the
 * kernel zeroes c->tid then, see rt_clone_vm).  A child stopped before its
 * execve (by a SIGSTOP from a command of the sandbox: the same uid may
 * signal it) would hold us, and with us every request of the sandbox, for
 * good, as a vfork did: looked for every STOP_CHECK_NS, it is killed and
 * its exec fails saying why.  Stopped with its tid word still set, it is
 * before its execve (a stopped task execs nothing). */
static void wait_exec(struct child *c, long pid)
{
    int stopped = 0;
    for (;;) {
        int v = __atomic_load_n(&c->tid, __ATOMIC_ACQUIRE);
        if (v == 0)
            break;
        struct timespec t = {0, STOP_CHECK_NS};
        /* not FUTEX_PRIVATE: the kernel's wake for the tid word is a shared one */
        if (SYS4(SYS_futex, &c->tid, FUTEX_WAIT, v, &t) != -ETIMEDOUT || stopped)
            continue;
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (SYS5(SYS_waitid, P_PID, pid, &si, WSTOPPED | WNOHANG, 0) == 0 && si.si_pid == pid &&
            __atomic_load_n(&c->tid, __ATOMIC_ACQUIRE) != 0) {
            stopped = si.si_status;
            xkill((int)pid, SIGKILL); /* ends a stop too; then its tid word is zeroed */
        }
    }
    if (stopped) {
        /* its own failure, if it wrote one, is moot: it was killed */
        msg_fail(&c->fail, SBX_ST_STOPPED, EINTR, stop_name(stopped), NULL);
        c->failed = 1;
    }
}

/* /proc/loadavg, opened once (serve()); -1: none */
static int loadavg_fd = -1;

/* Whether at most two tasks run or wait to run on the whole machine: we,
 * and the host thread that sent the request (the fourth field of
 * /proc/loadavg, "0.95 1.22 1.09 2/345 12345"). */
static int few_running(void)
{
    char buf[128];
    if (loadavg_fd < 0)
        return 0;
    long n = SYS4(SYS_pread64, loadavg_fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    const char *slash = rt_memchr(buf, '/', (size_t)n);
    if (!slash)
        return 0;
    const char *p = slash;
    while (p > buf && p[-1] >= '0' && p[-1] <= '9')
        p--;
    if (p == slash)
        return 0;
    long running = 0;
    for (; p < slash; p++)
        running = running * 10 + (*p - '0');
    return running <= 2;
}

static int child_main(void *arg)
{
    struct child *c = arg;
    const struct sbx_exec_req *r = c->r;
    int e;
    uint64_t none = 0;
    xsigmask(SIG_SETMASK, &none);
    /* First of all, into the exec's own cgroups: everything it starts is
     * counted and limited there.  Writing "0" moves the writing thread; on
     * cgroup v1 `tasks` that skips the global threadgroup lock, whose first
     * use after idleness waits for an RCU grace period (~10 ms here).  The
     * files were opened by the host, whose open-time credentials the kernel
     * checks. */
    for (int k = 0; k < c->ncgroup; k++)
        if ((e = (int)SYS3(SYS_write, c->cgroup[k], "0", 1)) < 0)
            return child_fail(c, SBX_ST_CGROUP, -e, "cgroup");
    if ((e = (int)SYS0(SYS_setsid)) < 0)
        return child_fail(c, SBX_ST_SETSID, -e, "setsid");
    for (int k = 0; k < 3; k++) {
        int fd = c->stream[k] >= 0   ? c->stream[k]
                 : null_fd[k > 0] >= 0 ? null_fd[k > 0]
                                       : xopen("/dev/null", k ? O_WRONLY : O_RDONLY, 0);
        if (fd < 0 || (e = xdup2(fd, k)) < 0)
            return child_fail(c, SBX_ST_STDIO, fd < 0 ? -fd : -e, "/dev/null");
    }
    if ((r->flags & SBX_EXEC_TTY) && (e = (int)SYS3(SYS_ioctl, 0, TIOCSCTTY, 0)) < 0)
        return child_fail(c, SBX_ST_STDIO, -e, "TIOCSCTTY");
    xclose_range(3, ~0U);
    SYS1(SYS_umask, 022); /* what a login shell would give: the init runs with 0 */
    for (uint32_t k = 0; k < r->nrlimits; k++) {
        struct rlimit lim = {rl_buf[k].cur, rl_buf[k].max};
        if ((e = (int)SYS4(SYS_prlimit64, 0, rl_buf[k].resource, &lim, 0)) < 0)
            return child_fail(c, SBX_ST_RLIMIT, -e, "setrlimit");
    }
    /* Capabilities: empty bounding set but for r->caps (dropping needs
     * CAP_SETPCAP, which we hold until the uid change below).  Only what
     * the init still has: its plan dropped the rest once (SBX_OP_CAPBSET). */
    for (int cap = 0; cap < 64; cap++) {
        if ((r->caps & (1ull << cap)) || !(bset_left & (1ull << cap)))
            continue;
        e = (int)SYS2(SYS_prctl, PR_CAPBSET_DROP, cap);
        if (e == -EINVAL)
            break; /* past the last capability this kernel knows */
        if (e < 0)
            return child_fail(c, SBX_ST_CAPABILITIES, -e, "capbset");
    }
    if (r->caps && (e = (int)SYS2(SYS_prctl, PR_SET_KEEPCAPS, 1)) < 0)
        return child_fail(c, SBX_ST_CAPABILITIES, -e, "keepcaps");
    /* The init's own ids (serve() checked them: 0, 0, no groups) need no
     * change: three system calls less for the default user. */
    if (!(init_is_root && r->uid == 0 && r->gid == 0 && r->ngroups == 0)) {
        if ((e = (int)SYS2(SYS_setgroups, r->ngroups, groups_buf)) < 0)
            return child_fail(c, SBX_ST_GROUPS, -e, "setgroups");
        if ((e = (int)SYS3(SYS_setresgid, r->gid, r->gid, r->gid)) < 0)
            return child_fail(c, SBX_ST_GID, -e, "setgid");
        if ((e = (int)SYS3(SYS_setresuid, r->uid, r->uid, r->uid)) < 0)
            return child_fail(c, SBX_ST_UID, -e, "setuid");
    }
    /* Effective, permitted, inheritable: exactly r->caps; ambient too, so a
     * non-root user keeps them across execve. */
    struct {
        uint32_t version;
        int pid;
    } caphdr = {0x20080522 /* _LINUX_CAPABILITY_VERSION_3 */, 0};
    struct {
        uint32_t eff, perm, inh;
    } capdata[2] = {{(uint32_t)r->caps, (uint32_t)r->caps, (uint32_t)r->caps},
                    {(uint32_t)(r->caps >> 32), (uint32_t)(r->caps >> 32), (uint32_t)(r->caps >> 32)}};
    if ((e = (int)SYS2(SYS_capset, &caphdr, capdata)) < 0)
        return child_fail(c, SBX_ST_CAPABILITIES, -e, "capset");
    /* The ambient set starts empty: serve() cleared the init's */
    for (int cap = 0; cap < 64 && r->caps; cap++)
        if ((r->caps & (1ull << cap)) && (e = (int)SYS3(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)) < 0)
            return child_fail(c, SBX_ST_CAPABILITIES, -e, "ambient");
    /* The child starts in the init's working directory, "/" (its fs state
     * is a copy: CLONE_VM without CLONE_FS). */
    if (!rt_streq(c->cwd, "/") && (e = xchdir(c->cwd)) < 0)
        return child_fail(c, SBX_ST_CHDIR, -e, c->cwd);
    /* no_new_privs always: no setuid binary, no file capability gives back
     * what was dropped above.  Set on the init once (serve()), which every
     * child inherits; again here only if that failed. */
    if (!init_nnp && (e = (int)SYS2(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1)) < 0)
        return child_fail(c, SBX_ST_NO_NEW_PRIVS, -e, "no_new_privs");
    /* Seccomp last: everything above may use syscalls the filter denies
     * (unless the init carries a filter that allows them all). */
    if (seccomp_len && !seccomp_inherited) {
        struct {
            unsigned short len;
            const void *filter;
        } prog = {seccomp_len, seccomp_filter};
        if ((e = (int)SYS3(SYS_seccomp, 1 /* SECCOMP_SET_MODE_FILTER */, 0, &prog)) < 0)
            return child_fail(c, SBX_ST_SECCOMP, -e, "seccomp");
    }
    e = exec_search(c->argv[0], c->argv, envp_buf);
    /* ETXTBSY can be brief: a process of the host that forked or cloned
     * while the host wrote this file (through an fd the init handed over)
     * holds a copy of that fd until its own execve.  Seen with a sandbox
     * launched from another thread of the host meanwhile.  Up to ~50 ms. */
    for (int k = 0; e == -ETXTBSY && k < 50; k++) {
        struct timespec ms = {0, 1000000};
        SYS2(SYS_nanosleep, &ms, 0);
        e = exec_search(c->argv[0], c->argv, envp_buf);
    }
    return child_fail(c, SBX_ST_EXEC, -e, c->argv[0]);
}

/* execvpe, with PATH taken from the exec's own environment; -errno. */
static int exec_search(const char *file, char *const argv[], char *const envp[])
{
    if (rt_haschr(file, '/'))
        return (int)SYS3(SYS_execve, file, argv, envp);
    const char *path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    for (char *const *e = envp; *e; e++)
        if (rt_startswith(*e, "PATH="))
            path = *e + 5;
    int err = -ENOENT;
    char buf[4096];
    size_t flen = rt_strlen(file);
    while (*path) {
        size_t n = 0;
        while (path[n] && path[n] != ':')
            n++;
        if (n + flen + 3 <= sizeof buf) {
            size_t m = n ? n : 1;
            memcpy(buf, n ? path : ".", m);
            buf[m] = '/';
            memcpy(buf + m + 1, file, flen + 1);
            int r = (int)SYS3(SYS_execve, buf, argv, envp);
            /* Like execvp: remember a permission problem, keep looking. */
            if (r == -EACCES)
                err = r;
            else if (r != -ENOENT && r != -ENOTDIR)
                return r;
        }
        path += n;
        if (*path == ':')
            path++;
    }
    return err;
}

/* Parse "pid (comm) S ppid pgrp session ..." for the session id. */
static int stat_session(const char *stat)
{
    const char *q = rt_strrchr(stat, ')');
    if (!q)
        return -1;
    q++;
    int field = 0;
    long v = 0;
    for (; *q; q++) {
        if (*q == ' ') {
            if (field == 4)
                return (int)v;
            field++;
            v = 0;
        } else if (field >= 2 && *q >= '0' && *q <= '9') {
            v = v * 10 + (*q - '0');
        }
    }
    return -1;
}

#define MAX_KILL 1024
static struct pollfd kill_fds[MAX_KILL];

/* Signal an exec's processes: its process group, then everything left in its
 * session (children that left the group but not the session), each through a
 * pidfd (no race with a reused pid).  For SIGKILL, wait until they have all
 * died (2 s at most), so that the caller's next look finds none running.
 * A child that made its own session escapes this; the per-exec cgroup of the
 * limits work is the complete answer. */
static void kill_exec(int pid, int sig)
{
    xkill(-pid, sig);
    int nk = 0;
    int dfd = xopen("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (dfd < 0)
        return;
    char dents[8192];
    long n;
    while ((n = SYS3(SYS_getdents64, dfd, dents, sizeof dents)) > 0) {
        for (long off = 0; off < n;) {
            struct {
                uint64_t ino;
                int64_t off;
                unsigned short reclen;
                unsigned char type;
                char name[];
            } *d = (void *)(dents + off);
            off += d->reclen;
            long p = 0;
            const char *c = d->name;
            for (; *c >= '0' && *c <= '9'; c++)
                p = p * 10 + (*c - '0');
            if (*c || p <= 1)
                continue;
            char path[64] = "/proc/", stat[512];
            rt_append_uint(path, sizeof path, (unsigned long)p);
            rt_append(path, sizeof path, "/stat");
            int fd = xopen(path, O_RDONLY | O_CLOEXEC, 0);
            if (fd < 0)
                continue;
            long r = xread(fd, stat, sizeof stat - 1);
            xclose(fd);
            if (r <= 0)
                continue;
            stat[r] = 0;
            if (stat_session(stat) != pid)
                continue;
            int pfd = (int)SYS2(SYS_pidfd_open, p, 0);
            if (pfd < 0)
                continue; /* gone meanwhile */
            SYS4(SYS_pidfd_send_signal, pfd, sig, 0, 0);
            if (sig == SIGKILL && nk < MAX_KILL) {
                kill_fds[nk].fd = pfd;
                kill_fds[nk].events = POLLIN;
                nk++;
            } else {
                xclose(pfd);
            }
        }
    }
    xclose(dfd);
    /* A pidfd turns readable when its process has exited. */
    struct timespec left = {2, 0};
    for (int done = 0; done < nk;) {
        for (int k = 0; k < nk; k++)
            kill_fds[k].revents = 0;
        long r = SYS4(SYS_ppoll, kill_fds, nk, &left, 0);
        if (r <= 0 && r != -EINTR)
            break; /* the time is up, or ppoll failed: report anyway */
        for (int k = 0; k < nk; k++)
            if (kill_fds[k].fd >= 0 && kill_fds[k].revents) {
                xclose(kill_fds[k].fd);
                kill_fds[k].fd = -1; /* ppoll ignores negative fds */
                done++;
            }
    }
    for (int k = 0; k < nk; k++)
        if (kill_fds[k].fd >= 0)
            xclose(kill_fds[k].fd);
}

static void do_exec(uint32_t id, const unsigned char *body, size_t len, int *fds, int nfds)
{
    /* base: where the streams start in fds (after the reply socket, if one came) */
    int reply = fds[0], base = 1, chan = -1;
    int stream[3] = {-1, -1, -1};
    struct sbx_exec_req r;
    if (len < sizeof r) {
        send_fail(reply, SBX_REP_EXEC_FAIL, id, SBX_ST_REQUEST, EINVAL, "short request", NULL);
        goto out;
    }
    memcpy(&r, body, sizeof r);
    if (r.flags & (SBX_EXEC_KEEP | SBX_EXEC_REUSE)) {
        chan = (int)SBX_EXEC_CHANNEL_OF(r.flags);
        int both = (r.flags & SBX_EXEC_KEEP) && (r.flags & SBX_EXEC_REUSE);
        if (both || chan >= SBX_MAX_CHANNELS ||
            ((r.flags & SBX_EXEC_REUSE) && (channels[chan] < 0 || chan_user[chan]))) {
            /* nowhere to say so for a REUSE: the host's wait ends with the
             * sandbox, as for any request the init cannot answer */
            if (r.flags & SBX_EXEC_KEEP)
                send_fail(reply, SBX_REP_EXEC_FAIL, id, SBX_ST_REQUEST, EINVAL, "bad channel", NULL);
            chan = -1;
            base = (r.flags & SBX_EXEC_REUSE) ? 0 : 1;
            if (!base)
                reply = -1;
            goto out;
        }
        if (r.flags & SBX_EXEC_REUSE) {
            reply = channels[chan];
            base = 0;
        } else {
            /* The host dropped its end of the last socket: an exec it gave
             * up on (interrupted) may still run on it, which then owns it
             * (closed at its end); else it goes now. */
            struct slot *old = chan_user[chan];
            if (old) {
                old->channel = -1;
                chan_user[chan] = NULL;
            } else if (channels[chan] >= 0)
                xclose(channels[chan]);
            channels[chan] = reply;
        }
    }
    size_t need = sizeof r + (size_t)r.ngroups * 4 + (size_t)r.nrlimits * sizeof(struct sbx_rlimit);
    int nstreams = __builtin_popcount(r.fds & 7);
    int ncgroup = (int)((r.fds >> 8) & 0xff);
    if (r.ngroups > MAX_GROUPS || r.nrlimits > MAX_RLIMITS || need > len || r.argc == 0 ||
        r.argc > MAX_ARGS || r.envc > MAX_ARGS || nstreams + ncgroup != nfds - base) {
        send_fail(reply, SBX_REP_EXEC_FAIL, id, SBX_ST_REQUEST, EINVAL, "bad request", NULL);
        goto out;
    }
    for (int k = 0, next = base; k < 3; k++)
        if (r.fds & (1u << k))
            stream[k] = fds[next++];
    struct slot *s = free_slot();
    if (!s) {
        send_fail(reply, SBX_REP_EXEC_FAIL, id, SBX_ST_FORK, EAGAIN, "too many execs", NULL);
        goto out;
    }
    memcpy(groups_buf, body + sizeof r, (size_t)r.ngroups * 4);
    memcpy(rl_buf, body + sizeof r + (size_t)r.ngroups * 4, (size_t)r.nrlimits * sizeof *rl_buf);
    /* Strings: cwd, argv..., env...; all must be terminated inside the message. */
    size_t nstr = 1 + (size_t)r.argc + r.envc;
    char *p = (char *)body + need, *end = (char *)body + len;
    for (size_t k = 0; k < nstr; k++) {
        const char *z = rt_memchr(p, 0, (size_t)(end - p));
        if (!z) {
            send_fail(reply, SBX_REP_EXEC_FAIL, id, SBX_ST_REQUEST, EINVAL, "bad strings", NULL);
            goto out;
        }
        strs[k] = p;
        p = (char *)z + 1;
    }
    const char *cwd = strs[0];
    char **argv = strs + 1;
    memcpy(envp_buf, strs + 1 + r.argc, r.envc * sizeof *envp_buf);
    envp_buf[r.envc] = NULL;
    argv[r.argc] = NULL; /* overwrites env[0]'s slot in strs, copied above */

    struct child c = {.r = &r,
                      .stream = stream,
                      .cgroup = fds + base + nstreams,
                      .ncgroup = ncgroup,
                      .cwd = cwd,
                      .argv = argv,
                      .failed = 0};
    /* Give the CPU away once before the fork, to a host that sleeps as
     * soon as it has sent (SBX_EXEC_WAITS), when nothing else runs.  Its
     * request woke us on its own CPU, where we usually preempted its thread
     * a few system calls before that sleep; forked now, the child would
     * find that CPU busy and start on the other one, idle (halted, under a
     * hypervisor) and cold: 3 execs in 4 did here (ftrace, the CPUs of
     * sched_process_fork and sched_process_exec).  After the yield the host
     * thread is asleep, the child runs here while we wait for its exec, and
     * the exec round trip is ~60 us shorter (fork to exec 200 -> 160 us,
     * exec to exit 420 -> 375; benchmarks/probes/forks.py).  With more
     * running (other threads of the host, other sandboxes) the yield could
     * hand the CPU to any of them for a time slice: a cycle with limits,
     * whose pool threads are busy then, was ~0.3 ms slower with it.  A
     * sender that goes on running (spawn(), an event loop) sets no flag. */
    if ((r.flags & SBX_EXEC_WAITS) && few_running())
        SYS0(SYS_sched_yield);
    c.tid = 1;
    long pid = rt_clone_vm(child_main, child_stack + sizeof child_stack, &c, &c.tid);
    if (pid > 0)
        wait_exec(&c, pid);
    if (pid < 0) {
        send_fail(reply, SBX_REP_EXEC_FAIL, id, SBX_ST_FORK, (int)-pid, "fork", NULL);
        goto out;
    }
    if (c.failed) {
        /* It never ran: reap it here so no EXITED follows the failure. */
        SYS4(SYS_wait4, pid, 0, 0, 0);
        send_msg(reply, SBX_REP_EXEC_FAIL, id, &c.fail, sizeof c.fail, -1);
        goto out;
    }
    if (!(r.flags & SBX_EXEC_NO_STARTED)) {
        struct sbx_started st = {(uint32_t)pid, 0};
        send_msg(reply, SBX_REP_STARTED, id, &st, sizeof st, -1);
    }
    s->id = id;
    s->pid = (int)pid;
    s->reply = reply;
    s->channel = chan;
    if (chan >= 0)
        chan_user[chan] = s;
    s->syscall = -1;
    reply = -1;
    s->held[0] = s->held[1] = -1;
    if (r.flags & SBX_EXEC_NO_STARTED) {
        /* A run to its end (exec()), whose host reads the exit record and
         * then drains the pipes: their ends stay open here until that record
         * is sent, so that the command's exit does not also wake the host
         * twice for the pipes' hang-ups (a spawn's reader gets its EOF as
         * soon as the command's own processes close them). */
        for (int k = 1; k < 3; k++)
            if (stream[k] >= 0) {
                s->held[k - 1] = stream[k];
                for (int i = base; i < nfds; i++)
                    if (fds[i] == stream[k])
                        fds[i] = -1;
            }
    }
out:
    /* every fd that came with the request but the reply socket: streams and
     * cgroup files (a malformed request's too) */
    for (int k = base; k < nfds; k++)
        if (fds[k] >= 0)
            xclose(fds[k]);
    if (reply >= 0 && chan < 0)
        xclose(reply); /* a channel stays, whatever became of this exec */
}

static void reap(void)
{
    for (;;) {
        int status;
        struct rusage ru;
        long pid = SYS4(SYS_wait4, -1, &status, WNOHANG, &ru);
        if (pid <= 0)
            return;
        struct slot *s = find_slot_pid((int)pid);
        if (!s)
            continue; /* an orphan that ended up with us */
        struct sbx_exited ex = {
            .status = status,
            .syscall = s->syscall,
            .utime_us = (int64_t)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec,
            .stime_us = (int64_t)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec,
            .maxrss_kb = ru.ru_maxrss,
        };
        send_msg(s->reply, SBX_REP_EXITED, s->id, &ex, sizeof ex, -1);
        if (s->channel < 0)
            xclose(s->reply);
        else
            chan_user[s->channel] = NULL;
        s->channel = -1;
        for (int k = 0; k < 2; k++)
            if (s->held[k] >= 0)
                xclose(s->held[k]);
        s->held[0] = s->held[1] = -1;
        s->pid = 0;
        s->reply = -1;
    }
}

/* ---- files the host asks for ----------------------------------------------- */

#define PROC_ROOT_INO 1
#define KERNEL_FILE "kernel file" /* a refusal's detail begins so (files.KERNEL_FILE) */

/* Entries of the init's own /proc/<pid>/ that say nothing of the init
 * beyond what every process of the sandbox can read of pid 1 anyway: its
 * mount table and its network namespace's files (/proc/mounts and /proc/net
 * are links to "self/..."), its name, argv, status and sizes (not stat: to
 * the init itself, that shows its code and stack addresses), and its
 * environment (empty by construction, which the tests read here to prove). */
static int harmless_own_entry(const char *rest)
{
    static const char *const ok[] = {"mounts", "mountinfo", "cmdline", "comm", "status", "statm", "environ"};
    if (rt_streq(rest, "net") || rt_startswith(rest, "net/"))
        return 1;
    for (unsigned i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (rt_streq(rest, ok[i]))
            return 1;
    return 0;
}

/* 0 if the host may have `fd`, just opened for it with `flags` (st: its
 * fstat); else the errno to refuse it with.  The path is the host's, but
 * every name in it is the sandbox's to redirect (a symlink /tmp/out ->
 * /proc/self), and the open is the init's.  On procfs that reaches the
 * init's own /proc/<pid>/, which no process of the sandbox can read (the
 * init is not dumpable): its memory (mem, maps, pagemap, auxv, syscall,
 * stat, ...) and its fds.  And a write to a kernel file system is an act of
 * the init on the kernel, with the host's data (oom_score_adj, attr/,
 * setgroups, clear_refs, a cgroup's files).  So: no write there at all, and
 * of the init's own entries only the harmless ones; the other files of
 * /proc (the sandbox's processes', cpuinfo, net/...) read as before.  A
 * file elsewhere costs one fstatfs.  (fstatfs, readlinkat and, with
 * CAP_SYS_ADMIN, open_tree are in bpf.INIT_SYSCALLS: a filter the init
 * carries allows them, else one that kills would leave the init waiting
 * for its own notification.) */
static int host_may_have(int fd, int flags, const struct stat *st)
{
    struct statfs fs;
    long r = SYS2(SYS_fstatfs, fd, &fs);
    if (r < 0)
        return (int)-r; /* not on an open fd; should it fail, what cannot be told apart is refused */
    if (fs.f_type != PROC_SUPER_MAGIC && fs.f_type != SYSFS_MAGIC && fs.f_type != CGROUP_SUPER_MAGIC &&
        fs.f_type != CGROUP2_SUPER_MAGIC)
        return 0;
    if ((flags & O_ACCMODE) != O_RDONLY)
        return EACCES;
    if (fs.f_type != PROC_SUPER_MAGIC)
        return 0;
    /* Whose file is it?  The name the kernel keeps for it must be under
     * /proc/ and lead to the same file again.  Where the sandbox's processes
     * may mount (CAP_SYS_ADMIN), the names of /proc are theirs to rearrange
     * too (a bind of /proc/1 over /proc/2 or onto /proc/cpuinfo, a forged
     * /proc/1/fd): the lookups then go through a detached copy of the procfs
     * mount at /proc, which has nothing mounted on it.  Else the sandbox's
     * /proc is as the plan made it, and is looked up as it is. */
    int tree = -1, base = AT_FDCWD;
    const char *pfx = "/proc/";
    if (bset_left & (1ull << 21 /* CAP_SYS_ADMIN */)) {
        tree = (int)SYS3(SYS_open_tree, AT_FDCWD, "/proc", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
        if (tree < 0)
            return EACCES;
        base = tree;
        pfx = "";
    }
    static char name[4096], again[4096];
    char self[24], link[48];
    int err = EACCES, ofd = -1;
    struct stat sb;
    /* the copy: the root of the file's own procfs (not a bind of a part) */
    if (tree >= 0 &&
        (SYS2(SYS_fstat, tree, &sb) < 0 || sb.st_dev != st->st_dev || sb.st_ino != PROC_ROOT_INO))
        goto out;
    link[0] = 0;
    rt_append(link, sizeof link, pfx);
    rt_append(link, sizeof link, "self");
    long n = SYS4(SYS_readlinkat, base, link, self, sizeof self - 1);
    if (n <= 0 || n >= (long)sizeof self - 1)
        goto out;
    self[n] = 0; /* the init's pid, as this procfs numbers it */
    rt_append(link, sizeof link, "/fd/");
    rt_append_uint(link, sizeof link, (unsigned long)fd);
    n = SYS4(SYS_readlinkat, base, link, name, sizeof name - 1);
    if (n <= 0 || n >= (long)sizeof name - 1)
        goto out;
    name[n] = 0;
    if (!rt_startswith(name, "/proc/") && !rt_streq(name, "/proc"))
        goto out;
    const char *rel = name[5] ? name + 6 : "";
    again[0] = 0;
    rt_append(again, sizeof again, pfx);
    rt_append(again, sizeof again, *rel || tree < 0 ? rel : ".");
    ofd = xopenat(base, again, O_PATH | O_NOFOLLOW | O_CLOEXEC, 0);
    if (ofd < 0 || SYS2(SYS_fstat, ofd, &sb) < 0 || sb.st_dev != st->st_dev || sb.st_ino != st->st_ino)
        goto out;
    size_t pl = rt_strlen(self);
    if (rt_startswith(rel, self) && (rel[pl] == 0 || rel[pl] == '/'))
        err = rel[pl] == '/' && harmless_own_entry(rel + pl + 1) ? 0 : EACCES;
    else
        err = 0;
out:
    if (ofd >= 0)
        xclose(ofd);
    if (tree >= 0)
        xclose(tree);
    return err;
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
    if (type == SBX_REQ_CHOWN) {
        /* never through a symlink: the path is the sandbox's, the call ours */
        int e = (int)SYS5(SYS_fchownat, AT_FDCWD, path, r.flags, r.mode, AT_SYMLINK_NOFOLLOW);
        if (e < 0)
            send_fail(reply, SBX_REP_ERROR, id, 0, -e, path, NULL);
        else
            send_msg(reply, SBX_REP_OK, id, NULL, 0, -1);
        return;
    }
    if (type == SBX_REQ_MKDIR) {
        int e = xmkdirat(AT_FDCWD, path, (int)(r.mode & 07777));
        if (e < 0)
            send_fail(reply, SBX_REP_ERROR, id, 0, -e, path, NULL);
        else
            send_msg(reply, SBX_REP_OK, id, NULL, 0, -1);
        return;
    }
    /* O_NONBLOCK so that a FIFO planted by the sandbox cannot stall the init;
     * anything but a regular file or a directory is refused.  No magic link
     * is followed (/proc/<pid>/fd/N, exe, cwd, root): through one a symlink
     * of the sandbox's reached a file the init holds open (its own binary,
     * the files of an exec under way), which the checks below could not
     * tell apart, as they see only the file reached. */
    int oflags = (int)r.flags | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
    struct open_how how = {.flags = (uint64_t)oflags,
                           .mode = (oflags & O_CREAT) ? (uint64_t)(r.mode & 07777) : 0,
                           .resolve = RESOLVE_NO_MAGICLINKS};
    int fd = (int)SYS4(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
    if (fd < 0) {
        send_fail(reply, SBX_REP_ERROR, id, 0, -fd, path, NULL);
        return;
    }
    struct stat sb;
    if (SYS2(SYS_fstat, fd, &sb) < 0 || !(S_ISREG(sb.st_mode) || S_ISDIR(sb.st_mode))) {
        xclose(fd);
        send_fail(reply, SBX_REP_ERROR, id, 0, EINVAL, path, "is not a regular file or directory");
        return;
    }
    int refuse = host_may_have(fd, (int)r.flags, &sb);
    if (refuse) {
        xclose(fd);
        send_fail(reply, SBX_REP_ERROR, id, 0, refuse, KERNEL_FILE, path); /* marked for files.py */
        return;
    }
    long fl = SYS2(SYS_fcntl, fd, F_GETFL);
    SYS3(SYS_fcntl, fd, F_SETFL, fl & ~O_NONBLOCK);
    send_msg(reply, SBX_REP_FD, id, NULL, 0, fd);
    xclose(fd);
}

/* A pty of the sandbox's own devpts instance, so that the command's
 * terminal has a name inside (ttyname, `tty`).  Only the master goes back:
 * the host unlocks it and opens the peer itself (TIOCGPTPEER).  The node
 * is checked to be a ptmx (char 5:2): the sandbox may have mounted
 * something else over /dev/pts when it holds CAP_SYS_ADMIN. */
static void do_pty(uint32_t id, int reply)
{
    int fd = xopen("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK, 0);
    if (fd < 0) {
        send_fail(reply, SBX_REP_ERROR, id, 0, -fd, "/dev/pts/ptmx", NULL);
        return;
    }
    struct stat sb;
    if (SYS2(SYS_fstat, fd, &sb) < 0 || !S_ISCHR(sb.st_mode) || sb.st_rdev != ((5u << 8) | 2u)) {
        xclose(fd);
        send_fail(reply, SBX_REP_ERROR, id, 0, ENOTTY, "/dev/pts/ptmx", "is not a pty multiplexer");
        return;
    }
    long fl = SYS2(SYS_fcntl, fd, F_GETFL);
    SYS3(SYS_fcntl, fd, F_SETFL, fl & ~O_NONBLOCK);
    send_msg(reply, SBX_REP_FD, id, NULL, 0, fd);
    xclose(fd);
}

/* ---- seccomp kill actions, by notification -------------------------------- */

struct sc_notif {
    uint64_t id;
    uint32_t pid;
    uint32_t flags;
    int32_t nr;
    uint32_t arch;
    uint64_t ip;
    uint64_t args[6];
};
#define SC_IOCTL_NOTIF_RECV 0xC0502100u /* SECCOMP_IOWR(0, struct seccomp_notif) */
#if defined(__x86_64__)
#define SC_ARCH 0xC000003Eu
#elif defined(__aarch64__)
#define SC_ARCH 0xC00000B7u
#endif

/* The number after `key` in a /proc status text (hex when base 16); 0 if absent. */
static uint64_t status_field(const char *text, const char *key, int base)
{
    size_t kl = rt_strlen(key);
    for (const char *p = text; *p; p++) {
        if ((p == text || p[-1] == '\n') && !memcmp(p, key, kl)) {
            p += kl;
            while (*p == ' ' || *p == '\t')
                p++;
            uint64_t v = 0;
            for (;; p++) {
                int d = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10 : -1;
                if (d < 0 || d >= base)
                    return v;
                v = v * (uint64_t)base + (uint64_t)d;
            }
        }
    }
    return 0;
}

static long read_proc(int pid, const char *what, char *buf, size_t size)
{
    char path[64] = "/proc/";
    size_t n = rt_strlen(path);
    char digits[16];
    int k = 0;
    unsigned u = (unsigned)pid;
    do
        digits[k++] = (char)('0' + u % 10);
    while ((u /= 10) && k < 15);
    while (k)
        path[n++] = digits[--k];
    path[n++] = '/';
    for (const char *w = what; *w && n < sizeof path - 1; w++)
        path[n++] = *w;
    path[n] = 0;
    int fd = xopen(path, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return fd;
    long r = xread(fd, buf, size - 1);
    xclose(fd);
    buf[r > 0 ? r : 0] = 0;
    return r;
}

/* A syscall hit a kill action: note it for the exec whose session the
 * process is in, then end the process as the kernel would (SIGSYS), or with
 * SIGKILL when it blocks, ignores or catches SIGSYS (a caught one would only
 * restart the call, and a blocked one leave it waiting here forever). */
static void on_notification(void)
{
    struct sc_notif n;
    memset(&n, 0, sizeof n);
    if (SYS3(SYS_ioctl, notify_fd, SC_IOCTL_NOTIF_RECV, &n) < 0)
        return;
    static char buf[4096];
    int tgid = (int)n.pid, sig = SIGKILL;
    if (read_proc((int)n.pid, "status", buf, sizeof buf) > 0) {
        tgid = (int)status_field(buf, "Tgid:", 10);
        uint64_t bit = 1ull << (SIGSYS - 1);
        if (!((status_field(buf, "SigBlk:", 16) | status_field(buf, "SigIgn:", 16) |
               status_field(buf, "SigCgt:", 16)) & bit))
            sig = SIGSYS;
    }
    if (read_proc((int)n.pid, "stat", buf, sizeof buf) > 0) {
        /* after the command's name, which ends at the last ')': state ppid pgrp session */
        char *p = NULL;
        for (char *q = buf; *q; q++)
            if (*q == ')')
                p = q;
        int field = 0, sid = 0;
        for (p = p ? p + 1 : buf; *p && field < 4; p++) {
            if (*p == ' ')
                field++;
            else if (field == 3)
                sid = sid * 10 + (*p - '0');
        }
        struct slot *s = sid > 0 ? find_slot_pid(sid) : NULL;
        if (s && s->syscall == -1)
            s->syscall = n.arch == SC_ARCH ? n.nr : -2;
    }
    SYS2(SYS_kill, tgid > 0 ? tgid : (int)n.pid, sig);
}

static void serve(void)
{
    uint64_t chld = 1ull << (SIGCHLD - 1);
    xsigmask(SIG_BLOCK, &chld);
    int sfd = (int)SYS4(SYS_signalfd4, -1, &chld, 8, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        sys_exit(1);
    null_fd[0] = xopen("/dev/null", O_RDONLY | O_CLOEXEC, 0); /* past the pivot: the sandbox's */
    null_fd[1] = xopen("/dev/null", O_WRONLY | O_CLOEXEC, 0);
    loadavg_fd = xopen("/proc/loadavg", O_RDONLY | O_CLOEXEC, 0); /* the sandbox's /proc; -1: no yield */
    /* The init never execs; its children inherit these (see child_main). */
    if (xchdir("/") < 0 || SYS2(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL) < 0)
        sys_exit(1);
    init_nnp = SYS2(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1) == 0;
    unsigned ids[2][3];
    init_is_root = SYS3(SYS_getresuid, &ids[0][0], &ids[0][1], &ids[0][2]) == 0 &&
                   SYS3(SYS_getresgid, &ids[1][0], &ids[1][1], &ids[1][2]) == 0 &&
                   SYS2(SYS_getgroups, 0, 0) == 0;
    for (int k = 0; k < 3 && init_is_root; k++)
        init_is_root = ids[0][k] == 0 && ids[1][k] == 0;
    for (;;) {
        struct pollfd pf[3] = {{CTL_FD, POLLIN, 0}, {sfd, POLLIN, 0}, {notify_fd, POLLIN, 0}};
        long pr = SYS5(SYS_ppoll, pf, notify_fd >= 0 ? 3 : 2, 0, 0, 0);
        if (pr == -EINTR)
            continue;
        if (pr < 0)
            sys_exit(1);
        if (notify_fd >= 0 && (pf[2].revents & POLLIN))
            on_notification();
        if (pf[1].revents) {
            /* One read takes it: SIGCHLD is all the fd watches, and one
             * instance of it is pending at most (a later one makes the fd
             * readable again); reap() takes every child that ended. */
            struct signalfd_siginfo si;
            xread(sfd, &si, sizeof si);
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
        long n = SYS3(SYS_recvmsg, CTL_FD, &m, MSG_CMSG_CLOEXEC);
        if (n == 0 || (n < 0 && n != -EINTR && n != -EAGAIN))
            sys_exit(0); /* the owner is gone: the pid namespace goes with us */
        if (n < 0)
            continue;
        int fds[MAX_FDS], nfds = 0;
        /* One SCM_RIGHTS header at most: the host sends exactly one. */
        if (m.msg_controllen >= CMSG_LEN(0) && u.c.cmsg_level == SOL_SOCKET && u.c.cmsg_type == SCM_RIGHTS) {
            int k = (int)((u.c.cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int j = 0; j < k && j < MAX_FDS; j++)
                memcpy(&fds[nfds++], CMSG_DATA(&u.c) + j * sizeof(int), sizeof(int));
        }
        struct sbx_msg_hdr h;
        if ((size_t)n < sizeof h || nfds < 1 || (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
            for (int j = 0; j < nfds; j++)
                xclose(fds[j]);
            continue;
        }
        memcpy(&h, msgbuf, sizeof h);
        const unsigned char *body = msgbuf + sizeof h;
        size_t blen = (size_t)n - sizeof h;
        switch (h.type) {
        case SBX_REQ_EXEC:
            do_exec(h.id, body, blen, fds, nfds);
            nfds = 0; /* do_exec closed them */
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
        case SBX_REQ_CHOWN:
            do_path(h.type, h.id, body, blen, fds[0]);
            break;
        case SBX_REQ_PTY:
            do_pty(h.id, fds[0]);
            break;
        case SBX_REQ_SEAL_SECRETS: {
            /* a fixed path: nothing the host sends picks what is remounted */
            int e = (int)xmount(NULL, "/run/secrets", NULL,
                                MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
            if (e < 0)
                send_fail(fds[0], SBX_REP_ERROR, h.id, 0, -e, "/run/secrets", NULL);
            else
                send_msg(fds[0], SBX_REP_OK, h.id, NULL, 0, -1);
            break;
        }
        default:
            send_fail(fds[0], SBX_REP_ERROR, h.id, SBX_ST_REQUEST, EINVAL, "unknown request", NULL);
        }
        for (int j = 0; j < nfds; j++)
            xclose(fds[j]);
    }
}

SBX_START;
SBX_CLONE_VM;

__attribute__((noreturn, used)) void start_c(long *sp)
{
    (void)sp;
    /* The launcher blocked every signal around the clone; only SIGCHLD stays
     * blocked (for the signalfd).  As PID 1 of its namespace, the init gets
     * no signal from inside that it has no handler for. */
    uint64_t none = 0;
    xsigmask(SIG_SETMASK, &none);
    /* Ignored signals stay ignored across exec (Python ignores SIGPIPE and
     * SIGXFSZ): give every command default dispositions to start from. */
    struct {
        void *handler;
        unsigned long flags;
        void *restorer;
        uint64_t mask;
    } dfl = {0, 0, 0, 0};
    for (int sig = 1; sig <= 64; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            SYS4(SYS_rt_sigaction, sig, &dfl, 0, 8);
    /* The plan's modes are exact (a 1777 /tmp must not become 1755). */
    SYS1(SYS_umask, 0);
    /* Not dumpable: ptrace, /proc/1/mem and pidfd_getfd need CAP_SYS_PTRACE
     * then, not just our uid.  That covers each exec's child as well until
     * its execve: made with CLONE_VM, it runs in our memory, after it dropped its
     * capabilities (a profile allowing ptrace, or none, let a command with
     * no capability attach to it and write our memory).  An execve makes
     * the command dumpable as usual. */
    SYS2(SYS_prctl, PR_SET_DUMPABLE, 0);
    /* Our stdio came from the host: replace it before anything else. */
    int null = xopen("/dev/null", O_RDWR | O_CLOEXEC, 0);
    if (null < 0)
        sys_exit(1);
    for (int k = 0; k < 3; k++)
        xdup2(null, k);
    xclose(null);

    long n = SYS4(SYS_recvfrom, CTL_FD, msgbuf, sizeof msgbuf, 0);
    if (n <= 0)
        sys_exit(1);
    struct sbx_plan_hdr h;
    if ((size_t)n >= sizeof h) {
        memcpy(&h, msgbuf, sizeof h);
        /* Close whatever else the host process had open: only the control
         * socket and the plan's trees stay. */
        if (h.nfds < 1024)
            xclose_range(FIRST_TREE_FD + h.nfds, ~0U);
    }
    uint32_t nfds = run_plan(msgbuf, (size_t)n);
    if (nfds)
        xclose_range(FIRST_TREE_FD, FIRST_TREE_FD + nfds - 1);
    for (int i = 0; i < SBX_MAX_CHANNELS; i++)
        channels[i] = -1;
#ifdef SBX_TIMING
    {
        struct sbx_msg_hdr th = {SBX_REP_READY, 0};
        static unsigned char tb[sizeof th + sizeof timing];
        memcpy(tb, &th, sizeof th);
        memcpy(tb + sizeof th, timing, sizeof timing);
        SYS4(SYS_sendto, CTL_FD, tb, sizeof tb, MSG_NOSIGNAL);
    }
#else
    send_msg(CTL_FD, SBX_REP_READY, 0, NULL, 0, -1);
#endif
    if (seccomp_inherited) {
        /* Once, for every exec to come: loading a large filter costs ~0.2 ms
         * per execve otherwise.  After READY, while the host prepares its
         * first request, and before any request is read: no exec ever runs
         * without it (if the load fails, the init exits instead of serving).
         * The init has CAP_SYS_ADMIN in its user namespace, so it needs no
         * no_new_privs for this (execs set it). */
        struct {
            unsigned short len;
            const void *filter;
        } prog = {seccomp_len, seccomp_filter};
        long e = SYS3(SYS_seccomp, 1 /* SECCOMP_SET_MODE_FILTER */,
                      seccomp_notify ? 8 /* SECCOMP_FILTER_FLAG_NEW_LISTENER */ : 0, &prog);
        if (e < 0)
            setup_fail(0, (int)-e, "seccomp", "the init's own filter");
        if (seccomp_notify)
            notify_fd = (int)e; /* close-on-exec, and closed by every exec's close_range */
        seccomp_inherited = 1;
    }
    serve();
    sys_exit(0);
}
