/* runtime.h - the settings every command shares: seed, device, threads,
 * logging. Each stage's configuration embeds one as its `runtime:` section;
 * on its own it is the schema "runtime" of `distill config`.
 *
 * YAML (configs/runtime.yaml documents every key):
 *     runtime:
 *       seed: 1234
 *       device: auto        # auto | cpu | cuda
 *       threads: 0          # CPU threads; 0 = all cores
 *       log_level: info     # error | warning | info | debug
 *       progress_seconds: 10
 */
#ifndef KD_RUNTIME_H
#define KD_RUNTIME_H

#include <stdint.h>

#include "config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { KD_DEVICE_AUTO = 0, KD_DEVICE_CPU, KD_DEVICE_CUDA } kd_device_kind;

typedef struct kd_runtime_config {
    int64_t seed;
    int device;              /* kd_device_kind */
    int64_t threads;         /* 0 = all cores */
    int log_level;           /* kd_log_level */
    double progress_seconds; /* plain progress lines when not on a TTY */
} kd_runtime_config;

/* The fields, for embedding as a section: KD_CFG_SECTION(S, runtime, kd_runtime_fields, "...") */
extern const kd_cfg_field kd_runtime_fields[];

/* A config that is only { runtime: ... }, the schema `distill config` checks by default. */
typedef struct kd_runtime_only {
    kd_runtime_config runtime;
} kd_runtime_only;
extern const kd_cfg_schema kd_runtime_schema;

/* Apply the settings to this process: log level, progress interval, thread
 * count (this process's OpenMP threads, and so OpenBLAS's, and OMP_NUM_THREADS
 * for its children; unless the environment already sets OMP_NUM_THREADS),
 * and resolve `auto` to cuda or cpu. Errors: KD_E_CUDA when device is cuda and
 * the build or the machine has none. */
int kd_runtime_apply(kd_runtime_config *rt);

/* The kernels OpenBLAS chose ("SkylakeX", "Haswell", "Prescott", ...). */
const char *kd_blas_core(void);
/* When OpenBLAS chose kernels older than this CPU supports (a CPU model it
 * does not know falls back to Prescott), the OPENBLAS_CORETYPE to run with
 * instead: "SkylakeX" (AVX-512) or "Haswell" (AVX2, FMA); else NULL. Only
 * takes effect in a process started with it set (core/cpu/blas.c). */
const char *kd_blas_better_core(void);

/* Find a configuration schema by name ("runtime", ...). NULL if unknown.
 * `names` receives a space-separated list of known schemas when not NULL. */
const kd_cfg_schema *kd_schema_find(const char *name, const char **names);

#ifdef __cplusplus
}
#endif
#endif
