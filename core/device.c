/* device.c - the CPU-only build's answers for device.h; the CUDA build's
 * versions live in core/cuda/device.cu. */
#include "device.h"
#include "status.h"

#include <stdio.h>

#ifndef KD_HAVE_CUDA
int kd_cuda_built(void) { return 0; }
int kd_cuda_device_count(void) { return 0; }
void kd_device_describe(char *buf, size_t cap)
{
    snprintf(buf, cap, "CUDA backend: not built in (CPU reference only)");
}
int kd_cuda_selfcheck(void)
{
    return kd_err(KD_E_CUDA, "this build has no CUDA backend: rebuild with -DDISTILL_CUDA=ON");
}
#endif
