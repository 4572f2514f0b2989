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

}  // namespace cpu
}  // namespace mtlkit
