/* The TCP metrics cache of a network namespace, emptied before the pool
 * gives the namespace to another sandbox (netpool.py).  The kernel keeps,
 * per namespace and for up to an hour, what it learnt of each peer (RTT,
 * cwnd, the source and destination addresses): entries a sandbox makes
 * without any capability (a TCP connection over loopback, to addresses it
 * picks in 127/8), and that a later sandbox with CAP_NET_ADMIN, or without
 * seccomp, could read over generic netlink, though it could not flush them.
 * The host, whose user namespace owns the namespace, can: a generic netlink
 * socket opened inside it when it is made (a netlink socket stays bound to
 * the namespace it was made in) sends TCP_METRICS_CMD_DEL for all of them.
 * Internal to the launcher's C files: not in the cdef. */
#ifndef SBX_TCPMETRICS_H
#define SBX_TCPMETRICS_H

/* A generic netlink socket in the calling thread's network namespace,
 * connected to the kernel (nothing else can send to it), with the
 * tcp_metrics family found: its fd, or -errno. */
int sbx_tcpm_socket(void);

/* Empty the TCP metrics cache of the namespace `fd` (from sbx_tcpm_socket)
 * is in: 0, or -errno. */
int sbx_tcpm_flush(int fd);

#endif
