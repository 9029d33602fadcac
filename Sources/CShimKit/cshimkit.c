#define _GNU_SOURCE 1
#include "cshimkit.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <pthread.h>
#include <sched.h>
#include <sys/capability.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

short cshim_spawn_flag_setsid(void) { return POSIX_SPAWN_SETSID; }

int cshim_spawn_addclosefrom(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}

int cshim_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

int cshim_pidfd_send_signal(int pidfd, int sig) {
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

int cshim_pidfd_reap(int pidfd, int *code, int *status) {
    siginfo_t info;
    memset(&info, 0, sizeof(info));
    if (waitid((idtype_t)P_PIDFD, (id_t)pidfd, &info, WEXITED | WNOHANG) < 0)
        return -1;
    if (info.si_pid == 0)
        return 1;
    *code = info.si_code;
    *status = info.si_status;
    return 0;
}

int cshim_tap_open(char *name, int vnet_hdr, int multi_queue) {
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    if (vnet_hdr)
        ifr.ifr_flags |= IFF_VNET_HDR;
    if (multi_queue)
        ifr.ifr_flags |= IFF_MULTI_QUEUE;
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    strncpy(name, ifr.ifr_name, IFNAMSIZ - 1);
    name[IFNAMSIZ - 1] = 0;
    return fd;
}

static int link_ioctl(const char *name, unsigned long request, struct ifreq *ifr) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    strncpy(ifr->ifr_name, name, IFNAMSIZ - 1);
    int rc = ioctl(s, request, ifr);
    int saved = errno;
    close(s);
    errno = saved;
    return rc;
}

int cshim_link_set_mac(const char *name, const unsigned char *mac) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_hwaddr.sa_family = 1; /* ARPHRD_ETHER */
    memcpy(ifr.ifr_hwaddr.sa_data, mac, 6);
    return link_ioctl(name, SIOCSIFHWADDR, &ifr);
}

int cshim_link_set_mtu(const char *name, int mtu) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_mtu = mtu;
    return link_ioctl(name, SIOCSIFMTU, &ifr);
}

int cshim_link_set_up(const char *name) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    int rc = ioctl(s, SIOCGIFFLAGS, &ifr);
    if (rc == 0) {
        ifr.ifr_flags |= IFF_UP;
        rc = ioctl(s, SIOCSIFFLAGS, &ifr);
    }
    int saved = errno;
    close(s);
    errno = saved;
    return rc;
}

int cshim_set_no_new_privs(void) { return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); }
int cshim_set_child_subreaper(void) { return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); }
int cshim_ifnamsiz(void) { return IFNAMSIZ; }

/* Drops what the child could hold: with CAP_SETPCAP every capability from
 * the bounding set (skipped without it: a non-root exec gains none), the
 * ambient and inheritable sets; then no_new_privs. The thread keeps its
 * effective and permitted sets until it changes credentials. */
static int drop_exec_privileges(const char **step) {
    cap_flag_value_t can_setpcap = CAP_CLEAR;
    cap_t caps = cap_get_proc();
    if (!caps) { *step = "cap_get_proc"; return -1; }
    cap_get_flag(caps, CAP_SETPCAP, CAP_EFFECTIVE, &can_setpcap);
    if (can_setpcap == CAP_SET) {
        for (cap_value_t cap = 0; cap < (cap_value_t)cap_max_bits(); cap++) {
            if (cap_drop_bound(cap) != 0) { *step = "cap_drop_bound"; cap_free(caps); return -1; }
        }
    }
    if (cap_reset_ambient() != 0 && errno != EINVAL) { *step = "cap_reset_ambient"; cap_free(caps); return -1; }
    if (cap_clear_flag(caps, CAP_INHERITABLE) != 0 || cap_set_proc(caps) != 0) {
        *step = "cap_set_proc (clearing the inheritable set)";
        cap_free(caps);
        return -1;
    }
    cap_free(caps);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) { *step = "prctl(PR_SET_NO_NEW_PRIVS)"; return -1; }
    return 0;
}

struct spawn_job {
    pid_t *pid;
    const char *path;
    const posix_spawn_file_actions_t *actions;
    const posix_spawnattr_t *attributes;
    char *const *argv;
    char *const *envp;
    const struct cshim_confinement *confinement;
    const char *failed_step;
    int result;
};

