#include "engine/optim.h"

#include <cmath>

#include <algorithm>
#include <map>
#include <memory>
#include <type_traits>

#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "engine/ops_cuda.h"
#include "kernels/cpu/optim.h"
#if defined(RZ_HAVE_CUDA)
#include "kernels/cuda/optim.cuh"
#include "kernels/cuda/reduce.cuh"
#endif

namespace rz {

Optimizer::Optimizer(std::vector<Tensor> params) : params_(std::move(params)) {
  for (size_t i = 0; i < params_.size(); ++i) {
    RZ_CHECK(params_[i].defined() && is_floating(params_[i].dtype()),
             "optimizer parameter ", i, " must be a floating tensor");
  }
}

void Optimizer::zero_grad() {
  for (auto& p : params_) p.zero_grad();
}

namespace {
void check_grad(const Tensor& p, const Tensor& g, size_t i) {
  RZ_CHECK(g.shape() == p.shape() && g.dtype() == p.dtype() && g.device() == p.device(),
           "gradient of parameter ", i, " is ", g.str(), " but the parameter is ", p.str());
  RZ_CHECK(p.device().is_cpu() || p.dtype() == DType::F32, "optimizer: parameter ", i, " is ",
           p.str(), "; CUDA parameters are f32 master weights");
}

// The CUDA parameters of one optimizer step that share the step-dependent
// scalars (Adam's step count, SGD's first-step flag), updated by one
// multi-tensor launch (kernels/cuda/optim.cuh).
struct CudaGroup {
  std::vector<Tensor> params, grads, state1, state2;
};

#if defined(RZ_HAVE_CUDA)
// The device-side arrays of a TensorList packed into one int64 table: params,
// grads, state1, state2 pointers, sizes and chunk offsets (6n + 1 entries).
// Fills `list` with the counts; the pointers are set by point_into().
std::vector<int64_t> pack_table(const CudaGroup& g, TensorList& list) {
  const size_t n = g.params.size();
  std::vector<int64_t> host(6 * n + 1, 0);
  auto ptr = [](const Tensor& t) {
    return t.defined() ? static_cast<int64_t>(reinterpret_cast<intptr_t>(t.raw_data())) : 0;
  };
  for (size_t i = 0; i < n; ++i) {
    host[i] = ptr(g.params[i]);
    host[n + i] = ptr(g.grads[i]);
    host[2 * n + i] = i < g.state1.size() ? ptr(g.state1[i]) : 0;
    host[3 * n + i] = i < g.state2.size() ? ptr(g.state2[i]) : 0;
    host[4 * n + i] = g.params[i].numel();
  }
  list.count = static_cast<int>(n);
  list.total_chunks = multi_tensor_chunk_offsets(&host[4 * n], list.count, &host[5 * n]);
  return host;
}

void point_into(const int64_t* d, const CudaGroup& g, TensorList& list) {
  const size_t n = g.params.size();
  list.params = reinterpret_cast<float* const*>(d);
  list.grads = reinterpret_cast<const float* const*>(d + n);
  list.state1 = g.state1.empty() ? nullptr : reinterpret_cast<float* const*>(d + 2 * n);
  list.state2 = g.state2.empty() ? nullptr : reinterpret_cast<float* const*>(d + 3 * n);
  list.sizes = d + 4 * n;
  list.chunk_offsets = d + 5 * n;
}

// Eager steps: the table uploaded with one synchronous copy; lives as long as
// the launch that reads it (its storage is freed stream-ordered).
class DeviceTensorList {
 public:
  explicit DeviceTensorList(const CudaGroup& g) {
    const std::vector<int64_t> host = pack_table(g, list_);
    buf_ = Tensor::from_vector(host, {static_cast<int64_t>(host.size())}).to(g.params.at(0).device());
    point_into(buf_.data<int64_t>(), g, list_);
  }
  const TensorList& list() const { return list_; }

 private:
  Tensor buf_;
  TensorList list_;
};

// Graph mode: the table in pinned host memory, copied to the device with an
// asynchronous (capturable) copy. The optimizer keeps it while a captured
// graph may replay that copy, and rewrites it only when no capture is running
// and the stream is idle.
struct GraphTable {
  int64_t* host = nullptr;
  size_t capacity = 0;
  Tensor dev;
  TensorList list;
  GraphTable() = default;
  GraphTable(const GraphTable&) = delete;
  GraphTable& operator=(const GraphTable&) = delete;
  ~GraphTable() {
    if (host != nullptr) cudaFreeHost(host);
  }

