// Paged attention for a step with prompt tokens (float32, AVX-512): each request's new tokens (a
// prompt chunk, or one decode token) against its paged context, causal within the new tokens.
//
//   query            [T, H, D]        float32, contiguous; D = 64 or 128
//   key_cache        [NB, bs, KV, D]  float32 or bfloat16 (one layer; this step's K/V already written)
//   value_cache      [NB, bs, KV, D]
//   block_table      [R, max_blocks]  int32
//   seq_lens         [R]              int32: request r's context including this step's tokens
//   query_start_loc  [R + 1]          int32: its new tokens are query rows [qsl[r], qsl[r + 1])
//   out              [T, H, D]        written here
//
// New token i of request r (0-based among its q_len) sees keys [0, seq_len - q_len + i].
//
// Tasks are (request, kv head, tile of up to 16 new tokens). A task packs its tile's query rows
// (token-major, the G heads sharing the kv head next to each other, pre-scaled), then
//   1. scores = Q K^T, 16 keys at a time for each row, through dot_keys16 (simd_f32.h), which the
//      decode kernel scores with too: a decode token's attention has the same bits in either;
//   2. a two-pass softmax per row over the keys it sees (vectorised exponentials), normalised;
//   3. out = P V, V rows read straight from the cache blocks, rows x D accumulated in registers,
//      each element one FMA chain over the keys in order (as the decode kernel sums).
// It replaces one torch SDPA call per prompt and layer, which ran at about 24 GFLOP/s on the
// default model's 128-token prompts.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "simd_f32.h"

namespace pagedllm {

#if defined(__AVX512F__)
namespace {

constexpr int64_t kTile = 16;  // new tokens per task
constexpr int64_t kKeys = 16;  // keys per score call (dot_keys16)

// o[r][0, D) = sum_{j < n} p[r][j] * V[j] for MR rows, D = 16 * NC, V rows at cache offsets offs[j].
template <int MR, int NC, typename C>
void pv_rows(const float* __restrict__ p, int64_t ldp, const C* __restrict__ vc,
             const int64_t* __restrict__ offs, int64_t n, float* __restrict__ o, int64_t ldo) {
  __m512 acc[MR][NC];
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < NC; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; ++j) {
    const C* v = vc + offs[j];
    __m512 vv[NC];
    for (int c = 0; c < NC; ++c) vv[c] = load16(v + 16 * c);
    for (int r = 0; r < MR; ++r) {
      const __m512 pv = _mm512_set1_ps(p[r * ldp + j]);
      for (int c = 0; c < NC; ++c) acc[r][c] = _mm512_fmadd_ps(pv, vv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < NC; ++c) _mm512_storeu_ps(o + r * ldo + 16 * c, acc[r][c]);
}

struct Task {
  int64_t req, first;  // the request and its first new token in this tile
};

struct Shape {
  int64_t num_heads, num_kv_heads, group, head_size, block_size, block_stride, token_stride, max_blocks;
};

struct Scratch {
  std::vector<float> q, scores;
  std::vector<int64_t> offs;
};

template <int NC, typename C>
void run_task(const Task& task, int64_t kvh, const Shape& sh, const float* q, const C* kc, const C* vc,
              const int32_t* table, const int32_t* seq_lens, const int32_t* qsl, float scale, float* out,
              Scratch& buf) {
  constexpr int64_t D = 16 * NC;
  constexpr int kPvRows = 24 / NC;  // rows x NC accumulators within the 32 zmm
  const int64_t q0 = qsl[task.req], q_len = qsl[task.req + 1] - q0;
  const int64_t cached = seq_lens[task.req] - q_len;
  const int64_t i0 = task.first, nt = std::min(kTile, q_len - i0);
  const int64_t G = sh.group, rows = nt * G;
  const int64_t ctx = cached + i0 + nt;  // keys the tile's last token sees
  const int64_t ctx_pad = (ctx + kKeys - 1) / kKeys * kKeys;
  const int64_t row_stride = sh.num_heads * D;
  buf.q.resize(rows * D);
  buf.scores.resize(rows * ctx_pad);
  buf.offs.resize(ctx_pad);
  const int32_t* tbl = table + task.req * sh.max_blocks;
  for (int64_t j = 0; j < ctx; ++j)
    buf.offs[j] = tbl[j / sh.block_size] * sh.block_stride + (j % sh.block_size) * sh.token_stride + kvh * D;
  std::fill(buf.offs.begin() + ctx, buf.offs.end(), buf.offs[ctx - 1]);  // a real row: scored, then masked
  const __m512 sv = _mm512_set1_ps(scale);
  for (int64_t t = 0; t < nt; ++t)
    for (int64_t g = 0; g < G; ++g) {
      const float* src = q + (q0 + i0 + t) * row_stride + (kvh * G + g) * D;
      float* dst = buf.q.data() + (t * G + g) * D;
      for (int c = 0; c < NC; ++c) _mm512_storeu_ps(dst + 16 * c, _mm512_mul_ps(_mm512_loadu_ps(src + 16 * c), sv));
    }
  for (int64_t j0 = 0; j0 < ctx; j0 += kKeys)
    for (int64_t r = 0; r < rows; ++r)
      _mm512_storeu_ps(buf.scores.data() + r * ctx_pad + j0, dot_keys16<NC>(buf.q.data() + r * D, kc, buf.offs.data() + j0));
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t sees = cached + i0 + r / G + 1;
    float* row = buf.scores.data() + r * ctx_pad;
    softmax_in_place(row, sees);
    std::fill(row + sees, row + ctx_pad, 0.f);  // unseen keys: P V runs to the block's longest row
  }
  float o[kPvRows * D];
  for (int64_t r = 0; r < rows; r += kPvRows) {
    const int64_t mr = std::min<int64_t>(kPvRows, rows - r);
    const int64_t n = cached + i0 + (r + mr - 1) / G + 1;  // the block's last row sees the most keys
    const float* p = buf.scores.data() + r * ctx_pad;
    switch (mr) {  // kPvRows is 6 (head 64) or 3 (head 128)
      case 1: pv_rows<1, NC, C>(p, ctx_pad, vc, buf.offs.data(), n, o, D); break;
      case 2: pv_rows<2, NC, C>(p, ctx_pad, vc, buf.offs.data(), n, o, D); break;
      case 3: pv_rows<3, NC, C>(p, ctx_pad, vc, buf.offs.data(), n, o, D); break;
      case 4: pv_rows<4, NC, C>(p, ctx_pad, vc, buf.offs.data(), n, o, D); break;
      case 5: pv_rows<5, NC, C>(p, ctx_pad, vc, buf.offs.data(), n, o, D); break;
      default: pv_rows<6, NC, C>(p, ctx_pad, vc, buf.offs.data(), n, o, D); break;
    }
    for (int64_t rr = 0; rr < mr; ++rr) {
      const int64_t t = (r + rr) / G, g = (r + rr) % G;
      std::copy(o + rr * D, o + (rr + 1) * D, out + (q0 + i0 + t) * row_stride + (kvh * G + g) * D);
    }
  }
}

template <typename C>
void run_all(const std::vector<Task>& tasks, const Shape& sh, const torch::Tensor& query, const C* kc, const C* vc,
             const torch::Tensor& bt, const torch::Tensor& sl, const int32_t* qs, float scale, torch::Tensor& out) {
  const int64_t num_tasks = static_cast<int64_t>(tasks.size()) * sh.num_kv_heads;
  const float* q = query.data_ptr<float>();
  const int32_t* tp = bt.data_ptr<int32_t>();
  const int32_t* lp = sl.data_ptr<int32_t>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, num_tasks, 1, [&](int64_t t0, int64_t t1) {
    Scratch buf;
    for (int64_t t = t0; t < t1; ++t) {
      const Task& task = tasks[t / sh.num_kv_heads];
      const int64_t kvh = t % sh.num_kv_heads;
      if (sh.head_size == 64) {
        run_task<4, C>(task, kvh, sh, q, kc, vc, tp, lp, qs, scale, op, buf);
      } else {
        run_task<8, C>(task, kvh, sh, q, kc, vc, tp, lp, qs, scale, op, buf);
      }
    }
  });
}

}  // namespace
#endif

