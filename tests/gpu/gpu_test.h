// Shared pieces of the GPU tests (doctest suite "gpu", ctest label "gpu").
// Without a usable CUDA device each test prints one line and returns.
#pragma once

#include <doctest/doctest.h>

#include <cstdio>

#include "engine/device.h"

#define RZ_SKIP_WITHOUT_GPU()                                                          \
  do {                                                                                 \
    if (::rz::cuda_device_count() == 0) {                                              \
      std::printf("[gpu] skipped '%s': no CUDA device (or a build without CUDA)\n",    \
                  doctest::getContextOptions()->currentTest->m_name);                  \
      CHECK(::rz::cuda_device_count() == 0);                                           \
      return;                                                                          \
    }                                                                                  \
  } while (0)
