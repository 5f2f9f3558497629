// Helpers shared by the CPU RoI kernels (roi_align_kernel.cpp, roi_pool_kernel.cpp): argument checks,
// batch indices of the RoIs and the RoIs grouped by batch image (for race-free parallel backward passes).
//
// Conventions: input / grad_input are [B, C, H, W] contiguous; rois are [K, 5] rows
// (batch_index, x1, y1, x2, y2) in image coordinates; outputs are [K, C, pooled_height, pooled_width].
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/op_checks.h"

namespace detection {
namespace cpu {

// The argument checks are the CUDA kernels' too (csrc/common/op_checks.h); here bound to the CPU.
inline void check_roi_forward(const char* op, const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                              int64_t pooled_height, int64_t pooled_width) {
  checks::check_roi_forward(op, input, rois, spatial_scale, pooled_height, pooled_width, c10::DeviceType::CPU);
}

inline void check_roi_backward(const char* op, const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                               int64_t pooled_height, int64_t pooled_width, int64_t batch_size, int64_t channels,
                               int64_t height, int64_t width) {
  checks::check_roi_backward(op, grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height,
                             width, c10::DeviceType::CPU);
}

// Batch index of each RoI (column 0 of rois [K, 5] contiguous), truncated toward zero as a C cast does, after
// checking that it names an image of the batch (so no kernel can read or write outside the feature map).
template <typename T>
std::vector<int64_t> roi_batch_indices(const char* op, const T* rois, int64_t num_rois, int64_t batch_size) {
  std::vector<int64_t> batch(num_rois);
  for (int64_t n = 0; n < num_rois; ++n) {
    const T b = rois[n * 5];
    TORCH_CHECK(b > T(-1) && b < static_cast<T>(batch_size), op, ": rois[", n, ", 0] = ", b,
                " is not a batch index in [0, ", batch_size, ")");
    batch[n] = static_cast<int64_t>(b);
  }
  return batch;
}

// The RoIs grouped by batch image, each group in increasing RoI index:
// RoIs of image b are order[offsets[b]] .. order[offsets[b + 1] - 1].
struct RoisByBatch {
  std::vector<int64_t> order;
  std::vector<int64_t> offsets;
};

inline RoisByBatch group_rois_by_batch(const std::vector<int64_t>& batch, int64_t batch_size) {
  RoisByBatch g;
  g.offsets.assign(batch_size + 1, 0);
  for (int64_t b : batch) g.offsets[b + 1]++;
  for (int64_t b = 0; b < batch_size; ++b) g.offsets[b + 1] += g.offsets[b];
  g.order.resize(batch.size());
  std::vector<int64_t> next(g.offsets.begin(), g.offsets.end() - 1);
  for (int64_t n = 0; n < static_cast<int64_t>(batch.size()); ++n) g.order[next[batch[n]]++] = n;
  return g;
}

// Splits a flat range [begin, end) of (outer, inner) pairs, inner-major with `inner` entries per outer index,
// into per-outer inner sub-ranges: f(outer, inner_begin, inner_end).
template <typename F>
inline void for_each_outer(int64_t begin, int64_t end, int64_t inner, const F& f) {
  if (inner <= 0) return;
  for (int64_t o = begin / inner; o * inner < end; ++o) {
    const int64_t i0 = std::max(begin, o * inner) - o * inner;
    const int64_t i1 = std::min(end, (o + 1) * inner) - o * inner;
    f(o, i0, i1);
  }
}

// Runs f(b, e) over sub-ranges of [begin, end) on torch's intra-op threads. The range is cut into a few tasks per
// thread, of at least `grain` items, which the threads claim in order from a shared counter: on a busy machine a
// thread that loses its core for a while delays the op by one task, not by a fixed half of the work.
template <typename F>
inline void parallel_dynamic(int64_t begin, int64_t end, int64_t grain, const F& f) {
  const int64_t n = end - begin;
  if (n <= 0) return;
  const int64_t threads = at::get_num_threads();
  if (threads <= 1 || n <= grain || at::in_parallel_region()) {
    f(begin, end);
    return;
  }
  const int64_t step = std::max<int64_t>({grain, n / (threads * 8), 1});
  std::atomic<int64_t> next{begin};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (int64_t b = next.fetch_add(step); b < end; b = next.fetch_add(step)) f(b, std::min(end, b + step));
  });
}

// Blocks of nc channels x bins values: channel-major [nc, bins] rows inside a [C, bins] tensor (the layout of
// outputs and output gradients) versus a bin-major [bins, nc] buffer (what the channel-vectorised kernels use).
// Moving whole blocks keeps the tensor side sequential instead of one strided access per value.
template <typename V>
inline void bin_major_to_channel_major(const V* __restrict buf, int64_t bins, int64_t nc, V* __restrict dst) {
  for (int64_t c = 0; c < nc; ++c)
    for (int64_t i = 0; i < bins; ++i) dst[c * bins + i] = buf[i * nc + c];
}

template <typename V>
inline void channel_major_to_bin_major(const V* __restrict src, int64_t bins, int64_t nc, V* __restrict buf) {
  for (int64_t c = 0; c < nc; ++c)
    for (int64_t i = 0; i < bins; ++i) buf[i * nc + c] = src[c * bins + i];
}

}  // namespace cpu
}  // namespace detection
