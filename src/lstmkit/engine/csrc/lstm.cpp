// LSTM: one time step forward and backward, with the peephole and coupled-gate variants and the
// projection (lstmkit/cells/lstm.py in C++).
//
//     i_t = sigma(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi [+ p_i * c_{t-1}])
//     f_t = sigma(W_if x_t + b_if + W_hf h_{t-1} + b_hf [+ p_f * c_{t-1}])
//     g_t = tanh (W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)
//     c_t = f_t * c_{t-1} + i_t * g_t             coupled: i_t = 1 - f_t, c_t = g + f (c_{t-1} - g)
//     o_t = sigma(W_io x_t + b_io + W_ho h_{t-1} + b_ho [+ p_o * c_t])
//     m_t = o_t * tanh(c_t),  h_t = m_t  (h_t = W_hr m_t with proj_size)
//
// Gate layout (i|f|g|o), coupled (f|g|o); peepholes (p_i|p_f|p_o), coupled (p_f|p_o).
// Step buffers: tanh(c_t), and m_t with a projection.
#include "products.h"
#include "sequence.h"
#include "vec_math.h"

namespace lstmkit {
namespace {

template <class T>
class LSTMKernels final : public CellKernels {
 public:
  explicit LSTMKernels(const Spec& spec)
      : H_(spec.H), P_(spec.P), G_(spec.coupled ? 3 : 4), peephole_(spec.peephole),
        coupled_(spec.coupled), proj_(spec.P != spec.H) {}

  std::vector<int64_t> state_sizes() const override { return {P_, H_}; }
  std::vector<int64_t> step_buffers() const override {
    return proj_ ? std::vector<int64_t>{H_, H_} : std::vector<int64_t>{H_};
  }
  int64_t gate_width() const override { return G_ * H_; }
  bool packs_recurrent() const override { return true; }
  bool splits_rows() const override { return !proj_; }   // the projection is an ATen product

  void prepare(Sequence& q, bool forward) override {
    if (proj_) {
      w_hr_t_ = q.w.w_hr.t();                                   // (H, P)
      if (!forward) dm_ = at::empty({q.B, H_}, q.x.options());  // dL/dm_t of one step
    }
  }

  void forward_step(Sequence& q, int64_t s, int64_t r0, int64_t n) override {
    const int64_t H = H_, GH = G_ * H_;
    const int64_t row = s * q.B + r0;                   // row r0 of step s
    add_recurrent(q, rows(q.gates, s, n, r0), rows(q.h_in, s, n, r0), true);  // (n, G*H)
    T* gates = ptr<T>(q.gates) + row * GH;
    const T* c_prev = ptr<T>(q.prev[1]) + row * H;
    T* c = ptr<T>(q.next[1]) + row * H;
    T* tanh_c = ptr<T>(q.bufs[0]) + row * H;
    // m_t = o_t * tanh(c_t): the step buffer with a projection, else h_t itself (P == H)
    T* m = proj_ ? ptr<T>(q.bufs[1]) + row * H : ptr<T>(q.next[0]) + row * H;
    const auto [p_i, p_f, p_o] = peepholes(q);
    const bool peephole = peephole_, coupled = coupled_;

    for_rows(n, H, [&](int64_t r, int64_t j0, int64_t j1) {
      T* gi = gates + r * GH;               // unused when coupled
      T* gf = gi + (coupled ? 0 : H);
      T* gg = gf + H;
      T* go = gg + H;
      const T* cp = c_prev + r * H;
      T* cr = c + r * H;
      T* tcr = tanh_c + r * H;
      T* mr = m + r * H;
      for_vectors<T>(j0, j1, [&](int64_t j, int64_t k) {
        const Vec<T> c_prev_v = load(cp, j, k);
        Vec<T> f = load(gf, j, k);
        if (peephole) f = at::vec::fmadd(load(p_f, j, k), c_prev_v, f);
        f = sigmoid(f);
        const Vec<T> g = tanh(load(gg, j, k));
        Vec<T> cv;
        if (coupled) {
          cv = (c_prev_v - g) * f + g;                              // c = g + f (c_prev - g)
        } else {
          Vec<T> i = load(gi, j, k);
          if (peephole) i = at::vec::fmadd(load(p_i, j, k), c_prev_v, i);
          i = sigmoid(i);
          store(gi, j, k, i);
          cv = f * c_prev_v + i * g;                                // c = f c_prev + i g
        }
        Vec<T> o = load(go, j, k);
        if (peephole) o = at::vec::fmadd(load(p_o, j, k), cv, o);  // o_t sees c_t
        o = sigmoid(o);
        const Vec<T> tc = tanh(cv);
        store(gf, j, k, f);
        store(gg, j, k, g);
        store(go, j, k, o);
        store(cr, j, k, cv);
        store(tcr, j, k, tc);
        store(mr, j, k, o * tc);
      });
    });
    if (proj_)                                                               // h = W_hr m
      mm_into(q, rows(q.next[0], s, n, r0), rows(q.bufs[1], s, n, r0), w_hr_t_);
  }

