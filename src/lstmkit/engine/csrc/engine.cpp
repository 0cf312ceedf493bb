// The compiled engine's time loop, forward and backward (lstmkit/engine/sequence.py's
// SequenceFunction in C++), and its python bindings. The autograd.Function around it lives in
// lstmkit/engine/compiled.py.
//
// Forward: the input projection of all T steps in one matrix product, then per step the cell's
// forward_step (one recurrent product and one fused element-wise pass). Backward: the steps in
// reverse; dhist[k][s] starts as the outside gradient of state k after step s and each step adds
// what it sends back to step s-1; then dx, dW_ih, db and the cell's recurrent weight gradients as
// single products over all steps. FTZ/DAZ is on for the whole call and restored on return.
// lowp (bfloat16 autocast): every product in bfloat16 (products.h), all else in float32.
// onednn (large float32 calls, and bfloat16 ones): the weight products (input projection, each
// step's recurrent products, dx) on oneDNN's prepacked inner product (onednn.cpp), the weights
// reordered once per call. float32 calls of up to 64 rows (AVX-512 builds, brgemm_steps) run
// their per-step products on brgemm whatever their size, and, when not on oneDNN, the input
// projection, dx and the weight gradients on brgemm tiles (brgemm.h, products.h).
#include <torch/extension.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <string>

#include "brgemm.h"
#include "denormals.h"
#include "masks.h"
#include "onednn.h"
#include "products.h"
#include "sequence.h"
#include "thresholds.h"

