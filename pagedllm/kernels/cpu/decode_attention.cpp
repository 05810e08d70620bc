// Paged decode attention on the CPU: one query token per request against its K/V, read straight
// from the cache blocks through the block table (no gathered copy), GQA-aware.
//
//   query        [B, H, D]            float32 or bfloat16
//   key_cache    [NB, bs, KV, D]      same dtype (one layer, K half of the cache)
//   value_cache  [NB, bs, KV, D]
//   block_table  [B, max_blocks]      int32
//   seq_lens     [B]                  int32: request b attends to its first seq_lens[b] tokens
//   out          [B, H, D]            written here
//
// Work is split over (request, kv head); each task reads that head's K and V once, for the G query
// heads that share it. Scores are kept for the whole context (two-pass softmax in float32).
// float32 with AVX-512 and a small group takes a register-resident path (decode_task_f32) with
// vectorised exponentials and software prefetch of the rows ahead.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "scalar.h"
#include "simd_f32.h"

namespace pagedllm {
namespace {

#if defined(__AVX512F__)
// Tokens ahead whose K (or V) row a decode task asks for while it works on the current one: the
// rows of one kv head are strided and each cache block sits elsewhere (the block table), which
// the hardware prefetcher does not follow.
constexpr int64_t kAhead = 16;

template <int NC>
inline void prefetch_row(const float* cache, const int32_t* table, int64_t t, int64_t block_size,
                         int64_t block_stride, int64_t token_stride, int64_t kvh) {
  const char* row = reinterpret_cast<const char*>(cache + table[t / block_size] * block_stride +
                                                  (t % block_size) * token_stride + kvh * 16 * NC);
  for (int c = 0; c < NC; ++c) _mm_prefetch(row + 64 * c, _MM_HINT_T0);
}

// float32 fast path for one request and kv heads [kv0, kv1): the group's G query heads (head size
// 16 * NC) stay in registers, so each token's G dot products run as independent FMA chains and
// the output accumulates in registers; the generic loops below kept one dot product's chain and
// its horizontal sum in flight at a time. Same two-pass softmax, same order of normalisation.
template <int NC, int G>
void decode_task_f32(const float* __restrict__ q, const float* __restrict__ kc, const float* __restrict__ vc,
                     const int32_t* __restrict__ table, int64_t len, int64_t kv0, int64_t kv1,
                     int64_t block_size, int64_t block_stride, int64_t token_stride, float scale,
                     float* __restrict__ scores, float* __restrict__ out) {
  constexpr int64_t D = 16 * NC;
  for (int64_t kvh = kv0; kvh < kv1; ++kvh) {
    __m512 qv[G][NC];
    for (int g = 0; g < G; ++g)
      for (int c = 0; c < NC; ++c)
        qv[g][c] = _mm512_mul_ps(_mm512_loadu_ps(q + (kvh * G + g) * D + 16 * c), _mm512_set1_ps(scale));
    for (int64_t t = 0; t < len; ++t) {
      const float* k = kc + table[t / block_size] * block_stride + (t % block_size) * token_stride + kvh * D;
      if (t + kAhead < len) prefetch_row<NC>(kc, table, t + kAhead, block_size, block_stride, token_stride, kvh);
      __m512 acc[G];
      const __m512 k0 = _mm512_loadu_ps(k);
      for (int g = 0; g < G; ++g) acc[g] = _mm512_mul_ps(qv[g][0], k0);
      for (int c = 1; c < NC; ++c) {
        const __m512 kk = _mm512_loadu_ps(k + 16 * c);
        for (int g = 0; g < G; ++g) acc[g] = _mm512_fmadd_ps(qv[g][c], kk, acc[g]);
      }
      for (int g = 0; g < G; ++g) scores[g * len + t] = _mm512_reduce_add_ps(acc[g]);
    }
    for (int g = 0; g < G; ++g) softmax_in_place(scores + g * len, len);
    __m512 o[G][NC];
    for (int g = 0; g < G; ++g)
      for (int c = 0; c < NC; ++c) o[g][c] = _mm512_setzero_ps();
    for (int64_t t = 0; t < len; ++t) {
      const float* v = vc + table[t / block_size] * block_stride + (t % block_size) * token_stride + kvh * D;
      if (t + kAhead < len) prefetch_row<NC>(vc, table, t + kAhead, block_size, block_stride, token_stride, kvh);
      for (int c = 0; c < NC; ++c) {
        const __m512 vv = _mm512_loadu_ps(v + 16 * c);
        for (int g = 0; g < G; ++g) o[g][c] = _mm512_fmadd_ps(_mm512_set1_ps(scores[g * len + t]), vv, o[g][c]);
      }
    }
    for (int g = 0; g < G; ++g)
      for (int c = 0; c < NC; ++c) _mm512_storeu_ps(out + (kvh * G + g) * D + 16 * c, o[g][c]);
  }
}

using FastTask = void (*)(const float*, const float*, const float*, const int32_t*, int64_t, int64_t, int64_t,
                          int64_t, int64_t, int64_t, float, float*, float*);

// The fast path for (head size, group), or nullptr: the shapes whose q and output fit the 32
// vector registers (group x head_size / 16 <= 16).
inline FastTask fast_task_for(int64_t head_size, int64_t group) {
  const int64_t nc = head_size % 16 == 0 ? head_size / 16 : 0;
  if (nc == 4) {
    switch (group) {
      case 1: return decode_task_f32<4, 1>;
      case 2: return decode_task_f32<4, 2>;
      case 3: return decode_task_f32<4, 3>;
      case 4: return decode_task_f32<4, 4>;
    }
  } else if (nc == 8) {
    switch (group) {
      case 1: return decode_task_f32<8, 1>;
      case 2: return decode_task_f32<8, 2>;
    }
  }
  return nullptr;
}
#endif

template <typename T>
void decode_kernel(const T* __restrict__ q, const T* __restrict__ kc, const T* __restrict__ vc,
                   const int32_t* __restrict__ block_table, const int32_t* __restrict__ seq_lens,
                   T* __restrict__ out, int64_t num_reqs, int64_t num_heads, int64_t num_kv_heads,
                   int64_t head_size, int64_t block_size, int64_t max_blocks, float scale) {
  const int64_t group = num_heads / num_kv_heads;
  const int64_t token_stride = num_kv_heads * head_size;  // between tokens of one block
  const int64_t block_stride = block_size * token_stride;
  // A task is one request and a range of its kv heads. With enough requests to go round, a task
  // takes all of them, so it streams each token's K (then V) row for all heads contiguously
  // (measured ~2x faster than one task per kv head once the cache is out of the CPU caches);
  // with few requests, heads are split so every thread has work.
  const int64_t head_chunks = num_reqs >= at::get_num_threads() ? 1 : num_kv_heads;
#if defined(__AVX512F__)
  const FastTask fast = std::is_same_v<T, float> ? fast_task_for(head_size, group) : nullptr;
#endif
  const int64_t heads_per_chunk = num_kv_heads / head_chunks;
  at::parallel_for(0, num_reqs * head_chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    std::vector<float> qf(num_heads * head_size);
    std::vector<float> acc(num_heads * head_size);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / head_chunks;
      const int64_t kv0 = (task % head_chunks) * heads_per_chunk, kv1 = kv0 + heads_per_chunk;
      const int64_t h0 = kv0 * group, h1 = kv1 * group;
      const int64_t len = seq_lens[b];
      if (len <= 0) continue;
      scores.resize(num_heads * len);
#if defined(__AVX512F__)
      if constexpr (std::is_same_v<T, float>) {
        if (fast != nullptr) {
          fast(q + b * num_heads * head_size, kc, vc, block_table + b * max_blocks, len, kv0, kv1, block_size,
               block_stride, token_stride, scale, scores.data(), out + b * num_heads * head_size);
          continue;
        }
      }
#endif
      for (int64_t h = h0; h < h1; ++h) {
        const T* qh = q + (b * num_heads + h) * head_size;
        for (int64_t d = 0; d < head_size; ++d) qf[h * head_size + d] = to_float(qh[d]) * scale;
      }
      const int32_t* table = block_table + b * max_blocks;
      // pass 1: scores[h][t] = q_h . k_t
      for (int64_t t = 0; t < len; ++t) {
        const T* row = kc + table[t / block_size] * block_stride + (t % block_size) * token_stride;
        for (int64_t kvh = kv0; kvh < kv1; ++kvh) {
          const T* k = row + kvh * head_size;
          for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
            const float* qh = qf.data() + h * head_size;
            float s = 0.f;
#pragma omp simd reduction(+ : s)
            for (int64_t d = 0; d < head_size; ++d) s += qh[d] * to_float(k[d]);
            scores[h * len + t] = s;
          }
        }
      }
      // softmax per query head, in float32
      for (int64_t h = h0; h < h1; ++h) {
        float* sh = scores.data() + h * len;
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t t = 0; t < len; ++t) m = std::max(m, sh[t]);
        float sum = 0.f;
        for (int64_t t = 0; t < len; ++t) { sh[t] = std::exp(sh[t] - m); sum += sh[t]; }
        const float inv = 1.f / sum;
        for (int64_t t = 0; t < len; ++t) sh[t] *= inv;
      }
      // pass 2: out_h = sum_t p[h][t] * v_t
      std::fill(acc.begin() + h0 * head_size, acc.begin() + h1 * head_size, 0.f);
      for (int64_t t = 0; t < len; ++t) {
        const T* row = vc + table[t / block_size] * block_stride + (t % block_size) * token_stride;
        for (int64_t kvh = kv0; kvh < kv1; ++kvh) {
          const T* v = row + kvh * head_size;
          for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
            const float p = scores[h * len + t];
            float* ah = acc.data() + h * head_size;
#pragma omp simd
            for (int64_t d = 0; d < head_size; ++d) ah[d] += p * to_float(v[d]);
          }
        }
      }
      for (int64_t h = h0; h < h1; ++h) {
        T* oh = out + (b * num_heads + h) * head_size;
        for (int64_t d = 0; d < head_size; ++d) oh[d] = static_cast<T>(acc[h * head_size + d]);
      }
    }
  });
}

}  // namespace

