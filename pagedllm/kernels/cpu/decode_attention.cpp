// Paged decode attention on the CPU: one query token per request against its K/V, read straight
// from the cache blocks through the block table (no gathered copy), GQA-aware.
//
//   query        [B, H, D]            float32 or bfloat16
//   key_cache    [NB, bs, KV, D]      same dtype, or bfloat16 under a float32 query (one layer, K
//                                     half of the cache; kv_cache_dtype bfloat16)
//   value_cache  [NB, bs, KV, D]
//   block_table  [B, max_blocks]      int32
//   seq_lens     [B]                  int32: request b attends to its first seq_lens[b] tokens
//   out          [B, H, D]            written here
//
// Work is split over (request, kv head); each task reads that head's K and V once, for the G query
// heads that share it. Scores are kept for the whole context (two-pass softmax in float32).
// A float32 query with AVX-512 and head size 64 or 128 takes decode_task_f32 (over a float32 or a
// bfloat16 cache), which sums exactly as the varlen kernel does (see there), with vectorised
// exponentials and software prefetch of the rows ahead; other shapes and a bfloat16 query take the
// portable loops below.
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

// out rows of one kv head for NA accumulators a = (head a / NC, 16-dim chunk a % NC) from a0 on:
// one FMA chain per output element over the tokens in order, from zero, as the varlen kernel's
// P V runs; V rows at vc + offs[t].
template <int NA, int NC, typename C>
inline void pv_chunks(int64_t a0, const float* __restrict__ p, int64_t len, const C* __restrict__ vc,
                      const int32_t* __restrict__ offs, float* __restrict__ out) {
  __m512 o[NA];
  for (int a = 0; a < NA; ++a) o[a] = _mm512_setzero_ps();
  for (int64_t t = 0; t < len; ++t) {
    const C* v = vc + offs[t];
    if (t + kAhead < len)
      for (int c = 0; c < NC; ++c) _mm_prefetch(reinterpret_cast<const char*>(vc + offs[t + kAhead] + 16 * c), _MM_HINT_T0);
    for (int a = 0; a < NA; ++a) {
      const int64_t g = (a0 + a) / NC, c = (a0 + a) % NC;
      o[a] = _mm512_fmadd_ps(_mm512_set1_ps(p[g * len + t]), load16(v + 16 * c), o[a]);
    }
  }
  for (int a = 0; a < NA; ++a) {
    const int64_t g = (a0 + a) / NC, c = (a0 + a) % NC;
    _mm512_storeu_ps(out + g * 16 * NC + 16 * c, o[a]);
  }
}

template <int NC, typename C>
inline void pv_pass(int64_t a0, int64_t na, const float* p, int64_t len, const C* vc, const int32_t* offs,
                    float* out) {
  switch (na) {
    case 1: pv_chunks<1, NC, C>(a0, p, len, vc, offs, out); break;
    case 2: pv_chunks<2, NC, C>(a0, p, len, vc, offs, out); break;
    case 3: pv_chunks<3, NC, C>(a0, p, len, vc, offs, out); break;
    case 4: pv_chunks<4, NC, C>(a0, p, len, vc, offs, out); break;
    case 5: pv_chunks<5, NC, C>(a0, p, len, vc, offs, out); break;
    case 6: pv_chunks<6, NC, C>(a0, p, len, vc, offs, out); break;
    case 7: pv_chunks<7, NC, C>(a0, p, len, vc, offs, out); break;
    case 8: pv_chunks<8, NC, C>(a0, p, len, vc, offs, out); break;
    case 9: pv_chunks<9, NC, C>(a0, p, len, vc, offs, out); break;
    case 10: pv_chunks<10, NC, C>(a0, p, len, vc, offs, out); break;
    case 11: pv_chunks<11, NC, C>(a0, p, len, vc, offs, out); break;
    case 12: pv_chunks<12, NC, C>(a0, p, len, vc, offs, out); break;
    case 13: pv_chunks<13, NC, C>(a0, p, len, vc, offs, out); break;
    case 14: pv_chunks<14, NC, C>(a0, p, len, vc, offs, out); break;
    case 15: pv_chunks<15, NC, C>(a0, p, len, vc, offs, out); break;
    default: pv_chunks<16, NC, C>(a0, p, len, vc, offs, out); break;
  }
}

