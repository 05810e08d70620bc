// The epilogue arguments the CPU GEMMs share (linear_f32.cpp, quant_gemm.cpp): an optional bias
// [N], and an optional residual [M, N] that the result is added into in place (then returned as
// the output), checked once here.
#pragma once

#include <torch/extension.h>

namespace pagedllm {

struct GemmEpilogue {
  const float* bias;  // [N] or null
  bool accumulate;    // out is the residual: the GEMM adds into it
  torch::Tensor out;  // [M, N] float32
};

inline GemmEpilogue gemm_epilogue(const torch::Tensor& x, int64_t M, int64_t N, const c10::optional<torch::Tensor>& bias,
                                  const c10::optional<torch::Tensor>& residual) {
  const float* bias_ptr = nullptr;
  if (bias.has_value()) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->is_contiguous() && bias->numel() == N, "bias: [N] float32");
    bias_ptr = bias->data_ptr<float>();
  }
  const bool accumulate = residual.has_value();
  if (accumulate) {
    TORCH_CHECK(residual->scalar_type() == at::kFloat && residual->is_contiguous() && residual->dim() == 2 &&
                    residual->size(0) == M && residual->size(1) == N,
                "residual: [M, N] float32, contiguous");
  }
  return {bias_ptr, accumulate, accumulate ? *residual : torch::empty({M, N}, x.options())};
}

}  // namespace pagedllm
