/* sandbox.c - the code sandbox (see sandbox.h for what it promises).
 *
 * The file reads top to bottom: the seccomp filter (built once in the parent,
 * exported as BPF so the child only needs prctl), the child (everything from
 * clone to exec, written with raw syscalls and stack buffers: it may be cloned
 * from a threaded process without fork handlers, so it must not malloc or take
 * stdio locks), the probe, boxes and uid slots, then the parent's side of a
 * run (pipes, the wall clock, reaping, classifying).
 *
 * A note on pid namespaces: the program is pid 1 of its namespace. The kernel
 * ignores default-action signals that pid 1 sends itself or gets from its own
 * namespace, and RLIMIT_CPU's SIGXCPU too (its SIGKILL at the hard limit, one
 * second later, still lands). So abort() ends in SIGSEGV rather than SIGABRT,
 * and a C program that ignores EFBIG is not stopped by SIGXFSZ. The reasons
 * come out the same ("runtime_error", "timeout"), which is all the verifier
 * needs; the stderr text (MemoryError, bad_alloc, File too large) and the
 * rusage decide the rest.
 */
#include "rejection/sandbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <linux/landlock.h>
#include <linux/sched.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/filter.h>
#include <linux/seccomp.h>

#include "core/status.h"
#include "core/util.h"

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef LANDLOCK_ACCESS_FS_REFER
#define LANDLOCK_ACCESS_FS_REFER (1ULL << 13)
#endif
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)
#endif
#ifndef LANDLOCK_ACCESS_FS_IOCTL_DEV
#define LANDLOCK_ACCESS_FS_IOCTL_DEV (1ULL << 15)
#endif

/* Layers a run can get. */
enum {
    F_USERNS = 1u << 0,
    F_MOUNTNS = 1u << 1,
    F_PIDNS = 1u << 2,
    F_NETNS = 1u << 3,
    F_IPCNS = 1u << 4,
    F_LANDLOCK = 1u << 5,
    F_UIDDROP = 1u << 6, /* root: run as the box's unprivileged uid */
};

#define SBX_INSIDE_WORK "/sandbox"
#define SBX_MAX_SLOTS 64

void kd_sandbox_cfg_init(kd_sandbox_cfg *c)
{
    memset(c, 0, sizeof *c);
    c->cpu_seconds = 2;
    c->wall_seconds = 5;
    c->mem_bytes = 512ull << 20;
    c->file_bytes = 16ull << 20;
    c->out_bytes = 1ull << 20;
    c->max_procs = 32;
    c->max_files = 64;
    c->allow_userns = c->allow_mountns = c->allow_pidns = c->allow_netns = 1;
    c->allow_ipcns = c->allow_landlock = 1;
    c->run_uid = 65534;
}

void kd_sandbox_result_release(kd_sandbox_result *r)
{
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof *r);
}

static double now_(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- seccomp ---------------------------------------------------------------------- */

/* Killed on sight: calls no test program needs, each an escape or a kernel
 * attack surface. Names this libseccomp or arch does not know are skipped. */
static const char *const kill_calls_[] = {
    "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp", "pidfd_getfd",
    "mount", "umount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount", "fspick",
    "move_mount", "open_tree", "mount_setattr", "unshare", "setns", "kexec_load", "kexec_file_load",
    "reboot", "init_module", "finit_module", "delete_module", "create_module", "bpf", "perf_event_open",
    "keyctl", "add_key", "request_key", "acct", "swapon", "swapoff", "syslog", "settimeofday",
    "clock_settime", "clock_adjtime", "adjtimex", "sethostname", "setdomainname", "iopl", "ioperm",
    "open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "fanotify_init", "userfaultfd",
    "quotactl", "quotactl_fd", "nfsservctl", "uselib", "vhangup", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "modify_ldt", "vm86", "vm86old", "_sysctl", "sysfs", "ustat",
    "get_kernel_syms", "query_module", "pciconfig_read", "pciconfig_write", "pciconfig_iobase",
    "mknod", "mknodat",
};

static int rule_(scmp_filter_ctx ctx, uint32_t action, const char *name, unsigned n, const struct scmp_arg_cmp *a)
{
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR || nr < 0)
        return 0; /* not a syscall on this arch */
    int rc = seccomp_rule_add_array(ctx, action, nr, n, a);
    return rc == -EDOM ? 0 : rc;
}

/* Build the filter and export it as BPF into *prog (prog->filter malloc'd).
 * no_pidns adds the rules that stand in for a pid namespace. */
static int filter_build_(int no_pidns, struct sock_fprog *prog)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx)
        return kd_err(KD_E_UNSUPPORTED, "seccomp_init failed");
    const uint32_t KILL = SCMP_ACT_KILL_PROCESS;
    int rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, KILL);
    for (size_t i = 0; rc == 0 && i < sizeof kill_calls_ / sizeof *kill_calls_; i++)
        rc = rule_(ctx, KILL, kill_calls_[i], 0, NULL);

    /* Network: inet and packet sockets kill; other families refuse; AF_UNIX
     * (and socketpair) stay, for libraries that talk to themselves. The masks
     * compare the low 32 bits, which is what the kernel reads for an int. */
    static const int kill_af[] = {AF_INET, AF_INET6, AF_PACKET};
    static const int refuse_af[] = {AF_NETLINK, AF_KEY, AF_ALG, AF_VSOCK, AF_XDP, AF_BLUETOOTH, AF_CAN,
                                    AF_TIPC, AF_RDS, AF_LLC, AF_X25, AF_AX25, AF_APPLETALK, AF_IPX,
                                    AF_NFC, AF_QIPCRTR, AF_SMC, AF_PPPOX, AF_ATMPVC, AF_ATMSVC};
    for (size_t i = 0; rc == 0 && i < sizeof kill_af / sizeof *kill_af; i++) {
        struct scmp_arg_cmp a = SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, (scmp_datum_t)kill_af[i]);
        rc = rule_(ctx, KILL, "socket", 1, &a);
    }
    for (size_t i = 0; rc == 0 && i < sizeof refuse_af / sizeof *refuse_af; i++) {
        struct scmp_arg_cmp a = SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, (scmp_datum_t)refuse_af[i]);
        rc = rule_(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), "socket", 1, &a);
    }
    /* clone3 passes its flags in memory, out of the filter's reach: answer
     * ENOSYS so libc falls back to clone, whose flags we can read. */
    if (rc == 0)
        rc = rule_(ctx, SCMP_ACT_ERRNO(ENOSYS), "clone3", 0, NULL);
    static const unsigned long ns_bits[] = {CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET,
                                            CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWCGROUP, 0x00000080 /* NEWTIME */};
    for (size_t i = 0; rc == 0 && i < sizeof ns_bits / sizeof *ns_bits; i++) {
        struct scmp_arg_cmp a = SCMP_A0(SCMP_CMP_MASKED_EQ, ns_bits[i], ns_bits[i]);
        rc = rule_(ctx, KILL, "clone", 1, &a);
    }
    /* Terminal injection (stdin is a pipe, but a program could open a tty). */
    static const unsigned long bad_ioctl[] = {TIOCSTI, TIOCLINUX};
    for (size_t i = 0; rc == 0 && i < 2; i++) {
        struct scmp_arg_cmp a = SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, bad_ioctl[i]);
        rc = rule_(ctx, KILL, "ioctl", 1, &a);
    }
    /* kill(-1, ...): every process the uid may signal. */
    if (rc == 0) {
        struct scmp_arg_cmp a = SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, 0xffffffffu);
        rc = rule_(ctx, KILL, "kill", 1, &a);
    }
    if (no_pidns && rc == 0) {
        /* Without a pid namespace the caller is visible: its pid and group are
         * off limits, and the program may not leave its process group. */
        uint32_t self = (uint32_t)getpid(), grp = (uint32_t)-getpgrp();
        const char *by_pid[] = {"kill", "tkill", "tgkill", "pidfd_open", "rt_sigqueueinfo", "rt_tgsigqueueinfo"};
        for (size_t i = 0; rc == 0 && i < sizeof by_pid / sizeof *by_pid; i++) {
            struct scmp_arg_cmp a = SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, self);
            rc = rule_(ctx, KILL, by_pid[i], 1, &a);
        }
        if (rc == 0) {
            struct scmp_arg_cmp a = SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, grp);
            rc = rule_(ctx, KILL, "kill", 1, &a);
        }
        if (rc == 0)
            rc = rule_(ctx, SCMP_ACT_ERRNO(EPERM), "setsid", 0, NULL);
        if (rc == 0)
            rc = rule_(ctx, SCMP_ACT_ERRNO(EPERM), "setpgid", 0, NULL);
    }
    if (rc != 0) {
        seccomp_release(ctx);
        return kd_err(KD_E_UNSUPPORTED, "cannot build the seccomp filter: %s", strerror(-rc));
    }

    int fd = memfd_create("kd-seccomp", MFD_CLOEXEC);
    if (fd < 0) {
        seccomp_release(ctx);
        return kd_err(KD_E_IO, "memfd_create: %s", strerror(errno));
    }
    rc = seccomp_export_bpf(ctx, fd);
    seccomp_release(ctx);
    struct stat st;
    if (rc != 0 || fstat(fd, &st) != 0 || st.st_size <= 0 || st.st_size % sizeof(struct sock_filter)) {
        close(fd);
        return kd_err(KD_E_UNSUPPORTED, "cannot export the seccomp filter");
    }
    struct sock_filter *f = malloc((size_t)st.st_size);
    if (!f || pread(fd, f, (size_t)st.st_size, 0) != st.st_size) {
        free(f);
        close(fd);
        return kd_err(f ? KD_E_IO : KD_E_NOMEM, "cannot read the seccomp filter back");
    }
    close(fd);
    prog->len = (unsigned short)((size_t)st.st_size / sizeof(struct sock_filter));
    prog->filter = f;
    return KD_OK;
}

