// Data checks of the CUDA RoI kernels without a device sync: an asynchronous error record per device.
//
// The CPU kernels reject RoIs whose batch index is outside [0, B), RoIAlign grids beyond the bound of
// csrc/common/op_checks.h and RoIPool argmax values outside [-1, H * W) before computing anything. Their CUDA
// twins cannot read the data on the host without waiting for the GPU, so a kernel that meets such a value leaves
// that RoI's output zero (and routes it no gradient: nothing outside the feature map is ever read or written),
// and the first such event is written into a small device-memory record (one atomicCAS claims it). The record is
// fetched and raised as a RuntimeError with the CPU kernel's message, plus a note that it was found
// asynchronously:
//   - by every CUDA NMS call, after the device-to-host copy it makes anyway (the detector runs one per forward,
//     so a bad batch index of iteration i is reported by iteration i + 1 at the latest), for kernels launched
//     earlier on the same stream;
//   - by `torch.ops.detection._check_async_errors()` (detection.ops.check_async_errors()), which synchronises every
//     device that has a record and raises the first error found.
// Raising clears the record.
#pragma once

#include <c10/core/Device.h>
#include <c10/macros/Macros.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace detection {
namespace cuda {

// What a kernel found (word 0 of the record; 0 = nothing).
enum AsyncErrorCode : unsigned long long {
  kAsyncBadBatchIndex = 1,     // a: batch size, value: the batch index found
  kAsyncTooManySamples = 2,    // a, b: grid_h, grid_w of a RoIAlign RoI
  kAsyncArgmaxOutside = 3,     // a: H * W, value: the argmax found
};

// Which op met it (word 1).
enum AsyncErrorOp : unsigned long long {
  kOpRoiAlign = 0,
  kOpRoiAlignBackward = 1,
  kOpRoiPool = 2,
  kOpRoiPoolBackward = 3,
};

// Record layout, in 64-bit words: code, op, roi index, value (double bits), a, b.
constexpr int kAsyncRecordWords = 6;

// The device record of `device`, allocated (and zeroed) on first use; never freed.
unsigned long long* async_error_record(c10::DeviceIndex device);

// Copies the record of `device` into its pinned host mirror on `stream` (asynchronous; nothing for a device that
// never had a record). Once the caller has synchronised `stream` for its own reasons,
// raise_fetched_async_error raises the error the mirror holds, if any, and clears the record.
void enqueue_async_error_fetch(c10::DeviceIndex device, cudaStream_t stream);
void raise_fetched_async_error(c10::DeviceIndex device, cudaStream_t stream);

// Synchronises every device with a record and raises the first recorded error (the `_check_async_errors` op).
void check_async_errors_all_devices();

// Device side: records the first error of the process on this device; later ones are dropped.
__device__ __forceinline__ void report_async_error(unsigned long long* record, unsigned long long code,
                                                   unsigned long long op, int64_t roi, double value, int64_t a,
                                                   int64_t b) {
  if (*reinterpret_cast<volatile unsigned long long*>(record) != 0ULL) {
    return;  // already claimed: spare the atomic
  }
  if (atomicCAS(record, 0ULL, code) == 0ULL) {
    record[1] = op;
    record[2] = static_cast<unsigned long long>(roi);
    record[3] = static_cast<unsigned long long>(__double_as_longlong(value));
    record[4] = static_cast<unsigned long long>(a);
    record[5] = static_cast<unsigned long long>(b);
  }
}

}  // namespace cuda
}  // namespace detection
