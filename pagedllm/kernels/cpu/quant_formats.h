// GGML's quantized block types and our packed layout of them, in portable scalar code: the
// single source of truth of both layouts. quant_repack.cpp converts GGUF rows to the packed
// layout with these functions and dequantizes from it; the SIMD kernels (quant_gemm_*.cpp)
// decode the same packed bytes with vector instructions and are tested against this code.
//
// GGUF stores a weight [N, K] row by row, each row a run of blocks of QK weights (32 for the
// legacy types, 256 for the K-quants); a block is its scales followed by its quant bits.
//
// Packed layout: the rows are grouped in panels of 16 (kPanel; the last zero-padded), and a panel
// is the run of its "tiles", one per block along K: tile b holds block b of the panel's 16 rows,
// column-interleaved, as regions of fixed offsets (Format::kHi, kScales, kD, kM below):
//
//   quant bits   each region is a run of 64-byte vectors whose byte 4c + j belongs to panel row c
//                (0..15) and element j (0..3) of a "chunk" of 4 consecutive weights along K. One
//                such vector, decoded to bytes, is one VNNI dpbusd operand: 16 int32 lanes, lane
//                c = row c's dot product of those 4 weights with 4 activations (a broadcast).
//     nibbles    (4 bits) the 32 weights 32g..32g+31 are the 4 vectors at 256g + 64v (v < 4):
//                low nibbles = chunk 8g + v, high nibbles = chunk 8g + 4 + v: one AND and one
//                shift give 8 chunk vectors of one 32-weight group
//     crumbs     (2 bits) chunk q is bits 2(q % 4) of vector q / 4
//     bitplane   (1 bit) chunk q is a 64-bit mask at 8q, bit 4c + j (an AVX-512 byte mask)
//     bytes      (8 bits) chunk q is vector q
//   scale bytes  a block's GGUF scale bytes, transposed: byte i of row c at 16i + c, so one
//                16-byte load gives byte i of all 16 rows
//   d, m         fp16 [16]: the block scale and the min (Q4_1/Q5_1) or dmin (K-quants)
//
// A tile holds exactly the bytes of the 16 GGUF blocks (16 * type_size), so the packed weight is
// the GGUF size (plus the padding of the last panel): batch-1 decode reads the same bytes per
// weight as llama.cpp does.
//
// Every type's weight is, per sub-block s of kSub (16 or 32) weights,
//   symmetric  w = dsc_s * (u - kOffset)        (Q4_0, Q5_0, Q8_0, Q3_K, Q6_K)
//   asymmetric w = dsc_s * u + mn_s             (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K)
// with u the unsigned quant (0 .. 2^bits - 1; Q8_0 stores its int8 XOR 0x80), dsc_s the float
// scale (d, or d times the sub-block's integer scale) and mn_s the float min (m, or -dmin times
// the sub-block's integer min). Dequantizing rounds as gguf-py's numpy code does (one float32
// rounding per operation, no fused multiply-add), so results are bit-equal to it.
#pragma once

#include <cstdint>
#include <cstring>

