// Shared per-element math compiles for both backends: the CPU twins call these
// functions from ordinary C++, the CUDA kernels from device code, so the CPU
// tests exercise exactly the arithmetic the GPU runs.
#pragma once

#if defined(__CUDACC__)
#define RZ_HD __host__ __device__ __forceinline__
#else
#define RZ_HD inline
#endif
