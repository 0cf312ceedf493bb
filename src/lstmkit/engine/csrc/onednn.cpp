// oneDNN's prepacked inner product, as torch registers it (torch.ops.mkldnn._reorder_linear_weight
// and _linear_pointwise, the ops torch.compile uses for linear layers on the CPU): the weight is
// reordered into oneDNN's blocked layout once per call, then every product y = a W^T runs
// oneDNN's JIT kernels. Found through the dispatcher at first use; absent (onednn_available()
// false) where torch was built without oneDNN.
#include <ATen/core/dispatch/Dispatcher.h>

#include <mutex>
#include <optional>
#include <string_view>

#include "onednn.h"

namespace lstmkit {
namespace {

using PackFn = Tensor(const Tensor&, std::optional<int64_t>);
using LinearFn = Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&,
                        std::string_view, c10::List<std::optional<at::Scalar>>,
                        std::optional<std::string_view>);

struct Ops {
  std::optional<c10::TypedOperatorHandle<PackFn>> pack;
  std::optional<c10::TypedOperatorHandle<LinearFn>> linear;
};

const Ops& ops() {
  static Ops o;
  static std::once_flag once;
  std::call_once(once, [] {
    try {
      auto& d = c10::Dispatcher::singleton();
      auto p = d.findSchema({"mkldnn::_reorder_linear_weight", ""});
      auto l = d.findSchema({"mkldnn::_linear_pointwise", ""});
      if (p && l && p->hasKernelForDispatchKey(c10::DispatchKey::CPU)) {
        o.pack = p->typed<PackFn>();
        o.linear = l->typed<LinearFn>();
      }
    } catch (const std::exception&) {   // a signature this torch does not have: plain products
      o.pack.reset();
      o.linear.reset();
    }
  });
  return o;
}

}  // namespace

bool onednn_available() { return ops().pack.has_value(); }

Tensor onednn_pack(const Tensor& w, int64_t batch) {
  return ops().pack->call(w.contiguous(), batch);
}

Tensor onednn_linear(const Tensor& a, const Tensor& w_packed, const Tensor& bias) {
  return ops().linear->call(a, w_packed, bias.defined() ? std::optional<Tensor>(bias)
                                                        : std::optional<Tensor>(),
                            "none", c10::List<std::optional<at::Scalar>>(), std::nullopt);
}

}  // namespace lstmkit
