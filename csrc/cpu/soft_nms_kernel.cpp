// Soft-NMS (Bodla, Singh, Chellappa and Davis, "Soft-NMS - Improving Object Detection With One Line of Code",
// ICCV 2017) on the CPU: float32, float64 (float16 / bfloat16 computed in float32).
//
//   soft_nms(boxes [N, 4] xyxy, scores [N], idxs [N] integer categories or None, method, iou_threshold, sigma,
//            min_score) -> (keep int64 [M], kept_scores [M])
//
// Per category, the boxes are processed exactly as the authors' reference (github.com/bharatsingh430/soft-nms,
// lib/nms/cpu_nms.pyx, cpu_soft_nms), on the category's boxes in input order: at step i the box of highest current
// score among positions i.. (the first one on ties) is swapped to position i and selected; every later box that
// intersects it (positive overlap width and height) has its score multiplied by
//   linear   (method 1): 1 - IoU if IoU > iou_threshold, else 1
//   gaussian (method 2): exp(-IoU^2 / sigma)
// and a box whose score falls below min_score is discarded by moving the last box into its place. The arithmetic is
// the reference's in the boxes' dtype (its float32 for float32 boxes): the thresholds rounded to that dtype,
// exp() in double, the weight rounded back. The one difference is the box convention: our boxes are continuous
// (area = (x2 - x1) * (y2 - y1)); the reference's are inclusive pixels (+1 in every width and height), so the
// reference on boxes B equals this op on B + (0, 0, 1, 1).
//
// Output: the selected boxes of every category (selection order within a category, categories in increasing idx),
// stably sorted by decreasing decayed score. Within a category the selection order already is non-increasing, so a
// category's boxes stay in the reference's order; equal scores of different categories come by increasing idx.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

#include "common/op_checks.h"

