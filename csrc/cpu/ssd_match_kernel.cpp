// CPU kernel of mtlkit::ssd_match: matching and encoding fused, images in
// parallel. Per image the IoU of one GT against all priors is one vectorised
// pass (priors as a structure of arrays); no GT x prior matrix is kept.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstring>
#include <tuple>
#include <type_traits>
#include <vector>

#include "common/box_math.h"
#include "common/op_checks.h"

namespace mtlkit {
namespace {

// Index of the first maximum of r[0..P) (IoUs: >= 0, never NaN), -1 when the
// maximum is 0. The maximum is found on the bit patterns, which order like
// the values for non-negative floats and vectorise as an integer reduction.
template <typename T>
int64_t first_max(const T* r, int64_t P) {
  using Bits = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  Bits m = 0;
  for (int64_t p = 0; p < P; ++p) {
    Bits v;
    std::memcpy(&v, r + p, sizeof(T));
    m = v > m ? v : m;
  }
  if (m == 0) return -1;
  T mv;
  std::memcpy(&mv, &m, sizeof(T));
  for (int64_t p = 0; p < P; ++p)
    if (r[p] == mv) return p;
  return -1;
}

// IoU of one GT with every prior into r, and the running best GT per prior.
// Strict comparison: the lowest GT index wins ties. Mask arithmetic and
// restrict pointers keep the loop vectorised.
template <typename T, typename Idx>
void match_row(T gx1, T gy1, T gx2, T gy2, T ga, Idx gi, const T* __restrict__ px1, const T* __restrict__ py1,
               const T* __restrict__ px2, const T* __restrict__ py2, const T* __restrict__ pa, int64_t P,
               T* __restrict__ r, T* __restrict__ bs, Idx* __restrict__ bg) {
  for (int64_t p = 0; p < P; ++p) {
    const T iou = box_iou(gx1, gy1, gx2, gy2, ga, px1[p], py1[p], px2[p], py2[p], pa[p]);
    r[p] = iou;
    const T old = bs[p];
    const Idx up = -static_cast<Idx>(iou > old);
    bs[p] = iou > old ? iou : old;
    bg[p] = bg[p] + ((gi - bg[p]) & up);
  }
}

template <typename T>
void ssd_match_impl(const T* gt, const int64_t* gl, const int64_t* off, int64_t B, const T* pri, int64_t P,
                    double thr, double v0, double v1, T* loc, int64_t* labels) {
  std::vector<T> px1(P), py1(P), px2(P), py2(P), pa(P);
  for (int64_t p = 0; p < P; ++p) {
    prior_to_xyxy(pri + 4 * p, &px1[p], &py1[p], &px2[p], &py2[p]);
    pa[p] = box_area(px1[p], py1[p], px2[p], py2[p]);
  }
  at::parallel_for(0, B, 1, [&](int64_t b_lo, int64_t b_hi) {
    std::vector<T> best(P), row(P);
    using Idx = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;  // same width as T
    std::vector<Idx> best_gt(P);
    std::vector<uint8_t> forced(P);
    for (int64_t b = b_lo; b < b_hi; ++b) {
      const int64_t lo = off[b], n = off[b + 1] - off[b];
      if (n == 0) continue;  // outputs are zero-initialised: all background
      std::fill(best.begin(), best.end(), T(-1));
      std::fill(forced.begin(), forced.end(), uint8_t(0));
      std::vector<int64_t> gt_best_prior(n, -1);
      for (int64_t g = 0; g < n; ++g) {
        const T* q = gt + 4 * (lo + g);
        const T gx1 = q[0], gy1 = q[1], gx2 = q[2], gy2 = q[3], ga = box_area(gx1, gy1, gx2, gy2);
        const Idx gi = static_cast<Idx>(g);
        T* r = row.data();
        match_row(gx1, gy1, gx2, gy2, ga, gi, px1.data(), py1.data(), px2.data(), py2.data(), pa.data(), P, r,
                  best.data(), best_gt.data());
        const int64_t mi = first_max(r, P);
        gt_best_prior[g] = mi;              // -1 when the GT overlaps no prior
      }
      for (int64_t g = 0; g < n; ++g) {  // later GTs win shared priors
        const int64_t p = gt_best_prior[g];
        if (p < 0) continue;
        best_gt[p] = static_cast<Idx>(g);
        forced[p] = 1;
      }
      T* lb = loc + b * P * 4;
      int64_t* lab = labels + b * P;
      for (int64_t p = 0; p < P; ++p) {
        if (!(forced[p] || static_cast<double>(best[p]) >= thr)) continue;
        const int64_t g = lo + best_gt[p];
        lab[p] = gl[g];
        ssd_encode(gt + 4 * g, pri + 4 * p, v0, v1, lb + 4 * p);
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> ssd_match_cpu(const at::Tensor& gt_boxes_in, const at::Tensor& gt_labels_in,
                                                 const at::Tensor& gt_offsets_in, const at::Tensor& priors_in,
                                                 double iou_threshold, double v0, double v1) {
  const auto in = check_match_inputs(gt_boxes_in, gt_labels_in, gt_offsets_in, priors_in);
  const auto &priors = in.priors, &gt = in.gt, &labels_in = in.labels, &off = in.offsets;
  const auto dt = in.dtype;
  const int64_t B = off.size(0) - 1, P = priors.size(0), G = gt.size(0);
  const int64_t* o = off.data_ptr<int64_t>();
  TORCH_CHECK_VALUE(o[0] == 0 && o[B] == G, "gt_offsets: expected to start at 0 and end at ", G, " (gt count)");
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK_VALUE(o[b] <= o[b + 1], "gt_offsets: expected a non-decreasing sequence");
  auto loc = at::zeros({B, P, 4}, priors.options());
  auto labels = at::zeros({B, P}, priors.options().dtype(at::kLong));
  if (B == 0 || P == 0 || G == 0) return {loc, labels};
  AT_DISPATCH_FLOATING_TYPES(dt, "mtlkit_ssd_match", [&] {
    ssd_match_impl<scalar_t>(gt.data_ptr<scalar_t>(), labels_in.data_ptr<int64_t>(), o, B,
                             priors.data_ptr<scalar_t>(), P, iou_threshold, v0, v1, loc.data_ptr<scalar_t>(),
                             labels.data_ptr<int64_t>());
  });
  return {loc, labels};
}

}  // namespace

TORCH_LIBRARY_IMPL(mtlkit, CPU, m) { m.impl("ssd_match", ssd_match_cpu); }

}  // namespace mtlkit
