// Sparse linear blend skinning of Gaussians on the CPU (the per-frame hot path).
//
// For each Gaussian i with joints idx[i, k] and weights w[i, k] (k < K, the non-zero weights):
//   M      = sum_k w * A[idx]          blended 3x4 transform (row-major), A: [J, 12]
//   mean'  = M[:, :3] @ mean + M[:, 3]
//   q      = normalize(sum_k w * Q[idx]) blended joint rotation, Q: [J, 4] wxyz, signs aligned
//   quat'  = q * quat                  Hamilton product (wxyz)
// The pure-torch twin is streamer.avatar.lbs.skin_gaussians (dense weights); tests compare them.
//
// joint_transforms computes the per-joint inputs A and Q of one frame from its pose: Rodrigues,
// forward kinematics down the joint tree, rotation -> quaternion and sign alignment. These are a
// few hundred flops over 55 joints, which as torch ops are ~300 tiny launches (milliseconds on a
// CPU, kernel launches and syncs on a GPU); here they take microseconds. The torch twin is
// streamer.avatar.avatar.skinning_transforms' autograd path (BodyModel.joint_transforms,
// matrix_to_quat, align_quat_signs); tests compare them.

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
// Outputs are also bound with .noconvert(): a wrong dtype or layout is refused instead of being
// converted into a temporary copy that the kernel would write into and pybind11 would throw away.
using f32_out = py::array_t<float, py::array::c_style>;

static void check(bool ok, const std::string& msg) {
  if (!ok) throw std::invalid_argument("skin_sparse: " + msg);
}

