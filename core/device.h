/* device.h - which compute devices this build and this process have.
 *
 * In a CPU-only build (DISTILL_CUDA=OFF, or no nvcc) every function here
 * reports that no CUDA device is available; nothing fails at link time.
 */
#ifndef KD_DEVICE_H
#define KD_DEVICE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 1 if the CUDA backend is compiled in. */
int kd_cuda_built(void);

/* Number of visible CUDA devices: 0 when CUDA is not built in or no driver/GPU
 * is present (that is not an error). */
int kd_cuda_device_count(void);

/* One line per device into buf: name, memory, compute capability, plus the
 * build's CUDA architecture list. Always succeeds (truncates). */
void kd_device_describe(char *buf, size_t cap);

/* Self-check of the CUDA backend: runs a small kernel on device 0 and compares
 * it with the CPU. KD_OK, or KD_E_CUDA with the failing call's message. */
int kd_cuda_selfcheck(void);

#ifdef __cplusplus
}
#endif
#endif
