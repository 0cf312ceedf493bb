// Test hooks into the compiled engine's building blocks, built as an extension of their own by
// the `hooks` fixture (tests/conftest.py) from the engine's headers, never part of the engine's
// module: the float32 tanh, the brgemm products and the blocked transpose on plain tensors, so
// that the tests hold each against torch directly.
#include <torch/extension.h>

#include <string>

#include "brgemm.h"
#include "vec_math.h"

namespace lstmkit {
namespace {

bool avx512() {
#if defined(CPU_CAPABILITY_AVX512)
  return true;
#else
  return false;
#endif
}

// The engine's float32 tanh on a 1-D tensor.
Tensor tanh_float(const Tensor& x) {
  TORCH_CHECK(x.dim() == 1 && x.scalar_type() == at::kFloat, "tanh_float: a 1-D float32 tensor");
  const Tensor in = x.contiguous();
  Tensor out = at::empty_like(in);
  const float* src = in.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  for_vectors<float>(0, in.numel(), [&](int64_t j, int64_t k) {
    store(dst, j, k, tanh(load(src, j, k)));
  });
  return out;
}

// out += a b on the per-step brgemm path when it applies; false when it does not.
bool brgemm_add_checked(Tensor out, const Tensor& a, const Tensor& b) {
  if (!brgemm_fits(out, a, b)) return false;
  brgemm_add(out, a, b);
  return true;
}

// out [+]= a b on the whole-sequence brgemm tiles; false where they do not apply.
bool brgemm_mm_checked(Tensor out, const Tensor& a, const Tensor& b, bool add) {
  if (!row_major_product(out, a, b) || !avx512()) return false;
  gemm_brgemm(a.size(0), b.size(1), a.size(1), a.data_ptr<float>(), a.size(1),
              b.data_ptr<float>(), b.size(1), out.data_ptr<float>(), out.size(1), add);
  return true;
}

// a^T of a 2-D float32 tensor through transposed (transpose_into); undefined where it does not
// apply.
Tensor transpose_checked(const Tensor& a) {
  if (a.dim() != 2 || a.scalar_type() != at::kFloat || !avx512()) return Tensor();
  return transposed(a.contiguous());
}

}  // namespace
}  // namespace lstmkit

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "test hooks into lstmkit's compiled engine (tests only)";
  m.def("avx512", &lstmkit::avx512, "built with the AVX-512 (brgemm) paths");
  m.def("tanh_float", &lstmkit::tanh_float, "the engine's float32 tanh");
  m.def("brgemm_add", &lstmkit::brgemm_add_checked, "out += a b on brgemm if it applies");
  m.def("brgemm_mm", &lstmkit::brgemm_mm_checked, "out [+]= a b on brgemm tiles if they apply");
  m.def("transpose", &lstmkit::transpose_checked, "a^T through the engine's transpose");
}
