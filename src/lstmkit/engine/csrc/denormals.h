// Flush-to-zero and denormals-are-zero around the engine's own loops.
#pragma once

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <xmmintrin.h>
#define LSTMKIT_HAVE_MXCSR 1
#endif

namespace lstmkit {

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
