// CPU kernel of mtlkit::box_iou: rows in parallel, a vectorised loop over b's
// boxes kept as a structure of arrays.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "common/box_math.h"
#include "common/op_checks.h"

namespace mtlkit {
namespace {

template <typename T>
void iou_row(T x1, T y1, T x2, T y2, T area, const T* __restrict__ bx1, const T* __restrict__ by1,
             const T* __restrict__ bx2, const T* __restrict__ by2, const T* __restrict__ ba, int64_t m,
             T* __restrict__ row) {
  for (int64_t j = 0; j < m; ++j) row[j] = box_iou(x1, y1, x2, y2, area, bx1[j], by1[j], bx2[j], by2[j], ba[j]);
}

template <typename T>
void box_iou_impl(const T* a, int64_t n, const T* b, int64_t m, T* out) {
  std::vector<T> bx1(m), by1(m), bx2(m), by2(m), ba(m);
  for (int64_t j = 0; j < m; ++j) {
    const T* q = b + 4 * j;
    bx1[j] = q[0], by1[j] = q[1], bx2[j] = q[2], by2[j] = q[3];
    ba[j] = box_area(q[0], q[1], q[2], q[3]);
  }
  at::parallel_for(0, n, std::max<int64_t>(1, 16384 / std::max<int64_t>(m, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const T* p = a + 4 * i;
      const T x1 = p[0], y1 = p[1], x2 = p[2], y2 = p[3], area = box_area(x1, y1, x2, y2);
      iou_row(x1, y1, x2, y2, area, bx1.data(), by1.data(), bx2.data(), by2.data(), ba.data(), m, out + i * m);
    }
  });
}

at::Tensor box_iou_cpu(const at::Tensor& a_in, const at::Tensor& b_in) {
  const auto in = check_box_iou_inputs(a_in, b_in);
  const auto &a = in.a, &b = in.b;
  const auto dt = in.dtype;
  auto out = at::empty({a.size(0), b.size(0)}, a.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(dt, "mtlkit_box_iou", [&] {
    box_iou_impl<scalar_t>(a.data_ptr<scalar_t>(), a.size(0), b.data_ptr<scalar_t>(), b.size(0),
                           out.data_ptr<scalar_t>());
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mtlkit, CPU, m) { m.impl("box_iou", box_iou_cpu); }

}  // namespace mtlkit
