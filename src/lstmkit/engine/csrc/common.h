// The compiled engine: what the time loop (engine.cpp) and the cells (lstm.cpp, gru.cpp, rnn.cpp)
// share. Mirrors lstmkit/engine/sequence.py and lstmkit/cells/*.py: the engine owns time, packed
// batches, state histories and the whole-sequence products; a cell owns the equations of one
// step, forward and backward.
//
// Tensors are time-major and contiguous: gates (T, B, G*H), hist[k] (T+1, B, size_k),
// step buffers (T, B, width), dgates (T, B, G*H), dhist[k] (T, B, size_k). At step s only the
// first bs[s] rows (a prefix of the batch) are active.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/native/CPUBlas.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <xmmintrin.h>
#define LSTMKIT_HAVE_MXCSR 1
#endif

namespace lstmkit {

using at::Tensor;
template <class T>
using Vec = at::vec::Vectorized<T>;

enum Family : int64_t { kLSTM = 0, kGRU = 1, kRNN = 2 };

// What the python cell object says about itself (see compiled.py: _spec).
struct Spec {
  int64_t family = kLSTM;
  int64_t H = 0;          // hidden size
  int64_t P = 0;          // size of h_t (proj_size or H)
  bool peephole = false;  // LSTM
  bool coupled = false;   // LSTM
  bool reset_after = true;  // GRU
  bool relu = false;      // RNN
};

// One layer-direction's parameters in torch's layout; undefined tensors where absent.
struct Weights {
  Tensor w_ih, w_hh, b_ih, b_hh, w_ch, w_hr;
  Tensor w_hh_t;  // (P, G*H), made by the engine for the forward pass
  // oneDNN-packed W_hh (forward: h W_hh^T) and W_hh^T (backward: dgates W_hh), when the call
  // runs its products on oneDNN (Sequence::onednn) and the cell takes them (packs_recurrent)
  Tensor w_hh_pk, w_hh_t_pk;
};

// Everything one call walks over. Forward fills x .. bufs; backward adds the rest.
struct Sequence {
  Spec spec;
  Weights w;
  bool lowp = false;        // bfloat16 products (autocast), everything else in x's dtype
  bool onednn = false;      // weight products on oneDNN's prepacked inner product
  std::vector<int64_t> bs;  // active rows per step, processing order
  bool packed = false;
  int64_t T = 0, B = 0;
  Tensor x, gates;
  std::vector<Tensor> hist, bufs;
  // backward
  Tensor dgates;
  Tensor dgates_lp;  // bfloat16 copy of dgates for the products (lowp); see dgates_rows
  Tensor dgates_t;   // (G*H, T*B): dgates transposed for the weight gradients (dgates_t_mm)
  std::vector<Tensor> gbufs, dhist, dstates0;
};

struct RecurrentGrads {
  Tensor w_hh, b_hh, w_ch, w_hr;
};

// One cell family for one scalar type. The engine calls forward_step for s = 0..T-1 and
// backward_step for s = T-1..0 on rows [r0, r0 + n) of the batch: all n = bs[s] active rows
// (r0 = 0), or, where the cell splits_rows(), one thread's share of them (below, ":n" reads
// "r0:r0+n").
//
// Forward step s: gates[s, :n] holds W_ih x_s + b on entry; the step leaves the activated
// gates there and writes the states after the step into hist[k][s+1, :n] (and its step buffers).
// Backward step s: dhist[k][s, :n] holds on entry the outside gradient plus what step s+1
// sent back; for h that is the total, for c the step completes it to the total in place. The step
// writes dL/d(pre-activations) into dgates[s, :n] and ADDS dL/d(states at s-1) into
// dprev[k] = dhist[k][s-1, :n] (or the gradient of the initial states at s = 0).
// splits_rows: the rows of a batch are independent sequences. Where a cell's steps touch only
// their own rows (every product row-wise, no ATen call), the engine runs each thread's share of
// the rows through the whole time loop in one parallel region (engine.cpp: row_groups).
class CellKernels {
 public:
  virtual ~CellKernels() = default;
  virtual std::vector<int64_t> state_sizes() const = 0;
  virtual std::vector<int64_t> step_buffers() const { return {}; }
  virtual int64_t gate_width() const = 0;
  // true when W_hh h + b_hh enters every pre-activation additively (b_hh joins the hoisted bias)
  virtual bool bias_hh_hoisted() const { return true; }
  virtual void prepare(Sequence& q, bool forward) {}
  // true when every per-step recurrent product is h W_hh^T (forward) and dgates W_hh (backward)
  // through add_recurrent, so that the engine may pack W_hh for oneDNN
  virtual bool packs_recurrent() const { return false; }
  virtual bool splits_rows() const { return false; }
  virtual void forward_step(Sequence& q, int64_t s, int64_t r0, int64_t n) = 0;
  virtual void backward_step(Sequence& q, int64_t s, int64_t r0, int64_t n,
                             const std::vector<Tensor>& dprev) = 0;
  virtual RecurrentGrads recurrent_grads(Sequence& q) = 0;
};

// onednn.cpp: oneDNN's prepacked inner product through torch's registered ops.
bool onednn_available();
Tensor onednn_pack(const Tensor& w, int64_t batch);                          // w (out, in)
Tensor onednn_linear(const Tensor& a, const Tensor& w_packed, const Tensor& bias);  // a W^T + b

std::unique_ptr<CellKernels> make_lstm(const Spec& spec, at::ScalarType dtype);
std::unique_ptr<CellKernels> make_gru(const Spec& spec, at::ScalarType dtype);
std::unique_ptr<CellKernels> make_rnn(const Spec& spec, at::ScalarType dtype);

// ------------------------------------------------------------------ denormals
// Flush-to-zero and denormals-are-zero for this thread while the guard lives; the caller's MXCSR
// (flags included) comes back on exit. A no-op where there is no MXCSR.
class FlushDenormalGuard {
 public:
#ifdef LSTMKIT_HAVE_MXCSR
  FlushDenormalGuard() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | kFtzDaz); }
  ~FlushDenormalGuard() { _mm_setcsr(saved_); }

 private:
  static constexpr unsigned int kFtzDaz = 0x8040;  // FTZ (bit 15) | DAZ (bit 6)
  unsigned int saved_;
