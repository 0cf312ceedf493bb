// The bounds at which the engine changes how it computes a call, where the python side must
// know them to choose an engine (lstmkit/engine/compiled.py reads them through the extension's
// thresholds(); it keeps no copy).
#pragma once

#include <cstdint>

namespace lstmkit {

// Per-step products of at most this many rows run on brgemm (AVX-512 builds; brgemm.h).
constexpr int64_t kBrgemmMaxRows = 64;

// From this many steps on, the engine copies W_ih^T and W_hh^T into contiguous tensors once per
// call (engine.cpp), which puts the input projection and the forward step products on brgemm.
constexpr int64_t kTransposeMinSteps = 16;

}  // namespace lstmkit