namespace detection {
namespace cpu {
namespace {

// The reference's min / max (a on ties; NaN handling follows from the comparisons).
template <typename T>
inline T ref_max(T a, T b) {
  return a >= b ? a : b;
}
template <typename T>
inline T ref_min(T a, T b) {
  return a <= b ? a : b;
}

template <typename T>
struct Entry {
  T x1, y1, x2, y2, score;
  int64_t index;  // row of the input
};

// The reference's loop on one category's entries (input order); returns how many were selected: entries[0 .. n).
template <typename T>
int64_t soft_nms_category(std::vector<Entry<T>>& e, int64_t method, T nt, T sigma, T threshold) {
  int64_t n = static_cast<int64_t>(e.size());
  for (int64_t i = 0; i < n; ++i) {
    T maxscore = e[i].score;
    int64_t maxpos = i;
    for (int64_t pos = i + 1; pos < n; ++pos) {  // get max box
      if (maxscore < e[pos].score) {
        maxscore = e[pos].score;
        maxpos = pos;
      }
    }
    std::swap(e[i], e[maxpos]);  // add max box as a detection
    const T tx1 = e[i].x1, ty1 = e[i].y1, tx2 = e[i].x2, ty2 = e[i].y2;
    for (int64_t pos = i + 1; pos < n; ++pos) {
      Entry<T>& b = e[pos];
      const T area = (b.x2 - b.x1) * (b.y2 - b.y1);
      const T iw = ref_min(tx2, b.x2) - ref_max(tx1, b.x1);
      if (iw > 0) {
        const T ih = ref_min(ty2, b.y2) - ref_max(ty1, b.y1);
        if (ih > 0) {
          const T ua = (tx2 - tx1) * (ty2 - ty1) + area - iw * ih;
          const T ov = iw * ih / ua;
          T weight;
          if (method == checks::kSoftNmsLinear) {
            weight = ov > nt ? T(1) - ov : T(1);
          } else {
            weight = static_cast<T>(std::exp(static_cast<double>(-(ov * ov) / sigma)));
          }
          b.score = weight * b.score;
        }
      }
      if (b.score < threshold) {  // discard the box by moving the last one here (and look at that one next)
        e[pos] = e[n - 1];
        --n;
        --pos;
      }
    }
  }
  return n;
}

template <typename T>
std::tuple<at::Tensor, at::Tensor> soft_nms_impl(const at::Tensor& dets, const at::Tensor& scores,
                                                 const c10::optional<at::Tensor>& idxs, int64_t method,
                                                 double iou_threshold, double sigma, double min_score) {
  const int64_t n = dets.size(0);
  const T* d = dets.data_ptr<T>();
  const T* s = scores.data_ptr<T>();
  // Rows grouped by category, input order within each; group g is rows[begin[g] .. begin[g + 1]).
  std::vector<int64_t> rows(n), begin;
  for (int64_t r = 0; r < n; ++r) rows[r] = r;
  if (idxs.has_value()) {
    const int64_t* c = idxs->data_ptr<int64_t>();
    std::stable_sort(rows.begin(), rows.end(), [&](int64_t a, int64_t b) { return c[a] < c[b]; });
    for (int64_t i = 0; i < n; ++i) {
      if (i == 0 || c[rows[i]] != c[rows[i - 1]]) begin.push_back(i);
    }
  } else {
    begin.push_back(0);
  }
  begin.push_back(n);
  const int64_t groups = static_cast<int64_t>(begin.size()) - 1;
  const T nt = static_cast<T>(iou_threshold), sg = static_cast<T>(sigma), thr = static_cast<T>(min_score);

  // Selected entries of each category at the front of its slice of `all`; categories in parallel.
  std::vector<Entry<T>> all(n);
  std::vector<int64_t> selected(groups);
  at::parallel_for(0, groups, 1, [&](int64_t b, int64_t e) {
    std::vector<Entry<T>> work;
    for (int64_t g = b; g < e; ++g) {
      work.clear();
      for (int64_t i = begin[g]; i < begin[g + 1]; ++i) {
        const int64_t r = rows[i];
        work.push_back(Entry<T>{d[r * 4], d[r * 4 + 1], d[r * 4 + 2], d[r * 4 + 3], s[r], r});
      }
      selected[g] = soft_nms_category(work, method, nt, sg, thr);
      std::copy(work.begin(), work.begin() + selected[g], all.begin() + begin[g]);
    }
  });
  int64_t m = 0;
  for (int64_t g = 0; g < groups; ++g) m += selected[g];
  at::Tensor keep = at::empty({m}, dets.options().dtype(at::kLong));
  at::Tensor kept_scores = at::empty({m}, scores.options());
  int64_t* kp = keep.data_ptr<int64_t>();
  T* ks = kept_scores.data_ptr<T>();
  for (int64_t g = 0, j = 0; g < groups; ++g) {
    for (int64_t i = 0; i < selected[g]; ++i, ++j) {
      kp[j] = all[begin[g] + i].index;
      ks[j] = all[begin[g] + i].score;
    }
  }
  const at::Tensor by_score = std::get<1>(kept_scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  return std::make_tuple(keep.index_select(0, by_score), kept_scores.index_select(0, by_score));
}

std::tuple<at::Tensor, at::Tensor> soft_nms_cpu(const at::Tensor& dets_, const at::Tensor& scores_,
                                                const c10::optional<at::Tensor>& idxs_, int64_t method,
                                                double iou_threshold, double sigma, double min_score) {
  checks::check_nms("soft_nms", dets_, scores_, c10::DeviceType::CPU);
  if (idxs_.has_value()) checks::check_nms_idxs("soft_nms", dets_, *idxs_);
  checks::check_soft_nms_args(method, iou_threshold, sigma, min_score);
  if (checks::is_reduced_precision(dets_.scalar_type())) {  // computed in float32, scores rounded back once
    auto [keep, kept] = soft_nms_cpu(dets_.to(at::kFloat), scores_.to(at::kFloat), idxs_, method, iou_threshold,
                                     sigma, min_score);
    return std::make_tuple(keep, kept.to(scores_.scalar_type()));
  }
  const at::Tensor dets = dets_.contiguous();
  const at::Tensor scores = scores_.contiguous();
  c10::optional<at::Tensor> idxs;
  if (idxs_.has_value()) idxs = idxs_->to(at::kLong).contiguous();
  std::tuple<at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(dets.scalar_type(), "soft_nms_cpu", [&] {
    out = soft_nms_impl<scalar_t>(dets, scores, idxs, method, iou_threshold, sigma, min_score);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(detection, CPU, m) {
  m.impl("soft_nms", TORCH_FN(soft_nms_cpu));
}

}  // namespace cpu
}  // namespace detection
