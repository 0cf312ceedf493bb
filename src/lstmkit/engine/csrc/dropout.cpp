// Dropout with a counter-based mask: element i of a call is kept when the top 32 bits of
// SplitMix64's output number i + 1 from the call's seed are at least p * 2^32, so the mask needs
// no state, is the same on any number of threads, and the backward pass recomputes it instead of
// storing it. torch's bernoulli_ draws one number at a time on one thread (about 6 ns an element
// here, a tenth of a character model's training step).
//
//     y = x * m / (1 - p),   m_i ~ Bernoulli(1 - p)   (forward)
//     dx = dy * m / (1 - p)                           (backward, the same m)
#include <torch/extension.h>

#include <cmath>
#include <cstdint>

namespace lstmkit {

using at::Tensor;

namespace {

inline uint64_t splitmix64(uint64_t z) {   // Steele, Lea & Flood 2014; Vigna's constants
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
constexpr uint64_t kGamma = 0x9e3779b97f4a7c15ULL;

template <class T>
void masked_scale(const T* x, T* y, int64_t n, uint64_t seed, uint64_t threshold, T scale) {
  at::parallel_for(0, n, 1 << 15, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const uint64_t u = splitmix64(seed + uint64_t(i + 1) * kGamma) >> 32;
      y[i] = x[i] * (u >= threshold ? scale : T(0));
    }
  });
}

template <class T>
void fill_bernoulli(T* y, int64_t n, uint64_t seed, uint64_t threshold) {
  at::parallel_for(0, n, 1 << 15, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const uint64_t u = splitmix64(seed + uint64_t(i + 1) * kGamma) >> 32;
      y[i] = u < threshold ? T(1) : T(0);
    }
  });
}

}  // namespace

// A float32 (float64) tensor of `sizes` whose element i is 1 with probability p (where number i
// of `seed` falls below p * 2^32), else 0: zoneout's masks (torch's bernoulli_ took a third of
// an LSTM training step with zoneout at 200 x 16 x 128).
Tensor bernoulli_mask(const std::vector<int64_t>& sizes, double p, int64_t seed, bool float64) {
  const at::ScalarType dtype = float64 ? at::kDouble : at::kFloat;
  TORCH_CHECK(p >= 0.0 && p <= 1.0, "lstmkit bernoulli: p in [0, 1], got ", p);
  Tensor out = at::empty(sizes, at::TensorOptions().dtype(dtype));
  const uint64_t threshold = static_cast<uint64_t>(std::llround(std::ldexp(p, 32)));
  AT_DISPATCH_FLOATING_TYPES(dtype, "lstmkit_bernoulli", [&] {
    fill_bernoulli<scalar_t>(out.data_ptr<scalar_t>(), out.numel(), static_cast<uint64_t>(seed),
                             threshold);
  });
  return out;
}

// x * m / (1 - p) for the mask of `seed`; backward passes dy here with the same seed.
Tensor dropout_apply(const Tensor& x, double p, int64_t seed) {
  TORCH_CHECK(x.device().is_cpu() && (x.scalar_type() == at::kFloat ||
                                      x.scalar_type() == at::kDouble),
              "lstmkit dropout: a float32 or float64 CPU tensor, got ", x.scalar_type(), " on ",
              x.device());
  TORCH_CHECK(p >= 0.0 && p < 1.0, "lstmkit dropout: p in [0, 1), got ", p);
  const Tensor in = x.contiguous();
  Tensor out = at::empty_like(in);
  const uint64_t threshold = static_cast<uint64_t>(std::llround(std::ldexp(p, 32)));
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "lstmkit_dropout", [&] {
    masked_scale<scalar_t>(in.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), in.numel(),
                           static_cast<uint64_t>(seed), threshold,
                           static_cast<scalar_t>(1.0 / (1.0 - p)));
  });
  return out;
}

}  // namespace lstmkit

// registered by engine.cpp's module
void lstmkit_register_dropout(pybind11::module& m) {
  m.def("dropout", &lstmkit::dropout_apply, "x * mask(seed) / (1 - p), float32/float64 CPU");
  m.def("bernoulli", &lstmkit::bernoulli_mask, "a 0/1 tensor, 1 with probability p, from seed");
}
