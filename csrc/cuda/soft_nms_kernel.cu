// Soft-NMS on CUDA: one thread block per category, the CPU kernel's result (csrc/cpu/soft_nms_kernel.cpp, the
// authors' reference step for step) computed in parallel within each step.
//
//   soft_nms(boxes [N, 4], scores [N], idxs [N] or None, method, iou_threshold, sigma, min_score)
//     -> (keep int64 [M], kept_scores [M]) by decreasing decayed score (see the CPU kernel for the order)
//
// The boxes are sorted by category (stable: input order within a category, the reference's working array). Each
// block takes the categories whose first position p = blockIdx.x, blockIdx.x + gridDim.x, ... and runs the
// reference's steps on the category's slice of a working copy (boxes and scores in the op-math type, input index):
//   1. argmax of the current scores over positions i.. : the highest, the first position on ties (NaN scores are
//      skipped unless at position i itself, as the reference's `maxscore < score` scan does), a block reduction;
//   2. swap it to position i (thread 0);
//   3. decay every later box against it, in parallel (the same IEEE operations as the CPU: no FMA contraction,
//      exp() in double, the weight rounded to the op-math type), flagging those below min_score;
//   4. the reference removes a flagged box by moving the last box into its place and looking at that one next.
//      The resulting arrangement is computed directly: with k boxes left, flagged boxes before i + 1 + k are
//      holes, filled left to right by the unflagged boxes at or after i + 1 + k taken from the right end (two
//      block-wide prefix counts), which is the order the reference's moves produce.
// The positions 0 .. count-1 of the slice then hold the selected boxes in selection order, as on the CPU.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/nonzero.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>

#include "common/op_checks.h"
#include "cuda_helpers.cuh"
#include "exact_math.cuh"