  void backward_step(Sequence& q, int64_t s, int64_t r0, int64_t n,
                     const std::vector<Tensor>& dprev) override {
    const int64_t H = H_, GH = G_ * H_;
    const int64_t row = s * q.B + r0;                  // row r0 of step s
    const T* dm = ptr<T>(q.dnext[0]) + row * H;  // dL/dm_t = dL/dh_t without a projection
    if (proj_) {
      mm_into(q, dm_.narrow(0, r0, n), rows(q.dnext[0], s, n, r0), q.w.w_hr);  // dm = dh W_hr
      dm = ptr<T>(dm_) + r0 * H;
    }
    T* dc = ptr<T>(q.dnext[1]) + row * H;  // from outside and step s+1; made total here
    T* dc_prev = ptr<T>(dprev[1]);
    const T* gates = ptr<T>(q.gates) + row * GH;
    T* dgates = ptr<T>(q.dgates) + row * GH;
    const T* c_prev = ptr<T>(q.prev[1]) + row * H;
    const T* tanh_c = ptr<T>(q.bufs[0]) + row * H;
    const auto [p_i, p_f, p_o] = peepholes(q);
    const bool peephole = peephole_, coupled = coupled_;

    for_rows(n, H, [&](int64_t r, int64_t j0, int64_t j1) {
      const int64_t off = (coupled ? 0 : H);
      const T* gi = gates + r * GH;
      const T* gf = gi + off;
      const T* gg = gf + H;
      const T* go = gg + H;
      T* di_r = dgates + r * GH;
      T* df_r = di_r + off;
      T* dg_r = df_r + H;
      T* do_r = dg_r + H;
      const T* dmr = dm + r * H;
      T* dcr = dc + r * H;
      T* dcp = dc_prev + r * H;
      const T* cp = c_prev + r * H;
      const T* tcr = tanh_c + r * H;
      const Vec<T> one(T(1));
      for_vectors<T>(j0, j1, [&](int64_t j, int64_t k) {
        const Vec<T> dmv = load(dmr, j, k), tc = load(tcr, j, k), o = load(go, j, k);
        const Vec<T> f = load(gf, j, k), g = load(gg, j, k), c_prev_v = load(cp, j, k);
        Vec<T> dcv = load(dcr, j, k) + dmv * o * (one - tc * tc);  // dc += dm o (1 - tanh^2 c)
        const Vec<T> do_pre = dmv * tc * o * (one - o);           // do = dm tanh(c), through sigma
        if (peephole) dcv = at::vec::fmadd(do_pre, load(p_o, j, k), dcv);  // o_t saw c_t
        store(dcr, j, k, dcv);
        Vec<T> dcp_v = dcv * f;                                     // dc_prev = dc f
        Vec<T> df, dg;
        if (coupled) {
          df = dcv * (c_prev_v - g);
          dg = dcv - dcp_v;                                         // dc (1 - f)
        } else {
          const Vec<T> i = load(gi, j, k);
          const Vec<T> di_pre = dcv * g * i * (one - i);
          store(di_r, j, k, di_pre);
          if (peephole) dcp_v = at::vec::fmadd(di_pre, load(p_i, j, k), dcp_v);
          df = dcv * c_prev_v;
          dg = dcv * i;
        }
        const Vec<T> df_pre = df * f * (one - f);
        if (peephole) dcp_v = at::vec::fmadd(df_pre, load(p_f, j, k), dcp_v);  // f_t saw c_{t-1}
        store(df_r, j, k, df_pre);
        store(dg_r, j, k, dg * (one - g * g));
        store(do_r, j, k, do_pre);
        store(dcp, j, k, load(dcp, j, k) + dcp_v);
      });
    });
    add_recurrent(q, dprev[0], dgates_rows(q, s, n, r0), false);  // dh_prev += dgates W_hh
  }