constexpr int64_t kPvAcc = 16;  // accumulators per P V pass: with a V chunk and a p, within 32 zmm

// float32 path for one request and kv heads [kv0, kv1), head size D = 16 * NC, any group G.
// It sums exactly as the varlen kernel (varlen_attention.cpp) does, so a token's attention has the
// same bits whether its step is decode-only (this kernel) or mixed with prompt chunks (that one):
// scores through dot_keys16 (simd_f32.h) 16 tokens at a time, the shared softmax, and P V as one
// FMA chain per output element over the tokens in order.
template <int NC, typename C>
void decode_task_f32(const float* __restrict__ q, const C* __restrict__ kc, const C* __restrict__ vc,
                     const int32_t* __restrict__ table, int64_t len, int64_t kv0, int64_t kv1, int64_t group,
                     int64_t block_size, int64_t block_stride, int64_t token_stride, float scale,
                     float* __restrict__ scores, float* __restrict__ out) {
  constexpr int64_t D = 16 * NC;
  const int64_t G = group;
  std::vector<float> qs(G * D);
  std::vector<int32_t> offs((len + 15) / 16 * 16);
  const __m512 sv = _mm512_set1_ps(scale);
  for (int64_t kvh = kv0; kvh < kv1; ++kvh) {
    for (int64_t g = 0; g < G; ++g)
      for (int c = 0; c < NC; ++c)
        _mm512_storeu_ps(qs.data() + g * D + 16 * c, _mm512_mul_ps(_mm512_loadu_ps(q + (kvh * G + g) * D + 16 * c), sv));
    for (int64_t t = 0; t < len; ++t)  // element offset of token t's row of this kv head (K and V alike)
      offs[t] = static_cast<int32_t>(table[t / block_size] * block_stride + (t % block_size) * token_stride + kvh * D);
    for (int64_t t = len; t < static_cast<int64_t>(offs.size()); ++t) offs[t] = offs[len - 1];
    for (int64_t t0 = 0; t0 < len; t0 += 16) {
      if (t0 + 16 < len)  // the next tile's rows: strided, and each block elsewhere
        for (int64_t i = 0; i < 16; ++i)
          for (int c = 0; c < NC; ++c)
            _mm_prefetch(reinterpret_cast<const char*>(kc + offs[t0 + 16 + i] + 16 * c), _MM_HINT_T0);
      const int64_t n = std::min<int64_t>(16, len - t0);
      const __mmask16 m = n == 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1);
      for (int64_t g = 0; g < G; ++g)
        _mm512_mask_storeu_ps(scores + g * len + t0, m, dot_keys16<NC>(qs.data() + g * D, kc, offs.data() + t0));
    }
    for (int64_t g = 0; g < G; ++g) softmax_in_place(scores + g * len, len);
    for (int64_t a0 = 0; a0 < G * NC; a0 += kPvAcc)
      pv_pass<NC, C>(a0, std::min<int64_t>(kPvAcc, G * NC - a0), scores, len, vc, offs.data(), out + kvh * G * D);
  }
}

template <typename C>
using FastTask = void (*)(const float*, const C*, const C*, const int32_t*, int64_t, int64_t, int64_t,
                          int64_t, int64_t, int64_t, int64_t, float, float*, float*);

// The float32 path for a head size (64 or 128, what the varlen kernel takes), or nullptr. The
// row offsets are 32-bit: a layer's cache must hold fewer than 2^31 elements.
template <typename C>
inline FastTask<C> fast_task_for(int64_t head_size, int64_t cache_numel) {
  if (cache_numel >= (int64_t{1} << 31)) return nullptr;
  if (head_size == 64) return decode_task_f32<4, C>;
  if (head_size == 128) return decode_task_f32<8, C>;
  return nullptr;
}
#endif

// The fast path's view of a cache element type (bfloat16 as its raw bits)
template <typename C> struct FastElem { using type = C; };
template <> struct FastElem<at::BFloat16> { using type = uint16_t; };

