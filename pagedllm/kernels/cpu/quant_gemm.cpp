// The quantized linear layer: out = x @ dequant(W)^T + bias over a weight packed by quant_repack,
// or with `residual` added into it in place (the o and down projections adding into the hidden
// state, as linear_f32.cpp does).
//
//   x         float32 [M, K]   rows may be strided (a view of a wider tensor), columns contiguous
//   packed    uint8            quant_repack's layout (quant_formats.h): panels of 16 weight rows
//   out       float32 [M, N]   a new tensor, or `residual` [M, N] contiguous, returned
//
// x is quantized once per call to int8 per 32 values (scale amax / 127, as llama.cpp's Q8_0),
// then the kernels take integer dot products of 4 weights and 4 activations at a time
// (AVX-512 VNNI vpdpbusd; AVX2 vpmaddubsw + vpmaddwd; a scalar loop otherwise) and apply the
// scales in float per sub-block (quant_kernels.h). Threads take contiguous ranges of panels (16
// output columns each), every row of x against them: at batch 1 each weight byte is read once,
// at larger M a decoded weight tile is reused for several rows from registers.
//
// Which ISA runs is chosen per process: the best one this build and CPU have, unless a test sets
// another with quant_set_isa. All paths give bit-equal results (quant_kernels.h).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include "gemm_epilogue.h"
#include "quant_formats.h"
#include "quant_kernels.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace pagedllm {
namespace quant {
namespace {

enum Isa : int { kAuto = 0, kScalar, kAvx2, kAvx512Vnni };
const char* const kIsaNames[] = {"auto", "scalar", "avx2", "avx512vnni"};
std::atomic<int> g_isa{kAuto};

bool cpu_supports(Isa isa) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  switch (isa) {
    case kAvx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    case kAvx512Vnni:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    default: return isa == kScalar;
  }
#else
  return isa == kScalar;
#endif
}

// Compiled here (the build's -march enabled its instructions) and supported by this CPU.
bool available(Isa isa) {
  switch (isa) {
    case kAvx2: return avx2_panels(kQ4_0) != nullptr && cpu_supports(kAvx2);
    case kAvx512Vnni: return avx512_panels(kQ4_0) != nullptr && cpu_supports(kAvx512Vnni);
    case kScalar: return true;
    default: return false;
  }
}

// Outputs this wide, of this many rows, are written through a per-thread buffer (quant_linear).
constexpr int64_t kStageMinCols = 8192;
constexpr int64_t kStageMinRows = 8;
constexpr int64_t kStagePanels = 16;  // 256 columns a group

Isa resolved_isa() {
  const Isa chosen = static_cast<Isa>(g_isa.load());
  if (chosen != kAuto) return chosen;
  if (available(kAvx512Vnni)) return kAvx512Vnni;
  if (available(kAvx2)) return kAvx2;
  return kScalar;
}

}  // namespace
}  // namespace quant

std::vector<std::string> quant_isas() {
  using namespace quant;
  std::vector<std::string> out;
  for (Isa isa : {kAvx512Vnni, kAvx2, kScalar}) {
    if (available(isa)) out.emplace_back(kIsaNames[isa]);
  }
  return out;
}

std::string quant_isa() { return quant::kIsaNames[quant::resolved_isa()]; }

std::string quant_set_isa(const std::string& name) {
  using namespace quant;
  for (int i = kAuto; i <= kAvx512Vnni; ++i) {
    if (name == kIsaNames[i]) {
      TORCH_CHECK(i == kAuto || available(static_cast<Isa>(i)), "quant_set_isa: ", name,
                  " is not available in this build on this CPU");
      return kIsaNames[g_isa.exchange(i)];
    }
  }
  TORCH_CHECK(false, "quant_set_isa: unknown ISA ", name, " (auto, scalar, avx2, avx512vnni)");
}

