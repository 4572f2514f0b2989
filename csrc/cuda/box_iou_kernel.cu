// CUDA kernel of mtlkit::box_iou (raw pointers, no torch header).
#include "common/box_math.h"
#include "cuda/launchers.h"

namespace mtlkit {
namespace cuda {
namespace {

template <typename T>
__global__ void box_iou_kernel(const T* a, int64_t n, const T* b, int64_t m, T* out) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t i = blockIdx.y;
  if (j >= m) return;
  const T* p = a + 4 * i;
  const T* q = b + 4 * j;
  out[i * m + j] = ::mtlkit::box_iou(p[0], p[1], p[2], p[3], ::mtlkit::box_area(p[0], p[1], p[2], p[3]), q[0], q[1], q[2], q[3],
                           ::mtlkit::box_area(q[0], q[1], q[2], q[3]));
}

}  // namespace

template <typename T>
cudaError_t box_iou(const T* a, int64_t n, const T* b, int64_t m, T* out, cudaStream_t stream) {
  if (n == 0 || m == 0) return cudaSuccess;
  const int threads = 256;
  for (int64_t start = 0; start < n; start += 65535) {  // gridDim.y limit
    const int64_t rows = n - start < 65535 ? n - start : 65535;
    dim3 grid(static_cast<unsigned>((m + threads - 1) / threads), static_cast<unsigned>(rows));
    box_iou_kernel<T><<<grid, threads, 0, stream>>>(a + 4 * start, rows, b, m, out + start * m);
  }
  return cudaGetLastError();
}

template cudaError_t box_iou<float>(const float*, int64_t, const float*, int64_t, float*, cudaStream_t);
template cudaError_t box_iou<double>(const double*, int64_t, const double*, int64_t, double*, cudaStream_t);

}  // namespace cuda
}  // namespace mtlkit
