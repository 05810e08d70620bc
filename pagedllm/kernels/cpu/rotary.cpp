// Neox rotary embedding in place on the CPU (float32 or bfloat16; q and k rows may be strided views).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include "scalar.h"

namespace pagedllm {
namespace {

// Neox-style rotary embedding applied in place to the first rotary_dim dims of every head of x
// [T, num_heads * head_size] (rows may be strided, e.g. a q/k view of a fused qkv output):
//   | x1 | x2 | rest |  ->  | x1*cos - x2*sin | x2*cos + x1*sin | rest |
// with cos/sin [rotary_dim/2] each taken from cos_sin_cache[position] = | cos | sin |.
template <typename T>
void rotary_kernel(T* __restrict__ x, int64_t row_stride, int64_t num_tokens, int64_t num_heads,
                   int64_t head_size, const int64_t* __restrict__ positions,
                   const float* __restrict__ cos_sin_cache, int64_t rotary_dim) {
  const int64_t half = rotary_dim / 2;
  at::parallel_for(0, num_tokens, 16, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const float* cs = cos_sin_cache + positions[t] * rotary_dim;
      T* row = x + t * row_stride;
      for (int64_t h = 0; h < num_heads; ++h) {
        T* x1 = row + h * head_size;
        T* x2 = x1 + half;
        for (int64_t i = 0; i < half; ++i) {
          const float c = cs[i], s = cs[half + i];
          const float a = static_cast<float>(x1[i]), b = static_cast<float>(x2[i]);
          x1[i] = static_cast<T>(a * c - b * s);
          x2[i] = static_cast<T>(b * c + a * s);
        }
      }
    }
  });
}

}  // namespace

void rotary_embedding_(torch::Tensor x, torch::Tensor positions, torch::Tensor cos_sin_cache,
                       int64_t head_size) {
  TORCH_CHECK(x.dim() == 2 && x.stride(1) == 1, "x must be [T, heads * head_size] with unit last stride");
  TORCH_CHECK(positions.scalar_type() == at::kLong && positions.is_contiguous(), "positions: contiguous int64");
  TORCH_CHECK(cos_sin_cache.scalar_type() == at::kFloat && cos_sin_cache.is_contiguous(), "cache: float32");
  TORCH_CHECK(x.size(1) % head_size == 0, "width is not a multiple of head_size");
  const int64_t rotary_dim = cos_sin_cache.size(1);
  TORCH_CHECK(rotary_dim % 2 == 0 && rotary_dim <= head_size, "bad rotary_dim");
  const int64_t num_heads = x.size(1) / head_size;
  if (x.scalar_type() == at::kFloat) {
    rotary_kernel<float>(x.data_ptr<float>(), x.stride(0), x.size(0), num_heads, head_size,
                         positions.data_ptr<int64_t>(), cos_sin_cache.data_ptr<float>(), rotary_dim);
  } else if (x.scalar_type() == at::kBFloat16) {
    rotary_kernel<at::BFloat16>(x.data_ptr<at::BFloat16>(), x.stride(0), x.size(0), num_heads, head_size,
                                positions.data_ptr<int64_t>(), cos_sin_cache.data_ptr<float>(), rotary_dim);
  } else {
    TORCH_CHECK(false, "rotary_embedding_ supports float32 and bfloat16");
  }
}

}  // namespace pagedllm
