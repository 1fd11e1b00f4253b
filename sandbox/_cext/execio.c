/* One exec()'s host-side I/O (see execio.h).  What comes from the sandbox is
 * untrusted: records are bounded by rec[] (a longer one is an error, not
 * truncated), output is kept only up to the cap. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "execio.h"
#include "proto.h"

#define CHUNK 65536
/* An exec request: the message header, then struct sbx_exec_req */
#define HEAD (sizeof(struct sbx_msg_hdr) + sizeof(struct sbx_exec_req))
#define FLAGS_AT (sizeof(struct sbx_msg_hdr) + offsetof(struct sbx_exec_req, flags))
#define DRAIN_READS 4096 /* after the exit: reads per stream, at most (as collector.drain) */

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

int sbx_exec_send(int ctl, const unsigned char *msg, size_t len, int pipes,
                  const int *extra, int nextra, struct sbx_io *io, int channel_fd, uint32_t flags_or)
{
    int theirs[4 + 253]; /* SCM_RIGHTS takes at most 253 fds */
    int n = 0, err = 0;
    int *mine[4] = {&io->reply, &io->in_fd, &io->out_fd[0], &io->out_fd[1]};
    for (int i = 0; i < 4; i++)
        *mine[i] = -1;
    *mine[0] = channel_fd; /* -1, or a channel: the init has its end, nothing to send */
    if (nextra < 0 || nextra > 253 - 4 || len < HEAD || (channel_fd >= 0 && !(pipes & 7) && !nextra)) {
        err = EINVAL; /* a request without fds would be dropped by the init */
        goto out;
    }
    if (channel_fd < 0) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
            err = errno;
            goto out;
        }
        *mine[0] = sv[0];
        theirs[n++] = sv[1];
    }
    for (int s = 0; s < 3; s++) {
        if (!(pipes & (1 << s)))
            continue;
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0) {
            err = errno;
            goto out;
        }
        /* stdin: we write, the command reads; stdout/stderr the other way */
        *mine[1 + s] = s == 0 ? p[1] : p[0];
        theirs[n++] = s == 0 ? p[0] : p[1];
        /* ours non-blocking (its own open file, the command's end stays
         * blocking): sbx_io_wait then never sets it */
        if (fcntl(*mine[1 + s], F_SETFL, O_NONBLOCK) < 0) {
            err = errno;
            goto out;
        }
    }
    int nfar = n;
    for (int i = 0; i < nextra; i++)
        theirs[n++] = extra[i];
    union {
        char buf[CMSG_SPACE(sizeof theirs)];
        struct cmsghdr align;
    } u;
    memset(&u, 0, sizeof u);
    /* the request's flags get flags_or (the channel's) in a copy of its head */
    unsigned char head[HEAD];
    memcpy(head, msg, HEAD);
    uint32_t fl;
    memcpy(&fl, head + FLAGS_AT, sizeof fl);
    fl |= flags_or;
    memcpy(head + FLAGS_AT, &fl, sizeof fl);
    struct iovec iov[2] = {{head, HEAD}, {(void *)(msg + HEAD), len - HEAD}};
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2, .msg_control = u.buf,
                        .msg_controllen = CMSG_SPACE(n * sizeof(int))};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(n * sizeof(int));
    memcpy(CMSG_DATA(c), theirs, n * sizeof(int));
    ssize_t r;
    do
        r = sendmsg(ctl, &mh, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        err = errno == ECONNRESET ? EPIPE : errno;
    for (int i = 0; i < nfar; i++)
        close(theirs[i]);
    n = 0;
out:
    for (int i = 0; i < n; i++)
        close(theirs[i]); /* the far ends made before a failure */
    for (int i = 0; i < nextra && extra; i++)
        close(extra[i]);
    if (err) {
        for (int i = 0; i < 4; i++)
            close_fd(mine[i]);
        return -err;
    }
    return 0;
}

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* Room for CHUNK more bytes in buf[s]: past the cap too, where a read
 * lands before it is dropped (kept output is at most cap + CHUNK). */
static int room(struct sbx_io *io, int s)
{
    if (io->len[s] + CHUNK <= io->size[s])
        return 0;
    size_t want = io->size[s] ? io->size[s] : CHUNK;
    while (want < io->len[s] + CHUNK)
        want *= 2;
    unsigned char *b = realloc(io->buf[s], want);
    if (!b)
        return -ENOMEM;
    io->buf[s] = b;
    io->size[s] = want;
    return 0;
}

/* One read of a stream into buf[s], kept up to the cap: 1 data, 0 end (EOF,
 * or EIO of a pty), -EAGAIN, -errno.  *over: the stream is over the cap. */
static int read_stream(struct sbx_io *io, int s, int *over)
{
    if (room(io, s) < 0)
        return -ENOMEM;
    ssize_t r = read(io->out_fd[s], io->buf[s] + io->len[s], CHUNK);
    if (r < 0)
        return errno == EIO ? 0 : -errno;
    if (r == 0)
        return 0;
    size_t n = (size_t)r;
    if (io->cap >= 0) {
        size_t left = io->len[s] >= (size_t)io->cap ? 0 : (size_t)io->cap - io->len[s];
        if (n > left) {
            n = left;
            io->truncated = 1;
        }
    }
    io->len[s] += n;
    *over = io->truncated && io->cap >= 0 && io->len[s] >= (size_t)io->cap;
    return 1;
}

