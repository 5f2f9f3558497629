// RoIAlign (Mask R-CNN) forward and backward on CUDA, with torchvision.ops.roi_align's semantics.
//
//   input:  [B, C, H, W]
//   rois:   [K, 5] rows (batch_index, x1, y1, x2, y2), xyxy in image coordinates; spatial_scale maps them onto
//           the feature map. aligned=True shifts them by -0.5 (pixel centres at integer + 0.5); aligned=False
//           forces every RoI to be at least 1x1.
//   output: [K, C, pooled_height, pooled_width], each bin the mean of grid_h x grid_w bilinear samples placed at
//           the centres of a regular sub-grid (grid = sampling_ratio if > 0, else ceil(roi_size / pooled_size)).
// A sample outside [-1, H] x [-1, W] contributes 0; one inside is clamped to the map. The adaptive grid is bounded
// as on the CPU (csrc/common/op_checks.h). A RoI whose batch index is outside [0, B), or whose grid exceeds the
// bound, gives 0 (and receives no gradient) instead of reading out of bounds or running for hours, and is reported
// through the device's asynchronous error record (async_error.cuh) with the CPU kernel's message.
//
// Arithmetic is done in the op-math type (float for half/bfloat16), and the backward accumulates with atomics
// into an op-math buffer that is cast back to the input dtype at the end.
//
// Launch and per-thread cost are torchvision's: one thread per output element, 512 threads per block, at most 4096
// blocks, grid-stride. The flat index is decomposed in 32-bit arithmetic whenever the tensor allows (uint32_t index,
// cuda_helpers.cuh): the 64-bit divisions this kernel used to make per thread (six for (n, c, ph, pw), three more
// in the grid bound) are emulated in software on the GPU and cost it ~1.2x torchvision's time. The grid size and
// its bound are computed in the op-math type (no float64), and the bound check is one product in the usual case
// (checks::roi_align_grid_fits). The asynchronous error record costs nothing on valid RoIs: it is touched only by
// the thread of a bad RoI's first element.
#include <ATen/core/Tensor.h>
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>

#include "async_error.cuh"
#include "common/op_checks.h"
#include "cuda_helpers.cuh"

