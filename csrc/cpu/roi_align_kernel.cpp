// RoIAlign forward and backward on the CPU (float32, float64; float16 and bfloat16 computed in float32 and rounded
// once, like the CUDA kernels' op-math), multithreaded with at::parallel_for.
//
// input: [B, C, H, W]; rois: [K, 5] (batch_index, x1, y1, x2, y2) in image coordinates, scaled by spatial_scale
// onto the feature map; output: [K, C, pooled_height, pooled_width]. Each output bin is the mean of
// grid_h x grid_w bilinear samples (grid = sampling_ratio, or ceil(roi_size / pooled_size) when it is <= 0).
// The sampling and boundary rules are torchvision's: a sample with y < -1 or y > H (or x likewise) contributes
// zero; otherwise coordinates are clamped to [0, size - 1] before interpolation.
//
// Speed: the sampling grid of a RoI is separable (every sample of output row ph shares the y coordinates of
// that row, every sample of column pw the x coordinates), so the geometry of a RoI is precomputed once as two
// short lists of "taps" (rows / columns with their weights) and shared by all channels. The kernels work on a
// channels-last copy of the map ([B, H, W, C]), so each sample reads / updates the contiguous C values of its
// four pixels in a loop the compiler vectorises; per channel the arithmetic and its order are torchvision's.
// The forward pass parallelises over (RoI, channel chunk) pairs; the backward pass over (image, channel chunk)
// blocks of grad_input, so that no two threads ever add into the same values (no atomics, no races).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "roi_common.h"

