// GRU: one time step forward and backward, in both placements of the reset gate
// (lstmkit/cells/gru.py in C++).
//
//     r_t = sigma(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
//     z_t = sigma(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
//     n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))    reset_after (torch's form)
//     n_t = tanh(W_in x_t + b_in + W_hn (r_t * h_{t-1}) + b_hn)    reset before (Cho et al.)
//     h_t = (1 - z_t) * n_t + z_t * h_{t-1}
//
// Gate layout (r|z|n). reset_after: b_hh stays out of the hoisted bias, the step buffer keeps
// W_hh h_{t-1} + b_hh (n, 3H) and the grad buffer its gradient. Reset before: the step buffer
// keeps r_t * h_{t-1}; a step takes two recurrent products (n_t needs r_t first).
#include "products.h"
#include "sequence.h"
#include "vec_math.h"

namespace lstmkit {
namespace {

template <class T>
class GRUKernels final : public CellKernels {
 public:
  explicit GRUKernels(const Spec& spec) : H_(spec.H), reset_after_(spec.reset_after) {}

  std::vector<int64_t> state_sizes() const override { return {H_}; }
  std::vector<int64_t> step_buffers() const override { return {reset_after_ ? 3 * H_ : H_}; }
  int64_t gate_width() const override { return 3 * H_; }
  bool bias_hh_hoisted() const override { return !reset_after_; }
  bool h_slot() const override { return true; }

  void prepare(Sequence& q, bool forward) override {
    if (reset_after_) {
      TORCH_CHECK(forward || (q.gbufs.size() == 1 && q.gbufs[0].size(2) == 3 * H_),
                  "lstmkit compiled engine: the GRU needs one (T, B, 3H) grad buffer");
      return;
    }
    const int64_t H = H_;
    if (forward) {
      w_rz_ = q.w.w_hh_t.narrow(1, 0, 2 * H);   // (H, 2H)
      w_n_ = q.w.w_hh_t.narrow(1, 2 * H, H);    // (H, H)
    } else {
      w_rz_ = q.w.w_hh.narrow(0, 0, 2 * H);     // (2H, H)
      w_n_ = q.w.w_hh.narrow(0, 2 * H, H);
      drh_ = at::empty({q.B, H}, q.x.options());  // d(r_t * h_{t-1}) of one step
    }
  }

