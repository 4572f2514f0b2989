// Input checks of every op, shared by the CPU kernels (csrc/cpu/*_kernel.cpp)
// and the CUDA bindings (csrc/cuda/*_cuda.cpp), so both backends refuse the
// same inputs with the same one-line messages. Each check returns the inputs
// converted to the compute dtype (float32, or float64 when any input is),
// contiguous, on the inputs' device. Torch-facing: never included by .cu files.
#pragma once

#include <ATen/ATen.h>

#include "common/torch_utils.h"

namespace mtlkit {

// box_iou(a (N, 4), b (M, 4)).
struct BoxIouInputs {
  at::Tensor a, b;
  at::ScalarType dtype;
};

inline BoxIouInputs check_box_iou_inputs(const at::Tensor& a, const at::Tensor& b) {
  check_same_device(a, "a", b, "b");
  const auto dt = compute_dtype({to_compute(a), to_compute(b)});
  return {check_boxes(a, "a", 2, dt), check_boxes(b, "b", 2, dt), dt};
}

// nms / batched_nms(boxes (N, 4), scores (N,)[, idxs (N,) integer]).
struct NmsInputs {
  at::Tensor boxes, scores;
  at::Tensor idxs;  // int64 (N,), undefined for nms
  at::ScalarType dtype;
};

inline NmsInputs check_nms_inputs(const at::Tensor& boxes, const at::Tensor& scores,
                                  const at::Tensor* idxs = nullptr) {
  TORCH_CHECK_VALUE(boxes.dim() == 2 && boxes.size(1) == 4, "boxes: expected shape (N, 4), got ", boxes.sizes());
  TORCH_CHECK_VALUE(scores.dim() == 1 && scores.size(0) == boxes.size(0), "scores: expected shape (",
                    boxes.size(0), ",) to match boxes, got ", scores.sizes());
  check_same_device(boxes, "boxes", scores, "scores");
  at::Tensor groups;
  if (idxs != nullptr) {
    TORCH_CHECK_VALUE(idxs->dim() == 1 && idxs->size(0) == boxes.size(0), "idxs: expected shape (",
                      boxes.size(0), ",) to match boxes, got ", idxs->sizes());
    TORCH_CHECK_TYPE(at::isIntegralType(idxs->scalar_type(), /*includeBool=*/false),
                     "idxs: expected an integer tensor, got ", idxs->scalar_type());
    check_same_device(boxes, "boxes", *idxs, "idxs");
    groups = idxs->to(at::kLong).contiguous();
  }
  const auto dt = compute_dtype({to_compute(boxes), to_compute(scores)});
  return {check_boxes(boxes, "boxes", 2, dt), to_compute(scores).to(dt).contiguous(), groups, dt};
}

// ssd_match(gt_boxes (G, 4), gt_labels (G,), gt_offsets (B + 1,), priors (P, 4)).
// The values of gt_offsets (a CPU-side check) are checked by the CPU kernel only.
struct MatchInputs {
  at::Tensor gt, labels, offsets, priors;
  at::ScalarType dtype;
};

inline MatchInputs check_match_inputs(const at::Tensor& gt_boxes, const at::Tensor& gt_labels,
                                      const at::Tensor& gt_offsets, const at::Tensor& priors_in) {
  check_same_device(gt_boxes, "gt_boxes", priors_in, "priors");
  check_same_device(gt_labels, "gt_labels", priors_in, "priors");
  check_same_device(gt_offsets, "gt_offsets", priors_in, "priors");
  const auto dt = to_compute(priors_in).scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto priors = check_boxes(priors_in, "priors", 2, dt);
  auto gt = check_boxes(gt_boxes, "gt_boxes", 2, dt);
  TORCH_CHECK_VALUE(gt_labels.dim() == 1 && gt_labels.size(0) == gt.size(0), "gt_labels: expected shape (",
                    gt.size(0), ",) to match gt_boxes, got ", gt_labels.sizes());
  TORCH_CHECK_VALUE(gt_offsets.dim() == 1 && gt_offsets.size(0) >= 1, "gt_offsets: expected shape (B + 1,), got ",
                    gt_offsets.sizes());
  return {gt, gt_labels.to(at::kLong).contiguous(), gt_offsets.to(at::kLong).contiguous(), priors, dt};
}

// ssd_decode(loc (..., P, 4), priors (P, 4)).
struct DecodeInputs {
  at::Tensor loc, priors;
  at::ScalarType dtype;
};

inline DecodeInputs check_decode_inputs(const at::Tensor& loc_in, const at::Tensor& priors_in) {
  check_same_device(loc_in, "loc", priors_in, "priors");
  const auto dt = compute_dtype({to_compute(loc_in), to_compute(priors_in)});
  auto priors = check_boxes(priors_in, "priors", 2, dt);
  TORCH_CHECK_VALUE(loc_in.dim() >= 2 && loc_in.size(-1) == 4 && loc_in.size(-2) == priors.size(0),
                    "loc: expected shape (..., ", priors.size(0), ", 4) to match priors, got ", loc_in.sizes());
  return {check_boxes(loc_in, "loc", loc_in.dim(), dt), priors, dt};
}

// ssd_postprocess(loc (B, P, 4), conf (B, P, C) logits, priors (P, 4)).
// conf is returned unconverted (each backend takes its softmax in `dtype`).
struct PostprocessInputs {
  at::Tensor loc, conf, priors;
  at::ScalarType dtype;
  int64_t B, P, C;
};

inline PostprocessInputs check_postprocess_inputs(const at::Tensor& loc_in, const at::Tensor& conf,
                                                  const at::Tensor& priors_in) {
  check_same_device(loc_in, "loc", conf, "conf");
  check_same_device(loc_in, "loc", priors_in, "priors");
  TORCH_CHECK_TYPE(at::isFloatingType(conf.scalar_type()), "conf: expected a floating point tensor, got ",
                   conf.scalar_type());
  const auto dt = compute_dtype({to_compute(loc_in), to_compute(conf), to_compute(priors_in)});
  auto loc = check_boxes(loc_in, "loc", 3, dt);
  auto priors = check_boxes(priors_in, "priors", 2, dt);
  const int64_t B = loc.size(0), P = loc.size(1);
  TORCH_CHECK_VALUE(priors.size(0) == P, "priors: expected shape (", P, ", 4) to match loc, got ", priors.sizes());
  TORCH_CHECK_VALUE(conf.dim() == 3 && conf.size(0) == B && conf.size(1) == P && conf.size(2) >= 1,
                    "conf: expected shape (", B, ", ", P, ", C) to match loc, got ", conf.sizes());
  return {loc, conf, priors, dt, B, P, conf.size(2)};
}

}  // namespace mtlkit
