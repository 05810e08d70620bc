// GGUF quantized rows to our packed layout (quant_formats.h) and back to float32: the load-time
// repack, the reference dequantization and the embedding's gathered rows.
//
//   raw     uint8 [rows, row_bytes]   GGUF's blocks, row_bytes = cols / QK * type_size
//   packed  uint8 [P, cols / QK * 16 * type_size], P = ceil(rows / 16): panel p = rows
//           16p .. 16p + 15 (zero past `rows`), its tiles along K
//
// Dequantized values are bit-equal to gguf-py's (quant_formats.h: dequantize_block).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include "quant_formats.h"

#include <algorithm>
#include <cstring>

namespace pagedllm {
namespace quant {
namespace {

struct Shape {
  int64_t qk, type_size, tile_bytes, nb, panels;
};

Shape checked_shape(int64_t type, int64_t rows, int64_t cols, const char* fn) {
  Shape s{};
  const bool ok = with_format(type, [&](auto f) {
    using F = decltype(f);
    s = Shape{F::kQK, F::kTypeSize, F::kTileBytes, 0, 0};
  });
  TORCH_CHECK(ok, fn, ": unsupported GGML type ", type);
  TORCH_CHECK(rows > 0 && cols > 0 && cols % s.qk == 0, fn, ": cols (", cols, ") must be a positive multiple of ",
              s.qk, " and rows (", rows, ") positive");
  s.nb = cols / s.qk;
  s.panels = (rows + kPanel - 1) / kPanel;
  return s;
}

void check_packed(const torch::Tensor& packed, const Shape& s, const char* fn) {
  TORCH_CHECK(packed.scalar_type() == at::kByte && packed.is_contiguous(), fn, ": packed must be contiguous uint8");
  TORCH_CHECK(packed.numel() == s.panels * s.nb * s.tile_bytes, fn, ": packed has ", packed.numel(),
              " bytes; this type and shape need ", s.panels * s.nb * s.tile_bytes);
}

// Row n of the packed weight, dequantized into out[0, cols).
template <typename F>
void dequantize_row(const uint8_t* packed, int64_t nb, int64_t n, float* out) {
  const uint8_t* panel = packed + (n / kPanel) * nb * F::kTileBytes;
  Unpacked blk;
  for (int64_t b = 0; b < nb; ++b) {
    load_tile<F>(panel + b * F::kTileBytes, static_cast<int>(n % kPanel), blk);
    dequantize_block<F>(blk, out + b * F::kQK);
  }
}

}  // namespace
}  // namespace quant

torch::Tensor quant_repack(torch::Tensor raw, int64_t ggml_type, int64_t rows, int64_t cols) {
  using namespace quant;
  const Shape s = checked_shape(ggml_type, rows, cols, "quant_repack");
  TORCH_CHECK(raw.scalar_type() == at::kByte && raw.is_contiguous() && raw.numel() == rows * s.nb * s.type_size,
              "quant_repack: raw must be contiguous uint8 with rows * cols / ", s.qk, " * ", s.type_size, " bytes");
  auto packed = torch::zeros({s.panels, s.nb * s.tile_bytes}, raw.options());
  const uint8_t* src = raw.data_ptr<uint8_t>();
  uint8_t* dst = packed.data_ptr<uint8_t>();
  with_format(ggml_type, [&](auto f) {
    using F = decltype(f);
    at::parallel_for(0, s.panels, 1, [&](int64_t p0, int64_t p1) {
      Unpacked blk;
      for (int64_t p = p0; p < p1; ++p) {
        for (int c = 0; c < kPanel && p * kPanel + c < rows; ++c) {
          const uint8_t* row = src + (p * kPanel + c) * s.nb * F::kTypeSize;
          for (int64_t b = 0; b < s.nb; ++b) {
            F::unpack(row + b * F::kTypeSize, blk);
            store_tile<F>(dst + (p * s.nb + b) * F::kTileBytes, c, blk);
          }
        }
      }
    });
  });
  return packed;
}

torch::Tensor quant_dequantize(torch::Tensor packed, int64_t ggml_type, int64_t rows, int64_t cols) {
  using namespace quant;
  const Shape s = checked_shape(ggml_type, rows, cols, "quant_dequantize");
  check_packed(packed, s, "quant_dequantize");
  auto out = torch::empty({rows, cols}, packed.options().dtype(at::kFloat));
  const uint8_t* src = packed.data_ptr<uint8_t>();
  float* dst = out.data_ptr<float>();
  with_format(ggml_type, [&](auto f) {
    using F = decltype(f);
    at::parallel_for(0, rows, 16, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) dequantize_row<F>(src, s.nb, n, dst + n * cols);
    });
  });
  return out;
}

torch::Tensor quant_embedding(torch::Tensor ids, torch::Tensor packed, int64_t ggml_type, int64_t rows, int64_t cols) {
  using namespace quant;
  const Shape s = checked_shape(ggml_type, rows, cols, "quant_embedding");
  check_packed(packed, s, "quant_embedding");
  TORCH_CHECK(ids.scalar_type() == at::kLong && ids.dim() == 1, "quant_embedding: ids must be int64 [T]");
  auto ids_c = ids.contiguous();
  const int64_t T = ids_c.numel();
  const int64_t* idp = ids_c.data_ptr<int64_t>();
  for (int64_t t = 0; t < T; ++t) {
    TORCH_CHECK(idp[t] >= 0 && idp[t] < rows, "quant_embedding: id ", idp[t], " out of range [0, ", rows, ")");
  }
  auto out = torch::empty({T, cols}, packed.options().dtype(at::kFloat));
  const uint8_t* src = packed.data_ptr<uint8_t>();
  float* dst = out.data_ptr<float>();
  with_format(ggml_type, [&](auto f) {
    using F = decltype(f);
    at::parallel_for(0, T, 4, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) dequantize_row<F>(src, s.nb, idp[t], dst + t * cols);
    });
  });
  return out;
}

}  // namespace pagedllm
