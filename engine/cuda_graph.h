// CudaGraph: capture the work one host thread issues on the engine stream
// (cudaStreamPerThread, see engine_cuda_context) into a CUDA graph, then replay
// it with one launch. The captured kernels read and write the same device
// addresses on every replay, so the caller keeps the graph's inputs in tensors
// it owns (copy new data into them with copy_ before replay) and reads outputs
// from tensors that were alive during capture. Memory a captured op allocates
// and frees stream-ordered (cudaMallocAsync/cudaFreeAsync) becomes graph memory
// nodes with fixed addresses.
//
// Outputs: copy results into tensors allocated before the capture
// (y_static.copy_(model.forward(x_static))); a tensor first allocated inside
// the capture is graph memory that the next replay releases and reuses.
// Warm up first: run the captured work once eagerly so cuDNN's algorithm
// cache and the context workspace are settled (growing the workspace inside a
// capture would hand graph memory to later eager work).
//
// A tensor allocated before the capture and released during it (the previous
// step's loss, say) is not freed there: the graph keeps its memory until the
// graph is destroyed or recaptured (engine/storage.h, capture_began).
//
// Rules while capturing (CUDA enforces them; violations throw rz::Error at
// end_capture or at the offending call): no host synchronisation (item(),
// to(Device::cpu()), copies from or to host memory), no first-time cuDNN
// algorithm measurement (run the step once eagerly before capturing).
//
//   rz::CudaGraph g;
//   g.begin_capture();  ...ops...;  g.end_capture();
//   for (...) { x_static.copy_(next); g.replay(); }
//
// In a build without CUDA every method throws rz::Error.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/storage.h"

struct CUgraph_st;
struct CUgraphExec_st;

namespace rz {

class CudaGraph {
 public:
  CudaGraph() = default;
  ~CudaGraph();
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  // Starts capturing the calling thread's engine stream on `device`
  // (thread-local capture mode: other threads may keep using CUDA).
  void begin_capture(int device = 0);
  // Ends the capture and instantiates the executable graph.
  void end_capture();
  // Launches the captured work on the engine stream (asynchronous).
  void replay();
  bool ready() const { return exec_ != nullptr; }
  // Number of nodes in the captured graph (kernels, copies, memory nodes).
  int64_t node_count() const;

 private:
  int device_ = 0;
  bool capturing_ = false;
  CUgraph_st* graph_ = nullptr;
  CUgraphExec_st* exec_ = nullptr;
  std::vector<DeviceBlock> held_;  // released during the capture, freed with the graph
  void reset() noexcept;
};

}  // namespace rz
