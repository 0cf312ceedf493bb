// mLSTM (xLSTM, Beck et al. 2024): one recurrent step for streaming inference, every head of a
// batch in one call (lstmkit/cells/mlstm.py's ``step`` in C++, no autograd). Per row (b, head),
// head size d, k already scaled by 1/sqrt(d):
//
//     m_t = max(log f_t + m_{t-1}, i~_t)            log f_t = log sigma(f~_t) or f~_t (exp gate)
//     f'_t = exp(log f_t + m_{t-1} - m_t),  i'_t = exp(i~_t - m_t)
//     C~_t = f'_t C~_{t-1} + i'_t v_t k_t^T,  n~_t = f'_t n~_{t-1} + i'_t k_t
//     h~_t = C~_t q_t / (max(|n~_t^T q_t|, exp(-m_t)) + eps)
//
// and with no state (m_0 = -inf): C~_t = v_t k_t^T, n~_t = k_t, m_t = i~_t. The new C~ is written
// and multiplied by q in one pass over it. Two entries: ``mlstm_step`` on q, k, v (*, d) and the
// gates (*), and ``mlstm_layer_step`` on a layer's projected row (B, q|k|v|i~|f~|o), which also
// scales k and applies the output gate, h = sigma(o) * h~, so that the layer's step is one call.
// Below them, the parallel form for training, forward and backward (``mlstm_parallel_forward``,
// ``mlstm_parallel_backward``).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <tuple>
#include <vector>

namespace lstmkit {

using at::Tensor;

namespace {

// rows of a (B, NH, ...) operand: row (b, h) at base + b * sb + h * sh
template <class T>
struct Rows {
  const T* base;
  int64_t sb, sh;
  const T* at(int64_t b, int64_t h) const { return base + b * sb + h * sh; }
};

template <class T>
struct StepArgs {
  int64_t B, NH, d;
  Rows<T> q, k, v, i, f, o;                 // o.base null: no output gate
  const T *C0, *n0, *m0;                    // null: no state; else contiguous (B, NH, ...)
  T k_scale, eps;
  bool exp_forget;
  T *h, *C, *n, *m;                         // contiguous (B, NH, ...), h (B, NH, d)
};

template <class T>
inline T log_sigmoid(T x) {                 // log sigma(x) = min(x, 0) - log1p(exp(-|x|))
  return std::min(x, T(0)) - std::log1p(std::exp(-std::abs(x)));
}

template <class T>
void run_rows(const StepArgs<T>& a, int64_t r0, int64_t r1) {
  const int64_t d = a.d;
  // exp(-m) capped below overflow, as the python cell's _lower
  const T cap = static_cast<T>(std::log(static_cast<double>(std::numeric_limits<T>::max())) - 1.0);
  std::vector<T> kbuf(d);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t b = r / a.NH, hd = r % a.NH;
    const T* q = a.q.at(b, hd);
    const T* v = a.v.at(b, hd);
    const T* k = a.k.at(b, hd);
    T* kk = kbuf.data();
    if (a.k_scale != T(1)) {
      for (int64_t j = 0; j < d; ++j) kk[j] = k[j] * a.k_scale;
    } else {
      std::copy(k, k + d, kk);
    }
    const T i_pre = *a.i.at(b, hd), f_pre = *a.f.at(b, hd);
    T* C = a.C + r * d * d;
    T* n = a.n + r * d;
    T* h = a.h + r * d;
    T m, fs = T(0), is = T(1);
    if (a.C0 == nullptr) {                                  // C = v k^T, n = k, m = i~
      m = i_pre;
    } else {
      const T u = (a.exp_forget ? f_pre : log_sigmoid(f_pre)) + a.m0[r];
      m = std::max(u, i_pre);
      fs = std::exp(u - m);
      is = std::exp(i_pre - m);
    }
    const T* C0 = a.C0 == nullptr ? nullptr : a.C0 + r * d * d;
    const T* n0 = a.n0 == nullptr ? nullptr : a.n0 + r * d;
    T s = T(0);
    if (C0 == nullptr) {
      for (int64_t j = 0; j < d; ++j) {
        n[j] = kk[j];
        s += kk[j] * q[j];
      }
    } else {
      for (int64_t j = 0; j < d; ++j) {
        n[j] = fs * n0[j] + is * kk[j];
        s += n[j] * q[j];
      }
    }
    const T den = std::max(std::abs(s), std::exp(std::min(-m, cap))) + a.eps;
    for (int64_t row = 0; row < d; ++row) {                 // C[row, col] = v_row k_col
      const T va = v[row];
      T* Cr = C + row * d;
      T acc = T(0);
      if (C0 == nullptr) {
#pragma omp simd reduction(+ : acc)
        for (int64_t col = 0; col < d; ++col) {
          const T c = va * kk[col];
          Cr[col] = c;
          acc += c * q[col];
        }
      } else {
        const T* C0r = C0 + row * d;
#pragma omp simd reduction(+ : acc)
        for (int64_t col = 0; col < d; ++col) {
          const T c = fs * C0r[col] + is * (va * kk[col]);
          Cr[col] = c;
          acc += c * q[col];
        }
      }
      h[row] = acc / den;
    }
    if (a.o.base != nullptr) {
      const T* o = a.o.at(b, hd);
      for (int64_t j = 0; j < d; ++j) h[j] = T(1) / (T(1) + std::exp(-o[j])) * h[j];
    }
    a.m[r] = m;
  }
}

template <class T>
void run(const StepArgs<T>& a) {
  const int64_t rows = a.B * a.NH;
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / (a.d * a.d));
  if (rows <= grain) {
    run_rows(a, 0, rows);                                   // no thread pool for a small step
  } else {
    at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) { run_rows(a, r0, r1); });
  }
}

