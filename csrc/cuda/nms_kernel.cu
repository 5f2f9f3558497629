// Non-maximum suppression on CUDA by IoU bitmask (the py-faster-rcnn / torchvision algorithm), with the greedy
// reduction done on the device so that only the number of kept boxes (8 bytes) travels to the host.
//
//   dets:   [N, 4] xyxy, continuous coordinates (area = (x2 - x1) * (y2 - y1)); float64/32/16, bfloat16
//   scores: [N], same dtype
//   returns int64 [M] indices into dets of the kept boxes, sorted by decreasing score.
//
// A box is suppressed when its IoU with a kept, higher-scoring box is > iou_threshold (strictly).
//
// 1. Sort by decreasing score (stable, so equal scores keep their input order).
// 2. nms_mask_kernel: the sorted boxes are cut into blocks of 64. CUDA block (col, row) compares the 64 boxes of
//    row block `row` with the 64 boxes of column block `col` (only col >= row is needed: a box is only ever
//    suppressed by higher-scoring ones). mask[i][col] bit j is set when box i suppresses box 64 * col + j (j > i).
//    mask: [N, col_blocks] uint64; words left of the diagonal are never written nor read.
// 3. nms_reduce_kernel: one CUDA block walks the 64-box blocks in order. For each block the greedy decision
//    within the block is sequential (thread 0, on the diagonal words staged in shared memory, visiting only boxes
//    still alive); the kept rows are then OR-ed into the `removed` words of all later blocks in parallel, one
//    word per thread. Kept indices are compacted into the output on the fly.
//
// The mask takes N * ceil(N / 64) * 8 bytes (12,000 boxes: 18 MB; 192,000: 4.6 GB): an N whose mask would not fit
// in the device's free memory (plus what torch's allocator holds unused) is refused before anything is allocated.
// Callers with many boxes run NMS in bounded pieces (the RPN: per image, detection/modeling/rpn.py). Each call
// also raises the asynchronous errors of the RoI kernels (async_error.cuh), with the copy-back it makes anyway.
//
// batched_nms (class-wise NMS, one call): the same three steps on the boxes in class-major order (categories
// ascending, decreasing score within each, stable), with two changes. The mask sets a bit only for a pair of the same
// category (exact by construction: no coordinate offset, no mirroring), and a row's words cover only the column
// blocks up to the last box of its category (last_block): the greedy walk in class-major order then decides every
// box after all higher-scoring boxes of its category, which is per-category NMS. The kept class-major positions
// carry their rank in the stable score order, so sorting the kept ranks gives decreasing score, equal scores by
// lower index. Up to kDenseMaskBytes the mask is stored densely ([N, col_blocks], words beyond a row's category
// unused) and the call syncs once (the kept count), as nms; beyond it only each row's own words are stored
// (about what per-category calls would take: memory grows with the categories' sizes, not with N^2), which costs
// one more small device-to-host copy (the total) to size it.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>

#include "async_error.cuh"
#include "common/op_checks.h"
#include "cuda_helpers.cuh"
#include "exact_math.cuh"

