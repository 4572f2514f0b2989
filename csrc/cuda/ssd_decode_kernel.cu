// CUDA kernels of mtlkit::ssd_decode and of the ssd_postprocess core
// (per (image, class) segment: decode the sorted candidates, greedy NMS).
#include "common/box_math.h"
#include "cuda/launchers.h"

namespace mtlkit {
namespace cuda {
namespace {

template <typename T>
__global__ void decode_kernel(const T* loc, const T* priors, int64_t total, int64_t P, double v0, double v1,
                              T* out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  ::mtlkit::ssd_decode(loc + 4 * i, priors + 4 * (i % P), v0, v1, out + 4 * i);
}

// One block per segment. Greedy NMS with one __syncthreads per candidate: the
// flag of candidate i is final once every earlier kept candidate was processed.
template <typename T>
__global__ void segmented_nms_kernel(const T* loc, const T* priors, const int64_t* cand_prior,
                                     const int64_t* cand_count, int64_t K, int64_t cm1, int64_t P, double v0,
                                     double v1, T t, T* boxes, uint8_t* removed, uint8_t* keep) {
  const int64_t s = blockIdx.x;
  const int64_t b = s / cm1;
  int64_t cnt = cand_count[s];
  cnt = cnt < 0 ? 0 : (cnt > K ? K : cnt);
  T* bx = boxes + s * K * 4;
  uint8_t* rm = removed + s * K;
  uint8_t* kp = keep + s * K;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
    kp[k] = 0;
    rm[k] = 0;
    if (k < cnt) {
      const int64_t p = cand_prior[s * K + k];
      ::mtlkit::ssd_decode(loc + (b * P + p) * 4, priors + 4 * p, v0, v1, bx + 4 * k);
    }
  }
  __syncthreads();
  for (int64_t i = 0; i < cnt; ++i) {
    if (rm[i]) continue;  // uniform: written before the last barrier
    if (threadIdx.x == 0) kp[i] = 1;
    const T* q = bx + 4 * i;
    const T x1 = q[0], y1 = q[1], x2 = q[2], y2 = q[3], a = ::mtlkit::box_area(x1, y1, x2, y2);
    for (int64_t j = i + 1 + threadIdx.x; j < cnt; j += blockDim.x) {
      if (rm[j]) continue;
      const T* r = bx + 4 * j;
      if (::mtlkit::box_iou(x1, y1, x2, y2, a, r[0], r[1], r[2], r[3], ::mtlkit::box_area(r[0], r[1], r[2], r[3])) > t) rm[j] = 1;
    }
    __syncthreads();
  }
}

}  // namespace

template <typename T>
cudaError_t ssd_decode(const T* loc, const T* priors, int64_t total, int64_t P, double v0, double v1, T* out,
                       cudaStream_t stream) {
  if (total == 0) return cudaSuccess;
  const int threads = 256;
  decode_kernel<T><<<static_cast<unsigned>((total + threads - 1) / threads), threads, 0, stream>>>(
      loc, priors, total, P, v0, v1, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t segmented_nms(const T* loc, const T* priors, const int64_t* cand_prior, const int64_t* cand_count,
                          int64_t S, int64_t K, int64_t classes_minus_one, int64_t P, double v0, double v1, T t,
                          T* boxes, uint8_t* removed, uint8_t* keep, cudaStream_t stream) {
  if (S == 0 || K == 0) return cudaSuccess;
  segmented_nms_kernel<T><<<static_cast<unsigned>(S), 128, 0, stream>>>(
      loc, priors, cand_prior, cand_count, K, classes_minus_one, P, v0, v1, t, boxes, removed, keep);
  return cudaGetLastError();
}

template cudaError_t ssd_decode<float>(const float*, const float*, int64_t, int64_t, double, double, float*,
                                       cudaStream_t);
template cudaError_t ssd_decode<double>(const double*, const double*, int64_t, int64_t, double, double, double*,
                                        cudaStream_t);
template cudaError_t segmented_nms<float>(const float*, const float*, const int64_t*, const int64_t*, int64_t,
                                          int64_t, int64_t, int64_t, double, double, float, float*, uint8_t*,
                                          uint8_t*, cudaStream_t);
template cudaError_t segmented_nms<double>(const double*, const double*, const int64_t*, const int64_t*, int64_t,
                                           int64_t, int64_t, int64_t, double, double, double, double*, uint8_t*,
                                           uint8_t*, cudaStream_t);

}  // namespace cuda
}  // namespace mtlkit
