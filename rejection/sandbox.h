/* sandbox.h - run an untrusted program (model-written code, or the compiler
 * on model-written code) so that it cannot harm the host.
 *
 * A run is one process tree started by clone3 (fork + unshare where clone3 is
 * missing) and exec'd in a fresh process group and session, with, in order of
 * strength, every layer the kernel allows:
 *
 *   namespaces  user (only when not root: it is what grants the others),
 *               mount, pid, network, ipc + uts. Probed once per process.
 *   filesystem  mount ns: pivot_root into a tmpfs holding read-only binds of
 *               /usr /etc and the /bin /lib /lib64 /sbin links (plus ro_paths),
 *               /dev/{null,zero,full,random,urandom}, a private /proc (with the
 *               pid ns), a size-limited tmpfs /tmp and the private working
 *               directory at /sandbox. Host files outside those are invisible.
 *               Without a mount ns: Landlock (ABI >= 1) allows reads under the
 *               same system folders and writes under the working directory only.
 *   uid         when root, the program runs as an unprivileged uid (65534,
 *               65533, ... one per concurrent box, so boxes cannot signal or
 *               read each other, and RLIMIT_NPROC is per box). Not root: the
 *               program runs as the caller's uid inside its user namespace,
 *               with no capabilities after exec.
 *   seccomp     a libseccomp filter, always (KD_E_UNSUPPORTED when the kernel
 *               refuses it): kills the process (SIGSYS, reason
 *               "sandbox_violation") on AF_INET/AF_INET6/AF_PACKET sockets,
 *               ptrace, process_vm_*, mount family, pivot_root, chroot,
 *               unshare, setns, namespace clone flags, kexec, reboot, modules,
 *               bpf, perf_event_open, keyctl family, io_uring, userfaultfd,
 *               kill(-1), TIOCSTI and more (see sandbox.c). clone3 answers
 *               ENOSYS (libc falls back to clone, whose flags can be checked);
 *               other socket families answer EAFNOSUPPORT. Without a pid ns it
 *               also kills kill()/pidfd_open() aimed at the calling process or
 *               its group, and refuses setsid/setpgid so the group kill
 *               reaches every descendant.
 *   rlimits     CPU, address space, processes, file size, open files, no core.
 *   always      a cleared environment, all other fds closed, PDEATHSIG, a
 *               wall-clock kill of the whole group (and pid ns), stdout and
 *               stderr captured up to out_bytes each (the run is killed past
 *               that), and the private temp dir removed afterwards.
 *
 * Process-wide effects: a run without a pid namespace makes the calling
 * process a child subreaper (PR_SET_CHILD_SUBREAPER), so the program's
 * orphans come back to be killed and reaped; other orphans of the process's
 * descendants then come back to it too. SIGPIPE is blocked on the running
 * thread while it feeds stdin (and any it raised is cleared).
 *
 * Testing knob: KD_SANDBOX_NO_CLONE3=1 in the environment before the first
 * run makes the probe behave as if clone3 were missing (fork + unshare).
 *
 * Thread safety: every function may be called from many threads at once.
 * Each run blocks its calling thread until the program is gone.
 */
#ifndef KD_REJECTION_SANDBOX_H
#define KD_REJECTION_SANDBOX_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KD_SANDBOX_MAX_RO 8   /* extra read-only host paths */
#define KD_SANDBOX_MAX_ENV 8  /* extra environment entries */
#define KD_SANDBOX_ISO_MAX 160

typedef struct kd_sandbox_cfg {
    double cpu_seconds;     /* RLIMIT_CPU of each process (SIGXCPU, then SIGKILL a second later); default 2 */
    double wall_seconds;    /* the whole run is killed after this; default 5 */
    uint64_t mem_bytes;     /* RLIMIT_AS of each process; default 512 MiB (0: unlimited) */
    uint64_t file_bytes;    /* RLIMIT_FSIZE, and the size of the private /tmp; default 16 MiB */
    uint64_t out_bytes;     /* stdout and stderr are each kept up to this; beyond it the run is killed; default 1 MiB */
    int max_procs;          /* RLIMIT_NPROC (processes and threads of the box's uid); default 32 */
    int max_files;          /* RLIMIT_NOFILE; default 64 */
    /* Layers to use where the kernel allows them (1, default) or never (0).
     * Turning them off is for tests of the fallbacks and for debugging. */
    int allow_userns, allow_mountns, allow_pidns, allow_netns, allow_ipcns, allow_landlock;
    int work_readonly;      /* the working directory is read-only for this run (scratch goes to /tmp); default 0 */
    uid_t run_uid;          /* when root: the uid of the first box (next boxes count down); default 65534 */
    const char *tmp_base;   /* where private dirs are made; NULL: $TMPDIR, else /tmp */
    const char *ro_paths[KD_SANDBOX_MAX_RO]; /* NULL-ended: more host folders to show read-only (an interpreter's prefix) */
    const char *env[KD_SANDBOX_MAX_ENV];     /* NULL-ended "NAME=value" entries added to the fixed environment */
} kd_sandbox_cfg;

