// AVX-512 float32 helpers shared by the CPU kernels' sources (kernels/cpu/__init__.py hashes this
// header into the build flags, so editing it rebuilds the module).
#pragma once

#if defined(__AVX512F__)
#include <immintrin.h>

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

}  // namespace pagedllm
#endif