#else
  FlushDenormalGuard() {}
#endif
  FlushDenormalGuard(const FlushDenormalGuard&) = delete;
  FlushDenormalGuard& operator=(const FlushDenormalGuard&) = delete;
};

// ------------------------------------------------------------------ tensor helpers
template <class T>
inline T* ptr(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// t[s, r0:r0+n] of a contiguous (S, B, W) tensor as an (n, W) view.
inline Tensor rows(const Tensor& t, int64_t s, int64_t n, int64_t r0 = 0) {
  const int64_t B = t.size(1), W = t.size(2);
  return t.as_strided({n, W}, {W, 1}, t.storage_offset() + (s * B + r0) * W);
}

// ------------------------------------------------------------------ products
// Every matrix product of the engine goes through these. Under bfloat16 autocast (q.lowp) the
// operands are rounded to bfloat16 (the weights once per call, by the engine) and the product
// runs in bfloat16 with float32 accumulation (oneDNN); its result joins the float32 gates, states
// and gradients. Otherwise the product runs in the dtype of the inputs. `out` may be a view.
inline Tensor lp(const Tensor& t) {
  return t.scalar_type() == at::kBFloat16 ? t : t.to(at::kBFloat16);
}
inline Tensor lp_mm(const Tensor& a, const Tensor& b) { return at::mm(lp(a), lp(b)); }

// out = [out +] [bias +] p for a bfloat16 product p (n, W) and a float32 out (n, W): one pass
// that widens p as it goes (bfloat16 is the top half of a float32). ATen's mixed-dtype add
// first converts p into a temporary, which cost about 5% of an LSTM training step.
template <bool kAccumulate, bool kBias>
inline void join_rows(float* out, const uint16_t* p, const float* bias, int64_t n, int64_t W) {
  at::parallel_for(0, n, std::max<int64_t>(1, (1 << 14) / W), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* o = out + r * W;
      const uint16_t* src = p + r * W;
      for (int64_t j = 0; j < W; ++j) {
        const uint32_t bits = uint32_t(src[j]) << 16;
        float v;
        std::memcpy(&v, &bits, sizeof v);
        if (kBias) v += bias[j];
        o[j] = kAccumulate ? o[j] + v : v;
      }
    }
  });
}

