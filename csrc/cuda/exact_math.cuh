// IEEE-rounded float arithmetic that the compiler may not contract into FMAs, so that box arithmetic on the GPU
// (IoUs, Soft-NMS decays) is bit for bit the CPU kernels' (x86-64 without -mfma), and equal-to-threshold cases
// decide the same way on both devices.
#pragma once

namespace detection {
namespace cuda {

__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ double sub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }

}  // namespace cuda
}  // namespace detection
