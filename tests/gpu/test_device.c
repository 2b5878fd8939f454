/* test_device.c (gpu) - the CUDA build sees a device and runs a kernel that
 * agrees with the CPU. Runs on the GPU machine only (label gpu). */
#include <stdio.h>

#include "../unit/test.h"
#include "core/device.h"

TEST(device_visible)
{
    char info[1024];
    CHECK(kd_cuda_built());
    CHECK(kd_cuda_device_count() > 0);
    kd_device_describe(info, sizeof info);
    printf("%s\n", info);
    CHECK_HAS(info, "cuda:0");
}

TEST(selfcheck) { CHECK_OK(kd_cuda_selfcheck()); }

int main(void)
{
    RUN(device_visible);
    RUN(selfcheck);
    return test_summary();
}