  const TensorList& upload(const CudaGroup& g) {
    cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    RZ_CUDA_CHECK(cudaStreamIsCapturing(cudaStreamPerThread, &cap));
    if (cap == cudaStreamCaptureStatusNone) RZ_CUDA_CHECK(cudaStreamSynchronize(cudaStreamPerThread));
    const std::vector<int64_t> table = pack_table(g, list);
    if (table.size() > capacity) {
      RZ_CHECK(cap == cudaStreamCaptureStatusNone, "optimizer graph mode: the parameter table grew during capture");
      if (host != nullptr) RZ_CUDA_CHECK(cudaFreeHost(host));
      host = nullptr;
      RZ_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&host), table.size() * sizeof(int64_t)));
      capacity = table.size();
      dev = Tensor::empty({static_cast<int64_t>(capacity)}, DType::I64, g.params.at(0).device());
    }
    std::copy(table.begin(), table.end(), host);
    RZ_CUDA_CHECK(cudaMemcpyAsync(dev.raw_data(), host, table.size() * sizeof(int64_t),
                                  cudaMemcpyHostToDevice, cudaStreamPerThread));
    point_into(dev.data<int64_t>(), g, list);
    return list;
  }
};

GraphTable& graph_table(std::shared_ptr<void>& holder) {
  if (!holder) holder = std::make_shared<GraphTable>();
  return *static_cast<GraphTable*>(holder.get());
}

// Every parameter with its gradient and states, for a graph-mode step.
CudaGroup graph_group(const std::vector<Tensor>& params, const std::vector<Tensor>* s1,
                      const std::vector<Tensor>* s2) {
  CudaGroup g;
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor grad = params[i].grad();
    RZ_CHECK(grad.defined(), "optimizer graph mode: parameter ", i, " ", params[i].str(),
             " has no gradient in this step (every parameter must get one)");
    check_grad(params[i], grad, i);
    g.params.push_back(params[i]);
    g.grads.push_back(grad);
    if (s1) g.state1.push_back((*s1)[i]);
    if (s2) g.state2.push_back((*s2)[i]);
  }
  return g;
}
#endif
}  // namespace

void Optimizer::enter_graph_mode() {
#if defined(RZ_HAVE_CUDA)
  RZ_CHECK(!params_.empty(), "optimizer graph mode: no parameters");
  const Device d = params_[0].device();
  for (size_t i = 0; i < params_.size(); ++i)
    RZ_CHECK(d.is_cuda() && params_[i].device() == d && params_[i].dtype() == DType::F32,
             "optimizer graph mode needs f32 parameters on one CUDA device; parameter ", i, " is ",
             params_[i].str());
  coeffs_dev_ = Tensor::empty({512}, DType::U8, d);  // room for either coefficient struct
  graph_mode_ = true;
#else
  RZ_THROW("optimizer graph mode: built without CUDA");
#endif
}

void Optimizer::set_graph_gate(const Tensor& scalar) {
  RZ_CHECK(graph_mode_, "set_graph_gate outside graph mode (call enter_graph_mode first)");
  if (scalar.defined())
    RZ_CHECK(scalar.numel() == 1 && scalar.dtype() == DType::F32 &&
                 scalar.device() == params_.at(0).device(),
             "optimizer graph gate must be one f32 value on ", params_.at(0).device().str(), ", got ",
             scalar.str());
  gate_ = scalar;
}

const float* Optimizer::gate_ptr() const {
  return gate_.defined() ? gate_.data<float>() : nullptr;
}

void Optimizer::upload_coeffs(const void* host, size_t bytes) {
#if defined(RZ_HAVE_CUDA)
  RZ_CHECK(graph_mode_, "stage_graph_step outside graph mode (call enter_graph_mode first)");
  RZ_CHECK(bytes <= static_cast<size_t>(coeffs_dev_.numel()), "coefficients too large");
  cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
  RZ_CUDA_CHECK(cudaStreamIsCapturing(cudaStreamPerThread, &cap));
  RZ_CHECK(cap == cudaStreamCaptureStatusNone, "stage_graph_step must not run during a CUDA graph capture");
  RZ_CUDA_CHECK(cudaMemcpyAsync(coeffs_dev_.raw_data(), host, bytes, cudaMemcpyHostToDevice, cudaStreamPerThread));
  RZ_CUDA_CHECK(cudaStreamSynchronize(cudaStreamPerThread));  // `host` may be a temporary
#else
  (void)host, (void)bytes;
  RZ_THROW("optimizer graph mode: built without CUDA");
#endif
}