  // the whole batch at every step (r0 = 0): splits_rows() is false (the products are ATen's)
  void forward_step(Sequence& q, int64_t s, int64_t r0, int64_t n) override {
    TORCH_INTERNAL_ASSERT(r0 == 0);
    const int64_t B = q.B, H = H_, G = 3 * H_;
    T* gates = ptr<T>(q.gates) + s * B * G;
    const T* h_prev = ptr<T>(q.prev[0]) + s * B * H;
    const T* h_in = ptr<T>(q.h_in) + s * B * H;                 // what W_hh sees
    T* h = ptr<T>(q.next[0]) + s * B * H;
    const Tensor pre = rows(q.gates, s, n), hp = rows(q.h_in, s, n);
    if (reset_after_) {
      const Tensor hw_s = rows(q.bufs[0], s, n);                 // W_hh h_prev + b_hh (n, 3H)
      if (q.w.b_hh.defined()) {
        addmm_into(q, hw_s, q.w.b_hh, hp, q.w.w_hh_t);
      } else {
        mm_into(q, hw_s, hp, q.w.w_hh_t);
      }
      const T* hw = ptr<T>(q.bufs[0]) + s * B * G;
      for_rows(n, H, [&](int64_t r, int64_t j0, int64_t j1) {
        T* gr = gates + r * G;
        T* gz = gr + H;
        T* gn = gz + H;
        const T* hwr = hw + r * G;
        const T* hpr = h_prev + r * H;
        T* hr = h + r * H;
        for_vectors<T>(j0, j1, [&](int64_t j, int64_t k) {
          const Vec<T> rv = sigmoid(load(gr, j, k) + load(hwr, j, k));
          const Vec<T> zv = sigmoid(load(gz, j, k) + load(hwr + H, j, k));
          const Vec<T> nv = tanh(at::vec::fmadd(rv, load(hwr + 2 * H, j, k), load(gn, j, k)));
          store(gr, j, k, rv);
          store(gz, j, k, zv);
          store(gn, j, k, nv);
          store(hr, j, k, (load(hpr, j, k) - nv) * zv + nv);   // h = n + z (h_prev - n)
        });
      });
      return;
    }
    add_mm(q, pre.narrow(1, 0, 2 * H), hp, w_rz_);
    T* rh = ptr<T>(q.bufs[0]) + s * B * H;
    for_rows(n, H, [&](int64_t r, int64_t j0, int64_t j1) {
      T* gr = gates + r * G;
      T* gz = gr + H;
      const T* hir = h_in + r * H;
      T* rhr = rh + r * H;
      for_vectors<T>(j0, j1, [&](int64_t j, int64_t k) {
        const Vec<T> rv = sigmoid(load(gr, j, k));
        store(gr, j, k, rv);
        store(gz, j, k, sigmoid(load(gz, j, k)));
        store(rhr, j, k, rv * load(hir, j, k));                    // r_t * h_{t-1}
      });
    });
    add_mm(q, pre.narrow(1, 2 * H, H), rows(q.bufs[0], s, n), w_n_);
    for_rows(n, H, [&](int64_t r, int64_t j0, int64_t j1) {
      const T* gz = gates + r * G + H;
      T* gn = gates + r * G + 2 * H;
      const T* hpr = h_prev + r * H;
      T* hr = h + r * H;
      for_vectors<T>(j0, j1, [&](int64_t j, int64_t k) {
        const Vec<T> nv = tanh(load(gn, j, k));
        store(gn, j, k, nv);
        store(hr, j, k, (load(hpr, j, k) - nv) * load(gz, j, k) + nv);
      });
    });
  }

