/* runtime.c - the shared runtime settings and the schema registry. See runtime.h. */
#define _POSIX_C_SOURCE 200809L
#include "runtime.h"
#include "device.h"
#include "log.h"
#include "status.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

const kd_cfg_field kd_runtime_fields[] = {
    KD_CFG_INT(kd_runtime_config, seed, "1234", 0, 9.2e18,
               "base seed; every random stream derives from it (sampling per prompt and sample)"),
    KD_CFG_ENUM(kd_runtime_config, device, "auto", "auto|cpu|cuda",
                "where to compute: cuda needs a CUDA build and a GPU; auto picks cuda when both exist"),
    KD_CFG_INT(kd_runtime_config, threads, "0", 0, 4096, "CPU threads for the reference path; 0 = all cores"),
    KD_CFG_ENUM(kd_runtime_config, log_level, "info", "error|warning|info|debug",
                "messages at this level and above are printed"),
    KD_CFG_FLOAT(kd_runtime_config, progress_seconds, "10", 0.1, 86400,
                 "seconds between progress lines when stderr is not a terminal"),
    KD_CFG_END,
};

static const kd_cfg_field runtime_only_fields[] = {
    KD_CFG_SECTION(kd_runtime_only, runtime, kd_runtime_fields, "settings shared by every command"),
    KD_CFG_END,
};

const kd_cfg_schema kd_runtime_schema = {"runtime", runtime_only_fields, sizeof(kd_runtime_only)};

int kd_runtime_apply(kd_runtime_config *rt)
{
    char buf[32];
    kd_log_set_level((kd_log_level)rt->log_level);
    snprintf(buf, sizeof buf, "%g", rt->progress_seconds);
    setenv("DISTILL_PROGRESS_SECONDS", buf, 1);
    if (rt->threads > 0) {
        snprintf(buf, sizeof buf, "%lld", (long long)rt->threads);
        if (!getenv("OMP_NUM_THREADS")) {
            setenv("OMP_NUM_THREADS", buf, 0); /* for child processes */
#ifdef _OPENMP
            /* libgomp read the environment when it loaded; OpenBLAS's OpenMP build
             * follows omp_get_max_threads() on each call */
            omp_set_num_threads((int)rt->threads);
#endif
        }
    }
    if (rt->device == KD_DEVICE_AUTO)
        rt->device = kd_cuda_device_count() > 0 ? KD_DEVICE_CUDA : KD_DEVICE_CPU;
    else if (rt->device == KD_DEVICE_CUDA && kd_cuda_device_count() == 0)
        return kd_err(KD_E_CUDA, "runtime.device is cuda, but %s",
                      kd_cuda_built() ? "no CUDA device is visible" : "this build has no CUDA backend");
    return KD_OK;
}

static const kd_cfg_schema *const schemas[] = {&kd_runtime_schema};

const kd_cfg_schema *kd_schema_find(const char *name, const char **names)
{
    if (names)
        *names = "runtime";
    for (size_t i = 0; i < sizeof schemas / sizeof schemas[0]; i++)
        if (name && !strcmp(schemas[i]->name, name))
            return schemas[i];
    return NULL;
}