static pthread_mutex_t filter_mu_ = PTHREAD_MUTEX_INITIALIZER;
static struct sock_fprog filters_[2]; /* [no_pidns]; built once, never freed */

static int filter_get_(int no_pidns, const struct sock_fprog **out)
{
    int st = KD_OK;
    pthread_mutex_lock(&filter_mu_);
    if (!filters_[no_pidns].filter)
        st = filter_build_(no_pidns, &filters_[no_pidns]);
    pthread_mutex_unlock(&filter_mu_);
    *out = &filters_[no_pidns];
    return st;
}

/* ---- the child -------------------------------------------------------------------- */

/* Where the child failed; the parent names it. */
enum {
    ST_FDS = 1, ST_SIGNALS, ST_SETSID, ST_UNSHARE, ST_USERMAP, ST_MOUNT_PRIVATE, ST_MOUNT_ROOT, ST_BIND,
    ST_DEV, ST_TMP, ST_WORK, ST_PIVOT, ST_CHDIR, ST_RLIMIT, ST_SETUID, ST_PDEATHSIG, ST_CLOSEFDS,
    ST_LANDLOCK, ST_NNP, ST_SECCOMP, ST_EXEC, ST_NOTE,
};
static const char *const step_names_[] = {
    "", "fds", "signals", "setsid", "unshare", "uid_map", "private mounts", "root tmpfs", "read-only bind",
    "/dev", "/tmp", "work bind", "pivot_root", "chdir", "setrlimit", "setuid", "pdeathsig", "close fds",
    "landlock", "no_new_privs", "seccomp", "exec", "note",
};

#define SBX_MAX_BINDS 24
#define SBX_MAX_LL 32
#define SBX_MAX_ARGS 64
#define SBX_MAX_ENVP (8 + KD_SANDBOX_MAX_ENV)

/* Everything the child needs, prepared by the parent (the child reads it from
 * its copy of the parent's memory). */
typedef struct plan {
    unsigned feat;
    int probe;        /* stop before exec and _exit(0) */
    int unshare_late; /* forked (no clone3): unshare these namespaces in the child */
    int fd_in, fd_out, fd_err, fd_status;
    /* mount namespace */
    char root[PATH_MAX];           /* host path of the new root's mount point */
    char work[PATH_MAX];           /* host path of the working directory */
    int nbind;
    char bind_src[SBX_MAX_BINDS][PATH_MAX];
    char bind_link[SBX_MAX_BINDS][PATH_MAX]; /* non-empty: make a symlink to this instead */
    char tmp_opts[64], work_ro;
    /* user namespace (not root) */
    char uid_map[32], gid_map[32];
    /* landlock (no mount namespace) */
    int nll;
    char ll_path[SBX_MAX_LL][PATH_MAX];
    uint64_t ll_access[SBX_MAX_LL];
    uint64_t ll_handled;
    /* credentials and limits */
    uid_t uid;
    gid_t gid;
    struct rlimit lim[8];
    int lim_res[8], nlim;
    const struct sock_fprog *filter;
    const char *cwd;
    char *argv[SBX_MAX_ARGS + 1];
    char *envp[SBX_MAX_ENVP + 1];
    char envbuf[SBX_MAX_ENVP][PATH_MAX + 32];
} plan;

static __attribute__((noreturn)) void child_fail_(const plan *p, int step)
{
    int rec[2] = {step, errno};
    ssize_t w = write(p->fd_status, rec, sizeof rec);
    (void)w;
    _exit(127);
}

/* Path helpers on stack buffers (no malloc, no stdio). */
static int cat_(char *buf, size_t cap, const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la + lb + 1 > cap)
        return -1;
    memcpy(buf, a, la);
    memcpy(buf + la, b, lb + 1);
    return 0;
}

static int mkdir_p_(const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    size_t n = strlen(path);
    if (n >= sizeof buf)
        return -1;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            if (mkdir(buf, mode) != 0 && errno != EEXIST)
                return -1;
            buf[i] = c;
        }
    }
    return 0;
}

/* The flags a remount of a bind of `src` must keep: inside a user namespace
 * the kernel refuses to clear nosuid/nodev/noexec/atime flags it locked. */
static unsigned long locked_flags_(const char *src)
{
    struct statvfs sv;
    unsigned long f = 0;
    if (statvfs(src, &sv) != 0)
        return 0;
    if (sv.f_flag & ST_NOSUID) f |= MS_NOSUID;
    if (sv.f_flag & ST_NODEV) f |= MS_NODEV;
    if (sv.f_flag & ST_NOEXEC) f |= MS_NOEXEC;
    if (sv.f_flag & ST_NOATIME) f |= MS_NOATIME;
    if (sv.f_flag & ST_NODIRATIME) f |= MS_NODIRATIME;
    if (sv.f_flag & ST_RELATIME) f |= MS_RELATIME;
    return f;
}

static int bind_(const char *src, const char *dst, unsigned long extra)
{
    if (mount(src, dst, NULL, MS_BIND | MS_REC, NULL) != 0)
        return -1;
    return mount(NULL, dst, NULL, MS_BIND | MS_REMOUNT | extra | locked_flags_(src), NULL);
}

