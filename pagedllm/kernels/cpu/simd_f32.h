// AVX-512 float32 helpers shared by the CPU kernels' sources (kernels/cpu/__init__.py hashes this
// header into the build flags, so editing it rebuilds the module). KV cache rows are float32 or
// bfloat16 (`Bf16Bits`, the raw 16 bits): load16 widens either to 16 float32 lanes, exactly.
#pragma once

#if defined(__AVX512F__)
#include <immintrin.h>

#include <cstdint>
#include <limits>

namespace pagedllm {

// A bfloat16 value's bits (the cache's element when kv_cache_dtype is bfloat16): the high half of
// the float32 with the same value.
using Bf16Bits = uint16_t;

inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }

inline __m512 load16(const Bf16Bits* p) {
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

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

// Lane i of the result = the sum of x[i]'s 16 lanes, for 16 vectors at once, always in the same
// tree (halves of 256 bits, then of 128, 64 and 32, then a lane permutation): 30 shuffles, 15 adds.
inline __m512 reduce16(const __m512 x[16]) {
  __m512 y[8], z[4];
  for (int p = 0; p < 8; ++p)  // 256-bit halves: blocks [a0 + a2, a1 + a3, b0 + b2, b1 + b3]
    y[p] = _mm512_add_ps(_mm512_shuffle_f32x4(x[2 * p], x[2 * p + 1], 0x44),
                         _mm512_shuffle_f32x4(x[2 * p], x[2 * p + 1], 0xEE));
  for (int p = 0; p < 4; ++p)  // block b of z[p]: four partial sums of x[4 p + b]
    z[p] = _mm512_add_ps(_mm512_shuffle_f32x4(y[2 * p], y[2 * p + 1], 0x88),
                         _mm512_shuffle_f32x4(y[2 * p], y[2 * p + 1], 0xDD));
  __m512 w[2];
  for (int p = 0; p < 2; ++p) {
    const __m512d a = _mm512_castps_pd(z[2 * p]), b = _mm512_castps_pd(z[2 * p + 1]);
    w[p] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  // lane 4 b + e now holds the sum of x[4 e + b]
  const __m512 r = _mm512_add_ps(_mm512_shuffle_ps(w[0], w[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_ps(w[0], w[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutexvar_ps(order, r);
}

// The attention scores of one query row q (head size 16 * NC, already scaled) against 16 key rows
// at base + offs[j]: per key, 16 lane-wise FMA chains over the head's 16-float chunks in order,
// then reduce16. The decode and the varlen kernels both score through this, so a token's scores
// have the same bits whichever kernel its step takes (a quantized model's int8 activations turn
// a last-bit difference into a different greedy token now and then).
template <int NC, typename C, typename Offset>
inline __m512 dot_keys16(const float* __restrict__ q, const C* __restrict__ base,
                         const Offset* __restrict__ offs) {
  __m512 acc[16];
  const __m512 q0 = _mm512_loadu_ps(q);
  for (int j = 0; j < 16; ++j) acc[j] = _mm512_mul_ps(q0, load16(base + offs[j]));
  for (int c = 1; c < NC; ++c) {
    const __m512 qc = _mm512_loadu_ps(q + 16 * c);
    for (int j = 0; j < 16; ++j) acc[j] = _mm512_fmadd_ps(qc, load16(base + offs[j] + 16 * c), acc[j]);
  }
  return reduce16(acc);
}

}  // namespace pagedllm
#endif