namespace pagedllm::quant {

constexpr int kPanel = 16;  // weight rows per panel: the 16 int32 lanes of a zmm

enum GgmlType : int {
  kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8,
  kQ2_K = 10, kQ3_K = 11, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14,
};

enum class Bits { kNibbles, kCrumbs, kBytes, kNone, kBitplane };

// fp16 bits to float, exact (subnormals included), without F16C.
inline float fp16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1F, mant = h & 0x3FF, bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    exp = 113;
    while ((mant & 0x400) == 0) { mant <<= 1; --exp; }
    bits = sign | (exp << 23) | ((mant & 0x3FF) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// The product rounded to float before anything is added to it: numpy rounds every operation,
// and GCC would otherwise contract a * b + c into an FMA (-ffp-contract=fast is its default).
inline float mul_rounded(float a, float b) {
  float p = a * b;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  asm("" : "+x"(p));
#elif defined(__GNUC__)
  asm("" : "+w"(p));
#else
  volatile float v = p;
  p = v;
#endif
  return p;
}

// One block of one row, decoded from GGUF: the quants as unsigned bytes in element order, the
// scale fields as stored.
struct Unpacked {
  uint8_t u[256];
  uint16_t d = 0, m = 0;  // fp16 bits: d and (Q4_1/Q5_1) m or (K-quants) dmin
  uint8_t scales[16] = {};
};

inline uint16_t load_u16(const uint8_t* p) { uint16_t v; std::memcpy(&v, p, 2); return v; }

// ---- the packed tile's bit regions: where element k (0 .. QK-1) of panel row c lives ----
inline int nibble_at(int c, int k) { return 256 * (k / 32) + 64 * ((k % 16) / 4) + 4 * c + (k % 4); }
inline int nibble_shift(int k) { return (k % 32) < 16 ? 0 : 4; }
inline int crumb_at(int c, int k) { return 64 * (k / 16) + 4 * c + (k % 4); }
inline int crumb_shift(int k) { return 2 * ((k / 4) % 4); }
inline int bitplane_at(int c, int k) { return 8 * (k / 4) + (4 * c + k % 4) / 8; }
inline int bitplane_shift(int c, int k) { return (4 * c + k % 4) % 8; }
inline int byte_at(int c, int k) { return 64 * (k / 4) + 4 * c + (k % 4); }

// The byte offset and bit shift of element k of row c in a region of this kind, and its width mask.
inline void locate(Bits kind, int c, int k, int& at, int& shift, int& mask) {
  switch (kind) {
    case Bits::kNibbles: at = nibble_at(c, k); shift = nibble_shift(k); mask = 15; break;
    case Bits::kCrumbs: at = crumb_at(c, k); shift = crumb_shift(k); mask = 3; break;
    case Bits::kBitplane: at = bitplane_at(c, k); shift = bitplane_shift(c, k); mask = 1; break;
    default: at = byte_at(c, k); shift = 0; mask = 255; break;
  }
}

// Stores bits [from, from + width) of each u[k] of row c into the region r of this kind
// (store), or ORs them back into u[k] at bit `from` (load).
inline void put_bits(uint8_t* r, Bits kind, int c, int qk, const uint8_t* u, int from) {
  for (int k = 0; k < qk; ++k) {
    int at, shift, mask;
    locate(kind, c, k, at, shift, mask);
    r[at] = static_cast<uint8_t>((r[at] & ~(mask << shift)) | (((u[k] >> from) & mask) << shift));
  }
}
inline void get_bits(const uint8_t* r, Bits kind, int c, int qk, uint8_t* u, int from) {
  for (int k = 0; k < qk; ++k) {
    int at, shift, mask;
    locate(kind, c, k, at, shift, mask);
    u[k] = static_cast<uint8_t>(u[k] | (((r[at] >> shift) & mask) << from));
  }
}

// 6-bit sub-block scale and min j (0..7) of Q4_K / Q5_K, from their 12 scale bytes.
inline int k4_scale(const uint8_t* s, int j) { return j < 4 ? s[j] & 63 : (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4); }
inline int k4_min(const uint8_t* s, int j) { return j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | ((s[j] >> 6) << 4); }
// Signed 6-bit scale j (0..15) of Q3_K, from its 12 scale bytes.
inline int k3_scale(const uint8_t* s, int j) {
  const int lo = j < 8 ? s[j] & 15 : s[j - 8] >> 4;
  const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (lo | (hi << 4)) - 32;
}

// ---- the formats: GGUF block -> Unpacked, and the packed tile's regions ----
// kLo/kHi: the regions of the low and high quant bits (kHiShift: where the high bits start);
// kScaleBytes: GGUF scale bytes per block; kHasM: whether the tile stores m/dmin.
#define PAGEDLLM_QUANT_FORMAT(NAME, ID, QK, TYPE_SIZE, SUB, OFFSET, LO, HI, HI_SHIFT, SCALE_BYTES, HAS_M) \
  struct NAME {                                                                                      \
    static constexpr int kId = ID, kQK = QK, kTypeSize = TYPE_SIZE, kSub = SUB, kOffset = OFFSET;    \
    static constexpr bool kAsym = OFFSET < 0;                                                         \
    static constexpr Bits kLo = LO, kHi = HI;                                                         \
    static constexpr int kHiShift = HI_SHIFT, kScaleBytes = SCALE_BYTES;                              \
    static constexpr bool kHasM = HAS_M;                                                              \
    static constexpr int kTileBytes = kPanel * TYPE_SIZE;                                             \
    static constexpr int kHiAt = QK * kPanel * (LO == Bits::kNibbles ? 4 : LO == Bits::kCrumbs ? 2 : 8) / 8; \
    static constexpr int kScalesAt = kHiAt + (HI == Bits::kNone ? 0 : HI == Bits::kBitplane ? QK * 2 : QK * 4); \
    static constexpr int kDAt = kScalesAt + SCALE_BYTES * kPanel;                                     \
    static constexpr int kMAt = kDAt + 2 * kPanel;                                                    \
    static_assert(kMAt + (HAS_M ? 2 * kPanel : 0) == kTileBytes, #NAME ": tile size");                \
    static void unpack(const uint8_t* blk, Unpacked& out);                                            \
  };

// offset -1: asymmetric (a min instead of an offset)
PAGEDLLM_QUANT_FORMAT(Q4_0, kQ4_0, 32, 18, 32, 8, Bits::kNibbles, Bits::kNone, 0, 0, false)
PAGEDLLM_QUANT_FORMAT(Q4_1, kQ4_1, 32, 20, 32, -1, Bits::kNibbles, Bits::kNone, 0, 0, true)
PAGEDLLM_QUANT_FORMAT(Q5_0, kQ5_0, 32, 22, 32, 16, Bits::kNibbles, Bits::kBitplane, 4, 0, false)
PAGEDLLM_QUANT_FORMAT(Q5_1, kQ5_1, 32, 24, 32, -1, Bits::kNibbles, Bits::kBitplane, 4, 0, true)
PAGEDLLM_QUANT_FORMAT(Q8_0, kQ8_0, 32, 34, 32, 128, Bits::kBytes, Bits::kNone, 0, 0, false)
PAGEDLLM_QUANT_FORMAT(Q2_K, kQ2_K, 256, 84, 16, -1, Bits::kCrumbs, Bits::kNone, 0, 16, true)
PAGEDLLM_QUANT_FORMAT(Q3_K, kQ3_K, 256, 110, 16, 4, Bits::kCrumbs, Bits::kBitplane, 2, 12, false)
PAGEDLLM_QUANT_FORMAT(Q4_K, kQ4_K, 256, 144, 32, -1, Bits::kNibbles, Bits::kNone, 0, 12, true)
PAGEDLLM_QUANT_FORMAT(Q5_K, kQ5_K, 256, 176, 32, -1, Bits::kNibbles, Bits::kBitplane, 4, 12, true)
PAGEDLLM_QUANT_FORMAT(Q6_K, kQ6_K, 256, 210, 16, 32, Bits::kNibbles, Bits::kCrumbs, 4, 16, false)
#undef PAGEDLLM_QUANT_FORMAT

// GGUF block layouts (ggml-common.h's block_* structs), element order as gguf-py dequantizes.
inline void unpack_legacy4(const uint8_t* qs, uint8_t* u) {  // 16 bytes: element j low, j + 16 high
  for (int j = 0; j < 16; ++j) { u[j] = qs[j] & 15; u[j + 16] = qs[j] >> 4; }
}
inline void add_high_bits32(uint32_t qh, uint8_t* u) {
  for (int j = 0; j < 32; ++j) u[j] = static_cast<uint8_t>(u[j] | (((qh >> j) & 1) << 4));
}
inline void Q4_0::unpack(const uint8_t* b, Unpacked& o) { o.d = load_u16(b); unpack_legacy4(b + 2, o.u); }
inline void Q4_1::unpack(const uint8_t* b, Unpacked& o) {
  o.d = load_u16(b); o.m = load_u16(b + 2); unpack_legacy4(b + 4, o.u);
}
inline void Q5_0::unpack(const uint8_t* b, Unpacked& o) {
  uint32_t qh; std::memcpy(&qh, b + 2, 4);
  o.d = load_u16(b); unpack_legacy4(b + 6, o.u); add_high_bits32(qh, o.u);
}
inline void Q5_1::unpack(const uint8_t* b, Unpacked& o) {
  uint32_t qh; std::memcpy(&qh, b + 4, 4);
  o.d = load_u16(b); o.m = load_u16(b + 2); unpack_legacy4(b + 8, o.u); add_high_bits32(qh, o.u);
}
inline void Q8_0::unpack(const uint8_t* b, Unpacked& o) {
  o.d = load_u16(b);
  for (int j = 0; j < 32; ++j) o.u[j] = b[2 + j] ^ 0x80;
}
inline void unpack_k_crumbs(const uint8_t* qs, uint8_t* u) {  // 64 bytes: element 128h + 32s + l
  for (int h = 0; h < 2; ++h)
    for (int s = 0; s < 4; ++s)
      for (int l = 0; l < 32; ++l) u[128 * h + 32 * s + l] = (qs[32 * h + l] >> (2 * s)) & 3;
}
inline void unpack_k_nibbles(const uint8_t* qs, uint8_t* u) {  // 128 bytes: element 64g + 32a + l
  for (int g = 0; g < 4; ++g)
    for (int l = 0; l < 32; ++l) { u[64 * g + l] = qs[32 * g + l] & 15; u[64 * g + 32 + l] = qs[32 * g + l] >> 4; }
}
inline void add_k_bitplane(const uint8_t* qh, uint8_t* u, int shift) {  // 32 bytes: element 32i + l, bit i
  for (int i = 0; i < 8; ++i)
    for (int l = 0; l < 32; ++l) u[32 * i + l] = static_cast<uint8_t>(u[32 * i + l] | (((qh[l] >> i) & 1) << shift));
}
inline void Q2_K::unpack(const uint8_t* b, Unpacked& o) {
  std::memcpy(o.scales, b, 16); unpack_k_crumbs(b + 16, o.u); o.d = load_u16(b + 80); o.m = load_u16(b + 82);
}
inline void Q3_K::unpack(const uint8_t* b, Unpacked& o) {
  unpack_k_crumbs(b + 32, o.u); add_k_bitplane(b, o.u, 2); std::memcpy(o.scales, b + 96, 12); o.d = load_u16(b + 108);
}
inline void Q4_K::unpack(const uint8_t* b, Unpacked& o) {
  o.d = load_u16(b); o.m = load_u16(b + 2); std::memcpy(o.scales, b + 4, 12); unpack_k_nibbles(b + 16, o.u);
}
inline void Q5_K::unpack(const uint8_t* b, Unpacked& o) {
  o.d = load_u16(b); o.m = load_u16(b + 2); std::memcpy(o.scales, b + 4, 12);
  unpack_k_nibbles(b + 48, o.u); add_k_bitplane(b + 16, o.u, 4);
}
inline void Q6_K::unpack(const uint8_t* b, Unpacked& o) {
  for (int h = 0; h < 2; ++h)  // ql: element 128h + 64a + l; qh: element 128h + 32s + l
    for (int l = 0; l < 64; ++l) {
      o.u[128 * h + l] = b[64 * h + l] & 15;
      o.u[128 * h + 64 + l] = b[64 * h + l] >> 4;
    }
  for (int h = 0; h < 2; ++h)
    for (int s = 0; s < 4; ++s)
      for (int l = 0; l < 32; ++l) o.u[128 * h + 32 * s + l] |= static_cast<uint8_t>(((b[128 + 32 * h + l] >> (2 * s)) & 3) << 4);
  std::memcpy(o.scales, b + 192, 16); o.d = load_u16(b + 208);
}

// ---- the packed tile <-> Unpacked (panel row c) ----
template <typename F>
void store_tile(uint8_t* tile, int c, const Unpacked& in) {
  put_bits(tile, F::kLo, c, F::kQK, in.u, 0);
  if (F::kHi != Bits::kNone) put_bits(tile + F::kHiAt, F::kHi, c, F::kQK, in.u, F::kHiShift);
  for (int i = 0; i < F::kScaleBytes; ++i) tile[F::kScalesAt + 16 * i + c] = in.scales[i];
  std::memcpy(tile + F::kDAt + 2 * c, &in.d, 2);
  if (F::kHasM) std::memcpy(tile + F::kMAt + 2 * c, &in.m, 2);
}

template <typename F>
void load_tile(const uint8_t* tile, int c, Unpacked& out) {
  std::memset(out.u, 0, sizeof(out.u));
  get_bits(tile, F::kLo, c, F::kQK, out.u, 0);
  if (F::kHi != Bits::kNone) get_bits(tile + F::kHiAt, F::kHi, c, F::kQK, out.u, F::kHiShift);
  for (int i = 0; i < F::kScaleBytes; ++i) out.scales[i] = tile[F::kScalesAt + 16 * i + c];
  out.d = load_u16(tile + F::kDAt + 2 * c);
  out.m = F::kHasM ? load_u16(tile + F::kMAt + 2 * c) : 0;
}

// Sub-block s's float scale dsc and min mn (0 for symmetric types), as every kernel computes them.
template <typename F>
void sub_scale(const Unpacked& b, int s, float& dsc, float& mn) {
  const float d = fp16_to_float(b.d);
  mn = 0.f;
  if constexpr (F::kId == kQ4_K || F::kId == kQ5_K) {
    dsc = d * static_cast<float>(k4_scale(b.scales, s));
    mn = -(fp16_to_float(b.m) * static_cast<float>(k4_min(b.scales, s)));
  } else if constexpr (F::kId == kQ2_K) {
    dsc = d * static_cast<float>(b.scales[s] & 15);
    mn = -(fp16_to_float(b.m) * static_cast<float>(b.scales[s] >> 4));
  } else if constexpr (F::kId == kQ3_K) {
    dsc = d * static_cast<float>(k3_scale(b.scales, s));
  } else if constexpr (F::kId == kQ6_K) {
    dsc = d * static_cast<float>(static_cast<int8_t>(b.scales[s]));
  } else {
    dsc = d;
    if constexpr (F::kHasM) mn = fp16_to_float(b.m);
  }
}

// The block's QK weights in float32, bit-equal to gguf-py's dequantize.
template <typename F>
void dequantize_block(const Unpacked& b, float* out) {
  for (int s = 0; s < F::kQK / F::kSub; ++s) {
    float dsc, mn;
    sub_scale<F>(b, s, dsc, mn);
    for (int k = s * F::kSub; k < (s + 1) * F::kSub; ++k) {
      if constexpr (F::kAsym) {
        out[k] = mul_rounded(dsc, static_cast<float>(b.u[k])) + mn;
      } else {
        out[k] = dsc * static_cast<float>(static_cast<int>(b.u[k]) - F::kOffset);
      }
    }
  }
}

// Calls fn(F{}) with the format of a GGML type id; false if unsupported.
template <typename Fn>
bool with_format(int64_t type, Fn&& fn) {
  switch (type) {
    case kQ4_0: fn(Q4_0{}); return true;
    case kQ4_1: fn(Q4_1{}); return true;
    case kQ5_0: fn(Q5_0{}); return true;
    case kQ5_1: fn(Q5_1{}); return true;
    case kQ8_0: fn(Q8_0{}); return true;
    case kQ2_K: fn(Q2_K{}); return true;
    case kQ3_K: fn(Q3_K{}); return true;
    case kQ4_K: fn(Q4_K{}); return true;
    case kQ5_K: fn(Q5_K{}); return true;
    case kQ6_K: fn(Q6_K{}); return true;
    default: return false;
  }
}

}  // namespace pagedllm::quant
