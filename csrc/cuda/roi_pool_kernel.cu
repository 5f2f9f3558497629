// RoIPool (Fast R-CNN) forward and backward on CUDA, with torchvision.ops.roi_pool's semantics.
//
//   input:  [B, C, H, W]
//   rois:   [K, 5] rows (batch_index, x1, y1, x2, y2), xyxy in image coordinates.
//   output: [K, C, pooled_height, pooled_width], the max over each bin;
//   argmax: [K, C, pooled_height, pooled_width] int32, flat index h * W + w of the max in its (batch, channel)
//           plane, -1 for an empty bin (whose output is 0).
// The RoI corners are rounded to feature-map cells (round(x * spatial_scale), half away from zero), the RoI is at
// least 1x1 cell (inclusive ends: size = end - start + 1), and bin (ph, pw) covers rows
// [floor(ph * bin_h), ceil((ph + 1) * bin_h)) offset by the RoI start and clipped to the map.
// RoIs whose batch index is outside [0, B) give empty bins, and argmax values outside [-1, H * W) no gradient; both
// are reported through the device's asynchronous error record (async_error.cuh) with the CPU kernel's message.
//
// The backward adds grad[k, c, ph, pw] to grad_input[b, c] at argmax, with atomics into an op-math buffer
// (float for half/bfloat16) cast back at the end.
//
// Launch as torchvision's (512 threads per block, at most 4096 blocks, one thread per element); the flat index is
// decomposed in 32-bit arithmetic whenever the tensor allows (see roi_align_kernel.cu: 64-bit divisions are
// emulated in software on a GPU).
#include <ATen/core/Tensor.h>
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>

#include "async_error.cuh"
#include "common/op_checks.h"
#include "cuda_helpers.cuh"

