// Raw CUDA launchers of the mtlkit ops: pointers, sizes and a stream in, no
// torch types, so the .cu files compile with nvcc even against a CPU-only
// torch. Each returns the launch status (cudaGetLastError()).
//
// Instantiated for T = float and double.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace mtlkit {
namespace cuda {

constexpr int kNmsBlock = 64;  // boxes per mask word

inline int64_t nms_col_blocks(int64_t n) { return (n + kNmsBlock - 1) / kNmsBlock; }

// out (n, m) = IoU of a (n, 4) and b (m, 4) xyxy.
template <typename T>
cudaError_t box_iou(const T* a, int64_t n, const T* b, int64_t m, T* out, cudaStream_t stream);

// Bit j of mask[i * col_blocks + j / 64] is set when rank-ordered box j (> i)
// has IoU > threshold with box i (and, when groups is not null, the same group).
// Only words j / 64 >= i / 64 are written. t: see exact_threshold.
template <typename T>
cudaError_t nms_mask(const T* boxes, const int64_t* groups, int64_t n, T t, unsigned long long* mask,
                     cudaStream_t stream);

// The greedy pass over the mask, on the device (one block): keep[0..*num_keep)
// receives the kept ranks in order. scratch: col_blocks words (used only when
// they do not fit in shared memory).
cudaError_t nms_gather_keep(const unsigned long long* mask, int64_t n, unsigned long long* scratch, int64_t* keep,
                            int64_t* num_keep, cudaStream_t stream);

// Fused matching + encoding over a batch with ragged GT.
// gt (G, 4), labels (G,), offsets (B + 1,) in device memory; priors (P, 4).
// gt_best_prior (G,) int64 scratch. loc (B, P, 4) and out_labels (B, P) are
// fully written (background: zeros).
template <typename T>
cudaError_t ssd_match(const T* gt, const int64_t* labels, const int64_t* offsets, int64_t B, int64_t G,
                      const T* priors, int64_t P, double threshold, double v0, double v1, int64_t* gt_best_prior,
                      T* loc, int64_t* out_labels, cudaStream_t stream);

// out (total, 4) boxes from loc (total, 4) with prior index i % P.
template <typename T>
cudaError_t ssd_decode(const T* loc, const T* priors, int64_t total, int64_t P, double v0, double v1, T* out,
                       cudaStream_t stream);

// Post-processing core, one block per (image, class) segment of up to K
// candidates already sorted by score: cand_prior (S, K) prior indices,
// cand_count (S,) valid counts; S = B * (C - 1), segment s belongs to image
// s / (C - 1). Decodes the candidates into boxes (S, K, 4) and runs greedy
// NMS, writing keep (S, K) uint8 flags. removed: (S, K) uint8 scratch.
template <typename T>
cudaError_t segmented_nms(const T* loc, const T* priors, const int64_t* cand_prior, const int64_t* cand_count,
                          int64_t S, int64_t K, int64_t classes_minus_one, int64_t P, double v0, double v1, T t,
                          T* boxes, uint8_t* removed, uint8_t* keep, cudaStream_t stream);

}  // namespace cuda
}  // namespace mtlkit
