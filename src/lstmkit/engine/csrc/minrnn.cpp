// minGRU and minLSTM (Feng et al. 2024): the whole recurrence of one layer direction, forward and
// backward, each one fused pass (lstmkit/cells/minrnn.py's gates_forward + _scan_steps, and
// _adjoint + gates_backward, in C++). From the pre-activations p = W_ih x_t + b_ih (T, B, G*H):
//
//     minGRU   (k | p_h)         a_t = sigma(-k),  z_t = sigma(k),  b_t = z_t g(p_h)
//     minLSTM  (p_f | p_i | p_h) f = sigma(p_f),  i = sigma(p_i)
//                                a_t = f / (f + i) = f'_t,  i'_t = i / (f + i),  b_t = i'_t g(p_h)
//     h_t = a_t h_{t-1} + b_t,   g(x) = x + 0.5 for x >= 0, sigma(x) otherwise
//
// Backward, t = T..1, with the adjoint lambda_t = dL/dh_t + a_{t+1} lambda_{t+1} carried in dh_0:
//     minGRU   dk = lambda_t (g(p_h) - h_{t-1}) z_t a_t        dp_h = lambda_t z_t g'(p_h)
//     minLSTM  du = lambda_t (h_{t-1} - g(p_h)) f'_t i'_t      dp_f = du sigma(-p_f)
//              dp_i = -du sigma(-p_i)                          dp_h = lambda_t i'_t g'(p_h)
//              (du = dL/du, u = log f - log i: f'_t = sigma(u), i'_t = sigma(-u))
//     dL/dh_0 = a_1 lambda_1
// The gates are recomputed from p in the backward (saving a, b would cost more memory traffic than
// their few exps). The recurrence is element-wise, so each thread takes a share of the (row, block
// of units) pairs through all T steps with no synchronisation between steps.
#include <torch/extension.h>

#include <optional>
#include <vector>

#include "denormals.h"
#include "vec_math.h"

namespace lstmkit {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

enum MinKind : int64_t { kMinGRU = 0, kMinLSTM = 1 };

// sigma(x) and sigma(-x) from one exp, neither by a subtraction: e = exp(-|x|), s = 1 / (1 + e)
// is sigma(|x|) and e s is sigma(-|x|).
template <class T>
inline void sigmoid_pair(const Vec<T>& x, Vec<T>& pos, Vec<T>& neg) {
  const Vec<T> one(T(1));
  const Vec<T> e = x.abs().neg().exp();
  const Vec<T> s = one / (one + e), t = e * s;
  const Vec<T> ge = x >= Vec<T>(T(0));
  pos = Vec<T>::blendv(t, s, ge);
  neg = Vec<T>::blendv(s, t, ge);
}

// f'_t = f / (f + i) and i'_t = i / (f + i) of f = sigma(p_f), i = sigma(p_i) (the same as
// sigma(+-u), u = log f - log i), with no log and no 0/0 where f and i both underflow: with
// sigma(x) = exp(min(x, 0)) / (1 + exp(-|x|)), f and i times (1 + e_f)(1 + e_i) / exp(the larger
// min) are n_f = exp(m_f - m) (1 + e_i) and n_i = exp(m_i - m) (1 + e_f), one of the exps 1.
// not_f, not_i (where given): sigma(-p_f), sigma(-p_i) from the same e_f, e_i.
template <class T>
inline void normalised_gates(const Vec<T>& pf, const Vec<T>& pi, Vec<T>& f_prime,
                             Vec<T>& i_prime, Vec<T>* not_f, Vec<T>* not_i) {
  const Vec<T> zero(T(0)), one(T(1));
  const Vec<T> ef = pf.abs().neg().exp(), ei = pi.abs().neg().exp();
  const Vec<T> mf = at::vec::minimum(pf, zero), mi = at::vec::minimum(pi, zero);
  const Vec<T> w = (mf - mi).abs().neg().exp();
  const Vec<T> f_larger = mf >= mi;
  const Vec<T> nf = Vec<T>::blendv(w, one, f_larger) * (one + ei);
  const Vec<T> ni = Vec<T>::blendv(one, w, f_larger) * (one + ef);
  const Vec<T> r = one / (nf + ni);
  f_prime = nf * r;
  i_prime = ni * r;
  if (not_f != nullptr) {
    const Vec<T> sf = one / (one + ef), si = one / (one + ei);
    *not_f = Vec<T>::blendv(sf, ef * sf, pf >= zero);
    *not_i = Vec<T>::blendv(si, ei * si, pi >= zero);
  }
}

// g(x) and g'(x): x + 0.5 and 1 for x >= 0, sigma(x) and sigma(x) sigma(-x) otherwise.
template <class T>
inline void g_and_slope(const Vec<T>& x, Vec<T>& g, Vec<T>* slope) {
  Vec<T> s, n;
  sigmoid_pair(x, s, n);
  const Vec<T> ge = x >= Vec<T>(T(0));
  g = Vec<T>::blendv(s, x + Vec<T>(T(0.5)), ge);
  if (slope != nullptr) *slope = Vec<T>::blendv(s * n, Vec<T>(T(1)), ge);
}

// One row's gates: p points at the row's G*H pre-activations, units [j, j + n).
template <class T, int64_t K>
struct Gates;

template <class T>
struct Gates<T, kMinGRU> {
  static constexpr int64_t G = 2;