namespace detection {
namespace ops {
namespace {

// Batch index of a RoI, truncated like an (int) cast, or -1 when outside [0, B) (or NaN).
template <typename acc_t>
__device__ __forceinline__ int64_t roi_batch(acc_t b, int batch_size) {
  return (b > acc_t(-1) && b < static_cast<acc_t>(batch_size)) ? static_cast<int64_t>(b) : -1;
}

// round(v) (half away from zero) as an integer, saturated far outside any feature map and NaN -> 0, so that
// pathological coordinates cannot overflow the integer arithmetic (the CPU kernel does the same).
template <typename acc_t>
__device__ __forceinline__ int64_t rounded_coord(acc_t v) {
  constexpr acc_t kLimit = acc_t(int64_t(1) << 40);
  const acc_t r = round(v);
  if (!(r == r)) {
    return 0;
  }
  return static_cast<int64_t>(min(max(r, -kLimit), kLimit));
}

// v clamped to [0, size].
__device__ __forceinline__ int clip(int64_t v, int size) {
  return static_cast<int>(min(max(v, int64_t(0)), static_cast<int64_t>(size)));
}

// One thread per output element (n, c, ph, pw) of output / argmax [K, C, ph, pw].
template <typename scalar_t, typename index_t>
__global__ void roi_pool_forward_kernel(index_t total, const scalar_t* __restrict__ input,
                                        const scalar_t* __restrict__ rois, at::opmath_type<scalar_t> spatial_scale,
                                        int batch_size, int channels, int height, int width, int pooled_height,
                                        int pooled_width, scalar_t* __restrict__ output,
                                        int32_t* __restrict__ argmax, unsigned long long* record) {
  using acc_t = at::opmath_type<scalar_t>;
  DETECTION_CUDA_KERNEL_LOOP_T(index_t, index, total) {
    const cuda::BinIndex<index_t> e = cuda::bin_index(index, channels, pooled_height, pooled_width);
    const int64_t n = static_cast<int64_t>(e.n);
    const int c = e.c, ph = e.ph, pw = e.pw;

    const scalar_t* roi = rois + n * 5;
    const int64_t batch = roi_batch(static_cast<acc_t>(roi[0]), batch_size);
    if (batch < 0 && c == 0 && ph == 0 && pw == 0) {
      cuda::report_async_error(record, cuda::kAsyncBadBatchIndex, cuda::kOpRoiPool, n, static_cast<double>(roi[0]),
                               batch_size, 0);
    }
    const int64_t roi_start_w = rounded_coord(static_cast<acc_t>(roi[1]) * spatial_scale);
    const int64_t roi_start_h = rounded_coord(static_cast<acc_t>(roi[2]) * spatial_scale);
    const int64_t roi_end_w = rounded_coord(static_cast<acc_t>(roi[3]) * spatial_scale);
    const int64_t roi_end_h = rounded_coord(static_cast<acc_t>(roi[4]) * spatial_scale);
    // Malformed RoIs are forced to 1x1 cells.
    const int64_t roi_w = max(roi_end_w - roi_start_w + 1, int64_t(1));
    const int64_t roi_h = max(roi_end_h - roi_start_h + 1, int64_t(1));
    const acc_t bin_h = static_cast<acc_t>(roi_h) / static_cast<acc_t>(pooled_height);
    const acc_t bin_w = static_cast<acc_t>(roi_w) / static_cast<acc_t>(pooled_width);

    // Bin (ph, pw) covers rows [hstart, hend) and columns [wstart, wend), clipped to the map.
    const int hstart = clip(static_cast<int64_t>(floor(static_cast<acc_t>(ph) * bin_h)) + roi_start_h, height);
    const int hend = clip(static_cast<int64_t>(ceil(static_cast<acc_t>(ph + 1) * bin_h)) + roi_start_h, height);
    const int wstart = clip(static_cast<int64_t>(floor(static_cast<acc_t>(pw) * bin_w)) + roi_start_w, width);
    const int wend = clip(static_cast<int64_t>(ceil(static_cast<acc_t>(pw + 1) * bin_w)) + roi_start_w, width);
    const bool empty = hend <= hstart || wend <= wstart || batch < 0;

    // Like torchvision: values must exceed -FLT_MAX to be picked, an empty bin gives 0 and argmax -1.
    acc_t best = empty ? acc_t(0) : static_cast<acc_t>(-FLT_MAX);
    int32_t best_idx = -1;
    if (!empty) {
      const scalar_t* plane = input + (batch * channels + c) * static_cast<int64_t>(height) * width;
      for (int h = hstart; h < hend; ++h) {
        for (int w = wstart; w < wend; ++w) {
          const int idx = h * width + w;
          const acc_t v = static_cast<acc_t>(plane[idx]);
          if (v > best) {
            best = v;
            best_idx = idx;
          }
        }
      }
    }
    output[index] = static_cast<scalar_t>(best);
    argmax[index] = best_idx;
  }
}

// One thread per element of grad / argmax [K, C, ph, pw] (contiguous); scatters into grad_input [B, C, H, W].
template <typename scalar_t, typename index_t>
__global__ void roi_pool_backward_kernel(index_t total, const scalar_t* __restrict__ grad,
                                         const scalar_t* __restrict__ rois, const int32_t* __restrict__ argmax,
                                         int batch_size, int channels, int height, int width, int pooled_height,
                                         int pooled_width, at::opmath_type<scalar_t>* __restrict__ grad_input,
                                         unsigned long long* record) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t plane_size = static_cast<int64_t>(height) * width;
  DETECTION_CUDA_KERNEL_LOOP_T(index_t, index, total) {
    const int32_t idx = argmax[index];
    const cuda::BinIndex<index_t> e = cuda::bin_index(index, channels, pooled_height, pooled_width);
    const int64_t n = static_cast<int64_t>(e.n);
    const int64_t batch = roi_batch(static_cast<acc_t>(rois[n * 5]), batch_size);
    if (batch < 0) {  // reported by the thread of the RoI's first element, as the CPU kernel rejects it
      if (e.c == 0 && e.ph == 0 && e.pw == 0) {
        cuda::report_async_error(record, cuda::kAsyncBadBatchIndex, cuda::kOpRoiPoolBackward, n,
                                 static_cast<double>(rois[n * 5]), batch_size, 0);
      }
      continue;
    }
    if (idx == -1) {  // empty bin: no gradient
      continue;
    }
    if (idx < 0 || idx >= plane_size) {  // a foreign argmax: no gradient
      cuda::report_async_error(record, cuda::kAsyncArgmaxOutside, cuda::kOpRoiPoolBackward, n,
                               static_cast<double>(idx), plane_size, 0);
      continue;
    }
    gpuAtomicAdd(grad_input + (batch * channels + e.c) * plane_size + idx, static_cast<acc_t>(grad[index]));
  }
}

// The kernels with the index type that `total` needs (cuda::fits_uint32_index).
template <typename scalar_t, typename index_t>
void launch_forward(int64_t total, const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                    int64_t pooled_height, int64_t pooled_width, at::Tensor& output, at::Tensor& argmax,
                    unsigned long long* record, cudaStream_t stream) {
  using acc_t = at::opmath_type<scalar_t>;
  roi_pool_forward_kernel<scalar_t, index_t><<<cuda::grid_for(total), cuda::kThreadsPerBlock, 0, stream>>>(
      static_cast<index_t>(total), input.const_data_ptr<scalar_t>(), rois.const_data_ptr<scalar_t>(),
      static_cast<acc_t>(spatial_scale), static_cast<int>(input.size(0)), static_cast<int>(input.size(1)),
      static_cast<int>(input.size(2)), static_cast<int>(input.size(3)), static_cast<int>(pooled_height),
      static_cast<int>(pooled_width), output.mutable_data_ptr<scalar_t>(), argmax.mutable_data_ptr<int32_t>(),
      record);
}

template <typename scalar_t, typename index_t>
void launch_backward(int64_t total, const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax,
                     const int64_t (&shape)[4], int64_t pooled_height, int64_t pooled_width, at::Tensor& acc,
                     unsigned long long* record, cudaStream_t stream) {
  using acc_t = at::opmath_type<scalar_t>;
  roi_pool_backward_kernel<scalar_t, index_t><<<cuda::grid_for(total), cuda::kThreadsPerBlock, 0, stream>>>(
      static_cast<index_t>(total), grad.const_data_ptr<scalar_t>(), rois.const_data_ptr<scalar_t>(),
      argmax.const_data_ptr<int32_t>(), static_cast<int>(shape[0]), static_cast<int>(shape[1]),
      static_cast<int>(shape[2]), static_cast<int>(shape[3]), static_cast<int>(pooled_height),
      static_cast<int>(pooled_width), acc.mutable_data_ptr<acc_t>(), record);
}

std::tuple<at::Tensor, at::Tensor> roi_pool_forward_cuda(const at::Tensor& input, const at::Tensor& rois,
                                                         double spatial_scale, int64_t pooled_height,
                                                         int64_t pooled_width) {
  checks::check_roi_forward("roi_pool", input, rois, spatial_scale, pooled_height, pooled_width,
                            c10::DeviceType::CUDA);
  checks::check_roi_pool_plane("roi_pool", input.size(2), input.size(3));
  cuda::check_int_dims("roi_pool", input.sizes(), pooled_height, pooled_width);

  c10::cuda::CUDAGuard device_guard(input.device());
  const int64_t num_rois = rois.size(0);
  const int64_t channels = input.size(1);
  const int64_t total = num_rois * channels * pooled_height * pooled_width;
  if (total == 0) {  // nothing to compute (the CPU kernel checks nothing more either)
    return {at::zeros({num_rois, channels, pooled_height, pooled_width}, input.options()),
            at::full({num_rois, channels, pooled_height, pooled_width}, -1, input.options().dtype(at::kInt))};
  }
  // An empty map (B, H or W = 0) still runs the kernel: it checks the RoIs and gives empty bins.
  unsigned long long* record = cuda::async_error_record(input.device().index());
  at::Tensor output = at::empty({num_rois, channels, pooled_height, pooled_width}, input.options());
  at::Tensor argmax = at::empty({num_rois, channels, pooled_height, pooled_width}, input.options().dtype(at::kInt));
  const at::Tensor input_c = input.contiguous();
  const at::Tensor rois_c = rois.contiguous();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_pool_forward_cuda", [&] {
    if (cuda::fits_uint32_index(total)) {
      launch_forward<scalar_t, uint32_t>(total, input_c, rois_c, spatial_scale, pooled_height, pooled_width, output,
                                         argmax, record, stream);
    } else {
      launch_forward<scalar_t, int64_t>(total, input_c, rois_c, spatial_scale, pooled_height, pooled_width, output,
                                        argmax, record, stream);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {output, argmax};
}

at::Tensor roi_pool_backward_cuda(const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax,
                                  double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                                  int64_t batch_size, int64_t channels, int64_t height, int64_t width) {
  checks::check_roi_backward("roi_pool_backward", grad, rois, spatial_scale, pooled_height, pooled_width, batch_size,
                             channels, height, width, c10::DeviceType::CUDA);
  checks::check_roi_pool_argmax("roi_pool_backward", argmax, grad, c10::DeviceType::CUDA);
  cuda::check_int_dims("roi_pool_backward", {batch_size, channels, height, width}, pooled_height, pooled_width);

  c10::cuda::CUDAGuard device_guard(grad.device());
  const int64_t total = grad.numel();
  if (total == 0 || batch_size * channels * height * width == 0) {
    return at::zeros({batch_size, channels, height, width}, grad.options());
  }
  unsigned long long* record = cuda::async_error_record(grad.device().index());
  at::globalContext().alertNotDeterministic("roi_pool_backward_cuda");
  const at::Tensor grad_c = grad.contiguous();
  const at::Tensor rois_c = rois.contiguous();
  const at::Tensor argmax_c = argmax.contiguous();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  at::Tensor grad_input;
  const int64_t grad_input_shape[4] = {batch_size, channels, height, width};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_pool_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    // [B, C, H, W] in the op-math dtype (float for half/bfloat16), so atomics accumulate at full precision.
    at::Tensor acc = at::zeros({batch_size, channels, height, width},
                               grad.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    if (cuda::fits_uint32_index(total)) {
      launch_backward<scalar_t, uint32_t>(total, grad_c, rois_c, argmax_c, grad_input_shape, pooled_height,
                                          pooled_width, acc, record, stream);
    } else {
      launch_backward<scalar_t, int64_t>(total, grad_c, rois_c, argmax_c, grad_input_shape, pooled_height,
                                         pooled_width, acc, record, stream);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    grad_input = acc.scalar_type() == grad.scalar_type() ? acc : acc.to(grad.scalar_type());
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(detection, CUDA, m) {
  m.impl("roi_pool", TORCH_FN(roi_pool_forward_cuda));
  m.impl("_roi_pool_backward", TORCH_FN(roi_pool_backward_cuda));
}

}  // namespace ops
}  // namespace detection
