// RMSNorm on the CPU (float32 or bfloat16), optionally fused with the residual add.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

#include "scalar.h"

namespace pagedllm {
namespace {

// RMSNorm over rows of x [T, H], optionally after adding the residual (vLLM's fused form):
//   sum = x + residual (rounded to T, as the unfused torch ops do), out = w * T(sum / rms(sum)).
// Returns out, and sum when a residual is given; the inputs are not modified.
template <typename T>
void rms_norm_kernel(const T* __restrict__ x, const T* __restrict__ residual, const T* __restrict__ weight,
                     T* __restrict__ out, T* __restrict__ sum_out, int64_t num_tokens, int64_t hidden,
                     float eps) {
  at::parallel_for(0, num_tokens, 8, [&](int64_t begin, int64_t end) {
    std::vector<float> row(hidden);
    for (int64_t t = begin; t < end; ++t) {
      const T* xr = x + t * hidden;
      float ss = 0.f;
      if (residual != nullptr) {
        const T* rr = residual + t * hidden;
        T* sr = sum_out + t * hidden;
        for (int64_t i = 0; i < hidden; ++i) {
          const T v = static_cast<T>(to_float(xr[i]) + to_float(rr[i]));
          sr[i] = v;
          row[i] = to_float(v);
        }
      } else {
        for (int64_t i = 0; i < hidden; ++i) row[i] = to_float(xr[i]);
      }
#pragma omp simd reduction(+ : ss)
      for (int64_t i = 0; i < hidden; ++i) ss += row[i] * row[i];
      const float inv = 1.f / std::sqrt(ss / static_cast<float>(hidden) + eps);
      T* o = out + t * hidden;
      for (int64_t i = 0; i < hidden; ++i) {
        o[i] = static_cast<T>(to_float(weight[i]) * to_float(static_cast<T>(row[i] * inv)));
      }
    }
  });
}

}  // namespace

std::vector<torch::Tensor> rms_norm(torch::Tensor x, c10::optional<torch::Tensor> residual, torch::Tensor weight,
                                    double eps) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && weight.is_contiguous(), "x: contiguous [T, H]");
  TORCH_CHECK(weight.scalar_type() == x.scalar_type() && weight.numel() == x.size(1), "weight: [H], x's dtype");
  auto out = torch::empty_like(x);
  torch::Tensor sum;
  if (residual.has_value()) {
    TORCH_CHECK(residual->sizes() == x.sizes() && residual->is_contiguous() &&
                residual->scalar_type() == x.scalar_type(), "residual: like x");
    sum = torch::empty_like(x);
  }
  const bool has_res = residual.has_value();
  if (x.scalar_type() == at::kFloat) {
    rms_norm_kernel<float>(x.data_ptr<float>(), has_res ? residual->data_ptr<float>() : nullptr,
                           weight.data_ptr<float>(), out.data_ptr<float>(), has_res ? sum.data_ptr<float>() : nullptr,
                           x.size(0), x.size(1), static_cast<float>(eps));
  } else if (x.scalar_type() == at::kBFloat16) {
    using bf = at::BFloat16;
    rms_norm_kernel<bf>(x.data_ptr<bf>(), has_res ? residual->data_ptr<bf>() : nullptr, weight.data_ptr<bf>(),
                        out.data_ptr<bf>(), has_res ? sum.data_ptr<bf>() : nullptr, x.size(0), x.size(1),
                        static_cast<float>(eps));
  } else {
    TORCH_CHECK(false, "rms_norm supports float32 and bfloat16");
  }
  if (has_res) return {out, sum};
  return {out};
}

}  // namespace pagedllm
