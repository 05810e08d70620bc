// placeholder
#include "quant_kernels.h"
namespace pagedllm::quant {
PanelsFn avx2_panels(int64_t) { return nullptr; }
QuantizeFn avx2_quantize() { return nullptr; }
}
