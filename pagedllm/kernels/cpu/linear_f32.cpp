// float32 linear layer (out = x @ W^T + bias) for AVX-512 CPUs, over a weight packed in panels.
//
//   packed    [P, K, 32]   P = ceil(N / 32): panel p holds output columns 32p .. 32p+31, k-major,
//                          zero-padded past N (pack_linear_f32 in kernels/cpu/__init__.py)
//   x         [M, K]       rows may be strided (a view of a wider tensor), columns contiguous
//   out       [M, N]       a new tensor, or with `residual` [M, N] contiguous: residual += x @ W^T
//                          + bias in place (the o and down projections adding into the hidden
//                          state), the sum taken after the product as a separate add would
//
// Why our own GEMM: at decode sizes (M <= a few hundred rows) every weight is read once per step
// from DRAM (the model is far larger than the caches), and oneDNN's kernels stall on those reads:
// they ran markedly slower on cold weights than on the same weights hot in cache. Here each
// thread walks its own range of panels and, while it computes a panel's first block of rows, asks
// for the next panel (prefetcht1), so the reads overlap the FMAs: faster than oneDNN cold at batch
// 1 and 64, and at least its rate at prefill sizes (RESULTS.md).
//
// Micro-kernel: MR rows x 32 columns in 2 * MR zmm accumulators (24 for MR = 12), one broadcast
// of x per row and k, two panel loads per k. Each output element is one float32 FMA chain over k
// in order, whatever M or the row's place in the batch: results do not depend on the batch.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "gemm_epilogue.h"

namespace pagedllm {

#if defined(__AVX512F__)
namespace {

constexpr int64_t kPanel = 32;  // output columns per panel: two zmm registers
constexpr int kMaxRows = 12;    // rows per micro-kernel call: 24 accumulators of the 32 zmm
constexpr int64_t kRowChunk = 192;  // rows per pass over a thread's panels: x's chunk stays in L2

template <int MR>
void micro_kernel(const float* __restrict__ x, int64_t ldx, const float* __restrict__ panel,
                  const float* __restrict__ next_panel, int64_t K, const float* __restrict__ bias,
                  float* __restrict__ out, int64_t ldo, int64_t ncols, bool accumulate) {
  __m512 lo[MR], hi[MR];
  for (int r = 0; r < MR; ++r) {
    lo[r] = _mm512_setzero_ps();
    hi[r] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < K; ++k) {
    const __m512 w_lo = _mm512_loadu_ps(panel + k * kPanel);
    const __m512 w_hi = _mm512_loadu_ps(panel + k * kPanel + 16);
    if (next_panel != nullptr) {  // two cache lines of the next panel per k: all of it by k = K
      _mm_prefetch(reinterpret_cast<const char*>(next_panel + k * kPanel), _MM_HINT_T1);
      _mm_prefetch(reinterpret_cast<const char*>(next_panel + k * kPanel + 16), _MM_HINT_T1);
    }
    for (int r = 0; r < MR; ++r) {
      const __m512 xv = _mm512_set1_ps(x[r * ldx + k]);
      lo[r] = _mm512_fmadd_ps(xv, w_lo, lo[r]);
      hi[r] = _mm512_fmadd_ps(xv, w_hi, hi[r]);
    }
  }
  const __mmask16 m_lo = ncols >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << ncols) - 1);
  const __mmask16 m_hi = ncols >= 32 ? 0xFFFF : ncols <= 16 ? 0 : static_cast<__mmask16>((1u << (ncols - 16)) - 1);
  if (bias != nullptr) {  // added after the products, as matmul + bias would
    const __m512 b_lo = _mm512_maskz_loadu_ps(m_lo, bias), b_hi = _mm512_maskz_loadu_ps(m_hi, bias + 16);
    for (int r = 0; r < MR; ++r) {
      lo[r] = _mm512_add_ps(lo[r], b_lo);
      hi[r] = _mm512_add_ps(hi[r], b_hi);
    }
  }
  if (accumulate) {
    for (int r = 0; r < MR; ++r) {
      lo[r] = _mm512_add_ps(lo[r], _mm512_maskz_loadu_ps(m_lo, out + r * ldo));
      hi[r] = _mm512_add_ps(hi[r], _mm512_maskz_loadu_ps(m_hi, out + r * ldo + 16));
    }
  }
  for (int r = 0; r < MR; ++r) {
    _mm512_mask_storeu_ps(out + r * ldo, m_lo, lo[r]);
    _mm512_mask_storeu_ps(out + r * ldo + 16, m_hi, hi[r]);
  }
}