// the state as contiguous (rows, ...) tensors of x's dtype, checked; all or none
void check_state(const std::optional<Tensor>& C0, const std::optional<Tensor>& n0,
                 const std::optional<Tensor>& m0, const Tensor& like, int64_t rows, int64_t d) {
  TORCH_CHECK(C0.has_value() == n0.has_value() && n0.has_value() == m0.has_value(),
              "mlstm_step: the state is (C, n, m), all three or none");
  if (!C0) return;
  for (const Tensor* t : {&*C0, &*n0, &*m0}) {
    TORCH_CHECK(t->scalar_type() == like.scalar_type() && t->device() == like.device(),
                "mlstm_step: the state must have the inputs' dtype and device");
  }
  TORCH_CHECK(C0->numel() == rows * d * d && n0->numel() == rows * d && m0->numel() == rows,
              "mlstm_step: state sizes do not match the inputs");
}

// h (*batch, d) and the state (*lead, *batch, ...)
template <class T>
std::tuple<Tensor, Tensor, Tensor, Tensor> outputs(StepArgs<T>& a, const Tensor& like,
                                                   at::IntArrayRef batch,
                                                   at::IntArrayRef lead = {}) {
  auto with = [&](at::IntArrayRef head, std::initializer_list<int64_t> tail) {
    std::vector<int64_t> s(head.begin(), head.end());
    s.insert(s.end(), batch.begin(), batch.end());
    s.insert(s.end(), tail);
    return at::empty(s, like.options());
  };
  Tensor h = with({}, {a.d}), C = with(lead, {a.d, a.d}), n = with(lead, {a.d});
  Tensor m = with(lead, {});
  a.h = h.data_ptr<T>();
  a.C = C.data_ptr<T>();
  a.n = n.data_ptr<T>();
  a.m = m.data_ptr<T>();
  return {h, C, n, m};
}

