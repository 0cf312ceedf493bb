// oneDNN's prepacked inner product through torch's registered ops (onednn.cpp): pack a weight
// once per call, then run every product on it.
#pragma once

#include <ATen/ATen.h>

namespace lstmkit {

using at::Tensor;

bool onednn_available();
Tensor onednn_pack(const Tensor& w, int64_t batch);                          // w (out, in)
Tensor onednn_linear(const Tensor& a, const Tensor& w_packed, const Tensor& bias);  // a W^T + b

}  // namespace lstmkit
