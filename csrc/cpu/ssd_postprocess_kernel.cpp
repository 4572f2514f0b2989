// CPU kernel of mtlkit::ssd_postprocess: softmax (ATen, so scores match the
// reference bit for bit), then per image in parallel and fused: score filter,
// top-k, decoding of the surviving boxes only, greedy NMS per class, merge.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "common/box_math.h"
#include "common/op_checks.h"
#include "cpu/nms_cpu.h"

namespace mtlkit {
namespace {

template <typename T>
struct Det {
  T score;
  int64_t label;
  int64_t prior;
  T box[4];
};

template <typename T>
struct Cand {
  T score;
  int64_t prior;
};

// Per-thread buffers reused across images.
template <typename T>
struct Workspace {
  std::vector<std::vector<Cand<T>>> cands;
};

template <typename T>
void postprocess_image(const T* prob, const T* loc, const T* pri, int64_t P, int64_t C, T ts, T ti, int64_t top_k,
                       int64_t max_det, double v0, double v1, Workspace<T>& ws, std::vector<Det<T>>& dets) {
  const auto before = [](const Cand<T>& a, const Cand<T>& b) {
    return a.score > b.score || (a.score == b.score && a.prior < b.prior);
  };
  auto& cands = ws.cands;
  cands.resize(C - 1);
  for (auto& v : cands) v.clear();
  for (int64_t p = 0; p < P; ++p) {
    const T* row = prob + p * C;
    for (int64_t c = 1; c < C; ++c)
      if (row[c] > ts) cands[c - 1].push_back({row[c], p});
  }
  cpu::RankedBoxes<T> rb;
  std::vector<int64_t> keep;
  std::vector<T> boxes;
  for (int64_t c = 1; c < C; ++c) {
    auto& v = cands[c - 1];
    if (v.empty()) continue;
    if (top_k > 0 && static_cast<int64_t>(v.size()) > top_k) {
      std::nth_element(v.begin(), v.begin() + (top_k - 1), v.end(), before);  // O(n) selection
      v.resize(top_k);
      std::sort(v.begin(), v.end(), before);
    } else {
      std::sort(v.begin(), v.end(), before);
    }
    const int64_t n = static_cast<int64_t>(v.size());
    boxes.resize(4 * n);
    rb.clear();
    rb.reserve(n);
    for (int64_t k = 0; k < n; ++k) {
      ssd_decode(loc + 4 * v[k].prior, pri + 4 * v[k].prior, v0, v1, &boxes[4 * k]);
      rb.push(&boxes[4 * k], k);
    }
    keep.clear();
    cpu::rank_nms(rb, ti, keep);
    for (int64_t k : keep) {
      Det<T> d{v[k].score, c, v[k].prior, {boxes[4 * k], boxes[4 * k + 1], boxes[4 * k + 2], boxes[4 * k + 3]}};
      dets.push_back(d);
    }
  }
  const auto det_before = [](const Det<T>& a, const Det<T>& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.label != b.label) return a.label < b.label;
    return a.prior < b.prior;
  };
  if (max_det > 0 && static_cast<int64_t>(dets.size()) > max_det) {
    std::partial_sort(dets.begin(), dets.begin() + max_det, dets.end(), det_before);
    dets.resize(max_det);
  } else {
    std::sort(dets.begin(), dets.end(), det_before);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> ssd_postprocess_cpu(
    const at::Tensor& loc_in, const at::Tensor& conf_in, const at::Tensor& priors_in, double score_threshold,
    double iou_threshold, int64_t top_k, int64_t max_detections, double v0, double v1) {
  const auto in = check_postprocess_inputs(loc_in, conf_in, priors_in);
  const auto &loc = in.loc, &priors = in.priors;
  const auto dt = in.dtype;
  const int64_t B = in.B, P = in.P, C = in.C;
  const auto probs = at::softmax(to_compute(conf_in).to(dt), -1).contiguous();
  auto counts = at::zeros({B}, loc.options().dtype(at::kLong));
  return AT_DISPATCH_FLOATING_TYPES(dt, "mtlkit_ssd_postprocess", [&] {
    using T = scalar_t;
    std::vector<std::vector<Det<T>>> per_image(B);
    const T* pr = probs.data_ptr<T>();
    const T* lo = loc.data_ptr<T>();
    const T* pp = priors.data_ptr<T>();
    const T ts = exact_threshold<T>(score_threshold), ti = exact_threshold<T>(iou_threshold);
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      Workspace<T> ws;
      for (int64_t b = b0; b < b1; ++b)
        postprocess_image<T>(pr + b * P * C, lo + b * P * 4, pp, P, C, ts, ti, top_k, max_detections, v0, v1, ws,
                             per_image[b]);
    });
    int64_t total = 0;
    int64_t* cnt = counts.data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b) total += (cnt[b] = static_cast<int64_t>(per_image[b].size()));
    auto boxes = at::empty({total, 4}, loc.options());
    auto scores = at::empty({total}, loc.options());
    auto labels = at::empty({total}, loc.options().dtype(at::kLong));
    T* bo = boxes.data_ptr<T>();
    T* so = scores.data_ptr<T>();
    int64_t* lab = labels.data_ptr<int64_t>();
    int64_t k = 0;
    for (const auto& dets : per_image)
      for (const auto& d : dets) {
        std::copy(d.box, d.box + 4, bo + 4 * k);
        so[k] = d.score;
        lab[k] = d.label;
        ++k;
      }
    return std::make_tuple(boxes, scores, labels, counts);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(mtlkit, CPU, m) { m.impl("ssd_postprocess", ssd_postprocess_cpu); }

}  // namespace mtlkit
