// Small helpers shared by the CUDA kernels in csrc/cuda/*.cu: grid-stride loops, launch geometry, int limits.
// Headers are kept lean (no <ATen/ATen.h>) because every .cu file is compiled once per CI run.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <limits>

namespace detection {
namespace cuda {

// Threads per block of the element-wise RoI kernels, and a cap on blocks (the loops are grid-stride, so a capped
// grid still covers every element; 4096 x 512 threads is well above what any current GPU keeps resident).
constexpr int kThreadsPerBlock = 512;
constexpr int64_t kMaxBlocks = 4096;

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Blocks for an element-wise kernel over `n` elements with kThreadsPerBlock threads each.
inline unsigned int grid_for(int64_t n) {
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min(ceil_div(n, kThreadsPerBlock), kMaxBlocks)));
}

// for (i = global thread id; i < n; i += total threads), with 64-bit indices so that K*C*ph*pw > 2^31 is safe.
#define DETECTION_CUDA_KERNEL_LOOP(i, n)                                                              \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n);               \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

// The RoI kernels index B, C, H, W and the pooled sizes with int: a CUDA-only limit, refused clearly.
inline void check_int_dims(const char* op, c10::IntArrayRef bchw, int64_t pooled_height, int64_t pooled_width) {
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  bool ok = pooled_height <= kMax && pooled_width <= kMax;
  for (const int64_t d : bchw) {
    ok = ok && d <= kMax;
  }
  TORCH_CHECK(ok, op, ": the CUDA kernel needs B, C, H, W and the output size below 2^31, got ", bchw, " and (",
              pooled_height, ", ", pooled_width, ")");
}

}  // namespace cuda
}  // namespace detection
