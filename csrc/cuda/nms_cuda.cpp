// Torch-facing CUDA binding of mtlkit::nms (built only when torch has CUDA):
// input checks (common/op_checks.h, shared with the CPU kernel), sorts and
// allocations with ATen, then the raw launcher of csrc/cuda/*.cu on the
// current stream. Results equal the CPU kernel's.
#include "cuda/cuda_binding.h"

namespace mtlkit {
namespace {

at::Tensor nms_common(const at::Tensor& boxes_in, const at::Tensor& scores_in, const at::Tensor* idxs_in,
                      double iou_threshold) {
  c10::cuda::CUDAGuard guard(boxes_in.device());
  const auto in = check_nms_inputs(boxes_in, scores_in, idxs_in);
  const auto &boxes = in.boxes, &scores = in.scores;
  const auto dt = in.dtype;
  const int64_t n = boxes.size(0);
  if (n == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  const auto order = rank_order(scores);
  const auto sorted = boxes.index_select(0, order).contiguous();
  at::Tensor groups;
  if (idxs_in) groups = in.idxs.index_select(0, order).contiguous();
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
  return nms_common(boxes, scores, &idxs, iou_threshold);
}

}  // namespace

TORCH_LIBRARY_IMPL(mtlkit, CUDA, m) {
  m.impl("nms", nms_cuda);
  m.impl("batched_nms", batched_nms_cuda);
}

}  // namespace mtlkit
