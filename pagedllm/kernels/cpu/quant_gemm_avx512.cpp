// The quantized linear layer on AVX-512 VNNI (quant_kernels.h; layout in quant_formats.h).
//
// A tile's 32-weight group decodes into 8 zmm of unsigned bytes, one per chunk of 4 weights
// along K, lane c = panel row c: nibbles with one AND and one shift, 2-bit fields with a shift
// and an AND, a fifth bit with a masked byte add of the AVX-512 byte mask stored for it. Each
// chunk is one vpdpbusd against the 4 activations of x's row broadcast to all lanes:
// 16 rows x 4 weights per instruction, summed in int32 over a sub-block (16 or 32 weights),
// then one cvt and one FMA with the sub-block's scales (decoded once per tile, shared by the
// rows). Weights are unsigned, activations signed: a symmetric type's offset comes back through
// the int32 initial value -offset * sum(x) (computed once per row when x is quantized), an
// asymmetric type's min through one more FMA with xd * sum(x).
//
// GEMV and GEMM are one kernel: MR rows of x (up to kMaxRows) against one panel, the decoded
// group held in registers for those rows. At batch 1 the whole step is one pass over the weights
// (each thread its own range of panels, prefetching the next panel as it goes); at larger M a
// panel is decoded once per block of up to 8 rows, from L1.
#include "quant_formats.h"
#include "quant_kernels.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__) && \
    defined(__F16C__)
#include <immintrin.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

namespace pagedllm::quant {
namespace {

constexpr int kMaxRows = 8;        // rows per kernel call: 8 accumulators + 8 chunks + scales of 32 zmm
constexpr int64_t kRowChunk = 192;  // rows per pass over a thread's panels: x's chunk stays in L2

inline __m512i load64(const uint8_t* p) { return _mm512_loadu_si512(p); }
inline int32_t load_i32(const void* p) { int32_t v; std::memcpy(&v, p, 4); return v; }
inline __mmask64 load_mask(const uint8_t* p) { uint64_t v; std::memcpy(&v, p, 8); return _cvtu64_mask64(v); }
inline __m512i bytes_of(const uint8_t* tile, int at, int i) {  // scale byte i of the 16 rows, as int32
  return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tile + at + 16 * i)));
}
inline __m512 fp16s(const uint8_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
inline __m512 negate(__m512 v) {
  return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v), _mm512_set1_epi32(INT32_MIN)));
}

// The 8 chunk vectors of group g (weights 32g .. 32g + 31) of a tile: w[c] = chunk 8g + c.
template <typename F>
inline void decode_group(const uint8_t* tile, int g, __m512i* w) {
  const __m512i m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(0x03);
  if constexpr (F::kLo == Bits::kNibbles) {
    for (int v = 0; v < 4; ++v) {
      const __m512i q = load64(tile + 256 * g + 64 * v);
      w[v] = _mm512_and_si512(q, m4);
      w[4 + v] = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
    }
  } else if constexpr (F::kLo == Bits::kCrumbs) {
    for (int t = 0; t < 2; ++t) {
      const __m512i q = load64(tile + 64 * (2 * g + t));
      w[4 * t] = _mm512_and_si512(q, m2);
      w[4 * t + 1] = _mm512_and_si512(_mm512_srli_epi16(q, 2), m2);
      w[4 * t + 2] = _mm512_and_si512(_mm512_srli_epi16(q, 4), m2);
      w[4 * t + 3] = _mm512_and_si512(_mm512_srli_epi16(q, 6), m2);
    }
  } else {
    for (int c = 0; c < 8; ++c) w[c] = load64(tile + 64 * (8 * g + c));
  }
  if constexpr (F::kHi == Bits::kBitplane) {  // the bit at kHiShift: a byte mask per chunk
    const __m512i bit = _mm512_set1_epi8(static_cast<char>(1 << F::kHiShift));
    for (int c = 0; c < 8; ++c) w[c] = _mm512_mask_add_epi8(w[c], load_mask(tile + F::kHiAt + 8 * (8 * g + c)), w[c], bit);
  } else if constexpr (F::kHi == Bits::kCrumbs) {  // Q6_K's bits 4-5: crumb s moved to bits 4-5
    const __m512i m30 = _mm512_set1_epi8(0x30);
    for (int t = 0; t < 2; ++t) {
      const __m512i h = load64(tile + F::kHiAt + 64 * (2 * g + t));
      const __m512i hs[4] = {_mm512_slli_epi16(h, 4), _mm512_slli_epi16(h, 2), h, _mm512_srli_epi16(h, 2)};
      for (int s = 0; s < 4; ++s) w[4 * t + s] = _mm512_ternarylogic_epi32(w[4 * t + s], hs[s], m30, 0xF8);  // a | (b & c)
    }
  }
}

