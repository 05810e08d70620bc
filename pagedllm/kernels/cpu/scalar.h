// Scalar helpers shared by the CPU kernels' sources (kernels/cpu/__init__.py hashes the headers
// into the build flags, so editing one rebuilds the module).
#pragma once

namespace pagedllm {

// float32 arithmetic for every element type (float, at::BFloat16): kernels read and accumulate in
// float32 and round once when they store.
template <typename T>
inline float to_float(T x) { return static_cast<float>(x); }

}  // namespace pagedllm
