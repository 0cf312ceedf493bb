// Recurrent dropout and zoneout in the compiled engine's time loop (lstmkit/engine/sequence.py's
// Masks and its walks). The cells never see a mask: they read h_{t-1} for their products from
// q.h_in (m * h_{t-1} under recurrent dropout), write their states into q.next (the states
// before zoneout where it acts) and take dL/d(those) from q.dnext; the engine runs, per step,
// one fused pass over the step's rows here, forward and backward:
//
//   forward, after step s:  s_t = s~_t + d_t (s_{t-1} - s~_t) for each zoned state, and
//                           r_t = m * h_t, what step s+1's products see
//   backward, after step s: dL/dh_{t-1} += m * (the products' gradient, a scratch),
//                           dL/ds_{t-1} += d_t dL/ds_t for each zoned state, and then, that
//                           gradient being complete, dL/ds~_{t-1} = (1 - d_{t-1}) dL/ds_{t-1},
//                           which step s-1 takes as the gradient of what it computed
//
// Rows a step did not reach (packed batches; rows that join late) take the same work in a pass
// of their own (mask_h, zone_grad). The passes touch their rows only, with no ATen call, so a
// thread's share of the rows (engine.cpp: row_groups) runs them too.
#pragma once

#include <cstdint>
#include <vector>

#include "sequence.h"
#include "vec_math.h"

