// Flush-to-zero and denormals-are-zero around the engine's own loops.
#pragma once

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <xmmintrin.h>
#define LSTMKIT_HAVE_MXCSR 1
#endif

#include <ATen/Parallel.h>

#include <atomic>

namespace lstmkit {

// A thread starts with the MXCSR of the thread that creates it: torch's intra-op workers made
// while a FlushDenormalGuard holds would flush denormals for good, in every later torch op of
// the process. So a call starts the workers (an empty parallel region) before its guard, once
// per thread count.
inline void start_workers_unflushed() {
  static std::atomic<int> started{1};
  const int n = at::get_num_threads();
  if (n != started.load(std::memory_order_relaxed) && !at::in_parallel_region()) {
    at::parallel_for(0, n, 1, [](int64_t, int64_t) {});
    started.store(n, std::memory_order_relaxed);
  }
}

// Flush-to-zero and denormals-are-zero for this thread while the guard lives; the caller's MXCSR
// (flags included) comes back on exit. A no-op where there is no MXCSR.
class FlushDenormalGuard {
 public:
#ifdef LSTMKIT_HAVE_MXCSR
  FlushDenormalGuard() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | kFtzDaz); }
  ~FlushDenormalGuard() { _mm_setcsr(saved_); }

 private:
  static constexpr unsigned int kFtzDaz = 0x8040;  // FTZ (bit 15) | DAZ (bit 6)
  unsigned int saved_;
#else
  FlushDenormalGuard() {}
#endif
  FlushDenormalGuard(const FlushDenormalGuard&) = delete;
  FlushDenormalGuard& operator=(const FlushDenormalGuard&) = delete;
};

}  // namespace lstmkit