namespace lstmkit {
namespace {

using OptTensor = std::optional<Tensor>;

Spec make_spec(const std::vector<int64_t>& v) {
  TORCH_CHECK(v.size() == 7, "lstmkit compiled engine: bad cell spec");
  Spec s;
  s.family = v[0];
  s.H = v[1];
  s.P = v[2];
  s.peephole = v[3] != 0;
  s.coupled = v[4] != 0;
  s.reset_after = v[5] != 0;
  s.relu = v[6] != 0;
  if (s.family == kSLSTM) {   // sLSTM's options: heads, exponential forget gate
    s.heads = v[3];
    s.exp_forget = v[4] != 0;
  }
  return s;
}

std::unique_ptr<CellKernels> make_cell(const Spec& spec, at::ScalarType dtype) {
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "lstmkit compiled engine: float32 or float64 only, got ", dtype);
  switch (spec.family) {
    case kLSTM: return make_lstm(spec, dtype);
    case kGRU: return make_gru(spec, dtype);
    case kRNN: return make_rnn(spec, dtype);
    case kLSTMLN: return make_lstm_ln(spec, dtype);
    case kGRULN: return make_gru_ln(spec, dtype);
    case kSLSTM: return make_slstm(spec, dtype);
  }
  TORCH_CHECK(false, "lstmkit compiled engine: unknown cell family ", spec.family);
}

Tensor contiguous_or_undefined(const OptTensor& t) {
  return t.has_value() && t->defined() ? t->contiguous() : Tensor();
}

Sequence make_sequence(const std::vector<int64_t>& spec, const std::vector<int64_t>& bs,
                       const Tensor& x, const Tensor& w_ih, const Tensor& w_hh,
                       const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_ch,
                       const OptTensor& w_hr, bool lowp, bool onednn) {
  Sequence q;
  q.spec = make_spec(spec);
  q.lowp = lowp;
  q.onednn = onednn && x.scalar_type() == at::kFloat && onednn_available();
  TORCH_CHECK(x.dim() == 3 && x.device().is_cpu(), "lstmkit compiled engine: x must be a "
              "(T, B, I) CPU tensor");
  q.x = x.contiguous();
  q.T = x.size(0);
  q.B = x.size(1);
  q.packed = !bs.empty();
  q.bs = q.packed ? bs : std::vector<int64_t>(q.T, q.B);
  TORCH_CHECK(static_cast<int64_t>(q.bs.size()) == q.T,
              "lstmkit compiled engine: batch_sizes must have one entry per step");
  q.w.w_ih = w_ih.contiguous();
  q.w.w_hh = w_hh.contiguous();
  q.w.b_ih = contiguous_or_undefined(b_ih);
  q.w.b_hh = contiguous_or_undefined(b_hh);
  q.w.w_ch = contiguous_or_undefined(w_ch);
  q.w.w_hr = contiguous_or_undefined(w_hr);
  if (lowp) {  // the weights enter products only: rounded to bfloat16 once per call
    TORCH_CHECK(q.x.scalar_type() == at::kFloat, "lstmkit compiled engine: bfloat16 products "
                "take float32 inputs, got ", q.x.scalar_type());
    q.w.w_ih = lp(q.w.w_ih);
    q.w.w_hh = lp(q.w.w_hh);
    if (q.w.w_hr.defined()) q.w.w_hr = lp(q.w.w_hr);
  }
  return q;
}

// The threads that share a call's rows, each running its rows through the whole time loop with
// no synchronisation between steps (CellKernels::splits_rows); 1: the steps run one after
// another over all rows, each step's work split over the threads (two parallel regions per
// step, and each step reads what the other thread wrote). One LSTM forward step, 2 threads,
// against that split: 20 x 200 -8%, 16 x 128 -12%, 32 x 256 -20%; at 64 x 512 no faster
// (W_hh^T, 4 MB, no longer fits a core's L2 when each thread streams all of it). Training
// step, interleaved A/B: 35 x 20 x 200 -3%, 200 x 16 x 128 -4.5%, 100 x 32 x 256 -5.5%. So:
// float32 brgemm steps, at least 8 rows per thread, W_hh at most 2 MB.
constexpr int64_t kMinRowsPerThread = 8;
constexpr int64_t kMaxSplitWeights = int64_t(1) << 19;   // P x G*H floats

int64_t row_groups(const Sequence& q, const CellKernels& cell) {
  const int64_t threads = at::get_num_threads();
  if (threads < 2 || !cell.splits_rows() || !brgemm_steps(q) ||
      q.B < kMinRowsPerThread * 2 || q.w.w_hh.numel() > kMaxSplitWeights)
    return 1;
  return std::min(threads, q.B / kMinRowsPerThread);
}

// f(g, r0, r1) for each of `groups` row groups [r0, r1) of the batch, one per thread (FTZ/DAZ
// set on each), or f(0, 0, B) on this thread.
template <class F>
void for_row_groups(const Sequence& q, int64_t groups, const F& f) {
  if (groups == 1) {
    f(0, 0, q.B);
    return;
  }
  at::parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
    FlushDenormalGuard ftz;
    for (int64_t g = g0; g < g1; ++g) f(g, q.B * g / groups, q.B * (g + 1) / groups);
  });
}

// true when the call's per-step recurrent products run on W_hh packed for oneDNN (brgemm takes
// the float32 steps of up to 64 rows even then: brgemm_steps)
bool packs_recurrent_for_onednn(const Sequence& q, const CellKernels& cell) {
  return q.onednn && cell.packs_recurrent() && !brgemm_steps(q);
}

// dhist[s, :bs[s]] = the outside gradient, zero on the inactive rows (the python engine adds the
// outside gradient on the active rows only), or all zero when there is none.
void init_outside_grad(Tensor& d, const OptTensor& grad, const Sequence& q) {
  if (!grad.has_value() || !grad->defined()) {
    d.zero_();
    return;
  }
  const Tensor g = grad->contiguous();
  if (!q.packed) {
    d.copy_(g);
    return;
  }
  const int64_t row = d.size(2) * d.element_size();
  auto* dst = static_cast<char*>(d.data_ptr());
  const auto* src = static_cast<const char*>(g.data_ptr());
  for (int64_t s = 0; s < q.T; ++s) {
    const int64_t step = s * q.B * row, active = q.bs[s] * row;
    std::memcpy(dst + step, src + step, active);
    std::memset(dst + step + active, 0, q.B * row - active);
  }
}