static const char *const devs_[] = {"null", "zero", "full", "random", "urandom"};

static void setup_root_(const plan *p)
{
    char dst[PATH_MAX];
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        child_fail_(p, ST_MOUNT_PRIVATE);
    if (mount("tmpfs", p->root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m,nr_inodes=4096") != 0)
        child_fail_(p, ST_MOUNT_ROOT);
    for (int i = 0; i < p->nbind; i++) {
        if (cat_(dst, sizeof dst, p->root, p->bind_src[i]) != 0)
            child_fail_(p, ST_BIND);
        if (p->bind_link[i][0]) {
            char parent[PATH_MAX];
            memcpy(parent, dst, sizeof parent);
            char *slash = strrchr(parent, '/');
            if (slash) *slash = 0;
            if (mkdir_p_(parent, 0755) != 0 || symlink(p->bind_link[i], dst) != 0)
                child_fail_(p, ST_BIND);
            continue;
        }
        if (mkdir_p_(dst, 0755) != 0 || bind_(p->bind_src[i], dst, MS_RDONLY | MS_NOSUID | MS_NODEV) != 0)
            child_fail_(p, ST_BIND);
    }
    /* /dev: the harmless character devices, bound one by one. */
    if (cat_(dst, sizeof dst, p->root, "/dev") != 0 || mkdir(dst, 0755) != 0)
        child_fail_(p, ST_DEV);
    for (size_t i = 0; i < sizeof devs_ / sizeof *devs_; i++) {
        char src[32], d[PATH_MAX];
        cat_(src, sizeof src, "/dev/", devs_[i]);
        if (cat_(d, sizeof d, dst, src + 4) != 0)
            child_fail_(p, ST_DEV);
        int fd = open(d, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
            child_fail_(p, ST_DEV);
        close(fd);
        if (mount(src, d, NULL, MS_BIND, NULL) != 0)
            child_fail_(p, ST_DEV);
    }
    static const char *const links[][2] = {{"/dev/fd", "/proc/self/fd"}, {"/dev/stdin", "/proc/self/fd/0"},
                                           {"/dev/stdout", "/proc/self/fd/1"}, {"/dev/stderr", "/proc/self/fd/2"}};
    for (int i = 0; i < 4; i++)
        if (cat_(dst, sizeof dst, p->root, links[i][0]) != 0 || symlink(links[i][1], dst) != 0)
            child_fail_(p, ST_DEV);
    /* /proc: a fresh one shows only this pid namespace. The kernel may refuse
     * it (a container that masks parts of the host's /proc); then there is
     * no /proc, which Python and compiled programs do without. */
    if (p->feat & F_PIDNS) {
        if (cat_(dst, sizeof dst, p->root, "/proc") != 0 || mkdir(dst, 0555) != 0)
            child_fail_(p, ST_DEV);
        if (mount("proc", dst, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0 && p->probe) {
            int rec[2] = {ST_NOTE, 1};
            ssize_t w = write(p->fd_status, rec, sizeof rec);
            (void)w;
        }
    }
    if (cat_(dst, sizeof dst, p->root, "/tmp") != 0 || mkdir(dst, 01777) != 0 ||
        mount("tmpfs", dst, "tmpfs", MS_NOSUID | MS_NODEV, p->tmp_opts) != 0)
        child_fail_(p, ST_TMP);
    if (cat_(dst, sizeof dst, p->root, SBX_INSIDE_WORK) != 0 || mkdir(dst, 0755) != 0 ||
        bind_(p->work, dst, MS_NOSUID | MS_NODEV | (p->work_ro ? MS_RDONLY : 0)) != 0)
        child_fail_(p, ST_WORK);
    if (chdir(p->root) != 0 || syscall(SYS_pivot_root, ".", ".") != 0 || umount2(".", MNT_DETACH) != 0 ||
        chdir("/") != 0)
        child_fail_(p, ST_PIVOT);
    if (mount(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) != 0)
        child_fail_(p, ST_PIVOT);
}

static void landlock_(const plan *p)
{
    struct landlock_ruleset_attr attr = {.handled_access_fs = p->ll_handled};
    int rs = (int)syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0);
    if (rs < 0)
        child_fail_(p, ST_LANDLOCK);
    for (int i = 0; i < p->nll; i++) {
        int fd = open(p->ll_path[i], O_PATH | O_CLOEXEC);
        if (fd < 0)
            continue; /* absent on this machine */
        struct stat st;
        uint64_t acc = p->ll_access[i] & p->ll_handled;
        if (fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode))
            acc &= LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_READ_FILE |
                   LANDLOCK_ACCESS_FS_TRUNCATE | LANDLOCK_ACCESS_FS_IOCTL_DEV;
        struct landlock_path_beneath_attr pb = {.allowed_access = acc, .parent_fd = fd};
        if (syscall(SYS_landlock_add_rule, rs, LANDLOCK_RULE_PATH_BENEATH, &pb, 0) != 0)
            child_fail_(p, ST_LANDLOCK);
        close(fd);
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        child_fail_(p, ST_NNP);
    if (syscall(SYS_landlock_restrict_self, rs, 0) != 0)
        child_fail_(p, ST_LANDLOCK);
    close(rs);
}

static int write_str_(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = (ssize_t)strlen(s), w = write(fd, s, (size_t)n);
    close(fd);
    return w == n ? 0 : -1;
}

static unsigned long ns_flags_(unsigned feat)
{
    unsigned long f = 0;
    if (feat & F_USERNS) f |= CLONE_NEWUSER;
    if (feat & F_MOUNTNS) f |= CLONE_NEWNS;
    if (feat & F_PIDNS) f |= CLONE_NEWPID;
    if (feat & F_NETNS) f |= CLONE_NEWNET;
    if (feat & F_IPCNS) f |= CLONE_NEWIPC | CLONE_NEWUTS;
    return f;
}

/* From clone to exec. Never returns. */
static __attribute__((noreturn)) void child_main_(const plan *p)
{
    if (dup2(p->fd_in, 0) < 0 || dup2(p->fd_out, 1) < 0 || dup2(p->fd_err, 2) < 0)
        child_fail_(p, ST_FDS);
    sigset_t none;
    sigemptyset(&none);
    if (sigprocmask(SIG_SETMASK, &none, NULL) != 0)
        child_fail_(p, ST_SIGNALS);
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            signal(s, SIG_DFL); /* an ignored signal would stay ignored across exec */
    if (setsid() < 0)
        child_fail_(p, ST_SETSID);
    if (p->unshare_late && unshare((int)ns_flags_(p->feat & ~F_PIDNS)) != 0)
        child_fail_(p, ST_UNSHARE);
    if (p->feat & F_USERNS) {
        /* Map our own uid and gid: the only mapping an unprivileged process may
         * write. We keep full capabilities in the new namespace until exec. */
        if (write_str_("/proc/self/setgroups", "deny") != 0 || write_str_("/proc/self/uid_map", p->uid_map) != 0 ||
            write_str_("/proc/self/gid_map", p->gid_map) != 0)
            child_fail_(p, ST_USERMAP);
    }
    if (p->feat & F_MOUNTNS)
        setup_root_(p);
    if (chdir(p->cwd) != 0)
        child_fail_(p, ST_CHDIR);
    for (int i = 0; i < p->nlim; i++)
        if (setrlimit(p->lim_res[i], &p->lim[i]) != 0)
            child_fail_(p, ST_RLIMIT);
    if (p->feat & F_UIDDROP) {
        /* Raw syscalls: libc's setresuid() would broadcast the change to the
         * parent's threads, which do not exist in this child, and wait forever. */
        if (syscall(SYS_setgroups, 0, NULL) != 0 || syscall(SYS_setresgid, p->gid, p->gid, p->gid) != 0 ||
            syscall(SYS_setresuid, p->uid, p->uid, p->uid) != 0)
            child_fail_(p, ST_SETUID);
    }
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0)
        child_fail_(p, ST_PDEATHSIG);
    /* Whatever the (threaded) parent had open: our status pipe is already
     * close-on-exec, so marking everything from 3 up is exactly right. */
    if (syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC) != 0) {
        for (int fd = 3; fd < 65536; fd++)
            fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    if (p->feat & F_LANDLOCK)
        landlock_(p);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        child_fail_(p, ST_NNP);
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, p->filter) != 0)
        child_fail_(p, ST_SECCOMP);
    if (p->probe)
        _exit(0);
    execve(p->argv[0], p->argv, p->envp);
    child_fail_(p, ST_EXEC);
}