namespace detection {
namespace ops {
namespace {

// Where the sampling grid of one RoI lies on the feature map.
template <typename acc_t>
struct AlignBins {
  int64_t batch;           // batch index, -1 when outside [0, B)
  acc_t start_h, start_w;  // top-left corner of the RoI on the feature map
  acc_t bin_h, bin_w;      // size of one output bin
  int64_t grid_h, grid_w;  // samples per bin along each axis
  bool fits;               // the grid is within checks::kMaxRoiAlignSamples
};

// Samples per bin along one axis: sampling_ratio if > 0, else ceil(roi_size / pooled) (0 for empty or NaN sizes),
// saturated at checks::kMaxRoiAlignSamples as on the CPU (checks::roi_align_grid, there compared in double: 2^31 is
// exact in float, so comparing in acc_t gives the same answer).
template <typename acc_t>
__device__ __forceinline__ int64_t grid_size(acc_t roi_size, int pooled, int sampling_ratio) {
  if (sampling_ratio > 0) {
    return sampling_ratio;
  }
  const acc_t ratio = ceil(roi_size / static_cast<acc_t>(pooled));
  if (!(ratio > acc_t(0))) {
    return 0;
  }
  return ratio > static_cast<acc_t>(checks::kMaxRoiAlignSamples) ? checks::kMaxRoiAlignSamples
                                                                  : static_cast<int64_t>(ratio);
}

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ AlignBins<acc_t> align_bins(const scalar_t* roi, acc_t spatial_scale, int batch_size,
                                                       int pooled_height, int pooled_width, int sampling_ratio,
                                                       bool aligned) {
  AlignBins<acc_t> g;
  const acc_t b = static_cast<acc_t>(roi[0]);
  // Truncated like an (int) cast; (-1, B) truncates into [0, B). NaN fails both tests.
  g.batch = (b > acc_t(-1) && b < static_cast<acc_t>(batch_size)) ? static_cast<int64_t>(b) : -1;
  const acc_t offset = aligned ? acc_t(0.5) : acc_t(0);
  g.start_w = static_cast<acc_t>(roi[1]) * spatial_scale - offset;
  g.start_h = static_cast<acc_t>(roi[2]) * spatial_scale - offset;
  const acc_t end_w = static_cast<acc_t>(roi[3]) * spatial_scale - offset;
  const acc_t end_h = static_cast<acc_t>(roi[4]) * spatial_scale - offset;
  acc_t roi_w = end_w - g.start_w;
  acc_t roi_h = end_h - g.start_h;
  if (!aligned) {  // legacy behaviour: malformed RoIs become 1x1
    roi_w = max(roi_w, acc_t(1));
    roi_h = max(roi_h, acc_t(1));
  }
  g.bin_h = roi_h / static_cast<acc_t>(pooled_height);
  g.bin_w = roi_w / static_cast<acc_t>(pooled_width);
  g.grid_h = grid_size(roi_h, pooled_height, sampling_ratio);
  g.grid_w = grid_size(roi_w, pooled_width, sampling_ratio);
  g.fits = checks::roi_align_grid_fits(g.grid_h, g.grid_w, pooled_height, pooled_width);
  return g;
}

// A RoI the kernels skip (output 0, no gradient): reported once, by the thread of its (c, ph, pw) = (0, 0, 0).
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ bool skip_roi(const AlignBins<acc_t>& g, const scalar_t* roi, int64_t n, int batch_size,
                                         bool reporter, unsigned long long op, unsigned long long* record) {
  if (g.batch < 0) {
    if (reporter) {
      cuda::report_async_error(record, cuda::kAsyncBadBatchIndex, op, n, static_cast<double>(roi[0]), batch_size, 0);
    }
    return true;
  }
  if (!g.fits) {
    if (reporter) {
      cuda::report_async_error(record, cuda::kAsyncTooManySamples, op, n, 0.0, g.grid_h, g.grid_w);
    }
    return true;
  }
  return false;
}

// Corners and weights of the bilinear sample at (y, x) on an H x W plane; valid=false when it contributes nothing.
template <typename acc_t>
struct Bilinear {
  bool valid;
  int y_low, x_low, y_high, x_high;
  acc_t w_ll, w_lh, w_hl, w_hh;  // weights of (y_low, x_low), (y_low, x_high), (y_high, x_low), (y_high, x_high)
};

template <typename acc_t>
__device__ __forceinline__ Bilinear<acc_t> bilinear(int height, int width, acc_t y, acc_t x) {
  Bilinear<acc_t> s;
  // Written as !(inside) so that NaN coordinates are treated as outside.
  if (!(y >= acc_t(-1) && y <= static_cast<acc_t>(height) && x >= acc_t(-1) && x <= static_cast<acc_t>(width))) {
    s.valid = false;
    return s;
  }
  s.valid = true;
  if (y <= 0) {
    y = 0;
  }
  if (x <= 0) {
    x = 0;
  }
  s.y_low = static_cast<int>(y);
  s.x_low = static_cast<int>(x);
  if (s.y_low >= height - 1) {
    s.y_high = s.y_low = height - 1;
    y = static_cast<acc_t>(s.y_low);
  } else {
    s.y_high = s.y_low + 1;
  }
  if (s.x_low >= width - 1) {
    s.x_high = s.x_low = width - 1;
    x = static_cast<acc_t>(s.x_low);
  } else {
    s.x_high = s.x_low + 1;
  }
  const acc_t ly = y - static_cast<acc_t>(s.y_low);
  const acc_t lx = x - static_cast<acc_t>(s.x_low);
  const acc_t hy = acc_t(1) - ly;
  const acc_t hx = acc_t(1) - lx;
  s.w_ll = hy * hx;
  s.w_lh = hy * lx;
  s.w_hl = ly * hx;
  s.w_hh = ly * lx;
  return s;
}

// One thread per output element (n, c, ph, pw) of output [K, C, ph, pw].
template <typename scalar_t, typename index_t>
__global__ void roi_align_forward_kernel(index_t total, const scalar_t* __restrict__ input,
                                         const scalar_t* __restrict__ rois, at::opmath_type<scalar_t> spatial_scale,
                                         int batch_size, int channels, int height, int width, int pooled_height,
                                         int pooled_width, int sampling_ratio, bool aligned,
                                         scalar_t* __restrict__ output, unsigned long long* record) {
  using acc_t = at::opmath_type<scalar_t>;
  DETECTION_CUDA_KERNEL_LOOP_T(index_t, index, total) {
    const cuda::BinIndex<index_t> e = cuda::bin_index(index, channels, pooled_height, pooled_width);
    const int64_t n = static_cast<int64_t>(e.n);
    const int c = e.c, ph = e.ph, pw = e.pw;

    const scalar_t* roi = rois + n * 5;
    const AlignBins<acc_t> g = align_bins<scalar_t, acc_t>(roi, spatial_scale, batch_size, pooled_height,
                                                           pooled_width, sampling_ratio, aligned);
    const bool skip = skip_roi(g, roi, n, batch_size, c == 0 && ph == 0 && pw == 0, cuda::kOpRoiAlign, record);
    acc_t sum = 0;
    if (!skip && height > 0 && width > 0) {
      const scalar_t* plane = input + (g.batch * channels + c) * static_cast<int64_t>(height) * width;
      for (int64_t iy = 0; iy < g.grid_h; ++iy) {
        const acc_t y = g.start_h + static_cast<acc_t>(ph) * g.bin_h +
                        (static_cast<acc_t>(iy) + acc_t(0.5)) * g.bin_h / static_cast<acc_t>(g.grid_h);
        for (int64_t ix = 0; ix < g.grid_w; ++ix) {
          const acc_t x = g.start_w + static_cast<acc_t>(pw) * g.bin_w +
                          (static_cast<acc_t>(ix) + acc_t(0.5)) * g.bin_w / static_cast<acc_t>(g.grid_w);
          const Bilinear<acc_t> s = bilinear(height, width, y, x);
          if (s.valid) {
            const scalar_t* row_low = plane + static_cast<int64_t>(s.y_low) * width;
            const scalar_t* row_high = plane + static_cast<int64_t>(s.y_high) * width;
            sum += s.w_ll * static_cast<acc_t>(row_low[s.x_low]) + s.w_lh * static_cast<acc_t>(row_low[s.x_high]) +
                   s.w_hl * static_cast<acc_t>(row_high[s.x_low]) + s.w_hh * static_cast<acc_t>(row_high[s.x_high]);
          }
        }
      }
    }
    // An empty grid (degenerate aligned RoI) averages over max(count, 1) and gives 0; so does a skipped RoI.
    const acc_t count = skip ? acc_t(1) : max(static_cast<acc_t>(g.grid_h) * static_cast<acc_t>(g.grid_w), acc_t(1));
    output[index] = static_cast<scalar_t>(sum / count);
  }
}

// One thread per element of grad [K, C, ph, pw] (contiguous); scatters into grad_input [B, C, H, W] (op-math type).
template <typename scalar_t, typename index_t>
__global__ void roi_align_backward_kernel(index_t total, const scalar_t* __restrict__ grad,
                                          const scalar_t* __restrict__ rois, at::opmath_type<scalar_t> spatial_scale,
                                          int batch_size, int channels, int height, int width, int pooled_height,
                                          int pooled_width, int sampling_ratio, bool aligned,
                                          at::opmath_type<scalar_t>* __restrict__ grad_input,
                                          unsigned long long* record) {
  using acc_t = at::opmath_type<scalar_t>;
  DETECTION_CUDA_KERNEL_LOOP_T(index_t, index, total) {
    const cuda::BinIndex<index_t> e = cuda::bin_index(index, channels, pooled_height, pooled_width);
    const int64_t n = static_cast<int64_t>(e.n);
    const int c = e.c, ph = e.ph, pw = e.pw;

    const scalar_t* roi = rois + n * 5;
    const AlignBins<acc_t> g = align_bins<scalar_t, acc_t>(roi, spatial_scale, batch_size, pooled_height,
                                                           pooled_width, sampling_ratio, aligned);
    if (skip_roi(g, roi, n, batch_size, c == 0 && ph == 0 && pw == 0, cuda::kOpRoiAlignBackward, record)) {
      continue;
    }
    const acc_t grad_bin = static_cast<acc_t>(grad[index]);
    // No sample, no loop: never divides by 0.
    const acc_t count = static_cast<acc_t>(g.grid_h) * static_cast<acc_t>(g.grid_w);
    acc_t* plane = grad_input + (g.batch * channels + c) * static_cast<int64_t>(height) * width;
    for (int64_t iy = 0; iy < g.grid_h; ++iy) {
      const acc_t y = g.start_h + static_cast<acc_t>(ph) * g.bin_h +
                      (static_cast<acc_t>(iy) + acc_t(0.5)) * g.bin_h / static_cast<acc_t>(g.grid_h);
      for (int64_t ix = 0; ix < g.grid_w; ++ix) {
        const acc_t x = g.start_w + static_cast<acc_t>(pw) * g.bin_w +
                        (static_cast<acc_t>(ix) + acc_t(0.5)) * g.bin_w / static_cast<acc_t>(g.grid_w);
        const Bilinear<acc_t> s = bilinear(height, width, y, x);
        if (!s.valid) {
          continue;
        }
        acc_t* row_low = plane + static_cast<int64_t>(s.y_low) * width;
        acc_t* row_high = plane + static_cast<int64_t>(s.y_high) * width;
        gpuAtomicAdd(row_low + s.x_low, grad_bin * s.w_ll / count);
        gpuAtomicAdd(row_low + s.x_high, grad_bin * s.w_lh / count);
        gpuAtomicAdd(row_high + s.x_low, grad_bin * s.w_hl / count);
        gpuAtomicAdd(row_high + s.x_high, grad_bin * s.w_hh / count);
      }
    }
  }
}

// sampling_ratio as the kernels take it: positive values have passed check_fixed_grid (so fit an int), the
// others all mean "adaptive".
int kernel_sampling_ratio(int64_t sampling_ratio) {
  return sampling_ratio > 0 ? static_cast<int>(sampling_ratio) : 0;
}

// A positive sampling_ratio gives every RoI the same grid: checked here, as the CPU kernel does for its first RoI.
void check_fixed_grid(int64_t sampling_ratio, int64_t pooled_height, int64_t pooled_width) {
  TORCH_CHECK(sampling_ratio <= 0 || checks::roi_align_grid_fits(sampling_ratio, sampling_ratio, pooled_height,
                                                                  pooled_width),
              checks::roi_align_grid_message(0, sampling_ratio, sampling_ratio));
}

// The kernels with the index type that `total` needs (cuda::fits_uint32_index).
template <typename scalar_t, typename index_t>
void launch_forward(int64_t total, const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                    int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned,
                    at::Tensor& output, unsigned long long* record, cudaStream_t stream) {
  using acc_t = at::opmath_type<scalar_t>;
  roi_align_forward_kernel<scalar_t, index_t><<<cuda::grid_for(total), cuda::kThreadsPerBlock, 0, stream>>>(
      static_cast<index_t>(total), input.const_data_ptr<scalar_t>(), rois.const_data_ptr<scalar_t>(),
      static_cast<acc_t>(spatial_scale), static_cast<int>(input.size(0)), static_cast<int>(input.size(1)),
      static_cast<int>(input.size(2)), static_cast<int>(input.size(3)), static_cast<int>(pooled_height),
      static_cast<int>(pooled_width), kernel_sampling_ratio(sampling_ratio), aligned,
      output.mutable_data_ptr<scalar_t>(), record);
}

template <typename scalar_t, typename index_t>
void launch_backward(int64_t total, const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                     const int64_t (&shape)[4], int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                     bool aligned, at::Tensor& acc, unsigned long long* record, cudaStream_t stream) {
  using acc_t = at::opmath_type<scalar_t>;
  roi_align_backward_kernel<scalar_t, index_t><<<cuda::grid_for(total), cuda::kThreadsPerBlock, 0, stream>>>(
      static_cast<index_t>(total), grad.const_data_ptr<scalar_t>(), rois.const_data_ptr<scalar_t>(),
      static_cast<acc_t>(spatial_scale), static_cast<int>(shape[0]), static_cast<int>(shape[1]),
      static_cast<int>(shape[2]), static_cast<int>(shape[3]), static_cast<int>(pooled_height),
      static_cast<int>(pooled_width), kernel_sampling_ratio(sampling_ratio), aligned, acc.mutable_data_ptr<acc_t>(),
      record);
}

at::Tensor roi_align_forward_cuda(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                  int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  checks::check_roi_forward("roi_align", input, rois, spatial_scale, pooled_height, pooled_width,
                            c10::DeviceType::CUDA);
  cuda::check_int_dims("roi_align", input.sizes(), pooled_height, pooled_width);
  c10::cuda::CUDAGuard device_guard(input.device());
  const int64_t num_rois = rois.size(0);
  const int64_t channels = input.size(1);
  const int64_t total = num_rois * channels * pooled_height * pooled_width;
  if (total == 0) {  // nothing to compute (the CPU kernel checks nothing more either)
    return at::zeros({num_rois, channels, pooled_height, pooled_width}, input.options());
  }
  check_fixed_grid(sampling_ratio, pooled_height, pooled_width);
  // An empty map (B, H or W = 0) still runs the kernel: it checks the RoIs and writes zeros.
  unsigned long long* record = cuda::async_error_record(input.device().index());
  at::Tensor output = at::empty({num_rois, channels, pooled_height, pooled_width}, input.options());
  const at::Tensor input_c = input.contiguous();
  const at::Tensor rois_c = rois.contiguous();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_forward_cuda", [&] {
    if (cuda::fits_uint32_index(total)) {
      launch_forward<scalar_t, uint32_t>(total, input_c, rois_c, spatial_scale, pooled_height, pooled_width,
                                         sampling_ratio, aligned, output, record, stream);
    } else {
      launch_forward<scalar_t, int64_t>(total, input_c, rois_c, spatial_scale, pooled_height, pooled_width,
                                        sampling_ratio, aligned, output, record, stream);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return output;
}

at::Tensor roi_align_backward_cuda(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                   int64_t pooled_height, int64_t pooled_width, int64_t batch_size, int64_t channels,
                                   int64_t height, int64_t width, int64_t sampling_ratio, bool aligned) {
  checks::check_roi_backward("roi_align_backward", grad, rois, spatial_scale, pooled_height, pooled_width, batch_size,
                             channels, height, width, c10::DeviceType::CUDA);
  cuda::check_int_dims("roi_align_backward", {batch_size, channels, height, width}, pooled_height, pooled_width);
  c10::cuda::CUDAGuard device_guard(grad.device());
  const int64_t total = grad.numel();
  if (total == 0 || batch_size * channels * height * width == 0) {
    return at::zeros({batch_size, channels, height, width}, grad.options());
  }
  check_fixed_grid(sampling_ratio, pooled_height, pooled_width);
  unsigned long long* record = cuda::async_error_record(grad.device().index());
  // Atomic adds in a different order from run to run.
  at::globalContext().alertNotDeterministic("roi_align_backward_cuda");
  const at::Tensor grad_c = grad.contiguous();
  const at::Tensor rois_c = rois.contiguous();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  at::Tensor grad_input;
  const int64_t grad_input_shape[4] = {batch_size, channels, height, width};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_align_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    // [B, C, H, W] in the op-math dtype (float for half/bfloat16), so atomics accumulate at full precision.
    at::Tensor acc = at::zeros({batch_size, channels, height, width},
                               grad.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    if (cuda::fits_uint32_index(total)) {
      launch_backward<scalar_t, uint32_t>(total, grad_c, rois_c, spatial_scale, grad_input_shape, pooled_height,
                                          pooled_width, sampling_ratio, aligned, acc, record, stream);
    } else {
      launch_backward<scalar_t, int64_t>(total, grad_c, rois_c, spatial_scale, grad_input_shape, pooled_height,
                                         pooled_width, sampling_ratio, aligned, acc, record, stream);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    grad_input = acc.scalar_type() == grad.scalar_type() ? acc : acc.to(grad.scalar_type());
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(detection, CUDA, m) {
  m.impl("roi_align", TORCH_FN(roi_align_forward_cuda));
  m.impl("_roi_align_backward", TORCH_FN(roi_align_backward_cuda));
}

}  // namespace ops
}  // namespace detection
