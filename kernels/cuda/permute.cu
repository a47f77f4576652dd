// One thread per output element (grid-stride): decompose the output index
// into output coordinates and gather from the source offset those coordinates
// name. Reads are strided for layout changes (a v1 kernel: a shared-memory
// tiled transpose would coalesce them); used for weight-layout conversions and
// NCHW <-> NHWC at model boundaries, not inside the network.
#include "kernels/cuda/permute.cuh"

#include "kernels/cuda/common.cuh"

namespace rz {

namespace {
// Output dimensions and, for each output dimension, the stride of the source
// dimension it reads (passed by value to the kernel).
struct PermuteMap {
  int64_t out_dims[4];
  int64_t src_strides[4];
};
}  // namespace

template <typename T>
cudaError_t permute4_cuda(const T* src, T* dst, const std::array<int64_t, 4>& dims,
                          const std::array<int, 4>& perm, cudaStream_t stream) {
  bool seen[4] = {false, false, false, false};
  for (int p : perm) {
    if (p < 0 || p > 3 || seen[p]) return cudaErrorInvalidValue;
    seen[p] = true;
  }
  int64_t stride[4];
  stride[3] = 1;
  for (int d = 2; d >= 0; --d) stride[d] = stride[d + 1] * dims[static_cast<size_t>(d + 1)];
  PermuteMap m{};
  int64_t n = 1;
  for (int d = 0; d < 4; ++d) {
    const int from = perm[static_cast<size_t>(d)];
    m.out_dims[d] = dims[static_cast<size_t>(from)];
    m.src_strides[d] = stride[from];
    n *= m.out_dims[d];
  }
  if (n > 0 && (src == nullptr || dst == nullptr)) return cudaErrorInvalidValue;
  return cuda_common::launch_map(n, stream, [=] __device__(int64_t o) {
    int64_t rem = o, off = 0;
    for (int d = 3; d >= 0; --d) {
      const int64_t c = rem % m.out_dims[d];
      rem /= m.out_dims[d];
      off += c * m.src_strides[d];
    }
    dst[o] = src[off];
  });
}

template cudaError_t permute4_cuda<float>(const float*, float*, const std::array<int64_t, 4>&,
                                          const std::array<int, 4>&, cudaStream_t);
template cudaError_t permute4_cuda<bf16>(const bf16*, bf16*, const std::array<int64_t, 4>&,
                                         const std::array<int, 4>&, cudaStream_t);

}  // namespace rz
