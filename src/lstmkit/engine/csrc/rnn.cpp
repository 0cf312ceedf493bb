// Elman RNN: one time step forward and backward (lstmkit/cells/rnn.py in C++).
//
//     h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)     (nonlinearity="tanh")
//     h_t = relu(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)     (nonlinearity="relu")
//
// The "gate" block is the pre-activation a_t, left as it is (the python engine keeps it too).
#include "products.h"
#include "sequence.h"
#include "vec_math.h"

namespace lstmkit {
namespace {

template <class T>
class RNNKernels final : public CellKernels {
 public:
  explicit RNNKernels(const Spec& spec) : H_(spec.H), relu_(spec.relu) {}

  std::vector<int64_t> state_sizes() const override { return {H_}; }
  int64_t gate_width() const override { return H_; }
  bool packs_recurrent() const override { return true; }
  bool splits_rows() const override { return true; }

  void forward_step(Sequence& q, int64_t s, int64_t r0, int64_t n) override {
    const int64_t H = H_, row = s * q.B + r0;   // row r0 of step s
    add_recurrent(q, rows(q.gates, s, n, r0), rows(q.h_in, s, n, r0), true);  // a_t (n, H)
    const T* a = ptr<T>(q.gates) + row * H;
    T* h = ptr<T>(q.next[0]) + row * H;
    const bool relu = relu_;
    for_rows(n, H, [&](int64_t r, int64_t j0, int64_t j1) {
      const T* ar = a + r * H;
      T* hr = h + r * H;
      const Vec<T> zero(T(0));
      for_vectors<T>(j0, j1, [&](int64_t j, int64_t k) {
        const Vec<T> av = load(ar, j, k);
        store(hr, j, k, relu ? at::vec::clamp_min(av, zero) : tanh(av));
      });
    });
  }

  void backward_step(Sequence& q, int64_t s, int64_t r0, int64_t n,
                     const std::vector<Tensor>& dprev) override {
    const int64_t H = H_, row = s * q.B + r0;   // row r0 of step s
    const T* h = ptr<T>(q.next[0]) + row * H;
    const T* dh = ptr<T>(q.dnext[0]) + row * H;
    T* da = ptr<T>(q.dgates) + row * H;
    const bool relu = relu_;
    for_rows(n, H, [&](int64_t r, int64_t j0, int64_t j1) {
      const T* hr = h + r * H;
      const T* dhr = dh + r * H;
      T* dar = da + r * H;
      const Vec<T> one(T(1)), zero(T(0));
      for_vectors<T>(j0, j1, [&](int64_t j, int64_t k) {
        const Vec<T> hv = load(hr, j, k), dhv = load(dhr, j, k);
        // da = dh (1 - h^2), or dh [h > 0]
        store(dar, j, k, relu ? (dhv & (hv > zero)) : dhv * (one - hv * hv));
      });
    });
    add_recurrent(q, dprev[0], dgates_rows(q, s, n, r0), false);           // dh_prev += da W_hh
  }

  RecurrentGrads recurrent_grads(Sequence& q) override {
    RecurrentGrads g;
    g.w_hh = dgates_t_mm(q, flat(q.h_in));
    return g;
  }

 private:
  int64_t H_;
  bool relu_;
};

}  // namespace

std::unique_ptr<CellKernels> make_rnn(const Spec& spec, at::ScalarType dtype) {
  if (dtype == at::kDouble) return std::make_unique<RNNKernels<double>>(spec);
  return std::make_unique<RNNKernels<float>>(spec);
}

}  // namespace lstmkit
