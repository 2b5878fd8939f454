/* graph.cu - CUDA graphs and pinned buffers, for steps replayed without their
 * launch costs (the teacher's decode step, teacher/cuda.c). See cuops.h. */
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "core/cuda/cuops.h"
#include "core/status.h"
}
#include "core/cuda/cutry.h"

extern "C" int kd_cu_host_alloc(void **p, size_t bytes)
{
    *p = NULL;
    CUDA_TRY(cudaMallocHost(p, bytes ? bytes : 16));
    return KD_OK;
}

extern "C" void kd_cu_host_free(void *p)
{
    if (p)
        cudaFreeHost(p);
}

extern "C" int kd_cu_h2d_async(void *dst, const void *src, size_t bytes, kd_cu *cu)
{
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, (cudaStream_t)cu->stream));
    return KD_OK;
}

extern "C" int kd_cu_capture_begin(kd_cu *cu)
{
    CUDA_TRY(cudaStreamBeginCapture((cudaStream_t)cu->stream, cudaStreamCaptureModeThreadLocal));
    return KD_OK;
}

extern "C" int kd_cu_capture_end(kd_cu *cu, void **exec)
{
    cudaGraph_t g = NULL;
    *exec = NULL;
    CUDA_TRY(cudaStreamEndCapture((cudaStream_t)cu->stream, &g));
    cudaGraphExec_t x = NULL;
    cudaError_t e = cudaGraphInstantiate(&x, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess)
        return kd_err(KD_E_CUDA, "cudaGraphInstantiate failed: %s", cudaGetErrorString(e));
    *exec = x;
    return KD_OK;
}

extern "C" int kd_cu_graph_launch(void *exec, kd_cu *cu)
{
    CUDA_TRY(cudaGraphLaunch((cudaGraphExec_t)exec, (cudaStream_t)cu->stream));
    return KD_OK;
}

extern "C" void kd_cu_graph_free(void *exec)
{
    if (exec)
        cudaGraphExecDestroy((cudaGraphExec_t)exec);
}
