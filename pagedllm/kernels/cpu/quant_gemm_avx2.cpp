// The quantized linear layer on AVX2 (quant_kernels.h; layout in quant_formats.h): the path for
// CPUs without AVX-512 VNNI, on the same packed weights and bit-equal to the other paths.
//
// A ymm holds half a panel's chunk vector (8 rows x 4 weights), so the kernel runs each panel
// as two halves of 8 output columns. Without vpdpbusd, a dot product of 4 unsigned weights and
// 4 signed activations is vpmaddubsw (u8 x s8, adjacent pairs summed into int16) and vpmaddwd
// against ones (pairs of int16 into int32). The int16 sums of several chunks are added before
// the vpmaddwd as long as they cannot overflow (kChunksPerMadd: 8 for 4-bit weights). Q8_0's
// weights are signed: |w| x sign(x, w) keeps vpmaddubsw's pair sum below int16's range (the
// unsigned w + 128 would saturate), so its offset is not needed and its dot starts at 0.
#include "quant_formats.h"
#include "quant_kernels.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

namespace pagedllm::quant {
namespace {

constexpr int kMaxRows = 4;  // 4 accumulators + 8 chunks + scales of 16 ymm
constexpr int64_t kRowChunk = 192;

inline __m256i load32(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline int32_t load_i32(const void* p) { int32_t v; std::memcpy(&v, p, 4); return v; }
inline __m256i bytes_of(const uint8_t* tile, int at, int i, int hf) {  // scale byte i of rows 8hf.., as int32
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(tile + at + 16 * i + 8 * hf)));
}
inline __m256 fp16s(const uint8_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline __m256 negate(__m256 v) { return _mm256_xor_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(INT32_MIN))); }

// Byte i = 0xFF where bit i of m is set.
inline __m256i bits_to_bytes(uint32_t m) {
  const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(m)),
                                             _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303));
  const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ULL));
  return _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
}

// The 8 chunk vectors of group g of a tile, rows 8hf .. 8hf + 7 (see quant_gemm_avx512.cpp).
template <typename F>
inline void decode_group(const uint8_t* tile, int g, int hf, __m256i* w) {
  const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x03);
  if constexpr (F::kLo == Bits::kNibbles) {
    for (int v = 0; v < 4; ++v) {
      const __m256i q = load32(tile + 256 * g + 64 * v + 32 * hf);
      w[v] = _mm256_and_si256(q, m4);
      w[4 + v] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
    }
  } else if constexpr (F::kLo == Bits::kCrumbs) {
    for (int t = 0; t < 2; ++t) {
      const __m256i q = load32(tile + 64 * (2 * g + t) + 32 * hf);
      w[4 * t] = _mm256_and_si256(q, m2);
      w[4 * t + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 2), m2);
      w[4 * t + 2] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m2);
      w[4 * t + 3] = _mm256_and_si256(_mm256_srli_epi16(q, 6), m2);
    }
  } else {  // Q8_0: back to signed bytes for the sign trick
    for (int c = 0; c < 8; ++c) w[c] = _mm256_xor_si256(load32(tile + 64 * (8 * g + c) + 32 * hf), _mm256_set1_epi8(-128));
  }
  if constexpr (F::kHi == Bits::kBitplane) {
    const __m256i bit = _mm256_set1_epi8(static_cast<char>(1 << F::kHiShift));
    for (int c = 0; c < 8; ++c) {
      uint32_t m;
      std::memcpy(&m, tile + F::kHiAt + 8 * (8 * g + c) + 4 * hf, 4);
      w[c] = _mm256_or_si256(w[c], _mm256_and_si256(bits_to_bytes(m), bit));
    }
  } else if constexpr (F::kHi == Bits::kCrumbs) {
    const __m256i m30 = _mm256_set1_epi8(0x30);
    for (int t = 0; t < 2; ++t) {
      const __m256i h = load32(tile + F::kHiAt + 64 * (2 * g + t) + 32 * hf);
      const __m256i hs[4] = {_mm256_slli_epi16(h, 4), _mm256_slli_epi16(h, 2), h, _mm256_srli_epi16(h, 2)};
      for (int s = 0; s < 4; ++s) w[4 * t + s] = _mm256_or_si256(w[4 * t + s], _mm256_and_si256(hs[s], m30));
    }
  }
}

