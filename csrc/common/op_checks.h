// Argument checks shared by the CPU (csrc/cpu) and CUDA (csrc/cuda) kernels, so that both devices reject the
// same bad inputs with the same messages ("<op>: <what> ..."), differing only in the device they name. Both devices
// take float16 / bfloat16 / float32 / float64 and compute reduced-precision inputs in float32 (the op-math type).
//
// Conventions: input / grad_input are [B, C, H, W]; rois are [K, 5] rows (batch_index, x1, y1, x2, y2) in image
// coordinates; outputs are [K, C, pooled_height, pooled_width]; NMS boxes are [N, 4] xyxy with scores [N].
// Checks of tensor *values* (batch indices, RoIAlign's sampling grid, RoIPool's argmax) need the data: the CPU
// kernels make them synchronously, the CUDA kernels on the device (csrc/cuda/async_error.cuh).
// Kept lean (no <ATen/ATen.h>) because every .cu file includes it.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

namespace detection {
namespace checks {

inline const char* device_name(c10::DeviceType device) {
  return device == c10::DeviceType::CUDA ? "CUDA" : "CPU";
}

inline bool dtype_supported(c10::ScalarType t, c10::DeviceType /*device*/) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

inline const char* dtype_names(c10::DeviceType /*device*/) {
  return "float16, bfloat16, float32 or float64";
}

// float16 / bfloat16: computed in float32 (their op-math type), results rounded once to the input dtype.
inline bool is_reduced_precision(c10::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16;
}

inline void check_device(const char* op, const char* name, const at::Tensor& t, c10::DeviceType device) {
  TORCH_CHECK(t.device().type() == device, op, ": ", name, " must be a ", device_name(device), " tensor, got one on ",
              t.device());
}

inline void check_float_dtype(const char* op, const char* name, const at::Tensor& t, c10::DeviceType device) {
  TORCH_CHECK(dtype_supported(t.scalar_type(), device), op, ": ", name, " must be ", dtype_names(device), " on ",
              device_name(device), ", got ", t.scalar_type());
}

// `b` must live on the same device (index included) and have the same dtype as `a`.
inline void check_same_device_and_dtype(const char* op, const char* a_name, const at::Tensor& a, const char* b_name,
                                        const at::Tensor& b) {
  TORCH_CHECK(a.device() == b.device(), op, ": ", a_name, " is on ", a.device(), " but ", b_name, " is on ",
              b.device());
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), op, ": ", a_name, " (", a.scalar_type(), ") and ", b_name, " (",
              b.scalar_type(), ") must have the same dtype");
}

inline void check_rois(const char* op, const at::Tensor& rois, c10::DeviceType device) {
  check_device(op, "rois", rois, device);
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, op,
              ": rois must be a [K, 5] tensor (batch_index, x1, y1, x2, y2), got shape ", rois.sizes());
  check_float_dtype(op, "rois", rois, device);
}

inline void check_pooled_size(const char* op, int64_t pooled_height, int64_t pooled_width) {
  TORCH_CHECK(pooled_height > 0 && pooled_width > 0, op, ": output size must be positive, got (", pooled_height,
              ", ", pooled_width, ")");
}

inline void check_spatial_scale(const char* op, double spatial_scale) {
  TORCH_CHECK(std::isfinite(spatial_scale) && spatial_scale > 0, op,
              ": spatial_scale must be a positive finite number, got ", spatial_scale);
}

// A forward call: input [B, C, H, W] and rois [K, 5] of the same floating dtype, on the same `device`.
inline void check_roi_forward(const char* op, const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                              int64_t pooled_height, int64_t pooled_width, c10::DeviceType device) {
  check_device(op, "input", input, device);
  TORCH_CHECK(input.dim() == 4, op, ": input must be a 4-D [B, C, H, W] tensor, got shape ", input.sizes());
  check_rois(op, rois, device);
  check_float_dtype(op, "input", input, device);
  check_same_device_and_dtype(op, "input", input, "rois", rois);
  check_pooled_size(op, pooled_height, pooled_width);
  check_spatial_scale(op, spatial_scale);
}