// q, k, v (*, d); i~, f~ (*); state (C~ (*, d, d), n~ (*, d), m (*)) or none
std::tuple<Tensor, Tensor, Tensor, Tensor> mlstm_step(
    const Tensor& q_, const Tensor& k_, const Tensor& v_, const Tensor& i_, const Tensor& f_,
    const std::optional<Tensor>& C0_, const std::optional<Tensor>& n0_,
    const std::optional<Tensor>& m0_, bool exp_forget, double eps) {
  TORCH_CHECK(q_.device().is_cpu() && q_.dim() >= 1, "mlstm_step: CPU tensors (*, d)");
  const int64_t d = q_.size(-1), rows = d ? q_.numel() / d : 0;
  for (const Tensor* t : {&k_, &v_}) {
    TORCH_CHECK(t->sizes() == q_.sizes() && t->scalar_type() == q_.scalar_type(),
                "mlstm_step: q, k, v of one shape and dtype");
  }
  for (const Tensor* t : {&i_, &f_}) {
    TORCH_CHECK(t->numel() == rows && t->scalar_type() == q_.scalar_type(),
                "mlstm_step: i~, f~ of shape (*) and q's dtype");
  }
  check_state(C0_, n0_, m0_, q_, rows, d);
  const Tensor q = q_.contiguous(), k = k_.contiguous(), v = v_.contiguous();
  const Tensor i = i_.contiguous(), f = f_.contiguous();
  Tensor C0, n0, m0;
  if (C0_) {
    C0 = C0_->contiguous();
    n0 = n0_->contiguous();
    m0 = m0_->contiguous();
  }
  const auto batch = q_.sizes().slice(0, q_.dim() - 1);
  std::tuple<Tensor, Tensor, Tensor, Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "mlstm_step", [&] {
    StepArgs<scalar_t> a{};
    a.B = rows;
    a.NH = 1;
    a.d = d;
    a.q = {q.data_ptr<scalar_t>(), d, 0};
    a.k = {k.data_ptr<scalar_t>(), d, 0};
    a.v = {v.data_ptr<scalar_t>(), d, 0};
    a.i = {i.data_ptr<scalar_t>(), 1, 0};
    a.f = {f.data_ptr<scalar_t>(), 1, 0};
    a.o = {nullptr, 0, 0};
    if (C0_) {
      a.C0 = C0.data_ptr<scalar_t>();
      a.n0 = n0.data_ptr<scalar_t>();
      a.m0 = m0.data_ptr<scalar_t>();
    }
    a.k_scale = scalar_t(1);
    a.eps = static_cast<scalar_t>(eps);
    a.exp_forget = exp_forget;
    out = outputs(a, q, batch);
    run(a);
  });
  return out;
}