// Sub-block s's scales of the 16 rows: dsc, and (asymmetric types) mn; as sub_scale() computes them.
template <typename F>
inline void decode_scales(const uint8_t* tile, int s, __m512 d, __m512 m, __m512& dsc, __m512& mn) {
  if constexpr (F::kQK == 32) {
    dsc = d;
    if constexpr (F::kHasM) mn = m;
  } else if constexpr (F::kId == kQ4_K || F::kId == kQ5_K) {
    const __m512i m6 = _mm512_set1_epi32(63), m4 = _mm512_set1_epi32(15);
    __m512i sc, mi;
    if (s < 4) {
      sc = _mm512_and_si512(bytes_of(tile, F::kScalesAt, s), m6);
      mi = _mm512_and_si512(bytes_of(tile, F::kScalesAt, s + 4), m6);
    } else {
      const __m512i lo = bytes_of(tile, F::kScalesAt, s + 4);
      sc = _mm512_or_si512(_mm512_and_si512(lo, m4),
                           _mm512_slli_epi32(_mm512_srli_epi32(bytes_of(tile, F::kScalesAt, s - 4), 6), 4));
      mi = _mm512_or_si512(_mm512_srli_epi32(lo, 4),
                           _mm512_slli_epi32(_mm512_srli_epi32(bytes_of(tile, F::kScalesAt, s), 6), 4));
    }
    dsc = _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc));
    mn = negate(_mm512_mul_ps(m, _mm512_cvtepi32_ps(mi)));
  } else if constexpr (F::kId == kQ2_K) {
    const __m512i b = bytes_of(tile, F::kScalesAt, s);
    dsc = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_and_si512(b, _mm512_set1_epi32(15))));
    mn = negate(_mm512_mul_ps(m, _mm512_cvtepi32_ps(_mm512_srli_epi32(b, 4))));
  } else if constexpr (F::kId == kQ3_K) {
    const __m512i lo = s < 8 ? _mm512_and_si512(bytes_of(tile, F::kScalesAt, s), _mm512_set1_epi32(15))
                             : _mm512_srli_epi32(bytes_of(tile, F::kScalesAt, s - 8), 4);
    const __m512i hi = _mm512_and_si512(_mm512_srli_epi32(bytes_of(tile, F::kScalesAt, 8 + s % 4), 2 * (s / 4)),
                                        _mm512_set1_epi32(3));
    const __m512i sc = _mm512_sub_epi32(_mm512_or_si512(lo, _mm512_slli_epi32(hi, 4)), _mm512_set1_epi32(32));
    dsc = _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc));
  } else {  // Q6_K: int8 scales
    const __m512i sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tile + F::kScalesAt + 16 * s)));
    dsc = _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc));
  }
}

