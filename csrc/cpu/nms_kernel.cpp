// CPU kernels of mtlkit::nms and mtlkit::batched_nms.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/op_checks.h"
#include "cpu/nms_cpu.h"

namespace mtlkit {
namespace {

template <typename T>
at::Tensor nms_impl(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  const int64_t n = boxes.size(0);
  const T* b = boxes.data_ptr<T>();
  std::vector<int64_t> order;
  cpu::sort_by_score(scores.data_ptr<T>(), n, order);
  cpu::RankedBoxes<T> rb;
  rb.reserve(n);
  for (int64_t i : order) rb.push(b + 4 * i, i);
  std::vector<int64_t> keep;
  cpu::rank_nms(rb, exact_threshold<T>(iou_threshold), keep);
  return at::tensor(keep, at::TensorOptions().dtype(at::kLong));
}

// Groups by idx (ties of rank kept), NMS per group in parallel, then merge by rank.
template <typename T>
at::Tensor batched_nms_impl(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                            double iou_threshold) {
  const int64_t n = boxes.size(0);
  const T* b = boxes.data_ptr<T>();
  const int64_t* g = idxs.data_ptr<int64_t>();
  std::vector<int64_t> order;
  cpu::sort_by_score(scores.data_ptr<T>(), n, order);
  std::vector<int64_t> rank(n);
  for (int64_t r = 0; r < n; ++r) rank[order[r]] = r;
  std::stable_sort(order.begin(), order.end(), [g](int64_t i, int64_t j) { return g[i] < g[j]; });
  std::vector<int64_t> starts;
  for (int64_t r = 0; r < n; ++r)
    if (r == 0 || g[order[r]] != g[order[r - 1]]) starts.push_back(r);
  starts.push_back(n);
  const int64_t groups = static_cast<int64_t>(starts.size()) - 1;
  std::vector<std::vector<int64_t>> kept(groups);
  const T t = exact_threshold<T>(iou_threshold);
  at::parallel_for(0, groups, 1, [&](int64_t lo, int64_t hi) {
    cpu::RankedBoxes<T> rb;
    for (int64_t k = lo; k < hi; ++k) {
      rb.clear();
      for (int64_t r = starts[k]; r < starts[k + 1]; ++r) rb.push(b + 4 * order[r], order[r]);
      cpu::rank_nms(rb, t, kept[k]);
    }
  });
  std::vector<int64_t> keep;
  for (auto& v : kept) keep.insert(keep.end(), v.begin(), v.end());
  std::sort(keep.begin(), keep.end(), [&rank](int64_t i, int64_t j) { return rank[i] < rank[j]; });
  return at::tensor(keep, at::TensorOptions().dtype(at::kLong));
}

at::Tensor nms_cpu(const at::Tensor& boxes_in, const at::Tensor& scores_in, double iou_threshold) {
  const auto in = check_nms_inputs(boxes_in, scores_in);
  const auto &boxes = in.boxes, &scores = in.scores;
  const auto dt = in.dtype;
  if (boxes.size(0) == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  return AT_DISPATCH_FLOATING_TYPES(dt, "mtlkit_nms", [&] { return nms_impl<scalar_t>(boxes, scores, iou_threshold); });
}

at::Tensor batched_nms_cpu(const at::Tensor& boxes_in, const at::Tensor& scores_in, const at::Tensor& idxs_in,
                           double iou_threshold) {
  const auto in = check_nms_inputs(boxes_in, scores_in, &idxs_in);
  const auto &boxes = in.boxes, &scores = in.scores, &idxs = in.idxs;
  const auto dt = in.dtype;
  if (boxes.size(0) == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  return AT_DISPATCH_FLOATING_TYPES(
      dt, "mtlkit_batched_nms", [&] { return batched_nms_impl<scalar_t>(boxes, scores, idxs, iou_threshold); });
}

}  // namespace

TORCH_LIBRARY_IMPL(mtlkit, CPU, m) {
  m.impl("nms", nms_cpu);
  m.impl("batched_nms", batched_nms_cpu);
}

}  // namespace mtlkit