/* clone3 with the namespaces and a pidfd; fork + unshare (no pid namespace,
 * no pidfd) where clone3 is missing. */
static int have_clone3_ = 1;

static pid_t spawn_(plan *p, int *pidfd)
{
    *pidfd = -1;
    if (__atomic_load_n(&have_clone3_, __ATOMIC_RELAXED)) {
        struct clone_args a;
        memset(&a, 0, sizeof a);
        a.flags = ns_flags_(p->feat) | CLONE_PIDFD;
        a.pidfd = (uint64_t)(uintptr_t)pidfd;
        a.exit_signal = SIGCHLD;
        long r = syscall(SYS_clone3, &a, sizeof a);
        if (r == 0)
            child_main_(p);
        if (r > 0)
            return (pid_t)r;
        if (errno != ENOSYS)
            return -1;
        __atomic_store_n(&have_clone3_, 0, __ATOMIC_RELAXED);
    }
    if (p->feat & F_PIDNS) {
        p->feat &= ~F_PIDNS;
        if (filter_get_(1, &p->filter) != KD_OK)
            return -1;
    }
    p->unshare_late = 1;
    pid_t pid = fork();
    if (pid == 0)
        child_main_(p);
    return pid;
}

/* ---- boxes and plans -------------------------------------------------------------- */

struct kd_sandbox_box {
    char top[PATH_MAX];  /* the private dir: work/ and root/ */
    char work[PATH_MAX];
    char root[PATH_MAX];
    int slot;            /* uid slot (root only), else -1 */
    uid_t uid;
    gid_t gid;
};

static pthread_mutex_t slot_mu_ = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t slot_cv_ = PTHREAD_COND_INITIALIZER;
static uint64_t slots_used_;

static int slot_take_(void)
{
    pthread_mutex_lock(&slot_mu_);
    while (slots_used_ == ~0ull)
        pthread_cond_wait(&slot_cv_, &slot_mu_);
    int s = __builtin_ctzll(~slots_used_);
    slots_used_ |= 1ull << s;
    pthread_mutex_unlock(&slot_mu_);
    return s;
}

static void slot_give_(int s)
{
    if (s < 0)
        return;
    pthread_mutex_lock(&slot_mu_);
    slots_used_ &= ~(1ull << s);
    pthread_cond_signal(&slot_cv_);
    pthread_mutex_unlock(&slot_mu_);
}

static const char *tmp_base_(const kd_sandbox_cfg *c)
{
    if (c->tmp_base && *c->tmp_base)
        return c->tmp_base;
    const char *t = getenv("TMPDIR");
    return t && *t ? t : "/tmp";
}

int kd_sandbox_box_create(const kd_sandbox_cfg *c, kd_sandbox_box **out)
{
    *out = NULL;
    kd_sandbox_box *b = calloc(1, sizeof *b);
    if (!b)
        return kd_err(KD_E_NOMEM, "sandbox box");
    b->slot = -1;
    b->uid = geteuid();
    b->gid = getegid();
    if (snprintf(b->top, sizeof b->top, "%s/kd-sbx-XXXXXX", tmp_base_(c)) >= (int)sizeof b->top) {
        free(b);
        return kd_err(KD_E_RANGE, "sandbox temp base '%s' is too long", tmp_base_(c));
    }
    if (!mkdtemp(b->top)) {
        int e = errno;
        free(b);
        return kd_err(KD_E_IO, "cannot make a sandbox dir under '%s': %s", tmp_base_(c), strerror(e));
    }
    if (geteuid() == 0) {
        b->slot = slot_take_();
        b->uid = c->run_uid - (uid_t)b->slot;
        b->gid = (gid_t)b->uid;
    }
    int st = KD_OK;
    snprintf(b->work, sizeof b->work, "%s/work", b->top);
    snprintf(b->root, sizeof b->root, "%s/root", b->top);
    /* top 0711 so the box uid can reach work/ when there is no mount namespace */
    if (chmod(b->top, 0711) != 0 || mkdir(b->work, 0700) != 0 || mkdir(b->root, 0755) != 0 ||
        (geteuid() == 0 && chown(b->work, b->uid, b->gid) != 0))
        st = kd_err(KD_E_IO, "cannot set up sandbox dir '%s': %s", b->top, strerror(errno));
    if (st != KD_OK) {
        kd_sandbox_box_free(b);
        return st;
    }
    *out = b;
    return KD_OK;
}

const char *kd_sandbox_box_dir(const kd_sandbox_box *b) { return b->work; }

int kd_sandbox_box_write(kd_sandbox_box *b, const kd_sandbox_file *f)
{
    if (!f->name || !*f->name || strchr(f->name, '/') || !strcmp(f->name, ".") || !strcmp(f->name, ".."))
        return kd_err(KD_E_USAGE, "sandbox file name '%s' must be a plain name", f->name ? f->name : "");
    char path[PATH_MAX];
    KD_TRY(kd_path_join(path, sizeof path, b->work, f->name));
    /* O_NOFOLLOW | O_NONBLOCK: a previous run may have left a link or a fifo there */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC,
                  f->executable ? 0755 : 0644);
    if (fd < 0)
        return kd_err(KD_E_IO, "cannot write sandbox file '%s': %s", path, strerror(errno));
    struct stat st;
    size_t off = 0;
    int ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    while (ok && off < f->len) {
        ssize_t w = write(fd, f->data + off, f->len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            ok = 0;
        else
            off += (size_t)w;
    }
    if (ok && geteuid() == 0 && fchown(fd, b->uid, b->gid) != 0)
        ok = 0;
    int e = errno;
    close(fd);
    if (!ok)
        return kd_err(KD_E_IO, "cannot write sandbox file '%s': %s", path, strerror(e));
    return KD_OK;
}

static int unlock_fn_(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    if (flag == FTW_D || flag == FTW_DNR)
        chmod(path, 0700);
    return 0;
}

void kd_sandbox_box_free(kd_sandbox_box *b)
{
    if (!b)
        return;
    if (b->top[0] && kd_rmtree(b->top) != KD_OK) {
        /* The program may have left folders it made unreadable (matters when not root). */
        nftw(b->top, unlock_fn_, 16, FTW_PHYS);
        kd_rmtree(b->top);
    }
    slot_give_(b->slot);
    free(b);
}

/* Read-only system folders: bound in the mount namespace, allowed by Landlock. */
static const char *const sys_paths_[] = {"/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/etc"};

