// AVX-512 float32 helpers shared by the CPU kernels' sources (kernels/cpu/__init__.py hashes this
// header into the build flags, so editing it rebuilds the module).
#pragma once

#if defined(__AVX512F__)
#include <immintrin.h>

#include <cstdint>
#include <limits>

namespace pagedllm {

// exp(x) for x <= 0 (scores minus their max), 16 lanes: 2^n * p(r) with x = n ln2 + r, |r| <= ln2/2,
// p the degree-6 Taylor polynomial of e^r (relative error ~2e-7, about std::exp's rounding).
// In the decode kernel the scalar std::exp per score was most of what its register path left to gain.
inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.f));  // below this e^x is 0 in float32 for our purposes
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);  // ln2 split in two for exactness
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.f / 720.f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 120.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);
}

// s[0, n) := softmax(s[0, n)) in place, normalised, n >= 1: the max, then exp(s - max) and their
// sum, then a multiply by 1 / sum; all in float32, 16 lanes at a time (the tail masked, so nothing
// past s[n - 1] is read or written). Shared by the decode and the varlen attention kernels.
inline void softmax_in_place(float* __restrict__ s, int64_t n) {
  const int64_t full = n - n % 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (n % 16)) - 1);
  __m512 mv = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t j = 0; j < full; j += 16) mv = _mm512_max_ps(mv, _mm512_loadu_ps(s + j));
  if (tail) mv = _mm512_mask_max_ps(mv, tail, mv, _mm512_maskz_loadu_ps(tail, s + full));
  const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mv));
  __m512 sumv = _mm512_setzero_ps();
  for (int64_t j = 0; j < full; j += 16) {
    const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(s + j), m));
    _mm512_storeu_ps(s + j, e);
    sumv = _mm512_add_ps(sumv, e);
  }
  if (tail) {
    const __m512 e = _mm512_maskz_mov_ps(tail, exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, s + full), m)));
    _mm512_mask_storeu_ps(s + full, tail, e);
    sumv = _mm512_add_ps(sumv, e);
  }
  const __m512 inv = _mm512_set1_ps(1.f / _mm512_reduce_add_ps(sumv));
  for (int64_t j = 0; j < full; j += 16) _mm512_storeu_ps(s + j, _mm512_mul_ps(_mm512_loadu_ps(s + j), inv));
  if (tail) _mm512_mask_storeu_ps(s + full, tail, _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, s + full), inv));
}

}  // namespace pagedllm
#endif
