// The engine's matrix products: a call's weight products, each step's recurrent product and the
// whole-sequence weight gradients, on ATen (MKL), brgemm or oneDNN's prepacked weights.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "brgemm.h"
#include "onednn.h"
#include "sequence.h"
#include "vec_math.h"

namespace lstmkit {

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

#if defined(CPU_CAPABILITY_AVX512)
// true when a call's float32 per-step recurrent products (at most q.B rows) take brgemm even
// where the engine could pack W_hh for oneDNN: one step's product, 2 threads, brgemm against
// oneDNN's prepacked inner product: 32 x 256 x 1024 80 us against 100, 64 x 512 x 2048 610 us
// against 626, 16 x 128 x 512 11 us against 28.
inline bool brgemm_steps(const Sequence& q) {
  return !q.lowp && q.x.scalar_type() == at::kFloat && q.B <= kBrgemmMaxRows;
}
#else
inline bool brgemm_steps(const Sequence&) { return false; }
#endif

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

// x^T y for float32 x (R, M) and y (R, N), contiguous, on brgemm tiles from x transposed once.
inline Tensor brgemm_t_mm(const Tensor& x, const Tensor& y) {
  const int64_t R = x.size(0), M = x.size(1), N = y.size(1);
  const Tensor x_t = transposed(x);   // (M, R)
  Tensor out = at::empty({M, N}, y.options());
  gemm_brgemm(M, N, R, x_t.data_ptr<float>(), R, y.data_ptr<float>(), N, out.data_ptr<float>(),
              N, false);
  return out;
}

// a^T b for a (R, M) and b (R, N), both contiguous: a weight gradient summed over all steps and
// rows (R = T*B) from a buffer other than dgates. Small float32 calls run it on brgemm tiles,
// transposing the narrower operand: as (b^T a)^T when b is (h_{t-1} against a gate gradient,
// a quarter of the copy). MKL on the transposed view took 18% of a LayerNorm LSTM training step
// at 200 x 16 x 128, one thread, against 26% for all the brgemm products.
inline Tensor transposed_mm(const Sequence& q, const Tensor& a, const Tensor& b) {
  if (!brgemm_steps(q) || !a.is_contiguous() || !b.is_contiguous() ||
      a.scalar_type() != at::kFloat || b.scalar_type() != at::kFloat)
    return mm(q, a.t(), b);
  return b.size(1) < a.size(1) ? transposed(brgemm_t_mm(b, a)) : brgemm_t_mm(a, b);
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

}  // namespace lstmkit