static void plan_env_(plan *p, const kd_sandbox_cfg *c)
{
    int n = 0;
    const char *tmp = (p->feat & F_MOUNTNS) ? "/tmp" : p->cwd;
    snprintf(p->envbuf[n++], sizeof p->envbuf[0], "PATH=/usr/local/bin:/usr/bin:/bin");
    snprintf(p->envbuf[n++], sizeof p->envbuf[0], "HOME=%s", p->cwd);
    snprintf(p->envbuf[n++], sizeof p->envbuf[0], "TMPDIR=%s", tmp);
    snprintf(p->envbuf[n++], sizeof p->envbuf[0], "LANG=C.UTF-8");
    snprintf(p->envbuf[n++], sizeof p->envbuf[0], "LC_ALL=C.UTF-8");
    snprintf(p->envbuf[n++], sizeof p->envbuf[0], "PYTHONDONTWRITEBYTECODE=1");
    snprintf(p->envbuf[n++], sizeof p->envbuf[0], "PYTHONHASHSEED=0");
    for (int i = 0; i < KD_SANDBOX_MAX_ENV && c->env[i]; i++)
        snprintf(p->envbuf[n++], sizeof p->envbuf[0], "%s", c->env[i]);
    for (int i = 0; i < n; i++)
        p->envp[i] = p->envbuf[i];
    p->envp[n] = NULL;
}

static void plan_rlimits_(plan *p, const kd_sandbox_cfg *c, unsigned feat)
{
    int n = 0;
    rlim_t cpu = (rlim_t)ceil(c->cpu_seconds > 0 ? c->cpu_seconds : 1);
    p->lim_res[n] = RLIMIT_CPU, p->lim[n++] = (struct rlimit){cpu, cpu + 1};
    rlim_t as = c->mem_bytes ? (rlim_t)c->mem_bytes : RLIM_INFINITY;
    p->lim_res[n] = RLIMIT_AS, p->lim[n++] = (struct rlimit){as, as};
    p->lim_res[n] = RLIMIT_FSIZE, p->lim[n++] = (struct rlimit){(rlim_t)c->file_bytes, (rlim_t)c->file_bytes};
    p->lim_res[n] = RLIMIT_NOFILE, p->lim[n++] = (struct rlimit){(rlim_t)c->max_files, (rlim_t)c->max_files};
    p->lim_res[n] = RLIMIT_CORE, p->lim[n++] = (struct rlimit){0, 0};
    p->lim_res[n] = RLIMIT_MEMLOCK, p->lim[n++] = (struct rlimit){0, 0};
    /* NPROC counts the uid's tasks in the user namespace. A box uid (root) or
     * a fresh user namespace counts only this box; otherwise the caller's own
     * processes count too, so leave them room. */
    rlim_t np = (rlim_t)c->max_procs;
    if (!(feat & (F_UIDDROP | F_USERNS))) {
        int mine = 0;
        DIR *d = opendir("/proc");
        struct dirent *e;
        struct stat st;
        char path[300];
        while (d && (e = readdir(d))) {
            if (e->d_name[0] < '0' || e->d_name[0] > '9')
                continue;
            snprintf(path, sizeof path, "/proc/%s", e->d_name);
            if (stat(path, &st) == 0 && st.st_uid == getuid())
                mine++;
        }
        if (d)
            closedir(d);
        np += (rlim_t)mine + 256; /* threads of those processes count too */
    }
    p->lim_res[n] = RLIMIT_NPROC, p->lim[n++] = (struct rlimit){np, np};
    p->nlim = n;
}

static void plan_landlock_(plan *p, const kd_sandbox_cfg *c, long abi)
{
    const uint64_t R = LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR;
    uint64_t all = (LANDLOCK_ACCESS_FS_MAKE_SYM << 1) - 1;
    if (abi >= 2) all |= LANDLOCK_ACCESS_FS_REFER;
    if (abi >= 3) all |= LANDLOCK_ACCESS_FS_TRUNCATE;
    if (abi >= 5) all |= LANDLOCK_ACCESS_FS_IOCTL_DEV;
    p->ll_handled = all;
    int n = 0;
    for (size_t i = 0; i < sizeof sys_paths_ / sizeof *sys_paths_; i++) {
        snprintf(p->ll_path[n], PATH_MAX, "%s", sys_paths_[i]);
        p->ll_access[n++] = R;
    }
    for (int i = 0; i < KD_SANDBOX_MAX_RO && c->ro_paths[i]; i++) {
        snprintf(p->ll_path[n], PATH_MAX, "%s", c->ro_paths[i]);
        p->ll_access[n++] = R;
    }
    static const char *const rdev[] = {"/dev/zero", "/dev/random", "/dev/urandom"};
    for (int i = 0; i < 3; i++) {
        snprintf(p->ll_path[n], PATH_MAX, "%s", rdev[i]);
        p->ll_access[n++] = LANDLOCK_ACCESS_FS_READ_FILE;
    }
    static const char *const wdev[] = {"/dev/null", "/dev/full"};
    for (int i = 0; i < 2; i++) {
        snprintf(p->ll_path[n], PATH_MAX, "%s", wdev[i]);
        p->ll_access[n++] = LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_WRITE_FILE |
                            LANDLOCK_ACCESS_FS_TRUNCATE;
    }
    snprintf(p->ll_path[n], PATH_MAX, "%s", p->work);
    p->ll_access[n++] = p->work_ro ? R : all;
    p->nll = n;
}

/* Fill p for a run of argv in box b with layers feat. */
static int plan_make_(plan *p, const kd_sandbox_box *b, const kd_sandbox_cfg *c, unsigned feat,
                      const char *const *argv, long landlock_abi)
{
    memset(p, 0, sizeof *p);
    p->feat = feat;
    snprintf(p->root, sizeof p->root, "%s", b->root);
    snprintf(p->work, sizeof p->work, "%s", b->work);
    p->work_ro = (char)(c->work_readonly != 0);
    p->cwd = (feat & F_MOUNTNS) ? SBX_INSIDE_WORK : p->work;
    uint64_t tmp_size = c->file_bytes > (1u << 20) ? c->file_bytes : (1u << 20);
    snprintf(p->tmp_opts, sizeof p->tmp_opts, "mode=1777,size=%llu,nr_inodes=4096", (unsigned long long)tmp_size);
    snprintf(p->uid_map, sizeof p->uid_map, "%u %u 1\n", (unsigned)geteuid(), (unsigned)geteuid());
    snprintf(p->gid_map, sizeof p->gid_map, "%u %u 1\n", (unsigned)getegid(), (unsigned)getegid());
    p->uid = b->uid;
    p->gid = b->gid;
    if (feat & F_MOUNTNS) {
        const char *srcs[sizeof sys_paths_ / sizeof *sys_paths_ + KD_SANDBOX_MAX_RO];
        int ns = 0;
        for (size_t i = 0; i < sizeof sys_paths_ / sizeof *sys_paths_; i++)
            srcs[ns++] = sys_paths_[i];
        for (int i = 0; i < KD_SANDBOX_MAX_RO && c->ro_paths[i]; i++)
            srcs[ns++] = c->ro_paths[i];
        for (int i = 0; i < ns && p->nbind < SBX_MAX_BINDS; i++) {
            struct stat st;
            if (srcs[i][0] != '/' || lstat(srcs[i], &st) != 0)
                continue;
            int k = p->nbind;
            snprintf(p->bind_src[k], PATH_MAX, "%s", srcs[i]);
            if (S_ISLNK(st.st_mode)) {
                ssize_t n = readlink(srcs[i], p->bind_link[k], PATH_MAX - 1);
                if (n <= 0)
                    continue;
                p->bind_link[k][n] = 0;
            } else if (!S_ISDIR(st.st_mode)) {
                continue;
            }
            p->nbind++;
        }
    }
    if (feat & F_LANDLOCK)
        plan_landlock_(p, c, landlock_abi);
    plan_rlimits_(p, c, feat);
    KD_TRY(filter_get_(!(feat & F_PIDNS), &p->filter));
    int na = 0;
    for (; argv && argv[na]; na++) {
        if (na == SBX_MAX_ARGS)
            return kd_err(KD_E_RANGE, "sandbox: more than %d arguments", SBX_MAX_ARGS);
        p->argv[na] = (char *)argv[na];
    }
    p->argv[na] = NULL;
    plan_env_(p, c);
    return KD_OK;
}

