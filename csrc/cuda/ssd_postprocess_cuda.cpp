// Torch-facing CUDA binding of mtlkit::ssd_postprocess (built only when torch has CUDA):
// input checks (common/op_checks.h, shared with the CPU kernel), sorts and
// allocations with ATen, then the raw launcher of csrc/cuda/*.cu on the
// current stream. Results equal the CPU kernel's.
#include "cuda/cuda_binding.h"

#include <limits>

namespace mtlkit {
namespace {

// Batched on the device: softmax; per (image, class) a stable sort of the
// thresholded scores gives the top_k candidates (score desc, prior asc); one
// kernel decodes them and runs NMS per segment; a stable sort per image over
// (class-major, rank) positions merges the classes with the contract's order.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> ssd_postprocess_cuda(
    const at::Tensor& loc_in, const at::Tensor& conf_in, const at::Tensor& priors_in, double score_threshold,
    double iou_threshold, int64_t top_k, int64_t max_detections, double v0, double v1) {
  c10::cuda::CUDAGuard guard(loc_in.device());
  const auto in = check_postprocess_inputs(loc_in, conf_in, priors_in);
  const auto &loc = in.loc, &priors = in.priors;
  const auto dt = in.dtype;
  const int64_t B = in.B, P = in.P, C = in.C, cm1 = C - 1;
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
  m.impl("ssd_postprocess", ssd_postprocess_cuda);
}

}  // namespace mtlkit
