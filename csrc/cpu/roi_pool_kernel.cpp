// RoIPool (Fast R-CNN max pooling) forward and backward on the CPU (float32, float64; float16 and bfloat16 through
// float32, where their values are exact), multithreaded.
//
// input: [B, C, H, W]; rois: [K, 5] (batch_index, x1, y1, x2, y2) in image coordinates. Following torchvision,
// the scaled corners are rounded to whole pixels, the RoI spans at least 1 x 1 pixel (corners inclusive), and
// bin ph covers rows [floor(ph * bin_h), ceil((ph + 1) * bin_h)) from the RoI's top, clipped to the map.
// output: [K, C, pooled_height, pooled_width] maxima (0 for an empty bin); argmax: the same shape, int32, the
// flat index h * W + w of each maximum in its [H, W] plane (the first one in row-major order on ties), -1 for
// an empty bin. The backward pass routes each output gradient to its argmax.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <vector>

#include "roi_common.h"

namespace detection {
namespace cpu {
namespace {

// A rounded, scaled RoI corner as an integer, saturated far outside any feature map (and NaN -> 0) so that
// pathological coordinates cannot overflow the integer arithmetic below.
template <typename T>
int64_t rounded_coord(T v) {
  constexpr double kLimit = double(int64_t(1) << 40);
  const double r = std::round(static_cast<double>(v));
  if (r != r) return 0;
  return static_cast<int64_t>(std::min(std::max(r, -kLimit), kLimit));
}

// The bins of one axis, separable: bin p covers [start[p], end[p]) of an axis of `size` pixels.
template <typename T>
void pool_bins(T roi_begin, T roi_end, T spatial_scale, int64_t pooled, int64_t size, std::vector<int64_t>& start,
               std::vector<int64_t>& end) {
  const int64_t b = rounded_coord<T>(roi_begin * spatial_scale);
  const int64_t e = rounded_coord<T>(roi_end * spatial_scale);
  const int64_t len = std::max<int64_t>(e - b + 1, 1);  // malformed RoIs become one pixel
  const T bin = static_cast<T>(len) / static_cast<T>(pooled);
  start.resize(pooled);
  end.resize(pooled);
  for (int64_t p = 0; p < pooled; ++p) {
    const int64_t s = static_cast<int64_t>(std::floor(static_cast<T>(p) * bin));
    const int64_t t = static_cast<int64_t>(std::ceil(static_cast<T>(p + 1) * bin));
    start[p] = std::min(std::max<int64_t>(s + b, 0), size);
    end[p] = std::min(std::max<int64_t>(t + b, 0), size);
  }
}

// Channels handled by one forward task (and the length of the vectorised inner loop).
constexpr int64_t kChannelChunk = 64;

// Max pooling of one bin, rows [h0, h1) x columns [w0, w1), for nc channels of a channels-last [H, W, C] image
// starting at `src` (already offset to the first channel): best / at receive each channel's maximum and its flat
// index h * W + w (the first in row-major order on ties; -FLT_MAX and -1 when nothing exceeds -FLT_MAX).
template <typename T>
void pool_bin(const T* src, int64_t width, int64_t channels, int64_t h0, int64_t h1, int64_t w0, int64_t w1,
              int64_t nc, T* __restrict best, int32_t* __restrict at) {
  for (int64_t c = 0; c < nc; ++c) {
    best[c] = static_cast<T>(-FLT_MAX);
    at[c] = -1;
  }
  for (int64_t h = h0; h < h1; ++h) {
    for (int64_t w = w0; w < w1; ++w) {
      const int32_t idx = static_cast<int32_t>(h * width + w);
      const T* __restrict v = src + (h * width + w) * channels;
      for (int64_t c = 0; c < nc; ++c) {  // branch-free (masks), so that it vectorises
        const T x = v[c], b = best[c];
        const int32_t m = -static_cast<int32_t>(x > b);
        best[c] = std::max(b, x);  // (b < x) ? x : b
        at[c] = (at[c] & ~m) | (idx & m);
      }
    }
  }
}

std::tuple<at::Tensor, at::Tensor> roi_pool_forward_cpu(const at::Tensor& input_, const at::Tensor& rois_,
                                                        double spatial_scale, int64_t pooled_height,
                                                        int64_t pooled_width) {
  check_roi_forward("roi_pool", input_, rois_, spatial_scale, pooled_height, pooled_width);
  if (checks::is_reduced_precision(input_.scalar_type())) {  // maxima of exact float32 copies: no rounding
    auto [output, argmax] = roi_pool_forward_cpu(input_.to(at::kFloat), rois_.to(at::kFloat), spatial_scale,
                                                 pooled_height, pooled_width);
    return std::make_tuple(output.to(input_.scalar_type()), argmax);
  }
  const at::Tensor rois = rois_.contiguous();
  const int64_t num_rois = rois.size(0), channels = input_.size(1);
  const int64_t height = input_.size(2), width = input_.size(3);
  checks::check_roi_pool_plane("roi_pool", height, width);
  at::Tensor output = at::empty({num_rois, channels, pooled_height, pooled_width}, input_.options());
  at::Tensor argmax = at::empty({num_rois, channels, pooled_height, pooled_width}, input_.options().dtype(at::kInt));
  if (output.numel() == 0) return std::make_tuple(output, argmax);
  // Channels-last [B, H, W, C] (free when the input already is): the C values of a pixel are contiguous.
  const at::Tensor input = input_.permute({0, 2, 3, 1}).contiguous();

  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "roi_pool_forward_cpu", [&] {
    using T = scalar_t;
    const T* in = input.data_ptr<T>();
    const T* rp = rois.data_ptr<T>();
    T* out = output.data_ptr<T>();
    int32_t* arg = argmax.data_ptr<int32_t>();
    const std::vector<int64_t> batch = roi_batch_indices("roi_pool", rp, num_rois, input_.size(0));
    const T scale = static_cast<T>(spatial_scale);
    const int64_t image = height * width * channels, bins = pooled_height * pooled_width;
    const int64_t chunks = (channels + kChannelChunk - 1) / kChannelChunk;
    const int64_t grain = std::max<int64_t>(1, 4096 / (bins * std::min(channels, kChannelChunk)));

    // Over (RoI, channel chunk) pairs; a task computes the bins of each of its RoIs once.
    parallel_dynamic(0, num_rois * chunks, grain, [&](int64_t begin, int64_t end) {
      std::vector<int64_t> hs, he, ws, we;
      std::vector<T> obuf(bins * std::min(channels, kChannelChunk));  // [bins, nc] maxima
      std::vector<int32_t> abuf(obuf.size());                           // [bins, nc] argmax
      for_each_outer(begin, end, chunks, [&](int64_t n, int64_t k0, int64_t k1) {
        const T* roi = rp + n * 5;
        pool_bins<T>(roi[2], roi[4], scale, pooled_height, height, hs, he);
        pool_bins<T>(roi[1], roi[3], scale, pooled_width, width, ws, we);
        const T* in_b = in + batch[n] * image;
        for (int64_t c0 = k0 * kChannelChunk; c0 < std::min(channels, k1 * kChannelChunk); c0 += kChannelChunk) {
          const int64_t nc = std::min(kChannelChunk, channels - c0);
          for (int64_t ph = 0; ph < pooled_height; ++ph) {
            for (int64_t pw = 0; pw < pooled_width; ++pw) {
              T* best = obuf.data() + (ph * pooled_width + pw) * nc;
              int32_t* at = abuf.data() + (ph * pooled_width + pw) * nc;
              if (he[ph] <= hs[ph] || we[pw] <= ws[pw]) {  // empty bin: 0, no argmax
                std::fill(best, best + nc, T(0));
                std::fill(at, at + nc, -1);
              } else {
                pool_bin(in_b + c0, width, channels, hs[ph], he[ph], ws[pw], we[pw], nc, best, at);
              }
            }
          }
          bin_major_to_channel_major(obuf.data(), bins, nc, out + (n * channels + c0) * bins);
          bin_major_to_channel_major(abuf.data(), bins, nc, arg + (n * channels + c0) * bins);
        }
      });
    });
  });
  return std::make_tuple(output, argmax);
}

at::Tensor roi_pool_backward_cpu(const at::Tensor& grad_, const at::Tensor& rois_, const at::Tensor& argmax_,
                                 double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                                 int64_t batch_size, int64_t channels, int64_t height, int64_t width) {
  check_roi_backward("roi_pool_backward", grad_, rois_, spatial_scale, pooled_height, pooled_width, batch_size,
                     channels, height, width);
  checks::check_roi_pool_argmax("roi_pool_backward", argmax_, grad_, c10::DeviceType::CPU);
  if (checks::is_reduced_precision(grad_.scalar_type())) {  // accumulated in float32, rounded once
    return roi_pool_backward_cpu(grad_.to(at::kFloat), rois_.to(at::kFloat), argmax_, spatial_scale, pooled_height,
                                 pooled_width, batch_size, channels, height, width)
        .to(grad_.scalar_type());
  }
  const at::Tensor grad = grad_.contiguous();
  const at::Tensor rois = rois_.contiguous();
  const at::Tensor argmax = argmax_.contiguous();
  const int64_t num_rois = rois.size(0);
  at::Tensor grad_input = at::zeros({batch_size, channels, height, width}, grad.options());
  if (grad.numel() == 0 || grad_input.numel() == 0) return grad_input;

  std::atomic<bool> bad_index{false};
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_pool_backward_cpu", [&] {
    using T = scalar_t;
    const T* gp = grad.data_ptr<T>();
    const int32_t* ap = argmax.data_ptr<int32_t>();
    T* gi = grad_input.data_ptr<T>();
    const std::vector<int64_t> batch = roi_batch_indices("roi_pool_backward", rois.data_ptr<T>(), num_rois, batch_size);
    const RoisByBatch groups = group_rois_by_batch(batch, batch_size);
    const int64_t plane = height * width, bins = pooled_height * pooled_width;
    const int64_t grain = std::max<int64_t>(1, 4096 * batch_size / std::max<int64_t>(1, num_rois * bins));

    // Over (image, channel) planes of grad_input, one task per plane (no races); within a plane the RoIs come
    // in increasing index, as in a serial loop.
    parallel_dynamic(0, batch_size * channels, grain, [&](int64_t begin, int64_t end) {
      bool bad = false;
      for_each_outer(begin, end, channels, [&](int64_t b, int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) {
          T* dst = gi + (b * channels + c) * plane;
          for (int64_t r = groups.offsets[b]; r < groups.offsets[b + 1]; ++r) {
            const int64_t off = (groups.order[r] * channels + c) * bins;
            const T* g = gp + off;
            const int32_t* a = ap + off;
            for (int64_t i = 0; i < bins; ++i) {
              const int64_t k = a[i];
              if (k == -1) continue;  // empty bin: no gradient
              if (k < 0 || k >= plane) {
                bad = true;
                continue;
              }
              dst[k] += g[i];
            }
          }
        }
      });
      if (bad) bad_index = true;
    });
  });
  TORCH_CHECK(!bad_index, "roi_pool_backward: argmax holds indices outside [-1, H * W = ", height * width, ")");
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(detection, CPU, m) {
  m.impl("roi_pool", TORCH_FN(roi_pool_forward_cpu));
  m.impl("_roi_pool_backward", TORCH_FN(roi_pool_backward_cpu));
}

}  // namespace cpu
}  // namespace detection
