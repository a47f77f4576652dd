// Pooling window arithmetic shared by the CPU and CUDA pooling kernels.
#pragma once

#include <cstdint>

#include "kernels/common/hostdev.h"

namespace rz {

// One output position's window along one axis, PyTorch avg_pool2d style:
// [start, end) clipped to the input; pool = the unclipped extent, capped at
// in + p (what count_include_pad divides by).
struct PoolWindow1d {
  int64_t start, end, pool;
};

RZ_HD PoolWindow1d pool_window1d(int64_t o, int64_t k, int64_t s, int64_t p, int64_t in) {
  const int64_t st = o * s - p;
  const int64_t en = st + k < in + p ? st + k : in + p;
  return {st > 0 ? st : 0, en < in ? en : in, en - st};
}

// The number an average-pool window divides by.
RZ_HD int64_t pool_window_count(const PoolWindow1d& wh, const PoolWindow1d& ww,
                                bool count_include_pad) {
  return count_include_pad ? wh.pool * ww.pool : (wh.end - wh.start) * (ww.end - ww.start);
}

}  // namespace rz
