// What the quantized linear layer's kernels share: the activations quantized to int8, the job
// of one call, and one entry point per ISA (quant_gemm.cpp dispatches; quant_gemm_scalar.cpp,
// quant_gemm_avx2.cpp and quant_gemm_avx512.cpp implement them).
//
// Every path computes, for output (row r, column n), one float32 accumulator updated per
// sub-block s of the weight row, in K order:
//
//   isum = init_s + sum_k u[n, k] * xq[r, k]           (int32, exact)
//   acc  = fma(float(isum), dsc[n, s] * xd[r, s/..], acc)
//   acc  = fma(mn[n, s], xt[r, s], acc)                 (asymmetric types only)
//
// then out = (acc + bias) (+ residual). The integer part is exact and the float operations are
// the same ones in the same order on every path and for every M, so the paths give bit-equal
// results and a row's result does not depend on the batch it is in.
#pragma once

#include <cstdint>
#include <cstring>

namespace pagedllm::quant {

// x [M, K] quantized per 32 (amax / 127, round to nearest even), plus one term per weight
// sub-block (kSub weights): int32 -kOffset * sum(xq) for the symmetric types (the dot product's
// initial value: sum (u - o) x = sum u x - o sum x), float xd * sum(xq) for the asymmetric ones
// (what multiplies the min).
struct QuantizedRows {
  const int8_t* q;   // [M, K]
  const float* d;    // [M, K / 32]
  const int32_t* t;  // [M, K / kSub]: int32, or float bits (asymmetric)
  int64_t K;
  int64_t ldd() const { return K / 32; }
};

// QuantizedRows::t of one sub-block from the sum of its int8 activations: -offset * sum for a
// symmetric type (offset >= 0), the float bits of xd * sum for an asymmetric one. Every path's
// quantizer writes it through here, so the terms are the same bits on all of them.
inline int32_t sub_block_term(int32_t sum, int offset, float xd) {
  if (offset >= 0) return -offset * sum;
  const float v = xd * static_cast<float>(sum);
  int32_t bits;
  std::memcpy(&bits, &v, 4);
  return bits;
}

struct LinearJob {
  const uint8_t* packed;  // [P, K / QK, tile bytes]
  int64_t M, K, N;
  const float* bias;      // [N] or null
  float* out;             // [M, N], added into when accumulate (the residual)
  bool accumulate;
};

// Output panels [p0, p1) of all M rows.
using PanelsFn = void (*)(const LinearJob& job, const QuantizedRows& x, int64_t p0, int64_t p1);

// Activation quantization of rows [m0, m1) of x (row stride ldx) into the buffers of `x`,
// for sub-blocks of `sub` weights and the given offset (< 0: asymmetric).
using QuantizeFn = void (*)(const float* x, int64_t ldx, int64_t m0, int64_t m1, int sub, int offset,
                            const QuantizedRows& out);

PanelsFn scalar_panels(int64_t type);
void quantize_rows_scalar(const float* x, int64_t ldx, int64_t m0, int64_t m1, int sub, int offset,
                          const QuantizedRows& out);
// null when this build has no such path (its instructions were not enabled for the compiler)
PanelsFn avx2_panels(int64_t type);
QuantizeFn avx2_quantize();
PanelsFn avx512_panels(int64_t type);
QuantizeFn avx512_quantize();

}  // namespace pagedllm::quant
