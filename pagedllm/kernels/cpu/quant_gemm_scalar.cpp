// The quantized linear layer in portable scalar code (quant_kernels.h): the fallback where the
// build has neither AVX2 nor AVX-512 VNNI, and the reference the SIMD paths are tested against bit
// for bit. It decodes each tile through quant_formats.h, so it also checks the packed layout.
#include "quant_formats.h"
#include "quant_kernels.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <vector>

namespace pagedllm::quant {

void quantize_rows_scalar(const float* x, int64_t ldx, int64_t m0, int64_t m1, int sub, int offset,
                          const QuantizedRows& out) {
  const int64_t K = out.K;
  for (int64_t m = m0; m < m1; ++m) {
    const float* xr = x + m * ldx;
    int8_t* q = const_cast<int8_t*>(out.q) + m * K;
    float* d = const_cast<float*>(out.d) + m * out.ldd();
    int32_t* t = const_cast<int32_t*>(out.t) + m * (K / sub);
    for (int64_t b = 0; b < K / 32; ++b) {
      float amax = 0.f;
      bool finite = true;
      for (int j = 0; j < 32; ++j) {
        amax = std::max(amax, std::fabs(xr[32 * b + j]));
        finite = finite && std::fabs(xr[32 * b + j]) <= FLT_MAX;
      }
      // A block with an inf or NaN gets scale NaN: the rows' outputs become NaN, as in float32.
      const float db = finite ? amax / 127.f : NAN;
      const float id = finite && db != 0.f ? 1.f / db : 0.f;
      d[b] = db;
      for (int j = 0; j < 32; ++j) q[32 * b + j] = finite ? static_cast<int8_t>(std::nearbyint(xr[32 * b + j] * id)) : 0;
    }
    for (int64_t s = 0; s < K / sub; ++s) {
      int32_t sum = 0;
      for (int j = 0; j < sub; ++j) sum += q[s * sub + j];
      t[s] = sub_block_term(sum, offset, d[s * sub / 32]);
    }
  }
}

namespace {

template <typename F>
void panels_scalar(const LinearJob& job, const QuantizedRows& x, int64_t p0, int64_t p1) {
  const int64_t nb = job.K / F::kQK, M = job.M;
  std::vector<float> acc(static_cast<size_t>(M) * kPanel);
  Unpacked blk;
  for (int64_t p = p0; p < p1; ++p) {
    std::fill(acc.begin(), acc.end(), 0.f);
    const uint8_t* panel = job.packed + p * nb * F::kTileBytes;
    const int ncols = static_cast<int>(std::min<int64_t>(kPanel, job.N - p * kPanel));
    for (int64_t b = 0; b < nb; ++b) {
      for (int c = 0; c < ncols; ++c) {
        load_tile<F>(panel + b * F::kTileBytes, c, blk);
        for (int s = 0; s < F::kQK / F::kSub; ++s) {
          float dsc, mn;
          sub_scale<F>(blk, s, dsc, mn);
          const int64_t k0 = b * F::kQK + s * F::kSub, sidx = k0 / F::kSub;
          for (int64_t r = 0; r < M; ++r) {
            const int8_t* xq = x.q + r * job.K + k0;
            int32_t isum = F::kAsym ? 0 : x.t[r * (job.K / F::kSub) + sidx];
            for (int j = 0; j < F::kSub; ++j) isum += static_cast<int32_t>(blk.u[s * F::kSub + j]) * xq[j];
            float& a = acc[r * kPanel + c];
            a = std::fma(static_cast<float>(isum), dsc * x.d[r * x.ldd() + k0 / 32], a);
            if constexpr (F::kAsym) {
              float xt;
              std::memcpy(&xt, &x.t[r * (job.K / F::kSub) + sidx], 4);
              a = std::fma(mn, xt, a);
            }
          }
        }
      }
    }
    for (int64_t r = 0; r < M; ++r) {
      for (int c = 0; c < ncols; ++c) {
        const int64_t n = p * kPanel + c;
        float v = acc[r * kPanel + c];
        if (job.bias != nullptr) v += job.bias[n];
        float& o = job.out[r * job.N + n];
        o = job.accumulate ? o + v : v;
      }
    }
  }
}

}  // namespace

PanelsFn scalar_panels(int64_t type) {
  PanelsFn fn = nullptr;
  with_format(type, [&](auto f) { fn = &panels_scalar<decltype(f)>; });
  return fn;
}

}  // namespace pagedllm::quant