  static void forward(const T* p, int64_t H, int64_t j, int64_t n, Vec<T>& a, Vec<T>& b) {
    Vec<T> z, h_tilde;
    sigmoid_pair(load(p, j, n), z, a);                     // z_t, a_t = 1 - z_t
    g_and_slope<T>(load(p + H, j, n), h_tilde, nullptr);
    b = z * h_tilde;
  }

  // dp at units [j, j + n) from lambda_t and h_{t-1}; returns a_t for the carry.
  static Vec<T> backward(const T* p, T* dp, int64_t H, int64_t j, int64_t n, const Vec<T>& lam,
                         const Vec<T>& h_prev) {
    Vec<T> z, a, h_tilde, slope;
    sigmoid_pair(load(p, j, n), z, a);
    g_and_slope(load(p + H, j, n), h_tilde, &slope);
    const Vec<T> lz = lam * z;
    store(dp, j, n, lz * (h_tilde - h_prev) * a);          // dk = dz z (1 - z)
    store(dp + H, j, n, lz * slope);                       // dp_h = lambda z g'
    return a;
  }
};

template <class T>
struct Gates<T, kMinLSTM> {
  static constexpr int64_t G = 3;

  static void forward(const T* p, int64_t H, int64_t j, int64_t n, Vec<T>& a, Vec<T>& b) {
    Vec<T> i_prime, h_tilde;
    normalised_gates<T>(load(p, j, n), load(p + H, j, n), a, i_prime, nullptr, nullptr);
    g_and_slope<T>(load(p + 2 * H, j, n), h_tilde, nullptr);
    b = i_prime * h_tilde;
  }

  static Vec<T> backward(const T* p, T* dp, int64_t H, int64_t j, int64_t n, const Vec<T>& lam,
                         const Vec<T>& h_prev) {
    Vec<T> not_f, not_i, a, i_prime, h_tilde, slope;
    normalised_gates<T>(load(p, j, n), load(p + H, j, n), a, i_prime, &not_f, &not_i);
    g_and_slope(load(p + 2 * H, j, n), h_tilde, &slope);
    const Vec<T> du = lam * (h_prev - h_tilde) * a * i_prime;
    store(dp, j, n, du * not_f);                           // u = log f - log i
    store(dp + H, j, n, (du * not_i).neg());
    store(dp + 2 * H, j, n, lam * i_prime * slope);        // b = i' h~
    return a;
  }
};

// f(begin, end) over the (row, block of units) pairs [0, B * blocks): split over torch's threads
// from kParallelWork units of a step on (each pair runs through all T steps on one thread).
template <class F>
inline void for_units(int64_t B, int64_t H, const F& f) {
  const int64_t blocks = (H + kUnitBlock - 1) / kUnitBlock;
  if (B * H < kParallelWork || at::get_num_threads() < 2 || at::in_parallel_region()) {
    f(int64_t(0), B * blocks, blocks);
    return;
  }
  at::parallel_for(0, B * blocks, 1, [&](int64_t begin, int64_t end) {
    FlushDenormalGuard ftz;  // worker threads keep their own MXCSR
    f(begin, end, blocks);
  });
}

template <class T, int64_t K>
void forward_loop(const T* pre, const T* h0, T* h, int64_t steps, int64_t B, int64_t H) {
  constexpr int64_t G = Gates<T, K>::G;
  for_units(B, H, [&](int64_t begin, int64_t end, int64_t blocks) {
    for (int64_t t = 0; t < steps; ++t) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t r = i / blocks, j0 = (i % blocks) * kUnitBlock;
        const int64_t j1 = std::min(H, j0 + kUnitBlock);
        const T* p = pre + (t * B + r) * G * H;
        const T* prev = t > 0 ? h + ((t - 1) * B + r) * H : (h0 ? h0 + r * H : nullptr);
        T* out = h + (t * B + r) * H;
        for_vectors<T>(j0, j1, [&](int64_t j, int64_t n) {
          Vec<T> a, b;
          Gates<T, K>::forward(p, H, j, n, a, b);
          store(out, j, n, prev ? at::vec::fmadd(a, load(prev, j, n), b) : b);
        });
      }
    }
  });
}