// proj (B, 4H + 2 NH): a layer's projection of x_t, (q | k | v | i~ | f~ | o) as lstmkit.mLSTM
// stacks it (k not yet scaled); state (C~ (B, NH, d, d), n~ (B, NH, d), m (B, NH)) or none.
// Returns (h (B, NH, d) = sigma(o) * h~, C~, n~, m), the state with a leading axis of one (a
// layer and direction: a one-layer state goes back in as it is).
std::tuple<Tensor, Tensor, Tensor, Tensor> mlstm_layer_step(
    const Tensor& proj_, const std::optional<Tensor>& C0_, const std::optional<Tensor>& n0_,
    const std::optional<Tensor>& m0_, int64_t num_heads, bool exp_forget, double eps) {
  TORCH_CHECK(proj_.device().is_cpu() && proj_.dim() == 2, "mlstm_layer_step: proj (B, W)");
  const int64_t B = proj_.size(0), NH = num_heads, W = proj_.size(1);
  TORCH_CHECK(NH >= 1 && (W - 2 * NH) % 4 == 0 && (W - 2 * NH) / 4 % NH == 0,
              "mlstm_layer_step: proj must be (B, 4H + 2 NH) with NH dividing H");
  const int64_t H = (W - 2 * NH) / 4, d = H / NH;
  check_state(C0_, n0_, m0_, proj_, B * NH, d);   // any shape of that many elements
  const Tensor proj = proj_.contiguous();
  Tensor C0, n0, m0;
  if (C0_) {
    C0 = C0_->contiguous();
    n0 = n0_->contiguous();
    m0 = m0_->contiguous();
  }
  std::tuple<Tensor, Tensor, Tensor, Tensor> out;
  const int64_t batch[] = {B, NH};
  AT_DISPATCH_FLOATING_TYPES(proj.scalar_type(), "mlstm_layer_step", [&] {
    const scalar_t* p = proj.data_ptr<scalar_t>();
    StepArgs<scalar_t> a{};
    a.B = B;
    a.NH = NH;
    a.d = d;
    a.q = {p, W, d};
    a.k = {p + H, W, d};
    a.v = {p + 2 * H, W, d};
    a.i = {p + 3 * H, W, 1};
    a.f = {p + 3 * H + NH, W, 1};
    a.o = {p + 3 * H + 2 * NH, W, d};
    if (C0_) {
      a.C0 = C0.data_ptr<scalar_t>();
      a.n0 = n0.data_ptr<scalar_t>();
      a.m0 = m0.data_ptr<scalar_t>();
    }
    a.k_scale = static_cast<scalar_t>(1.0 / std::sqrt(static_cast<double>(d)));
    a.eps = static_cast<scalar_t>(eps);
    a.exp_forget = exp_forget;
    out = outputs(a, proj, batch, {1});
    run(a);
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// the parallel form for training, forward and backward (cells/mlstm.py's _Parallel, whose
// docstring has the equations): the products stay ATen's; the passes over the (T, T) decay
// matrix are fused and skip its upper triangle, and m's argmax is kept from the forward

using OptT = std::optional<Tensor>;


Tensor unsq(const Tensor& x) { return x.unsqueeze(-1); }

// Per row r of R = prod(*) and step t: log D_tj = F_t - F_j + i~_j (j <= t), b_t = m0 + F_t,
// m_t = max(max_j log D_tj, b_t), D_tj = exp(log D_tj - m_t) (0 above the diagonal),
// g_t = exp(b_t - m_t); arg_t = the j of the maximum (T for b_t), where dm_t goes back.
template <class T_>
void decay_rows(const T_* F, const T_* ig, const T_* m0, T_* D, T_* m, T_* g, int64_t* arg,
                int64_t R, int64_t T) {
  at::parallel_for(0, R, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T_* Fr = F + r * T;
      const T_* ir = ig + r * T;
      T_* Dr = D + r * T * T;
      for (int64_t t = 0; t < T; ++t) {
        T_* row = Dr + t * T;
        T_ best = -std::numeric_limits<T_>::infinity();
        int64_t where = 0;
        for (int64_t j = 0; j <= t; ++j) {
          const T_ l = Fr[t] - Fr[j] + ir[j];
          row[j] = l;
          if (l > best) { best = l; where = j; }
        }
        if (m0) {
          const T_ b = Fr[t] + m0[r];
          if (b > best) { best = b; where = T; }
          g[r * T + t] = std::exp(b - best);
        }
        for (int64_t j = 0; j <= t; ++j) row[j] = std::exp(row[j] - best);
        for (int64_t j = t + 1; j < T; ++j) row[j] = T_(0);
        m[r * T + t] = best;
        arg[r * T + t] = where;
      }
    }
  });
}

// S *= D and s = row sums of S, the lower triangle only (S above it set to 0)
template <class T_>
void mask_rows(T_* S, const T_* D, T_* s, int64_t R, int64_t T) {
  at::parallel_for(0, R * T, 16, [&](int64_t a, int64_t b) {
    for (int64_t rt = a; rt < b; ++rt) {
      const int64_t t = rt % T;
      T_* row = S + rt * T;
      const T_* Drow = D + rt * T;
      T_ sum = 0;
      for (int64_t j = 0; j <= t; ++j) { row[j] *= Drow[j]; sum += row[j]; }
      for (int64_t j = t + 1; j < T; ++j) row[j] = T_(0);
      s[rt] = sum;
    }
  });
}

// From dS: dqk = dS * D (in dS's place), dlog D = dS * S + [last row] dw * w + [arg] dm,
// di_j = sum_t dlog D_tj, dF_t = sum_j dlog D_tj - di_t; dm_b (T) the dm routed to b_t.
template <class T_>
void decay_grads(T_* dS, const T_* D, const T_* S, const T_* dw, const T_* dm, const int64_t* arg,
                 T_* di, T_* dF, T_* dm_b, int64_t R, int64_t T) {
  at::parallel_for(0, R, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      T_* dSr = dS + r * T * T;
      const T_* Dr = D + r * T * T;
      const T_* Sr = S + r * T * T;
      T_* dir = di + r * T;
      T_* dFr = dF + r * T;
      for (int64_t j = 0; j < T; ++j) dir[j] = 0;
      for (int64_t t = 0; t < T; ++t) {
        T_* row = dSr + t * T;
        T_ sum = 0;
        for (int64_t j = 0; j <= t; ++j) {
          const T_ a = row[j];
          T_ l = a * Sr[t * T + j];
          if (t == T - 1 && dw) l += dw[r * T + j] * Dr[t * T + j];
          row[j] = a * Dr[t * T + j];
          sum += l;
          dir[j] += l;
        }
        for (int64_t j = t + 1; j < T; ++j) row[j] = T_(0);
        if (dm) {
          const int64_t w = arg[r * T + t];
          const T_ x = dm[r * T + t];
          if (w < T) { sum += x; dir[w] += x; } else if (dm_b) { dm_b[r * T + t] = x; }
        }
        dFr[t] = sum;
      }
      for (int64_t t = 0; t < T; ++t) dFr[t] -= dir[t];
    }
  });
}

Tensor plus(const Tensor& a, const Tensor& b) { return a.defined() ? a + b : b; }


