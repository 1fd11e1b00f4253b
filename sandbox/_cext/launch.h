/* The launcher's interface, as cffi sees it (sandbox/_cext/build.py reads
 * the declarations between the markers).  Callers: sandbox/_core.py only. */
#ifndef SBX_LAUNCH_H
#define SBX_LAUNCH_H

#include <stdint.h>
#include <stddef.h>

/* BEGIN CDEF */
#define SBX_MAX_TREES 256

/* A host directory to hand to the sandbox as a detached mount. */
struct sbx_tree {
    const char *path;
    int recursive;      /* include submounts */
    uint64_t attr_set;  /* MOUNT_ATTR_* */
    uint64_t attr_clr;
    int userns_fd;      /* idmap onto this user namespace; -1 for none */
};

struct sbx_launch {
    int init_fd;               /* sealed memfd holding the init program */
    unsigned long clone_flags; /* CLONE_NEW* */
    const char *uid_map;
    const char *gid_map;
    const unsigned char *plan;
    size_t plan_len;
    const struct sbx_tree *trees;
    unsigned ntrees;
    int pdeathsig;
    int netns_fd;              /* join this network namespace; -1: a new one */
    int mntns_fd;              /* the template mount namespace (sbx_make_mntns) the init's is copied from */
    int spin;                  /* spin-wait for the child (a start someone waits for; burns CPU) */
};

/* On failure: stage (enum sbx_launch_stage), errno, and the tree index. */
struct sbx_launched {
    int pid;
    int pidfd;
    int ctl;
    uint32_t stage;
    int err;
    int index;
};

int sbx_abi_version(void);
int sbx_launch(const struct sbx_launch *l, struct sbx_launched *out);
int sbx_make_userns(const char *uid_map, const char *gid_map, struct sbx_launched *out);
int sbx_make_mntns(struct sbx_launched *out);
int sbx_own_fs(void); /* the calling thread's root and cwd become its own: 0 or -errno */
int sbx_fs_own(void); /* whether the calling thread's launches skip the helper */
#define SBX_NETNS_STATS 4 /* sockstat, sockstat6, ip6_flowlabel, a netlink socket (tcpmetrics.h) */
int sbx_make_netns(int stats[SBX_NETNS_STATS]);  /* stats: NULL, or those files' fds out (for sbx_netns_idle) */
int sbx_netns_idle(const int stats[SBX_NETNS_STATS]);
int sbx_netns_files(int stats[SBX_NETNS_STATS]); /* those fds, of the calling thread's namespace: 0 or -errno */
int sbx_kill_init(int pidfd, int pid);
/* END CDEF */

#endif
