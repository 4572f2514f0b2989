// CUDA kernels of mtlkit::ssd_match over a whole batch with ragged GT
// (offsets in device memory: no host sync, no per-image launch):
//   1. gt_best_prior_kernel: one block per GT, the prior of highest IoU
//      (ties: lowest prior index) by a deterministic block reduction;
//   2. match_encode_kernel: one thread per (image, prior): best GT, forced
//      matches (last GT wins), encoding, labels -- matching and encoding fused.
#include "common/box_math.h"
#include "cuda/launchers.h"

namespace mtlkit {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__device__ __forceinline__ void prior_box(const T* priors, int64_t p, T& x1, T& y1, T& x2, T& y2, T& area) {
  ::mtlkit::prior_to_xyxy(priors + 4 * p, &x1, &y1, &x2, &y2);
  area = ::mtlkit::box_area(x1, y1, x2, y2);
}

template <typename T>
__global__ void gt_best_prior_kernel(const T* gt, const T* priors, int64_t P, int64_t* gt_best_prior) {
  const int64_t g = blockIdx.x;
  const T* q = gt + 4 * g;
  const T gx1 = q[0], gy1 = q[1], gx2 = q[2], gy2 = q[3], ga = ::mtlkit::box_area(gx1, gy1, gx2, gy2);
  T best = T(0);
  int64_t best_p = -1;  // only IoU > 0 counts, as on the CPU
  for (int64_t p = threadIdx.x; p < P; p += blockDim.x) {
    T x1, y1, x2, y2, a;
    prior_box(priors, p, x1, y1, x2, y2, a);
    const T iou = ::mtlkit::box_iou(gx1, gy1, gx2, gy2, ga, x1, y1, x2, y2, a);
    if (iou > best) best = iou, best_p = p;  // p ascending: first maximum per thread
  }
  __shared__ T s_best[kThreads];
  __shared__ int64_t s_p[kThreads];
  s_best[threadIdx.x] = best;
  s_p[threadIdx.x] = best_p;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) {
      const T ob = s_best[threadIdx.x + stride];
      const int64_t op = s_p[threadIdx.x + stride];
      const T mb = s_best[threadIdx.x];
      const int64_t mp = s_p[threadIdx.x];
      if (ob > mb || (ob == mb && op >= 0 && (mp < 0 || op < mp))) {
        s_best[threadIdx.x] = ob;
        s_p[threadIdx.x] = op;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) gt_best_prior[g] = s_p[0];
}

template <typename T>
__global__ void match_encode_kernel(const T* gt, const int64_t* labels, const int64_t* offsets, int64_t G,
                                    const T* priors, int64_t P, double threshold, double v0, double v1,
                                    const int64_t* gt_best_prior, T* loc, int64_t* out_labels) {
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t b = blockIdx.y;
  if (p >= P) return;
  // Clamp the offsets so malformed ones cannot read out of bounds.
  int64_t lo = offsets[b], hi = offsets[b + 1];
  lo = lo < 0 ? 0 : (lo > G ? G : lo);
  hi = hi < lo ? lo : (hi > G ? G : hi);
  T x1, y1, x2, y2, a;
  prior_box(priors, p, x1, y1, x2, y2, a);
  T best = T(-1);
  int64_t best_g = -1, forced = -1;
  for (int64_t g = lo; g < hi; ++g) {
    const T* q = gt + 4 * g;
    const T iou = ::mtlkit::box_iou(q[0], q[1], q[2], q[3], ::mtlkit::box_area(q[0], q[1], q[2], q[3]), x1, y1, x2, y2, a);
    if (iou > best) best = iou, best_g = g;  // lowest GT index wins ties
    if (gt_best_prior[g] == p) forced = g;   // the last GT wins a shared prior
  }
  const int64_t m = forced >= 0 ? forced : (best_g >= 0 && static_cast<double>(best) >= threshold ? best_g : -1);
  T* out = loc + (b * P + p) * 4;
  if (m < 0) {
    out[0] = out[1] = out[2] = out[3] = T(0);
    out_labels[b * P + p] = 0;
    return;
  }
  out_labels[b * P + p] = labels[m];
  ::mtlkit::ssd_encode(gt + 4 * m, priors + 4 * p, v0, v1, out);
}

}  // namespace

template <typename T>
cudaError_t ssd_match(const T* gt, const int64_t* labels, const int64_t* offsets, int64_t B, int64_t G,
                      const T* priors, int64_t P, double threshold, double v0, double v1, int64_t* gt_best_prior,
                      T* loc, int64_t* out_labels, cudaStream_t stream) {
  if (B == 0 || P == 0) return cudaSuccess;
  if (G > 0) gt_best_prior_kernel<T><<<static_cast<unsigned>(G), kThreads, 0, stream>>>(gt, priors, P, gt_best_prior);
  for (int64_t start = 0; start < B; start += 65535) {  // gridDim.y limit
    const int64_t rows = B - start < 65535 ? B - start : 65535;
    dim3 grid(static_cast<unsigned>((P + kThreads - 1) / kThreads), static_cast<unsigned>(rows));
    match_encode_kernel<T><<<grid, kThreads, 0, stream>>>(gt, labels, offsets + start, G, priors, P, threshold, v0,
                                                          v1, gt_best_prior, loc + start * P * 4,
                                                          out_labels + start * P);
  }
  return cudaGetLastError();
}

template cudaError_t ssd_match<float>(const float*, const int64_t*, const int64_t*, int64_t, int64_t, const float*,
                                      int64_t, double, double, double, int64_t*, float*, int64_t*, cudaStream_t);
template cudaError_t ssd_match<double>(const double*, const int64_t*, const int64_t*, int64_t, int64_t,
                                       const double*, int64_t, double, double, double, int64_t*, double*, int64_t*,
                                       cudaStream_t);

}  // namespace cuda
}  // namespace mtlkit
