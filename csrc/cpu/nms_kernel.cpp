// Greedy non-maximum suppression on the CPU: `nms` and class-wise `batched_nms` (float32, float64; float16 and
// bfloat16 computed in float32).
//
// dets: [N, 4] xyxy boxes in continuous coordinates (area = (x2 - x1) * (y2 - y1)); scores: [N]; idxs: [N] integer
// categories (batched_nms). Returns the int64 indices of the kept boxes in decreasing score order (ties: lower index
// first). A box is dropped when its IoU with an already kept, higher-ranked box (of the same category) is >
// iou_threshold (strictly), computed in the boxes' dtype with torchvision's formula, so the kept set is torchvision's
// for distinct scores. batched_nms is exactly `nms` run on each category alone: categories never meet (no coordinate
// offset), and the kept boxes of all categories are merged by their rank in one stable score order.
//
// Speed: the boxes are copied once, in score order, into contiguous per-coordinate arrays. Each kept box then
// tests only the candidates still alive after it, in one branch-free, vectorisable pass (a flag per candidate),
// split across threads when many remain; the alive candidates are compacted whenever a quarter of the window
// has been suppressed, so dead boxes are seldom visited again. torchvision's loop instead visits every later box
// for every kept box through an index indirection. batched_nms runs the categories in parallel, each on its own
// candidate arrays (only boxes of one category are ever compared).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "common/op_checks.h"