namespace detection {
namespace cpu {
namespace {

// One sampling coordinate along one axis after the boundary rules: interpolates between positions lo and hi
// with weights wlo = 1 - frac, whi = frac. lo / hi are offsets into a channels-last [H, W, C] image:
// row * W * C on the y axis, column * C on the x axis.
template <typename T>
struct Tap {
  int64_t lo, hi;
  T wlo, whi;
};

// The separable geometry of one RoI: the valid y taps of output row ph are ys[ybeg[ph] .. ybeg[ph + 1]),
// the valid x taps of output column pw are xs[xbeg[pw] .. xbeg[pw + 1]). count is grid_h * grid_w, at least 1.
template <typename T>
struct RoiGeometry {
  std::vector<Tap<T>> ys, xs;
  std::vector<int64_t> ybeg, xbeg;
  T count;
  bool empty;  // no valid sample at all: the RoI's output is zero and it has no gradient
};

// Taps of one axis: `pooled` bins of `bin` each from `start`, `grid` samples per bin, on an axis of `size` pixels.
template <typename T>
void axis_taps(T start, T bin, int64_t pooled, int64_t grid, int64_t size, int64_t stride, std::vector<Tap<T>>& taps,
               std::vector<int64_t>& beg) {
  taps.clear();
  beg.resize(pooled + 1);
  for (int64_t p = 0; p < pooled; ++p) {
    beg[p] = static_cast<int64_t>(taps.size());
    for (int64_t i = 0; i < grid; ++i) {
      T v = start + static_cast<T>(p) * bin + static_cast<T>(i + .5f) * bin / static_cast<T>(grid);
      // Outside [-1, size] (or NaN): the sample adds zero; skipping it is the same.
      if (!(v >= -1.0 && v <= static_cast<T>(size))) continue;
      if (v <= 0) v = 0;
      int64_t lo = static_cast<int64_t>(v), hi;
      if (lo >= size - 1) {
        hi = lo = size - 1;
        v = static_cast<T>(lo);
      } else {
        hi = lo + 1;
      }
      const T frac = v - static_cast<T>(lo);
      taps.push_back(Tap<T>{lo * stride, hi * stride, static_cast<T>(1. - frac), frac});
    }
  }
  beg[pooled] = static_cast<int64_t>(taps.size());
}

// Samples per bin along one axis: sampling_ratio, or ceil(roi_size / pooled) (0 for empty or NaN sizes), bounded
// as on CUDA (csrc/common/op_checks.h).
template <typename T>
int64_t grid_size(T roi_size, int64_t pooled, int64_t sampling_ratio) {
  if (sampling_ratio > 0) return sampling_ratio;
  return checks::roi_align_grid(std::ceil(static_cast<double>(roi_size / static_cast<T>(pooled))), sampling_ratio);
}

template <typename T>
void roi_geometry(const T* roi, int64_t n, T spatial_scale, int64_t height, int64_t width, int64_t channels,
                  int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned,
                  RoiGeometry<T>& g) {
  const T offset = aligned ? T(0.5) : T(0);
  const T start_w = roi[1] * spatial_scale - offset;
  const T start_h = roi[2] * spatial_scale - offset;
  const T end_w = roi[3] * spatial_scale - offset;
  const T end_h = roi[4] * spatial_scale - offset;
  T roi_w = end_w - start_w;
  T roi_h = end_h - start_h;
  if (!aligned) {  // legacy mode: malformed RoIs are forced to 1 x 1
    roi_w = std::max(roi_w, T(1));
    roi_h = std::max(roi_h, T(1));
  }
  const T bin_h = roi_h / static_cast<T>(pooled_height);
  const T bin_w = roi_w / static_cast<T>(pooled_width);
  const int64_t grid_h = grid_size(roi_h, pooled_height, sampling_ratio);
  const int64_t grid_w = grid_size(roi_w, pooled_width, sampling_ratio);
  TORCH_CHECK(checks::roi_align_grid_fits(grid_h, grid_w, pooled_height, pooled_width),
              checks::roi_align_grid_message(n, grid_h, grid_w));
  g.count = static_cast<T>(std::max<int64_t>(grid_h * grid_w, 1));
  if (height <= 0 || width <= 0) {
    g.ys.clear();
    g.xs.clear();
    g.ybeg.assign(pooled_height + 1, 0);
    g.xbeg.assign(pooled_width + 1, 0);
  } else {
    axis_taps(start_h, bin_h, pooled_height, grid_h, height, width * channels, g.ys, g.ybeg);
    axis_taps(start_w, bin_w, pooled_width, grid_w, width, channels, g.xs, g.xbeg);
  }
  g.empty = g.ys.empty() || g.xs.empty();
}

// Channels handled by one task (and the length of the vectorised inner loops).
constexpr int64_t kChannelChunk = 64;

// Grain of the parallel loops (tasks of one RoI or image and one channel chunk): about 32k sample-channel
// products, so that small problems run on the calling thread.
int64_t grain_for(int64_t channels, int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio) {
  const int64_t r = std::min<int64_t>(sampling_ratio, 1024);  // no overflow for absurd ratios (refused later)
  const int64_t s = sampling_ratio > 0 ? r * r : 4;
  const int64_t work = std::min(channels, kChannelChunk) * pooled_height * pooled_width * s;
  return std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, work));
}

// Forward of one RoI for channels [c0, c0 + nc): in_b is the RoI's image, channels-last [H, W, C] (tap offsets
// are already multiplied by C); out_n its [C, pooled_height, pooled_width] output, or with channels_last_out its
// [pooled_height, pooled_width, C] output of `channels` channels; buf a [bins, nc] buffer.
// Per channel the sums run in torchvision's order (iy, then ix, then the four corners), so the result is
// bit-identical; the loop over channels is what the compiler vectorises.
template <typename T>
void align_forward_roi(const RoiGeometry<T>& g, int64_t pooled_height, int64_t pooled_width, const T* in_b,
                       int64_t c0, int64_t nc, T* out_n, T* buf, bool channels_last_out, int64_t channels) {
  const int64_t bins = pooled_height * pooled_width;
  for (int64_t ph = 0; ph < pooled_height; ++ph) {
    const Tap<T>* y0 = g.ys.data() + g.ybeg[ph];
    const Tap<T>* y1 = g.ys.data() + g.ybeg[ph + 1];
    for (int64_t pw = 0; pw < pooled_width; ++pw) {
      const Tap<T>* x0 = g.xs.data() + g.xbeg[pw];
      const Tap<T>* x1 = g.xs.data() + g.xbeg[pw + 1];
      T* __restrict acc = buf + (ph * pooled_width + pw) * nc;
      std::fill(acc, acc + nc, T(0));
      for (const Tap<T>* ty = y0; ty != y1; ++ty) {
        for (const Tap<T>* tx = x0; tx != x1; ++tx) {
          const T w1 = ty->wlo * tx->wlo, w2 = ty->wlo * tx->whi, w3 = ty->whi * tx->wlo, w4 = ty->whi * tx->whi;
          const T* __restrict v1 = in_b + ty->lo + tx->lo + c0;
          const T* __restrict v2 = in_b + ty->lo + tx->hi + c0;
          const T* __restrict v3 = in_b + ty->hi + tx->lo + c0;
          const T* __restrict v4 = in_b + ty->hi + tx->hi + c0;
          for (int64_t c = 0; c < nc; ++c) acc[c] += w1 * v1[c] + w2 * v2[c] + w3 * v3[c] + w4 * v4[c];
        }
      }
      for (int64_t c = 0; c < nc; ++c) acc[c] /= g.count;
    }
  }
  if (channels_last_out) {
    for (int64_t bin = 0; bin < bins; ++bin) {
      std::copy(buf + bin * nc, buf + (bin + 1) * nc, out_n + bin * channels + c0);
    }
  } else {
    bin_major_to_channel_major(buf, bins, nc, out_n + c0 * bins);
  }
}

// Backward of one RoI for channels [c0, c0 + nc): grad_n is the RoI's [C, pooled_height, pooled_width] output
// gradient, gi_b its image's channels-last [H, W, C] grad_input; gbuf a [bins, nc] buffer. Adds
// grad * w / count of every sample into its four pixels, in torchvision's order.
template <typename T>
void align_backward_roi(const RoiGeometry<T>& g, int64_t pooled_height, int64_t pooled_width, const T* grad_n,
                        T* gi_b, int64_t c0, int64_t nc, T* gbuf) {
  const int64_t bins = pooled_height * pooled_width;
  channel_major_to_bin_major(grad_n + c0 * bins, bins, nc, gbuf);
  for (int64_t ph = 0; ph < pooled_height; ++ph) {
    const Tap<T>* y0 = g.ys.data() + g.ybeg[ph];
    const Tap<T>* y1 = g.ys.data() + g.ybeg[ph + 1];
    for (int64_t pw = 0; pw < pooled_width; ++pw) {
      const Tap<T>* x0 = g.xs.data() + g.xbeg[pw];
      const Tap<T>* x1 = g.xs.data() + g.xbeg[pw + 1];
      const T* __restrict gb = gbuf + (ph * pooled_width + pw) * nc;
      bool any = false;
      for (int64_t c = 0; c < nc; ++c) any |= gb[c] != T(0);
      if (!any) continue;  // adding zeros changes nothing
      for (const Tap<T>* ty = y0; ty != y1; ++ty) {
        for (const Tap<T>* tx = x0; tx != x1; ++tx) {
          // w / count is exact when count is a power of two (the usual 1, 4, 16): the sums are then
          // bit-identical to torchvision's grad * w / count, otherwise within an ulp.
          const T w1 = ty->wlo * tx->wlo / g.count, w2 = ty->wlo * tx->whi / g.count;
          const T w3 = ty->whi * tx->wlo / g.count, w4 = ty->whi * tx->whi / g.count;
          // The four corners coincide at the border (lo == hi): one loop per corner keeps the order of the adds.
          T* d1 = gi_b + ty->lo + tx->lo + c0;
          for (int64_t c = 0; c < nc; ++c) d1[c] += gb[c] * w1;
          T* d2 = gi_b + ty->lo + tx->hi + c0;
          for (int64_t c = 0; c < nc; ++c) d2[c] += gb[c] * w2;
          T* d3 = gi_b + ty->hi + tx->lo + c0;
          for (int64_t c = 0; c < nc; ++c) d3[c] += gb[c] * w3;
          T* d4 = gi_b + ty->hi + tx->hi + c0;
          for (int64_t c = 0; c < nc; ++c) d4[c] += gb[c] * w4;
        }
      }
    }
  }
}

at::Tensor roi_align_forward_cpu(const at::Tensor& input_, const at::Tensor& rois_, double spatial_scale,
                                 int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  check_roi_forward("roi_align", input_, rois_, spatial_scale, pooled_height, pooled_width);
  if (checks::is_reduced_precision(input_.scalar_type())) {  // the memory format carries over both ways
    return roi_align_forward_cpu(input_.to(at::kFloat), rois_.to(at::kFloat), spatial_scale, pooled_height,
                                 pooled_width, sampling_ratio, aligned)
        .to(input_.scalar_type());
  }
  const at::Tensor rois = rois_.contiguous();
  const int64_t num_rois = rois.size(0), channels = input_.size(1);
  const int64_t height = input_.size(2), width = input_.size(3);
  // A channels_last map gives a channels_last output (what the convolutions of a per-RoI head read in the fast
  // path), any other a contiguous one; the values are the same.
  const bool channels_last_out = input_.dim() == 4 && channels > 1 &&
                                 input_.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  at::Tensor output = at::empty({num_rois, channels, pooled_height, pooled_width},
                                input_.options().memory_format(channels_last_out ? at::MemoryFormat::ChannelsLast
                                                                                 : at::MemoryFormat::Contiguous));
  if (output.numel() == 0) return output;
  // Channels-last [B, H, W, C] (free when the input already is): the C values of a pixel are contiguous.
  const at::Tensor input = input_.permute({0, 2, 3, 1}).contiguous();

  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "roi_align_forward_cpu", [&] {
    using T = scalar_t;
    const T* in = input.data_ptr<T>();
    const T* rp = rois.data_ptr<T>();
    T* out = output.data_ptr<T>();
    const std::vector<int64_t> batch = roi_batch_indices("roi_align", rp, num_rois, input_.size(0));
    const T scale = static_cast<T>(spatial_scale);
    const int64_t image = height * width * channels, bins = pooled_height * pooled_width;
    const int64_t chunks = (channels + kChannelChunk - 1) / kChannelChunk;

    // Over (RoI, channel chunk) pairs; a task computes the geometry of each of its RoIs once.
    const int64_t grain = grain_for(channels, pooled_height, pooled_width, sampling_ratio);
    parallel_dynamic(0, num_rois * chunks, grain, [&](int64_t begin, int64_t end) {
      RoiGeometry<T> g;
      std::vector<T> buf(bins * std::min(channels, kChannelChunk));
      for_each_outer(begin, end, chunks, [&](int64_t n, int64_t k0, int64_t k1) {
        roi_geometry(rp + n * 5, n, scale, height, width, channels, pooled_height, pooled_width, sampling_ratio,
                     aligned, g);
        const int64_t c0 = k0 * kChannelChunk, c1 = std::min(channels, k1 * kChannelChunk);
        T* out_n = out + n * channels * bins;
        if (g.empty) {
          if (channels_last_out) {
            for (int64_t bin = 0; bin < bins; ++bin) {
              std::fill(out_n + bin * channels + c0, out_n + bin * channels + c1, T(0));
            }
          } else {
            std::fill(out_n + c0 * bins, out_n + c1 * bins, T(0));
          }
          return;
        }
        for (int64_t c = c0; c < c1; c += kChannelChunk) {
          align_forward_roi(g, pooled_height, pooled_width, in + batch[n] * image, c,
                            std::min(kChannelChunk, c1 - c), out_n, buf.data(), channels_last_out, channels);
        }
      });
    });
  });
  return output;
}