inline void join_lp(Tensor out, const Tensor& p, const Tensor& bias, bool accumulate) {
  const bool fast = out.scalar_type() == at::kFloat && out.is_contiguous() && out.dim() == 2 &&
                    p.scalar_type() == at::kBFloat16 && p.is_contiguous() &&
                    p.sizes() == out.sizes() &&
                    (!bias.defined() || (bias.scalar_type() == at::kFloat && bias.dim() == 1 &&
                                         bias.is_contiguous() && bias.size(0) == out.size(1)));
  if (!fast) {
    if (accumulate) out.add_(bias.defined() ? p + bias : p);
    else if (bias.defined()) at::add_out(out, bias, p);
    else out.copy_(p);
    return;
  }
  auto* o = out.data_ptr<float>();
  const auto* src = reinterpret_cast<const uint16_t*>(p.data_ptr<at::BFloat16>());
  const float* b = bias.defined() ? bias.data_ptr<float>() : nullptr;
  const int64_t n = out.size(0), W = out.size(1);
  if (accumulate) {
    if (b) join_rows<true, true>(o, src, b, n, W);
    else join_rows<true, false>(o, src, b, n, W);
  } else {
    if (b) join_rows<false, true>(o, src, b, n, W);
    else join_rows<false, false>(o, src, b, n, W);
  }
}

// [bias +] p as a new float32 tensor, for a bfloat16 product p (n, W); bias may be undefined.
inline Tensor widen_lp(const Sequence& q, const Tensor& p, const Tensor& bias) {
  Tensor out = at::empty(p.sizes(), q.x.options());
  join_lp(out, p, bias, false);
  return out;
}

inline Tensor mm(const Sequence& q, const Tensor& a, const Tensor& b) {   // a b
  return q.lowp ? lp_mm(a, b).to(q.x.scalar_type()) : at::mm(a, b);
}
inline Tensor addmm(const Sequence& q, const Tensor& bias, const Tensor& a, const Tensor& b) {
  return q.lowp ? widen_lp(q, lp_mm(a, b), bias) : at::addmm(bias, a, b);   // bias + a b
}
inline void mm_into(const Sequence& q, Tensor out, const Tensor& a, const Tensor& b) {
  if (q.lowp) out.copy_(lp_mm(a, b));                                     // out = a b
  else at::mm_out(out, a, b);
}
inline void add_mm(const Sequence& q, Tensor out, const Tensor& a, const Tensor& b) {
  if (q.lowp) join_lp(out, lp_mm(a, b), Tensor(), true);                 // out += a b
  else out.addmm_(a, b);
}
inline void addmm_into(const Sequence& q, Tensor out, const Tensor& bias, const Tensor& a,
                       const Tensor& b) {
  if (q.lowp) join_lp(out, lp_mm(a, b), bias, false);                    // out = bias + a b
  else at::addmm_out(out, bias, a, b);
}

// float32, contiguous (row-major) out (n, N), a (n, K), b (K, N): what the brgemm paths take.
inline bool row_major_product(const Tensor& out, const Tensor& a, const Tensor& b) {
  return out.scalar_type() == at::kFloat && a.scalar_type() == at::kFloat &&
         b.scalar_type() == at::kFloat && out.is_contiguous() && a.is_contiguous() &&
         b.is_contiguous() && out.dim() == 2 && a.dim() == 2 && b.dim() == 2 &&
         a.size(0) == out.size(0) && a.size(1) == b.size(0) && b.size(1) == out.size(1);
}