// Rows [m0, m0 + MR) of x against panel p; `next` (or null): the panel to prefetch meanwhile.
template <typename F, int MR>
void rows_kernel(const LinearJob& job, const QuantizedRows& x, int64_t m0, int64_t p, const uint8_t* next) {
  constexpr int kSubs = 32 / F::kSub, kChunks = F::kSub / 4, kGroups = F::kQK / 32;
  constexpr int kGroupBytes = F::kTileBytes / kGroups;
  const int64_t K = job.K, nb = K / F::kQK, nsub = K / F::kSub, ldd = x.ldd();
  const uint8_t* panel = job.packed + p * nb * F::kTileBytes;
  __m512 acc[MR];
  for (int r = 0; r < MR; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* tile = panel + b * F::kTileBytes;
    const __m512 d = fp16s(tile + F::kDAt);  // the tile's fp16 scales, once for its sub-blocks
    const __m512 dm = F::kHasM ? fp16s(tile + F::kMAt) : _mm512_setzero_ps();
    for (int g = 0; g < kGroups; ++g) {
      if (next != nullptr) {  // the same bytes of the next panel: all of it by the end of this one
        const char* pf = reinterpret_cast<const char*>(next + b * F::kTileBytes + g * kGroupBytes);
        for (int l = 0; l < kGroupBytes; l += 64) _mm_prefetch(pf + l, _MM_HINT_T1);
      }
      __m512i w[8];
      decode_group<F>(tile, g, w);
      for (int h = 0; h < kSubs; ++h) {
        __m512 dsc, mn = _mm512_setzero_ps();
        decode_scales<F>(tile, g * kSubs + h, d, dm, dsc, mn);
        const int64_t k0 = b * F::kQK + 32 * g + h * F::kSub;
        for (int r = 0; r < MR; ++r) {
          const int64_t m = m0 + r;
          const int8_t* xq = x.q + m * K + k0;
          const int32_t t = x.t[m * nsub + k0 / F::kSub];
          __m512i ia = F::kAsym ? _mm512_setzero_si512() : _mm512_set1_epi32(t);
          if constexpr (MR <= 2 && kChunks == 8) {  // two chains: few rows have little else to overlap
            __m512i ib = _mm512_setzero_si512();
            for (int c = 0; c < kChunks; c += 2) {
              ia = _mm512_dpbusd_epi32(ia, w[h * kChunks + c], _mm512_set1_epi32(load_i32(xq + 4 * c)));
              ib = _mm512_dpbusd_epi32(ib, w[h * kChunks + c + 1], _mm512_set1_epi32(load_i32(xq + 4 * c + 4)));
            }
            ia = _mm512_add_epi32(ia, ib);
          } else {
            for (int c = 0; c < kChunks; ++c) ia = _mm512_dpbusd_epi32(ia, w[h * kChunks + c], _mm512_set1_epi32(load_i32(xq + 4 * c)));
          }
          acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia), _mm512_mul_ps(dsc, _mm512_set1_ps(x.d[m * ldd + k0 / 32])), acc[r]);
          if constexpr (F::kAsym) {
            float xt;
            std::memcpy(&xt, &t, 4);
            acc[r] = _mm512_fmadd_ps(mn, _mm512_set1_ps(xt), acc[r]);
          }
        }
      }
    }
  }
  const int64_t ncols = std::min<int64_t>(kPanel, job.N - p * kPanel);
  const __mmask16 mask = static_cast<__mmask16>((1u << ncols) - 1);
  const __m512 bias = job.bias != nullptr ? _mm512_maskz_loadu_ps(mask, job.bias + p * kPanel) : _mm512_setzero_ps();
  for (int r = 0; r < MR; ++r) {
    float* out = job.out + (m0 + r) * job.N + p * kPanel;
    __m512 v = job.bias != nullptr ? _mm512_add_ps(acc[r], bias) : acc[r];
    if (job.accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, out), v);
    _mm512_mask_storeu_ps(out, mask, v);
  }
}

