// Shared pieces of the GPU tests (doctest suite "gpu", ctest label "gpu").
// Without a usable CUDA device each test reports itself skipped (never
// passed) and returns.
#pragma once

#include <doctest/doctest.h>

#include "engine/device.h"
#include "tests/skip.h"

#define RZ_SKIP_WITHOUT_GPU()                                                   \
  do {                                                                          \
    if (::rz::cuda_device_count() == 0)                                         \
      RZ_SKIP_TEST("no CUDA device (or a build without CUDA)");                 \
  } while (0)
