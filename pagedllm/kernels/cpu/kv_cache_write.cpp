// The step's new K/V rows into one layer's paged cache on the CPU, in one call.
#include <torch/extension.h>

#include <cstring>

namespace pagedllm {

namespace {

void round_row(const float* src, at::BFloat16* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = at::BFloat16(src[i]);  // round to nearest even
}

}  // namespace

// This step's K and V rows into one layer's cache at their slots (block_id * block_size + offset);
// slots < 0 are padding and skipped. key/value [T, KV * D] (rows may be strided views of the qkv
// output), caches [NB, bs, KV, D] contiguous, all one dtype, or float32 rows into a bfloat16 cache
// (kv_cache_dtype bfloat16: rounded to nearest even, as torch's .to(bfloat16)). One call instead of
// two index_copy_.
void write_kv_cache(torch::Tensor key, torch::Tensor value, torch::Tensor key_cache, torch::Tensor value_cache,
                    torch::Tensor slot_mapping) {
  TORCH_CHECK(key.dim() == 2 && value.dim() == 2 && key.stride(1) == 1 && value.stride(1) == 1, "k/v: [T, KV*D]");
  TORCH_CHECK(key_cache.is_contiguous() && value_cache.is_contiguous(), "caches must be contiguous");
  TORCH_CHECK(key.scalar_type() == value.scalar_type() && value_cache.scalar_type() == key_cache.scalar_type(),
              "one dtype for K and V");
  const bool narrow = key.scalar_type() == at::kFloat && key_cache.scalar_type() == at::kBFloat16;
  TORCH_CHECK(narrow || key.scalar_type() == key_cache.scalar_type(),
              "the cache has the rows' dtype, or bfloat16 under float32");
  TORCH_CHECK(slot_mapping.scalar_type() == at::kLong, "int64 slots");
  const int64_t row = key_cache.size(2) * key_cache.size(3);
  TORCH_CHECK(key.size(1) == row && value.size(1) == row && slot_mapping.numel() >= key.size(0), "shapes");
  const int64_t num_slots = key_cache.size(0) * key_cache.size(1);
  const int64_t* slots = slot_mapping.contiguous().data_ptr<int64_t>();
  const int64_t bytes = row * key_cache.element_size();
  const char* kp = static_cast<const char*>(key.data_ptr());
  const char* vp = static_cast<const char*>(value.data_ptr());
  char* kc = static_cast<char*>(key_cache.data_ptr());
  char* vc = static_cast<char*>(value_cache.data_ptr());
  const int64_t ks = key.stride(0) * key.element_size(), vs = value.stride(0) * value.element_size();
  for (int64_t t = 0; t < key.size(0); ++t) {
    const int64_t slot = slots[t];
    if (slot < 0) continue;
    TORCH_CHECK(slot < num_slots, "slot out of range");
    if (narrow) {
      round_row(reinterpret_cast<const float*>(kp + t * ks), reinterpret_cast<at::BFloat16*>(kc + slot * bytes), row);
      round_row(reinterpret_cast<const float*>(vp + t * vs), reinterpret_cast<at::BFloat16*>(vc + slot * bytes), row);
      continue;
    }
    std::memcpy(kc + slot * bytes, kp + t * ks, bytes);
    std::memcpy(vc + slot * bytes, vp + t * vs, bytes);
  }
}

}  // namespace pagedllm
