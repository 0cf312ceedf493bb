// The element-wise passes of the steps: vectorised activations (at::vec::Vectorized), loads and
// stores with a masked tail, and the split of a step's rows over torch's threads.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>

#include "denormals.h"

namespace lstmkit {

template <class T>
using Vec = at::vec::Vectorized<T>;

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

// f(row) for each of n rows of width units, where a row's pass cannot be split into blocks of
// units (a LayerNorm needs the whole row's mean and variance first): on the calling thread for
// small steps, as for_rows; else the rows split over torch's intra-op threads.
template <class F>
inline void for_whole_rows(int64_t n, int64_t width, const F& f) {
  if (n * width < kParallelWork || at::get_num_threads() < 2 || at::in_parallel_region()) {
    for (int64_t r = 0; r < n; ++r) f(r);
    return;
  }
  const int64_t grain = std::max<int64_t>(1, (kParallelWork / 4) / width);
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    FlushDenormalGuard ftz;
    for (int64_t r = begin; r < end; ++r) f(r);
  });
}

}  // namespace lstmkit
