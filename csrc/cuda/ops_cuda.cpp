// Torch-facing CUDA bindings (built only when torch has CUDA): checks, sorts
// and allocations with ATen, then the raw launchers of csrc/cuda/*.cu on the
// current stream. Results equal the CPU kernels' (same box math, stable sorts).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>
#include <tuple>

#include "common/box_math.h"
#include "common/torch_utils.h"
#include "cuda/launchers.h"

namespace mtlkit {
namespace {

#define MTLKIT_CUDA_CHECK(expr)                                                     \
  do {                                                                              \
    const cudaError_t _err = (expr);                                                \
    TORCH_CHECK(_err == cudaSuccess, "mtlkit CUDA kernel failed: ", cudaGetErrorString(_err)); \
  } while (0)

// Stable descending order (NaN first), as torch.sort(descending=True, stable=True).
at::Tensor rank_order(const at::Tensor& scores) {
  return std::get<1>(at::sort(scores, /*stable=*/true, /*dim=*/0, /*descending=*/true));
}

at::Tensor box_iou_cuda(const at::Tensor& a_in, const at::Tensor& b_in) {
  check_same_device(a_in, "a", b_in, "b");
  c10::cuda::CUDAGuard guard(a_in.device());
  const auto dt = compute_dtype({to_compute(a_in), to_compute(b_in)});
  const auto a = check_boxes(a_in, "a", 2, dt);
  const auto b = check_boxes(b_in, "b", 2, dt);
  auto out = at::empty({a.size(0), b.size(0)}, a.options());
  AT_DISPATCH_FLOATING_TYPES(dt, "mtlkit_box_iou_cuda", [&] {
    MTLKIT_CUDA_CHECK(cuda::box_iou<scalar_t>(a.data_ptr<scalar_t>(), a.size(0), b.data_ptr<scalar_t>(), b.size(0),
                                              out.data_ptr<scalar_t>(), at::cuda::getCurrentCUDAStream()));
  });
  return out;
}

at::Tensor nms_common(const at::Tensor& boxes_in, const at::Tensor& scores_in, const at::Tensor* idxs_in,
                      double iou_threshold) {
  TORCH_CHECK_VALUE(boxes_in.dim() == 2 && boxes_in.size(1) == 4, "boxes: expected shape (N, 4), got ",
                    boxes_in.sizes());
  TORCH_CHECK_VALUE(scores_in.dim() == 1 && scores_in.size(0) == boxes_in.size(0), "scores: expected shape (",
                    boxes_in.size(0), ",) to match boxes, got ", scores_in.sizes());
  check_same_device(boxes_in, "boxes", scores_in, "scores");
  c10::cuda::CUDAGuard guard(boxes_in.device());
  const auto dt = compute_dtype({to_compute(boxes_in), to_compute(scores_in)});
  const auto boxes = check_boxes(boxes_in, "boxes", 2, dt);
  const auto scores = to_compute(scores_in).to(dt).contiguous();
  const int64_t n = boxes.size(0);
  if (n == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  const auto order = rank_order(scores);
  const auto sorted = boxes.index_select(0, order).contiguous();
  at::Tensor groups;
  if (idxs_in) groups = idxs_in->to(at::kLong).index_select(0, order).contiguous();
  const int64_t cb = cuda::nms_col_blocks(n);
  auto mask = at::empty({n, cb}, boxes.options().dtype(at::kLong));
  auto scratch = at::empty({cb}, boxes.options().dtype(at::kLong));
  auto keep = at::empty({n}, boxes.options().dtype(at::kLong));
  auto num = at::empty({1}, boxes.options().dtype(at::kLong));
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(dt, "mtlkit_nms_cuda", [&] {
    MTLKIT_CUDA_CHECK(cuda::nms_mask<scalar_t>(
        sorted.data_ptr<scalar_t>(), idxs_in ? groups.data_ptr<int64_t>() : nullptr, n,
        exact_threshold<scalar_t>(iou_threshold), reinterpret_cast<unsigned long long*>(mask.data_ptr<int64_t>()),
        stream));
  });
  MTLKIT_CUDA_CHECK(cuda::nms_gather_keep(reinterpret_cast<unsigned long long*>(mask.data_ptr<int64_t>()), n,
                                          reinterpret_cast<unsigned long long*>(scratch.data_ptr<int64_t>()),
                                          keep.data_ptr<int64_t>(), num.data_ptr<int64_t>(), stream));
  const int64_t k = num.item<int64_t>();  // the output size: one sync, as any NMS
  return order.index_select(0, keep.narrow(0, 0, k));
}

at::Tensor nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  return nms_common(boxes, scores, nullptr, iou_threshold);
}

at::Tensor batched_nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                            double iou_threshold) {
  TORCH_CHECK_VALUE(idxs.dim() == 1 && idxs.size(0) == boxes.size(0), "idxs: expected shape (", boxes.size(0),
                    ",) to match boxes, got ", idxs.sizes());
  TORCH_CHECK_TYPE(at::isIntegralType(idxs.scalar_type(), false), "idxs: expected an integer tensor, got ",
                   idxs.scalar_type());
  check_same_device(boxes, "boxes", idxs, "idxs");
  return nms_common(boxes, scores, &idxs, iou_threshold);
}

std::tuple<at::Tensor, at::Tensor> ssd_match_cuda(const at::Tensor& gt_boxes_in, const at::Tensor& gt_labels_in,
                                                  const at::Tensor& gt_offsets_in, const at::Tensor& priors_in,
                                                  double iou_threshold, double v0, double v1) {
  check_same_device(gt_boxes_in, "gt_boxes", priors_in, "priors");
  check_same_device(gt_labels_in, "gt_labels", priors_in, "priors");
  check_same_device(gt_offsets_in, "gt_offsets", priors_in, "priors");
  c10::cuda::CUDAGuard guard(priors_in.device());
  const auto dt = to_compute(priors_in).scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto priors = check_boxes(priors_in, "priors", 2, dt);
  const auto gt = check_boxes(gt_boxes_in, "gt_boxes", 2, dt);
  TORCH_CHECK_VALUE(gt_labels_in.dim() == 1 && gt_labels_in.size(0) == gt.size(0), "gt_labels: expected shape (",
                    gt.size(0), ",) to match gt_boxes, got ", gt_labels_in.sizes());
  TORCH_CHECK_VALUE(gt_offsets_in.dim() == 1 && gt_offsets_in.size(0) >= 1,
                    "gt_offsets: expected shape (B + 1,), got ", gt_offsets_in.sizes());
  const auto labels_in = gt_labels_in.to(at::kLong).contiguous();
  const auto off = gt_offsets_in.to(at::kLong).contiguous();
  const int64_t B = off.size(0) - 1, P = priors.size(0), G = gt.size(0);
  auto loc = at::empty({B, P, 4}, priors.options());
  auto labels = at::empty({B, P}, priors.options().dtype(at::kLong));
  auto best_prior = at::empty({G}, priors.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(dt, "mtlkit_ssd_match_cuda", [&] {
    MTLKIT_CUDA_CHECK(cuda::ssd_match<scalar_t>(gt.data_ptr<scalar_t>(), labels_in.data_ptr<int64_t>(),
                                                off.data_ptr<int64_t>(), B, G, priors.data_ptr<scalar_t>(), P,
                                                iou_threshold, v0, v1, best_prior.data_ptr<int64_t>(),
                                                loc.data_ptr<scalar_t>(), labels.data_ptr<int64_t>(),
                                                at::cuda::getCurrentCUDAStream()));
  });
  return {loc, labels};
}

at::Tensor ssd_decode_cuda(const at::Tensor& loc_in, const at::Tensor& priors_in, double v0, double v1) {
  check_same_device(loc_in, "loc", priors_in, "priors");
  c10::cuda::CUDAGuard guard(loc_in.device());
  const auto dt = compute_dtype({to_compute(loc_in), to_compute(priors_in)});
  const auto priors = check_boxes(priors_in, "priors", 2, dt);
  TORCH_CHECK_VALUE(loc_in.dim() >= 2 && loc_in.size(-1) == 4 && loc_in.size(-2) == priors.size(0),
                    "loc: expected shape (..., ", priors.size(0), ", 4) to match priors, got ", loc_in.sizes());
  const auto loc = check_boxes(loc_in, "loc", loc_in.dim(), dt);
  auto out = at::empty_like(loc);
  AT_DISPATCH_FLOATING_TYPES(dt, "mtlkit_ssd_decode_cuda", [&] {
    MTLKIT_CUDA_CHECK(cuda::ssd_decode<scalar_t>(loc.data_ptr<scalar_t>(), priors.data_ptr<scalar_t>(),
                                                 loc.numel() / 4, priors.size(0), v0, v1, out.data_ptr<scalar_t>(),
                                                 at::cuda::getCurrentCUDAStream()));
  });
  return out;
}

// Batched on the device: softmax; per (image, class) a stable sort of the
// thresholded scores gives the top_k candidates (score desc, prior asc); one
// kernel decodes them and runs NMS per segment; a stable sort per image over
// (class-major, rank) positions merges the classes with the contract's order.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> ssd_postprocess_cuda(
    const at::Tensor& loc_in, const at::Tensor& conf_in, const at::Tensor& priors_in, double score_threshold,
    double iou_threshold, int64_t top_k, int64_t max_detections, double v0, double v1) {
  check_same_device(loc_in, "loc", conf_in, "conf");
  check_same_device(loc_in, "loc", priors_in, "priors");
  c10::cuda::CUDAGuard guard(loc_in.device());
  TORCH_CHECK_TYPE(at::isFloatingType(conf_in.scalar_type()), "conf: expected a floating point tensor, got ",
                   conf_in.scalar_type());
  const auto dt = compute_dtype({to_compute(loc_in), to_compute(conf_in), to_compute(priors_in)});
  const auto loc = check_boxes(loc_in, "loc", 3, dt);
  const auto priors = check_boxes(priors_in, "priors", 2, dt);
  const int64_t B = loc.size(0), P = loc.size(1);
  TORCH_CHECK_VALUE(priors.size(0) == P, "priors: expected shape (", P, ", 4) to match loc, got ", priors.sizes());
  TORCH_CHECK_VALUE(conf_in.dim() == 3 && conf_in.size(0) == B && conf_in.size(1) == P && conf_in.size(2) >= 1,
                    "conf: expected shape (", B, ", ", P, ", C) to match loc, got ", conf_in.sizes());
  const int64_t C = conf_in.size(2), cm1 = C - 1;
  const auto opts = loc.options();
  if (B == 0 || P == 0 || cm1 == 0) {
    return {at::empty({0, 4}, opts), at::empty({0}, opts), at::empty({0}, opts.dtype(at::kLong)),
            at::zeros({B}, opts.dtype(at::kLong))};
  }
  const auto probs = at::softmax(to_compute(conf_in).to(dt), -1);
  const auto cls = probs.narrow(2, 1, cm1).transpose(1, 2).contiguous();  // (B, C-1, P)
  const double ts = AT_DISPATCH_FLOATING_TYPES(dt, "mtlkit_thr", [&] {
    return static_cast<double>(exact_threshold<scalar_t>(score_threshold));
  });
  const auto pass = cls.gt(ts);  // exact: ts is representable in dt
  const auto neg_inf = at::full({}, -std::numeric_limits<double>::infinity(), opts);
  const auto masked = at::where(pass, cls, neg_inf);
  auto sorted = at::sort(masked, /*stable=*/true, /*dim=*/-1, /*descending=*/true);
  const int64_t K = (top_k > 0 && top_k < P) ? top_k : P;
  const auto cand_score = std::get<0>(sorted).narrow(-1, 0, K).contiguous();     // (B, C-1, K)
  const auto cand_prior = std::get<1>(sorted).narrow(-1, 0, K).contiguous();     // (B, C-1, K)
  const auto cand_count = pass.sum(-1).clamp_max(K).to(at::kLong).contiguous();  // (B, C-1)
  auto boxes = at::empty({B, cm1, K, 4}, opts);
  auto removed = at::empty({B, cm1, K}, opts.dtype(at::kByte));
  auto keep = at::empty({B, cm1, K}, opts.dtype(at::kByte));
  AT_DISPATCH_FLOATING_TYPES(dt, "mtlkit_ssd_postprocess_cuda", [&] {
    MTLKIT_CUDA_CHECK(cuda::segmented_nms<scalar_t>(
        loc.data_ptr<scalar_t>(), priors.data_ptr<scalar_t>(), cand_prior.data_ptr<int64_t>(),
        cand_count.data_ptr<int64_t>(), B * cm1, K, cm1, P, v0, v1, exact_threshold<scalar_t>(iou_threshold),
        boxes.data_ptr<scalar_t>(), removed.data_ptr<uint8_t>(), keep.data_ptr<uint8_t>(),
        at::cuda::getCurrentCUDAStream()));
  });
  // Merge: positions are class-major then rank, so a stable sort by score gives
  // score desc, class asc, prior asc.
  const auto kept = keep.to(at::kBool).view({B, cm1 * K});
  const auto merged_scores = at::where(kept, cand_score.view({B, cm1 * K}), neg_inf);
  auto merged = at::sort(merged_scores, /*stable=*/true, /*dim=*/-1, /*descending=*/true);
  const int64_t M = (max_detections > 0 && max_detections < cm1 * K) ? max_detections : cm1 * K;
  const auto pos = std::get<1>(merged).narrow(-1, 0, M);         // (B, M)
  const auto valid = kept.gather(1, pos);                         // (B, M)
  const auto counts = valid.sum(-1).to(at::kLong);                // (B,)
  const auto flat_pos = (pos + at::arange(B, pos.options()).unsqueeze(1) * (cm1 * K)).masked_select(valid);
  const auto out_boxes = boxes.view({B * cm1 * K, 4}).index_select(0, flat_pos);
  const auto out_scores = cand_score.view({-1}).index_select(0, flat_pos);
  const auto out_labels = (flat_pos % (cm1 * K)).div(K, "floor") + 1;
  return {out_boxes, out_scores, out_labels, counts};
}

}  // namespace

TORCH_LIBRARY_IMPL(mtlkit, CUDA, m) {
  m.impl("box_iou", box_iou_cuda);
  m.impl("nms", nms_cuda);
  m.impl("batched_nms", batched_nms_cuda);
  m.impl("ssd_match", ssd_match_cuda);
  m.impl("ssd_decode", ssd_decode_cuda);
  m.impl("ssd_postprocess", ssd_postprocess_cuda);
}

}  // namespace mtlkit