/* 0: a record in rec; 1: EOF (the init is gone); -errno (-EAGAIN: none yet). */
static int recv_record(struct sbx_io *io)
{
    union {
        char buf[CMSG_SPACE(4 * sizeof(int))];
        struct cmsghdr align;
    } u;
    struct iovec iov = {io->rec, sizeof io->rec};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                        .msg_controllen = sizeof u.buf};
    io->exited = 0;
    ssize_t r = recvmsg(io->reply, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (r < 0)
        return errno == EAGAIN ? -EAGAIN : -errno;
    /* an exec's records carry no fds: close any */
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < k; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                close(fd);
            }
        }
    }
    if (r == 0)
        return 1;
    if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
        return -EMSGSIZE;
    io->rec_len = (int)r;
    return 0;
}

/* The exit record in rec, into the ex_ fields (untrusted: checked as
 * protocol.decode_exited does; one that fails is left to the caller). */
static void decode_exited(struct sbx_io *io)
{
    struct sbx_exited ex;
    struct sbx_msg_hdr h;
    io->exited = 0;
    if (io->rec_len != (int)(sizeof h + sizeof ex))
        return;
    memcpy(&h, io->rec, sizeof h);
    if (h.id != io->req_id)
        return;
    memcpy(&ex, io->rec + sizeof(struct sbx_msg_hdr), sizeof ex);
    if (ex.utime_us < 0 || ex.stime_us < 0 || ex.maxrss_kb < 0 || ex.syscall < -2)
        return;
    io->ex_status = ex.status;
    io->ex_syscall = ex.syscall;
    io->ex_utime_us = ex.utime_us;
    io->ex_stime_us = ex.stime_us;
    io->ex_maxrss_kb = ex.maxrss_kb;
    io->exited = 1;
}

/* After the exit record: what the command left in the pipes, without
 * waiting for processes it left behind that may hold them open. */
static int drain(struct sbx_io *io)
{
    for (int s = 0; s < 2; s++) {
        if (io->out_fd[s] < 0)
            continue;
        for (int i = 0; i < DRAIN_READS; i++) { /* non-blocking since sbx_exec_send */
            int over = 0;
            int r = read_stream(io, s, &over);
            if (r == -EAGAIN || r == 0)
                break;
            if (r < 0)
                return r;
        }
    }
    return 0;
}

int sbx_io_wait(struct sbx_io *io, long long deadline_ns)
{
    if (io->in_fd >= 0 && io->input_off >= io->input_len)
        close_fd(&io->in_fd); /* nothing (more) to write: the command sees EOF */
    for (;;) {
        struct pollfd p[4];
        int who[4], n = 0;
        p[n] = (struct pollfd){io->reply, POLLIN, 0};
        who[n++] = -1;
        for (int s = 0; s < 2; s++)
            if (io->out_fd[s] >= 0) {
                p[n] = (struct pollfd){io->out_fd[s], POLLIN, 0};
                who[n++] = s;
            }
        if (io->in_fd >= 0) {
            p[n] = (struct pollfd){io->in_fd, POLLOUT, 0};
            who[n++] = 2;
        }
        struct timespec ts, *tp = NULL;
        if (deadline_ns >= 0) {
            long long left = deadline_ns - now_ns();
            if (left <= 0)
                return SBX_IO_DEADLINE;
            ts.tv_sec = left / 1000000000LL;
            ts.tv_nsec = left % 1000000000LL;
            tp = &ts;
        }
        int r = ppoll(p, n, tp, NULL);
        if (r < 0)
            return errno == EINTR ? SBX_IO_EINTR : -errno;
        if (r == 0)
            continue; /* the deadline: checked at the top */
        for (int i = n - 1; i >= 0; i--) { /* the reply last: the output before it is read first */
            if (!p[i].revents)
                continue;
            if (who[i] == -1) {
                int k = recv_record(io);
                if (k == -EAGAIN)
                    continue;
                if (k == 1)
                    return SBX_IO_CLOSED;
                if (k < 0)
                    return k;
                if (io->rec_len >= (int)sizeof(struct sbx_msg_hdr)) {
                    uint32_t type;
                    memcpy(&type, io->rec, sizeof type);
                    if (type == SBX_REP_EXITED) {
                        decode_exited(io);
                        if ((k = drain(io)) < 0)
                            return k;
                    }
                }
                return SBX_IO_RECORD;
            } else if (who[i] == 2) {
                ssize_t w = (p[i].revents & POLLERR) ? -1
                            : write(io->in_fd, io->input + io->input_off,
                                    io->input_len - io->input_off > CHUNK ? CHUNK : io->input_len - io->input_off);
                if (w > 0)
                    io->input_off += (size_t)w;
                if ((w < 0 && errno != EAGAIN) || (p[i].revents & POLLERR) || io->input_off >= io->input_len)
                    close_fd(&io->in_fd); /* done, or the command closed its stdin */
            } else {
                int s = who[i], over = 0;
                int k = read_stream(io, s, &over);
                if (k == -EAGAIN)
                    continue;
                if (k < 0)
                    return k;
                if (k == 0) {
                    close_fd(&io->out_fd[s]); /* its end: the init holds no copy now */
                    continue;
                }
                if (over && io->close_on_cap) {
                    close_fd(&io->out_fd[s]); /* the command's next write gets EPIPE */
                } else if (over && !io->cap_reported) {
                    io->cap_reported = 1;
                    return SBX_IO_CAP; /* the caller kills; more output is read and dropped */
                }
            }
        }
    }
}

void sbx_io_free(struct sbx_io *io)
{
    close_fd(&io->reply);
    close_fd(&io->in_fd);
    for (int s = 0; s < 2; s++) {
        close_fd(&io->out_fd[s]);
        free(io->buf[s]);
        io->buf[s] = NULL;
        io->len[s] = io->size[s] = 0;
    }
}
