// sLSTM (xLSTM, Beck et al. 2024): one time step forward and backward (lstmkit/cells/slstm.py's
// SLSTMCellMath in C++), stabilised form:
//
//     a_t = W_ih x_t + b + R h_{t-1}                (i~|f~|z~|o~), R block-diagonal over K heads
//     u_t = log f_t + m_{t-1}                       log f_t = log sigma(f~) or f~ (exp gate)
//     m_t = n_{t-1} == 0 ? i~_t : max(u_t, i~_t)
//     i'_t = exp(i~_t - m_t),  f'_t = exp(min(u_t - m_t, 0))
//     z_t = tanh(z~_t),  o_t = sigma(o~_t)
//     c_t = f'_t c_{t-1} + i'_t z_t,  n_t = f'_t n_{t-1} + i'_t,  h_t = o_t c_t / n_t
//
// States (h, c, n, m); gates kept as (i'|f'|z|o); step buffer (sigmoid gate only): 1 - sigma(f~),
// d log f / d f~. The backward is exact in m (m_t follows i~_t where i'_t == 1, else u_t).
// W_hh (4H, DH) holds the diagonal blocks: row g*H + k*DH + j multiplies h[k*DH:(k+1)*DH]. One
// head: the recurrent product is the LSTM's (add_recurrent, brgemm or oneDNN). K heads: one
// product per head, (n, DH) x (DH, 4 DH), into a head-major scratch that a pass adds to the gates
// (and back: the gate gradients gathered head-major, one product per head into dh_prev).
#include <cmath>

#include "products.h"
#include "sequence.h"
#include "vec_math.h"

namespace lstmkit {
namespace {

template <class T>
class SLSTMKernels final : public CellKernels {
 public:
  explicit SLSTMKernels(const Spec& spec)
      : H_(spec.H), K_(spec.heads), D_(spec.H / spec.heads), exp_forget_(spec.exp_forget) {
    TORCH_CHECK(K_ >= 1 && H_ % K_ == 0, "lstmkit compiled engine: sLSTM heads must divide H");
  }

  std::vector<int64_t> state_sizes() const override { return {H_, H_, H_, H_}; }
  std::vector<int64_t> step_buffers() const override {
    return exp_forget_ ? std::vector<int64_t>{} : std::vector<int64_t>{H_};
  }
  int64_t gate_width() const override { return 4 * H_; }
  bool packs_recurrent() const override { return K_ == 1; }
  bool splits_rows() const override { return K_ == 1; }   // heads: ATen products per head

  void prepare(Sequence& q, bool forward) override {
    TORCH_CHECK(q.w.w_hh.size(0) == 4 * H_ && q.w.w_hh.size(1) == D_,
                "lstmkit compiled engine: sLSTM W_hh must be (4H, H / heads)");
    if (K_ == 1) return;
    // [k, (g, j), d] for the backward, its transpose [k, d, (g, j)] for the forward
    const Tensor blocks = q.w.w_hh.view({4, K_, D_, D_}).permute({1, 0, 2, 3}).reshape(
        {K_, 4 * D_, D_});
    heads_ = forward ? blocks.transpose(1, 2).contiguous() : blocks.contiguous();
    scratch_ = at::empty({q.B, K_ * 4 * D_}, q.x.options());
  }

