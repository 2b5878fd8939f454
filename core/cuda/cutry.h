/* cutry.h - CUDA_TRY, internal to the .cu files of core/cuda: return KD_E_CUDA with the
 * failing call and CUDA's message when a runtime call fails. Needs
 * core/status.h and cuda_runtime.h included first. */
#ifndef KD_CUDA_CUTRY_H
#define KD_CUDA_CUTRY_H

#define CUDA_TRY(call)                                                                        \
    do {                                                                                      \
        cudaError_t e_ = (call);                                                              \
        if (e_ != cudaSuccess)                                                                \
            return kd_err(KD_E_CUDA, "%s failed: %s", #call, cudaGetErrorString(e_));         \
    } while (0)

#endif