// T: the query's and output's element type; C: the cache's (T, or bfloat16 under a float32 query)
template <typename T, typename C = T>
void decode_kernel(const T* __restrict__ q, const C* __restrict__ kc, const C* __restrict__ vc,
                   const int32_t* __restrict__ block_table, const int32_t* __restrict__ seq_lens,
                   T* __restrict__ out, int64_t num_reqs, int64_t num_heads, int64_t num_kv_heads,
                   int64_t head_size, int64_t block_size, int64_t max_blocks, float scale, int64_t cache_numel) {
  const int64_t group = num_heads / num_kv_heads;
  const int64_t token_stride = num_kv_heads * head_size;  // between tokens of one block
  const int64_t block_stride = block_size * token_stride;
  // A task is one request and a range of its kv heads. With enough requests to go round, a task
  // takes all of them, so it streams each token's K (then V) row for all heads contiguously
  // (measured ~2x faster than one task per kv head once the cache is out of the CPU caches);
  // with few requests, heads are split so every thread has work.
  const int64_t head_chunks = num_reqs >= at::get_num_threads() ? 1 : num_kv_heads;
#if defined(__AVX512F__)
  using CF = typename FastElem<C>::type;
  const FastTask<CF> fast = std::is_same_v<T, float> ? fast_task_for<CF>(head_size, cache_numel) : nullptr;
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
          fast(q + b * num_heads * head_size, reinterpret_cast<const CF*>(kc), reinterpret_cast<const CF*>(vc),
               block_table + b * max_blocks, len, kv0, kv1, group,
               block_size, block_stride, token_stride, scale, scores.data(), out + b * num_heads * head_size);
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
        const C* row = kc + table[t / block_size] * block_stride + (t % block_size) * token_stride;
        for (int64_t kvh = kv0; kvh < kv1; ++kvh) {
          const C* k = row + kvh * head_size;
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
        const C* row = vc + table[t / block_size] * block_stride + (t % block_size) * token_stride;
        for (int64_t kvh = kv0; kvh < kv1; ++kvh) {
          const C* v = row + kvh * head_size;
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
  TORCH_CHECK(key_cache.scalar_type() == value_cache.scalar_type(), "K and V caches of one dtype");
  using bf = at::BFloat16;
  if (query.scalar_type() == at::kFloat && key_cache.scalar_type() == at::kBFloat16) {
    decode_kernel<float, bf>(query.data_ptr<float>(), key_cache.data_ptr<bf>(), value_cache.data_ptr<bf>(),
                             bt.data_ptr<int32_t>(), sl.data_ptr<int32_t>(), out.data_ptr<float>(), num_reqs,
                             num_heads, num_kv_heads, head_size, block_size, bt.size(1), static_cast<float>(scale),
                             key_cache.numel());
  } else if (query.scalar_type() != key_cache.scalar_type()) {
    TORCH_CHECK(false, "paged_decode_attention: the cache has the query's dtype, or bfloat16 under float32");
  } else if (query.scalar_type() == at::kFloat) {
    decode_kernel<float>(query.data_ptr<float>(), key_cache.data_ptr<float>(), value_cache.data_ptr<float>(),
                         bt.data_ptr<int32_t>(), sl.data_ptr<int32_t>(), out.data_ptr<float>(), num_reqs,
                         num_heads, num_kv_heads, head_size, block_size, bt.size(1), static_cast<float>(scale),
                         key_cache.numel());
  } else if (query.scalar_type() == at::kBFloat16) {
    decode_kernel<bf>(query.data_ptr<bf>(), key_cache.data_ptr<bf>(), value_cache.data_ptr<bf>(),
                      bt.data_ptr<int32_t>(), sl.data_ptr<int32_t>(), out.data_ptr<bf>(), num_reqs, num_heads,
                      num_kv_heads, head_size, block_size, bt.size(1), static_cast<float>(scale),
                      key_cache.numel());
  } else {
    TORCH_CHECK(false, "paged_decode_attention supports float32 and bfloat16");
  }
}

}  // namespace pagedllm
