// LayerNorm over one row of a step, forward and backward, and the column sums of the gains' and
// biases' gradients: what the LayerNorm cells share (lstm_ln.cpp, gru_ln.cpp;
// lstmkit/cells/layernorm.py).
//
//     LN(u) = (u - mean(u)) * rstd,  rstd = 1 / sqrt(var(u) + eps),  var biased, eps = 1e-5
//     dL/du = rstd * (g - mean(g) - LN(u) * mean(g * LN(u)))   for g = dL/dLN(u)
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "vec_math.h"

namespace lstmkit {

constexpr double kLayerNormEps = 1e-5;   // torch.nn.functional.layer_norm's default

// acc + v over the first count lanes of v: the lanes past a masked load's count are padding,
// and (u - mean) is not zero there.
template <class T>
inline Vec<T> add_lanes(const Vec<T>& acc, const Vec<T>& v, int64_t count) {
  return count == Vec<T>::size() ? acc + v : acc + Vec<T>::set(Vec<T>(T(0)), v, count);
}

template <class T>
inline T lane_sum(const Vec<T>& v) {
  __at_align__ T lanes[Vec<T>::size()];
  v.store(lanes);
  T sum = 0;
  for (int64_t i = 0; i < Vec<T>::size(); ++i) sum += lanes[i];
  return sum;
}

template <class T>
struct Moments {
  T mean, rstd;
};

// mean and rstd of a row u (W): two passes, the sum and then the squared deviations from the
// mean (a one-pass sum of squares loses float32 digits when |mean| >> std).
template <class T>
inline Moments<T> moments(const T* u, int64_t W) {
  Vec<T> sum(T(0));
  for_vectors<T>(0, W, [&](int64_t j, int64_t k) { sum = add_lanes(sum, load(u, j, k), k); });
  const T mean = lane_sum(sum) / T(W);
  const Vec<T> m(mean);
  Vec<T> sq(T(0));
  for_vectors<T>(0, W, [&](int64_t j, int64_t k) {
    const Vec<T> d = load(u, j, k) - m;
    sq = add_lanes(sq, d * d, k);
  });
  return {mean, T(1) / std::sqrt(lane_sum(sq) / T(W) + T(kLayerNormEps))};
}

// The two sums LN's backward needs over a row, sum(g) and sum(g * xhat), accumulated a vector
// at a time; mean_g() and mean_gx() once the row is done.
template <class T>
struct BackwardSums {
  Vec<T> g{T(0)}, gx{T(0)};
  void add(const Vec<T>& gv, const Vec<T>& xhat, int64_t count) {
    g = add_lanes(g, gv, count);
    gx = add_lanes(gx, gv * xhat, count);
  }
  Vec<T> mean_g(int64_t W) const { return Vec<T>(lane_sum(g) / T(W)); }
  Vec<T> mean_gx(int64_t W) const { return Vec<T>(lane_sum(gx) / T(W)); }
};

// dL/du = rstd * (g - mean(g) - xhat * mean(g xhat)) for one vector of a row.
template <class T>
inline Vec<T> layer_norm_backward(const Vec<T>& g, const Vec<T>& xhat, const Vec<T>& rstd,
                                  const Vec<T>& mean_g, const Vec<T>& mean_gx) {
  return rstd * (g - mean_g - xhat * mean_gx);
}

// The gains' and biases' gradients over all steps and rows, for R contiguous rows of W units:
// out_b[j] = sum_r a[r, j] * b[r, j], out_c[j] = sum_r a[r, j] * c[r, j] (c null: none), and
// out_sum[j] = sum_r a[r, j] (null: none). One pass that reads a once, row after row (the sums
// stay in L1), the units split over torch's threads; ATen's multiply-and-sum per vector read
// everything twice with temporaries.
template <class T>
inline void column_sums(const T* a, const T* b, const T* c, int64_t R, int64_t W, T* out_b,
                        T* out_c, T* out_sum) {
  at::parallel_for(0, W, 16, [&](int64_t j0, int64_t j1) {
    std::fill(out_b + j0, out_b + j1, T(0));
    if (c) std::fill(out_c + j0, out_c + j1, T(0));
    if (out_sum) std::fill(out_sum + j0, out_sum + j1, T(0));
    for (int64_t r = 0; r < R; ++r) {
      const T* ar = a + r * W;
      const T* br = b + r * W;
      const T* cr = c ? c + r * W : nullptr;
      for_vectors<T>(j0, j1, [&](int64_t j, int64_t k) {
        const Vec<T> av = load(ar, j, k);
        store(out_b, j, k, at::vec::fmadd(av, load(br, j, k), load(out_b, j, k)));
        if (cr) store(out_c, j, k, at::vec::fmadd(av, load(cr, j, k), load(out_c, j, k)));
        if (out_sum) store(out_sum, j, k, load(out_sum, j, k) + av);
      });
    }
  });
}

}  // namespace lstmkit