// Recurrent dropout and zoneout (masks.h): h_mask (B, P) or None; zone[k] (T, B, size_k) or
// None per state (or an empty list). Returns true when the call has any.
bool set_masks(Sequence& q, const OptTensor& h_mask, const std::vector<OptTensor>& zone,
               const std::vector<int64_t>& sizes) {
  TORCH_CHECK(zone.empty() || zone.size() == sizes.size(),
              "lstmkit compiled engine: one zoneout mask (or None) per state");
  auto check = [&](const Tensor& t, std::vector<int64_t> shape, const char* what) {
    TORCH_CHECK(t.sizes() == at::IntArrayRef(shape) && t.scalar_type() == q.x.scalar_type(),
                "lstmkit compiled engine: ", what, " must be ", at::IntArrayRef(shape), " of the "
                "input's dtype, got ", t.sizes(), " ", t.scalar_type());
  };
  bool any = false;
  q.zone.assign(sizes.size(), Tensor());
  for (size_t k = 0; k < zone.size(); ++k) {
    if (!zone[k].has_value() || !zone[k]->defined()) continue;
    check(*zone[k], {q.T, q.B, sizes[k]}, "a zoneout mask");
    q.zone[k] = zone[k]->contiguous();   // evaluation's expanded constant included
    any = true;
  }
  if (h_mask.has_value() && h_mask->defined()) {
    check(*h_mask, {q.B, sizes[0]}, "the recurrent dropout mask");
    q.h_mask = h_mask->contiguous();
    any = true;
  }
  return any;
}

// The views the cells read and write (sequence.h): prev, next and h_in; dnext in backward.
void set_step_views(Sequence& q) {
  const int64_t T = q.T;
  q.prev.clear();
  q.next.clear();
  for (size_t k = 0; k < q.hist.size(); ++k) {
    q.prev.push_back(q.hist[k].narrow(0, 0, T));
    const bool zoned = k < q.raw.size() && q.raw[k].defined();
    q.next.push_back(zoned ? q.raw[k] : q.hist[k].narrow(0, 1, T));
  }
  q.h_in = q.rh.defined() ? q.rh : q.prev[0];
}

