// LayerNorm GRU ("gru-ln", torch's reset_after form): one time step forward and backward
// (lstmkit/cells/layernorm.py's LayerNormGRUCellMath in C++).
//
//     u_t = W_ih x_t,  v_t = W_hh h_{t-1}                          (3H each, no bias inside)
//     a_t = LN(u_t) * gamma_ih + b_ih;  e_t = LN(v_t) * gamma_hh + b_hh
//     r_t = sigma(a_r + e_r);  z_t = sigma(a_z + e_z);  n_t = tanh(a_n + r_t * e_n)
//     h_t = (1 - z_t) * n_t + z_t * h_{t-1}
//
// LN over a row's whole gate vector (3H): layernorm.h. Gate layout (r|z|n); w_ch =
// (gamma_ih | gamma_hh). No bias joins the hoisted projection (hoists_bias), so the engine's
// dgates is dL/du_t; dL/da_t and dL/de_t, for the biases and gains, are grad buffers 0 and 1.
// Buffers as the python cell's: step buffers LN(u_t) (3H), LN(v_t) (3H; v_t until the step
// normalises it), e_t (3H), the two rstd (2); grad buffers dL/da_t, dL/de_t, dL/dv_t (3H each).
#include <algorithm>

#include "layernorm.h"
#include "products.h"
#include "sequence.h"
#include "vec_math.h"

namespace lstmkit {
namespace {

template <class T>
class LayerNormGRUKernels final : public CellKernels {
 public:
  explicit LayerNormGRUKernels(const Spec& spec) : H_(spec.H) {}

  std::vector<int64_t> state_sizes() const override { return {H_}; }
  std::vector<int64_t> step_buffers() const override { return {3 * H_, 3 * H_, 3 * H_, 2}; }
  int64_t gate_width() const override { return 3 * H_; }
  bool bias_hh_hoisted() const override { return false; }
  bool hoists_bias() const override { return false; }
  bool packs_recurrent() const override { return true; }
  bool splits_rows() const override { return true; }   // every product is add_recurrent's
  bool h_slot() const override { return true; }

  void prepare(Sequence& q, bool forward) override {
    TORCH_CHECK(q.w.w_ch.defined() && q.w.w_ch.numel() == 6 * H_,
                "lstmkit compiled engine: gru-ln needs its LayerNorm gains (6H)");
    TORCH_CHECK(forward || q.gbufs.size() == 3,
                "lstmkit compiled engine: gru-ln needs its three grad buffers");
  }

  void forward_step(Sequence& q, int64_t s, int64_t r0, int64_t n) override {
    const int64_t H = H_, G = 3 * H_;
    const int64_t row = s * q.B + r0;                       // row r0 of step s
    T* v = ptr<T>(q.bufs[1]) + row * G;
    std::fill(v, v + n * G, T(0));                          // the product adds into it
    add_recurrent(q, rows(q.bufs[1], s, n, r0), rows(q.h_in, s, n, r0), true);  // v_t
    T* gates = ptr<T>(q.gates) + row * G;                   // u_t on entry
    T* xu = ptr<T>(q.bufs[0]) + row * G;
    T* e = ptr<T>(q.bufs[2]) + row * G;
    T* rstd = ptr<T>(q.bufs[3]) + row * 2;
    const T* h_prev = ptr<T>(q.prev[0]) + row * H;
    T* h = ptr<T>(q.next[0]) + row * H;
    const T* g_ih = ptr<T>(q.w.w_ch);
    const T* g_hh = g_ih + G;
    const T* b_ih = ptr<T>(q.w.b_ih);
    const T* b_hh = ptr<T>(q.w.b_hh);

    for_whole_rows(n, G, [&](int64_t r) {
      T* ur = gates + r * G;
      T* vr = v + r * G;
      T* xur = xu + r * G;
      T* er = e + r * G;
      const T* hpr = h_prev + r * H;
      T* hr = h + r * H;
      const Moments<T> mu = moments(ur, G), mv = moments(vr, G);
      rstd[r * 2] = mu.rstd;
      rstd[r * 2 + 1] = mv.rstd;
      const Vec<T> mean_u(mu.mean), rs_u(mu.rstd), mean_v(mv.mean), rs_v(mv.rstd);
      for_vectors<T>(0, H, [&](int64_t j, int64_t k) {
        Vec<T> a[3], ev[3];
        for (int64_t b = 0; b < 3; ++b) {   // a = LN(u) g_ih + b_ih, e = LN(v) g_hh + b_hh
          const int64_t o = b * H;
          const Vec<T> x_u = (load(ur + o, j, k) - mean_u) * rs_u;
          const Vec<T> x_v = (load(vr + o, j, k) - mean_v) * rs_v;
          store(xur + o, j, k, x_u);
          store(vr + o, j, k, x_v);
          a[b] = x_u * load(g_ih + o, j, k);
          if (b_ih) a[b] = a[b] + load(b_ih + o, j, k);
          ev[b] = x_v * load(g_hh + o, j, k);
          if (b_hh) ev[b] = ev[b] + load(b_hh + o, j, k);
          store(er + o, j, k, ev[b]);
        }
        const Vec<T> rv = sigmoid(a[0] + ev[0]), zv = sigmoid(a[1] + ev[1]);
        const Vec<T> nv = tanh(at::vec::fmadd(rv, ev[2], a[2]));
        store(ur, j, k, rv);
        store(ur + H, j, k, zv);
        store(ur + 2 * H, j, k, nv);
        store(hr, j, k, (load(hpr, j, k) - nv) * zv + nv);     // h = n + z (h_prev - n)
      });
    });
  }

