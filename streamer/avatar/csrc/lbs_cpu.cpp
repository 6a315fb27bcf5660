// Sparse linear blend skinning of Gaussians on the CPU (the per-frame hot path).
//
// For each Gaussian i with joints idx[i, k] and weights w[i, k] (k < K, the non-zero weights):
//   M      = sum_k w * A[idx]          blended 3x4 transform (row-major), A: [J, 12]
//   mean'  = M[:, :3] @ mean + M[:, 3]
//   q      = normalize(sum_k w * Q[idx]) blended joint rotation, Q: [J, 4] wxyz, signs aligned
//   quat'  = q * quat                  Hamilton product (wxyz)
// The pure-torch twin is streamer.avatar.lbs.skin_gaussians (dense weights); tests compare them.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace py = pybind11;
using f32 = py::array_t<float, py::array::c_style | py::array::forcecast>;
using i32 = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

static void check(bool ok, const std::string& msg) {
  if (!ok) throw std::invalid_argument("skin_sparse: " + msg);
}

// Writes posed means [N,3] and quats [N,4] into out_means / out_quats.
static void skin_sparse(f32 means, f32 quats, i32 idx, f32 w, f32 A, f32 Q, py::array_t<float> out_means,
                        py::array_t<float> out_quats) {
  check(means.ndim() == 2 && means.shape(1) == 3, "means must be [N, 3]");
  const py::ssize_t n = means.shape(0);
  check(quats.ndim() == 2 && quats.shape(0) == n && quats.shape(1) == 4, "quats must be [N, 4]");
  check(idx.ndim() == 2 && idx.shape(0) == n, "idx must be [N, K]");
  const py::ssize_t k = idx.shape(1);
  check(w.ndim() == 2 && w.shape(0) == n && w.shape(1) == k, "w must be [N, K] like idx");
  check(A.ndim() == 2 && A.shape(1) == 12, "A must be [J, 12]");
  const py::ssize_t j = A.shape(0);
  check(Q.ndim() == 2 && Q.shape(0) == j && Q.shape(1) == 4, "Q must be [J, 4]");
  check(out_means.ndim() == 2 && out_means.shape(0) == n && out_means.shape(1) == 3, "out_means must be [N, 3]");
  check(out_quats.ndim() == 2 && out_quats.shape(0) == n && out_quats.shape(1) == 4, "out_quats must be [N, 4]");
  check((out_means.flags() & py::array::c_style) && (out_quats.flags() & py::array::c_style),
        "outputs must be C-contiguous");
  const float* pm = means.data();
  const float* pq = quats.data();
  const int32_t* pi = idx.data();
  const float* pw = w.data();
  const float* pa = A.data();
  const float* pQ = Q.data();
  bool in_range = true;  // one check at the end: building the message per element would dominate
  for (py::ssize_t t = 0; t < n * k; ++t) in_range &= (pi[t] >= 0) & (pi[t] < j);
  check(in_range, "joint index out of range");
  float* om = out_means.mutable_data();
  float* oq = out_quats.mutable_data();
  // One 16-float row per joint (3x4 transform, then the quaternion): the blend of a Gaussian is
  // then K vector FMAs. Without this layout (and `omp simd`), GCC -O3 vectorised across
  // Gaussians with gathers and ran ~30x slower.
  std::vector<float> table(static_cast<size_t>(j) * 16);
  for (py::ssize_t a = 0; a < j; ++a) {
    for (int c = 0; c < 12; ++c) table[a * 16 + c] = pa[a * 12 + c];
    for (int c = 0; c < 4; ++c) table[a * 16 + 12 + c] = pQ[a * 4 + c];
  }
  const float* tab = table.data();
  {
    py::gil_scoped_release release;
#pragma omp parallel for schedule(static)
    for (py::ssize_t i = 0; i < n; ++i) {
      alignas(64) float acc[16] = {0};
      for (py::ssize_t s = 0; s < k; ++s) {
        const float ws = pw[i * k + s];
        const float* row = tab + 16 * pi[i * k + s];
#pragma omp simd
        for (int c = 0; c < 16; ++c) acc[c] += ws * row[c];
      }
      const float* m = acc;
      const float* r = acc + 12;
      const float x = pm[3 * i], y = pm[3 * i + 1], z = pm[3 * i + 2];
      om[3 * i + 0] = m[0] * x + m[1] * y + m[2] * z + m[3];
      om[3 * i + 1] = m[4] * x + m[5] * y + m[6] * z + m[7];
      om[3 * i + 2] = m[8] * x + m[9] * y + m[10] * z + m[11];
      float norm = std::sqrt(r[0] * r[0] + r[1] * r[1] + r[2] * r[2] + r[3] * r[3]);
      norm = norm > 1e-12f ? 1.0f / norm : 0.0f;
      const float aw = r[0] * norm, ax = r[1] * norm, ay = r[2] * norm, az = r[3] * norm;
      const float bw = pq[4 * i], bx = pq[4 * i + 1], by = pq[4 * i + 2], bz = pq[4 * i + 3];
      oq[4 * i + 0] = aw * bw - ax * bx - ay * by - az * bz;
      oq[4 * i + 1] = aw * bx + ax * bw + ay * bz - az * by;
      oq[4 * i + 2] = aw * by - ax * bz + ay * bw + az * bx;
      oq[4 * i + 3] = aw * bz + ax * by - ay * bx + az * bw;
    }
  }
}

PYBIND11_MODULE(_lbs_cpu, mod) {
  mod.doc() = "Sparse linear blend skinning of Gaussians (CPU, OpenMP).";
  mod.def("skin_sparse", &skin_sparse, py::arg("means"), py::arg("quats"), py::arg("idx"), py::arg("w"),
          py::arg("A"), py::arg("Q"), py::arg("out_means"), py::arg("out_quats"),
          "Posed means [N,3] and quats [N,4] from sparse weights (idx/w [N,K]) and joint transforms "
          "A [J,12] (3x4 row-major) with their rotations Q [J,4] (wxyz).");
}
