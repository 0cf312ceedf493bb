// LayerNorm LSTM ("lstm-ln"): one time step forward and backward (lstmkit/cells/layernorm.py's
// LayerNormLSTMCellMath in C++).
//
//     u_t = W_ih x_t,  v_t = W_hh h_{t-1}                          (4H each, no bias inside)
//     a_t = LN(u_t) * gamma_ih + b_ih + LN(v_t) * gamma_hh + b_hh   pre-activations (4H)
//     i_t, f_t, o_t = sigma(a_i), sigma(a_f), sigma(a_o);  g_t = tanh(a_g)
//     c_t = f_t * c_{t-1} + i_t * g_t                              (not normalised)
//     h_t = o_t * tanh(LN(c_t) * gamma_c + beta_c)
//
// LN over a row's whole gate vector (4H) and over c_t (H): layernorm.h. Gate layout (i|f|g|o);
// w_ch = (gamma_ih | gamma_hh | gamma_c | beta_c). No bias joins the hoisted projection
// (hoists_bias), so the engine's dgates is dL/du_t (for dW_ih and dx); dL/da_t, for the biases
// and gains, is grad buffer 0. Buffers as the python cell's, so that both engines' tensors have
// one shape: step buffers LN(u_t) (4H), LN(v_t) (4H; v_t until the step normalises it), LN(c_t)
// (H), tanh(LN(c_t) gamma_c + beta_c) (H), the three rstd (3); grad buffers dL/da_t (4H),
// dL/dv_t (4H), dL/d(LN(c_t) gamma_c + beta_c) (H).
#include <algorithm>

#include "layernorm.h"
#include "products.h"
#include "sequence.h"
#include "vec_math.h"

namespace lstmkit {
namespace {

template <class T>
class LayerNormLSTMKernels final : public CellKernels {
 public:
  explicit LayerNormLSTMKernels(const Spec& spec) : H_(spec.H) {}

  std::vector<int64_t> state_sizes() const override { return {H_, H_}; }
  std::vector<int64_t> step_buffers() const override {
    return {4 * H_, 4 * H_, H_, H_, 3};
  }
  int64_t gate_width() const override { return 4 * H_; }
  bool bias_hh_hoisted() const override { return false; }
  bool hoists_bias() const override { return false; }
  bool packs_recurrent() const override { return true; }
  bool splits_rows() const override { return true; }   // every product is add_recurrent's

  void prepare(Sequence& q, bool forward) override {
    TORCH_CHECK(q.w.w_ch.defined() && q.w.w_ch.numel() == 10 * H_,
                "lstmkit compiled engine: lstm-ln needs its LayerNorm vectors (10H)");
    TORCH_CHECK(forward || q.gbufs.size() == 3,
                "lstmkit compiled engine: lstm-ln needs its three grad buffers");
    if (forward && q.w.b_ih.defined()) bias_ = q.w.b_ih + q.w.b_hh;   // both after the LNs
  }