// out += a b for float32 row-major a (n, K), b (K, N), out (n, N), all contiguous, on the
// batch-reduce GEMM micro-kernel torch exports (oneDNN's brgemm), the columns split into blocks
// over torch's threads. For one step's product at 16-20 rows it takes 0.3-0.5x the time of
// at::addmm_ (MKL) on 2 threads: 16 x 128 x 512 10 us against 32 us, 20 x 200 x 800 33 us
// against 66 us. Only where ATen's vectorised types are AVX-512, where it was measured.
#if defined(CPU_CAPABILITY_AVX512)
constexpr int64_t kBrgemmMaxRows = 64;
inline bool brgemm_fits(const Tensor& out, const Tensor& a, const Tensor& b) {
  return row_major_product(out, a, b) && out.size(0) <= kBrgemmMaxRows && out.size(0) > 0;
}
inline void brgemm_add(Tensor out, const Tensor& a, const Tensor& b) {
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  const float* pa = a.data_ptr<float>();
  const float* pb = b.data_ptr<float>();
  float* pc = out.data_ptr<float>();
  if (at::in_parallel_region()) {   // one thread's rows (splits_rows): the whole product here
    at::native::cpublas::brgemm(M, N, K, K, N, N, /*add_C=*/true, pa, pb, pc, /*is_vnni=*/false);
    return;
  }
  // each thread an equal share (to one vector) of the 16-column vectors, run as four blocks:
  // as one block per thread the product ran no faster than on one thread
  const int64_t vectors = (N + 15) / 16;
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), vectors));
  at::parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t v0 = vectors * t / threads, v1 = vectors * (t + 1) / threads;
      for (int64_t part = 0; part < 4; ++part) {
        const int64_t u0 = v0 + (v1 - v0) * part / 4, u1 = v0 + (v1 - v0) * (part + 1) / 4;
        if (u0 == u1) continue;
        const int64_t j0 = u0 * 16, w = std::min(N, u1 * 16) - j0;
        at::native::cpublas::brgemm(M, w, K, K, N, N, /*add_C=*/true, pa, pb + j0, pc + j0,
                                    /*is_vnni=*/false);
      }
    }
  });
}

// C (M, N) [+]= A (M, K) B (K, N), row-major float32 with leading dimensions lda, ldb, ldc: a
// whole-sequence product on brgemm, in 64 x 64 tiles of C spread over torch's threads (K in
// chunks of 512, so that a tile's slice of B stays in L2). With a bias (N) and add false, C =
// bias + A B: each tile starts from the bias while it is in cache (filling all of C first was a
// pass over the input projection of its own, 0.1-0.3 ms).
inline void gemm_brgemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                        const float* B, int64_t ldb, float* C, int64_t ldc, bool add,
                        const float* bias = nullptr) {
  constexpr int64_t kM = 64, kN = 64, kK = 512;
  const int64_t mt = (M + kM - 1) / kM, nt = (N + kN - 1) / kN;
  const bool start_from_bias = bias != nullptr && !add;
  at::parallel_for(0, mt * nt, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i0 = (t / nt) * kM, j0 = (t % nt) * kN;
      const int64_t m = std::min(kM, M - i0), n = std::min(kN, N - j0);
      if (start_from_bias) {
        for (int64_t i = 0; i < m; ++i)
          std::memcpy(C + (i0 + i) * ldc + j0, bias + j0, n * sizeof(float));
      }
      for (int64_t k0 = 0; k0 < K; k0 += kK) {
        at::native::cpublas::brgemm(m, n, std::min(kK, K - k0), lda, ldb, ldc,
                                    add || start_from_bias || k0 > 0,
                                    A + i0 * lda + k0, B + k0 * ldb + j0, C + i0 * ldc + j0,
                                    /*is_vnni=*/false);
      }
    }
  });
}