namespace lstmkit {
namespace masks_detail {

// row r of step s of an (S, B, W) buffer
template <class T>
inline T* at_row(const Tensor& t, int64_t s, int64_t r) {
  return ptr<T>(t) + (s * t.size(1) + r) * t.size(2);
}

template <class T>
void mask_h(const Sequence& q, int64_t s, int64_t a, int64_t b) {
  const int64_t P = q.rh.size(2);
  for_whole_rows(b - a, P, [&](int64_t i) {
    const int64_t r = a + i;
    const T* h = at_row<T>(q.hist[0], s, r);
    const T* m = ptr<T>(q.h_mask) + r * P;
    T* rh = at_row<T>(q.rh, s, r);
    for_vectors<T>(0, P, [&](int64_t j, int64_t k) {
      store(rh, j, k, load(m, j, k) * load(h, j, k));
    });
  });
}

template <class T>
void after_forward(const Sequence& q, int64_t s, int64_t r0, int64_t r1, int64_t r_next) {
  const bool dropout = q.rh.defined();
  for_whole_rows(r1 - r0, q.hist[0].size(2), [&](int64_t i) {
    const int64_t r = r0 + i;
    for (size_t k = 0; k < q.zone.size(); ++k) {
      const bool zoned = q.zone[k].defined(), masked = k == 0 && dropout && r < r_next;
      if (!zoned && !masked) continue;
      const int64_t W = q.hist[k].size(2);
      const T* p = at_row<T>(q.hist[k], s, r);
      T* v = at_row<T>(q.hist[k], s + 1, r);
      const T* o = zoned ? at_row<T>(q.raw[k], s, r) : nullptr;
      const T* d = zoned ? at_row<T>(q.zone[k], s, r) : nullptr;
      const T* m = masked ? ptr<T>(q.h_mask) + r * W : nullptr;
      T* rh = masked ? at_row<T>(q.rh, s + 1, r) : nullptr;
      for_vectors<T>(0, W, [&](int64_t j, int64_t n) {
        Vec<T> value;
        if (zoned) {
          const Vec<T> ov = load(o, j, n);
          value = at::vec::fmadd(load(d, j, n), load(p, j, n) - ov, ov);
          store(v, j, n, value);
        } else {
          value = load(v, j, n);
        }
        if (masked) store(rh, j, n, load(m, j, n) * value);
      });
    }
  });
}

// dL/ds~ = (1 - d) dL/ds for the zoned states of step s, rows [a, b); the scratch rows zeroed
template <class T>
void zone_grad(const Sequence& q, const Tensor& scratch, int64_t s, int64_t a, int64_t b) {
  for_whole_rows(b - a, q.dhist[0].size(2), [&](int64_t i) {
    const int64_t r = a + i;
    for (size_t k = 0; k < q.zone.size(); ++k) {
      if (!q.zone[k].defined()) continue;
      const int64_t W = q.dhist[k].size(2);
      const T* dn = at_row<T>(q.dhist[k], s, r);
      const T* d = at_row<T>(q.zone[k], s, r);
      T* dr = at_row<T>(q.dnext[k], s, r);
      for_vectors<T>(0, W, [&](int64_t j, int64_t n) {
        const Vec<T> g = load(dn, j, n);
        store(dr, j, n, g - g * load(d, j, n));
      });
    }
    if (scratch.defined()) {
      T* z = ptr<T>(scratch) + r * scratch.size(1);
      std::fill(z, z + scratch.size(1), T(0));
    }
  });
}

// dprev[k] holds rows [r0, r1) of dL/d(states at s-1) (what the cell added included)
template <class T>
void after_backward(const Sequence& q, const Tensor& scratch, const std::vector<Tensor>& dprev,
                    int64_t s, int64_t r0, int64_t r1, int64_t r_prev) {
  for_whole_rows(r1 - r0, q.dhist[0].size(2), [&](int64_t i) {
    const int64_t r = r0 + i;
    const bool prepare = r < r_prev;   // row r active at step s-1: its dL/ds~_{t-1} now
    for (size_t k = 0; k < q.zone.size(); ++k) {
      const bool zoned = q.zone[k].defined(), masked = k == 0 && scratch.defined();
      const bool zoned_before = prepare && zoned;
      if (!zoned && !masked) continue;
      const int64_t W = q.dhist[k].size(2);
      T* dp = ptr<T>(dprev[k]) + i * W;
      const T* dn = zoned ? at_row<T>(q.dhist[k], s, r) : nullptr;
      const T* d = zoned ? at_row<T>(q.zone[k], s, r) : nullptr;
      const T* d_before = zoned_before ? at_row<T>(q.zone[k], s - 1, r) : nullptr;
      T* dr_before = zoned_before ? at_row<T>(q.dnext[k], s - 1, r) : nullptr;
      T* g = masked ? ptr<T>(scratch) + r * W : nullptr;
      const T* m = masked ? ptr<T>(q.h_mask) + r * W : nullptr;
      for_vectors<T>(0, W, [&](int64_t j, int64_t n) {
        Vec<T> v = load(dp, j, n);
        if (masked) {
          v = at::vec::fmadd(load(m, j, n), load(g, j, n), v);   // r_{t-1} = m * h_{t-1}
          if (prepare) store(g, j, n, Vec<T>(T(0)));                // for step s-1 to add into
        }
        if (zoned) v = at::vec::fmadd(load(dn, j, n), load(d, j, n), v);   // kept with d_t
        store(dp, j, n, v);
        if (zoned_before) store(dr_before, j, n, v - v * load(d_before, j, n));
      });
    }
  });
}

template <class F>
void dispatch(const Sequence& q, const F& f) {
  if (q.x.scalar_type() == at::kDouble) f(double());
  else f(float());
}

}  // namespace masks_detail

// The loop's calls, for the call's dtype. mask_h: r_{t-1} of step s for rows [a, b).
// after_forward: zoneout of step s's rows [r0, r1) and r_t for rows [r0, r_next) (active at s+1).
// zone_grad: dL/ds~ of step s for rows [a, b), zeroing the scratch rows. after_backward: the
// backward of the masks of step s for rows [r0, r1), and zone_grad of step s-1 for rows
// [r0, r_prev) (active at s-1), fused.
inline void mask_h(const Sequence& q, int64_t s, int64_t a, int64_t b) {
  masks_detail::dispatch(q, [&](auto t) { masks_detail::mask_h<decltype(t)>(q, s, a, b); });
}
inline void after_forward(const Sequence& q, int64_t s, int64_t r0, int64_t r1, int64_t r_next) {
  masks_detail::dispatch(
      q, [&](auto t) { masks_detail::after_forward<decltype(t)>(q, s, r0, r1, r_next); });
}
inline void zone_grad(const Sequence& q, const Tensor& scratch, int64_t s, int64_t a,
                      int64_t b) {
  masks_detail::dispatch(
      q, [&](auto t) { masks_detail::zone_grad<decltype(t)>(q, scratch, s, a, b); });
}
inline void after_backward(const Sequence& q, const Tensor& scratch,
                           const std::vector<Tensor>& dprev, int64_t s, int64_t r0, int64_t r1,
                           int64_t r_prev) {
  masks_detail::dispatch(q, [&](auto t) {
    masks_detail::after_backward<decltype(t)>(q, scratch, dprev, s, r0, r1, r_prev);
  });
}

}  // namespace lstmkit
