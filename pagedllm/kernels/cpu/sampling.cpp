// Inverse-CDF sampling of one token per row on the CPU (float32, AVX-512), the sampler's
// _random_sample in one pass per stage instead of five torch ops (amax, sub, exp, cumsum,
// searchsorted) over the [N, V] logits:
//
//   logits           [N, V]  float32, truncated (-inf where masked)
//   u                [N]     float32 uniform draws in [0, 1), one per row from its own generator
//   inv_temperature  [N]     float32, optional: 1 / T per row, when the logits are not yet scaled
//   returns          [N]     int64: the first token whose running sum of exp((logit - max) / T)
//                            passes u * total
//
// Per row: the max; then w = exp((logit - max) / T) (0 where the logit is -inf) into a scratch row and
// its total; then a scan, 16 tokens at a time, for u * total. Tokens of weight 0 are never
// picked; if float rounding leaves the scan short of the target, the last token of positive
// weight is (torch's version clamps to the last token of the vocabulary instead).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <limits>
#include <vector>

#include "simd_f32.h"

namespace pagedllm {

#if defined(__AVX512F__)
namespace {

int64_t sample_row(const float* __restrict__ logits, int64_t V, float u, float inv_t, float* __restrict__ w) {
  const __m512 neg_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 mv = neg_inf;
  int64_t j = 0;
  for (; j + 16 <= V; j += 16) mv = _mm512_max_ps(mv, _mm512_loadu_ps(logits + j));
  const __mmask16 tail = static_cast<__mmask16>((1u << (V - j)) - 1);
  if (j < V) mv = _mm512_mask_max_ps(mv, tail, mv, _mm512_maskz_loadu_ps(tail, logits + j));
  const float max = _mm512_reduce_max_ps(mv);
  if (max == -std::numeric_limits<float>::infinity()) return 0;  // nothing allowed: as argmax would
  const __m512 m = _mm512_set1_ps(max);
  const __m512 scale = _mm512_set1_ps(inv_t);
  __m512 sumv = _mm512_setzero_ps();
  for (j = 0; j < V; j += 16) {
    const __mmask16 lanes = j + 16 <= V ? 0xFFFF : tail;
    const __m512 x = _mm512_mask_loadu_ps(neg_inf, lanes, logits + j);
    const __mmask16 live = _mm512_cmp_ps_mask(x, neg_inf, _CMP_NEQ_OQ);  // exp(-inf) is 0, not exp(-87)
    const __m512 e = _mm512_maskz_mov_ps(live, exp_nonpositive(_mm512_mul_ps(_mm512_sub_ps(x, m), scale)));
    _mm512_storeu_ps(w + j, e);
    sumv = _mm512_add_ps(sumv, e);
  }
  const float target = u * _mm512_reduce_add_ps(sumv);
  float running = 0.f;
  int64_t last_positive = 0;
  for (j = 0; j < V; j += 16) {
    const __m512 e = _mm512_loadu_ps(w + j);
    const float block = _mm512_reduce_add_ps(e);
    if (block > 0.f && running + block > target) {
      for (int64_t t = j; t < std::min(V, j + 16); ++t) {
        running += w[t];
        if (w[t] > 0.f) {
          last_positive = t;
          if (running > target) return t;
        }
      }
    } else {
      running += block;
      const __mmask16 pos = _mm512_cmp_ps_mask(e, _mm512_setzero_ps(), _CMP_GT_OQ);
      if (pos) last_positive = j + 15 - __builtin_clz(static_cast<unsigned>(pos) << 16);
    }
  }
  return last_positive;
}

}  // namespace
#endif

torch::Tensor sample_from_logits(torch::Tensor logits, torch::Tensor u, c10::optional<torch::Tensor> inv_temperature) {
#if defined(__AVX512F__)
  TORCH_CHECK(logits.scalar_type() == at::kFloat && logits.dim() == 2 && logits.stride(1) == 1, "logits: [N, V] f32");
  TORCH_CHECK(u.scalar_type() == at::kFloat && u.numel() == logits.size(0), "u: [N] float32");
  torch::Tensor inv_t;
  if (inv_temperature.has_value()) {
    TORCH_CHECK(inv_temperature->scalar_type() == at::kFloat && inv_temperature->numel() == logits.size(0),
                "inv_temperature: [N] float32");
    inv_t = inv_temperature->contiguous();
  }
  const int64_t N = logits.size(0), V = logits.size(1), ld = logits.stride(0);
  auto out = torch::empty({N}, logits.options().dtype(at::kLong));
  const float* lp = logits.data_ptr<float>();
  auto uc = u.contiguous();
  const float* up = uc.data_ptr<float>();
  const float* tp = inv_t.defined() ? inv_t.data_ptr<float>() : nullptr;
  int64_t* op = out.data_ptr<int64_t>();
  at::parallel_for(0, N, 1, [&](int64_t r0, int64_t r1) {
    std::vector<float> w(V + 16);
    for (int64_t r = r0; r < r1; ++r) op[r] = sample_row(lp + r * ld, V, up[r], tp != nullptr ? tp[r] : 1.f, w.data());
  });
  return out;
#else
  TORCH_CHECK(false, "sample_from_logits needs AVX-512 (this build has none)");
#endif
}

}  // namespace pagedllm
