/* See tcpmetrics.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <linux/tcp_metrics.h>
#include <sys/socket.h>

#include "tcpmetrics.h"

#define NLA_ALIGN4(n) (((n) + 3u) & ~3u)
#define MAX_REPLIES 64 /* messages read for one answer before giving up */

/* Send one generic netlink request (family, cmd, one optional string
 * attribute) with an ACK asked for, and read the answer: for GETFAMILY the
 * family id out of the reply, else the ACK.  Only the kernel can send to
 * the socket (it is connected to port 0), so what comes back is the
 * kernel's; anything without our sequence number is skipped.  0 or the
 * family id, or -errno. */
static int request(int fd, uint16_t family, uint8_t cmd, uint16_t attr, const char *value)
{
    static uint32_t seq;
    char msg[128];
    memset(msg, 0, sizeof msg);
    struct nlmsghdr *nh = (struct nlmsghdr *)msg;
    struct genlmsghdr *gh = (struct genlmsghdr *)NLMSG_DATA(nh);
    nh->nlmsg_type = family;
    nh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    nh->nlmsg_seq = ++seq;
    gh->cmd = cmd;
    gh->version = 1;
    unsigned len = NLMSG_LENGTH(GENL_HDRLEN);
    if (value) {
        struct nlattr *a = (struct nlattr *)(msg + NLMSG_ALIGN(len));
        size_t n = strlen(value) + 1;
        a->nla_type = attr;
        a->nla_len = (uint16_t)(NLA_HDRLEN + n);
        memcpy((char *)a + NLA_HDRLEN, value, n);
        len = NLMSG_ALIGN(len) + NLA_ALIGN4(a->nla_len);
    }
    nh->nlmsg_len = len;
    if (send(fd, msg, len, 0) < 0)
        return -errno;
    int found = 0;
    char buf[8192] __attribute__((aligned(4)));
    for (int tries = 0; tries < MAX_REPLIES; tries++) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0)
            return -errno;
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (unsigned)n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_seq != seq)
                continue;
            if (h->nlmsg_type == NLMSG_ERROR) {
                const struct nlmsgerr *err = (const struct nlmsgerr *)NLMSG_DATA(h);
                if (h->nlmsg_len < NLMSG_LENGTH(sizeof *err))
                    return -EPROTO;
                return err->error ? err->error : found;
            }
            if (h->nlmsg_type != GENL_ID_CTRL || h->nlmsg_len < NLMSG_LENGTH(GENL_HDRLEN))
                continue;
            /* CTRL_CMD_NEWFAMILY: the attributes after the genl header */
            char *p = (char *)NLMSG_DATA(h) + GENL_HDRLEN;
            char *end = (char *)h + h->nlmsg_len;
            while (p + NLA_HDRLEN <= end) {
                const struct nlattr *a = (const struct nlattr *)p;
                if (a->nla_len < NLA_HDRLEN || p + a->nla_len > end)
                    break;
                if ((a->nla_type & NLA_TYPE_MASK) == CTRL_ATTR_FAMILY_ID && a->nla_len >= NLA_HDRLEN + 2) {
                    uint16_t id;
                    memcpy(&id, p + NLA_HDRLEN, sizeof id);
                    found = id;
                }
                p += NLA_ALIGN4(a->nla_len);
            }
        }
    }
    return -EPROTO;
}

static int family; /* tcp_metrics' id: generic netlink family ids are the same in every namespace */

int sbx_tcpm_socket(void)
{
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
    if (fd < 0)
        return -errno;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    struct timeval tv = {.tv_sec = 1}; /* the kernel answers at once: never hang on it */
    int e = 0;
    if (connect(fd, (struct sockaddr *)&kernel, sizeof kernel) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0)
        e = -errno;
    if (!e && !family) {
        int id = request(fd, GENL_ID_CTRL, CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_NAME, TCP_METRICS_GENL_NAME);
        if (id > 0)
            family = id;
        else
            e = id < 0 ? id : -ENOENT;
    }
    if (e) {
        close(fd);
        return e;
    }
    return fd;
}

int sbx_tcpm_flush(int fd)
{
    if (!family)
        return -ENOENT; /* no socket was made */
    /* TCP_METRICS_CMD_DEL without an address: the whole cache of the namespace */
    return request(fd, (uint16_t)family, TCP_METRICS_CMD_DEL, 0, NULL);
}