void paged_decode_attention(torch::Tensor out, torch::Tensor query, torch::Tensor key_cache,
                            torch::Tensor value_cache, torch::Tensor block_table, torch::Tensor seq_lens,
                            double scale) {
  TORCH_CHECK(query.dim() == 3 && key_cache.dim() == 4 && value_cache.dim() == 4, "bad ranks");
  TORCH_CHECK(query.is_contiguous() && out.is_contiguous(), "query/out must be contiguous");
  TORCH_CHECK(key_cache.is_contiguous() && value_cache.is_contiguous(), "caches must be contiguous");
  TORCH_CHECK(block_table.scalar_type() == at::kInt && seq_lens.scalar_type() == at::kInt, "int32 tables");
  auto bt = block_table.contiguous();
  auto sl = seq_lens.contiguous();
  const int64_t num_reqs = query.size(0), num_heads = query.size(1), head_size = query.size(2);
  const int64_t block_size = key_cache.size(1), num_kv_heads = key_cache.size(2);
  TORCH_CHECK(num_heads % num_kv_heads == 0, "num_heads must be a multiple of num_kv_heads");
  TORCH_CHECK(key_cache.size(3) == head_size, "head size mismatch");
  TORCH_CHECK(bt.size(0) >= num_reqs && sl.size(0) >= num_reqs, "tables shorter than the batch");
  if (query.scalar_type() == at::kFloat) {
    decode_kernel<float>(query.data_ptr<float>(), key_cache.data_ptr<float>(), value_cache.data_ptr<float>(),
                         bt.data_ptr<int32_t>(), sl.data_ptr<int32_t>(), out.data_ptr<float>(), num_reqs,
                         num_heads, num_kv_heads, head_size, block_size, bt.size(1), static_cast<float>(scale));
  } else if (query.scalar_type() == at::kBFloat16) {
    using bf = at::BFloat16;
    decode_kernel<bf>(query.data_ptr<bf>(), key_cache.data_ptr<bf>(), value_cache.data_ptr<bf>(),
                      bt.data_ptr<int32_t>(), sl.data_ptr<int32_t>(), out.data_ptr<bf>(), num_reqs, num_heads,
                      num_kv_heads, head_size, block_size, bt.size(1), static_cast<float>(scale));
  } else {
    TORCH_CHECK(false, "paged_decode_attention supports float32 and bfloat16");
  }
}

}  // namespace pagedllm
