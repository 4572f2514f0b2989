// CPU kernel of mtlkit::ssd_decode: elementwise, in double, parallel over boxes.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/box_math.h"
#include "common/op_checks.h"

namespace mtlkit {
namespace {

at::Tensor ssd_decode_cpu(const at::Tensor& loc_in, const at::Tensor& priors_in, double v0, double v1) {
  const auto in = check_decode_inputs(loc_in, priors_in);
  const auto &loc = in.loc, &priors = in.priors;
  const auto dt = in.dtype;
  auto out = at::empty_like(loc);
  const int64_t total = loc.numel() / 4, P = priors.size(0);
  if (total == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(dt, "mtlkit_ssd_decode", [&] {
    const scalar_t* l = loc.data_ptr<scalar_t>();
    const scalar_t* p = priors.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, total, 2048, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) ssd_decode(l + 4 * i, p + 4 * (i % P), v0, v1, o + 4 * i);
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mtlkit, CPU, m) { m.impl("ssd_decode", ssd_decode_cpu); }

}  // namespace mtlkit