/* ---- the probe -------------------------------------------------------------------- */

static struct {
    pthread_once_t once;
    unsigned avail;      /* layers the kernel allows */
    long landlock_abi;
    int seccomp_ok, proc_ok;
    char why[96];        /* why seccomp failed */
    char line[320];      /* kd_sandbox_isolation() */
} probe_ = {PTHREAD_ONCE_INIT};

static int fd_hi_(int fd)
{
    if (fd >= 3)
        return fd;
    int n = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    close(fd);
    return n;
}

/* One probe child with layers feat; 1 if it got to exec. *notes gets ST_NOTE data. */
static int probe_try_(kd_sandbox_box *b, unsigned feat, int *notes, char *why, size_t cap)
{
    kd_sandbox_cfg c;
    kd_sandbox_cfg_init(&c);
    plan *p = malloc(sizeof *p);
    if (!p)
        return 0;
    static const char *const argv[] = {"/bin/true", NULL};
    int ok = 0, sp[2], nul = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (plan_make_(p, b, &c, feat, argv, probe_.landlock_abi) != KD_OK || nul < 0 || pipe2(sp, O_CLOEXEC) != 0) {
        snprintf(why, cap, "%s", kd_strerror(KD_E_UNSUPPORTED));
        if (nul >= 0)
            close(nul);
        free(p);
        return 0;
    }
    p->probe = 1;
    p->fd_in = p->fd_out = p->fd_err = nul = fd_hi_(nul);
    sp[0] = fd_hi_(sp[0]), sp[1] = fd_hi_(sp[1]);
    p->fd_status = sp[1];
    int pidfd;
    pid_t pid = spawn_(p, &pidfd);
    int e = errno;
    close(sp[1]);
    close(nul);
    if (pid < 0) {
        snprintf(why, cap, "clone: %s", strerror(e));
    } else {
        int rec[2], status = 0, failed = 0;
        while (read(sp[0], rec, sizeof rec) == (ssize_t)sizeof rec) {
            if (rec[0] == ST_NOTE) {
                *notes |= rec[1];
            } else {
                failed = 1;
                snprintf(why, cap, "%s: %s", step_names_[rec[0]], strerror(rec[1]));
            }
        }
        while (waitpid(pid, &status, __WALL) < 0 && errno == EINTR)
            ;
        ok = !failed && WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (!ok && !failed)
            snprintf(why, cap, "probe child status %d", status);
    }
    if (pidfd >= 0)
        close(pidfd);
    close(sp[0]);
    free(p);
    return ok;
}

static void names_(char *buf, size_t cap, unsigned feat, uid_t uid)
{
    buf[0] = 0;
    size_t n = 0;
    static const struct { unsigned f; const char *name; } tab[] = {
        {F_USERNS, "userns"}, {F_NETNS, "netns"}, {F_MOUNTNS, "mountns"}, {F_PIDNS, "pidns"},
        {F_IPCNS, "ipcns"}, {F_LANDLOCK, "landlock"}};
    for (size_t i = 0; i < sizeof tab / sizeof *tab; i++)
        if (feat & tab[i].f)
            n += (size_t)snprintf(buf + n, n < cap ? cap - n : 0, "%s ", tab[i].name);
    n += (size_t)snprintf(buf + n, n < cap ? cap - n : 0, "seccomp rlimits");
    if (feat & F_UIDDROP)
        snprintf(buf + n, n < cap ? cap - n : 0, " uid=%u", (unsigned)uid);
    else if (!(feat & (F_MOUNTNS | F_LANDLOCK)))
        snprintf(buf + n, n < cap ? cap - n : 0, " fs=open");
}

static void probe_run_(void)
{
    char why[96] = "", fall[224] = "";
    size_t nf = 0;
#define FALL(...) (nf += (size_t)snprintf(fall + nf, nf < sizeof fall ? sizeof fall - nf : 0, __VA_ARGS__))
    int root = geteuid() == 0;
    probe_.landlock_abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    const char *knob = getenv("KD_SANDBOX_NO_CLONE3");
    if (knob && *knob == '1')
        have_clone3_ = 0; /* test the fork + unshare path (no clone3, as under Docker's default profile) */
    kd_sandbox_cfg c;
    kd_sandbox_cfg_init(&c);
    kd_sandbox_box *b = NULL;
    if (kd_sandbox_box_create(&c, &b) != KD_OK) {
        snprintf(probe_.why, sizeof probe_.why, "cannot make a probe dir: %s", kd_strerror(KD_E_IO));
        snprintf(probe_.line, sizeof probe_.line, "unavailable: %s", probe_.why);
        return;
    }
    unsigned base = root ? F_UIDDROP : 0;
    int notes = 0;
    if (!probe_try_(b, base, &notes, why, sizeof why)) {
        /* nothing to fall back to: without seccomp no run is safe */
        snprintf(probe_.why, sizeof probe_.why, "%s", why);
        snprintf(probe_.line, sizeof probe_.line, "unavailable: %s", why);
        kd_sandbox_box_free(b);
        return;
    }
    probe_.seccomp_ok = 1;
    if (root) {
        FALL("no userns: root does not need it; ");
    } else if (probe_try_(b, base | F_USERNS, &notes, why, sizeof why)) {
        base |= F_USERNS;
    } else {
        FALL("no userns (%s); ", why);
    }
    static const struct { unsigned f; const char *name, *instead; } order[] = {
        {F_MOUNTNS, "mountns", "Landlock or the uid guard files"},
        {F_PIDNS, "pidns", "seccomp guards kill() of the caller, setsid refused, group kill"},
        {F_NETNS, "netns", "seccomp kills inet sockets"},
        {F_IPCNS, "ipcns", "SysV IPC shared with the host"}};
    for (size_t i = 0; i < sizeof order / sizeof *order; i++) {
        notes = 0;
        if (order[i].f == F_PIDNS && !__atomic_load_n(&have_clone3_, __ATOMIC_RELAXED))
            continue; /* fork + unshare cannot make one; said below */
        if (probe_try_(b, base | order[i].f, &notes, why, sizeof why)) {
            base |= order[i].f;
            if (order[i].f == F_PIDNS && (base & F_MOUNTNS))
                probe_.proc_ok = !(notes & 1);
        } else {
            FALL("no %s (%s): %s; ", order[i].name, why, order[i].instead);
        }
    }
    if ((base & F_PIDNS) && (base & F_MOUNTNS) && !probe_.proc_ok)
        FALL("no /proc inside (the kernel refused a fresh proc mount); ");
    if (probe_.landlock_abi >= 1 && probe_try_(b, (base & ~F_MOUNTNS) | F_LANDLOCK, &notes, why, sizeof why))
        probe_.avail = base | F_LANDLOCK;
    else
        probe_.avail = base;
    if (!__atomic_load_n(&have_clone3_, __ATOMIC_RELAXED))
        FALL("no clone3: fork + unshare, so no pidns; ");
    if (!(probe_.avail & F_LANDLOCK))
        FALL("no landlock%s; ", probe_.landlock_abi >= 1 ? " (refused)" : "");
    if (!root && !(probe_.avail & F_MOUNTNS) && !(probe_.avail & F_LANDLOCK))
        FALL("WEAK: the program runs as the caller with the caller's file access; ");
    kd_sandbox_box_free(b);
    char words[KD_SANDBOX_ISO_MAX];
    names_(words, sizeof words, probe_.avail & ~((probe_.avail & F_MOUNTNS) ? F_LANDLOCK : 0), c.run_uid);
    if (nf > 2)
        fall[nf - 2] = 0;
    snprintf(probe_.line, sizeof probe_.line, "%s%s%s", words, nf ? " | " : "", fall);
#undef FALL
}