  void backward_step(Sequence& q, int64_t s, int64_t r0, int64_t n,
                     const std::vector<Tensor>& dprev) override {
    TORCH_INTERNAL_ASSERT(r0 == 0);
    const int64_t B = q.B, H = H_, G = 3 * H_;
    const T* gates = ptr<T>(q.gates) + s * B * G;
    T* dgates = ptr<T>(q.dgates) + s * B * G;
    const T* h_prev = ptr<T>(q.prev[0]) + s * B * H;
    const T* h_in = ptr<T>(q.h_in) + s * B * H;
    const T* dh = ptr<T>(q.dnext[0]) + s * B * H;
    T* dh_prev = ptr<T>(dprev[0]);
    T* dh_in = ptr<T>(dprev.back());           // dh_prev without recurrent dropout
    if (reset_after_) {
      const T* hw = ptr<T>(q.bufs[0]) + s * B * G;
      T* dhw = ptr<T>(q.gbufs[0]) + s * B * G;   // d(W_hh h_prev + b_hh)
      for_rows(n, H, [&](int64_t r, int64_t j0, int64_t j1) {
        const T* gr = gates + r * G;
        const T* gz = gr + H;
        const T* gn = gz + H;
        T* dr = dgates + r * G;
        T* dz = dr + H;
        T* dn = dz + H;
        T* dhwr = dhw + r * G;
        const T* hwr = hw + r * G;
        const T* hpr = h_prev + r * H;
        const T* dhr = dh + r * H;
        T* dhp = dh_prev + r * H;
        const Vec<T> one(T(1));
        for_vectors<T>(j0, j1, [&](int64_t j, int64_t k) {
          const Vec<T> dhv = load(dhr, j, k), rv = load(gr, j, k), zv = load(gz, j, k);
          const Vec<T> nv = load(gn, j, k);
          const Vec<T> dhz = dhv * zv;
          store(dhp, j, k, load(dhp, j, k) + dhz);                  // dh_prev += dh z
          const Vec<T> dn_pre = (dhv - dhz) * (one - nv * nv);      // dh (1 - z), through tanh
          const Vec<T> dz_pre = (load(hpr, j, k) - nv) * dhv * zv * (one - zv);
          const Vec<T> dr_pre = dn_pre * load(hwr + 2 * H, j, k) * rv * (one - rv);
          store(dr, j, k, dr_pre);
          store(dz, j, k, dz_pre);
          store(dn, j, k, dn_pre);
          store(dhwr, j, k, dr_pre);
          store(dhwr + H, j, k, dz_pre);
          store(dhwr + 2 * H, j, k, dn_pre * rv);                   // d(W_hn h_prev + b_hn)
        });
      });
      add_mm(q, dprev.back(), rows(q.gbufs[0], s, n), q.w.w_hh);          // dh_in += dhw W_hh
      return;
    }
    for_rows(n, H, [&](int64_t r, int64_t j0, int64_t j1) {
      const T* gz = gates + r * G + H;
      const T* gn = gz + H;
      T* dz = dgates + r * G + H;
      T* dn = dz + H;
      const T* hpr = h_prev + r * H;
      const T* dhr = dh + r * H;
      T* dhp = dh_prev + r * H;
      const Vec<T> one(T(1));
      for_vectors<T>(j0, j1, [&](int64_t j, int64_t k) {
        const Vec<T> dhv = load(dhr, j, k), zv = load(gz, j, k), nv = load(gn, j, k);
        const Vec<T> dhz = dhv * zv;
        store(dhp, j, k, load(dhp, j, k) + dhz);
        store(dn, j, k, (dhv - dhz) * (one - nv * nv));
        store(dz, j, k, (load(hpr, j, k) - nv) * dhv * zv * (one - zv));
      });
    });
    const Tensor dg = rows(q.dgates, s, n);
    const Tensor drh = drh_.narrow(0, 0, n);
    mm_into(q, drh, dg.narrow(1, 2 * H, H), w_n_);                  // d(r_t * h_{t-1})
    const T* drhp = ptr<T>(drh_);
    for_rows(n, H, [&](int64_t r, int64_t j0, int64_t j1) {
      const T* gr = gates + r * G;
      T* dr = dgates + r * G;
      const T* hir = h_in + r * H;
      const T* drhr = drhp + r * H;
      T* dhi = dh_in + r * H;
      const Vec<T> one(T(1));
      for_vectors<T>(j0, j1, [&](int64_t j, int64_t k) {
        const Vec<T> d = load(drhr, j, k), rv = load(gr, j, k);
        store(dr, j, k, d * load(hir, j, k) * rv * (one - rv));
        store(dhi, j, k, at::vec::fmadd(d, rv, load(dhi, j, k)));  // dh_in += drh r
      });
    });
    add_mm(q, dprev.back(), dg.narrow(1, 0, 2 * H), w_rz_);  // dh_in += d(r|z) W_h(r|z)
  }

  RecurrentGrads recurrent_grads(Sequence& q) override {
    const int64_t H = H_;
    const Tensor h_in = flat(q.h_in);   // h_{t-1} as W_hh saw it
    RecurrentGrads g;
    if (reset_after_) {
      g.w_hh = mm(q, flat(q.gbufs[0]).t(), h_in);
      if (q.w.b_hh.defined()) g.b_hh = q.gbufs[0].sum({0, 1});
      return g;
    }
    const Tensor dg = flat(q.dgates_lp);
    g.w_hh = at::empty({3 * H, H}, h_in.options());
    mm_into(q, g.w_hh.narrow(0, 0, 2 * H), dg.narrow(1, 0, 2 * H).t(), h_in);
    mm_into(q, g.w_hh.narrow(0, 2 * H, H), dg.narrow(1, 2 * H, H).t(), flat(q.bufs[0]));
    return g;
  }

 private:
  int64_t H_;
  bool reset_after_;
  Tensor w_rz_, w_n_, drh_;
};

}  // namespace

std::unique_ptr<CellKernels> make_gru(const Spec& spec, at::ScalarType dtype) {
  if (dtype == at::kDouble) return std::make_unique<GRUKernels<double>>(spec);
  return std::make_unique<GRUKernels<float>>(spec);
}

}  // namespace lstmkit