  void forward_step(Sequence& q, int64_t s, int64_t r0, int64_t n) override {
    const int64_t H = H_, G = 4 * H_;
    const int64_t row = s * q.B + r0;                       // row r0 of step s
    const Tensor pre = rows(q.gates, s, n, r0);             // (n, 4H): W_ih x + b on entry
    if (K_ == 1) {
      add_recurrent(q, pre, rows(q.h_in, s, n, r0), true);
    } else {
      const Tensor h_in = rows(q.h_in, s, n, r0);
      const Tensor out = scratch_.narrow(0, r0, n);         // (n, K * 4DH), head-major
      for (int64_t k = 0; k < K_; ++k)
        mm_into(q, out.narrow(1, k * 4 * D_, 4 * D_), h_in.narrow(1, k * D_, D_), heads_[k]);
      gather(pre, out, true);
    }
    T* gates = ptr<T>(q.gates) + row * G;
    const T* c_prev = ptr<T>(q.prev[1]) + row * H;
    const T* n_prev = ptr<T>(q.prev[2]) + row * H;
    const T* m_prev = ptr<T>(q.prev[3]) + row * H;
    T* h = ptr<T>(q.next[0]) + row * H;
    T* c = ptr<T>(q.next[1]) + row * H;
    T* nn = ptr<T>(q.next[2]) + row * H;
    T* m = ptr<T>(q.next[3]) + row * H;
    T* dlogf = exp_forget_ ? nullptr : ptr<T>(q.bufs[0]) + row * H;

    for_rows(n, H, [&](int64_t r, int64_t j0, int64_t j1) {
      T* gi = gates + r * G;
      T* gf = gi + H;
      T* gz = gf + H;
      T* go = gz + H;
      const int64_t o = r * H;
      const Vec<T> zero(T(0));
      for_vectors<T>(j0, j1, [&](int64_t j, int64_t k) {
        const Vec<T> a_i = load(gi, j, k), a_f = load(gf, j, k);
        Vec<T> logf = a_f;
        if (dlogf) {                       // log sigma(a) = min(a, 0) - log1p(exp(-|a|))
          logf = at::vec::minimum(a_f, zero) - a_f.abs().neg().exp().log1p();
          store(dlogf + o, j, k, sigmoid(a_f.neg()));
        }
        const Vec<T> u = logf + load(m_prev + o, j, k);
        const Vec<T> np = load(n_prev + o, j, k);
        const Vec<T> mv = Vec<T>::blendv(at::vec::maximum(u, a_i), a_i, np == zero);
        const Vec<T> i = (a_i - mv).exp();
        const Vec<T> f = at::vec::minimum(u - mv, zero).exp();
        const Vec<T> z = tanh(load(gz, j, k)), og = sigmoid(load(go, j, k));
        const Vec<T> cv = at::vec::fmadd(f, load(c_prev + o, j, k), i * z);
        const Vec<T> nv = at::vec::fmadd(f, np, i);
        store(gi, j, k, i);
        store(gf, j, k, f);
        store(gz, j, k, z);
        store(go, j, k, og);
        store(m + o, j, k, mv);
        store(c + o, j, k, cv);
        store(nn + o, j, k, nv);
        store(h + o, j, k, og * (cv / nv));
      });
    });
  }

  void backward_step(Sequence& q, int64_t s, int64_t r0, int64_t n,
                     const std::vector<Tensor>& dprev) override {
    const int64_t H = H_, G = 4 * H_;
    const int64_t row = s * q.B + r0;                       // row r0 of step s
    const T* gates = ptr<T>(q.gates) + row * G;
    const T* c_prev = ptr<T>(q.prev[1]) + row * H;
    const T* n_prev = ptr<T>(q.prev[2]) + row * H;
    const T* h = ptr<T>(q.next[0]) + row * H;
    const T* c = ptr<T>(q.next[1]) + row * H;
    const T* nn = ptr<T>(q.next[2]) + row * H;
    const T* dh = ptr<T>(q.dnext[0]) + row * H;
    T* dc = ptr<T>(q.dnext[1]) + row * H;    // from outside and step s+1; made total here
    T* dn = ptr<T>(q.dnext[2]) + row * H;    // the same
    const T* dm = ptr<T>(q.dnext[3]) + row * H;
    T* dc_prev = ptr<T>(dprev[1]);
    T* dn_prev = ptr<T>(dprev[2]);
    T* dm_prev = ptr<T>(dprev[3]);
    T* dgates = ptr<T>(q.dgates) + row * G;
    const T* dlogf = exp_forget_ ? nullptr : ptr<T>(q.bufs[0]) + row * H;

    for_rows(n, H, [&](int64_t r, int64_t j0, int64_t j1) {
      const T* gi = gates + r * G;
      const T* gf = gi + H;
      const T* gz = gf + H;
      const T* go = gz + H;
      T* di_r = dgates + r * G;
      T* df_r = di_r + H;
      T* dz_r = df_r + H;
      T* do_r = dz_r + H;
      const int64_t o = r * H;
      const Vec<T> zero(T(0)), one(T(1));
      for_vectors<T>(j0, j1, [&](int64_t j, int64_t k) {
        const Vec<T> i = load(gi, j, k), f = load(gf, j, k), z = load(gz, j, k);
        const Vec<T> og = load(go, j, k), nv = load(nn + o, j, k), np = load(n_prev + o, j, k);
        const Vec<T> q_ = load(dh + o, j, k) / nv;                  // h = o c / n
        const Vec<T> dcv = at::vec::fmadd(q_, og, load(dc + o, j, k));
        const Vec<T> dnv = load(dn + o, j, k) - q_ * load(h + o, j, k);
        store(dc + o, j, k, dcv);
        store(dn + o, j, k, dnv);
        store(do_r, j, k, q_ * load(c + o, j, k) * og * (one - og));
        // c = f' c_prev + i' z, n = f' n_prev + i'
        const Vec<T> df = at::vec::fmadd(dcv, load(c_prev + o, j, k), dnv * np);
        const Vec<T> di = at::vec::fmadd(dcv, z, dnv);
        store(dz_r, j, k, dcv * i * (one - z * z));
        store(dc_prev + o, j, k, at::vec::fmadd(dcv, f, load(dc_prev + o, j, k)));
        store(dn_prev + o, j, k, at::vec::fmadd(dnv, f, load(dn_prev + o, j, k)));
        const Vec<T> g_i = di * i;                                   // i' = exp(i~ - m)
        // f' = exp(min(u - m, 0)): no gradient where the min clipped (from n_prev = 0)
        const Vec<T> g_f = Vec<T>::blendv(df * f, zero, (np == zero) & (f == one));
        const Vec<T> to_i = i == one;                               // m = i~, else m = u
        const Vec<T> dmv = load(dm + o, j, k);
        const Vec<T> du = Vec<T>::blendv(dmv - g_i, g_f, to_i);
        store(di_r, j, k, Vec<T>::blendv(g_i, dmv - g_f, to_i));
        store(dm_prev + o, j, k, load(dm_prev + o, j, k) + du);    // u = log f + m_prev
        store(df_r, j, k, dlogf ? du * load(dlogf + o, j, k) : du);
      });
    });
    if (K_ == 1) {
      add_recurrent(q, dprev[0], dgates_rows(q, s, n, r0), false);   // dh_prev += dgates W_hh
      return;
    }
    const Tensor d = scratch_.narrow(0, r0, n);              // the gate gradients, head-major
    gather(rows(q.dgates, s, n, r0), d, false);
    for (int64_t k = 0; k < K_; ++k)
      add_mm(q, dprev[0].narrow(1, k * D_, D_), d.narrow(1, k * 4 * D_, 4 * D_), heads_[k]);
  }

