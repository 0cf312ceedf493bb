// The compiled engine's contract between the time loop (engine.cpp) and the cells (lstm.cpp,
// gru.cpp, rnn.cpp, lstm_ln.cpp, gru_ln.cpp, slstm.cpp). Mirrors lstmkit/engine/sequence.py
// and lstmkit/cells/*.py: the engine owns time, packed batches, state histories and the
// whole-sequence products; a cell owns the equations of one step, forward and backward.
//
// Tensors are time-major and contiguous: gates (T, B, G*H), hist[k] (T+1, B, size_k),
// step buffers (T, B, width), dgates (T, B, G*H), dhist[k] (T, B, size_k). At step s only the
// first bs[s] rows (a prefix of the batch) are active.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace lstmkit {

using at::Tensor;

enum Family : int64_t { kLSTM = 0, kGRU = 1, kRNN = 2, kLSTMLN = 3, kGRULN = 4, kSLSTM = 5 };

// What the python cell says about itself: the seven ints of Cell.spec (lstmkit/cells/base.py).
struct Spec {
  int64_t family = kLSTM;
  int64_t H = 0;          // hidden size
  int64_t P = 0;          // size of h_t (proj_size or H)
  bool peephole = false;  // LSTM
  bool coupled = false;   // LSTM
  bool reset_after = true;  // GRU
  bool relu = false;      // RNN
  int64_t heads = 1;      // sLSTM: heads of the block-diagonal recurrence
  bool exp_forget = false;  // sLSTM: f_t = exp(f~_t) rather than sigma(f~_t)
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
  // recurrent dropout and zoneout (lstmkit/engine/sequence.py's Masks): h_mask (B, P) or
  // undefined; zone[k] (T, B, size_k) or undefined per state; rh (T, B, P) m * h_{t-1} of each
  // step; raw[k] (T, B, size_k) the states a step computed, before zoneout, where zoned
  Tensor h_mask, rh;
  std::vector<Tensor> zone, raw;
  // What the cells read and write, views the engine sets (set_step_views) so that a cell needs
  // no mask of its own: prev[k] (T, B, size_k) state k before step s (hist[k][s]); h_in (T, B, P)
  // h_{t-1} as the recurrent products see it (rh or prev[0]); next[k] where step s writes state
  // k (hist[k][s+1], or raw[k]); backward: dnext[k] dL/d(next[k]) (dhist[k], or dL/d(raw[k]))
  std::vector<Tensor> prev, next, dnext;
  Tensor h_in;
  // backward
  Tensor dgates;
  Tensor dgates_lp;  // bfloat16 copy of dgates for the products (lowp); see dgates_rows
  Tensor dgates_t;   // (G*H, T*B): dgates transposed for the weight gradients (dgates_t_mm)
  std::vector<Tensor> gbufs, dhist, dstates0;
};

// b_ih: set by a cell that does not hoist its bias (else d b_ih is the sum of dgates).
struct RecurrentGrads {
  Tensor w_hh, b_ih, b_hh, w_ch, w_hr;
};

// One cell family for one scalar type. The engine calls forward_step for s = 0..T-1 and
// backward_step for s = T-1..0 on rows [r0, r0 + n) of the batch: all n = bs[s] active rows
// (r0 = 0), or, where the cell splits_rows(), one thread's share of them (below, ":n" reads
// "r0:r0+n").
//
// Forward step s: gates[s, :n] holds W_ih x_s + b on entry; the step leaves the activated
// gates there and writes the states after the step into next[k][s, :n] (and its step buffers),
// reading the states before it from prev[k][s, :n], and h_{t-1} for its recurrent products from
// h_in[s, :n].
// Backward step s: dnext[k][s, :n] holds on entry the outside gradient plus what step s+1
// sent back; for h that is the total, for c the step completes it to the total in place. The step
// writes dL/d(pre-activations) into dgates[s, :n] and ADDS dL/d(states at s-1) into
// dprev[k] = dhist[k][s-1, :n] (or the gradient of the initial states at s = 0). Recurrent
// dropout: where h_{t-1} enters the step only through the products (h_slot() false), dprev[0]
// is a scratch the engine masks and adds to dL/dh_{t-1}; else (the GRUs) the engine appends
// such a scratch to dprev, and the cell adds its products' gradient into dprev.back() (which is
// dprev[0] without recurrent dropout) and the rest of dL/dh_{t-1} into dprev[0].
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
  // false when no bias joins the hoisted input projection (it comes after a normalisation): then
  // dgates is not dL/d(pre-activation) and recurrent_grads gives b_ih's gradient and b_hh's
  virtual bool hoists_bias() const { return true; }
  virtual void prepare(Sequence& q, bool forward) {}
  // true when every per-step recurrent product is h W_hh^T (forward) and dgates W_hh (backward)
  // through add_recurrent, so that the engine may pack W_hh for oneDNN
  virtual bool packs_recurrent() const { return false; }
  virtual bool splits_rows() const { return false; }
  // true when h_{t-1} also enters the step outside the recurrent products (Cell.h_products
  // "slot", the GRUs): recurrent dropout masks the products' h_in only
  virtual bool h_slot() const { return false; }
  virtual void forward_step(Sequence& q, int64_t s, int64_t r0, int64_t n) = 0;
  virtual void backward_step(Sequence& q, int64_t s, int64_t r0, int64_t n,
                             const std::vector<Tensor>& dprev) = 0;
  virtual RecurrentGrads recurrent_grads(Sequence& q) = 0;
};

std::unique_ptr<CellKernels> make_lstm(const Spec& spec, at::ScalarType dtype);
std::unique_ptr<CellKernels> make_gru(const Spec& spec, at::ScalarType dtype);
std::unique_ptr<CellKernels> make_rnn(const Spec& spec, at::ScalarType dtype);
std::unique_ptr<CellKernels> make_lstm_ln(const Spec& spec, at::ScalarType dtype);
std::unique_ptr<CellKernels> make_gru_ln(const Spec& spec, at::ScalarType dtype);
std::unique_ptr<CellKernels> make_slstm(const Spec& spec, at::ScalarType dtype);

// ------------------------------------------------------------------ views
template <class T>
inline T* ptr(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// t[s, r0:r0+n] of a contiguous (S, B, W) tensor as an (n, W) view.
inline Tensor rows(const Tensor& t, int64_t s, int64_t n, int64_t r0 = 0) {
  const int64_t B = t.size(1), W = t.size(2);
  return t.as_strided({n, W}, {W, 1}, t.storage_offset() + (s * B + r0) * W);
}

// A contiguous (S, B, W) tensor as (S * B, W).
inline Tensor flat(const Tensor& t) { return t.view({-1, t.size(-1)}); }

}  // namespace lstmkit