static void probe_once_(void) { pthread_once(&probe_.once, probe_run_); }

const char *kd_sandbox_isolation(void)
{
    probe_once_();
    return probe_.line;
}

/* The layers for a run under c. */
static unsigned layers_(const kd_sandbox_cfg *c)
{
    unsigned f = probe_.avail;
    if (!c->allow_userns) f &= ~F_USERNS;
    if (!(f & F_USERNS) && geteuid() != 0) f &= ~(F_MOUNTNS | F_PIDNS | F_NETNS | F_IPCNS);
    if (!c->allow_mountns) f &= ~F_MOUNTNS;
    if (!c->allow_pidns) f &= ~F_PIDNS;
    if (!c->allow_netns) f &= ~F_NETNS;
    if (!c->allow_ipcns) f &= ~F_IPCNS;
    if (!c->allow_landlock || (f & F_MOUNTNS)) f &= ~F_LANDLOCK;
    return f;
}

/* ---- a run ------------------------------------------------------------------------ */

typedef struct capture {
    char *buf;
    size_t len, cap, limit;
    int fd, over;
} capture;

/* Read what is there; 0 at EOF (fd closed), 1 otherwise. */
static int capture_read_(capture *cp)
{
    char tmp[65536];
    ssize_t n = read(cp->fd, tmp, sizeof tmp);
    if (n < 0)
        return errno == EINTR || errno == EAGAIN ? 1 : 0;
    if (n == 0)
        return 0;
    size_t keep = (size_t)n;
    if (cp->len + keep > cp->limit) {
        keep = cp->limit - cp->len;
        cp->over = 1;
    }
    if (cp->len + keep + 1 > cp->cap) {
        size_t nc = cp->cap ? cp->cap : 4096;
        while (nc < cp->len + keep + 1)
            nc *= 2;
        char *nb = realloc(cp->buf, nc);
        if (!nb) {
            cp->over = 1;
            return 1;
        }
        cp->buf = nb, cp->cap = nc;
    }
    memcpy(cp->buf + cp->len, tmp, keep);
    cp->len += keep;
    return 1;
}

static void kill_all_(pid_t pid)
{
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
}

static void classify_(const kd_sandbox_cfg *c, kd_sandbox_result *r)
{
    int ok = r->exited && r->exit_code == 0;
    const char *err = r->err ? r->err : "";
    if (r->signal == SIGSYS)
        r->seccomp_killed = 1;
    if (r->signal == SIGXCPU || (r->signal == SIGKILL && !r->timed_out && !r->output_truncated &&
                                 r->cpu_seconds >= ceil(c->cpu_seconds) - 0.05))
        r->cpu_exceeded = 1;
    if (!ok && (r->signal == SIGXFSZ || strstr(err, "File too large")))
        r->file_exceeded = 1;
    if (!ok && (strstr(err, "MemoryError") || strstr(err, "bad_alloc") || strstr(err, "Cannot allocate memory") ||
                strstr(err, "out of memory") ||
                (c->mem_bytes && (double)r->max_rss_kb * 1024.0 >= 0.8 * (double)c->mem_bytes)))
        r->mem_exceeded = 1;
    const char *why = "ok";
    if (r->seccomp_killed) why = "sandbox_violation";
    else if (r->output_truncated) why = "output_limit";
    else if (r->timed_out || r->cpu_exceeded) why = "timeout";
    else if (r->mem_exceeded) why = "memory_limit";
    else if (r->file_exceeded) why = "file_limit";
    else if (!ok) why = "runtime_error";
    snprintf(r->reason, sizeof r->reason, "%s", why);
}