  // dW_hh = sum_t dgates_t^T h_{t-1}, the diagonal blocks only
  RecurrentGrads recurrent_grads(Sequence& q) override {
    RecurrentGrads g;
    if (K_ == 1) {
      g.w_hh = dgates_t_mm(q, flat(q.h_in));
      return g;
    }
    const Tensor dg = flat(q.dgates_lp), h = flat(q.h_in);
    g.w_hh = at::empty({4 * H_, D_}, q.x.options());
    for (int64_t b = 0; b < 4; ++b)
      for (int64_t k = 0; k < K_; ++k)
        g.w_hh.narrow(0, b * H_ + k * D_, D_)
            .copy_(mm(q, dg.narrow(1, b * H_ + k * D_, D_).t(), h.narrow(1, k * D_, D_)));
    return g;
  }

 private:
  // Between the gate-major (n, 4H) layout, unit g*H + k*DH + j, and the head-major scratch
  // (n, K * 4DH), unit k*4DH + g*DH + j: gates += scratch (forward), or scratch = gates.
  void gather(const Tensor& gates, const Tensor& heads, bool forward) const {
    const int64_t n = gates.size(0), H = H_, D = D_, K = K_;
    T* g = ptr<T>(gates);
    T* s = ptr<T>(heads);
    const int64_t gs = gates.stride(0), ss = heads.stride(0);
    const int64_t grain = std::max<int64_t>(1, kParallelWork / (4 * H));
    at::parallel_for(0, n, grain, [&](int64_t a, int64_t e) {
      for (int64_t r = a; r < e; ++r)
        for (int64_t k = 0; k < K; ++k)
          for (int64_t b = 0; b < 4; ++b) {
            T* gr = g + r * gs + b * H + k * D;
            T* sr = s + r * ss + (k * 4 + b) * D;
            if (forward)
              for (int64_t j = 0; j < D; ++j) gr[j] += sr[j];
            else
              for (int64_t j = 0; j < D; ++j) sr[j] = gr[j];
          }
    });
  }

  int64_t H_, K_, D_;
  bool exp_forget_;
  Tensor heads_, scratch_;
};

}  // namespace

std::unique_ptr<CellKernels> make_slstm(const Spec& spec, at::ScalarType dtype) {
  if (dtype == at::kDouble) return std::make_unique<SLSTMKernels<double>>(spec);
  return std::make_unique<SLSTMKernels<float>>(spec);
}

}  // namespace lstmkit