// -> {h, C_T, n_T, m_T, D, S, s, lower, den, g (undefined without a state), arg}
std::vector<Tensor> mlstm_parallel_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                           const Tensor& i_pre, const Tensor& f_pre,
                                           const OptT& C0, const OptT& n0, const OptT& m0,
                                           bool exp_forget, double eps) {
  const int64_t T = q.size(-2), R = i_pre.numel() / std::max<int64_t>(T, 1);
  const bool has_state = C0.has_value();
  const Tensor F = (exp_forget ? f_pre : at::log_sigmoid(f_pre)).cumsum(-1).contiguous();
  const Tensor ig = i_pre.contiguous();
  std::vector<int64_t> square = F.sizes().vec();
  square.push_back(T);
  const Tensor D = at::empty(square, q.options());                               // (*, T, T)
  const Tensor m = at::empty_like(F);
  const Tensor arg = at::empty(F.sizes(), F.options().dtype(at::kLong));
  Tensor g, m0c;
  if (has_state) {
    g = at::empty_like(F);
    m0c = m0->contiguous();
  }
  Tensor S = at::matmul(q, k.mT()).contiguous();
  Tensor s = at::empty_like(F);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "mlstm_parallel_forward", [&] {
    decay_rows<scalar_t>(F.data_ptr<scalar_t>(), ig.data_ptr<scalar_t>(),
                         has_state ? m0c.data_ptr<scalar_t>() : nullptr, D.data_ptr<scalar_t>(),
                         m.data_ptr<scalar_t>(), has_state ? g.data_ptr<scalar_t>() : nullptr,
                         arg.data_ptr<int64_t>(), R, T);
    mask_rows<scalar_t>(S.data_ptr<scalar_t>(), D.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(),
                        R, T);
  });
  Tensor num = at::matmul(S, v);                                                 // (*, T, d)
  const Tensor w = unsq(D.select(-2, T - 1));                                    // (*, T, 1)
  Tensor C_T = at::matmul((v * w).mT(), k);                                      // (*, d, d)
  Tensor n_T = (k * w).sum(-2);
  if (has_state) {
    num = num + unsq(g) * at::matmul(q, C0->mT());
    s = s + g * at::matmul(q, unsq(*n0)).squeeze(-1);
    const Tensor g_T = g.select(-1, T - 1);
    C_T = C_T + unsq(unsq(g_T)) * *C0;
    n_T = n_T + unsq(g_T) * *n0;
  }
  const double cap = std::log(q.scalar_type() == at::kFloat
                                  ? static_cast<double>(std::numeric_limits<float>::max())
                                  : std::numeric_limits<double>::max()) - 1.0;
  const Tensor lower = (-m).clamp_max(cap).exp();
  const Tensor den = at::maximum(s.abs(), lower) + eps;
  const Tensor h = num / unsq(den);
  return {h, C_T, n_T, m.select(-1, T - 1), D, S, s, lower, den, g, arg};
}