// ------------------------------------------------------------------ forward
std::tuple<Tensor, std::vector<Tensor>, std::vector<Tensor>> forward(
    const std::vector<int64_t>& spec, const std::vector<int64_t>& batch_sizes, const Tensor& x,
    const std::vector<Tensor>& states0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_ch, const OptTensor& w_hr,
    const OptTensor& h_mask, const std::vector<OptTensor>& zone, bool lowp, bool onednn) {
  start_workers_unflushed();
  FlushDenormalGuard ftz;
  at::AutoDispatchBelowADInplaceOrView below_autograd;   // our own tensors: no views to track
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);  // input dtype
  Sequence q =
      make_sequence(spec, batch_sizes, x, w_ih, w_hh, b_ih, b_hh, w_ch, w_hr, lowp, onednn);
  auto cell = make_cell(q.spec, x.scalar_type());
  const int64_t T = q.T, B = q.B, I = q.x.size(2), GH = cell->gate_width();

  // W_ih x_t + b for every step at once: (T, B, I) -> (T, B, G*H), one matrix product
  const Tensor x2 = q.x.view({T * B, I});
  Tensor bias = cell->hoists_bias() ? q.w.b_ih : Tensor();
  if (bias.defined() && cell->bias_hh_hoisted()) bias = q.w.b_ih + q.w.b_hh;
  if (q.onednn && q.lowp) {   // bfloat16 product, then + b in float32 as addmm(q, ...) does
    q.gates = widen_lp(q, onednn_linear(lp(x2), onednn_pack(q.w.w_ih, T * B), Tensor()), bias)
                  .view({T, B, GH});
  } else if (q.onednn) {
    q.gates = onednn_linear(x2, onednn_pack(q.w.w_ih, T * B), bias).view({T, B, GH});
  } else if (brgemm_steps(q) && T >= kTransposeMinSteps) {   // copies W_ih^T: not for T = 1
    q.gates = at::empty({T, B, GH}, q.x.options());
    const Tensor w_ih_t = transposed(q.w.w_ih);   // (I, G*H)
    gemm_brgemm(T * B, GH, I, x2.data_ptr<float>(), I, w_ih_t.data_ptr<float>(), GH,
                q.gates.data_ptr<float>(), GH, false,
                bias.defined() ? bias.contiguous().data_ptr<float>() : nullptr);
  } else {
    q.gates = (bias.defined() ? addmm(q, bias, x2, q.w.w_ih.t()) : mm(q, x2, q.w.w_ih.t()))
                  .view({T, B, GH});
  }

  const auto sizes = cell->state_sizes();
  TORCH_CHECK(states0.size() == sizes.size(), "lstmkit compiled engine: expected ",
              sizes.size(), " initial states");
  for (size_t k = 0; k < sizes.size(); ++k) {
    Tensor h = at::empty({T + 1, B, sizes[k]}, q.x.options());   // (T+1, B, size)
    h[0].copy_(states0[k]);
    // packed: rows that have not started (a reverse pass) or have ended keep the initial state
    if (q.packed) h.narrow(0, 1, T).copy_(states0[k].unsqueeze(0).expand({T, B, sizes[k]}));
    q.hist.push_back(h);
  }
  // padding rows must stay finite
  auto buffer = [&](int64_t width) {
    return q.packed ? at::zeros({T, B, width}, q.x.options())
                    : at::empty({T, B, width}, q.x.options());
  };
  for (int64_t width : cell->step_buffers()) q.bufs.push_back(buffer(width));
  const bool masked = set_masks(q, h_mask, zone, sizes);
  if (q.h_mask.defined()) q.rh = buffer(sizes[0]);
  for (size_t k = 0; k < sizes.size(); ++k)
    q.raw.push_back(q.zone[k].defined() ? buffer(sizes[k]) : Tensor());
  set_step_views(q);

  // W_hh^T (P, G*H) made contiguous runs the per-step product 15-50% faster than the transposed
  // view, but the copy costs as much as 6-17 steps (measured: 40 us for 512 x 128): worth it
  // for longer sequences only. Step-by-step generation (T = 1) never copies.
  q.w.w_hh_t = T >= kTransposeMinSteps ? transposed(q.w.w_hh) : q.w.w_hh.t();
  if (packs_recurrent_for_onednn(q, *cell)) q.w.w_hh_pk = onednn_pack(q.w.w_hh, B);
  cell->prepare(q, /*forward=*/true);
  for_row_groups(q, row_groups(q, *cell), [&](int64_t, int64_t r0, int64_t r1) {
    int64_t ready = r0;   // rows [r0, ready) of step s have r_{t-1} (the step before made it)
    for (int64_t s = 0; s < T; ++s) {
      const int64_t end = std::min(r1, q.bs[s]);   // active rows are a prefix of the batch
      if (end <= r0) {
        ready = r0;
        continue;
      }
      if (q.h_mask.defined() && ready < end) mask_h(q, s, ready, end);
      cell->forward_step(q, s, r0, end - r0);
      if (masked) {
        ready = s + 1 < T ? std::clamp(std::min(r1, q.bs[s + 1]), r0, end) : r0;
        after_forward(q, s, r0, end, ready);
      }
    }
  });
  // as the python engine's bufs: the cell's, then rh and the states before zoneout
  std::vector<Tensor> bufs = q.bufs;
  if (q.rh.defined()) bufs.push_back(q.rh);
  for (const Tensor& r : q.raw)
    if (r.defined()) bufs.push_back(r);
  return {q.gates, q.hist, bufs};
}