template <class T, int64_t K>
void backward_loop(const T* pre, const T* h0, const T* h, const T* grad_h, T* dpre, T* carry,
                   int64_t steps, int64_t B, int64_t H) {
  constexpr int64_t G = Gates<T, K>::G;
  for_units(B, H, [&](int64_t begin, int64_t end, int64_t blocks) {
    for (int64_t t = steps - 1; t >= 0; --t) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t r = i / blocks, j0 = (i % blocks) * kUnitBlock;
        const int64_t j1 = std::min(H, j0 + kUnitBlock);
        const int64_t row = t * B + r;
        const T* prev = t > 0 ? h + (row - B) * H : (h0 ? h0 + r * H : nullptr);
        const T* dh = grad_h + row * H;
        T* lam_next = carry + r * H;                       // a_{t+1} lambda_{t+1}, then a_t lambda_t
        for_vectors<T>(j0, j1, [&](int64_t j, int64_t n) {
          const Vec<T> lam = load(dh, j, n) + load(lam_next, j, n);
          const Vec<T> h_prev = prev ? load(prev, j, n) : Vec<T>(T(0));
          const Vec<T> a = Gates<T, K>::backward(pre + row * G * H, dpre + row * G * H, H, j, n,
                                                 lam, h_prev);
          store(lam_next, j, n, a * lam);
        });
      }
    }
  });
}

int64_t num_gates(int64_t kind) {
  TORCH_CHECK(kind == kMinGRU || kind == kMinLSTM,
              "lstmkit minrnn: kind 0 (minGRU) or 1 (minLSTM), got ", kind);
  return kind == kMinGRU ? 2 : 3;
}

// pre (T, B, G*H) and h_0 (B, H) or None, checked; H.
int64_t check_inputs(int64_t kind, const Tensor& pre, const OptTensor& h0) {
  const int64_t G = num_gates(kind);
  TORCH_CHECK(pre.device().is_cpu() && (pre.scalar_type() == at::kFloat ||
                                        pre.scalar_type() == at::kDouble),
              "lstmkit minrnn: pre must be a float32 or float64 CPU tensor, got ",
              pre.scalar_type(), " on ", pre.device());
  TORCH_CHECK(pre.dim() == 3 && pre.size(2) % G == 0,
              "lstmkit minrnn: pre must be (T, B, ", G, " * H), got ", pre.sizes());
  const int64_t H = pre.size(2) / G;
  if (h0.has_value() && h0->defined()) {
    TORCH_CHECK(h0->sizes() == at::IntArrayRef({pre.size(1), H}) &&
                    h0->scalar_type() == pre.scalar_type() && h0->device().is_cpu(),
                "lstmkit minrnn: h0 must be (B, H) = (", pre.size(1), ", ", H, ") of pre's dtype "
                "on the CPU, got ", h0->sizes(), " ", h0->scalar_type());
  }
  return H;
}

