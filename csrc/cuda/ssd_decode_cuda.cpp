// Torch-facing CUDA binding of mtlkit::ssd_decode (built only when torch has CUDA):
// input checks (common/op_checks.h, shared with the CPU kernel), sorts and
// allocations with ATen, then the raw launcher of csrc/cuda/*.cu on the
// current stream. Results equal the CPU kernel's.
#include "cuda/cuda_binding.h"

namespace mtlkit {
namespace {

at::Tensor ssd_decode_cuda(const at::Tensor& loc_in, const at::Tensor& priors_in, double v0, double v1) {
  c10::cuda::CUDAGuard guard(loc_in.device());
  const auto in = check_decode_inputs(loc_in, priors_in);
  const auto &loc = in.loc, &priors = in.priors;
  const auto dt = in.dtype;
  auto out = at::empty_like(loc);
  AT_DISPATCH_FLOATING_TYPES(dt, "mtlkit_ssd_decode_cuda", [&] {
    MTLKIT_CUDA_CHECK(cuda::ssd_decode<scalar_t>(loc.data_ptr<scalar_t>(), priors.data_ptr<scalar_t>(),
                                                 loc.numel() / 4, priors.size(0), v0, v1, out.data_ptr<scalar_t>(),
                                                 at::cuda::getCurrentCUDAStream()));
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mtlkit, CUDA, m) {
  m.impl("ssd_decode", ssd_decode_cuda);
}

}  // namespace mtlkit
