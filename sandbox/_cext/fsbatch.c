/* See fsbatch.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsbatch.h"

int sbx_fs_run(struct sbx_fsop *ops, int n)
{
    int failed = 0;
    for (int i = 0; i < n; i++) {
        struct sbx_fsop *o = &ops[i];
        long r;
        switch (o->op) {
        case SBX_FS_MKDIR:
            r = mkdir(o->path, 0755);
            break;
        case SBX_FS_RMDIR:
            r = rmdir(o->path);
            break;
        case SBX_FS_OPEN:
            r = open(o->path, o->arg | O_CLOEXEC);
            break;
        case SBX_FS_CLOSE:
            r = close(o->fd);
            break;
        case SBX_FS_PREAD:
            r = pread(o->fd, o->buf, (size_t)o->len, 0);
            break;
        case SBX_FS_WRITE:
            r = write(o->fd, o->buf, (size_t)o->len);
            break;
        case SBX_FS_DUP:
            r = fcntl(o->fd, F_DUPFD_CLOEXEC, 3);
            break;
        default:
            r = -1;
            errno = EINVAL;
        }
        o->result = r < 0 ? -errno : (int)r;
        failed += r < 0;
    }
    return failed;
}

int sbx_fs_fds(int op, const int *fds, int n, char *buf, int size, int *result)
{
    int failed = 0;
    for (int i = 0; i < n; i++) {
        long r;
        switch (op) {
        case SBX_FS_CLOSE:
            r = close(fds[i]);
            break;
        case SBX_FS_DUP:
            r = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
            break;
        case SBX_FS_PREAD:
            r = pread(fds[i], buf + (long)i * size, (size_t)size, 0);
            break;
        default:
            r = -1;
            errno = EINVAL;
        }
        result[i] = r < 0 ? -errno : (int)r;
        failed += r < 0;
    }
    return failed;
}