// ------------------------------------------------------------------ backward
// needs: [x, states0..., w_ih, w_hh, b_ih, b_hh, w_ch, w_hr] as ctx.needs_input_grad gives them.
// Returns [dx, dstates0..., dw_ih, dw_hh, db_ih, db_hh, dw_ch, dw_hr], undefined (None) where not
// needed or absent.
std::vector<Tensor> backward(
    const std::vector<int64_t>& spec, const std::vector<int64_t>& batch_sizes, const Tensor& x,
    const Tensor& gates, const std::vector<Tensor>& hist, const std::vector<Tensor>& bufs,
    const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
    const OptTensor& w_ch, const OptTensor& w_hr, const std::vector<OptTensor>& grad_hist,
    const Tensor& dgates, const std::vector<Tensor>& gbufs, const std::vector<Tensor>& dhist,
    const std::vector<bool>& needs, const OptTensor& h_mask, const std::vector<OptTensor>& zone,
    const std::vector<OptTensor>& dzone, bool lowp, bool onednn) {
  start_workers_unflushed();
  FlushDenormalGuard ftz;
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  Sequence q =
      make_sequence(spec, batch_sizes, x, w_ih, w_hh, b_ih, b_hh, w_ch, w_hr, lowp, onednn);
  auto cell = make_cell(q.spec, x.scalar_type());
  const int64_t T = q.T, B = q.B;
  const auto sizes = cell->state_sizes();
  const size_t K = sizes.size();
  TORCH_CHECK(hist.size() == K && dhist.size() == K && grad_hist.size() == K &&
                  needs.size() == 1 + K + 6,
              "lstmkit compiled engine: backward got the wrong number of tensors");
  // the steps index these through raw pointers: contiguous, time-major, the expected widths
  auto check = [&](const Tensor& t, int64_t steps, int64_t width, const char* what) {
    TORCH_CHECK(t.is_contiguous() && t.dim() == 3 && t.size(0) == steps && t.size(1) == B &&
                    t.size(2) == width && t.scalar_type() == q.x.scalar_type(),
                "lstmkit compiled engine: ", what, " must be a contiguous (", steps, ", ", B, ", ",
                width, ") tensor of the input's dtype");
  };
  check(gates, T, cell->gate_width(), "gates");
  check(dgates, T, cell->gate_width(), "dgates");
  const auto widths = cell->step_buffers();
  const bool masked = set_masks(q, h_mask, zone, sizes);
  // bufs as forward returned them: the cell's, then rh and the states before zoneout
  size_t extra = widths.size();
  if (q.h_mask.defined()) {
    TORCH_CHECK(bufs.size() > extra, "lstmkit compiled engine: no masked h buffer");
    check(bufs[extra], T, sizes[0], "the masked h buffer");
    q.rh = bufs[extra++];
  }
  q.raw.assign(K, Tensor());
  std::vector<Tensor> draw(K);   // dL/d(the states before zoneout)
  TORCH_CHECK(dzone.empty() || dzone.size() == K, "lstmkit compiled engine: wrong dzone");
  for (size_t k = 0; k < K; ++k) {
    if (!q.zone[k].defined()) continue;
    TORCH_CHECK(bufs.size() > extra && dzone.size() == K && dzone[k].has_value(),
                "lstmkit compiled engine: a zoned state needs its buffers");
    check(bufs[extra], T, sizes[k], "a state before zoneout");
    check(*dzone[k], T, sizes[k], "a zoneout gradient buffer");
    q.raw[k] = bufs[extra++];
    draw[k] = *dzone[k];
  }
  TORCH_CHECK(bufs.size() == extra, "lstmkit compiled engine: wrong step buffers");
  for (size_t i = 0; i < widths.size(); ++i) check(bufs[i], T, widths[i], "a step buffer");
  for (size_t k = 0; k < K; ++k) {
    check(hist[k], T + 1, sizes[k], "a state history");
    check(dhist[k], T, sizes[k], "a state gradient");
  }
  for (const Tensor& g : gbufs) check(g, T, g.size(2), "a grad buffer");
  q.gates = gates;
  q.hist = hist;
  q.bufs.assign(bufs.begin(), bufs.begin() + widths.size());
  q.dgates = dgates;   // (T, B, G*H), zero on inactive rows when packed
  q.gbufs = gbufs;
  q.dhist = dhist;
  for (size_t k = 0; k < K; ++k) {
    init_outside_grad(q.dhist[k], grad_hist[k], q);
    q.dstates0.push_back(at::zeros({B, sizes[k]}, q.x.options()));
  }
  set_step_views(q);
  for (size_t k = 0; k < K; ++k) q.dnext.push_back(draw[k].defined() ? draw[k] : q.dhist[k]);
  // recurrent dropout: the cell's products add dL/dr_{t-1} here (rows of step s), the engine
  // adds m * it to dL/dh_{t-1}
  const Tensor scratch = q.h_mask.defined() ? at::empty({B, sizes[0]}, q.x.options()) : Tensor();

  if (packs_recurrent_for_onednn(q, *cell)) q.w.w_hh_t_pk = onednn_pack(transposed(q.w.w_hh), B);
  cell->prepare(q, /*forward=*/false);
  for_row_groups(q, row_groups(q, *cell), [&](int64_t, int64_t r0, int64_t r1) {
    std::vector<Tensor> dprev(K), dprev_cell;
    int64_t ready = r0;   // rows [r0, ready) of step s have dL/ds~ (the step after made it)
    for (int64_t s = T - 1; s >= 0; --s) {
      const int64_t end = std::min(r1, q.bs[s]), n = end - r0;   // rows [r0, end) active
      if (n <= 0) {
        ready = r0;
        continue;
      }
      for (size_t k = 0; k < K; ++k)       // where step s sends dL/d(states at s-1)
        dprev[k] = s ? rows(q.dhist[k], s - 1, n, r0) : q.dstates0[k].narrow(0, r0, n);
      if (!masked) {
        cell->backward_step(q, s, r0, n, dprev);
      } else {
        if (ready < end) zone_grad(q, scratch, s, ready, end);
        dprev_cell = dprev;
        if (scratch.defined()) {
          const Tensor g = scratch.narrow(0, r0, n);
          if (cell->h_slot()) dprev_cell.push_back(g);
          else dprev_cell[0] = g;
        }
        cell->backward_step(q, s, r0, n, dprev_cell);
        ready = s ? std::clamp(std::min(r1, q.bs[s - 1]), r0, end) : r0;
        after_backward(q, scratch, dprev, s, r0, end, ready);
      }
      const int64_t a = s ? std::max(r0, q.bs[s - 1]) : end;
      if (a < end) {
        // rows that start at step s (a reverse pass over a packed batch): what step s sent
        // back is dL/d(initial state)
        for (size_t k = 0; k < K; ++k) {
          Tensor d = rows(q.dhist[k], s - 1, end - a, a);
          q.dstates0[k].narrow(0, a, end - a).copy_(d);
          d.zero_();
        }
      }
    }
  });

  // the whole-sequence products take dgates as q.dgates_lp: a bfloat16 copy with lowp (made
  // step by step where the cell's recurrent product took it so), else dgates itself
  if (!q.lowp) q.dgates_lp = q.dgates;
  else if (!q.dgates_lp.defined()) q.dgates_lp = lp(q.dgates);
  const size_t W = 1 + K;  // index of w_ih in needs
  std::vector<Tensor> out;
  const Tensor dg = flat(q.dgates_lp);
  Tensor dx;                                                  // dgates W_ih
  if (needs[0] && q.onednn)
    dx = onednn_linear(dg, onednn_pack(transposed(q.w.w_ih), T * B), Tensor()).to(q.x.scalar_type());
  else if (needs[0] && brgemm_steps(q)) {
    dx = at::empty({T * B, q.x.size(2)}, q.x.options());
    gemm_brgemm(T * B, dx.size(1), dg.size(1), dg.data_ptr<float>(), dg.size(1),
                q.w.w_ih.data_ptr<float>(), dx.size(1), dx.data_ptr<float>(), dx.size(1), false);
  } else if (needs[0])
    dx = mm(q, dg, q.w.w_ih);
  out.push_back(needs[0] ? dx.view({T, B, -1}) : Tensor());
  for (size_t k = 0; k < K; ++k) out.push_back(needs[1 + k] ? q.dstates0[k] : Tensor());
  out.push_back(needs[W] ? dgates_t_mm(q, flat(q.x)) : Tensor());          // dW_ih
  const bool need_rec = needs[W + 1] || (needs[W + 3] && !cell->bias_hh_hoisted()) ||
                        (needs[W + 2] && !cell->hoists_bias()) || needs[W + 4] || needs[W + 5];
  RecurrentGrads rec = need_rec ? cell->recurrent_grads(q) : RecurrentGrads();
  Tensor db_ih, db_hh;
  if (q.w.b_ih.defined() && (needs[W + 2] || needs[W + 3])) {
    db_ih = rec.b_ih.defined() ? rec.b_ih : dgates_sum(q);
    db_hh = cell->bias_hh_hoisted() ? db_ih : rec.b_hh;
  }
  out.push_back(rec.w_hh);
  out.push_back(needs[W + 2] ? db_ih : Tensor());
  out.push_back(needs[W + 3] ? db_hh : Tensor());
  out.push_back(rec.w_ch);
  out.push_back(rec.w_hr);
  return out;
}

