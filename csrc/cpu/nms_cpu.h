// Greedy NMS on the CPU, shared by nms, batched_nms and ssd_postprocess.
// No torch header: plain arrays in, kept positions out.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <type_traits>
#include <vector>

#include "common/box_math.h"

namespace mtlkit {
namespace cpu {

// True when score a ranks strictly before score b: decreasing, NaN first
// (the order of torch.sort(descending=True)).
template <typename T>
inline bool score_before(T a, T b) {
  if (std::isnan(a)) return !std::isnan(b);
  if (std::isnan(b)) return false;
  return a > b;
}

// Indices [0, n) by decreasing score; equal scores keep the lower index first.
template <typename T>
inline void sort_by_score(const T* scores, int64_t n, std::vector<int64_t>& order) {
  order.resize(n);
  std::iota(order.begin(), order.end(), int64_t(0));
  std::sort(order.begin(), order.end(), [scores](int64_t i, int64_t j) {
    if (score_before(scores[i], scores[j])) return true;
    if (score_before(scores[j], scores[i])) return false;
    return i < j;
  });
}

// Boxes in rank order as structure of arrays; `id` carries the caller's index.
template <typename T>
struct RankedBoxes {
  std::vector<T> x1, y1, x2, y2, area;
  std::vector<int64_t> id;

