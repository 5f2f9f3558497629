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

// The same loop with an index of type index_t. The element-wise RoI kernels take uint32_t whenever n fits
// (fits_uint32_index), int64_t otherwise: a 64-bit division or modulo, which a GPU emulates in software, costs
// several times a 32-bit one, and decomposing the index (n, c, ph, pw) takes three of each per element.
#define DETECTION_CUDA_KERNEL_LOOP_T(index_t, i, n)                                                         \
  for (index_t i = static_cast<index_t>(blockIdx.x) * static_cast<index_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<index_t>(blockDim.x) * static_cast<index_t>(gridDim.x))

// n elements can be walked by DETECTION_CUDA_KERNEL_LOOP_T with a uint32_t index (i + the grid's thread count
// never wraps: n < 2^31 and at most kMaxBlocks * kThreadsPerBlock = 2^21 threads).
inline bool fits_uint32_index(int64_t n) {
  return n <= std::numeric_limits<int32_t>::max();
}

// One past the last position of the category of position p in cls [n] sorted ascending (an upper bound, binary
// search from p + 1): the end of p's category in a class-major order.
__device__ __forceinline__ int category_end(const int64_t* cls, int p, int n) {
  const int64_t c = cls[p];
  int lo = p + 1, hi = n;
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    if (cls[mid] <= c) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// Element (n, c, ph, pw) of a contiguous [K, C, pooled_height, pooled_width] tensor from its flat index.
template <typename index_t>
struct BinIndex {
  index_t n;
  int c, ph, pw;
};

template <typename index_t>
__device__ __forceinline__ BinIndex<index_t> bin_index(index_t index, int channels, int pooled_height,
                                                        int pooled_width) {
  BinIndex<index_t> b;
  const index_t q1 = index / static_cast<index_t>(pooled_width);
  b.pw = static_cast<int>(index - q1 * static_cast<index_t>(pooled_width));
  const index_t q2 = q1 / static_cast<index_t>(pooled_height);
  b.ph = static_cast<int>(q1 - q2 * static_cast<index_t>(pooled_height));
  b.n = q2 / static_cast<index_t>(channels);
  b.c = static_cast<int>(q2 - b.n * static_cast<index_t>(channels));
  return b;
}

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