namespace detection {
namespace ops {
namespace {

using cuda::add_rn;
using cuda::div_rn;
using cuda::mul_rn;
using cuda::sub_rn;

constexpr int kSoftThreads = 256;
constexpr int kWarps = kSoftThreads / 32;
constexpr int kMaxSoftBlocks = 1024;

// The working arrays of all categories, in class-major order (a category's slice is contiguous).
template <typename acc_t>
struct Work {
  acc_t* boxes;      // [N, 4]
  acc_t* scores;     // [N]
  int64_t* index;    // [N] input row
  uint8_t* flagged;  // [N] below min_score in the current step
  int* holes;        // [N] scratch: positions of the holes, by rank
  uint8_t* selected; // [N] 1 at the selected positions (the first `count` of each category's slice)
};

template <typename acc_t>
__device__ __forceinline__ void move_entry(const Work<acc_t>& w, int64_t from, int64_t to) {
  for (int k = 0; k < 4; ++k) {
    w.boxes[to * 4 + k] = w.boxes[from * 4 + k];
  }
  w.scores[to] = w.scores[from];
  w.index[to] = w.index[from];
}

template <typename acc_t>
__device__ __forceinline__ void swap_entries(const Work<acc_t>& w, int64_t a, int64_t b) {
  for (int k = 0; k < 4; ++k) {
    const acc_t t = w.boxes[a * 4 + k];
    w.boxes[a * 4 + k] = w.boxes[b * 4 + k];
    w.boxes[b * 4 + k] = t;
  }
  const acc_t s = w.scores[a];
  w.scores[a] = w.scores[b];
  w.scores[b] = s;
  const int64_t i = w.index[a];
  w.index[a] = w.index[b];
  w.index[b] = i;
}

// Sum of v over the block (every thread gets it). `shared`: kWarps + 1 ints.
__device__ __forceinline__ int block_sum(int v, int* shared) {
  for (int o = 16; o > 0; o >>= 1) {
    v += __shfl_down_sync(0xffffffffu, v, o);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    shared[warp] = v;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int t = 0;
    for (int k = 0; k < kWarps; ++k) {
      t += shared[k];
    }
    shared[kWarps] = t;
  }
  __syncthreads();
  const int total = shared[kWarps];
  __syncthreads();  // shared may be reused right away
  return total;
}

// Exclusive prefix sum of v over the threads in order; *total receives the block's sum. `shared`: kWarps + 1 ints.
__device__ __forceinline__ int block_exclusive_scan(int v, int* shared, int* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int x = v;
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) {
      x += y;
    }
  }
  if (lane == 31) {
    shared[warp] = x;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int t = 0;
    for (int k = 0; k < kWarps; ++k) {
      const int s = shared[k];
      shared[k] = t;
      t += s;
    }
    shared[kWarps] = t;
  }
  __syncthreads();
  const int out = shared[warp] + x - v;
  *total = shared[kWarps];
  __syncthreads();
  return out;
}

// (score, position) of the best candidate: higher score, then lower position; pos < 0 means none (NaN or empty).
template <typename acc_t>
__device__ __forceinline__ void better(acc_t& s, int& p, acc_t s2, int p2) {
  if (p2 < 0) {
    return;
  }
  if (p < 0 || s2 > s || (s2 == s && p2 < p)) {
    s = s2;
    p = p2;
  }
}

// The reference's steps on one category's slice [0, n) of `w` (already offset to the slice). Returns the count.
template <typename acc_t>
__device__ int soft_nms_slice(const Work<acc_t>& w, int n, int method, acc_t nt, acc_t sigma, acc_t threshold) {
  __shared__ int ints[kWarps + 1];
  __shared__ acc_t best_s[kWarps];
  __shared__ int best_p[kWarps];

  int count = n;  // identical in every thread
  for (int i = 0; i < count; ++i) {
    // 1. argmax over [i, count)
    acc_t s = 0;
    int p = -1;
    for (int q = i + threadIdx.x; q < count; q += blockDim.x) {
      const acc_t v = w.scores[q];
      if (v == v) {
        better(s, p, v, q);
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      const acc_t s2 = __shfl_down_sync(0xffffffffu, s, o);
      const int p2 = __shfl_down_sync(0xffffffffu, p, o);
      better(s, p, s2, p2);
    }
    if ((threadIdx.x & 31) == 0) {
      best_s[threadIdx.x >> 5] = s;
      best_p[threadIdx.x >> 5] = p;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int k = 1; k < kWarps; ++k) {
        better(s, p, best_s[k], best_p[k]);
      }
      const acc_t first = w.scores[i];
      const int maxpos = (first != first || p < 0) ? i : p;  // a NaN at position i stays the maximum
      // 2. swap it to position i
      if (maxpos != i) {
        swap_entries(w, i, maxpos);
      }
    }
    __syncthreads();

    // 3. decay the later boxes
    const acc_t* top = w.boxes + static_cast<int64_t>(i) * 4;
    const acc_t tx1 = top[0], ty1 = top[1], tx2 = top[2], ty2 = top[3];
    int alive = 0;
    for (int q = i + 1 + threadIdx.x; q < count; q += blockDim.x) {
      const acc_t* box = w.boxes + static_cast<int64_t>(q) * 4;
      const acc_t x1 = box[0], y1 = box[1], x2 = box[2], y2 = box[3];
      acc_t score = w.scores[q];
      const acc_t area = mul_rn(sub_rn(x2, x1), sub_rn(y2, y1));
      const acc_t iw = sub_rn(tx2 <= x2 ? tx2 : x2, tx1 >= x1 ? tx1 : x1);
      if (iw > 0) {
        const acc_t ih = sub_rn(ty2 <= y2 ? ty2 : y2, ty1 >= y1 ? ty1 : y1);
        if (ih > 0) {
          const acc_t inter = mul_rn(iw, ih);
          const acc_t ua = sub_rn(add_rn(mul_rn(sub_rn(tx2, tx1), sub_rn(ty2, ty1)), area), inter);
          const acc_t ov = div_rn(inter, ua);
          acc_t weight;
          if (method == checks::kSoftNmsLinear) {
            weight = ov > nt ? sub_rn(acc_t(1), ov) : acc_t(1);
          } else {
            weight = static_cast<acc_t>(exp(static_cast<double>(div_rn(-mul_rn(ov, ov), sigma))));
          }
          score = mul_rn(weight, score);
          w.scores[q] = score;
        }
      }
      const bool flag = score < threshold;
      w.flagged[q] = flag;
      alive += flag ? 0 : 1;
    }
    const int left = block_sum(alive, ints);  // also orders the flags and scores before step 4

    // 4. the reference's removals: holes before `end` filled from the right end
    const int end = i + 1 + left;
    if (end < count) {
      int carry = 0;
      for (int base = i + 1; base < end; base += blockDim.x) {
        const int q = base + threadIdx.x;
        const int hole = q < end && w.flagged[q] ? 1 : 0;
        int tile = 0;
        const int rank = carry + block_exclusive_scan(hole, ints, &tile);
        if (hole) {
          w.holes[rank] = q;
        }
        carry += tile;
      }
      __syncthreads();
      carry = 0;
      for (int base = 0; base < count - end; base += blockDim.x) {
        const int q = count - 1 - (base + threadIdx.x);  // from the right end
        const int donor = q >= end && !w.flagged[q] ? 1 : 0;
        int tile = 0;
        const int rank = carry + block_exclusive_scan(donor, ints, &tile);
        if (donor) {
          move_entry(w, q, w.holes[rank]);
        }
        carry += tile;
      }
      __syncthreads();
    }
    count = end;
  }
  return count;
}

// grid-stride over category starts; block kSoftThreads threads. cls [N] ascending.
template <typename acc_t>
__global__ void __launch_bounds__(kSoftThreads)
    soft_nms_kernel(int n_boxes, const int64_t* __restrict__ cls, Work<acc_t> w, int method, acc_t nt, acc_t sigma,
                    acc_t threshold) {
  __shared__ int end_shared;
  for (int start = blockIdx.x; start < n_boxes; start += gridDim.x) {
    if (start > 0 && cls[start] == cls[start - 1]) {
      continue;  // not the first box of its category (the same answer in every thread)
    }
    if (threadIdx.x == 0) {
      end_shared = cuda::category_end(cls, start, n_boxes);
    }
    __syncthreads();
    const int end = end_shared;
    __syncthreads();
    Work<acc_t> slice{w.boxes + static_cast<int64_t>(start) * 4, w.scores + start, w.index + start,
                      w.flagged + start, w.holes + start, w.selected + start};
    const int count = soft_nms_slice(slice, end - start, method, nt, sigma, threshold);
    for (int q = threadIdx.x; q < count; q += blockDim.x) {
      slice.selected[q] = 1;
    }
    __syncthreads();
  }
}

std::tuple<at::Tensor, at::Tensor> soft_nms_cuda(const at::Tensor& dets, const at::Tensor& scores,
                                                 const c10::optional<at::Tensor>& idxs, int64_t method,
                                                 double iou_threshold, double sigma, double min_score) {
  checks::check_nms("soft_nms", dets, scores, c10::DeviceType::CUDA);
  if (idxs.has_value()) {
    checks::check_nms_idxs("soft_nms", dets, *idxs);
  }
  checks::check_soft_nms_args(method, iou_threshold, sigma, min_score);

  c10::cuda::CUDAGuard device_guard(dets.device());
  const int64_t n = dets.size(0);
  const auto long_options = dets.options().dtype(at::kLong);
  if (n == 0) {
    return std::make_tuple(at::empty({0}, long_options), at::empty({0}, scores.options()));
  }
  // Class-major rows (stable: input order within a category) and their categories, ascending.
  at::Tensor rows, cls;
  if (idxs.has_value()) {
    auto sorted = idxs->to(at::kLong).sort(/*stable=*/true, /*dim=*/0, /*descending=*/false);
    cls = std::get<0>(sorted).contiguous();
    rows = std::get<1>(sorted).contiguous();
  } else {
    cls = at::zeros({n}, long_options);
    rows = at::arange(n, long_options);
  }
  const c10::ScalarType acc_type = checks::is_reduced_precision(dets.scalar_type()) ? at::kFloat : dets.scalar_type();
  at::Tensor boxes = dets.index_select(0, rows).to(acc_type).contiguous();
  at::Tensor work_scores = scores.index_select(0, rows).to(acc_type).contiguous();
  at::Tensor index = rows.clone();
  at::Tensor flagged = at::zeros({n}, dets.options().dtype(at::kByte));
  at::Tensor holes = at::empty({n}, dets.options().dtype(at::kInt));
  at::Tensor selected = at::zeros({n}, dets.options().dtype(at::kByte));

  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const unsigned int blocks = static_cast<unsigned int>(std::min<int64_t>(n, kMaxSoftBlocks));
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "soft_nms_cuda", [&] {
    using acc_t = scalar_t;
    Work<acc_t> w{boxes.mutable_data_ptr<acc_t>(), work_scores.mutable_data_ptr<acc_t>(),
                  index.mutable_data_ptr<int64_t>(), flagged.mutable_data_ptr<uint8_t>(),
                  holes.mutable_data_ptr<int>(), selected.mutable_data_ptr<uint8_t>()};
    soft_nms_kernel<acc_t><<<blocks, kSoftThreads, 0, stream>>>(
        static_cast<int>(n), cls.const_data_ptr<int64_t>(), w, static_cast<int>(method),
        static_cast<acc_t>(iou_threshold), static_cast<acc_t>(sigma), static_cast<acc_t>(min_score));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  // Selected positions in class-major, then selection order (the CPU kernel's concatenation); one sync here.
  const at::Tensor at_pos = at::nonzero(selected).view({-1});
  const at::Tensor keep = index.index_select(0, at_pos);
  const at::Tensor kept = work_scores.index_select(0, at_pos);
  const at::Tensor by_score = std::get<1>(kept.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  return std::make_tuple(keep.index_select(0, by_score), kept.index_select(0, by_score).to(scores.scalar_type()));
}

}  // namespace

TORCH_LIBRARY_IMPL(detection, CUDA, m) {
  m.impl("soft_nms", TORCH_FN(soft_nms_cuda));
}

}  // namespace ops
}  // namespace detection