// out (C, R) = a^T for a row-major float32 a (R, C), in blocks of 64 rows over torch's threads.
inline void transpose_into(const float* a, int64_t R, int64_t C, float* out) {
  at::parallel_for(0, (R + 63) / 64, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r0 = b * 64;
      at::vec::transpose_mxn<float>(a + r0 * C, C, out + r0, R,
                                    static_cast<int>(std::min<int64_t>(64, R - r0)),
                                    static_cast<int>(C));
    }
  });
}

// true when a call's float32 per-step recurrent products (at most q.B rows) take brgemm even
// where the engine could pack W_hh for oneDNN: one step's product, 2 threads, brgemm against
// oneDNN's prepacked inner product: 32 x 256 x 1024 80 us against 100, 64 x 512 x 2048 610 us
// against 626, 16 x 128 x 512 11 us against 28.
inline bool brgemm_steps(const Sequence& q) {
  return !q.lowp && q.x.scalar_type() == at::kFloat && q.B <= kBrgemmMaxRows;
}
#else
inline void transpose_into(const float*, int64_t, int64_t, float*) {}
inline void gemm_brgemm(int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t,
                        float*, int64_t, bool, const float* = nullptr) {}
inline bool brgemm_steps(const Sequence&) { return false; }
inline bool brgemm_fits(const Tensor&, const Tensor&, const Tensor&) { return false; }
inline void brgemm_add(Tensor, const Tensor&, const Tensor&) {}
#endif

// w^T (C, R) of a 2-D w (R, C) as a new contiguous tensor. ATen copies the transposed view
// element by element (800 x 200: 157 us, 2048 x 512: 1.3 ms); float32 on AVX-512 builds takes
// transpose_into (32 us, 225 us). The engine transposes W_ih and W_hh once per call.
inline Tensor transposed(const Tensor& w) {
#if defined(CPU_CAPABILITY_AVX512)
  if (w.dim() == 2 && w.scalar_type() == at::kFloat && w.is_contiguous()) {
    Tensor out = at::empty({w.size(1), w.size(0)}, w.options());
    transpose_into(w.data_ptr<float>(), w.size(0), w.size(1), out.data_ptr<float>());
    return out;
  }
#endif
  return w.t().contiguous();
}

// out += h W_hh^T (forward) or out += dgates W_hh (backward): one step's recurrent product, on
// the packed weights when the engine made them, on brgemm for small float32 steps, else as
// add_mm.
inline void add_recurrent(const Sequence& q, Tensor out, const Tensor& a, bool forward) {
  const Tensor& packed = forward ? q.w.w_hh_pk : q.w.w_hh_t_pk;
  if (packed.defined()) {
    if (q.lowp) join_lp(out, onednn_linear(lp(a), packed, Tensor()), Tensor(), true);
    else out.add_(onednn_linear(a, packed, Tensor()));
    return;
  }
  const Tensor& w = forward ? q.w.w_hh_t : q.w.w_hh;
  if (!q.lowp && brgemm_fits(out, a, w)) {
    brgemm_add(out, a, w);
    return;
  }
  add_mm(q, out, a, w);
}

// dgates[s, :n] as the step's recurrent product takes it. With bfloat16 products the rows are
// rounded once into q.dgates_lp, which the whole-sequence weight-gradient products then reuse.
inline Tensor dgates_rows(Sequence& q, int64_t s, int64_t n, int64_t r0 = 0) {
  if (!q.lowp) return rows(q.dgates, s, n, r0);
  if (!q.dgates_lp.defined())   // inactive rows of a packed batch enter the sums: zero
    q.dgates_lp = q.packed ? at::zeros(q.dgates.sizes(), q.dgates.options().dtype(at::kBFloat16))
                           : at::empty(q.dgates.sizes(), q.dgates.options().dtype(at::kBFloat16));
  Tensor r = rows(q.dgates_lp, s, n, r0);
  r.copy_(rows(q.dgates, s, n, r0));
  return r;
}

// A contiguous (S, B, W) tensor as (S * B, W).
inline Tensor flat(const Tensor& t) { return t.view({-1, t.size(-1)}); }

