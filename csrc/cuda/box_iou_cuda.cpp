// Torch-facing CUDA binding of mtlkit::box_iou (built only when torch has CUDA):
// input checks (common/op_checks.h, shared with the CPU kernel), sorts and
// allocations with ATen, then the raw launcher of csrc/cuda/*.cu on the
// current stream. Results equal the CPU kernel's.
#include "cuda/cuda_binding.h"

namespace mtlkit {
namespace {

at::Tensor box_iou_cuda(const at::Tensor& a_in, const at::Tensor& b_in) {
  c10::cuda::CUDAGuard guard(a_in.device());
  const auto in = check_box_iou_inputs(a_in, b_in);
  const auto &a = in.a, &b = in.b;
  const auto dt = in.dtype;
  auto out = at::empty({a.size(0), b.size(0)}, a.options());
  AT_DISPATCH_FLOATING_TYPES(dt, "mtlkit_box_iou_cuda", [&] {
    MTLKIT_CUDA_CHECK(cuda::box_iou<scalar_t>(a.data_ptr<scalar_t>(), a.size(0), b.data_ptr<scalar_t>(), b.size(0),
                                              out.data_ptr<scalar_t>(), at::cuda::getCurrentCUDAStream()));
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mtlkit, CUDA, m) {
  m.impl("box_iou", box_iou_cuda);
}

}  // namespace mtlkit