Sgd::Sgd(std::vector<Tensor> params, SgdHyper hyper)
    : Optimizer(std::move(params)), hyper_(hyper), momentum_(params_.size()) {
  RZ_CHECK(hyper.lr >= 0 && hyper.momentum >= 0 && hyper.weight_decay >= 0, "sgd: lr ", hyper.lr,
           " momentum ", hyper.momentum, " weight_decay ", hyper.weight_decay);
  RZ_CHECK(!hyper.nesterov || (hyper.momentum > 0 && hyper.dampening == 0),
           "sgd: nesterov needs momentum > 0 and dampening 0");
}

void Sgd::stage_graph_step() {
  for (size_t i = 0; i < params_.size(); ++i)
    RZ_CHECK(hyper_.momentum == 0 || momentum_[i].defined(), "sgd graph mode: parameter ", i,
             " has no momentum buffer yet (run an eager step first)");
  const SgdCoeffs<float> c = make_sgd_coeffs<float>(hyper_, false);
  upload_coeffs(&c, sizeof c);
}

void Sgd::step() {
  if (graph_mode_) {
#if defined(RZ_HAVE_CUDA)
    const CudaGroup g = graph_group(params_, hyper_.momentum != 0 ? &momentum_ : nullptr, nullptr);
    for (auto& p : params_) p.bump_version();
    const TensorList& list = graph_table(graph_table_).upload(g);
    RZ_CUDA_CHECK(sgd_step_multi_dev_cuda(
        list, static_cast<const SgdCoeffs<float>*>(coeffs_dev_.raw_data()), hyper_.momentum != 0,
        gate_ptr(), op_stream()));
#endif
    return;
  }
  // CUDA parameters: one multi-tensor launch per first-step flag (normally one).
  std::map<bool, CudaGroup> groups;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    check_grad(p, g, i);
    const bool first = hyper_.momentum != 0 && !momentum_[i].defined();
    if (first) momentum_[i] = Tensor::zeros_like(p);
    p.bump_version();
    if (p.device().is_cuda()) {
      CudaGroup& grp = groups[first];
      grp.params.push_back(p);
      grp.grads.push_back(g);
      if (hyper_.momentum != 0) grp.state1.push_back(momentum_[i]);
      continue;
    }
    dispatch_float(p.dtype(), "sgd", [&](auto tag) {
      using T = decltype(tag);
      sgd_step_cpu(p.data<T>(), g.data<T>(),
                   momentum_[i].defined() ? momentum_[i].data<T>() : nullptr, p.numel(), hyper_,
                   first);
    });
  }
  for (auto& [first, grp] : groups) {
#if defined(RZ_HAVE_CUDA)
    const DeviceTensorList dl(grp);
    RZ_CUDA_CHECK(sgd_step_multi_cuda(dl.list(), hyper_, first, op_stream()));
#else
    (void)first, (void)grp;
    no_cuda_backend("sgd");
#endif
  }
}

NamedTensors Sgd::state() const {
  NamedTensors out;
  for (size_t i = 0; i < momentum_.size(); ++i)
    if (momentum_[i].defined()) out.emplace_back(std::to_string(i) + ".momentum_buffer", momentum_[i]);
  return out;
}

namespace {
// Finds "<index>.<slot>" in a saved optimizer state; checks it against the parameter.
Tensor saved_slot(const NamedTensors& state, size_t index, const char* slot, const Tensor& like) {
  const std::string key = std::to_string(index) + "." + slot;
  for (const auto& [name, t] : state) {
    if (name != key) continue;
    RZ_CHECK(t.shape() == like.shape(), "optimizer state '", key, "' has shape ",
             shape_str(t.shape()), " but the parameter has ", shape_str(like.shape()));
    Tensor copy = Tensor::empty(like.shape(), like.dtype(), like.device());
    copy.copy_(t);
    return copy;
  }
  return Tensor();
}

int64_t saved_step(const NamedTensors& state, size_t index) {
  const std::string key = std::to_string(index) + ".step";
  for (const auto& [name, t] : state)
    if (name == key) return static_cast<int64_t>(t.item());
  return 0;
}
}  // namespace

void Sgd::load_state(const NamedTensors& state) {
  for (size_t i = 0; i < params_.size(); ++i)
    momentum_[i] = saved_slot(state, i, "momentum_buffer", params_[i]);
}