namespace detection {
namespace ops {
namespace {

using u64 = unsigned long long;
constexpr int kBoxesPerBlock = 64;  // one bit per box in a uint64 mask word
constexpr int kReduceThreads = 256;  // >= kBoxesPerBlock
// `removed` lives in dynamic shared memory up to this size (5888 words, N <= 376832); beyond, in global memory.
// Static + dynamic shared memory must stay within the 48 KiB a kernel gets without opting in; the static part
// (diag, kept_shared) is 520 bytes.
constexpr size_t kMaxReduceSharedBytes = 46 * 1024;

using cuda::add_rn;
using cuda::div_rn;
using cuda::mul_rn;
using cuda::sub_rn;

// The largest acc_t value t with (x > t) == (x > threshold) for every acc_t x: the IoU is compared in acc_t exactly
// as the CPU kernel (and torchvision's CPU kernel) compare it with the double threshold.
template <typename acc_t>
acc_t threshold_in(double threshold) {
  acc_t t = static_cast<acc_t>(threshold);
  if (static_cast<double>(t) > threshold) {
    t = std::nextafter(t, -std::numeric_limits<acc_t>::infinity());
  }
  return t;
}

// box: x1, y1, x2, y2 in the op-math type (float for half/bfloat16 inputs).
template <typename acc_t>
struct Box {
  acc_t x1, y1, x2, y2, area;
};

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ Box<acc_t> load_box(const scalar_t* p) {
  Box<acc_t> b;
  b.x1 = static_cast<acc_t>(p[0]);
  b.y1 = static_cast<acc_t>(p[1]);
  b.x2 = static_cast<acc_t>(p[2]);
  b.y2 = static_cast<acc_t>(p[3]);
  b.area = mul_rn(sub_rn(b.x2, b.x1), sub_rn(b.y2, b.y1));
  return b;
}

// IoU(a, b) > threshold, with `a` the higher-scoring box: inter / (area_a + area_b - inter).
// Degenerate boxes give 0/0 = NaN, which never suppresses.
template <typename acc_t>
__device__ __forceinline__ bool iou_above(const Box<acc_t>& a, const Box<acc_t>& b, acc_t threshold) {
  const acc_t w = max(sub_rn(min(a.x2, b.x2), max(a.x1, b.x1)), acc_t(0));
  const acc_t h = max(sub_rn(min(a.y2, b.y2), max(a.y1, b.y1)), acc_t(0));
  const acc_t inter = mul_rn(w, h);
  return div_rn(inter, sub_rn(add_rn(a.area, b.area), inter)) > threshold;
}

// grid (col_blocks, col_blocks), block kBoxesPerBlock threads.
// boxes: [N, 4] sorted by decreasing score; mask: [N, col_blocks] (see the file comment).
template <typename scalar_t>
__global__ void __launch_bounds__(kBoxesPerBlock)
    nms_mask_kernel(int n_boxes, int col_blocks, at::opmath_type<scalar_t> threshold, const scalar_t* boxes,
                    u64* mask) {
  using acc_t = at::opmath_type<scalar_t>;
  const int row_block = blockIdx.y;
  const int col_block = blockIdx.x;
  if (row_block > col_block) {
    return;
  }
  const int row_size = min(n_boxes - row_block * kBoxesPerBlock, kBoxesPerBlock);
  const int col_size = min(n_boxes - col_block * kBoxesPerBlock, kBoxesPerBlock);

  __shared__ Box<acc_t> col_boxes[kBoxesPerBlock];
  if (threadIdx.x < col_size) {
    col_boxes[threadIdx.x] =
        load_box<scalar_t, acc_t>(boxes + (static_cast<int64_t>(col_block) * kBoxesPerBlock + threadIdx.x) * 4);
  }
  __syncthreads();

  if (threadIdx.x < row_size) {
    const int64_t row = static_cast<int64_t>(row_block) * kBoxesPerBlock + threadIdx.x;
    const Box<acc_t> cur = load_box<scalar_t, acc_t>(boxes + row * 4);
    // On the diagonal a box is compared only with the lower-scoring boxes after it.
    const int start = (row_block == col_block) ? threadIdx.x + 1 : 0;
    u64 bits = 0;
    for (int j = start; j < col_size; ++j) {
      if (iou_above(cur, col_boxes[j], threshold)) {
        bits |= 1ULL << j;
      }
    }
    mask[row * col_blocks + col_block] = bits;
  }
}

// One block of kReduceThreads threads, dynamic shared memory col_blocks words unless `removed_global` is given.
// mask: row r's word of column block j at mask[origin(r) + j], origin(r) = row_origin[r], or r * col_blocks when
// row_origin is null (dense); tags: [N] int64 written for each kept box (nms: its input index; batched_nms: its
// score rank); last_block: null (every row spans all column blocks) or [N] the last column block row r's words
// cover (batched_nms: the block of the last box of its category; later words are never read);
// keep: [N] int64, its first *num_kept entries are written; removed_global: null or [col_blocks] zeroed words.
__global__ void __launch_bounds__(kReduceThreads)
    nms_reduce_kernel(int n_boxes, int col_blocks, const u64* __restrict__ mask, const int64_t* __restrict__ tags,
                      const int32_t* __restrict__ last_block, const int64_t* __restrict__ row_origin,
                      int64_t* __restrict__ keep, int64_t* __restrict__ num_kept, u64* removed_global) {
  extern __shared__ u64 removed_shared[];
  __shared__ u64 diag[kBoxesPerBlock];
  __shared__ u64 kept_shared;

  u64* removed = removed_global != nullptr ? removed_global : removed_shared;
  const int tid = threadIdx.x;
  if (removed_global == nullptr) {
    for (int j = tid; j < col_blocks; j += blockDim.x) {
      removed[j] = 0;
    }
  }
  auto origin = [&](int64_t row) { return row_origin != nullptr ? row_origin[row] : row * col_blocks; };

  int64_t n_kept = 0;  // identical in every thread
  for (int nb = 0; nb < col_blocks; ++nb) {
    const int64_t row0 = static_cast<int64_t>(nb) * kBoxesPerBlock;
    const int size = min(n_boxes - nb * kBoxesPerBlock, kBoxesPerBlock);
    if (tid < size) {
      diag[tid] = mask[origin(row0 + tid) + nb];
    }
    __syncthreads();  // diag staged; removed[nb] complete (written by the previous iteration)

    if (tid == 0) {
      const u64 valid = size == kBoxesPerBlock ? ~0ULL : ((1ULL << size) - 1);
      u64 rem = removed[nb];
      u64 kept = 0;
      u64 alive = valid & ~rem;
      while (alive != 0) {
        const int b = __ffsll(static_cast<long long>(alive)) - 1;  // lowest alive = highest score left
        kept |= 1ULL << b;
        rem |= diag[b] | (1ULL << b);  // diag[b] only has bits > b; b itself is now decided
        alive = valid & ~rem;
      }
      kept_shared = kept;
    }
    __syncthreads();
    const u64 kept = kept_shared;

    if (tid < size && ((kept >> tid) & 1ULL)) {
      keep[n_kept + __popcll(kept & ((1ULL << tid) - 1))] = tags[row0 + tid];
    }
    n_kept += __popcll(kept);

    // Every kept box of this block suppresses what its mask row says in the later blocks it reaches (all of them
    // for nms; for batched_nms up to its category's last block, largest for the last kept box: categories ascend).
    if (kept != 0) {
      const int last = last_block != nullptr ? last_block[row0 + 63 - __clzll(static_cast<long long>(kept))]
                                             : col_blocks - 1;
      for (int j = nb + 1 + tid; j <= last; j += blockDim.x) {
        u64 acc = removed[j];
        u64 k = kept;
        while (k != 0) {
          const int b = __ffsll(static_cast<long long>(k)) - 1;
          k &= k - 1;
          if (last_block == nullptr || j <= last_block[row0 + b]) {
            acc |= mask[origin(row0 + b) + j];
          }
        }
        removed[j] = acc;
      }
    }
    // The __syncthreads at the top of the next iteration orders these writes before thread 0 reads removed[nb+1].
  }
  if (tid == 0) {
    *num_kept = n_kept;
  }
}

// Masks up to this size are allocated without asking how much memory is free (cudaMemGetInfo and the allocator's
// statistics cost a few microseconds; 256 MiB is N ~ 46,000).
constexpr uint64_t kMaskBytesAlwaysTried = uint64_t(256) << 20;

// Bytes the caching allocator could hand out on `device` without a new cudaMalloc beyond free memory: free
// device memory plus blocks it reserved but does not use.
uint64_t available_bytes(c10::DeviceIndex device) {
  size_t free_bytes = 0, total_bytes = 0;
  C10_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  int64_t cached = 0;
  try {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device);
    cached = stats.reserved_bytes[0].current - stats.allocated_bytes[0].current;  // [0]: StatType::AGGREGATE
  } catch (const c10::Error&) {  // an allocator backend without statistics: count free memory only
    cached = 0;
  }
  return static_cast<uint64_t>(free_bytes) + static_cast<uint64_t>(std::max<int64_t>(cached, 0));
}

// Refuses a mask of mask_bytes for N boxes that cannot be allocated, naming N and the bytes.
void check_mask_bytes_fit(const char* op, int64_t n, uint64_t mask_bytes, const char* layout, const c10::Device& device) {
  if (mask_bytes <= kMaskBytesAlwaysTried) {
    return;
  }
  const uint64_t available = available_bytes(device.index());
  TORCH_CHECK(mask_bytes <= available, op, ": ", n, " boxes need a ", mask_bytes, "-byte (",
              static_cast<double>(mask_bytes) / double(uint64_t(1) << 30), " GiB) suppression mask (", layout,
              ") but only ", available, " bytes (", static_cast<double>(available) / double(uint64_t(1) << 30),
              " GiB) are free on ", device, "; run NMS on fewer boxes at a time (e.g. per image)");
}

void check_col_blocks(const char* op, int64_t n, int64_t col_blocks) {
  TORCH_CHECK(col_blocks <= 65535, op, ": at most ", int64_t(65535) * kBoxesPerBlock,
              " boxes are supported on CUDA, got ", n, "; run NMS on fewer boxes at a time (e.g. per image)");
}

// Refuses N boxes whose [N, ceil(N / 64)] uint64 mask cannot be allocated, naming N and the bytes.
void check_mask_fits(int64_t n, int64_t col_blocks, const c10::Device& device) {
  check_col_blocks("nms", n, col_blocks);
  const uint64_t mask_bytes = static_cast<uint64_t>(n) * static_cast<uint64_t>(col_blocks) * sizeof(u64);
  check_mask_bytes_fit("nms", n, mask_bytes, "N x ceil(N / 64) x 8 bytes", device);
}

// The reduction's `removed` words: dynamic shared memory when they fit, else a zeroed global buffer.
struct RemovedWords {
  at::Tensor global;
  u64* ptr = nullptr;
  size_t shared_bytes = 0;
};

RemovedWords removed_words(int64_t col_blocks, const at::TensorOptions& options) {
  RemovedWords r;
  const size_t bytes = static_cast<size_t>(col_blocks) * sizeof(u64);
  if (bytes > kMaxReduceSharedBytes) {
    r.global = at::zeros({col_blocks}, options.dtype(at::kLong));
    r.ptr = reinterpret_cast<u64*>(r.global.mutable_data_ptr<int64_t>());
  } else {
    r.shared_bytes = bytes;
  }
  return r;
}

// The kept count (the op's one device-to-host transfer, which synchronises), with the RoI kernels' error record
// riding along.
int64_t fetch_kept_count(const at::Tensor& num_kept, c10::DeviceIndex device, cudaStream_t stream) {
  cuda::enqueue_async_error_fetch(device, stream);
  const int64_t m = num_kept.item<int64_t>();
  cuda::raise_fetched_async_error(device, stream);
  return m;
}

at::Tensor nms_cuda(const at::Tensor& dets, const at::Tensor& scores, double iou_threshold) {
  checks::check_nms(dets, scores, c10::DeviceType::CUDA);

  c10::cuda::CUDAGuard device_guard(dets.device());
  const int64_t n = dets.size(0);
  if (n == 0) {
    return at::empty({0}, dets.options().dtype(at::kLong));
  }
  const int64_t col_blocks = cuda::ceil_div(n, kBoxesPerBlock);
  check_mask_fits(n, col_blocks, dets.device());

  const at::Tensor order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const at::Tensor dets_sorted = dets.index_select(0, order).contiguous();
  // [N, col_blocks] uint64 words (stored in an int64 tensor); left-of-diagonal words stay uninitialised.
  at::Tensor mask = at::empty({n, col_blocks}, dets.options().dtype(at::kLong));
  // keep[0 .. num_kept) are the kept input indices; num_kept is written last by the reduction.
  at::Tensor keep = at::empty({n + 1}, dets.options().dtype(at::kLong));
  at::Tensor num_kept = keep.narrow(0, n, 1);

  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const dim3 mask_grid(static_cast<unsigned int>(col_blocks), static_cast<unsigned int>(col_blocks));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dets_sorted.scalar_type(), "nms_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    nms_mask_kernel<scalar_t><<<mask_grid, kBoxesPerBlock, 0, stream>>>(
        static_cast<int>(n), static_cast<int>(col_blocks), threshold_in<acc_t>(iou_threshold),
        dets_sorted.const_data_ptr<scalar_t>(), reinterpret_cast<u64*>(mask.mutable_data_ptr<int64_t>()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });

