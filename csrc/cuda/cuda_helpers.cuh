// Small helpers shared by the CUDA kernels in csrc/cuda/*.cu: grid-stride loops, launch geometry, argument checks.
// Headers are kept lean (no <ATen/ATen.h>) because every .cu file is compiled once per CI run.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>

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

// `rois` must be a [K, 5] CUDA tensor (batch_index, x1, y1, x2, y2) on the same device and of the same dtype as `like`.
inline void check_rois(const at::Tensor& rois, const at::Tensor& like, const char* like_name) {
  TORCH_CHECK(rois.is_cuda(), "rois must be a CUDA tensor, got one on ", rois.device());
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5,
              "rois must be [K, 5] (batch_index, x1, y1, x2, y2), got shape ", rois.sizes());
  TORCH_CHECK(rois.device() == like.device(), "rois is on ", rois.device(), " but ", like_name, " is on ",
              like.device());
  TORCH_CHECK(rois.scalar_type() == like.scalar_type(), "rois dtype ", rois.scalar_type(), " must match ",
              like_name, " dtype ", like.scalar_type());
}

}  // namespace cuda
}  // namespace detection
