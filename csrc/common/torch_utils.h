// Helpers for the torch-facing C++ files (never included by .cu files).
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <string>

namespace mtlkit {

// float16 / bfloat16 are computed in float32.
inline at::Tensor to_compute(const at::Tensor& t) {
  const auto st = t.scalar_type();
  return (st == at::kHalf || st == at::kBFloat16) ? t.to(at::kFloat) : t;
}

// Checks a floating tensor of shape (..., 4) and returns it in `dtype`, contiguous.
inline at::Tensor check_boxes(const at::Tensor& t, const char* name, int64_t dims, at::ScalarType dtype) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), name, ": expected a floating point tensor, got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == dims && t.size(-1) == 4, name, ": expected ", dims, " dims with last size 4, got ",
                    t.sizes());
  return t.to(dtype).contiguous();
}

// float64 if any input is float64, else float32.
inline at::ScalarType compute_dtype(std::initializer_list<at::Tensor> ts) {
  for (const auto& t : ts)
    if (t.scalar_type() == at::kDouble) return at::kDouble;
  return at::kFloat;
}

inline void check_same_device(const at::Tensor& a, const char* an, const at::Tensor& b, const char* bn) {
  TORCH_CHECK_VALUE(a.device() == b.device(), an, " is on ", a.device(), " but ", bn, " is on ", b.device());
}

// Looks up the typed handle of mtlkit::<name> (for autocast wrappers).
template <typename Sig>
inline c10::TypedOperatorHandle<Sig> op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow((std::string("mtlkit::") + name).c_str(), "").typed<Sig>();
}

// Guard to place in autocast kernels before re-dispatching.
using AutocastOff = c10::impl::ExcludeDispatchKeyGuard;
#define MTLKIT_AUTOCAST_OFF AutocastOff _no_autocast(c10::autocast_dispatch_keyset)

}  // namespace mtlkit