  const RemovedWords removed = removed_words(col_blocks, dets.options());
  nms_reduce_kernel<<<1, kReduceThreads, removed.shared_bytes, stream>>>(
      static_cast<int>(n), static_cast<int>(col_blocks), reinterpret_cast<const u64*>(mask.const_data_ptr<int64_t>()),
      order.const_data_ptr<int64_t>(), nullptr, nullptr, keep.mutable_data_ptr<int64_t>(),
      num_kept.mutable_data_ptr<int64_t>(), removed.ptr);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return keep.narrow(0, 0, fetch_kept_count(num_kept, dets.device().index(), stream));
}

// ------------------------------------------------------------------------------------------------ batched_nms

// A dense [N, col_blocks] mask up to this size (N ~ 23,000): no extra transfer. Beyond, the compact layout.
constexpr uint64_t kDenseMaskBytes = uint64_t(32) << 20;

// One thread per class-major position p (cls ascending): last_block[p] = block of the last box of p's category;
// with `words`, the words its row needs (its own block .. last_block) and the widest such span (atomicMax).
__global__ void batched_nms_layout_kernel(int n_boxes, const int64_t* __restrict__ cls, int32_t* __restrict__ last_block,
                                          int64_t* __restrict__ words, unsigned long long* max_span) {
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= n_boxes) {
    return;
  }
  const int last = (cuda::category_end(cls, p, n_boxes) - 1) / kBoxesPerBlock;
  last_block[p] = last;
  if (words != nullptr) {
    const int span = last - p / kBoxesPerBlock + 1;
    words[p] = span;
    atomicMax(max_span, static_cast<unsigned long long>(span));
  }
}