at::Tensor roi_align_backward_cpu(const at::Tensor& grad_, const at::Tensor& rois_, double spatial_scale,
                                  int64_t pooled_height, int64_t pooled_width, int64_t batch_size, int64_t channels,
                                  int64_t height, int64_t width, int64_t sampling_ratio, bool aligned) {
  check_roi_backward("roi_align_backward", grad_, rois_, spatial_scale, pooled_height, pooled_width, batch_size,
                     channels, height, width);
  if (checks::is_reduced_precision(grad_.scalar_type())) {  // accumulated in float32, rounded once
    return roi_align_backward_cpu(grad_.to(at::kFloat), rois_.to(at::kFloat), spatial_scale, pooled_height,
                                  pooled_width, batch_size, channels, height, width, sampling_ratio, aligned)
        .to(grad_.scalar_type());
  }
  const at::Tensor grad = grad_.contiguous();
  const at::Tensor rois = rois_.contiguous();
  const int64_t num_rois = rois.size(0);
  // Accumulated channels-last [B, H, W, C]; returned as a contiguous [B, C, H, W] tensor.
  at::Tensor grad_input = at::zeros({batch_size, height, width, channels}, grad.options());
  if (grad.numel() == 0 || grad_input.numel() == 0) return grad_input.permute({0, 3, 1, 2}).contiguous();

  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_align_backward_cpu", [&] {
    using T = scalar_t;
    const T* gp = grad.data_ptr<T>();
    const T* rp = rois.data_ptr<T>();
    T* gi = grad_input.data_ptr<T>();
    const std::vector<int64_t> batch = roi_batch_indices("roi_align_backward", rp, num_rois, batch_size);
    const RoisByBatch groups = group_rois_by_batch(batch, batch_size);
    const T scale = static_cast<T>(spatial_scale);
    const int64_t image = height * width * channels, bins = pooled_height * pooled_width;
    const int64_t chunks = (channels + kChannelChunk - 1) / kChannelChunk;

    // Over (image, channel chunk) blocks of grad_input: each block is written by exactly one task (no races),
    // and within it the RoIs come in increasing index, the order of torchvision's serial loop.
    const int64_t grain = std::max<int64_t>(
        1, grain_for(channels, pooled_height, pooled_width, sampling_ratio) * batch_size / std::max<int64_t>(1, num_rois));
    parallel_dynamic(0, batch_size * chunks, grain, [&](int64_t begin, int64_t end) {
      RoiGeometry<T> g;
      std::vector<T> gbuf(bins * std::min(channels, kChannelChunk));
      for_each_outer(begin, end, chunks, [&](int64_t b, int64_t k0, int64_t k1) {
        const int64_t c0 = k0 * kChannelChunk, c1 = std::min(channels, k1 * kChannelChunk);
        for (int64_t r = groups.offsets[b]; r < groups.offsets[b + 1]; ++r) {
          const int64_t n = groups.order[r];
          roi_geometry(rp + n * 5, n, scale, height, width, channels, pooled_height, pooled_width, sampling_ratio,
                       aligned, g);
          if (g.empty) continue;
          for (int64_t c = c0; c < c1; c += kChannelChunk) {
            align_backward_roi(g, pooled_height, pooled_width, gp + n * channels * bins, gi + b * image, c,
                               std::min(kChannelChunk, c1 - c), gbuf.data());
          }
        }
      });
    });
  });
  return grad_input.permute({0, 3, 1, 2}).contiguous();
}

}  // namespace

TORCH_LIBRARY_IMPL(detection, CPU, m) {
  m.impl("roi_align", TORCH_FN(roi_align_forward_cpu));
  m.impl("_roi_align_backward", TORCH_FN(roi_align_backward_cpu));
}

}  // namespace cpu
}  // namespace detection
