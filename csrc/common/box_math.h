// Box math shared by the CPU (C++) and CUDA kernels. No torch header here.
//
// The arithmetic mirrors mtlkit/ops/reference.py operation for operation so
// that results are bit-identical on float32 (no FMA contraction: the build
// passes -ffp-contract=off / --fmad=false):
//   area  = clamp0(x2 - x1) * clamp0(y2 - y1)        (NaN propagates)
//   inter = clamp0(min(ax2,bx2) - max(ax1,bx1)) * clamp0(min(ay2,by2) - max(ay1,by1))
//   union = area_a + area_b - inter
//   iou   = union > 0 ? inter / union : 0            (never NaN)
// Encoding and decoding run in double and are rounded to T once.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define MTLKIT_HD __host__ __device__ __forceinline__
#else
#define MTLKIT_HD inline
#endif

namespace mtlkit {

// max(x, 0) that keeps NaN, like torch.clamp(min=0).
template <typename T>
MTLKIT_HD T clamp0(T x) {
  return x < T(0) ? T(0) : x;
}

template <typename T>
MTLKIT_HD T min_(T a, T b) {
  return b < a ? b : a;
}

template <typename T>
MTLKIT_HD T max_(T a, T b) {
  return a < b ? b : a;
}

template <typename T>
MTLKIT_HD T box_area(T x1, T y1, T x2, T y2) {
  return clamp0(x2 - x1) * clamp0(y2 - y1);
}

// IoU of box a and box b given their precomputed areas. When any coordinate
// is NaN the corresponding area is NaN, so the union is NaN and the result 0;
// min_/max_ only matter for NaN-free inputs, where they equal torch's.
template <typename T>
MTLKIT_HD T box_iou(T ax1, T ay1, T ax2, T ay2, T area_a, T bx1, T by1, T bx2, T by2, T area_b) {
  const T w = clamp0(min_(ax2, bx2) - max_(ax1, bx1));
  const T h = clamp0(min_(ay2, by2) - max_(ay1, by1));
  const T inter = w * h;
  const T uni = area_a + area_b - inter;
  const T q = inter / uni;  // computed unconditionally so the select vectorises
  return uni > T(0) ? q : T(0);
}

// The value t of type T such that, for every non-NaN x of type T,
// (x > t) == (double(x) > thr). Lets float kernels compare in float exactly as
// if they compared in double (torchvision's CPU semantics).
template <typename T>
inline T exact_threshold(double thr) {
  if (std::isnan(thr)) return std::numeric_limits<T>::quiet_NaN();
  T t = static_cast<T>(thr);  // round to nearest
  if (static_cast<double>(t) > thr) t = std::nextafter(t, -std::numeric_limits<T>::infinity());
  return t;
}
template <>
inline double exact_threshold<double>(double thr) {
  return thr;
}

// Prior (cx, cy, w, h) -> corner, as reference.cxcywh_to_xyxy.
template <typename T>
MTLKIT_HD void prior_to_xyxy(const T* p, T* x1, T* y1, T* x2, T* y2) {
  const T hw = p[2] / T(2);
  const T hh = p[3] / T(2);
  *x1 = p[0] - hw;
  *y1 = p[1] - hh;
  *x2 = p[0] + hw;
  *y2 = p[1] + hh;
}

// gt (x1, y1, x2, y2) matched to prior (cx, cy, w, h) -> 4 offsets.
template <typename T>
MTLKIT_HD void ssd_encode(const T* g, const T* p, double v0, double v1, T* out) {
  const double gx1 = g[0], gy1 = g[1], gx2 = g[2], gy2 = g[3];
  const double pcx = p[0], pcy = p[1], pw = p[2], ph = p[3];
  const double gcx = (gx1 + gx2) / 2.0;
  const double gcy = (gy1 + gy2) / 2.0;
  const double gw = gx2 - gx1;
  const double gh = gy2 - gy1;
  out[0] = static_cast<T>((gcx - pcx) / (pw * v0));
  out[1] = static_cast<T>((gcy - pcy) / (ph * v0));
  out[2] = static_cast<T>(log(gw / pw) / v1);
  out[3] = static_cast<T>(log(gh / ph) / v1);
}

// offsets l against prior p (cx, cy, w, h) -> box (x1, y1, x2, y2).
template <typename T>
MTLKIT_HD void ssd_decode(const T* l, const T* p, double v0, double v1, T* out) {
  const double pcx = p[0], pcy = p[1], pw = p[2], ph = p[3];
  const double cx = pcx + static_cast<double>(l[0]) * v0 * pw;
  const double cy = pcy + static_cast<double>(l[1]) * v0 * ph;
  const double w = pw * exp(static_cast<double>(l[2]) * v1);
  const double h = ph * exp(static_cast<double>(l[3]) * v1);
  out[0] = static_cast<T>(cx - w / 2.0);
  out[1] = static_cast<T>(cy - h / 2.0);
  out[2] = static_cast<T>(cx + w / 2.0);
  out[3] = static_cast<T>(cy + h / 2.0);
}

}  // namespace mtlkit