// A buffer of numel elements kept per thread from one call to the next, as the python side's
// scratch tensors are (lstmkit/engine/workspace.py): a fresh buffer of tens of MB per call costs
// page faults. Valid until the next call on this thread; release_buffers() frees it.
inline Tensor& thread_buffer_slot() {
  static thread_local Tensor buf;
  return buf;
}
inline Tensor thread_buffer(int64_t numel, const at::TensorOptions& options) {
  Tensor& buf = thread_buffer_slot();
  if (!buf.defined() || buf.numel() < numel || buf.scalar_type() != options.dtype())
    buf = at::empty({numel}, options);
  return buf.narrow(0, 0, numel);
}

// sum_t dgates_t^T b_t = dgates^T b for b (T*B, N): a weight gradient (G*H, N). Small float32
// calls run it on brgemm tiles from dgates transposed once (q.dgates_t, shared by the weight
// gradients of one call): MKL on the transposed view ran 130-150 GFLOP/s on this kind of shape,
// the tiles 180-220.
inline Tensor dgates_t_mm(Sequence& q, const Tensor& b) {
  if (!brgemm_steps(q) || !b.is_contiguous() || b.scalar_type() != at::kFloat)
    return mm(q, flat(q.dgates_lp).t(), b);
  const int64_t rows = q.dgates.size(0) * q.dgates.size(1), GH = q.dgates.size(2);
  if (!q.dgates_t.defined()) {
    q.dgates_t = thread_buffer(GH * rows, q.dgates.options()).view({GH, rows});
    transpose_into(q.dgates.data_ptr<float>(), rows, GH, q.dgates_t.data_ptr<float>());
  }
  Tensor out = at::empty({GH, b.size(1)}, b.options());
  gemm_brgemm(GH, b.size(1), rows, q.dgates_t.data_ptr<float>(), rows, b.data_ptr<float>(),
              b.size(1), out.data_ptr<float>(), b.size(1), false);
  return out;
}

// sum_t sum_b dgates[t, b, :] (G*H): the bias gradient. From the transposed dgates when the
// weight gradients made it, as contiguous row sums over the threads (3200 x 512: 20-40 us;
// ATen's column sum of dgates runs on one thread, 80-300 us).
inline Tensor dgates_sum(const Sequence& q) {
  if (!q.dgates_t.defined()) return q.dgates.sum({0, 1});
  const int64_t GH = q.dgates_t.size(0), R = q.dgates_t.size(1);
  Tensor out = at::empty({GH}, q.dgates.options());
  const float* a = q.dgates_t.data_ptr<float>();
  float* o = out.data_ptr<float>();
  // four accumulators, summed in this order (at::vec::reduce_all's one accumulator sums in
  // another order: the demo's 1,500 training steps carried that into its later digits)
  at::parallel_for(0, GH, 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float* row = a + i * R;
      Vec<float> acc[4] = {Vec<float>(0.f), Vec<float>(0.f), Vec<float>(0.f), Vec<float>(0.f)};
      constexpr int64_t V = Vec<float>::size();
      int64_t j = 0;
      for (; j + 4 * V <= R; j += 4 * V)
        for (int u = 0; u < 4; ++u) acc[u] = acc[u] + Vec<float>::loadu(row + j + u * V);
      for (; j < R; j += V) acc[0] = acc[0] + Vec<float>::loadu(row + j, std::min(V, R - j));
      float lanes[Vec<float>::size()];
      ((acc[0] + acc[1]) + (acc[2] + acc[3])).store(lanes);
      float sum = 0.f;
      for (float v : lanes) sum += v;
      o[i] = sum;
    }
  });
  return out;
}

// ------------------------------------------------------------------ vector math
// sigma(x) = 1 / (1 + exp(-x)) with ATen's vectorised (SLEEF, 1-ulp) exp: the formula torch's own
// sigmoid kernel uses.
template <class T>
inline Vec<T> sigmoid(const Vec<T>& x) {
  const Vec<T> one(T(1));
  return one / (one + x.neg().exp());
}