// Writes posed means [N,3] and quats [N,4] into out_means / out_quats.
static void skin_sparse(f32 means, f32 quats, i32 idx, f32 w, f32 A, f32 Q, f32_out out_means, f32_out out_quats) {
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

// Rotation matrix (row-major 3x3) -> unit quaternion wxyz with w >= 0: of the four algebraic
// solutions, the one with the largest denominator (as streamer.avatar.lbs.matrix_to_quat).
static void matrix_to_quat(const double* m, double* q) {
  const double m00 = m[0], m11 = m[4], m22 = m[8];
  const double diag[4] = {1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22};
  int best = 0;
  for (int c = 1; c < 4; ++c)
    if (diag[c] > diag[best]) best = c;
  const double m01 = m[1], m02 = m[2], m10 = m[3], m12 = m[5], m20 = m[6], m21 = m[7];
  double c4[4];
  switch (best) {
    case 0: c4[0] = diag[0]; c4[1] = m21 - m12; c4[2] = m02 - m20; c4[3] = m10 - m01; break;
    case 1: c4[0] = m21 - m12; c4[1] = diag[1]; c4[2] = m01 + m10; c4[3] = m02 + m20; break;
    case 2: c4[0] = m02 - m20; c4[1] = m01 + m10; c4[2] = diag[2]; c4[3] = m12 + m21; break;
    default: c4[0] = m10 - m01; c4[1] = m02 + m20; c4[2] = m12 + m21; c4[3] = diag[3]; break;
  }
  const double norm = std::sqrt(c4[0] * c4[0] + c4[1] * c4[1] + c4[2] * c4[2] + c4[3] * c4[3]);
  const double sign = c4[0] < 0 ? -1.0 : 1.0;
  for (int c = 0; c < 4; ++c) q[c] = sign * c4[c] / norm;
}

// Per-joint skinning transforms of T poses: A [T, J, 16] (4x4 row-major, transl included) and
// sign-aligned joint quaternions Q [T, J, 4], from axis-angle local rotations aa [T, J, 3], rest
// joint centres [J, 3], parents [J] (root -1, topologically ordered) and transl [T, 3].
static void joint_transforms(f32 aa, f32 rest, i32 parents, f32 transl, f32_out out_A, f32_out out_Q) {
  auto fail = [](bool ok, const std::string& msg) {
    if (!ok) throw std::invalid_argument("joint_transforms: " + msg);
  };
  fail(aa.ndim() == 3 && aa.shape(2) == 3, "aa must be [T, J, 3]");
  const py::ssize_t t_n = aa.shape(0), j_n = aa.shape(1);
  fail(rest.ndim() == 2 && rest.shape(0) == j_n && rest.shape(1) == 3, "rest must be [J, 3]");
  fail(parents.ndim() == 1 && parents.shape(0) == j_n, "parents must be [J]");
  fail(transl.ndim() == 2 && transl.shape(0) == t_n && transl.shape(1) == 3, "transl must be [T, 3]");
  fail(out_A.ndim() == 3 && out_A.shape(0) == t_n && out_A.shape(1) == j_n && out_A.shape(2) == 16,
       "out_A must be [T, J, 16]");
  fail(out_Q.ndim() == 3 && out_Q.shape(0) == t_n && out_Q.shape(1) == j_n && out_Q.shape(2) == 4,
       "out_Q must be [T, J, 4]");
  const int32_t* par = parents.data();
  for (py::ssize_t j = 0; j < j_n; ++j)
    fail(j == 0 ? par[j] == -1 : (par[j] >= 0 && par[j] < j), "parents must be topologically ordered, root first");
  const float* r = rest.data();
  std::vector<double> wr(j_n * 9), wt(j_n * 3), q(j_n * 4);  // world rotation and translation per joint
  for (py::ssize_t t = 0; t < t_n; ++t) {
    const float* a = aa.data() + t * j_n * 3;
    const float* tr = transl.data() + t * 3;
    float* A = out_A.mutable_data() + t * j_n * 16;
    float* Q = out_Q.mutable_data() + t * j_n * 4;
    for (py::ssize_t j = 0; j < j_n; ++j) {
      // Rodrigues as smplx.lbs.batch_rodrigues: the angle is the norm of (v + 1e-8), in double here
      // (so a rotation of exactly -1e-8 per axis stays finite, where float32 divides 0 by 0).
      const double vx = a[3 * j], vy = a[3 * j + 1], vz = a[3 * j + 2];
      const double ex = vx + 1e-8, ey = vy + 1e-8, ez = vz + 1e-8;
      const double angle = std::sqrt(ex * ex + ey * ey + ez * ez);
      const double x = vx / angle, y = vy / angle, z = vz / angle;
      const double s = std::sin(angle), c1 = 1 - std::cos(angle);
      const double R[9] = {1 - c1 * (y * y + z * z), -s * z + c1 * x * y,      s * y + c1 * x * z,
                           s * z + c1 * x * y,      1 - c1 * (x * x + z * z), -s * x + c1 * y * z,
                           -s * y + c1 * x * z,     s * x + c1 * y * z,       1 - c1 * (x * x + y * y)};
      double* W = &wr[9 * j];
      double* T = &wt[3 * j];
      const int32_t p = par[j];
      if (p < 0) {
        for (int k = 0; k < 9; ++k) W[k] = R[k];
        for (int k = 0; k < 3; ++k) T[k] = r[3 * j + k];
      } else {  // world_j = world_p @ [R | rest_j - rest_p]
        const double* P = &wr[9 * p];
        const double off[3] = {r[3 * j] - (double)r[3 * p], r[3 * j + 1] - (double)r[3 * p + 1],
                               r[3 * j + 2] - (double)r[3 * p + 2]};
        for (int row = 0; row < 3; ++row) {
          for (int col = 0; col < 3; ++col)
            W[3 * row + col] = P[3 * row] * R[col] + P[3 * row + 1] * R[3 + col] + P[3 * row + 2] * R[6 + col];
          T[row] = P[3 * row] * off[0] + P[3 * row + 1] * off[1] + P[3 * row + 2] * off[2] + wt[3 * p + row];
        }
      }
      // A = [W | T - W @ rest_j] with transl added; bottom row 0 0 0 1.
      for (int row = 0; row < 3; ++row) {
        const double shift = W[3 * row] * r[3 * j] + W[3 * row + 1] * r[3 * j + 1] + W[3 * row + 2] * r[3 * j + 2];
        for (int col = 0; col < 3; ++col) A[16 * j + 4 * row + col] = (float)W[3 * row + col];
        A[16 * j + 4 * row + 3] = (float)(T[row] - shift + tr[row]);
      }
      A[16 * j + 12] = A[16 * j + 13] = A[16 * j + 14] = 0.0f;
      A[16 * j + 15] = 1.0f;
      double* qj = &q[4 * j];
      matrix_to_quat(W, qj);
      if (p >= 0) {  // the short arc from the parent's rotation (parents come first)
        const double* qp = &q[4 * p];
        if (qj[0] * qp[0] + qj[1] * qp[1] + qj[2] * qp[2] + qj[3] * qp[3] < 0)
          for (int k = 0; k < 4; ++k) qj[k] = -qj[k];
      }
      for (int k = 0; k < 4; ++k) Q[4 * j + k] = (float)qj[k];
    }
  }
}

PYBIND11_MODULE(_lbs_cpu, mod) {
  mod.doc() = "Sparse linear blend skinning of Gaussians (CPU, OpenMP).";
  mod.def("skin_sparse", &skin_sparse, py::arg("means"), py::arg("quats"), py::arg("idx"), py::arg("w"),
          py::arg("A"), py::arg("Q"), py::arg("out_means").noconvert(), py::arg("out_quats").noconvert(),
          "Posed means [N,3] and quats [N,4] from sparse weights (idx/w [N,K]) and joint transforms "
          "A [J,12] (3x4 row-major) with their rotations Q [J,4] (wxyz).");
  mod.def("joint_transforms", &joint_transforms, py::arg("aa"), py::arg("rest"), py::arg("parents"),
          py::arg("transl"), py::arg("out_A").noconvert(), py::arg("out_Q").noconvert(),
          "Skinning transforms A [T,J,16] and sign-aligned joint quaternions Q [T,J,4] of T poses from "
          "axis-angle rotations aa [T,J,3], rest joints [J,3], parents [J] and transl [T,3].");
}
