#include "cshim_macvtap.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

struct request {
    struct nlmsghdr header;
    struct ifinfomsg info;
    char attributes[512];
};

static struct rtattr *add_attribute(struct request *req, unsigned short type, const void *data, size_t len) {
    struct rtattr *attribute = (struct rtattr *)((char *)req + NLMSG_ALIGN(req->header.nlmsg_len));
    attribute->rta_type = type;
    attribute->rta_len = (unsigned short)RTA_LENGTH(len);
    if (len) memcpy(RTA_DATA(attribute), data, len);
    req->header.nlmsg_len = NLMSG_ALIGN(req->header.nlmsg_len) + RTA_ALIGN(attribute->rta_len);
    return attribute;
}

static void end_nest(struct request *req, struct rtattr *nest) {
    nest->rta_len = (unsigned short)((char *)req + req->header.nlmsg_len - (char *)nest);
}

/* Sends one request and waits for its acknowledgement. */
static int talk(struct request *req) {
    int sock = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (sock < 0) return -1;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(sock, req, req->header.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) {
        int saved = errno;
        close(sock);
        errno = saved;
        return -1;
    }
    char reply[4096];
    ssize_t got = recv(sock, reply, sizeof reply, 0);
    int saved = errno;
    close(sock);
    if (got < 0) {
        errno = saved;
        return -1;
    }
    struct nlmsghdr *answer = (struct nlmsghdr *)reply;
    if (!NLMSG_OK(answer, (unsigned int)got) || answer->nlmsg_type != NLMSG_ERROR) {
        errno = EPROTO;
        return -1;
    }
    struct nlmsgerr *error = NLMSG_DATA(answer);
    if (error->error != 0) {
        errno = -error->error;
        return -1;
    }
    return 0;
}

int cshim_macvtap_create(const char *name, int lower, unsigned int mode, const unsigned char *mac) {
    struct request req;
    memset(&req, 0, sizeof req);
    req.header.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
    req.header.nlmsg_type = RTM_NEWLINK;
    req.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK;
    req.info.ifi_family = AF_UNSPEC;
    unsigned int link = (unsigned int)lower;
    add_attribute(&req, IFLA_LINK, &link, sizeof link);
    add_attribute(&req, IFLA_IFNAME, name, strlen(name) + 1);
    add_attribute(&req, IFLA_ADDRESS, mac, 6);
    struct rtattr *info = add_attribute(&req, IFLA_LINKINFO, NULL, 0);
    add_attribute(&req, IFLA_INFO_KIND, "macvtap", strlen("macvtap"));
    struct rtattr *data = add_attribute(&req, IFLA_INFO_DATA, NULL, 0);
    add_attribute(&req, IFLA_MACVLAN_MODE, &mode, sizeof mode);
    end_nest(&req, data);
    end_nest(&req, info);
    return talk(&req);
}

int cshim_link_delete(const char *name) {
    struct request req;
    memset(&req, 0, sizeof req);
    req.header.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
    req.header.nlmsg_type = RTM_DELLINK;
    req.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    req.info.ifi_family = AF_UNSPEC;
    add_attribute(&req, IFLA_IFNAME, name, strlen(name) + 1);
    return talk(&req);
}

int cshim_macvtap_open(const char *name, int vnet_hdr) {
    unsigned int index = if_nametoindex(name);
    if (index == 0) return -1;
    char path[64];
    snprintf(path, sizeof path, "/dev/tap%u", index);
    struct stat st;
    if (stat(path, &st) != 0) {
        /* No udev (a container): make the node from the numbers sysfs gives. */
        char sys[256];
        snprintf(sys, sizeof sys, "/sys/class/net/%s/macvtap/tap%u/dev", name, index);
        FILE *f = fopen(sys, "re");
        if (!f) return -1;
        unsigned int major = 0, minor = 0;
        int matched = fscanf(f, "%u:%u", &major, &minor);
        fclose(f);
        if (matched != 2) {
            errno = ENODEV;
            return -1;
        }
        if (mknod(path, S_IFCHR | 0600, makedev(major, minor)) != 0 && errno != EEXIST) return -1;
    }
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return -1;
    /* The kernel opens a macvtap with a vnet header; libvirt keeps it only for virtio. */
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    if (ioctl(fd, TUNGETIFF, &ifr) != 0) goto fail;
    short wanted = vnet_hdr ? (short)(ifr.ifr_flags | IFF_VNET_HDR) : (short)(ifr.ifr_flags & ~IFF_VNET_HDR);
    if (wanted != ifr.ifr_flags) {
        ifr.ifr_flags = wanted;
        if (ioctl(fd, TUNSETIFF, &ifr) != 0) goto fail;
    }
    return fd;
fail:;
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
}