template <typename F>
inline void decode_scales(const uint8_t* tile, int s, int hf, __m256 d, __m256 m, __m256& dsc, __m256& mn) {
  if constexpr (F::kQK == 32) {
    dsc = d;
    if constexpr (F::kHasM) mn = m;
  } else if constexpr (F::kId == kQ4_K || F::kId == kQ5_K) {
    const __m256i m6 = _mm256_set1_epi32(63), m4 = _mm256_set1_epi32(15);
    __m256i sc, mi;
    if (s < 4) {
      sc = _mm256_and_si256(bytes_of(tile, F::kScalesAt, s, hf), m6);
      mi = _mm256_and_si256(bytes_of(tile, F::kScalesAt, s + 4, hf), m6);
    } else {
      const __m256i lo = bytes_of(tile, F::kScalesAt, s + 4, hf);
      sc = _mm256_or_si256(_mm256_and_si256(lo, m4),
                           _mm256_slli_epi32(_mm256_srli_epi32(bytes_of(tile, F::kScalesAt, s - 4, hf), 6), 4));
      mi = _mm256_or_si256(_mm256_srli_epi32(lo, 4),
                           _mm256_slli_epi32(_mm256_srli_epi32(bytes_of(tile, F::kScalesAt, s, hf), 6), 4));
    }
    dsc = _mm256_mul_ps(d, _mm256_cvtepi32_ps(sc));
    mn = negate(_mm256_mul_ps(m, _mm256_cvtepi32_ps(mi)));
  } else if constexpr (F::kId == kQ2_K) {
    const __m256i b = bytes_of(tile, F::kScalesAt, s, hf);
    dsc = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_and_si256(b, _mm256_set1_epi32(15))));
    mn = negate(_mm256_mul_ps(m, _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4))));
  } else if constexpr (F::kId == kQ3_K) {
    const __m256i lo = s < 8 ? _mm256_and_si256(bytes_of(tile, F::kScalesAt, s, hf), _mm256_set1_epi32(15))
                             : _mm256_srli_epi32(bytes_of(tile, F::kScalesAt, s - 8, hf), 4);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi32(bytes_of(tile, F::kScalesAt, 8 + s % 4, hf), 2 * (s / 4)),
                                        _mm256_set1_epi32(3));
    dsc = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_or_si256(lo, _mm256_slli_epi32(hi, 4)),
                                                               _mm256_set1_epi32(32))));
  } else {  // Q6_K
    const __m256i sc = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(tile + F::kScalesAt + 16 * s + 8 * hf)));
    dsc = _mm256_mul_ps(d, _mm256_cvtepi32_ps(sc));
  }
}

// How many chunks' int16 pair sums can be added before one vpmaddwd: each is at most
// 2 * max|w| * 127 in magnitude, and their sum must stay below 32768.
template <typename F>
constexpr int chunks_per_madd() {
  constexpr int max_w = F::kId == kQ8_0 ? 128 : F::kId == kQ6_K ? 63 : F::kHi == Bits::kBitplane ? (F::kLo == Bits::kCrumbs ? 7 : 31)
                      : F::kLo == Bits::kCrumbs ? 3 : 15;
  constexpr int n = 32767 / (2 * max_w * 127);
  return n >= 8 ? 8 : n >= 4 ? 4 : n >= 2 ? 2 : 1;
}