  void reserve(size_t n) {
    x1.reserve(n), y1.reserve(n), x2.reserve(n), y2.reserve(n), area.reserve(n), id.reserve(n);
  }
  void clear() { x1.clear(), y1.clear(), x2.clear(), y2.clear(), area.clear(), id.clear(); }
  void push(const T* b, int64_t i) {
    x1.push_back(b[0]), y1.push_back(b[1]), x2.push_back(b[2]), y2.push_back(b[3]);
    area.push_back(box_area(b[0], b[1], b[2], b[3]));
    id.push_back(i);
  }
  int64_t size() const { return static_cast<int64_t>(id.size()); }
};

// Greedy NMS over boxes already in rank order. Appends the kept ids to `keep`.
// `t` is exact_threshold<T>(iou_threshold): suppress when iou > t.
//
// The inner loop is branch-free over the structure of arrays (vectorised); the
// candidate arrays are compacted whenever enough of the tail was suppressed,
// so heavily overlapping inputs shrink quickly. `rb` is consumed.
template <typename T>
void greedy_nms(RankedBoxes<T>& rb, T t, std::vector<int64_t>& keep) {
  using Flag = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  int64_t n = rb.size();
  std::vector<Flag> removed(n, 0);
  T* x1 = rb.x1.data();
  T* y1 = rb.y1.data();
  T* x2 = rb.x2.data();
  T* y2 = rb.y2.data();
  T* ar = rb.area.data();
  int64_t* id = rb.id.data();
  Flag* rm = removed.data();
  int64_t pending = 0;  // suppressions since the last compaction (upper bound)
  for (int64_t i = 0; i < n; ++i) {
    if (rm[i]) continue;
    keep.push_back(id[i]);
    const T ix1 = x1[i], iy1 = y1[i], ix2 = x2[i], iy2 = y2[i], ia = ar[i];
    Flag count = 0;
    for (int64_t j = i + 1; j < n; ++j) {
      const T iou = box_iou(ix1, iy1, ix2, iy2, ia, x1[j], y1[j], x2[j], y2[j], ar[j]);
      const Flag s = iou > t ? Flag(1) : Flag(0);
      rm[j] |= s;
      count += s;
    }
    pending += count;
    const int64_t rest = n - i - 1;
    if (rest > 256 && pending * 4 > rest) {
      int64_t w = i + 1;
      for (int64_t j = i + 1; j < n; ++j) {
        if (rm[j]) continue;
        x1[w] = x1[j], y1[w] = y1[j], x2[w] = x2[j], y2[w] = y2[j], ar[w] = ar[j], id[w] = id[j], rm[w] = 0;
        ++w;
      }
      n = w;
      pending = 0;
    }
  }
}

// Exact greedy NMS for t >= 0, checking each candidate only against the kept
// boxes that share a cell of a uniform grid with it. Since IoU > t >= 0 needs
// a positive intersection, and cell indices are a monotonic function of the
// coordinates, two boxes that intersect always share a cell: the result is the
// same as greedy_nms. Boxes whose area is 0, NaN or inf have IoU 0 with every
// box: they are kept and never suppress.
template <typename T>
void grid_nms(const RankedBoxes<T>& rb, T t, std::vector<int64_t>& keep) {
  const int64_t n = rb.size();
  const T* x1 = rb.x1.data();
  const T* y1 = rb.y1.data();
  const T* x2 = rb.x2.data();
  const T* y2 = rb.y2.data();
  const T* ar = rb.area.data();
  const auto interacts = [ar](int64_t i) { return ar[i] > T(0) && std::isfinite(ar[i]); };
  double minx = INFINITY, miny = INFINITY, maxx = -INFINITY, maxy = -INFINITY, sumw = 0, sumh = 0;
  int64_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!interacts(i)) continue;
    minx = std::min(minx, double(x1[i])), miny = std::min(miny, double(y1[i]));
    maxx = std::max(maxx, double(x2[i])), maxy = std::max(maxy, double(y2[i]));
    sumw += double(x2[i]) - double(x1[i]), sumh += double(y2[i]) - double(y1[i]);
    ++m;
  }
  double cell = m ? std::max(sumw, sumh) / double(m) : 0.0;
  const double spanx = maxx - minx, spany = maxy - miny;
  if (m) cell = std::max(cell, std::sqrt(spanx * spany / (4.0 * double(m))));  // <= ~4m cells
  if (m && !(cell > 0 && std::isfinite(cell) && std::isfinite(spanx) && std::isfinite(spany))) {
    RankedBoxes<T> copy = rb;
    greedy_nms(copy, t, keep);
    return;
  }
  const double inv = m ? 1.0 / cell : 0.0;
  const int64_t gx = m ? std::min<int64_t>(int64_t(spanx * inv) + 1, 2048) : 1;
  const int64_t gy = m ? std::min<int64_t>(int64_t(spany * inv) + 1, 2048) : 1;
  const auto cx = [&](T v) { return std::min<int64_t>(gx - 1, std::max<int64_t>(0, int64_t((double(v) - minx) * inv))); };
  const auto cy = [&](T v) { return std::min<int64_t>(gy - 1, std::max<int64_t>(0, int64_t((double(v) - miny) * inv))); };
  constexpr int64_t kBig = 16;  // boxes over more cells are checked by every candidate
  std::vector<int32_t> head(gx * gy, -1), entry, next;
  std::vector<int32_t> big;
  std::vector<T> kx1, ky1, kx2, ky2, ka;
  const auto suppressed_by = [&](int32_t k, int64_t i) {
    return box_iou(kx1[k], ky1[k], kx2[k], ky2[k], ka[k], x1[i], y1[i], x2[i], y2[i], ar[i]) > t;
  };
  for (int64_t i = 0; i < n; ++i) {
    if (!interacts(i)) {
      keep.push_back(rb.id[i]);
      continue;
    }
    const int64_t c0 = cx(x1[i]), c1 = cx(x2[i]), r0 = cy(y1[i]), r1 = cy(y2[i]);
    const int64_t cells = (c1 - c0 + 1) * (r1 - r0 + 1);
    const int32_t kept = static_cast<int32_t>(ka.size());
    bool sup = false;
    if (cells >= kept) {
      for (int32_t k = 0; k < kept && !sup; ++k) sup = suppressed_by(k, i);
    } else {
      for (size_t q = 0; q < big.size() && !sup; ++q) sup = suppressed_by(big[q], i);
      for (int64_t r = r0; r <= r1 && !sup; ++r)
        for (int64_t c = c0; c <= c1 && !sup; ++c)
          for (int32_t e = head[r * gx + c]; e >= 0 && !sup; e = next[e]) sup = suppressed_by(entry[e], i);
    }
    if (sup) continue;
    keep.push_back(rb.id[i]);
    kx1.push_back(x1[i]), ky1.push_back(y1[i]), kx2.push_back(x2[i]), ky2.push_back(y2[i]), ka.push_back(ar[i]);
    if (cells > kBig) {
      big.push_back(kept);
      continue;
    }
    for (int64_t r = r0; r <= r1; ++r)
      for (int64_t c = c0; c <= c1; ++c) {
        entry.push_back(kept);
        next.push_back(head[r * gx + c]);
        head[r * gx + c] = static_cast<int32_t>(entry.size()) - 1;
      }
  }
}

// Greedy NMS over boxes in rank order, choosing the faster exact algorithm.
template <typename T>
void rank_nms(RankedBoxes<T>& rb, T t, std::vector<int64_t>& keep) {
  if (t >= T(0) && rb.size() > 256)
    grid_nms(rb, t, keep);
  else
    greedy_nms(rb, t, keep);
}

}  // namespace cpu
}  // namespace mtlkit
