/* cuda_probe.c - visible CUDA devices (cuda_probe.h). */
#include "cuda_probe.h"

#include <stdio.h>

#include <cuda_runtime_api.h>

int cuda_probe_devices(char *why, size_t whylen) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n <= 0) {
        if (why && whylen)
            snprintf(why, whylen, "no CUDA device is visible (cudaGetDeviceCount: %s)",
                     e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return 0;
    }
    return n;
}