static void *spawn_thread(void *argument) {
    struct spawn_job *job = argument;
    job->failed_step = NULL;
    if (job->confinement->drop_privileges && drop_exec_privileges(&job->failed_step) != 0) {
        job->result = errno ? errno : EPERM;
        return NULL;
    }
    if (job->confinement->cpu_count > 0) {
        /* Per thread: the shim's other threads keep theirs; the child inherits it. */
        cpu_set_t *set = CPU_ALLOC(CPU_SETSIZE * 8);
        size_t size = CPU_ALLOC_SIZE(CPU_SETSIZE * 8);
        if (set == NULL) { job->failed_step = "CPU_ALLOC"; job->result = ENOMEM; return NULL; }
        CPU_ZERO_S(size, set);
        for (size_t i = 0; i < job->confinement->cpu_count; i++) {
            int cpu = job->confinement->cpus[i];
            if (cpu >= 0 && (size_t)cpu < CPU_SETSIZE * 8) CPU_SET_S((size_t)cpu, size, set);
        }
        int rc = sched_setaffinity(0, size, set);
        int saved = errno;
        CPU_FREE(set);
        if (rc != 0) { job->failed_step = "sched_setaffinity"; job->result = saved; return NULL; }
    }
    if (job->confinement->set_ids) {
        /* Raw syscalls: glibc's wrappers would change every thread of the shim. */
        if (syscall(SYS_setgroups, job->confinement->group_count, job->confinement->groups) != 0) {
            job->failed_step = "setgroups";
            job->result = errno;
            return NULL;
        }
        gid_t gid = job->confinement->gid;
        uid_t uid = job->confinement->uid;
        if (syscall(SYS_setresgid, gid, gid, gid) != 0) { job->failed_step = "setresgid"; job->result = errno; return NULL; }
        if (syscall(SYS_setresuid, uid, uid, uid) != 0) { job->failed_step = "setresuid"; job->result = errno; return NULL; }
    }
    job->result = posix_spawn(job->pid, job->path, job->actions, job->attributes, job->argv, job->envp);
    return NULL;
}

int cshim_spawn_confined(pid_t *pid, const char *path, const posix_spawn_file_actions_t *actions,
                         const posix_spawnattr_t *attributes, char *const argv[], char *const envp[],
                         const struct cshim_confinement *confinement, const char **failed_step) {
    struct spawn_job job = {pid, path, actions, attributes, argv, envp, confinement, NULL, 0};
    pthread_t thread;
    int rc = pthread_create(&thread, NULL, spawn_thread, &job);
    if (rc != 0) {
        *failed_step = "pthread_create";
        return rc;
    }
    pthread_join(thread, NULL);
    *failed_step = job.failed_step;
    return job.result;
}

ssize_t cshim_send_fd(int sock, const void *buf, size_t len, int fd) {
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    union {
        char bytes[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof(control));
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.bytes;
    msg.msg_controllen = sizeof(control.bytes);
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
    ssize_t sent;
    do {
        sent = sendmsg(sock, &msg, MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    return sent;
}

int cshim_o_direct(void) { return O_DIRECT; }
int cshim_set_pipe_size(int fd, int size) { return fcntl(fd, F_SETPIPE_SZ, size); }
int cshim_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

#include <malloc.h>

int cshim_malloc_trim(void) { return malloc_trim(0); }

int cshim_link_get_mtu(const char *name) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    if (link_ioctl(name, SIOCGIFMTU, &ifr) != 0)
        return -1;
    return ifr.ifr_mtu;
}

int cshim_bridge_add_port(const char *bridge, const char *port) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    if (link_ioctl(port, SIOCGIFINDEX, &ifr) != 0)
        return -1;
    int index = ifr.ifr_ifindex;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_ifindex = index;
    return link_ioctl(bridge, SIOCBRADDIF, &ifr);
}

int cshim_set_thread_affinity(pid_t tid, const int *cpus, size_t count) {
    cpu_set_t *set = CPU_ALLOC(CPU_SETSIZE * 8);
    size_t size = CPU_ALLOC_SIZE(CPU_SETSIZE * 8);
    if (set == NULL) { errno = ENOMEM; return -1; }
    CPU_ZERO_S(size, set);
    for (size_t i = 0; i < count; i++) {
        if (cpus[i] >= 0 && (size_t)cpus[i] < CPU_SETSIZE * 8) CPU_SET_S((size_t)cpus[i], size, set);
    }
    int rc = sched_setaffinity(tid, size, set);
    int saved = errno;
    CPU_FREE(set);
    errno = saved;
    return rc;
}