int kd_sandbox_box_run(kd_sandbox_box *b, const kd_sandbox_cfg *c, const char *const *argv, const char *in,
                       size_t in_len, kd_sandbox_result *r)
{
    memset(r, 0, sizeof *r);
    if (!argv || !argv[0] || (argv[0][0] != '/' && strncmp(argv[0], "./", 2) != 0))
        return kd_err(KD_E_USAGE, "sandbox: argv[0] must be an absolute path or start with ./");
    probe_once_();
    if (!probe_.seccomp_ok)
        return kd_err(KD_E_UNSUPPORTED, "the code sandbox cannot run here: %s", probe_.why);
    unsigned feat = layers_(c);
    if (geteuid() != 0)
        feat &= ~F_UIDDROP;
    if (!(feat & F_PIDNS) || !__atomic_load_n(&have_clone3_, __ATOMIC_RELAXED))
        prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); /* orphans come back to us for reaping */
    plan *p = malloc(sizeof *p);
    if (!p)
        return kd_err(KD_E_NOMEM, "sandbox plan");
    int st = plan_make_(p, b, c, feat, argv, probe_.landlock_abi);
    if (st != KD_OK) {
        free(p);
        return st;
    }
    int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1}, pst[2] = {-1, -1};
    if (pipe2(pin, O_CLOEXEC) || pipe2(pout, O_CLOEXEC) || pipe2(perr, O_CLOEXEC) || pipe2(pst, O_CLOEXEC)) {
        st = kd_err(KD_E_IO, "sandbox pipes: %s", strerror(errno));
        for (int i = 0; i < 2; i++) {
            if (pin[i] >= 0) close(pin[i]);
            if (pout[i] >= 0) close(pout[i]);
            if (perr[i] >= 0) close(perr[i]);
            if (pst[i] >= 0) close(pst[i]);
        }
        free(p);
        return st;
    }
    int *fds[] = {&pin[0], &pin[1], &pout[0], &pout[1], &perr[0], &perr[1], &pst[0], &pst[1]};
    for (int i = 0; i < 8; i++)
        *fds[i] = fd_hi_(*fds[i]);
    p->fd_in = pin[0], p->fd_out = pout[1], p->fd_err = perr[1], p->fd_status = pst[1];

    double t0 = now_();
    int pidfd;
    pid_t pid = spawn_(p, &pidfd);
    int spawn_errno = errno;
    close(pin[0]), close(pout[1]), close(perr[1]), close(pst[1]);
    if (pid < 0) {
        close(pin[1]), close(pout[0]), close(perr[0]), close(pst[0]);
        free(p);
        return kd_err(KD_E_IO, "sandbox clone: %s", strerror(spawn_errno));
    }
    r->pid = pid;
    feat = p->feat; /* spawn_ may have dropped the pid namespace */
    names_(r->isolation, sizeof r->isolation, feat, b->uid);
    free(p);

    /* Did the child reach exec? The status pipe closes on exec. */
    int rec[2];
    ssize_t got;
    while ((got = read(pst[0], rec, sizeof rec)) < 0 && errno == EINTR)
        ;
    close(pst[0]);
    if (got == (ssize_t)sizeof rec && rec[0] != ST_EXEC) {
        kill_all_(pid);
        waitpid(pid, NULL, __WALL);
        if (pidfd >= 0) close(pidfd);
        close(pin[1]), close(pout[0]), close(perr[0]);
        int step = rec[0] > 0 && rec[0] <= ST_NOTE ? rec[0] : 0;
        return kd_err(KD_E_UNSUPPORTED, "sandbox setup failed at %s: %s", step_names_[step], strerror(rec[1]));
    }
    int exec_failed = got == (ssize_t)sizeof rec ? rec[1] : 0;

    /* Feed stdin, capture stdout/stderr, watch the clock. SIGPIPE is blocked
     * on this thread while writing to a program that may not read. */
    sigset_t pipe_set, old_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
    fcntl(pin[1], F_SETFL, O_NONBLOCK);
    size_t in_off = 0;
    if (in_len == 0 || exec_failed) {
        close(pin[1]);
        pin[1] = -1;
    }
    capture out = {.fd = pout[0], .limit = c->out_bytes}, err = {.fd = perr[0], .limit = c->out_bytes};
    double deadline = t0 + (c->wall_seconds > 0 ? c->wall_seconds : 1e9), drain_until = 0;
    int reaped = 0, status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    for (;;) {
        double t = now_();
        if (!reaped && t >= deadline) {
            r->timed_out = 1;
            kill_all_(pid);
            deadline = 1e300;
        }
        if (reaped && out.fd < 0 && err.fd < 0)
            break;
        if (reaped && t >= drain_until)
            break;
        struct pollfd pf[4];
        int np = 0, i_in = -1, i_out = -1, i_err = -1, i_pid = -1;
        if (pin[1] >= 0) pf[i_in = np++] = (struct pollfd){pin[1], POLLOUT, 0};
        if (out.fd >= 0) pf[i_out = np++] = (struct pollfd){out.fd, POLLIN, 0};
        if (err.fd >= 0) pf[i_err = np++] = (struct pollfd){err.fd, POLLIN, 0};
        if (!reaped && pidfd >= 0) pf[i_pid = np++] = (struct pollfd){pidfd, POLLIN, 0};
        double until = reaped ? drain_until : deadline;
        int ms = (int)fmin(1000.0, fmax(0.0, (until - t) * 1000.0) + 1);
        if (!reaped && pidfd < 0 && ms > 10)
            ms = 10;
        int n = poll(pf, (nfds_t)np, ms);
        if (n < 0 && errno != EINTR)
            break;
        if (n > 0 && i_in >= 0 && pf[i_in].revents) {
            if (pf[i_in].revents & POLLOUT) {
                ssize_t w = write(pin[1], in + in_off, in_len - in_off > 65536 ? 65536 : in_len - in_off);
                if (w > 0)
                    in_off += (size_t)w;
                if ((w < 0 && errno != EAGAIN && errno != EINTR) || in_off == in_len) {
                    close(pin[1]);
                    pin[1] = -1;
                }
            } else {
                close(pin[1]);
                pin[1] = -1;
            }
        }
        capture *cps[2] = {&out, &err};
        int idx[2] = {i_out, i_err};
        for (int k = 0; k < 2; k++) {
            if (n > 0 && idx[k] >= 0 && pf[idx[k]].revents) {
                if (!capture_read_(cps[k])) {
                    close(cps[k]->fd);
                    cps[k]->fd = -1;
                }
                if (cps[k]->over && !r->output_truncated) {
                    r->output_truncated = 1;
                    if (!reaped)
                        kill_all_(pid);
                }
            }
        }
        int exited = 0;
        if (!reaped && pidfd >= 0) {
            exited = i_pid >= 0 && n > 0 && pf[i_pid].revents;
        } else if (!reaped) {
            siginfo_t si;
            si.si_pid = 0;
            exited = waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT | __WALL) == 0 && si.si_pid == pid;
        }
        if (exited) {
            /* The leader is a zombie and still holds its pid, so the group id
             * cannot have been recycled: kill what is left of the group (no
             * pid namespace; with one the kernel has emptied it already). */
            if (!(feat & F_PIDNS))
                kill(-pid, SIGKILL);
            while (wait4(pid, &status, __WALL, &ru) < 0 && errno == EINTR)
                ;
            reaped = 1;
            r->wall_seconds = now_() - t0;
            drain_until = now_() + 0.5;
        }
    }
    if (!reaped) {
        kill_all_(pid);
        wait4(pid, &status, __WALL, &ru);
        r->wall_seconds = now_() - t0;
    }
    if (pin[1] >= 0) close(pin[1]);
    if (out.fd >= 0) close(out.fd);
    if (err.fd >= 0) close(err.fd);
    if (pidfd >= 0) close(pidfd);
    /* Clear a SIGPIPE our writes raised, then restore the mask. */
    struct timespec zero = {0, 0};
    while (sigtimedwait(&pipe_set, NULL, &zero) > 0)
        ;
    pthread_sigmask(SIG_SETMASK, &old_set, NULL);

    /* No pid namespace: the group's orphans come back to us (we are their
     * subreaper) and were killed with the leader; reap them. No more kills
     * here: the group id may be free for reuse once the leader is reaped. */
    if (!(feat & F_PIDNS)) {
        for (int tries = 0; tries < 2000; tries++) {
            pid_t w = waitpid(-pid, NULL, WNOHANG | __WALL);
            if (w < 0 && errno == ECHILD)
                break;
            if (w <= 0)
                usleep(1000);
        }
    }

    r->out = out.buf ? out.buf : calloc(1, 1);
    r->err = err.buf ? err.buf : calloc(1, 1);
    if (!r->out || !r->err) {
        kd_sandbox_result_release(r);
        return kd_err(KD_E_NOMEM, "sandbox output");
    }
    r->out[out.len] = 0, r->out_len = out.len;
    r->err[err.len] = 0, r->err_len = err.len;
    if (exec_failed) {
        /* The program itself could not start (a missing interpreter): report
         * it like a shell would, as exit 127 with the reason on stderr. */
        free(r->err);
        r->err = NULL;
        char msg[PATH_MAX + 64];
        int m = snprintf(msg, sizeof msg, "sandbox: cannot exec '%s': %s\n", argv[0], strerror(exec_failed));
        r->err = strdup(msg);
        r->err_len = r->err ? (size_t)m : 0;
    }
    if (WIFEXITED(status)) {
        r->exited = 1;
        r->exit_code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        r->signal = WTERMSIG(status);
    }
    r->cpu_seconds = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
                     ru.ru_stime.tv_usec * 1e-6;
    r->max_rss_kb = ru.ru_maxrss;
    classify_(c, r);
    return KD_OK;
}

int kd_sandbox_run(const kd_sandbox_cfg *c, const char *const *argv, const kd_sandbox_file *files, int nfiles,
                   const char *in, size_t in_len, kd_sandbox_result *r)
{
    memset(r, 0, sizeof *r);
    kd_sandbox_box *b;
    KD_TRY(kd_sandbox_box_create(c, &b));
    int st = KD_OK;
    for (int i = 0; st == KD_OK && i < nfiles; i++)
        st = kd_sandbox_box_write(b, &files[i]);
    if (st == KD_OK)
        st = kd_sandbox_box_run(b, c, argv, in, in_len, r);
    kd_sandbox_box_free(b);
    return st;
}