  RecurrentGrads recurrent_grads(Sequence& q) override {
    RecurrentGrads g;
    g.w_hh = dgates_t_mm(q, flat(q.h_in));                              // sum_t dgates_t^T h_{t-1}
    if (peephole_) g.w_ch = peephole_grads(q);
    if (proj_) g.w_hr = mm(q, flat(q.dnext[0]).t(), flat(q.bufs[1]));     // sum_t dh_t^T m_t
    return g;
  }

 private:
  // The peephole weights of each gate in w_ch (p_i|p_f|p_o), coupled (p_f|p_o); null where absent.
  struct Peepholes {
    const T *i, *f, *o;
  };
  Peepholes peepholes(const Sequence& q) const {
    if (!peephole_) return {nullptr, nullptr, nullptr};
    const T* p = ptr<T>(q.w.w_ch);
    const T* f = coupled_ ? p : p + H_;
    return {coupled_ ? nullptr : p, f, f + H_};
  }

  // dp_i = sum_t di_t * c_{t-1}, dp_f = sum_t df_t * c_{t-1}, dp_o = sum_t do_t * c_t over all
  // steps and rows (dgates are pre-activation gradients): one pass, the units split over
  // threads (three ATen multiply-and-sum passes with their temporaries cost about 5% of a
  // training step at 200 x 16 x 128).
  Tensor peephole_grads(Sequence& q) {
    const int64_t H = H_, GH = G_ * H_, rows = q.T * q.B;
    const int64_t np = coupled_ ? 2 : 3, f = coupled_ ? 0 : 1;
    Tensor out = at::zeros({np * H}, q.x.options());
    const T* dg = ptr<T>(q.dgates);
    const T* c_prev = ptr<T>(q.prev[1]), *c = ptr<T>(q.next[1]);   // of row r at + r H
    T* o = ptr<T>(out);
    const bool coupled = coupled_;
    at::parallel_for(0, H, 16, [&](int64_t j0, int64_t j1) {
      T* o_i = o;                               // unused when coupled
      T* o_f = o + f * H;
      T* o_o = o_f + H;
      for (int64_t r = 0; r < rows; ++r) {
        const T* cp = c_prev + r * H;
        const T* cn = c + r * H;
        const T* d_i = dg + r * GH;
        const T* d_f = d_i + f * H;
        const T* d_o = d_f + 2 * H;
        for_vectors<T>(j0, j1, [&](int64_t j, int64_t k) {
          const Vec<T> cpv = load(cp, j, k);
          if (!coupled) store(o_i, j, k, at::vec::fmadd(load(d_i, j, k), cpv, load(o_i, j, k)));
          store(o_f, j, k, at::vec::fmadd(load(d_f, j, k), cpv, load(o_f, j, k)));
          store(o_o, j, k, at::vec::fmadd(load(d_o, j, k), load(cn, j, k), load(o_o, j, k)));
        });
      }
    });
    return out;
  }

  int64_t H_, P_, G_;
  bool peephole_, coupled_, proj_;
  Tensor w_hr_t_, dm_;
};

}  // namespace

std::unique_ptr<CellKernels> make_lstm(const Spec& spec, at::ScalarType dtype) {
  if (dtype == at::kDouble) return std::make_unique<LSTMKernels<double>>(spec);
  return std::make_unique<LSTMKernels<float>>(spec);
}

}  // namespace lstmkit
