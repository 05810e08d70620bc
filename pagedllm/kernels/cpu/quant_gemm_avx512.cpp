// placeholder
#include "quant_kernels.h"
namespace pagedllm::quant {
PanelsFn avx512_panels(int64_t) { return nullptr; }
QuantizeFn avx512_quantize() { return nullptr; }
}