  void forward_step(Sequence& q, int64_t s, int64_t r0, int64_t n) override {
    const int64_t H = H_, G = 4 * H_;
    const int64_t row = s * q.B + r0;                       // row r0 of step s
    T* v = ptr<T>(q.bufs[1]) + row * G;
    std::fill(v, v + n * G, T(0));                          // the product adds into it
    add_recurrent(q, rows(q.bufs[1], s, n, r0), rows(q.h_in, s, n, r0), true);  // v_t
    T* gates = ptr<T>(q.gates) + row * G;                   // u_t on entry
    T* xu = ptr<T>(q.bufs[0]) + row * G;
    T* xc = ptr<T>(q.bufs[2]) + row * H;
    T* tanh_n = ptr<T>(q.bufs[3]) + row * H;
    T* rstd = ptr<T>(q.bufs[4]) + row * 3;
    const T* c_prev = ptr<T>(q.prev[1]) + row * H;
    T* c = ptr<T>(q.next[1]) + row * H;
    T* h = ptr<T>(q.next[0]) + row * H;
    const T* g_ih = ptr<T>(q.w.w_ch);
    const T* g_hh = g_ih + G;
    const T* g_c = g_hh + G;
    const T* b_c = g_c + H;
    const T* bias = ptr<T>(bias_);

    for_whole_rows(n, G, [&](int64_t r) {
      T* ur = gates + r * G;
      T* vr = v + r * G;
      T* xur = xu + r * G;
      const T* cp = c_prev + r * H;
      T* cr = c + r * H;
      const Moments<T> mu = moments(ur, G), mv = moments(vr, G);
      const Vec<T> mean_u(mu.mean), rs_u(mu.rstd), mean_v(mv.mean), rs_v(mv.rstd);
      for_vectors<T>(0, H, [&](int64_t j, int64_t k) {
        Vec<T> a[4];
        for (int64_t b = 0; b < 4; ++b) {   // a = LN(u) g_ih + LN(v) g_hh + b, block b
          const int64_t o = b * H;
          const Vec<T> x_u = (load(ur + o, j, k) - mean_u) * rs_u;
          const Vec<T> x_v = (load(vr + o, j, k) - mean_v) * rs_v;
          store(xur + o, j, k, x_u);
          store(vr + o, j, k, x_v);
          a[b] = at::vec::fmadd(x_v, load(g_hh + o, j, k), x_u * load(g_ih + o, j, k));
          if (bias) a[b] = a[b] + load(bias + o, j, k);
        }
        const Vec<T> i = sigmoid(a[0]), f = sigmoid(a[1]), g = tanh(a[2]), o = sigmoid(a[3]);
        store(ur, j, k, i);
        store(ur + H, j, k, f);
        store(ur + 2 * H, j, k, g);
        store(ur + 3 * H, j, k, o);
        store(cr, j, k, f * load(cp, j, k) + i * g);            // c = f c_prev + i g
      });
      const Moments<T> mc = moments(cr, H);
      rstd[r * 3] = mu.rstd;
      rstd[r * 3 + 1] = mv.rstd;
      rstd[r * 3 + 2] = mc.rstd;
      const Vec<T> mean_c(mc.mean), rs_c(mc.rstd);
      T* xcr = xc + r * H;
      T* tnr = tanh_n + r * H;
      T* hr = h + r * H;
      for_vectors<T>(0, H, [&](int64_t j, int64_t k) {     // h = o tanh(LN(c) g_c + b_c)
        const Vec<T> x_c = (load(cr, j, k) - mean_c) * rs_c;
        const Vec<T> t = tanh(at::vec::fmadd(x_c, load(g_c, j, k), load(b_c, j, k)));
        store(xcr, j, k, x_c);
        store(tnr, j, k, t);
        store(hr, j, k, load(ur + 3 * H, j, k) * t);
      });
    });
  }

