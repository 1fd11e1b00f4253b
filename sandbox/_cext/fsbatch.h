/* Many small file-system calls in one C call: the cgroup code makes,
 * opens, reads and removes a dozen cgroupfs files per exec.  From Python
 * each call released and retook the interpreter lock, and another thread
 * of ours often held it by then (~20-40 us per call measured, against
 * ~5 us of work); here the lock is released once per batch.  Callers:
 * sandbox/fsbatch.py only.  The cdef is read between the markers. */
#ifndef SBX_FSBATCH_H
#define SBX_FSBATCH_H

/* BEGIN CDEF */
#define SBX_FS_MKDIR 1 /* mkdir(path, 0755) */
#define SBX_FS_RMDIR 2 /* rmdir(path) */
#define SBX_FS_OPEN 3  /* open(path, arg | O_CLOEXEC): result is the fd */
#define SBX_FS_CLOSE 4 /* close(fd) */
#define SBX_FS_PREAD 5 /* pread(fd, buf, len, 0): result is the length */
#define SBX_FS_WRITE 6 /* write(fd, buf, len): result is the length written */
#define SBX_FS_DUP 7   /* fcntl(fd, F_DUPFD_CLOEXEC, 3): result is the new fd */

struct sbx_fsop {
    int op;
    const char *path;
    int fd;
    int arg;
    char *buf;
    int len;
    int result; /* what the call returned, or -errno */
};

/* Run every op in order (a failure does not stop the others); the number
 * that failed. */
int sbx_fs_run(struct sbx_fsop *ops, int n);

/* op (CLOSE, DUP) on each of n fds, or PREAD into buf, `size` bytes per fd
 * (fd i's at buf + i * size): the same ops as sbx_fs_run, from plain arrays.
 * Filling a struct per op from Python cost more than the calls themselves
 * (~20 us for the 8 reads of an exec's accounting, against 8 us of reads). */
int sbx_fs_fds(int op, const int *fds, int n, char *buf, int size, int *result);
/* END CDEF */

#endif