template <typename F, int MR>
void rows_kernel(const LinearJob& job, const QuantizedRows& x, int64_t m0, int64_t p, int hf) {
  constexpr int kSubs = 32 / F::kSub, kChunks = F::kSub / 4, kGroups = F::kQK / 32;
  constexpr int kPerMadd = chunks_per_madd<F>() < kChunks ? chunks_per_madd<F>() : kChunks;
  const int64_t K = job.K, nb = K / F::kQK, nsub = K / F::kSub, ldd = x.ldd();
  const uint8_t* panel = job.packed + p * nb * F::kTileBytes;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[MR];
  for (int r = 0; r < MR; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* tile = panel + b * F::kTileBytes;
    const __m256 d = fp16s(tile + F::kDAt + 16 * hf);  // the tile's fp16 scales, once for its sub-blocks
    const __m256 dm = F::kHasM ? fp16s(tile + F::kMAt + 16 * hf) : _mm256_setzero_ps();
    for (int g = 0; g < kGroups; ++g) {
      __m256i w[8];
      decode_group<F>(tile, g, hf, w);
      for (int h = 0; h < kSubs; ++h) {
        __m256 dsc, mn = _mm256_setzero_ps();
        decode_scales<F>(tile, g * kSubs + h, hf, d, dm, dsc, mn);
        const int64_t k0 = b * F::kQK + 32 * g + h * F::kSub;
        for (int r = 0; r < MR; ++r) {
          const int64_t m = m0 + r;
          const int8_t* xq = x.q + m * K + k0;
          const int32_t t = x.t[m * nsub + k0 / F::kSub];
          __m256i ia = F::kAsym || F::kId == kQ8_0 ? _mm256_setzero_si256() : _mm256_set1_epi32(t);
          for (int c0 = 0; c0 < kChunks; c0 += kPerMadd) {
            __m256i s16 = _mm256_setzero_si256();
            for (int c = c0; c < c0 + kPerMadd; ++c) {
              const __m256i xv = _mm256_set1_epi32(load_i32(xq + 4 * c));
              const __m256i wc = w[h * kChunks + c];
              const __m256i p16 = F::kId == kQ8_0 ? _mm256_maddubs_epi16(_mm256_sign_epi8(wc, wc), _mm256_sign_epi8(xv, wc))
                                                  : _mm256_maddubs_epi16(wc, xv);
              s16 = c == c0 ? p16 : _mm256_add_epi16(s16, p16);
            }
            ia = _mm256_add_epi32(ia, _mm256_madd_epi16(s16, ones));
          }
          acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia), _mm256_mul_ps(dsc, _mm256_set1_ps(x.d[m * ldd + k0 / 32])), acc[r]);
          if constexpr (F::kAsym) {
            float xt;
            std::memcpy(&xt, &t, 4);
            acc[r] = _mm256_fmadd_ps(mn, _mm256_set1_ps(xt), acc[r]);
          }
        }
      }
    }
  }
  const int64_t ncols = std::min<int64_t>(8, job.N - p * kPanel - 8 * hf);
  alignas(32) float tmp[8];
  for (int r = 0; r < MR; ++r) {
    _mm256_store_ps(tmp, acc[r]);
    float* out = job.out + (m0 + r) * job.N + p * kPanel + 8 * hf;
    for (int64_t c = 0; c < ncols; ++c) {
      float v = tmp[c];
      if (job.bias != nullptr) v += job.bias[p * kPanel + 8 * hf + c];
      out[c] = job.accumulate ? out[c] + v : v;
    }
  }
}