  void backward_step(Sequence& q, int64_t s, int64_t r0, int64_t n,
                     const std::vector<Tensor>& dprev) override {
    const int64_t H = H_, G = 4 * H_;
    const int64_t row = s * q.B + r0;                       // row r0 of step s
    const T* gates = ptr<T>(q.gates) + row * G;
    const T* xu = ptr<T>(q.bufs[0]) + row * G;
    const T* xv = ptr<T>(q.bufs[1]) + row * G;
    const T* xc = ptr<T>(q.bufs[2]) + row * H;
    const T* tanh_n = ptr<T>(q.bufs[3]) + row * H;
    const T* rstd = ptr<T>(q.bufs[4]) + row * 3;
    const T* c_prev = ptr<T>(q.prev[1]) + row * H;
    const T* dh = ptr<T>(q.dnext[0]) + row * H;
    T* dc = ptr<T>(q.dnext[1]) + row * H;    // from outside and step s+1; made total here
    T* dc_prev = ptr<T>(dprev[1]);
    T* du = ptr<T>(q.dgates) + row * G;
    T* da = ptr<T>(q.gbufs[0]) + row * G;
    T* dv = ptr<T>(q.gbufs[1]) + row * G;
    T* dn = ptr<T>(q.gbufs[2]) + row * H;
    const T* g_ih = ptr<T>(q.w.w_ch);
    const T* g_hh = g_ih + G;
    const T* g_c = g_hh + G;

    for_whole_rows(n, G, [&](int64_t r) {
      const T* gr = gates + r * G;
      const T* xur = xu + r * G;
      const T* xvr = xv + r * G;
      const T* xcr = xc + r * H;
      const T* tnr = tanh_n + r * H;
      const T* cp = c_prev + r * H;
      const T* dhr = dh + r * H;
      T* dcr = dc + r * H;
      T* dcp = dc_prev + r * H;
      T* dur = du + r * G;
      T* dar = da + r * G;
      T* dvr = dv + r * G;
      T* dnr = dn + r * H;
      const Vec<T> one(T(1));
      // h = o tanh(n): dL/dn (grad buffer 2) and dL/da_o, and the sums of LN(c)'s backward
      BackwardSums<T> sc;
      for_vectors<T>(0, H, [&](int64_t j, int64_t k) {
        const Vec<T> dhv = load(dhr, j, k), t = load(tnr, j, k), o = load(gr + 3 * H, j, k);
        const Vec<T> dnv = dhv * o * (one - t * t);
        store(dnr, j, k, dnv);
        store(dar + 3 * H, j, k, dhv * t * o * (one - o));
        sc.add(dnv * load(g_c, j, k), load(xcr, j, k), k);
      });
      const Vec<T> rs_c(rstd[r * 3 + 2]), mc_g = sc.mean_g(H), mc_gx = sc.mean_gx(H);
      // c = f c_prev + i g, through LN(c): dL/dc total, dL/dc_prev, dL/da_i, a_f, a_g; and the
      // sums of the backward of LN(u) and LN(v) over the four blocks of dL/da
      BackwardSums<T> su, sv;
      for_vectors<T>(0, H, [&](int64_t j, int64_t k) {
        const Vec<T> dxc = load(dnr, j, k) * load(g_c, j, k);     // dL/dLN(c)
        const Vec<T> dcv =
            load(dcr, j, k) + layer_norm_backward(dxc, load(xcr, j, k), rs_c, mc_g, mc_gx);
        store(dcr, j, k, dcv);
        const Vec<T> i = load(gr, j, k), f = load(gr + H, j, k), g = load(gr + 2 * H, j, k);
        store(dcp, j, k, at::vec::fmadd(dcv, f, load(dcp, j, k)));   // dc_prev += dc f
        Vec<T> d[4];
        d[0] = dcv * g * i * (one - i);
        d[1] = dcv * load(cp, j, k) * f * (one - f);
        d[2] = dcv * i * (one - g * g);
        d[3] = load(dar + 3 * H, j, k);
        for (int64_t b = 0; b < 4; ++b) {
          const int64_t o = b * H;
          if (b < 3) store(dar + o, j, k, d[b]);
          su.add(d[b] * load(g_ih + o, j, k), load(xur + o, j, k), k);
          sv.add(d[b] * load(g_hh + o, j, k), load(xvr + o, j, k), k);
        }
      });
      const Vec<T> rs_u(rstd[r * 3]), mu_g = su.mean_g(G), mu_gx = su.mean_gx(G);
      const Vec<T> rs_v(rstd[r * 3 + 1]), mv_g = sv.mean_g(G), mv_gx = sv.mean_gx(G);
      for_vectors<T>(0, G, [&](int64_t j, int64_t k) {       // dL/du (dgates), dL/dv
        const Vec<T> d = load(dar, j, k);
        store(dur, j, k,
              layer_norm_backward(d * load(g_ih, j, k), load(xur, j, k), rs_u, mu_g, mu_gx));
        store(dvr, j, k,
              layer_norm_backward(d * load(g_hh, j, k), load(xvr, j, k), rs_v, mv_g, mv_gx));
      });
    });
    add_recurrent(q, dprev[0], rows(q.gbufs[1], s, n, r0), false);   // dh_prev += dv W_hh
  }

  // dW_hh = sum_t dv_t^T h_{t-1}; d b_ih = d b_hh = sum_t da_t; w_ch: d gamma_ih = sum da LN(u),
  // d gamma_hh = sum da LN(v), d gamma_c = sum dn LN(c), d beta_c = sum dn
  RecurrentGrads recurrent_grads(Sequence& q) override {
    const int64_t H = H_, G = 4 * H_, R = q.T * q.B;
    RecurrentGrads g;
    g.w_hh = transposed_mm(q, flat(q.gbufs[1]), flat(q.h_in));
    g.w_ch = at::empty({10 * H}, q.x.options());
    T* out = ptr<T>(g.w_ch);
    if (q.w.b_ih.defined()) g.b_ih = g.b_hh = at::empty({G}, q.x.options());
    column_sums<T>(ptr<T>(q.gbufs[0]), ptr<T>(q.bufs[0]), ptr<T>(q.bufs[1]), R, G, out,
                   out + G, ptr<T>(g.b_ih));                     // da: LN(u), LN(v), 1
    column_sums<T>(ptr<T>(q.gbufs[2]), ptr<T>(q.bufs[2]), nullptr, R, H, out + 2 * G, nullptr,
                   out + 2 * G + H);                             // dn: LN(c), 1
    return g;
  }

 private:
  int64_t H_;
  Tensor bias_;   // b_ih + b_hh
};

}  // namespace

std::unique_ptr<CellKernels> make_lstm_ln(const Spec& spec, at::ScalarType dtype) {
  if (dtype == at::kDouble) return std::make_unique<LayerNormLSTMKernels<double>>(spec);
  return std::make_unique<LayerNormLSTMKernels<float>>(spec);
}

}  // namespace lstmkit
