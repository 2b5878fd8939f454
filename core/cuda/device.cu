/* device.cu - CUDA device queries and the backend self-check. See core/device.h.
 * Layout: kernels, then launchers (STYLE.md). */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "core/device.h"
#include "core/status.h"
}
#include "core/cuda/cutry.h"

/* y[i] = a * x[i] + y[i]: the smallest kernel that proves the build runs here. */
__global__ static void saxpy_kernel(int n, float a, const float *x, float *y)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] = a * x[i] + y[i];
}


extern "C" int kd_cuda_built(void) { return 1; }

extern "C" int kd_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* no driver or no device: not an error here */
        return 0;
    }
    return n;
}

extern "C" void kd_device_describe(char *buf, size_t cap)
{
    int n = kd_cuda_device_count(), rt = 0, drv = 0;
    cudaRuntimeGetVersion(&rt);
    cudaDriverGetVersion(&drv);
    size_t used = (size_t)snprintf(buf, cap, "CUDA backend: built for sm_%s, runtime %d.%d, driver %d.%d, %d device(s)",
                                   KD_CUDA_ARCH, rt / 1000, (rt % 1000) / 10, drv / 1000, (drv % 1000) / 10, n);
    for (int d = 0; d < n && used < cap; d++) {
        cudaDeviceProp p;
        if (cudaGetDeviceProperties(&p, d) != cudaSuccess)
            continue;
        used += (size_t)snprintf(buf + used, cap - used, "\n  cuda:%d %s, %.1f GiB, sm_%d%d, %d SMs", d, p.name,
                                 (double)p.totalGlobalMem / (1 << 30), p.major, p.minor, p.multiProcessorCount);
    }
}

extern "C" int kd_cuda_selfcheck(void)
{
    enum { N = 1 << 20 };
    if (kd_cuda_device_count() == 0)
        return kd_err(KD_E_CUDA, "no CUDA device is visible");
    float *hx = (float *)malloc(N * sizeof(float)), *hy = (float *)malloc(N * sizeof(float));
    float *dx = NULL, *dy = NULL;
    if (!hx || !hy) {
        free(hx);
        free(hy);
        return kd_err(KD_E_NOMEM, "selfcheck buffers");
    }
    for (int i = 0; i < N; i++) {
        hx[i] = (float)(i % 97) * 0.25f;
        hy[i] = (float)(i % 13);
    }
    int st = KD_OK;
    cudaError_t e = cudaMalloc(&dx, N * sizeof(float));
    if (e == cudaSuccess) e = cudaMalloc(&dy, N * sizeof(float));
    if (e == cudaSuccess) e = cudaMemcpy(dx, hx, N * sizeof(float), cudaMemcpyHostToDevice);
    if (e == cudaSuccess) e = cudaMemcpy(dy, hy, N * sizeof(float), cudaMemcpyHostToDevice);
    if (e == cudaSuccess) {
        saxpy_kernel<<<(N + 255) / 256, 256>>>(N, 3.0f, dx, dy); /* 256 threads: any size works here */
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) e = cudaMemcpy(hy, dy, N * sizeof(float), cudaMemcpyDeviceToHost);
    if (e != cudaSuccess)
        st = kd_err(KD_E_CUDA, "selfcheck: %s", cudaGetErrorString(e));
    for (int i = 0; st == KD_OK && i < N; i++) {
        float want = 3.0f * ((float)(i % 97) * 0.25f) + (float)(i % 13);
        if (hy[i] != want)
            st = kd_err(KD_E_CUDA, "selfcheck: y[%d] = %g, CPU says %g", i, hy[i], want);
    }
    cudaFree(dx);
    cudaFree(dy);
    free(hx);
    free(hy);
    return st;
}