// Compact layout: row p's words start at its exclusive prefix sum; origin = start - (its own block), so that the
// word of column block j is at row_origin[p] + j. stats[0] receives the total word count.
__global__ void batched_nms_origin_kernel(int n_boxes, const int64_t* __restrict__ words,
                                          const int64_t* __restrict__ inclusive, int64_t* __restrict__ row_origin,
                                          int64_t* __restrict__ stats) {
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= n_boxes) {
    return;
  }
  row_origin[p] = inclusive[p] - words[p] - p / kBoxesPerBlock;
  if (p == n_boxes - 1) {
    stats[0] = inclusive[p];
  }
}

// grid (span, col_blocks): block (x, y) compares row block y with column block y + x; block kBoxesPerBlock threads.
// boxes [N, 4] and cls [N] in class-major order. Only same-category pairs set bits; a row writes the words of the
// column blocks up to its last_block.
template <typename scalar_t>
__global__ void __launch_bounds__(kBoxesPerBlock)
    batched_nms_mask_kernel(int n_boxes, int col_blocks, at::opmath_type<scalar_t> threshold,
                            const scalar_t* __restrict__ boxes, const int64_t* __restrict__ cls,
                            const int32_t* __restrict__ last_block, const int64_t* __restrict__ row_origin, u64* mask) {
  using acc_t = at::opmath_type<scalar_t>;
  const int row_block = blockIdx.y;
  const int col_block = row_block + blockIdx.x;
  if (col_block >= col_blocks) {
    return;
  }
  const int row_size = min(n_boxes - row_block * kBoxesPerBlock, kBoxesPerBlock);
  const int col_size = min(n_boxes - col_block * kBoxesPerBlock, kBoxesPerBlock);
  // No row of this block has its category reach the column block (categories ascend): nothing is read there.
  if (col_block > row_block &&
      cls[static_cast<int64_t>(col_block) * kBoxesPerBlock] > cls[static_cast<int64_t>(row_block) * kBoxesPerBlock +
                                                                  row_size - 1]) {
    return;
  }

  __shared__ Box<acc_t> col_boxes[kBoxesPerBlock];
  __shared__ int64_t col_cls[kBoxesPerBlock];
  if (threadIdx.x < col_size) {
    const int64_t col = static_cast<int64_t>(col_block) * kBoxesPerBlock + threadIdx.x;
    col_boxes[threadIdx.x] = load_box<scalar_t, acc_t>(boxes + col * 4);
    col_cls[threadIdx.x] = cls[col];
  }
  __syncthreads();

  if (threadIdx.x < row_size) {
    const int64_t row = static_cast<int64_t>(row_block) * kBoxesPerBlock + threadIdx.x;
    if (col_block <= last_block[row]) {
      const Box<acc_t> cur = load_box<scalar_t, acc_t>(boxes + row * 4);
      const int64_t c = cls[row];
      const int start = (row_block == col_block) ? threadIdx.x + 1 : 0;
      u64 bits = 0;
      for (int j = start; j < col_size; ++j) {
        if (col_cls[j] == c && iou_above(cur, col_boxes[j], threshold)) {
          bits |= 1ULL << j;
        }
      }
      const int64_t origin = row_origin != nullptr ? row_origin[row] : row * col_blocks;
      mask[origin + col_block] = bits;
    }
  }
}