void Adam::load_state(const NamedTensors& state) {
  for (size_t i = 0; i < params_.size(); ++i) {
    m_[i] = saved_slot(state, i, "exp_avg", params_[i]);
    v_[i] = saved_slot(state, i, "exp_avg_sq", params_[i]);
    steps_[i] = saved_step(state, i);
    RZ_CHECK(m_[i].defined() == v_[i].defined() && (m_[i].defined() == (steps_[i] > 0)),
             "optimizer state for parameter ", i, " is incomplete (exp_avg, exp_avg_sq, step)");
  }
}

Adam::Adam(std::vector<Tensor> params, AdamHyper hyper)
    : Optimizer(std::move(params)),
      hyper_(hyper),
      m_(params_.size()),
      v_(params_.size()),
      steps_(params_.size(), 0) {
  RZ_CHECK(hyper.lr >= 0 && hyper.eps >= 0 && hyper.weight_decay >= 0, "adam: lr ", hyper.lr,
           " eps ", hyper.eps, " weight_decay ", hyper.weight_decay);
  RZ_CHECK(hyper.beta1 >= 0 && hyper.beta1 < 1 && hyper.beta2 >= 0 && hyper.beta2 < 1,
           "adam: betas must be in [0, 1), got ", hyper.beta1, ", ", hyper.beta2);
}

void Adam::stage_graph_step() {
  for (size_t i = 0; i < params_.size(); ++i) {
    RZ_CHECK(m_[i].defined(), "adam graph mode: parameter ", i,
             " has no moments yet (run an eager step first)");
    ++steps_[i];
    RZ_CHECK(steps_[i] == steps_[0], "adam graph mode: parameters have different step counts (",
             steps_[i], " vs ", steps_[0], ")");
  }
  const AdamCoeffs<float> c = make_adam_coeffs<float>(hyper_, steps_.at(0));
  upload_coeffs(&c, sizeof c);
}

void Adam::unstage_graph_step() {
  RZ_CHECK(graph_mode_, "unstage_graph_step outside graph mode");
  for (int64_t& s : steps_) {
    RZ_CHECK(s > 0, "adam: unstage_graph_step without a staged step");
    --s;
  }
}

void Adam::step() {
  if (graph_mode_) {
#if defined(RZ_HAVE_CUDA)
    const CudaGroup g = graph_group(params_, &m_, &v_);
    for (auto& p : params_) p.bump_version();
    const TensorList& list = graph_table(graph_table_).upload(g);
    RZ_CUDA_CHECK(adam_step_multi_dev_cuda(
        list, static_cast<const AdamCoeffs<float>*>(coeffs_dev_.raw_data()), gate_ptr(),
        op_stream()));
#endif
    return;
  }
  // CUDA parameters: one multi-tensor launch per distinct step count (normally one).
  std::map<int64_t, CudaGroup> groups;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    check_grad(p, g, i);
    if (!m_[i].defined()) {
      m_[i] = Tensor::zeros_like(p);
      v_[i] = Tensor::zeros_like(p);
    }
    ++steps_[i];
    p.bump_version();
    if (p.device().is_cuda()) {
      CudaGroup& grp = groups[steps_[i]];
      grp.params.push_back(p);
      grp.grads.push_back(g);
      grp.state1.push_back(m_[i]);
      grp.state2.push_back(v_[i]);
      continue;
    }
    dispatch_float(p.dtype(), "adam", [&](auto tag) {
      using T = decltype(tag);
      adam_step_cpu(p.data<T>(), g.data<T>(), m_[i].data<T>(), v_[i].data<T>(), p.numel(),
                    hyper_, steps_[i]);
    });
  }
  for (auto& [step, grp] : groups) {
#if defined(RZ_HAVE_CUDA)
    const DeviceTensorList dl(grp);
    RZ_CUDA_CHECK(adam_step_multi_cuda(dl.list(), hyper_, step, op_stream()));
#else
    (void)step, (void)grp;
    no_cuda_backend("adam");
#endif
  }
}

