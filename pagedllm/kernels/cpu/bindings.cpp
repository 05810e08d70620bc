// The CPU kernels' Python module: one build of every source in this folder (kernels/cpu/__init__.py).
//
//   decode_attention.cpp   paged decode attention
//   varlen_attention.cpp   attention of steps with prompt tokens (float32, AVX-512)
//   kv_cache_write.cpp     the step's K/V into the paged cache
//   linear_f32.cpp         the float32 linear layer over panel-packed weights (AVX-512)
//   rms_norm.cpp           RMSNorm, optionally with the residual add
//   rotary.cpp             neox rotary embedding in place
//   activation.cpp         SiLU-and-mul (float32, AVX-512)
//   sampling.cpp           the sampler's inverse-CDF stage (float32, AVX-512)
//   quant_repack.cpp       GGUF quantized weights: repack, dequantize, embedding rows
//   quant_gemm*.cpp        the quantized linear layer (AVX-512 VNNI, AVX2, scalar)
#include <torch/extension.h>

#include <string>
#include <vector>

namespace pagedllm {
void paged_decode_attention(torch::Tensor out, torch::Tensor query, torch::Tensor key_cache,
                            torch::Tensor value_cache, torch::Tensor block_table, torch::Tensor seq_lens,
                            double scale);
bool varlen_attention_supports(int64_t head_size);
void paged_varlen_attention(torch::Tensor out, torch::Tensor query, torch::Tensor key_cache,
                            torch::Tensor value_cache, torch::Tensor block_table, torch::Tensor seq_lens,
                            torch::Tensor query_start_loc, double scale);
void write_kv_cache(torch::Tensor key, torch::Tensor value, torch::Tensor key_cache, torch::Tensor value_cache,
                    torch::Tensor slot_mapping);
torch::Tensor linear_f32(torch::Tensor x, torch::Tensor packed, c10::optional<torch::Tensor> bias,
                         int64_t out_features, c10::optional<torch::Tensor> residual);
std::vector<torch::Tensor> rms_norm(torch::Tensor x, c10::optional<torch::Tensor> residual, torch::Tensor weight,
                                    double eps);
void rotary_embedding_(torch::Tensor x, torch::Tensor positions, torch::Tensor cos_sin_cache,
                       int64_t head_size);
torch::Tensor silu_and_mul_f32(torch::Tensor x);
torch::Tensor sample_from_logits(torch::Tensor logits, torch::Tensor u, c10::optional<torch::Tensor> inv_temperature);
torch::Tensor quant_repack(torch::Tensor raw, int64_t ggml_type, int64_t rows, int64_t cols);
torch::Tensor quant_dequantize(torch::Tensor packed, int64_t ggml_type, int64_t rows, int64_t cols);
torch::Tensor quant_embedding(torch::Tensor ids, torch::Tensor packed, int64_t ggml_type, int64_t rows, int64_t cols);
torch::Tensor quant_linear(torch::Tensor x, torch::Tensor packed, int64_t ggml_type, int64_t out_features,
                           c10::optional<torch::Tensor> bias, c10::optional<torch::Tensor> residual);
std::vector<std::string> quant_isas();
std::string quant_isa();
std::string quant_set_isa(const std::string& name);

bool has_avx512() {
#if defined(__AVX512F__)
  return true;
#else
  return false;
#endif
}
}  // namespace pagedllm

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using namespace pagedllm;
  m.def("paged_decode_attention", &paged_decode_attention, "Paged decode attention (CPU)");
  m.def("varlen_attention_supports", &varlen_attention_supports,
        "Whether this build's varlen attention takes this head size");
  m.def("paged_varlen_attention", &paged_varlen_attention,
        "Paged attention of variable-length new tokens, causal within them (CPU, float32)");
  m.def("write_kv_cache", &write_kv_cache, "K/V rows into the paged cache at their slots (CPU)");
  m.def("linear_f32", &linear_f32, "x @ W^T + bias over a panel-packed float32 weight, or added into a residual (CPU)");
  m.def("rms_norm", &rms_norm, "RMSNorm, optionally fused with the residual add (CPU)");
  m.def("rotary_embedding_", &rotary_embedding_, "Neox rotary embedding in place (CPU)");
  m.def("silu_and_mul_f32", &silu_and_mul_f32, "silu(gate) * up of a merged gate_up row (CPU)");
  m.def("sample_from_logits", &sample_from_logits, "Inverse-CDF sampling, one token per row (CPU)",
        py::arg("logits"), py::arg("u"), py::arg("inv_temperature") = py::none());
  // Quantized GGUF weights (kernels/cpu/quant.py wraps these with the type table and checks).
  m.def("quant_repack", &quant_repack,
        "uint8 [rows, row_bytes] GGUF blocks of a GGML type -> the kernels' packed uint8 layout (same bytes)",
        py::arg("raw"), py::arg("ggml_type"), py::arg("rows"), py::arg("cols"));
  m.def("quant_dequantize", &quant_dequantize, "packed -> float32 [rows, cols], bit-equal to gguf-py's dequantize",
        py::arg("packed"), py::arg("ggml_type"), py::arg("rows"), py::arg("cols"));
  m.def("quant_embedding", &quant_embedding, "int64 ids [T] -> their packed rows dequantized, float32 [T, cols]",
        py::arg("ids"), py::arg("packed"), py::arg("ggml_type"), py::arg("rows"), py::arg("cols"));
  m.def("quant_linear", &quant_linear,
        "x [M, K] @ dequant(packed)^T + bias -> float32 [M, N], or added into residual [M, N] in place",
        py::arg("x"), py::arg("packed"), py::arg("ggml_type"), py::arg("out_features"),
        py::arg("bias") = py::none(), py::arg("residual") = py::none());
  m.def("quant_isas", &quant_isas, "The quantized kernels' ISA paths this build and CPU have, best first");
  m.def("quant_isa", &quant_isa, "The ISA path quant_linear runs now");
  m.def("quant_set_isa", &quant_set_isa, "Choose the ISA path (auto, avx512vnni, avx2, scalar); returns the previous",
        py::arg("name"));
  m.def("has_avx512", &has_avx512, "Whether this build has the AVX-512 kernels (GEMM, varlen attention, sampling)");
}
