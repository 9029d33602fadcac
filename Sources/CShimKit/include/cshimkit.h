#pragma once
/* Small C helpers for what Swift's Glibc module hides (GNU extensions,
 * raw syscalls without glibc wrappers, ioctl structs). */
#include <spawn.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>

short cshim_spawn_flag_setsid(void);
int cshim_spawn_addclosefrom(posix_spawn_file_actions_t *actions, int from);

/* pidfd_open(2) and pidfd_send_signal(2); return -1 and set errno. */
int cshim_pidfd_open(pid_t pid);
int cshim_pidfd_send_signal(int pidfd, int sig);
/* waitid(P_PIDFD, ...) with WNOHANG; returns 0 and fills the outputs when the
 * child was reaped, 1 when it has not exited yet, -1 with errno (ECHILD when
 * the process is not our child). */
int cshim_pidfd_reap(int pidfd, int *code, int *status);

/* Opens (or creates) a tap device on /dev/net/tun. `name` is in/out
 * (IFNAMSIZ bytes); an empty name lets the kernel pick one from `pattern`
 * semantics of the caller. vnet_hdr asks for IFF_VNET_HDR, multi_queue for
 * IFF_MULTI_QUEUE (each open of the same name is then one more queue).
 * Returns the fd. */
int cshim_tap_open(char *name, int vnet_hdr, int multi_queue);
/* The MTU of a link, or -1 with errno. */
int cshim_link_get_mtu(const char *name);
/* Adds link `port` to bridge `bridge` (SIOCBRADDIF); 0 or -1 with errno. */
int cshim_bridge_add_port(const char *bridge, const char *port);
/* Sets a network interface's MAC address (6 bytes). */
int cshim_link_set_mac(const char *name, const unsigned char *mac);
/* Sets a network interface's MTU. */
int cshim_link_set_mtu(const char *name, int mtu);
/* Sets a network interface up (IFF_UP). */
int cshim_link_set_up(const char *name);

/* How a child is to be confined (cshim_spawn_confined). */
struct cshim_confinement {
    /* Clear every capability (bounding, inheritable, ambient; permitted and
     * effective follow at exec) through libcap, and set no_new_privs. */
    int drop_privileges;
    /* Run as this user and group, with these supplementary groups. */
    int set_ids;
    uid_t uid;
    gid_t gid;
    const gid_t *groups;
    size_t group_count;
    /* When cpu_count > 0: the host CPUs QEMU (and every thread it starts) may
     * run on, like libvirt's <vcpu cpuset> for the emulator. */
    const int *cpus;
    size_t cpu_count;
};

/* posix_spawn from a fresh thread that confines itself first: capabilities,
 * no_new_privs and credentials are per thread in the kernel, so the child
 * inherits them and the shim's own threads keep theirs. Returns
 * posix_spawn's result (0 or an errno), or the errno of a confinement step
 * that failed, with *failed_step naming it. */
int cshim_spawn_confined(pid_t *pid, const char *path, const posix_spawn_file_actions_t *actions,
                         const posix_spawnattr_t *attributes, char *const argv[], char *const envp[],
                         const struct cshim_confinement *confinement, const char **failed_step);

/* Sends `len` bytes (at most one packet's worth: small) on a connected unix
 * stream socket with `fd` attached as SCM_RIGHTS, as QMP's getfd expects.
 * MSG_NOSIGNAL; returns the bytes sent, or -1 with errno. */
ssize_t cshim_send_fd(int sock, const void *buf, size_t len, int fd);

/* O_DIRECT (a GNU extension Swift's Glibc module does not export). */
int cshim_o_direct(void);
/* pipe2(fds, O_CLOEXEC). */
int cshim_pipe_cloexec(int fds[2]);
/* fcntl(F_SETPIPE_SZ): grows a pipe's buffer; returns the new size or -1. */
int cshim_set_pipe_size(int fd, int size);

/* Data for the SIGCHLD-less exit watching and sane defaults. */
int cshim_set_no_new_privs(void);
int cshim_set_child_subreaper(void);
int cshim_ifnamsiz(void);
int cshim_malloc_trim(void);
#include "cshim_libvirt.h"
/* sched_setaffinity(2) of thread `tid` (any process) to `count` CPUs; 0 or -1 with errno. */
int cshim_set_thread_affinity(pid_t tid, const int *cpus, size_t count);
#include "cshim_macvtap.h"
