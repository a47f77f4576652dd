#include "engine/cuda_graph.h"

#include <cstdio>

#include "engine/error.h"

#if defined(RZ_HAVE_CUDA)
#include <cuda_runtime.h>

#include "engine/cuda_check.h"
#include "engine/cuda_context.h"
#endif

namespace rz {

#if defined(RZ_HAVE_CUDA)

CudaGraph::~CudaGraph() { reset(); }

void CudaGraph::reset() noexcept {
  if (capturing_) {
    cudaGraph_t g = nullptr;
    cudaStreamEndCapture(cudaStreamPerThread, &g);  // abandon a capture cut short by an error
    if (g != nullptr) cudaGraphDestroy(g);
    cudaGetLastError();  // the abandoned capture's error was reported where it happened
    std::vector<DeviceBlock> released = capture_ended();
    held_.insert(held_.end(), released.begin(), released.end());
    capturing_ = false;
  }
  if (exec_ != nullptr) {
    const cudaError_t st = cudaGraphExecDestroy(exec_);
    if (st != cudaSuccess) std::fprintf(stderr, "rz: cudaGraphExecDestroy: %s\n", cudaGetErrorString(st));
    exec_ = nullptr;
  }
  if (graph_ != nullptr) {
    const cudaError_t st = cudaGraphDestroy(graph_);
    if (st != cudaSuccess) std::fprintf(stderr, "rz: cudaGraphDestroy: %s\n", cudaGetErrorString(st));
    graph_ = nullptr;
  }
  free_device_blocks(held_);  // stream-ordered after the last replay
}

void CudaGraph::begin_capture(int device) {
  RZ_CHECK(!capturing_, "CudaGraph: begin_capture while already capturing");
  reset();
  device_ = device;
  engine_cuda_context(device);  // creates the handles before capture (creation cannot be captured)
  RZ_CUDA_CHECK(cudaStreamBeginCapture(cudaStreamPerThread, cudaStreamCaptureModeThreadLocal));
  capture_began();
  capturing_ = true;
}

void CudaGraph::end_capture() {
  RZ_CHECK(capturing_, "CudaGraph: end_capture without begin_capture");
  capturing_ = false;
  held_ = capture_ended();  // before anything here can throw
  cudaGraph_t g = nullptr;
  RZ_CUDA_CHECK(cudaStreamEndCapture(cudaStreamPerThread, &g));
  graph_ = g;
  cudaGraphExec_t e = nullptr;
  // Allocations a captured op leaves unfreed are released before each relaunch.
  RZ_CUDA_CHECK(cudaGraphInstantiate(&e, g, cudaGraphInstantiateFlagAutoFreeOnLaunch));
  exec_ = e;
}

void CudaGraph::replay() {
  RZ_CHECK(exec_ != nullptr, "CudaGraph: replay before a capture was completed");
  RZ_CUDA_CHECK(cudaSetDevice(device_));
  RZ_CUDA_CHECK(cudaGraphLaunch(exec_, cudaStreamPerThread));
}

int64_t CudaGraph::node_count() const {
  if (graph_ == nullptr) return 0;
  size_t n = 0;
  RZ_CUDA_CHECK(cudaGraphGetNodes(graph_, nullptr, &n));
  return static_cast<int64_t>(n);
}

#else

CudaGraph::~CudaGraph() = default;
void CudaGraph::reset() noexcept {}
void CudaGraph::begin_capture(int) { RZ_THROW("CudaGraph: built without CUDA"); }
void CudaGraph::end_capture() { RZ_THROW("CudaGraph: built without CUDA"); }
void CudaGraph::replay() { RZ_THROW("CudaGraph: built without CUDA"); }
int64_t CudaGraph::node_count() const { return 0; }

#endif

}  // namespace rz