// A backward call: grad [K, channels, pooled_height, pooled_width] matching rois [K, 5] in device and dtype, and a
// non-negative input shape.
inline void check_roi_backward(const char* op, const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                               int64_t pooled_height, int64_t pooled_width, int64_t batch_size, int64_t channels,
                               int64_t height, int64_t width, c10::DeviceType device) {
  check_device(op, "grad", grad, device);
  check_rois(op, rois, device);
  check_float_dtype(op, "grad", grad, device);
  check_same_device_and_dtype(op, "grad", grad, "rois", rois);
  check_pooled_size(op, pooled_height, pooled_width);
  check_spatial_scale(op, spatial_scale);
  TORCH_CHECK(batch_size >= 0 && channels >= 0 && height >= 0 && width >= 0, op,
              ": input shape must be non-negative, got [", batch_size, ", ", channels, ", ", height, ", ", width, "]");
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == rois.size(0) && grad.size(1) == channels &&
                  grad.size(2) == pooled_height && grad.size(3) == pooled_width,
              op, ": grad must be [K, C, pooled_height, pooled_width] = [", rois.size(0), ", ", channels, ", ",
              pooled_height, ", ", pooled_width, "], got shape ", grad.sizes());
}

// RoIPool's forward returns an int32 argmax (flat h * W + w): H * W must fit.
inline void check_roi_pool_plane(const char* op, int64_t height, int64_t width) {
  TORCH_CHECK(height * width <= std::numeric_limits<int32_t>::max(), op, ": H * W = ", height * width,
              " does not fit the int32 argmax");
}

// RoIPool's backward: argmax [K, C, ph, pw] int32 beside grad, on the same device.
inline void check_roi_pool_argmax(const char* op, const at::Tensor& argmax, const at::Tensor& grad,
                                  c10::DeviceType device) {
  check_device(op, "argmax", argmax, device);
  TORCH_CHECK(argmax.device() == grad.device(), op, ": argmax is on ", argmax.device(), " but grad is on ",
              grad.device());
  TORCH_CHECK(argmax.scalar_type() == at::kInt, op, ": argmax must be int32, got ", argmax.scalar_type());
  TORCH_CHECK(argmax.sizes() == grad.sizes(), op, ": argmax shape ", argmax.sizes(), " must match grad shape ",
              grad.sizes());
}

// NMS (and the class-wise / soft variants, named by `op`): boxes [N, 4] and scores [N] of one supported floating
// dtype on `device`; N < 2^31.
inline void check_nms(const char* op, const at::Tensor& dets, const at::Tensor& scores, c10::DeviceType device) {
  TORCH_CHECK(dets.device().type() == device && scores.device().type() == device, op, ": boxes and scores must be ",
              device_name(device), " tensors, got ", dets.device(), " and ", scores.device());
  TORCH_CHECK(dets.device() == scores.device(), op, ": boxes are on ", dets.device(), " but scores are on ",
              scores.device());
  TORCH_CHECK(dets.dim() == 2 && dets.size(1) == 4, op, ": boxes must be a [N, 4] tensor (x1, y1, x2, y2), got shape ",
              dets.sizes());
  TORCH_CHECK(scores.dim() == 1, op, ": scores must be a 1-D [N] tensor, got shape ", scores.sizes());
  TORCH_CHECK(dets.size(0) == scores.size(0), op, ": boxes and scores must have the same length, got ", dets.size(0),
              " and ", scores.size(0));
  TORCH_CHECK(dtype_supported(dets.scalar_type(), device), op, ": boxes must be ", dtype_names(device), " on ",
              device_name(device), ", got ", dets.scalar_type());
  TORCH_CHECK(dets.scalar_type() == scores.scalar_type(), op, ": boxes (", dets.scalar_type(), ") and scores (",
              scores.scalar_type(), ") must have the same dtype");
  TORCH_CHECK(dets.size(0) <= std::numeric_limits<int32_t>::max(), op, ": too many boxes (", dets.size(0), ")");
}

inline void check_nms(const at::Tensor& dets, const at::Tensor& scores, c10::DeviceType device) {
  check_nms("nms", dets, scores, device);
}

