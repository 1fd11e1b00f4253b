/* One exec()'s I/O on the host, in C: its pipes and reply socket made and
 * sent in one call, then its output collected until the exit record in
 * another.  In Python these were about 25 system calls, each releasing and
 * retaking the interpreter lock, and ~150 us of bytecode per exec; here the
 * lock is released once per call (cffi does it).  Callers:
 * sandbox/execio.py only.  The cdef is read between the markers. */
#ifndef SBX_EXECIO_H
#define SBX_EXECIO_H

#include <stddef.h>
#include <stdint.h>

/* BEGIN CDEF */
#define SBX_IO_RECORD 0   /* a record from the init is in rec */
#define SBX_IO_DEADLINE 1 /* the deadline passed */
#define SBX_IO_CAP 2      /* a stream went over the cap (close_on_cap = 0): reported once */
#define SBX_IO_CLOSED 3   /* the reply socket closed: the init is gone */
#define SBX_IO_EINTR 4    /* a signal came: the caller runs its handlers, then calls again */

struct sbx_io {
    int reply;                  /* the exec's reply socket; fds are ours, -1 where none */
    uint32_t req_id;            /* the request's id: an exit record of another is not decoded */
    int in_fd;
    int out_fd[2];              /* stdout, stderr */
    const unsigned char *input; /* stdin data, written as the pipe takes it */
    size_t input_len;
    size_t input_off;
    long long cap;              /* bytes kept per output stream; -1: no cap */
    int close_on_cap;           /* over the cap: close that stream (else report SBX_IO_CAP) */
    int truncated;              /* output beyond the cap was dropped */
    int cap_reported;
    unsigned char *buf[2];      /* kept output (malloc), len bytes of it */
    size_t len[2];
    size_t size[2];
    unsigned char rec[4096];    /* a longer record is an error (-EMSGSIZE) */
    int rec_len;
    /* An exit record, decoded here (the common end of an exec) where it is
     * well formed: its size, no negative accounting.  exited = 0 for any
     * other record, which the caller decodes itself. */
    int exited;
    int ex_status, ex_syscall;
    long long ex_utime_us, ex_stime_us, ex_maxrss_kb;
};

/* Make the pipes whose bits are set in `pipes` (0 stdin, 1 stdout, 2 stderr)
 * and the reply socket, and send the request with [reply, the pipes' far ends,
 * extra...].  Our ends go to io's reply, in_fd and out_fd (-1 where none),
 * which is then ready for sbx_io_wait: the caller's wait follows the send
 * with nothing in between (the init, woken by the request, gives the CPU
 * back until we sleep; see do_exec in init.c).  The far ends and `extra`
 * are closed in every case.
 * channel_fd >= 0: our end of a reply channel the init keeps (proto.h,
 * SBX_EXEC_REUSE), used instead of a new socket and not sent.  flags_or goes
 * into the request's flags (a channel's bits).  0, or -errno (-EPIPE: the
 * init is gone); on failure nothing is left open (channel_fd is closed). */
int sbx_exec_send(int ctl, const unsigned char *msg, size_t len, int pipes,
                  const int *extra, int nextra, struct sbx_io *io, int channel_fd, uint32_t flags_or);
/* Move stdin and output until something for the caller: SBX_IO_*, or -errno.
 * The fds are sbx_exec_send's (our pipe ends are non-blocking).
 * After an EXITED record the output left in the pipes is read too.
 * deadline_ns: CLOCK_MONOTONIC, -1 for none. */
int sbx_io_wait(struct sbx_io *io, long long deadline_ns);
/* Close the fds still open and free the buffers. */
void sbx_io_free(struct sbx_io *io);
/* END CDEF */

#endif