at::Tensor batched_nms_cuda(const at::Tensor& dets, const at::Tensor& scores, const at::Tensor& idxs,
                            double iou_threshold) {
  checks::check_nms("batched_nms", dets, scores, c10::DeviceType::CUDA);
  checks::check_nms_idxs("batched_nms", dets, idxs);

  c10::cuda::CUDAGuard device_guard(dets.device());
  const int64_t n = dets.size(0);
  if (n == 0) {
    return at::empty({0}, dets.options().dtype(at::kLong));
  }
  const int64_t col_blocks = cuda::ceil_div(n, kBoxesPerBlock);
  check_col_blocks("batched_nms", n, col_blocks);
  const auto long_options = dets.options().dtype(at::kLong);

  // rank -> input index (stable score order); class-major position -> rank (perm) and input index (rows).
  const at::Tensor order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const at::Tensor cls_by_rank = idxs.to(at::kLong).index_select(0, order);
  auto sorted = cls_by_rank.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false);
  const at::Tensor cls = std::get<0>(sorted).contiguous();
  const at::Tensor perm = std::get<1>(sorted).contiguous();
  const at::Tensor dets_cm = dets.index_select(0, order.index_select(0, perm)).contiguous();

  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  constexpr int kLayoutThreads = 256;
  const unsigned int layout_blocks = static_cast<unsigned int>(cuda::ceil_div(n, kLayoutThreads));
  at::Tensor last_block = at::empty({n}, dets.options().dtype(at::kInt));
  const uint64_t dense_bytes = static_cast<uint64_t>(n) * static_cast<uint64_t>(col_blocks) * sizeof(u64);
  at::Tensor row_origin, mask;
  int64_t span = col_blocks;
  if (dense_bytes <= kDenseMaskBytes) {
    batched_nms_layout_kernel<<<layout_blocks, kLayoutThreads, 0, stream>>>(
        static_cast<int>(n), cls.const_data_ptr<int64_t>(), last_block.mutable_data_ptr<int32_t>(), nullptr, nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    mask = at::empty({n * col_blocks}, long_options);  // words beyond a row's category stay uninitialised
  } else {
    at::Tensor words = at::empty({n}, long_options);
    at::Tensor stats = at::zeros({2}, long_options);  // total words, widest span
    batched_nms_layout_kernel<<<layout_blocks, kLayoutThreads, 0, stream>>>(
        static_cast<int>(n), cls.const_data_ptr<int64_t>(), last_block.mutable_data_ptr<int32_t>(),
        words.mutable_data_ptr<int64_t>(), reinterpret_cast<unsigned long long*>(stats.mutable_data_ptr<int64_t>() + 1));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const at::Tensor inclusive = words.cumsum(0);
    row_origin = at::empty({n}, long_options);
    batched_nms_origin_kernel<<<layout_blocks, kLayoutThreads, 0, stream>>>(
        static_cast<int>(n), words.const_data_ptr<int64_t>(), inclusive.const_data_ptr<int64_t>(),
        row_origin.mutable_data_ptr<int64_t>(), stats.mutable_data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const at::Tensor host = stats.cpu();  // the extra transfer of the compact layout
    const int64_t total = host.const_data_ptr<int64_t>()[0];
    span = host.const_data_ptr<int64_t>()[1];
    check_mask_bytes_fit("batched_nms", n, static_cast<uint64_t>(total) * sizeof(u64),
                         "8 bytes per box and 64-box block of its category", dets.device());
    mask = at::empty({total}, long_options);
  }
  const int64_t* origin_ptr = row_origin.defined() ? row_origin.const_data_ptr<int64_t>() : nullptr;

  const dim3 mask_grid(static_cast<unsigned int>(span), static_cast<unsigned int>(col_blocks));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dets_cm.scalar_type(), "batched_nms_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    batched_nms_mask_kernel<scalar_t><<<mask_grid, kBoxesPerBlock, 0, stream>>>(
        static_cast<int>(n), static_cast<int>(col_blocks), threshold_in<acc_t>(iou_threshold),
        dets_cm.const_data_ptr<scalar_t>(), cls.const_data_ptr<int64_t>(), last_block.const_data_ptr<int32_t>(),
        origin_ptr, reinterpret_cast<u64*>(mask.mutable_data_ptr<int64_t>()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });

  // keep[0 .. num_kept) are the kept boxes' score ranks; num_kept is written last by the reduction.
  at::Tensor keep = at::empty({n + 1}, long_options);
  at::Tensor num_kept = keep.narrow(0, n, 1);
  const RemovedWords removed = removed_words(col_blocks, dets.options());
  nms_reduce_kernel<<<1, kReduceThreads, removed.shared_bytes, stream>>>(
      static_cast<int>(n), static_cast<int>(col_blocks), reinterpret_cast<const u64*>(mask.const_data_ptr<int64_t>()),
      perm.const_data_ptr<int64_t>(), last_block.const_data_ptr<int32_t>(), origin_ptr,
      keep.mutable_data_ptr<int64_t>(), num_kept.mutable_data_ptr<int64_t>(), removed.ptr);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const int64_t m = fetch_kept_count(num_kept, dets.device().index(), stream);
  // By rank: decreasing score, equal scores by lower index.
  return order.index_select(0, std::get<0>(keep.narrow(0, 0, m).sort(/*stable=*/false, /*dim=*/0, false)));
}

}  // namespace

TORCH_LIBRARY_IMPL(detection, CUDA, m) {
  m.impl("nms", TORCH_FN(nms_cuda));
  m.impl("batched_nms", TORCH_FN(batched_nms_cuda));
}

}  // namespace ops
}  // namespace detection