  void backward_step(Sequence& q, int64_t s, int64_t r0, int64_t n,
                     const std::vector<Tensor>& dprev) override {
    const int64_t H = H_, G = 3 * H_;
    const int64_t row = s * q.B + r0;                       // row r0 of step s
    const T* gates = ptr<T>(q.gates) + row * G;
    const T* xu = ptr<T>(q.bufs[0]) + row * G;
    const T* xv = ptr<T>(q.bufs[1]) + row * G;
    const T* e = ptr<T>(q.bufs[2]) + row * G;
    const T* rstd = ptr<T>(q.bufs[3]) + row * 2;
    const T* h_prev = ptr<T>(q.prev[0]) + row * H;
    const T* dh = ptr<T>(q.dnext[0]) + row * H;
    T* dh_prev = ptr<T>(dprev[0]);
    T* du = ptr<T>(q.dgates) + row * G;
    T* da = ptr<T>(q.gbufs[0]) + row * G;
    T* de = ptr<T>(q.gbufs[1]) + row * G;
    T* dv = ptr<T>(q.gbufs[2]) + row * G;
    const T* g_ih = ptr<T>(q.w.w_ch);
    const T* g_hh = g_ih + G;

    for_whole_rows(n, G, [&](int64_t r) {
      const T* gr = gates + r * G;
      const T* xur = xu + r * G;
      const T* xvr = xv + r * G;
      const T* er = e + r * G;
      const T* hpr = h_prev + r * H;
      const T* dhr = dh + r * H;
      T* dhp = dh_prev + r * H;
      T* dur = du + r * G;
      T* dar = da + r * G;
      T* der = de + r * G;
      T* dvr = dv + r * G;
      const Vec<T> one(T(1));
      // dL/da and dL/de (grad buffers 0, 1), dh_prev's direct part, and the sums of the
      // backward of LN(u) and LN(v)
      BackwardSums<T> su, sv;
      for_vectors<T>(0, H, [&](int64_t j, int64_t k) {
        const Vec<T> dhv = load(dhr, j, k), rv = load(gr, j, k), zv = load(gr + H, j, k);
        const Vec<T> nv = load(gr + 2 * H, j, k);
        const Vec<T> dhz = dhv * zv;
        store(dhp, j, k, load(dhp, j, k) + dhz);                 // dh_prev += dh z
        const Vec<T> dn = (dhv - dhz) * (one - nv * nv);         // dh (1 - z), through tanh
        const Vec<T> dz = (load(hpr, j, k) - nv) * dhv * zv * (one - zv);
        const Vec<T> dr = dn * load(er + 2 * H, j, k) * rv * (one - rv);
        const Vec<T> d_a[3] = {dr, dz, dn};
        const Vec<T> d_e[3] = {dr, dz, dn * rv};                 // e_n enters as r e_n
        for (int64_t b = 0; b < 3; ++b) {
          const int64_t o = b * H;
          store(dar + o, j, k, d_a[b]);
          store(der + o, j, k, d_e[b]);
          su.add(d_a[b] * load(g_ih + o, j, k), load(xur + o, j, k), k);
          sv.add(d_e[b] * load(g_hh + o, j, k), load(xvr + o, j, k), k);
        }
      });
      const Vec<T> rs_u(rstd[r * 2]), mu_g = su.mean_g(G), mu_gx = su.mean_gx(G);
      const Vec<T> rs_v(rstd[r * 2 + 1]), mv_g = sv.mean_g(G), mv_gx = sv.mean_gx(G);
      for_vectors<T>(0, G, [&](int64_t j, int64_t k) {       // dL/du (dgates), dL/dv
        store(dur, j, k, layer_norm_backward(load(dar, j, k) * load(g_ih, j, k), load(xur, j, k),
                                             rs_u, mu_g, mu_gx));
        store(dvr, j, k, layer_norm_backward(load(der, j, k) * load(g_hh, j, k), load(xvr, j, k),
                                             rs_v, mv_g, mv_gx));
      });
    });
    add_recurrent(q, dprev.back(), rows(q.gbufs[2], s, n, r0), false);   // dh_in += dv W_hh
  }

  // dW_hh = sum_t dv_t^T h_{t-1}; d b_ih = sum_t da_t, d b_hh = sum_t de_t; w_ch: d gamma_ih =
  // sum da LN(u), d gamma_hh = sum de LN(v)
  RecurrentGrads recurrent_grads(Sequence& q) override {
    const int64_t G = 3 * H_, R = q.T * q.B;
    RecurrentGrads g;
    g.w_hh = transposed_mm(q, flat(q.gbufs[2]), flat(q.h_in));
    g.w_ch = at::empty({2 * G}, q.x.options());
    if (q.w.b_ih.defined()) {
      g.b_ih = at::empty({G}, q.x.options());
      g.b_hh = at::empty({G}, q.x.options());
    }
    column_sums<T>(ptr<T>(q.gbufs[0]), ptr<T>(q.bufs[0]), nullptr, R, G, ptr<T>(g.w_ch), nullptr,
                   ptr<T>(g.b_ih));                              // da: LN(u), 1
    column_sums<T>(ptr<T>(q.gbufs[1]), ptr<T>(q.bufs[1]), nullptr, R, G, ptr<T>(g.w_ch) + G,
                   nullptr, ptr<T>(g.b_hh));                     // de: LN(v), 1
    return g;
  }

 private:
  int64_t H_;
};

}  // namespace

std::unique_ptr<CellKernels> make_gru_ln(const Spec& spec, at::ScalarType dtype) {
  if (dtype == at::kDouble) return std::make_unique<LayerNormGRUKernels<double>>(spec);
  return std::make_unique<LayerNormGRUKernels<float>>(spec);
}

}  // namespace lstmkit
