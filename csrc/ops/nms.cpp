// Schemas and autocast rules of mtlkit::nms and mtlkit::batched_nms.
#include <torch/library.h>

#include "common/torch_utils.h"

namespace mtlkit {
namespace {

at::Tensor nms_autocast(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  MTLKIT_AUTOCAST_OFF;
  static auto op = op_handle<at::Tensor(const at::Tensor&, const at::Tensor&, double)>("nms");
  return op.call(to_compute(boxes), to_compute(scores), iou_threshold);
}

at::Tensor batched_nms_autocast(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                                double iou_threshold) {
  MTLKIT_AUTOCAST_OFF;
  static auto op =
      op_handle<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double)>("batched_nms");
  return op.call(to_compute(boxes), to_compute(scores), idxs, iou_threshold);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mtlkit, m) {
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
  m.def("batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor");
}

TORCH_LIBRARY_IMPL(mtlkit, AutocastCPU, m) {
  m.impl("nms", nms_autocast);
  m.impl("batched_nms", batched_nms_autocast);
}
TORCH_LIBRARY_IMPL(mtlkit, AutocastCUDA, m) {
  m.impl("nms", nms_autocast);
  m.impl("batched_nms", batched_nms_autocast);
}

}  // namespace mtlkit
