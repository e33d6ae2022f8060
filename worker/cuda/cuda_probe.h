/* cuda_probe.h - is there a GPU this process can use? (CUDA runtime only; no
 * context is created beyond what cudaGetDeviceCount does.) */
#ifndef KVTIER_CUDA_PROBE_H
#define KVTIER_CUDA_PROBE_H

#include <stddef.h>

/* Number of visible CUDA devices; 0 with the runtime's reason in why ("no
 * CUDA device is visible (cudaGetDeviceCount: no CUDA-capable device is
 * detected)") when there is none or the driver is missing. */
int cuda_probe_devices(char *why, size_t whylen);

#endif