/* Defaults above. */
void kd_sandbox_cfg_init(kd_sandbox_cfg *c);

typedef struct kd_sandbox_file {
    const char *name;       /* a plain file name (no '/') in the working directory */
    const char *data;
    size_t len;
    int executable;         /* mode 0755 instead of 0644 */
} kd_sandbox_file;

typedef struct kd_sandbox_result {
    int exited, exit_code;  /* exited normally, with this status */
    int signal;             /* or killed by this signal (0 if exited) */
    int timed_out;          /* the wall clock ran out */
    int cpu_exceeded;       /* RLIMIT_CPU fired */
    int mem_exceeded;       /* died of the address-space limit (MemoryError, bad_alloc, ENOMEM, or RSS at the limit) */
    int file_exceeded;      /* RLIMIT_FSIZE fired (SIGXFSZ or EFBIG) */
    int output_truncated;   /* stdout or stderr went past out_bytes; the run was killed */
    int seccomp_killed;     /* killed by SIGSYS: the filter caught a forbidden call */
    double wall_seconds, cpu_seconds;
    long max_rss_kb;
    pid_t pid;              /* the run's pid (and process group) as the host sees it; gone when the run returns */
    char *out; size_t out_len; /* malloc'd, NUL-terminated */
    char *err; size_t err_len;
    char isolation[KD_SANDBOX_ISO_MAX]; /* the layers this run got, e.g. "netns mountns pidns ipcns seccomp rlimits uid=65534" */
    /* "ok" (exit 0), "runtime_error", "timeout" (wall or CPU), "memory_limit",
     * "output_limit", "file_limit", "sandbox_violation" (seccomp). */
    char reason[48];
} kd_sandbox_result;

/* Free the buffers in r and zero it. */
void kd_sandbox_result_release(kd_sandbox_result *r);

/* A box: one private working directory (mode 0700, owned by the box's uid)
 * that several runs share, e.g. a compile and then one run per test case. */
typedef struct kd_sandbox_box kd_sandbox_box;

/* Make a box under c->tmp_base. When root it takes a uid slot, held until
 * kd_sandbox_box_free (a 65th concurrent box waits for one). *out belongs to
 * the caller. Errors: KD_E_IO (cannot make the folder), KD_E_NOMEM. */
int kd_sandbox_box_create(const kd_sandbox_cfg *c, kd_sandbox_box **out);
/* The host path of the working directory. Valid until kd_sandbox_box_free. */
const char *kd_sandbox_box_dir(const kd_sandbox_box *b);
/* Write a file into the working directory. Errors: KD_E_IO, KD_E_USAGE (a
 * name with '/' or ".."). */
int kd_sandbox_box_write(kd_sandbox_box *b, const kd_sandbox_file *f);
/* Run argv (argv[0] an absolute path, as the host sees it: the system folders
 * and ro_paths are at the same place inside; or "./name" for a program in the
 * working directory; other files relative to the working directory) with stdin fed from in[0..in_len). Fills r (release it
 * with kd_sandbox_result_release) whatever the program did: its failures are
 * reasons, not errors. Errors: KD_E_UNSUPPORTED (the kernel refused a layer
 * the probe said it allows, or seccomp), KD_E_IO (pipes, fork), KD_E_NOMEM. */
int kd_sandbox_box_run(kd_sandbox_box *b, const kd_sandbox_cfg *c, const char *const *argv, const char *in,
                       size_t in_len, kd_sandbox_result *r);
/* Remove the working directory (without following links the program left)
 * and give back the uid slot. NULL is a no-op. */
void kd_sandbox_box_free(kd_sandbox_box *b);

/* One run in a fresh box: create, write files[0..nfiles), run, free. */
int kd_sandbox_run(const kd_sandbox_cfg *c, const char *const *argv, const kd_sandbox_file *files, int nfiles,
                   const char *in, size_t in_len, kd_sandbox_result *r);

/* What this machine allows with every layer on, probed once (a few test
 * clones): the same words as kd_sandbox_result.isolation, and after " | " what
 * fell back, e.g. "... | no userns: root does not need it". Static storage. */
const char *kd_sandbox_isolation(void);

#ifdef __cplusplus
}
#endif
#endif
