// Schemas and autocast rules of the SSD ops: mtlkit::ssd_match, ssd_decode, ssd_postprocess.
#include <torch/library.h>

#include <tuple>

#include "common/torch_utils.h"

namespace mtlkit {
namespace {

using TT = std::tuple<at::Tensor, at::Tensor>;
using TTTT = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

TT ssd_match_autocast(const at::Tensor& gt_boxes, const at::Tensor& gt_labels, const at::Tensor& gt_offsets,
                      const at::Tensor& priors, double iou_threshold, double v0, double v1) {
  MTLKIT_AUTOCAST_OFF;
  static auto op = op_handle<TT(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
                                double, double)>("ssd_match");
  return op.call(to_compute(gt_boxes), gt_labels, gt_offsets, to_compute(priors), iou_threshold, v0, v1);
}

at::Tensor ssd_decode_autocast(const at::Tensor& loc, const at::Tensor& priors, double v0, double v1) {
  MTLKIT_AUTOCAST_OFF;
  static auto op = op_handle<at::Tensor(const at::Tensor&, const at::Tensor&, double, double)>("ssd_decode");
  return op.call(to_compute(loc), to_compute(priors), v0, v1);
}

TTTT ssd_postprocess_autocast(const at::Tensor& loc, const at::Tensor& conf, const at::Tensor& priors,
                              double score_threshold, double iou_threshold, int64_t top_k, int64_t max_detections,
                              double v0, double v1) {
  MTLKIT_AUTOCAST_OFF;
  static auto op = op_handle<TTTT(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double, int64_t,
                                  int64_t, double, double)>("ssd_postprocess");
  return op.call(to_compute(loc), to_compute(conf), to_compute(priors), score_threshold, iou_threshold, top_k,
                 max_detections, v0, v1);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mtlkit, m) {
  m.def(
      "ssd_match(Tensor gt_boxes, Tensor gt_labels, Tensor gt_offsets, Tensor priors, float iou_threshold, "
      "float v0, float v1) -> (Tensor, Tensor)");
  m.def("ssd_decode(Tensor loc, Tensor priors, float v0, float v1) -> Tensor");
  m.def(
      "ssd_postprocess(Tensor loc, Tensor conf, Tensor priors, float score_threshold, float iou_threshold, "
      "int top_k, int max_detections, float v0, float v1) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(mtlkit, AutocastCPU, m) {
  m.impl("ssd_match", ssd_match_autocast);
  m.impl("ssd_decode", ssd_decode_autocast);
  m.impl("ssd_postprocess", ssd_postprocess_autocast);
}
TORCH_LIBRARY_IMPL(mtlkit, AutocastCUDA, m) {
  m.impl("ssd_match", ssd_match_autocast);
  m.impl("ssd_decode", ssd_decode_autocast);
  m.impl("ssd_postprocess", ssd_postprocess_autocast);
}

}  // namespace mtlkit