// The CPU capability the extension was compiled for, and whether at::vec::Vectorized<float> is
// a SIMD specialisation there (false: the scalar fallback, every exp and tanh a libm call).
std::string capability() {
#if defined(CPU_CAPABILITY_AVX512)
  return "AVX512";
#elif defined(CPU_CAPABILITY_AVX2)
  return "AVX2";
#else
  return "DEFAULT";
#endif
}

void release_buffers() { thread_buffer_slot() = Tensor(); }

// The bounds the python side needs to choose an engine (thresholds.h), so that it keeps no copy.
std::map<std::string, int64_t> thresholds() {
  return {{"brgemm_max_rows", kBrgemmMaxRows}, {"transpose_min_steps", kTransposeMinSteps}};
}

bool vectorized() {
  return at::vec::is_vec_specialized_for_v<float> && at::vec::is_vec_specialized_for_v<double>;
}

}  // namespace
}  // namespace lstmkit

void lstmkit_register_dropout(pybind11::module& m);  // dropout.cpp
void lstmkit_register_mlstm(pybind11::module& m);    // mlstm.cpp
void lstmkit_register_minrnn(pybind11::module& m);   // minrnn.cpp

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "lstmkit's compiled CPU engine: the BPTT time loop of every cell in C++";
  m.def("forward", &lstmkit::forward, "forward over a whole sequence -> (gates, hist, bufs)");
  m.def("backward", &lstmkit::backward, "backward over a whole sequence -> gradients");
  m.def("capability", &lstmkit::capability, "the CPU capability the extension was built for");
  m.def("vectorized", &lstmkit::vectorized, "Vectorized<float/double> are SIMD, not scalar");
  m.def("onednn", &lstmkit::onednn_available, "torch's oneDNN inner-product ops are there");
  m.def("thresholds", &lstmkit::thresholds, "the bounds compiled.py chooses engines by");
  m.def("release_buffers", &lstmkit::release_buffers, "free this thread's kept buffer");
  lstmkit_register_dropout(m);
  lstmkit_register_mlstm(m);
  lstmkit_register_minrnn(m);
}