// -> {dq, dk, dv, di, df, dC0, dn0, dm0} (the last three undefined without a state)
std::vector<Tensor> mlstm_parallel_backward(
    const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& f_pre, const Tensor& D,
    const Tensor& S, const Tensor& s, const Tensor& lower, const Tensor& den, const Tensor& h,
    const Tensor& C_T, const Tensor& n_T, const Tensor& arg, const OptT& C0, const OptT& n0,
    const OptT& g_, const OptT& dh, const OptT& dC_T, const OptT& dn_T, const OptT& dm_T,
    bool exp_forget, double eps) {
  const int64_t T = q.size(-2), R = s.numel() / std::max<int64_t>(T, 1);
  const bool has_state = C0.has_value();
  Tensor dq, dk, dv, dS, dC0, dn0, dg, g;
  Tensor dm = at::zeros_like(s);
  if (has_state) {
    g = *g_;
    dg = at::zeros_like(s);
    dC0 = at::zeros_like(*C0);
    dn0 = at::zeros_like(*n0);
  }
  if (dh) {
    const Tensor dnum = *dh / unsq(den);                                 // h = num / den
    const Tensor dden = -(*dh * h).sum(-1) / den;
    const Tensor ds = dden * s.sign() * (s.abs() >= lower);              // den = max(|s|, lower)
    dS = at::matmul(dnum, v.mT()).add_(unsq(ds)).contiguous();           // num = S v, s = sum S
    dv = at::matmul(S.mT(), dnum);
    if (eps != 0.0) dm = dm + eps * dden;
    if (has_state) {
      dq = unsq(g) * at::matmul(dnum, *C0) + unsq(g * ds) * n0->unsqueeze(-2);
      dC0 = dC0 + at::matmul((unsq(g) * dnum).mT(), q);
      dn0 = dn0 + (unsq(g * ds) * q).sum(-2);
      dg = dg + (dnum * at::matmul(q, C0->mT())).sum(-1) +
           ds * at::matmul(q, unsq(*n0)).squeeze(-1);
    }
  } else {
    dS = at::zeros_like(S);
  }
  Tensor dw = at::zeros_like(s);
  const Tensor w = D.select(-2, T - 1);
  if (dC_T) {                                                            // C_T = (v w)^T k
    const Tensor vdC = at::matmul(v, *dC_T);
    dv = plus(dv, unsq(w) * at::matmul(k, dC_T->mT()));
    dk = unsq(w) * vdC;
    dw = dw + (vdC * k).sum(-1);
    dm.select(-1, T - 1).sub_((*dC_T * C_T).sum({-2, -1}));
    if (has_state) {
      dC0 = dC0 + unsq(unsq(g.select(-1, T - 1))) * *dC_T;
      dg.select(-1, T - 1).add_((*dC_T * *C0).sum({-2, -1}));
    }
  }
  if (dn_T) {                                                            // n_T = sum_j w_j k_j
    dk = plus(dk, unsq(w) * dn_T->unsqueeze(-2));
    dw = dw + (k * dn_T->unsqueeze(-2)).sum(-1);
    dm.select(-1, T - 1).sub_((*dn_T * n_T).sum(-1));
    if (has_state) {
      dn0 = dn0 + unsq(g.select(-1, T - 1)) * *dn_T;
      dg.select(-1, T - 1).add_((*dn_T * *n0).sum(-1));
    }
  }
  if (dm_T) dm.select(-1, T - 1).add_(*dm_T);
  if (!dv.defined()) dv = at::zeros_like(v);
  const Tensor dwc = dw.contiguous(), dmc = dm.contiguous();
  const Tensor di = at::empty_like(dmc), dF = at::empty_like(dmc);
  const Tensor dm_b = has_state ? at::zeros_like(dmc) : Tensor();
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "mlstm_parallel_backward", [&] {
    decay_grads<scalar_t>(dS.data_ptr<scalar_t>(), D.data_ptr<scalar_t>(), S.data_ptr<scalar_t>(),
                          dwc.data_ptr<scalar_t>(), dmc.data_ptr<scalar_t>(),
                          arg.data_ptr<int64_t>(), di.data_ptr<scalar_t>(),
                          dF.data_ptr<scalar_t>(),
                          has_state ? dm_b.data_ptr<scalar_t>() : nullptr, R, T);
  });
  dq = plus(dq, at::matmul(dS, k));                                      // dS is dqk now
  dk = plus(dk, at::matmul(dS.mT(), q));
  Tensor dm0, dFt = dF;
  if (has_state) {
    const Tensor dlog_b = dg * g + dm_b;                                 // g = exp(b - m)
    dFt = dF + dlog_b;                                                   // b = m_0 + F
    dm0 = dlog_b.sum(-1);
  }
  const Tensor dlog_f = dFt.flip(-1).cumsum(-1).flip(-1);                // F = cumsum log f
  const Tensor df = exp_forget ? dlog_f : dlog_f * at::sigmoid(-f_pre);
  return {dq, dk, dv, di, df, dC0, dn0, dm0};
}

}  // namespace
}  // namespace lstmkit

// registered by engine.cpp's module
void lstmkit_register_mlstm(pybind11::module& m) {
  m.def("mlstm_step", &lstmkit::mlstm_step, "mLSTM step, every head in one call, no autograd",
        pybind11::arg("q"), pybind11::arg("k"), pybind11::arg("v"), pybind11::arg("i_pre"),
        pybind11::arg("f_pre"), pybind11::arg("C0"), pybind11::arg("n0"), pybind11::arg("m0"),
        pybind11::arg("exp_forget"), pybind11::arg("eps"));
  m.def("mlstm_layer_step", &lstmkit::mlstm_layer_step,
        "mLSTM layer step from its projection (q|k|v|i|f|o): (sigma(o) h~, C, n, m)");
  m.def("mlstm_parallel_forward", &lstmkit::mlstm_parallel_forward,
        "mLSTM parallel form: (h~, C_T, n_T, m_T, and what the backward reads)");
  m.def("mlstm_parallel_backward", &lstmkit::mlstm_parallel_backward,
        "mLSTM parallel form's backward: (dq, dk, dv, di, df, dC0, dn0, dm0)");
}