NamedTensors Adam::state() const {
  NamedTensors out;
  for (size_t i = 0; i < m_.size(); ++i) {
    if (!m_[i].defined()) continue;
    out.emplace_back(std::to_string(i) + ".exp_avg", m_[i]);
    out.emplace_back(std::to_string(i) + ".exp_avg_sq", v_[i]);
    out.emplace_back(std::to_string(i) + ".step", Tensor::full({}, static_cast<double>(steps_[i]), DType::I64));
  }
  return out;
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  RZ_CHECK(max_norm > 0, "clip_grad_norm: max_norm must be > 0, got ", max_norm);
  double sq = 0;
  CudaGroup cuda;  // CUDA gradients: one multi-tensor reduction and one scaling launch
  for (const auto& p : params) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    if (g.device().is_cuda() && g.dtype() == DType::F32) {
      cuda.params.push_back(g);
      cuda.grads.push_back(g);
      continue;
    }
    const Tensor sq_sum = sum(mul(g, g));
    sq += sq_sum.item();
  }
#if defined(RZ_HAVE_CUDA)
  Tensor cuda_sq;
  std::unique_ptr<DeviceTensorList> dl;
  const bool host_terms = sq > 0;  // some gradients were summed on the host
  if (!cuda.params.empty()) {
    dl = std::make_unique<DeviceTensorList>(cuda);
    const Device dev = cuda.params[0].device();
    Tensor partials = Tensor::empty({std::max<int64_t>(dl->list().total_chunks, 1)}, DType::F64, dev);
    cuda_sq = Tensor::empty({}, DType::F64, dev);
    RZ_CUDA_CHECK(sum_squares_multi_cuda(dl->list(), partials.data<double>(),
                                         cuda_sq.data<double>(), op_stream()));
    sq += cuda_sq.item();
  }
#endif
  const double norm = std::sqrt(sq);
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) {
    for (const auto& p : params) {
      Tensor g = p.grad();
      if (g.defined() && !(g.device().is_cuda() && g.dtype() == DType::F32)) g.mul_(coef);
    }
#if defined(RZ_HAVE_CUDA)
    // The kernel recomputes the same coefficient from the device total (the
    // CUDA sum itself, or with host terms, the grand total uploaded).
    if (dl) {
      const Tensor total = host_terms ? Tensor::full({}, sq, DType::F64, cuda.params[0].device()) : cuda_sq;
      RZ_CUDA_CHECK(clip_scale_multi_cuda(dl->list(), total.data<double>(), max_norm, op_stream()));
    }
#endif
  }
  return norm;
}

void ema_update(Module& ema, const Module& model, double decay, const Tensor& gate) {
  RZ_CHECK(decay >= 0 && decay <= 1, "ema_update: decay must be in [0, 1], got ", decay);
  NoGradGuard no_grad;
  const NamedTensors e = ema.state_dict(), m = model.state_dict();
  RZ_CHECK(e.size() == m.size(), "ema_update: the EMA has ", e.size(), " tensors, the model ", m.size());
  for (size_t i = 0; i < e.size(); ++i) {
    RZ_CHECK(e[i].first == m[i].first && e[i].second.shape() == m[i].second.shape(),
             "ema_update: '", e[i].first, "' does not match the model's '", m[i].first, "'");
    Tensor dst = e[i].second;
    if (!is_floating(dst.dtype())) {
      dst.copy_(m[i].second);
      continue;
    }
    const Tensor src = m[i].second.dtype() == dst.dtype() ? m[i].second : m[i].second.to(dst.dtype());
    RZ_CHECK(src.device() == dst.device(), "ema_update: '", e[i].first, "' is on ",
             dst.device().str(), ", the model's on ", src.device().str());
    dst.bump_version();
    if (dst.device().is_cpu()) {
      RZ_CHECK(!gate.defined(), "ema_update: a gate is for CUDA graph mode");
      dispatch_float(dst.dtype(), "ema_update", [&](auto tag) {
        using T = decltype(tag);
        if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
          ema_blend_cpu(dst.data<T>(), src.data<T>(), dst.numel(), decay);
        else
          RZ_THROW("ema_update: ", dst.str(), " on the CPU (f32 or f64)");
      });
      continue;
    }
#if defined(RZ_HAVE_CUDA)
    RZ_CHECK(dst.dtype() == DType::F32, "ema_update: ", dst.str(), " on CUDA (EMA weights are f32)");
    RZ_CHECK(!gate.defined() || (gate.numel() == 1 && gate.dtype() == DType::F32 &&
                                 gate.device() == dst.device()),
             "ema_update: the gate must be one f32 value on ", dst.device().str());
    RZ_CUDA_CHECK(ema_blend_cuda(dst.data<float>(), src.data<float>(), dst.numel(), decay,
                                 gate.defined() ? gate.data<float>() : nullptr, op_stream()));
#endif
  }
}

}  // namespace rz
