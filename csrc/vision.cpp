// The one binding file: the schemas of the toolkit's ops, `torch.ops.detection.*`.
// Kernels register themselves per device in csrc/cpu/*.cpp and csrc/cuda/*.cu (TORCH_LIBRARY_IMPL);
// autograd and fake (meta) implementations are registered from Python in detection/ops/_register.py.
#include <Python.h>
#include <torch/library.h>

#ifdef WITH_CUDA
namespace detection {
namespace cuda {
void check_async_errors_all_devices();  // csrc/cuda/async_error.cu
}  // namespace cuda
}  // namespace detection
#endif

namespace {

// Raises the first data error a CUDA RoI kernel recorded (a batch index outside [0, B), a RoIAlign grid beyond its
// bound, a RoIPool argmax outside the map) after synchronising the devices; nothing in a CPU-only build.
void check_async_errors() {
#ifdef WITH_CUDA
  detection::cuda::check_async_errors_all_devices();
#endif
}

}  // namespace

// `import detection._C` loads this shared object, which runs the static registrations below.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "detection compiled ops", -1, nullptr};
  return PyModule_Create(&module_def);
}

TORCH_LIBRARY(detection, m) {
  // Sizes are SymInt so that torch.compile / torch.export trace them symbolically (dynamic shapes).
  // boxes: [N, 4] xyxy, scores: [N]; returns int64 indices of kept boxes sorted by decreasing score.
  m.def("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor");
  // nms on each category of idxs [N] (integers) alone, in one call: indices by decreasing score, equal scores by
  // lower index (the categories' kept boxes merged in one stable score order).
  m.def("batched_nms(Tensor dets, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor");
  // Soft-NMS (Bodla et al. 2017; method 1 linear, 2 gaussian), per category of idxs when given: (kept indices,
  // their decayed scores), by decreasing decayed score (csrc/cpu/soft_nms_kernel.cpp).
  m.def(
      "soft_nms(Tensor dets, Tensor scores, Tensor? idxs, int method, float iou_threshold, float sigma, "
      "float min_score) -> (Tensor, Tensor)");
  // input: [B, C, H, W]; rois: [K, 5] (batch_index, x1, y1, x2, y2); returns [K, C, pooled_height, pooled_width].
  m.def(
      "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
      "int sampling_ratio, bool aligned) -> Tensor");
  m.def(
      "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, int sampling_ratio, "
      "bool aligned) -> Tensor");
  // returns (output [K, C, ph, pw], argmax [K, C, ph, pw] int32 flat index into H*W, -1 for empty bins).
  m.def(
      "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) "
      "-> (Tensor, Tensor)");
  m.def(
      "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, SymInt pooled_height, "
      "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor");
  // Winograd F(4x4, 3x3) transforms of the fast inference path (CPU only; csrc/cpu/winograd_kernel.cpp):
  // input [N, C, H, W] -> [36, tile_end - tile_begin, C]; products [36, T, K] -> tiles of out [N, K, H, W]
  // (channels_last or contiguous) from tile_begin on (+ bias, then relu).
  m.def("_winograd_f4x3_input(Tensor input, int tile_begin, int tile_end) -> Tensor");
  m.def("_winograd_f4x3_output_(Tensor(a!) out, Tensor products, Tensor? bias, int tile_begin, bool relu) -> ()");
  // No tensor arguments: one kernel for every backend (csrc/cuda/async_error.cuh explains the records).
  m.def("_check_async_errors() -> ()", &check_async_errors);
}