template <typename F>
void panels_avx512(const LinearJob& job, const QuantizedRows& x, int64_t p0, int64_t p1) {
  using Kernel = void (*)(const LinearJob&, const QuantizedRows&, int64_t, int64_t, const uint8_t*);
  static constexpr Kernel kKernels[kMaxRows + 1] = {
      nullptr, rows_kernel<F, 1>, rows_kernel<F, 2>, rows_kernel<F, 3>, rows_kernel<F, 4>,
      rows_kernel<F, 5>, rows_kernel<F, 6>, rows_kernel<F, 7>, rows_kernel<F, 8>};
  const int64_t panel_bytes = job.K / F::kQK * F::kTileBytes;
  for (int64_t m0 = 0; m0 < job.M; m0 += kRowChunk) {
    const int64_t rows = std::min(kRowChunk, job.M - m0);
    const int64_t blocks = (rows + kMaxRows - 1) / kMaxRows;  // split evenly: 13 rows = 7 + 6
    for (int64_t p = p0; p < p1; ++p) {
      const uint8_t* next = p + 1 < p1 ? job.packed + (p + 1) * panel_bytes : nullptr;
      int64_t m = m0;
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const int64_t mr = (rows * (blk + 1)) / blocks - (rows * blk) / blocks;
        kKernels[mr](job, x, m, p, blk == 0 ? next : nullptr);
        m += mr;
      }
    }
  }
}

// Activations: rows [m0, m1) quantized per 32, as quantize_rows_scalar() does, bit for bit.
void quantize_avx512(const float* x, int64_t ldx, int64_t m0, int64_t m1, int sub, int offset, const QuantizedRows& out) {
  const int64_t K = out.K;
  for (int64_t m = m0; m < m1; ++m) {
    const float* xr = x + m * ldx;
    int8_t* q = const_cast<int8_t*>(out.q) + m * K;
    float* d = const_cast<float*>(out.d) + m * out.ldd();
    int32_t* t = const_cast<int32_t*>(out.t) + m * (K / sub);
    for (int64_t b = 0; b < K / 32; ++b) {
      const __m512 v0 = _mm512_loadu_ps(xr + 32 * b), v1 = _mm512_loadu_ps(xr + 32 * b + 16);
      const __m512 a0 = _mm512_abs_ps(v0), a1 = _mm512_abs_ps(v1);
      const float amax = _mm512_reduce_max_ps(_mm512_max_ps(a0, a1));
      const __m512 big = _mm512_set1_ps(FLT_MAX);  // not <= FLT_MAX: inf or NaN (scale NaN, as in scalar)
      const bool finite = (_mm512_cmp_ps_mask(a0, big, _CMP_NLE_UQ) | _mm512_cmp_ps_mask(a1, big, _CMP_NLE_UQ)) == 0;
      const float db = finite ? amax / 127.f : NAN;
      const __m512 id = _mm512_set1_ps(finite && db != 0.f ? 1.f / db : 0.f);
      d[b] = db;
      const __m512i q0 = finite ? _mm512_cvtps_epi32(_mm512_mul_ps(v0, id)) : _mm512_setzero_si512();
      const __m512i q1 = finite ? _mm512_cvtps_epi32(_mm512_mul_ps(v1, id)) : _mm512_setzero_si512();
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 32 * b), _mm512_cvtsepi32_epi8(q0));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 32 * b + 16), _mm512_cvtsepi32_epi8(q1));
      const int32_t s0 = _mm512_reduce_add_epi32(q0), s1 = _mm512_reduce_add_epi32(q1);
      const int32_t sums[2] = {s0, s1};
      for (int h = 0; h < 32 / sub; ++h) {
        t[b * (32 / sub) + h] = sub_block_term(sub == 16 ? sums[h] : s0 + s1, offset, db);
      }
    }
  }
}

}  // namespace

PanelsFn avx512_panels(int64_t type) {
  PanelsFn fn = nullptr;
  with_format(type, [&](auto f) { fn = &panels_avx512<decltype(f)>; });
  return fn;
}

QuantizeFn avx512_quantize() { return &quantize_avx512; }

}  // namespace pagedllm::quant

#else

namespace pagedllm::quant {
PanelsFn avx512_panels(int64_t) { return nullptr; }
QuantizeFn avx512_quantize() { return nullptr; }
}  // namespace pagedllm::quant

#endif
