// float32 products on the batch-reduce GEMM micro-kernel torch exports (oneDNN's brgemm), and the
// blocked transpose that feeds them. Built where ATen's vectorised types are AVX-512, where it was
// measured; elsewhere the stubs below say it does not apply and the callers take ATen's products.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/native/CPUBlas.h>

#include <algorithm>
#include <cstdint>

#include "thresholds.h"

namespace lstmkit {

using at::Tensor;

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
#else
inline void transpose_into(const float*, int64_t, int64_t, float*) {}
inline void gemm_brgemm(int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t,
                        float*, int64_t, bool, const float* = nullptr) {}
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

}  // namespace lstmkit
