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

// Row r of step s of an (S, B, W) buffer, or null for an undefined one. The passes take their
// pointers once per step: Tensor::size and data_ptr calls per row cost as much as the
// arithmetic at B x H = 16 x 128.
template <class T>
inline T* at_row(const Tensor& t, int64_t s, int64_t r) {
  return t.defined() ? ptr<T>(t) + (s * t.size(1) + r) * t.size(2) : nullptr;
}

template <class T>
void mask_h(const Sequence& q, int64_t s, int64_t a, int64_t b) {
  const int64_t P = q.rh.size(2);
  const T* h = at_row<T>(q.hist[0], s, a);
  const T* m = ptr<T>(q.h_mask) + a * P;
  T* rh = at_row<T>(q.rh, s, a);
  for_whole_rows(b - a, P, [&](int64_t i) {
    for_vectors<T>(0, P, [&](int64_t j, int64_t k) {
      store(rh + i * P, j, k, load(m + i * P, j, k) * load(h + i * P, j, k));
    });
  });
}

// One state's rows from r0 on in a step's pass: its width and where the pass reads and writes.
template <class T>
struct Rows {
  int64_t W = 0;
  T *a = nullptr, *b = nullptr, *c = nullptr, *e = nullptr;
  const T *d = nullptr, *d2 = nullptr, *m = nullptr;
};

template <class T>
void after_forward(const Sequence& q, int64_t s, int64_t r0, int64_t r1, int64_t r_next) {
  const size_t K = q.zone.size();
  std::vector<Rows<T>> st(K);
  for (size_t k = 0; k < K; ++k) {   // a: s_{t-1}, b: s_t, c: s~_t, d: d_t, e: r_t, m: m
    Rows<T>& x = st[k];
    x.W = q.hist[k].size(2);
    x.a = at_row<T>(q.hist[k], s, r0);
    x.b = at_row<T>(q.hist[k], s + 1, r0);
    x.c = at_row<T>(q.raw[k], s, r0);
    x.d = at_row<T>(q.zone[k], s, r0);
    if (k == 0 && q.rh.defined()) {
      x.e = at_row<T>(q.rh, s + 1, r0);
      x.m = ptr<T>(q.h_mask) + r0 * x.W;
    }
  }
  for_whole_rows(r1 - r0, st[0].W, [&](int64_t i) {
    for (const Rows<T>& x : st) {
      const bool zoned = x.d, masked = x.e && r0 + i < r_next;
      const int64_t o = i * x.W;
      if (zoned && masked) {
        for_vectors<T>(0, x.W, [&](int64_t j, int64_t n) {
          const Vec<T> raw = load(x.c + o, j, n);
          const Vec<T> v = at::vec::fmadd(load(x.d + o, j, n), load(x.a + o, j, n) - raw, raw);
          store(x.b + o, j, n, v);
          store(x.e + o, j, n, load(x.m + o, j, n) * v);
        });
      } else if (zoned) {   // s_t = s~_t + d_t (s_{t-1} - s~_t)
        for_vectors<T>(0, x.W, [&](int64_t j, int64_t n) {
          const Vec<T> raw = load(x.c + o, j, n);
          store(x.b + o, j, n, at::vec::fmadd(load(x.d + o, j, n), load(x.a + o, j, n) - raw, raw));
        });
      } else if (masked) {  // r_t = m * h_t
        for_vectors<T>(0, x.W, [&](int64_t j, int64_t n) {
          store(x.e + o, j, n, load(x.m + o, j, n) * load(x.b + o, j, n));
        });
      }
    }
  });
}

// dL/ds~ = (1 - d) dL/ds for the zoned states of step s, rows [a, b); the scratch rows zeroed
template <class T>
void zone_grad(const Sequence& q, const Tensor& scratch, int64_t s, int64_t a, int64_t b) {
  const size_t K = q.zone.size();
  std::vector<Rows<T>> st(K);
  for (size_t k = 0; k < K; ++k) {   // a: dL/ds_t, b: dL/ds~_t, d: d_t
    if (!q.zone[k].defined()) continue;
    st[k].W = q.dhist[k].size(2);
    st[k].a = at_row<T>(q.dhist[k], s, a);
    st[k].b = at_row<T>(q.dnext[k], s, a);
    st[k].d = at_row<T>(q.zone[k], s, a);
  }
  const int64_t P = q.dhist[0].size(2);
  T* z = scratch.defined() ? ptr<T>(scratch) + a * P : nullptr;
  for_whole_rows(b - a, P, [&](int64_t i) {
    for (const Rows<T>& x : st) {
      if (!x.d) continue;
      const int64_t o = i * x.W;
      for_vectors<T>(0, x.W, [&](int64_t j, int64_t n) {
        const Vec<T> g = load(x.a + o, j, n);
        store(x.b + o, j, n, g - g * load(x.d + o, j, n));
      });
    }
    if (z) std::fill(z + i * P, z + (i + 1) * P, T(0));
  });
}

// dprev[k] holds rows [r0, r1) of dL/d(states at s-1) (what the cell added included)
template <class T>
void after_backward(const Sequence& q, const Tensor& scratch, const std::vector<Tensor>& dprev,
                    int64_t s, int64_t r0, int64_t r1, int64_t r_prev) {
  const size_t K = q.zone.size();
  std::vector<Rows<T>> st(K);
  for (size_t k = 0; k < K; ++k) {   // a: dL/ds_{t-1}, b: dL/ds_t, d: d_t, c: the scratch,
    Rows<T>& x = st[k];              // m: m, e: dL/ds~_{t-1}, d2: d_{t-1}
    x.W = q.dhist[k].size(2);
    x.a = ptr<T>(dprev[k]);
    if (q.zone[k].defined()) {
      x.b = at_row<T>(q.dhist[k], s, r0);
      x.d = at_row<T>(q.zone[k], s, r0);
      if (s) {
        x.e = at_row<T>(q.dnext[k], s - 1, r0);
        x.d2 = at_row<T>(q.zone[k], s - 1, r0);
      }
    }
    if (k == 0 && scratch.defined()) {
      x.c = ptr<T>(scratch) + r0 * x.W;
      x.m = ptr<T>(q.h_mask) + r0 * x.W;
    }
  }
  for_whole_rows(r1 - r0, st[0].W, [&](int64_t i) {
    const bool prepare = r0 + i < r_prev;   // row active at step s-1: its dL/ds~_{t-1} now
    for (const Rows<T>& x : st) {
      if (!x.d && !x.c) continue;
      const int64_t o = i * x.W;
      const bool before = prepare && x.e;
      for_vectors<T>(0, x.W, [&](int64_t j, int64_t n) {
        Vec<T> v = load(x.a + o, j, n);
        if (x.c) {
          v = at::vec::fmadd(load(x.m + o, j, n), load(x.c + o, j, n), v);   // r = m * h
          if (prepare) store(x.c + o, j, n, Vec<T>(T(0)));            // for step s-1 to add into
        }
        if (x.d) v = at::vec::fmadd(load(x.b + o, j, n), load(x.d + o, j, n), v);  // kept, d_t
        store(x.a + o, j, n, v);
        if (before) store(x.e + o, j, n, v - v * load(x.d2 + o, j, n));
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