torch::Tensor quant_linear(torch::Tensor x, torch::Tensor packed, int64_t ggml_type, int64_t out_features,
                           c10::optional<torch::Tensor> bias, c10::optional<torch::Tensor> residual) {
  using namespace quant;
  int qk = 0, sub = 0, offset = 0;
  int64_t tile_bytes = 0;
  const bool supported = with_format(ggml_type, [&](auto f) {
    using F = decltype(f);
    qk = F::kQK;
    sub = F::kSub;
    offset = F::kAsym ? -1 : F::kOffset;
    tile_bytes = F::kTileBytes;
  });
  TORCH_CHECK(supported, "quant_linear: unsupported GGML type ", ggml_type);
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 2 && x.stride(1) == 1,
              "quant_linear: x must be float32 [M, K] with contiguous rows");
  const int64_t M = x.size(0), K = x.size(1), N = out_features, P = (N + kPanel - 1) / kPanel;
  TORCH_CHECK(K > 0 && K % qk == 0, "quant_linear: K (", K, ") must be a positive multiple of ", qk);
  TORCH_CHECK(packed.scalar_type() == at::kByte && packed.is_contiguous() && packed.numel() == P * (K / qk) * tile_bytes,
              "quant_linear: packed weight does not match K = ", K, " and N = ", N);
  const GemmEpilogue epi = gemm_epilogue(x, M, N, bias, residual);
  const float* bias_ptr = epi.bias;
  const bool accumulate = epi.accumulate;
  auto out = epi.out;
  if (M == 0) return out;

  const Isa isa = resolved_isa();
  PanelsFn panels = isa == kAvx512Vnni ? avx512_panels(ggml_type) : isa == kAvx2 ? avx2_panels(ggml_type)
                                                                                  : scalar_panels(ggml_type);
  QuantizeFn quantize = isa == kAvx512Vnni ? avx512_quantize() : isa == kAvx2 ? avx2_quantize() : nullptr;
  if (quantize == nullptr) quantize = &quantize_rows_scalar;

  // The activations quantized once, for every panel: [M, K] int8, [M, K/32] scales, [M, K/sub] terms.
  std::unique_ptr<int8_t[]> xq(new int8_t[M * K]);
  std::unique_ptr<float[]> xd(new float[M * (K / 32)]);
  std::unique_ptr<int32_t[]> xt(new int32_t[M * (K / sub)]);
  const QuantizedRows rows{xq.get(), xd.get(), xt.get(), K};
  const float* xp = x.data_ptr<float>();
  const int64_t ldx = x.stride(0);
  at::parallel_for(0, M, std::max<int64_t>(1, 16384 / K), [&](int64_t m0, int64_t m1) {
    quantize(xp, ldx, m0, m1, sub, offset, rows);
  });
  const LinearJob job{packed.data_ptr<uint8_t>(), M, K, N, bias_ptr, out.data_ptr<float>(), accumulate};
  if (M < kStageMinRows || N < kStageMinCols) {
    at::parallel_for(0, P, 1, [&](int64_t p0, int64_t p1) { panels(job, rows, p0, p1); });
    return out;
  }
  // A wide output (the LM head's 49152 columns) goes through a per-thread buffer, kStagePanels
  // panels at a time: written straight, each panel's 16 columns of every row sit on another 4 KiB
  // page, and the TLB misses of 64 rows cost ~30% of the call. Same operations, same bits.
  const int64_t panel_bytes = (K / qk) * tile_bytes;
  float* outp = out.data_ptr<float>();
  at::parallel_for(0, P, 1, [&](int64_t p0, int64_t p1) {
    std::unique_ptr<float[]> stage(new float[M * kStagePanels * kPanel]);  // written whole before read
    for (int64_t g0 = p0; g0 < p1; g0 += kStagePanels) {
      const int64_t g1 = std::min(p1, g0 + kStagePanels);
      const int64_t cols = std::min(N, g1 * kPanel) - g0 * kPanel;
      const LinearJob part{job.packed + g0 * panel_bytes, M, K, cols,
                           bias_ptr != nullptr ? bias_ptr + g0 * kPanel : nullptr, stage.get(), false};
      panels(part, rows, 0, g1 - g0);
      for (int64_t m = 0; m < M; ++m) {
        float* dst = outp + m * N + g0 * kPanel;
        const float* src = stage.get() + m * cols;
        if (accumulate) {
          for (int64_t j = 0; j < cols; ++j) dst[j] += src[j];  // out + (acc + bias), as the kernel adds
        } else {
          std::memcpy(dst, src, cols * sizeof(float));
        }
      }
    }
  });
  return out;
}

}  // namespace pagedllm
