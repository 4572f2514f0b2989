// What every torch-facing CUDA binding (csrc/cuda/<op>_cuda.cpp) includes:
// the device guard and current stream, the shared input checks, the raw
// launchers, a cudaError_t check and the stable descending sort of scores.
// Never included by .cu files (those include launchers.h only).
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "common/box_math.h"
#include "common/op_checks.h"
#include "common/torch_utils.h"
#include "cuda/launchers.h"

#define MTLKIT_CUDA_CHECK(expr)                                                     \
  do {                                                                              \
    const cudaError_t _err = (expr);                                                \
    TORCH_CHECK(_err == cudaSuccess, "mtlkit CUDA kernel failed: ", cudaGetErrorString(_err)); \
  } while (0)

namespace mtlkit {

// Stable descending order (NaN first), as torch.sort(descending=True, stable=True).
inline at::Tensor rank_order(const at::Tensor& scores) {
  return std::get<1>(at::sort(scores, /*stable=*/true, /*dim=*/0, /*descending=*/true));
}

}  // namespace mtlkit