template <typename F>
void panels_avx2(const LinearJob& job, const QuantizedRows& x, int64_t p0, int64_t p1) {
  using Kernel = void (*)(const LinearJob&, const QuantizedRows&, int64_t, int64_t, int);
  static constexpr Kernel kKernels[kMaxRows + 1] = {nullptr, rows_kernel<F, 1>, rows_kernel<F, 2>,
                                                    rows_kernel<F, 3>, rows_kernel<F, 4>};
  for (int64_t m0 = 0; m0 < job.M; m0 += kRowChunk) {
    const int64_t rows = std::min(kRowChunk, job.M - m0);
    const int64_t blocks = (rows + kMaxRows - 1) / kMaxRows;
    for (int64_t p = p0; p < p1; ++p) {
      for (int hf = 0; hf < 2 && job.N - p * kPanel > 8 * hf; ++hf) {
        int64_t m = m0;
        for (int64_t blk = 0; blk < blocks; ++blk) {
          const int64_t mr = (rows * (blk + 1)) / blocks - (rows * blk) / blocks;
          kKernels[mr](job, x, m, p, hf);
          m += mr;
        }
      }
    }
  }
}

inline int32_t hsum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// Activations as quantize_rows_scalar() quantizes them, bit for bit.
void quantize_avx2(const float* x, int64_t ldx, int64_t m0, int64_t m1, int sub, int offset, const QuantizedRows& out) {
  const int64_t K = out.K;
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(INT32_MAX));
  for (int64_t m = m0; m < m1; ++m) {
    const float* xr = x + m * ldx;
    int8_t* q = const_cast<int8_t*>(out.q) + m * K;
    float* d = const_cast<float*>(out.d) + m * out.ldd();
    int32_t* t = const_cast<int32_t*>(out.t) + m * (K / sub);
    for (int64_t b = 0; b < K / 32; ++b) {
      __m256 v[4];
      for (int i = 0; i < 4; ++i) v[i] = _mm256_loadu_ps(xr + 32 * b + 8 * i);
      __m256 mx = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v[0], abs_mask), _mm256_and_ps(v[1], abs_mask)),
                                _mm256_max_ps(_mm256_and_ps(v[2], abs_mask), _mm256_and_ps(v[3], abs_mask)));
      __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
      m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
      m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
      const float amax = _mm_cvtss_f32(m4);
      int nonfinite = 0;  // not <= FLT_MAX: inf or NaN (scale NaN, as in scalar)
      for (int i = 0; i < 4; ++i) {
        nonfinite |= _mm256_movemask_ps(_mm256_cmp_ps(_mm256_and_ps(v[i], abs_mask), _mm256_set1_ps(FLT_MAX), _CMP_NLE_UQ));
      }
      const float db = nonfinite == 0 ? amax / 127.f : NAN;
      const __m256 id = _mm256_set1_ps(nonfinite == 0 && db != 0.f ? 1.f / db : 0.f);
      d[b] = db;
      __m256i qi[4];
      for (int i = 0; i < 4; ++i) qi[i] = nonfinite == 0 ? _mm256_cvtps_epi32(_mm256_mul_ps(v[i], id)) : _mm256_setzero_si256();
      // int32 -> int8 in order: packs interleave the 128-bit lanes, the permute undoes it
      const __m256i q16 = _mm256_packs_epi16(_mm256_packs_epi32(qi[0], qi[1]), _mm256_packs_epi32(qi[2], qi[3]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 32 * b),
                          _mm256_permutevar8x32_epi32(q16, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
      const int32_t sums[2] = {hsum(_mm256_add_epi32(qi[0], qi[1])), hsum(_mm256_add_epi32(qi[2], qi[3]))};
      for (int h = 0; h < 32 / sub; ++h) {
        t[b * (32 / sub) + h] = sub_block_term(sub == 16 ? sums[h] : sums[0] + sums[1], offset, db);
      }
    }
  }
}

}  // namespace

PanelsFn avx2_panels(int64_t type) {
  PanelsFn fn = nullptr;
  with_format(type, [&](auto f) { fn = &panels_avx2<decltype(f)>; });
  return fn;
}

QuantizeFn avx2_quantize() { return &quantize_avx2; }

}  // namespace pagedllm::quant

#else

namespace pagedllm::quant {
PanelsFn avx2_panels(int64_t) { return nullptr; }
QuantizeFn avx2_quantize() { return nullptr; }
}  // namespace pagedllm::quant

#endif
