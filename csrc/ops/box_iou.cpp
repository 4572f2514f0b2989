// Schema and autocast rule of mtlkit::box_iou.
#include <torch/library.h>

#include "common/torch_utils.h"

namespace mtlkit {
namespace {

at::Tensor box_iou_autocast(const at::Tensor& a, const at::Tensor& b) {
  MTLKIT_AUTOCAST_OFF;
  static auto op = op_handle<at::Tensor(const at::Tensor&, const at::Tensor&)>("box_iou");
  return op.call(to_compute(a), to_compute(b));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mtlkit, m) {
  m.def("box_iou(Tensor a, Tensor b) -> Tensor");
}

TORCH_LIBRARY_IMPL(mtlkit, AutocastCPU, m) { m.impl("box_iou", box_iou_autocast); }
TORCH_LIBRARY_IMPL(mtlkit, AutocastCUDA, m) { m.impl("box_iou", box_iou_autocast); }

}  // namespace mtlkit