Tensor defined_contiguous(const OptTensor& t) {
  return t.has_value() && t->defined() ? t->contiguous() : Tensor();
}

// h (T, B, H) from pre (T, B, G*H) and h_0 (B, H) or None (zeros).
Tensor minrnn_forward(int64_t kind, const Tensor& pre_in, const OptTensor& h0_in) {
  const int64_t H = check_inputs(kind, pre_in, h0_in);
  const Tensor pre = pre_in.contiguous(), h0 = defined_contiguous(h0_in);
  const int64_t steps = pre.size(0), B = pre.size(1);
  Tensor h = at::empty({steps, B, H}, pre.options());
  if (h.numel() == 0) return h;
  start_workers_unflushed();
  FlushDenormalGuard ftz;
  AT_DISPATCH_FLOATING_TYPES(pre.scalar_type(), "lstmkit_minrnn_forward", [&] {
    const scalar_t* hp = h0.defined() ? h0.data_ptr<scalar_t>() : nullptr;
    if (kind == kMinGRU) {
      forward_loop<scalar_t, kMinGRU>(pre.data_ptr<scalar_t>(), hp, h.data_ptr<scalar_t>(),
                                      steps, B, H);
    } else {
      forward_loop<scalar_t, kMinLSTM>(pre.data_ptr<scalar_t>(), hp, h.data_ptr<scalar_t>(),
                                       steps, B, H);
    }
  });
  return h;
}

// [dL/dpre (T, B, G*H), dL/dh_0 (B, H)] from the forward's pre, h_0 (or None), h and dL/dh.
// dL/dh_0 comes back whether or not h_0 was given (with none, h_0 = 0 entered no product).
std::vector<Tensor> minrnn_backward(int64_t kind, const Tensor& pre_in, const OptTensor& h0_in,
                                    const Tensor& h_in, const Tensor& grad_in) {
  const int64_t H = check_inputs(kind, pre_in, h0_in);
  const int64_t steps = pre_in.size(0), B = pre_in.size(1);
  for (const Tensor* t : {&h_in, &grad_in}) {
    TORCH_CHECK(t->sizes() == at::IntArrayRef({steps, B, H}) &&
                    t->scalar_type() == pre_in.scalar_type() && t->device().is_cpu(),
                "lstmkit minrnn: h and dL/dh must be (T, B, H) = (", steps, ", ", B, ", ", H,
                ") of pre's dtype on the CPU, got ", t->sizes(), " ", t->scalar_type());
  }
  const Tensor pre = pre_in.contiguous(), h0 = defined_contiguous(h0_in);
  const Tensor h = h_in.contiguous(), grad = grad_in.contiguous();
  Tensor dpre = at::empty_like(pre);
  Tensor dh0 = at::zeros({B, H}, pre.options());
  if (pre.numel() == 0) return {dpre, dh0};
  start_workers_unflushed();
  FlushDenormalGuard ftz;
  AT_DISPATCH_FLOATING_TYPES(pre.scalar_type(), "lstmkit_minrnn_backward", [&] {
    const scalar_t* hp = h0.defined() ? h0.data_ptr<scalar_t>() : nullptr;
    auto run = [&](auto loop) {
      loop(pre.data_ptr<scalar_t>(), hp, h.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(),
           dpre.data_ptr<scalar_t>(), dh0.data_ptr<scalar_t>(), steps, B, H);
    };
    if (kind == kMinGRU) {
      run(backward_loop<scalar_t, kMinGRU>);
    } else {
      run(backward_loop<scalar_t, kMinLSTM>);
    }
  });
  return {dpre, dh0};
}

}  // namespace
}  // namespace lstmkit

// registered by engine.cpp's module
void lstmkit_register_minrnn(pybind11::module& m) {
  m.def("minrnn_forward", &lstmkit::minrnn_forward,
        "minGRU (kind 0) / minLSTM (1): h (T, B, H) from pre (T, B, G*H) and h0 (B, H) or None");
  m.def("minrnn_backward", &lstmkit::minrnn_backward,
        "minGRU / minLSTM backward: [dpre, dh0] from pre, h0 or None, h and dL/dh");
}
