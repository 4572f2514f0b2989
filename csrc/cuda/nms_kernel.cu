// CUDA kernels of mtlkit::nms / batched_nms: a 64x64-tile IoU bitmask, then
// the greedy pass over the mask in a single block on the device (no copy of
// the mask to the host). Boxes arrive sorted by rank (stable), so the result
// equals the CPU one exactly.
#include "common/box_math.h"
#include "cuda/launchers.h"

namespace mtlkit {
namespace cuda {
namespace {

template <typename T>
__global__ void nms_mask_kernel(const T* boxes, const int64_t* groups, int64_t n, int64_t col_blocks, T t,
                                unsigned long long* mask) {
  const int64_t row_block = blockIdx.y;
  const int64_t col_block = blockIdx.x;
  if (col_block < row_block) return;  // never read by the gather pass
  const int64_t row_size = min(n - row_block * kNmsBlock, static_cast<int64_t>(kNmsBlock));
  const int64_t col_size = min(n - col_block * kNmsBlock, static_cast<int64_t>(kNmsBlock));

  __shared__ T cb[kNmsBlock * 5];
  __shared__ int64_t cg[kNmsBlock];
  const int tid = threadIdx.x;
  if (tid < col_size) {
    const T* q = boxes + 4 * (col_block * kNmsBlock + tid);
    cb[5 * tid + 0] = q[0];
    cb[5 * tid + 1] = q[1];
    cb[5 * tid + 2] = q[2];
    cb[5 * tid + 3] = q[3];
    cb[5 * tid + 4] = ::mtlkit::box_area(q[0], q[1], q[2], q[3]);
    cg[tid] = groups ? groups[col_block * kNmsBlock + tid] : 0;
  }
  __syncthreads();
  if (tid >= row_size) return;
  const int64_t i = row_block * kNmsBlock + tid;
  const T* p = boxes + 4 * i;
  const T x1 = p[0], y1 = p[1], x2 = p[2], y2 = p[3], area = ::mtlkit::box_area(x1, y1, x2, y2);
  const int64_t gi = groups ? groups[i] : 0;
  unsigned long long bits = 0;
  for (int64_t k = (row_block == col_block) ? tid + 1 : 0; k < col_size; ++k) {
    if (cg[k] != gi) continue;
    const T* c = cb + 5 * k;
    if (::mtlkit::box_iou(x1, y1, x2, y2, area, c[0], c[1], c[2], c[3], c[4]) > t) bits |= 1ULL << k;
  }
  mask[i * col_blocks + col_block] = bits;
}

// One block walks the ranks in order; `removed` words past the current one are
// updated in parallel (each by its own thread), the current word in registers.
__global__ void nms_gather_kernel(const unsigned long long* mask, int64_t n, int64_t col_blocks,
                                  unsigned long long* scratch, bool use_shared, int64_t* keep, int64_t* num_keep) {
  extern __shared__ unsigned long long shared_removed[];
  unsigned long long* removed = use_shared ? shared_removed : scratch;
  for (int64_t k = threadIdx.x; k < col_blocks; k += blockDim.x) removed[k] = 0;
  __syncthreads();
  int64_t kept = 0;
  for (int64_t nb = 0; nb < col_blocks; ++nb) {
    unsigned long long word = removed[nb];
    const int64_t base = nb * kNmsBlock;
    const int64_t size = min(n - base, static_cast<int64_t>(kNmsBlock));
    for (int64_t bit = 0; bit < size; ++bit) {
      if (word & (1ULL << bit)) continue;
      const int64_t i = base + bit;
      if (threadIdx.x == 0) keep[kept] = i;
      ++kept;
      const unsigned long long* row = mask + i * col_blocks;
      word |= row[nb];
      for (int64_t k = nb + 1 + threadIdx.x; k < col_blocks; k += blockDim.x) removed[k] |= row[k];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) *num_keep = kept;
}

}  // namespace

template <typename T>
cudaError_t nms_mask(const T* boxes, const int64_t* groups, int64_t n, T t, unsigned long long* mask,
                     cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const int64_t cb = nms_col_blocks(n);
  if (cb > 65535) return cudaErrorInvalidValue;  // > 4M boxes: the mask alone would not fit
  dim3 grid(static_cast<unsigned>(cb), static_cast<unsigned>(cb));
  nms_mask_kernel<T><<<grid, kNmsBlock, 0, stream>>>(boxes, groups, n, cb, t, mask);
  return cudaGetLastError();
}

cudaError_t nms_gather_keep(const unsigned long long* mask, int64_t n, unsigned long long* scratch, int64_t* keep,
                            int64_t* num_keep, cudaStream_t stream) {
  const int64_t cb = nms_col_blocks(n);
  const size_t bytes = static_cast<size_t>(cb) * sizeof(unsigned long long);
  const bool use_shared = bytes <= 32 * 1024;
  nms_gather_kernel<<<1, 256, use_shared ? bytes : 0, stream>>>(mask, n, cb, scratch, use_shared, keep, num_keep);
  return cudaGetLastError();
}

template cudaError_t nms_mask<float>(const float*, const int64_t*, int64_t, float, unsigned long long*,
                                     cudaStream_t);
template cudaError_t nms_mask<double>(const double*, const int64_t*, int64_t, double, unsigned long long*,
                                      cudaStream_t);

}  // namespace cuda
}  // namespace mtlkit
