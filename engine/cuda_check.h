// Status checks for CUDA runtime calls: every call is checked, and a failure
// throws rz::Error with the expression, the CUDA error string and file:line.
#pragma once

#if defined(RZ_HAVE_CUDA)
#include <cuda_runtime.h>

#include "engine/error.h"

#define RZ_CUDA_CHECK(expr)                                                             \
  do {                                                                                  \
    const cudaError_t rz_status_ = (expr);                                              \
    if (rz_status_ != cudaSuccess)                                                      \
      RZ_THROW("CUDA call failed: " #expr ": ", cudaGetErrorName(rz_status_), " (",     \
               cudaGetErrorString(rz_status_), ")");                                    \
  } while (0)
#endif