using MicroKernel = void (*)(const float*, int64_t, const float*, const float*, int64_t, const float*, float*,
                             int64_t, int64_t, bool);
const MicroKernel kMicroKernels[kMaxRows + 1] = {
    nullptr, micro_kernel<1>, micro_kernel<2>, micro_kernel<3>, micro_kernel<4>, micro_kernel<5>,
    micro_kernel<6>, micro_kernel<7>, micro_kernel<8>, micro_kernel<9>, micro_kernel<10>, micro_kernel<11>,
    micro_kernel<12>};

// Rows [m0, m1) against panels [p0, p1): blocks of up to kMaxRows rows, split evenly so no block
// is much smaller than the others (64 rows: 6 blocks of 10-11, not 5 of 12 and one of 4).
void panels_task(const float* x, int64_t ldx, const float* packed, const float* bias, float* out, int64_t M,
                 int64_t N, int64_t K, int64_t p0, int64_t p1, bool accumulate) {
  for (int64_t m0 = 0; m0 < M; m0 += kRowChunk) {
    const int64_t rows = std::min(kRowChunk, M - m0);
    const int64_t blocks = (rows + kMaxRows - 1) / kMaxRows;
    for (int64_t p = p0; p < p1; ++p) {
      const float* panel = packed + p * K * kPanel;
      const float* next = p + 1 < p1 ? panel + K * kPanel : nullptr;
      const int64_t ncols = std::min(kPanel, N - p * kPanel);
      const float* panel_bias = bias != nullptr ? bias + p * kPanel : nullptr;
      int64_t m = m0;
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const int64_t mr = (rows * (blk + 1)) / blocks - (rows * blk) / blocks;
        kMicroKernels[mr](x + m * ldx, ldx, panel, blk == 0 ? next : nullptr, K, panel_bias,
                          out + m * N + p * kPanel, N, ncols, accumulate);
        m += mr;
      }
    }
  }
}

}  // namespace
#endif

torch::Tensor linear_f32(torch::Tensor x, torch::Tensor packed, c10::optional<torch::Tensor> bias,
                         int64_t out_features, c10::optional<torch::Tensor> residual) {
#if defined(__AVX512F__)
  TORCH_CHECK(x.scalar_type() == at::kFloat && packed.scalar_type() == at::kFloat, "linear_f32: float32 only");
  TORCH_CHECK(x.dim() == 2 && x.stride(1) == 1, "linear_f32: x [M, K] with contiguous rows");
  TORCH_CHECK(packed.dim() == 3 && packed.is_contiguous() && packed.size(2) == kPanel, "packed: [P, K, 32]");
  const int64_t M = x.size(0), K = x.size(1), N = out_features, P = packed.size(0);
  TORCH_CHECK(packed.size(1) == K && P == (N + kPanel - 1) / kPanel, "packed weight does not match x / N");
  const GemmEpilogue epi = gemm_epilogue(x, M, N, bias, residual);
  const float* bias_ptr = epi.bias;
  const bool accumulate = epi.accumulate;
  auto out = epi.out;
  if (M == 0) return out;
  const float* xp = x.data_ptr<float>();
  const float* wp = packed.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t ldx = x.stride(0);
  // Threads take contiguous ranges of panels, so each one's next panel is its own to prefetch.
  at::parallel_for(0, P, 1, [&](int64_t p0, int64_t p1) {
    panels_task(xp, ldx, wp, bias_ptr, op, M, N, K, p0, p1, accumulate);
  });
  return out;
#else
  TORCH_CHECK(false, "linear_f32 needs AVX-512 (this build has none)");
#endif
}

}  // namespace pagedllm