namespace detection {
namespace cpu {
namespace {

// Below this many candidates a suppression pass runs on one thread.
constexpr int64_t kParallelCandidates = 16384;

// The largest T value t with (x > t) == (x > threshold) for every T x, so that comparisons can stay in T
// (torchvision compares the T overlap with the double threshold).
template <typename T>
T threshold_in(double threshold) {
  T t = static_cast<T>(threshold);
  if (static_cast<double>(t) > threshold) t = std::nextafter(t, -std::numeric_limits<T>::infinity());
  return t;
}

// Boxes alive after the current one, sorted by decreasing score, one array per coordinate.
template <typename T>
struct Candidates {
  std::vector<T> x1, y1, x2, y2, area;
  std::vector<int32_t> rank;  // position in score order; keep list entries map back through `order`
  std::vector<uint8_t> dead;  // suppressed since the last compaction
};

// Marks the candidates in [begin, end) whose IoU with box (bx1, by1, bx2, by2) of area barea exceeds thr;
// returns how many were newly marked.
template <typename T>
int64_t suppress_range(Candidates<T>& c, int64_t begin, int64_t end, T bx1, T by1, T bx2, T by2, T barea, T thr) {
  const T* __restrict x1 = c.x1.data();
  const T* __restrict y1 = c.y1.data();
  const T* __restrict x2 = c.x2.data();
  const T* __restrict y2 = c.y2.data();
  const T* __restrict area = c.area.data();
  uint8_t* __restrict dead = c.dead.data();
  int64_t newly = 0;
  for (int64_t j = begin; j < end; ++j) {
    const T xx1 = std::max(bx1, x1[j]);
    const T yy1 = std::max(by1, y1[j]);
    const T xx2 = std::min(bx2, x2[j]);
    const T yy2 = std::min(by2, y2[j]);
    const T w = std::max(static_cast<T>(0), xx2 - xx1);
    const T h = std::max(static_cast<T>(0), yy2 - yy1);
    const T inter = w * h;
    const T iou = inter / (barea + area[j] - inter);
    const uint8_t s = iou > thr;
    newly += s & static_cast<uint8_t>(dead[j] ^ 1);
    dead[j] |= s;
  }
  return newly;
}

// Removes the dead candidates of [begin, end) (keeping the order); returns the new end.
template <typename T>
int64_t compact(Candidates<T>& c, int64_t begin, int64_t end) {
  int64_t w = begin;
  for (int64_t j = begin; j < end; ++j) {
    c.x1[w] = c.x1[j];
    c.y1[w] = c.y1[j];
    c.x2[w] = c.x2[j];
    c.y2[w] = c.y2[j];
    c.area[w] = c.area[j];
    c.rank[w] = c.rank[j];
    w += c.dead[j] ^ 1;
  }
  std::fill(c.dead.begin() + begin, c.dead.begin() + w, uint8_t(0));
  return w;
}

// Greedy NMS over m boxes given in score order: rows[p] is the box (row of d) at rank p. Appends tags[p] of every
// kept p, in increasing p, to `keep`. `parallel`: a suppression pass over many candidates may use the intra-op threads.
template <typename T>
void greedy_nms(const T* d, const int64_t* rows, const int64_t* tags, int64_t m, T thr, bool parallel,
                std::vector<int64_t>& keep) {
  Candidates<T> c;
  c.x1.resize(m), c.y1.resize(m), c.x2.resize(m), c.y2.resize(m), c.area.resize(m), c.rank.resize(m);
  c.dead.assign(m, 0);
  for (int64_t r = 0; r < m; ++r) {
    const T* b = d + rows[r] * 4;
    c.x1[r] = b[0], c.y1[r] = b[1], c.x2[r] = b[2], c.y2[r] = b[3];
    c.area[r] = (b[2] - b[0]) * (b[3] - b[1]);
    c.rank[r] = static_cast<int32_t>(r);
  }
  parallel = parallel && at::get_num_threads() > 1 && !at::in_parallel_region();

  int64_t end = m;   // candidates alive (or not yet compacted away) are [p, end)
  int64_t dead = 0;  // marked dead in [p, end)
  for (int64_t p = 0; p < end; ++p) {
    if (c.dead[p]) {
      --dead;
      continue;
    }
    keep.push_back(tags[c.rank[p]]);
    const T bx1 = c.x1[p], by1 = c.y1[p], bx2 = c.x2[p], by2 = c.y2[p], barea = c.area[p];
    const int64_t lo = p + 1;
    if (parallel && end - lo >= kParallelCandidates) {
      dead += at::parallel_reduce(
          lo, end, kParallelCandidates / 2, int64_t(0),
          [&](int64_t b, int64_t e, int64_t acc) {
            return acc + suppress_range(c, b, e, bx1, by1, bx2, by2, barea, thr);
          },
          [](int64_t a, int64_t b) { return a + b; });
    } else {
      dead += suppress_range(c, lo, end, bx1, by1, bx2, by2, barea, thr);
    }
    if (dead * 4 > end - lo && end - lo > 64) {
      end = compact(c, lo, end);
      dead = 0;
    }
  }
}

// Positions 0..n-1 of the stable decreasing-score order: order[p] is the input index of the box at rank p.
at::Tensor score_order(const at::Tensor& scores) {
  return std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true)).contiguous();
}

at::Tensor as_index_tensor(std::vector<int64_t>& v) {
  return at::from_blob(v.data(), {static_cast<int64_t>(v.size())}, at::kLong).clone();
}

template <typename T>
at::Tensor nms_impl(const at::Tensor& dets, const at::Tensor& scores, double iou_threshold) {
  const int64_t n = dets.size(0);
  const at::Tensor order = score_order(scores);
  const int64_t* ord = order.data_ptr<int64_t>();
  std::vector<int64_t> keep;
  greedy_nms(dets.data_ptr<T>(), ord, ord, n, threshold_in<T>(iou_threshold), /*parallel=*/true, keep);
  return as_index_tensor(keep);
}

// The categories' candidate lists: ranks (positions in the score order) grouped by category, each group in
// increasing rank. Group g is ranks[begin[g] .. begin[g + 1]).
struct CategoryGroups {
  std::vector<int64_t> ranks, begin;
};

CategoryGroups group_by_category(const int64_t* ord, const int64_t* idxs, int64_t n) {
  CategoryGroups g;
  g.ranks.resize(n);
  for (int64_t r = 0; r < n; ++r) g.ranks[r] = r;
  std::stable_sort(g.ranks.begin(), g.ranks.end(),
                   [&](int64_t a, int64_t b) { return idxs[ord[a]] < idxs[ord[b]]; });
  for (int64_t i = 0; i < n; ++i) {
    if (i == 0 || idxs[ord[g.ranks[i]]] != idxs[ord[g.ranks[i - 1]]]) g.begin.push_back(i);
  }
  g.begin.push_back(n);
  return g;
}

template <typename T>
at::Tensor batched_nms_impl(const at::Tensor& dets, const at::Tensor& scores, const at::Tensor& idxs,
                            double iou_threshold) {
  const int64_t n = dets.size(0);
  const at::Tensor order = score_order(scores);
  const int64_t* ord = order.data_ptr<int64_t>();
  const CategoryGroups g = group_by_category(ord, idxs.data_ptr<int64_t>(), n);
  const int64_t groups = static_cast<int64_t>(g.begin.size()) - 1;
  const T* d = dets.data_ptr<T>();
  const T thr = threshold_in<T>(iou_threshold);

  // Kept ranks of each category; categories in parallel (a single large one parallelises inside instead).
  std::vector<std::vector<int64_t>> kept(groups);
  const int64_t grain = std::max<int64_t>(1, kParallelCandidates / std::max<int64_t>(1, n / std::max<int64_t>(groups, 1)));
  at::parallel_for(0, groups, groups == 1 ? 1 : grain, [&](int64_t b, int64_t e) {
    std::vector<int64_t> rows;
    for (int64_t k = b; k < e; ++k) {
      const int64_t* ranks = g.ranks.data() + g.begin[k];
      const int64_t m = g.begin[k + 1] - g.begin[k];
      rows.resize(m);
      for (int64_t p = 0; p < m; ++p) rows[p] = ord[ranks[p]];
      greedy_nms(d, rows.data(), ranks, m, thr, /*parallel=*/groups == 1, kept[k]);
    }
  });
  // Merged by rank in the one stable score order: decreasing score, equal scores by lower index.
  std::vector<int64_t> ranks;
  for (const auto& k : kept) ranks.insert(ranks.end(), k.begin(), k.end());
  std::sort(ranks.begin(), ranks.end());
  for (int64_t& r : ranks) r = ord[r];
  return as_index_tensor(ranks);
}

at::Tensor nms_cpu(const at::Tensor& dets_, const at::Tensor& scores_, double iou_threshold) {
  checks::check_nms(dets_, scores_, c10::DeviceType::CPU);
  if (dets_.size(0) == 0) return at::empty({0}, dets_.options().dtype(at::kLong));
  if (checks::is_reduced_precision(dets_.scalar_type())) {  // exact in float32, where the IoUs are computed
    return nms_cpu(dets_.to(at::kFloat), scores_.to(at::kFloat), iou_threshold);
  }
  const at::Tensor dets = dets_.contiguous();
  const at::Tensor scores = scores_.contiguous();
  at::Tensor keep;
  AT_DISPATCH_FLOATING_TYPES(dets.scalar_type(), "nms_cpu", [&] { keep = nms_impl<scalar_t>(dets, scores, iou_threshold); });
  return keep;
}

at::Tensor batched_nms_cpu(const at::Tensor& dets_, const at::Tensor& scores_, const at::Tensor& idxs_,
                           double iou_threshold) {
  checks::check_nms("batched_nms", dets_, scores_, c10::DeviceType::CPU);
  checks::check_nms_idxs("batched_nms", dets_, idxs_);
  if (dets_.size(0) == 0) return at::empty({0}, dets_.options().dtype(at::kLong));
  if (checks::is_reduced_precision(dets_.scalar_type())) {
    return batched_nms_cpu(dets_.to(at::kFloat), scores_.to(at::kFloat), idxs_, iou_threshold);
  }
  const at::Tensor dets = dets_.contiguous();
  const at::Tensor scores = scores_.contiguous();
  const at::Tensor idxs = idxs_.to(at::kLong).contiguous();
  at::Tensor keep;
  AT_DISPATCH_FLOATING_TYPES(dets.scalar_type(), "batched_nms_cpu", [&] {
    keep = batched_nms_impl<scalar_t>(dets, scores, idxs, iou_threshold);
  });
  return keep;
}

}  // namespace

TORCH_LIBRARY_IMPL(detection, CPU, m) {
  m.impl("nms", TORCH_FN(nms_cpu));
  m.impl("batched_nms", TORCH_FN(batched_nms_cpu));
}

}  // namespace cpu
}  // namespace detection