bool varlen_attention_supports(int64_t head_size) {
#if defined(__AVX512F__)
  return head_size == 64 || head_size == 128;
#else
  (void)head_size;
  return false;
#endif
}

void paged_varlen_attention(torch::Tensor out, torch::Tensor query, torch::Tensor key_cache,
                            torch::Tensor value_cache, torch::Tensor block_table, torch::Tensor seq_lens,
                            torch::Tensor query_start_loc, double scale) {
#if defined(__AVX512F__)
  TORCH_CHECK(query.scalar_type() == at::kFloat && out.scalar_type() == at::kFloat, "a float32 query");
  TORCH_CHECK(key_cache.scalar_type() == value_cache.scalar_type() &&
              (key_cache.scalar_type() == at::kFloat || key_cache.scalar_type() == at::kBFloat16),
              "a float32 or bfloat16 cache");
  TORCH_CHECK(query.dim() == 3 && key_cache.dim() == 4 && value_cache.dim() == 4, "bad ranks");
  TORCH_CHECK(query.is_contiguous() && out.is_contiguous() && out.sizes() == query.sizes(), "query/out");
  TORCH_CHECK(key_cache.is_contiguous() && value_cache.is_contiguous(), "caches must be contiguous");
  TORCH_CHECK(block_table.scalar_type() == at::kInt && seq_lens.scalar_type() == at::kInt &&
              query_start_loc.scalar_type() == at::kInt, "int32 tables");
  auto bt = block_table.contiguous();
  auto sl = seq_lens.contiguous();
  auto qsl = query_start_loc.contiguous();
  const int64_t num_reqs = qsl.numel() - 1;
  const int64_t num_heads = query.size(1), head_size = query.size(2), num_kv_heads = key_cache.size(2);
  TORCH_CHECK(varlen_attention_supports(head_size), "head size must be 64 or 128");
  TORCH_CHECK(num_heads % num_kv_heads == 0 && key_cache.size(3) == head_size, "head shapes");
  TORCH_CHECK(bt.size(0) >= num_reqs && sl.size(0) >= num_reqs, "tables shorter than the batch");
  const Shape sh{num_heads, num_kv_heads, num_heads / num_kv_heads, head_size, key_cache.size(1),
                 key_cache.stride(0), key_cache.stride(1), bt.size(1)};
  const int32_t* qs = qsl.data_ptr<int32_t>();
  std::vector<Task> tasks;
  for (int64_t r = 0; r < num_reqs; ++r)
    for (int64_t i = 0; i < qs[r + 1] - qs[r]; i += kTile) tasks.push_back({r, i});
  if (key_cache.scalar_type() == at::kBFloat16) {
    run_all(tasks, sh, query, static_cast<const Bf16Bits*>(key_cache.data_ptr()),
            static_cast<const Bf16Bits*>(value_cache.data_ptr()), bt, sl, qs, static_cast<float>(scale), out);
  } else {
    run_all(tasks, sh, query, key_cache.data_ptr<float>(), value_cache.data_ptr<float>(), bt, sl, qs,
            static_cast<float>(scale), out);
  }
#else
  TORCH_CHECK(false, "paged_varlen_attention needs AVX-512 (this build has none)");
#endif
}

}  // namespace pagedllm
