// Torch-facing CUDA binding of mtlkit::ssd_match (built only when torch has CUDA):
// input checks (common/op_checks.h, shared with the CPU kernel), sorts and
// allocations with ATen, then the raw launcher of csrc/cuda/*.cu on the
// current stream. Results equal the CPU kernel's.
#include "cuda/cuda_binding.h"

namespace mtlkit {
namespace {

std::tuple<at::Tensor, at::Tensor> ssd_match_cuda(const at::Tensor& gt_boxes_in, const at::Tensor& gt_labels_in,
                                                  const at::Tensor& gt_offsets_in, const at::Tensor& priors_in,
                                                  double iou_threshold, double v0, double v1) {
  c10::cuda::CUDAGuard guard(priors_in.device());
  const auto in = check_match_inputs(gt_boxes_in, gt_labels_in, gt_offsets_in, priors_in);
  const auto &priors = in.priors, &gt = in.gt, &labels_in = in.labels, &off = in.offsets;
  const auto dt = in.dtype;
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

}  // namespace

TORCH_LIBRARY_IMPL(mtlkit, CUDA, m) {
  m.impl("ssd_match", ssd_match_cuda);
}

}  // namespace mtlkit
