// Host side of the asynchronous error records of the CUDA RoI kernels (see async_error.cuh).
#include "async_error.cuh"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>

#include <array>
#include <cstring>
#include <mutex>
#include <string>

#include "common/op_checks.h"

namespace detection {
namespace cuda {
namespace {

constexpr int kMaxDevices = 64;
constexpr size_t kRecordBytes = kAsyncRecordWords * sizeof(unsigned long long);

struct Slot {
  unsigned long long* device = nullptr;  // the record kernels write (device memory)
  unsigned long long* host = nullptr;    // its pinned mirror, filled by enqueue_async_error_fetch
};

std::mutex& slots_mutex() {
  static std::mutex m;
  return m;
}

// Never freed (and never destroyed: the CUDA runtime may be torn down before static destructors run).
std::array<Slot, kMaxDevices>& slots() {
  static auto* s = new std::array<Slot, kMaxDevices>();
  return *s;
}

Slot* existing_slot(c10::DeviceIndex device) {
  if (device < 0 || device >= kMaxDevices) {
    return nullptr;
  }
  std::lock_guard<std::mutex> lock(slots_mutex());
  Slot& s = slots()[device];
  return s.device != nullptr ? &s : nullptr;
}

const char* op_name(unsigned long long op) {
  switch (op) {
    case kOpRoiAlign:
      return "roi_align";
    case kOpRoiAlignBackward:
      return "roi_align_backward";
    case kOpRoiPool:
      return "roi_pool";
    case kOpRoiPoolBackward:
      return "roi_pool_backward";
    default:
      return "detection op";
  }
}

// The CPU kernel's message for the same input, and where it came from.
std::string message(const unsigned long long* w, c10::DeviceIndex device) {
  const char* op = op_name(w[1]);
  const int64_t roi = static_cast<int64_t>(w[2]);
  double value = 0;
  std::memcpy(&value, &w[3], sizeof(value));
  const int64_t a = static_cast<int64_t>(w[4]), b = static_cast<int64_t>(w[5]);
  std::string text;
  switch (w[0]) {
    case kAsyncBadBatchIndex:
      text = c10::str(op, ": rois[", roi, ", 0] = ", value, " is not a batch index in [0, ", a, ")");
      break;
    case kAsyncTooManySamples:
      text = checks::roi_align_grid_message(roi, a, b);
      break;
    case kAsyncArgmaxOutside:
      text = c10::str(op, ": argmax holds indices outside [-1, H * W = ", a, ") (", static_cast<int64_t>(value),
                      " for RoI ", roi, ")");
      break;
    default:
      text = c10::str(op, ": unknown asynchronous error code ", w[0]);
  }
  return c10::str(text, " [found on cuda:", static_cast<int>(device),
                  " by a CUDA kernel launched earlier, which left that RoI's output 0; CUDA kernels check data "
                  "asynchronously, reported at the next CUDA nms or detection.ops.check_async_errors()]");
}

}  // namespace

unsigned long long* async_error_record(c10::DeviceIndex device) {
  TORCH_CHECK(device >= 0 && device < kMaxDevices, "detection: CUDA device index ", static_cast<int>(device),
              " is out of range for the error records");
  std::lock_guard<std::mutex> lock(slots_mutex());
  Slot& s = slots()[device];
  if (s.device == nullptr) {  // once per device and process
    c10::cuda::CUDAGuard guard(device);
    void* d = nullptr;
    void* h = nullptr;
    C10_CUDA_CHECK(cudaMalloc(&d, kRecordBytes));
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device);
    C10_CUDA_CHECK(cudaMemsetAsync(d, 0, kRecordBytes, stream));
    C10_CUDA_CHECK(cudaStreamSynchronize(stream));  // zeroed before any kernel on any stream can use it
    C10_CUDA_CHECK(cudaHostAlloc(&h, kRecordBytes, cudaHostAllocDefault));
    std::memset(h, 0, kRecordBytes);
    s.host = static_cast<unsigned long long*>(h);
    s.device = static_cast<unsigned long long*>(d);
  }
  return s.device;
}

void enqueue_async_error_fetch(c10::DeviceIndex device, cudaStream_t stream) {
  Slot* s = existing_slot(device);
  if (s == nullptr) {
    return;
  }
  C10_CUDA_CHECK(cudaMemcpyAsync(s->host, s->device, kRecordBytes, cudaMemcpyDeviceToHost, stream));
}

void raise_fetched_async_error(c10::DeviceIndex device, cudaStream_t stream) {
  Slot* s = existing_slot(device);
  if (s == nullptr || s->host[0] == 0ULL) {
    return;
  }
  unsigned long long words[kAsyncRecordWords];
  std::memcpy(words, s->host, kRecordBytes);
  std::memset(s->host, 0, kRecordBytes);
  C10_CUDA_CHECK(cudaMemsetAsync(s->device, 0, kRecordBytes, stream));  // the next error can be recorded
  TORCH_CHECK(false, message(words, device));
}

void check_async_errors_all_devices() {
  for (int d = 0; d < kMaxDevices; ++d) {
    const c10::DeviceIndex device = static_cast<c10::DeviceIndex>(d);
    if (existing_slot(device) == nullptr) {
      continue;
    }
    c10::cuda::CUDAGuard guard(device);
    C10_CUDA_CHECK(cudaDeviceSynchronize());  // kernels of every stream are done
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device);
    enqueue_async_error_fetch(device, stream);
    C10_CUDA_CHECK(cudaStreamSynchronize(stream));
    raise_fetched_async_error(device, stream);
  }
}

}  // namespace cuda
}  // namespace detection