// tanh: float64 takes ATen's vectorised tanh (SLEEF, 1 ulp). For float32 that costs about three
// exps, so it is built from one exp instead (within 2.1 ulp of the float64 tanh, checked by
// tests/test_compiled.py over the whole range):
//   |x| >= ln(2)/2: sign(x) (1 - e) / (1 + e), e = exp(-2|x|); no cancellation, 1 - e is exact
//   |x| <  ln(2)/2: x - x^3/3 + 2x^5/15 - 17x^7/315 + 62x^9/2835 - 1382x^11/155925 (the next
//                   Taylor term is below 1.2e-8 relative there)
template <class T>
inline Vec<T> tanh(const Vec<T>& x) {
  return x.tanh();
}

template <>
inline Vec<float> tanh(const Vec<float>& x) {
  using V = Vec<float>;
  const V ax = x.abs(), one(1.f);
  const V e = (ax * V(-2.f)).exp();
  const V large = ((one - e) / (one + e)).copysign(x);
  const V x2 = x * x;
  V p = at::vec::fmadd(x2, V(-1382.f / 155925.f), V(62.f / 2835.f));
  p = at::vec::fmadd(x2, p, V(-17.f / 315.f));
  p = at::vec::fmadd(x2, p, V(2.f / 15.f));
  p = at::vec::fmadd(x2, p, V(-1.f / 3.f));
  const V small = at::vec::fmadd(x * x2, p, x);
  return V::blendv(large, small, ax < V(0.34657359f));
}

// body(j, count) for the vectors of units [j0, j1): full vectors, then one masked tail.
template <class T, class F>
inline void for_vectors(int64_t j0, int64_t j1, const F& body) {
  constexpr int64_t V = Vec<T>::size();
  int64_t j = j0;
  for (; j + V <= j1; j += V) body(j, V);
  if (j < j1) body(j, j1 - j);
}

template <class T>
inline Vec<T> load(const T* p, int64_t j, int64_t count) {
  return Vec<T>::loadu(p + j, count);
}

template <class T>
inline void store(T* p, int64_t j, int64_t count, const Vec<T>& v) {
  v.store(p + j, static_cast<int>(count));
}

// The element-wise pass of one step: f(row, j0, j1) over n rows and units [0, width). Run on the
// calling thread for small steps; split over rows and blocks of units across torch's intra-op
// threads from kParallelWork elements (n * width) on. A pass costs about 3-4 ns per element,
// forward and backward alike (perf, one thread); torch's OpenMP threads are still spinning from
// the matrix product, so waking them is cheap. Measured on 2 cores (LSTM, interleaved runs, min
// of 15): from 1024 elements on, splitting makes a training step 4-15% faster (B x H = 20 x 200:
// -15%, 16 x 128: -5%, 32 x 256: -5%, 64 x 512: -4%); at 512 elements it makes it slower (+5-13%).
constexpr int64_t kParallelWork = 1 << 10;
constexpr int64_t kUnitBlock = 256;

template <class F>
inline void for_rows(int64_t n, int64_t width, const F& f) {
  if (n * width < kParallelWork || at::get_num_threads() < 2 || at::in_parallel_region()) {
    for (int64_t r = 0; r < n; ++r) f(r, int64_t(0), width);
    return;
  }
  const int64_t blocks = (width + kUnitBlock - 1) / kUnitBlock;
  const int64_t grain = std::max<int64_t>(1, (kParallelWork / 4) / kUnitBlock);
  at::parallel_for(0, n * blocks, grain, [&](int64_t begin, int64_t end) {
    FlushDenormalGuard ftz;  // worker threads keep their own MXCSR
    for (int64_t i = begin; i < end; ++i) {
      const int64_t r = i / blocks, j0 = (i % blocks) * kUnitBlock;
      f(r, j0, std::min(width, j0 + kUnitBlock));
    }
  });
}

}  // namespace lstmkit