// Class-wise NMS: idxs [N], an integer category per box, beside boxes and scores.
inline void check_nms_idxs(const char* op, const at::Tensor& dets, const at::Tensor& idxs) {
  TORCH_CHECK(idxs.device() == dets.device(), op, ": idxs are on ", idxs.device(), " but boxes are on ",
              dets.device());
  TORCH_CHECK(idxs.dim() == 1 && idxs.size(0) == dets.size(0), op, ": idxs must be a 1-D [N] tensor of N = ",
              dets.size(0), " categories, got shape ", idxs.sizes());
  TORCH_CHECK(c10::isIntegralType(idxs.scalar_type(), /*includeBool=*/false), op,
              ": idxs must be an integer tensor (int64, int32, ...), got ", idxs.scalar_type());
}

// Soft-NMS (Bodla et al. 2017): method 1 = linear, 2 = gaussian (the reference's codes; hard NMS is `nms`).
constexpr int64_t kSoftNmsLinear = 1;
constexpr int64_t kSoftNmsGaussian = 2;

inline void check_soft_nms_args(int64_t method, double iou_threshold, double sigma, double min_score) {
  TORCH_CHECK(method == kSoftNmsLinear || method == kSoftNmsGaussian,
              "soft_nms: method must be 1 (linear) or 2 (gaussian), got ", method, " (hard NMS is nms)");
  TORCH_CHECK(!std::isnan(iou_threshold), "soft_nms: iou_threshold must be a number, got ", iou_threshold);
  TORCH_CHECK(std::isfinite(sigma) && sigma > 0, "soft_nms: sigma must be a positive finite number, got ", sigma);
  TORCH_CHECK(!std::isnan(min_score), "soft_nms: min_score must be a number, got ", min_score);
}

// RoIAlign's sampling grid. Largest grid of samples one RoI may need (pooled_height * grid_h * pooled_width *
// grid_w); beyond this a RoI is so large relative to its bins that the op would run for hours (or, on a GPU,
// hang it), so it is refused with roi_align_grid_message.
constexpr int64_t kMaxRoiAlignSamples = int64_t(1) << 31;

// Samples per bin along one axis: sampling_ratio when > 0, else `ceil_ratio` = ceil(roi_size / pooled) computed in
// the kernel's arithmetic type (0 for empty or NaN sizes, saturated at kMaxRoiAlignSamples).
C10_HOST_DEVICE inline int64_t roi_align_grid(double ceil_ratio, int64_t sampling_ratio) {
  if (sampling_ratio > 0) return sampling_ratio;
  if (!(ceil_ratio > 0)) return 0;
  return ceil_ratio > static_cast<double>(kMaxRoiAlignSamples) ? kMaxRoiAlignSamples
                                                               : static_cast<int64_t>(ceil_ratio);
}

// Whether a grid_h x grid_w grid per bin, over pooled_height x pooled_width bins, stays within the bound, i.e.
// grid_h * pooled_height * grid_w * pooled_width <= kMaxRoiAlignSamples (exactly, without overflow). The usual case
// (every factor below 2^15) is one product; the divisions, costly in a GPU thread, only run beyond it.
C10_HOST_DEVICE inline bool roi_align_grid_fits(int64_t grid_h, int64_t grid_w, int64_t pooled_height,
                                                int64_t pooled_width) {
  if (grid_h == 0 || grid_w == 0) return true;
  constexpr int64_t kSmall = int64_t(1) << 15;
  if (grid_h < kSmall && grid_w < kSmall && pooled_height < kSmall && pooled_width < kSmall) {
    return (grid_h * pooled_height) * (grid_w * pooled_width) <= kMaxRoiAlignSamples;  // < 2^60: no overflow
  }
  return grid_h <= kMaxRoiAlignSamples / pooled_height && grid_w <= kMaxRoiAlignSamples / pooled_width &&
         grid_h * pooled_height <= kMaxRoiAlignSamples / (grid_w * pooled_width);
}

// The message of a RoI whose grid does not fit (raised by the CPU kernel, and by the CUDA one through its async
// error record).
inline std::string roi_align_grid_message(int64_t roi, int64_t grid_h, int64_t grid_w) {
  return c10::str("roi_align: RoI ", roi, " needs ", grid_h, " x ", grid_w,
                  " samples per bin, too many; pass a positive sampling_ratio");
}

}  // namespace checks
}  // namespace detection
