// CPU tile rasterizer for 3D Gaussians: gsplat 1.5.3 "classic" semantics, OpenMP + SIMD.
//
// One frame (all buffers are per call: the module has no mutable global state, so concurrent
// calls from several Python threads are safe; the GIL is released while it runs):
//   1. project   EWA splatting, a branch-free loop the compiler vectorises, over chunks of 64
//                Gaussians in parallel: 2D mean, conic (inverse of the 2D covariance + eps2d),
//                depth, opacity-aware radii, culling (near/far, opacity, off-screen, radius clip).
//   2. sort      the visible ones by depth: stable LSD radix sort (ties keep index order, as in
//                gsplat's stable radix sort of tile|depth keys), then a parallel gather into
//                depth order.
//   3. bin       append each Gaussian's depth rank to the lists of the 16x16 tiles its radii
//                touch; every list ends up sorted front to back.
//   4. composite per tile (parallel, dynamic schedule): for each pixel row, list the tile's
//                Gaussians whose ellipse reaches the row (AVX-512 compress-store), fold the row's
//                terms into the quadratic, then walk the list front to back for a whole row of
//                16 pixels (AVX-512) or groups of 8 (AVX2 / portable), branch-free, leaving the
//                loop once every pixel of the group has finished.
//
// Semantics per pixel (centre at +0.5): sigma = 0.5 d^T conic d, alpha = min(ALPHA_MAX,
// o exp(-sigma)); fragments with sigma < 0 or alpha < ALPHA_MIN are skipped; compositing stops
// *before* a fragment that would bring T(1-alpha) <= T_MIN; colour = sum c alpha T + T bg,
// alpha_out = 1 - T. exp is a polynomial 2^x with relative error < 1e-7. The constants come from
// the caller (streamer/render/base.py); only the tile size is fixed here.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__SSE4_1__)
#include <immintrin.h>
#endif
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 flags the intentionally undefined pass-through operands inside its own AVX-512 headers
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#ifdef STREAMER_PROFILE
#include <chrono>
#include <cstdio>
#define PROF_MARK(name)                                                                              \
    do {                                                                                             \
        auto now_ = std::chrono::steady_clock::now();                                                \
        std::fprintf(stderr, "%s %.3f ms\n", name,                                                 \
                     std::chrono::duration<double, std::milli>(now_ - prof_t0).count());              \
        prof_t0 = now_;                                                                              \
    } while (0)
#else
#define PROF_MARK(name) ((void)0)
#endif

namespace py = pybind11;

namespace {

constexpr int TILE = 16;  // tile side in pixels (gsplat's default tile_size)
constexpr float LOG2E = 1.4426950408889634f;

// ---------------------------------------------------------------------------------------------
// Settings and camera
// ---------------------------------------------------------------------------------------------

struct Settings {
    float eps2d, near_plane, far_plane, radius_clip, alpha_min, alpha_max, t_min;
};

struct Cam {
    float R[9];  // world -> camera rotation, row major
    float t[3];
    float fx, fy, cx, cy;
    int width, height;
    // Jacobian clamp limits on x/z and y/z (gsplat: 0.3 x tan(fov/2) beyond the image border)
    float lim_x_pos, lim_x_neg, lim_y_pos, lim_y_neg;
};

Cam make_cam(const float* viewmat, const float* K, int width, int height) {
    Cam c{};
    for (int r = 0; r < 3; ++r) {
        for (int k = 0; k < 3; ++k) c.R[r * 3 + k] = viewmat[r * 4 + k];
        c.t[r] = viewmat[r * 4 + 3];
    }
    c.fx = K[0];
    c.fy = K[4];
    c.cx = K[2];
    c.cy = K[5];
    c.width = width;
    c.height = height;
    const float tan_fovx = 0.5f * width / c.fx, tan_fovy = 0.5f * height / c.fy;
    c.lim_x_pos = (width - c.cx) / c.fx + 0.3f * tan_fovx;
    c.lim_x_neg = c.cx / c.fx + 0.3f * tan_fovx;
    c.lim_y_pos = (height - c.cy) / c.fy + 0.3f * tan_fovy;
    c.lim_y_neg = c.cy / c.fy + 0.3f * tan_fovy;
    return c;
}

// ---------------------------------------------------------------------------------------------
// 1. Projection
// ---------------------------------------------------------------------------------------------

// Natural log of a positive normal float, branch-free so that loops calling it vectorise
// (relative error ~1e-7): x = m * 2^e with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(t).
inline float log_positive(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    int32_t e = (int32_t)((u >> 23) & 0xFF) - 127;
    const uint32_t mu = (u & 0x007FFFFFu) | 0x3F800000u;
    float m;
    std::memcpy(&m, &mu, 4);  // in [1, 2)
    const bool high = m > 1.41421356f;
    m = high ? 0.5f * m : m;
    e += high ? 1 : 0;
    const float t = (m - 1.f) / (m + 1.f), t2 = t * t;
    const float p = t * (2.f + t2 * (0.666666667f + t2 * (0.4f + t2 * (0.285714286f + t2 * 0.222222222f))));
    return p + (float)e * 0.693147181f;
}

// Projected Gaussians of one chunk, structure of arrays (what the SIMD loop writes).
constexpr int CHUNK = 64;
struct ProjChunk {
    float mx[CHUNK], my[CHUNK];                // 2D mean, pixels
    float ca[CHUNK], cb[CHUNK], cc[CHUNK];     // conic: inverse blurred 2D covariance [[ca, cb], [cb, cc]]
    float depth[CHUNK];                        // camera z, metres
    float rx[CHUNK], ry[CHUNK];                // opacity-aware integer radii (as floats), pixels
    float reach_y[CHUNK];                      // |dy| beyond which alpha < alpha_min on a whole row
    float log2_opacity[CHUNK];
    int32_t visible[CHUNK];                    // 0: culled (gsplat writes radii = 0 then)
};

// EWA projection of Gaussians [i0, i0 + len), len <= CHUNK. Branch-free so that it vectorises;
// culled Gaussians get visible = 0 (their other outputs are meaningless). Without opacities the
// extent is the fixed 3.33 sigma (gsplat's projection without opacities).
template <bool HAS_OPACITY>
void project_chunk_impl(const Cam& cam, const Settings& st, const float* __restrict__ means,
                   const float* __restrict__ quats, const float* __restrict__ scales,
                   const float* __restrict__ opacities, int64_t i0, int len, ProjChunk& out) {
    // camera and settings as locals: uniform values the vectoriser can broadcast
    const float R0 = cam.R[0], R1 = cam.R[1], R2 = cam.R[2], R3 = cam.R[3], R4 = cam.R[4], R5 = cam.R[5];
    const float R6 = cam.R[6], R7 = cam.R[7], R8 = cam.R[8], t0 = cam.t[0], t1 = cam.t[1], t2 = cam.t[2];
    const float fx = cam.fx, fy = cam.fy, cx = cam.cx, cy = cam.cy;
    const float lim_x_pos = cam.lim_x_pos, lim_x_neg = cam.lim_x_neg, lim_y_pos = cam.lim_y_pos,
                lim_y_neg = cam.lim_y_neg;
    const float width = (float)cam.width, height = (float)cam.height;
    const float near_plane = st.near_plane, far_plane = st.far_plane, eps2d = st.eps2d;
    const float alpha_min = st.alpha_min, radius_clip = st.radius_clip;
    const float log_amin = std::log(st.alpha_min);
#pragma omp simd
    for (int l = 0; l < len; ++l) {
        const int64_t i = i0 + l;
        const float* mean = means + 3 * i;
        const float* quat = quats + 4 * i;
        const float* scale = scales + 3 * i;
        const float x = R0 * mean[0] + R1 * mean[1] + R2 * mean[2] + t0;
        const float y = R3 * mean[0] + R4 * mean[1] + R5 * mean[2] + t1;
        const float z = R6 * mean[0] + R7 * mean[1] + R8 * mean[2] + t2;
        int ok = (z >= near_plane) & (z <= far_plane);  // false for NaN too

        // Rotation of the (normalised) wxyz quaternion, times the scales: M = R_q * diag(s).
        float qw = quat[0], qx = quat[1], qy = quat[2], qz = quat[3];
        const float inv_norm = 1.0f / std::sqrt(qw * qw + qx * qx + qy * qy + qz * qz);
        qw *= inv_norm;
        qx *= inv_norm;
        qy *= inv_norm;
        qz *= inv_norm;
        const float M[9] = {
            (1.f - 2.f * (qy * qy + qz * qz)) * scale[0], 2.f * (qx * qy - qw * qz) * scale[1],
            2.f * (qx * qz + qw * qy) * scale[2],         2.f * (qx * qy + qw * qz) * scale[0],
            (1.f - 2.f * (qx * qx + qz * qz)) * scale[1], 2.f * (qy * qz - qw * qx) * scale[2],
            2.f * (qx * qz - qw * qy) * scale[0],         2.f * (qy * qz + qw * qx) * scale[1],
            (1.f - 2.f * (qx * qx + qy * qy)) * scale[2],
        };

        // EWA: cov2d = J W Sigma W^T J^T = (J W M)(J W M)^T with the Jacobian J of the
        // perspective map at the mean, its x/z and y/z clamped to 1.3x the field of view.
        const float rz = 1.f / z;
        const float tx = z * std::min(lim_x_pos, std::max(-lim_x_neg, x * rz));
        const float ty = z * std::min(lim_y_pos, std::max(-lim_y_neg, y * rz));
        const float j00 = fx * rz, j02 = -fx * tx * rz * rz;
        const float j11 = fy * rz, j12 = -fy * ty * rz * rz;
        // rows of J * W (2 x 3), then B = J W M (2 x 3); cov2d = B B^T
        const float A00 = j00 * R0 + j02 * R6, A01 = j00 * R1 + j02 * R7, A02 = j00 * R2 + j02 * R8;
        const float A10 = j11 * R3 + j12 * R6, A11 = j11 * R4 + j12 * R7, A12 = j11 * R5 + j12 * R8;
        const float B00 = A00 * M[0] + A01 * M[3] + A02 * M[6], B10 = A10 * M[0] + A11 * M[3] + A12 * M[6];
        const float B01 = A00 * M[1] + A01 * M[4] + A02 * M[7], B11 = A10 * M[1] + A11 * M[4] + A12 * M[7];
        const float B02 = A00 * M[2] + A01 * M[5] + A02 * M[8], B12 = A10 * M[2] + A11 * M[5] + A12 * M[8];
        const float a = B00 * B00 + B01 * B01 + B02 * B02 + eps2d;
        const float b = B00 * B10 + B01 * B11 + B02 * B12;
        const float c = B10 * B10 + B11 * B11 + B12 * B12 + eps2d;
        const float det = a * c - b * b;
        ok &= (det > 0.f) & (det <= 3.4e38f);  // positive and finite
        const float inv_det = 1.f / det;

        // opacity-aware extent: o * exp(-extent^2 / 2) = alpha_min (gsplat, arXiv 2402.00525 B.2)
        const float opacity = HAS_OPACITY ? opacities[i] : 1.f;
        const float ln_opacity = log_positive(std::max(opacity, 1e-30f));
        const float level = ln_opacity - log_amin;  // ln(o / alpha_min)
        const float extent = HAS_OPACITY ? std::min(3.33f, std::sqrt(std::max(2.f * level, 0.f))) : 3.33f;
        ok &= !HAS_OPACITY | (opacity >= alpha_min);
        const float rx = std::ceil(extent * std::sqrt(a));
        const float ry = std::ceil(extent * std::sqrt(c));
        ok &= (rx > radius_clip) | (ry > radius_clip);

        const float mx = fx * x * rz + cx;
        const float my = fy * y * rz + cy;
        ok &= (mx + rx > 0.f) & (mx - rx < width) & (my + ry > 0.f) & (my - ry < height);

        out.mx[l] = mx;
        out.my[l] = my;
        out.ca[l] = c * inv_det;
        out.cb[l] = -b * inv_det;
        out.cc[l] = a * inv_det;
        out.depth[l] = z;
        out.rx[l] = rx;
        out.ry[l] = ry;
        // min over the row of sigma is dy^2 / (2 cov_yy): slightly widened to stay conservative
        out.reach_y[l] = std::sqrt(2.f * (std::max(level, 0.f) + 1e-3f) * c) * 1.0001f + 1e-3f;
        out.log2_opacity[l] = ln_opacity * LOG2E;
        out.visible[l] = ok;
    }
}

void project_chunk(const Cam& cam, const Settings& st, const float* means, const float* quats, const float* scales,
                   const float* opacities, int64_t i0, int len, ProjChunk& out) {
    if (opacities)
        project_chunk_impl<true>(cam, st, means, quats, scales, opacities, i0, len, out);
    else
        project_chunk_impl<false>(cam, st, means, quats, scales, opacities, i0, len, out);
}

// Tile rectangle [x0, x1) x [y0, y1) touched by a projected Gaussian (gsplat's isect_tiles).
struct TileRect {
    int x0, x1, y0, y1;
};

inline TileRect tile_rect(float mx, float my, float radius_x, float radius_y, int tiles_x, int tiles_y) {
    const float inv = 1.f / TILE;
    const float fx = mx * inv, fy = my * inv, rx = radius_x * inv, ry = radius_y * inv;
    auto clampf = [](float v, int hi) { return (int)std::min((float)hi, std::max(0.f, v)); };
    return TileRect{clampf(std::floor(fx - rx), tiles_x), clampf(std::ceil(fx + rx), tiles_x),
                    clampf(std::floor(fy - ry), tiles_y), clampf(std::ceil(fy + ry), tiles_y)};
}

// ---------------------------------------------------------------------------------------------
// 2. Stable LSD radix sort of items (key << 32 | value) on key - min(key), in passes of 11 bits:
//    depths in a typical scene span one or two binary exponents, so two passes do.
// ---------------------------------------------------------------------------------------------

void radix_sort(std::vector<uint64_t>& items, uint32_t min_key, uint32_t max_key) {
    const size_t n = items.size();
    constexpr int BITS = 11, BUCKETS = 1 << BITS;
    const uint32_t range = max_key - min_key;
    int passes = 0;
    while (passes * BITS < 32 && (range >> (passes * BITS)) != 0) ++passes;
    std::vector<uint64_t> tmp(n);
    std::vector<uint32_t> hist(BUCKETS);
    for (int pass = 0; pass < passes; ++pass) {
        const int shift = pass * BITS;
        auto digit = [&](uint64_t item) { return (((uint32_t)(item >> 32) - min_key) >> shift) & (BUCKETS - 1); };
        std::fill(hist.begin(), hist.end(), 0u);
        for (size_t i = 0; i < n; ++i) ++hist[digit(items[i])];
        uint32_t sum = 0;
        for (int b = 0; b < BUCKETS; ++b) {
            const uint32_t c = hist[b];
            hist[b] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; ++i) tmp[hist[digit(items[i])]++] = items[i];
        items.swap(tmp);
    }
}

// Order-preserving map of a float to uint32 (negative values sort first).
inline uint32_t float_key(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// ---------------------------------------------------------------------------------------------
// 4. Compositing
// ---------------------------------------------------------------------------------------------
//
// Per fragment, in base 2 with the opacity folded into the exponent:
//   e = log2(o) - sigma * log2(e) = qa*dx^2 + k1*dx + k0,   u = 2^e = o * exp(-sigma),
//   live = sigma >= 0 (e <= log2 o) and u >= alpha_min,    a = min(u, alpha_max),
//   next_T = T - a*T (one fused multiply-add, so no cancellation), stop when next_T <= t_min.
// A finished pixel gets T = 0 and its transmittance is kept in T_end (the max over stops: only
// the first stop sees T > 0). Later fragments then contribute a*0 and keep T at 0, so no "done"
// mask feeds back into the next iteration: the loop-carried chain is T -> fma -> compare -> blend.
// The final transmittance is max(T, T_end).

// Pixels per SIMD group: 16 (one AVX-512 register: a whole tile row) where AVX-512 is compiled
// for, 8 with AVX (one AVX2 register), else 4 (one SSE register).
#ifndef STREAMER_GROUP_WIDTH
#if defined(__AVX512F__) && defined(__AVX512DQ__)
#define STREAMER_GROUP_WIDTH 16
#elif defined(__AVX__)
#define STREAMER_GROUP_WIDTH 8
#else
#define STREAMER_GROUP_WIDTH 4
#endif
#endif
constexpr int GW = STREAMER_GROUP_WIDTH;
static_assert(TILE % GW == 0, "group width must divide the tile size");
#if defined(__AVX512F__) && defined(__AVX512DQ__) && STREAMER_GROUP_WIDTH == 16
#define STREAMER_AVX512_KERNEL 1
#endif

// Degree-6 fit of 2^f on [0, 1): relative error < 1e-7.
constexpr float EXP2_C[7] = {1.0f,          0.69314712f,   0.24022833f,  0.055490382f,
                             0.0096641146f, 0.0012580585f, 0.00021200317f};
constexpr float EXP2_MIN = -64.f;  // exponent clamp: 2^-64 is far below alpha_min, and no denormals

// Per-Gaussian data for compositing (the tiles' lists index an array of these in depth order).
struct Splat {
    float mx, my;       // 2D mean, pixels
    float qa, qb, qc;   // -log2(e) * (0.5*ca, cb, 0.5*cc): the conic in base 2, negated
    float log2_opacity;
    float r, g, b;
    float row_reach;    // |dy| beyond this: the ellipse misses the pixel row (alpha < alpha_min)
};

// Per-thread scratch, reused across tiles: the tile's Gaussians as structure of arrays (padded to
// a multiple of 16 entries), the current row's terms and the list of Gaussians reaching the row.
struct Scratch {
    static constexpr int N_ARRAYS = 12;
    std::vector<float> buf;
    std::vector<uint32_t> list;
    size_t cap = 0;
    float *X, *Y, *qa, *qb, *qc, *lo2, *cr, *cg, *cb, *reach, *k1, *k0;

    void reserve(size_t m) {
        if (m <= cap) return;
        cap = std::max<size_t>(2 * cap, (m + 15) / 16 * 16);
        buf.assign(N_ARRAYS * cap, 0.f);
        list.assign(cap, 0);
        float* arrays[N_ARRAYS];
        for (int a = 0; a < N_ARRAYS; ++a) arrays[a] = buf.data() + a * cap;
        X = arrays[0], Y = arrays[1], qa = arrays[2], qb = arrays[3], qc = arrays[4], lo2 = arrays[5];
        cr = arrays[6], cg = arrays[7], cb = arrays[8], reach = arrays[9], k1 = arrays[10], k0 = arrays[11];
    }
};

// For the tile's pixel row at Y = `row` (relative to the first row's centre): the row terms
// k1 = qb*dy, k0 = qc*dy^2 + log2(o) (dy = Y - row) of all m16 entries, and the indices of the
// Gaussians whose ellipse reaches the row, in depth order. Returns how many were listed.
inline size_t prepare_row(Scratch& sc, size_t m16, float row) {
    uint32_t* __restrict__ list = sc.list.data();
#if defined(__AVX512F__)
    const __m512 r = _mm512_set1_ps(row);
    __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i step = _mm512_set1_epi32(16);
    size_t count = 0;
    for (size_t k = 0; k < m16; k += 16) {
        const __m512 dy = _mm512_sub_ps(_mm512_loadu_ps(sc.Y + k), r);
        _mm512_storeu_ps(sc.k1 + k, _mm512_mul_ps(_mm512_loadu_ps(sc.qb + k), dy));
        _mm512_storeu_ps(sc.k0 + k, _mm512_fmadd_ps(_mm512_mul_ps(_mm512_loadu_ps(sc.qc + k), dy), dy,
                                                    _mm512_loadu_ps(sc.lo2 + k)));
        const __mmask16 hit =
            _mm512_cmp_ps_mask(_mm512_abs_ps(dy), _mm512_loadu_ps(sc.reach + k), _CMP_LE_OQ);
        _mm512_mask_compressstoreu_epi32(list + count, hit, idx);
        count += (size_t)__builtin_popcount((unsigned)hit);
        idx = _mm512_add_epi32(idx, step);
    }
    return count;
#else
    for (size_t k = 0; k < m16; ++k) {
        const float dy = sc.Y[k] - row;
        sc.k1[k] = sc.qb[k] * dy;
        sc.k0[k] = sc.qc[k] * dy * dy + sc.lo2[k];
    }
    size_t count = 0;
    for (size_t k = 0; k < m16; ++k) {  // branch-free compaction
        list[count] = (uint32_t)k;
        count += std::fabs(sc.Y[k] - row) <= sc.reach[k];
    }
    return count;
#endif
}

struct TileJob {
    const Splat* sorted;       // the visible Gaussians, front to back
    const uint32_t* bins;      // indices into sorted of every tile's Gaussians, tile after tile
    const uint32_t* offsets;   // [n_tiles + 1] start of each tile in bins
    int tiles_x, tiles_y, width, height;
    float bg[3];
    float alpha_min, alpha_max, t_min;
    float* rgb;    // [H, W, 3]
    float* alpha;  // [H, W]
};

void write_background(const TileJob& job, int py, int x0, int x1) {
    float* rgb = job.rgb + ((size_t)py * job.width + x0) * 3;
    float* al = job.alpha + (size_t)py * job.width + x0;
    for (int x = x0; x < x1; ++x, rgb += 3, ++al) {
        rgb[0] = job.bg[0];
        rgb[1] = job.bg[1];
        rgb[2] = job.bg[2];
        *al = 0.f;
    }
}

// Result of compositing one group of GW pixels.
struct GroupOut {
    float T[GW], r[GW], g[GW], b[GW];
};

// SIMD helpers for GW pixels at a time (GCC/Clang vector extensions): the portable compositing
// kernel and the adjoint (backproject) use them on every build.
typedef float vf __attribute__((vector_size(GW * 4)));
typedef int32_t vi __attribute__((vector_size(GW * 4)));

template <size_t... I>
inline vf splat_(float v, std::index_sequence<I...>) {
    return vf{((void)I, v)...};
}
// broadcast a scalar (`vf{} + v` would cost a real add: -0.0 + 0.0 is not -0.0)
inline vf splat(float v) { return splat_(v, std::make_index_sequence<GW>{}); }
#if defined(__AVX__) && STREAMER_GROUP_WIDTH == 8
inline vf vmin(vf a, vf b) { return (vf)_mm256_min_ps((__m256)a, (__m256)b); }
inline vf vmax(vf a, vf b) { return (vf)_mm256_max_ps((__m256)a, (__m256)b); }
#elif defined(__SSE4_1__) && STREAMER_GROUP_WIDTH == 4
inline vf vmin(vf a, vf b) { return (vf)_mm_min_ps((__m128)a, (__m128)b); }
inline vf vmax(vf a, vf b) { return (vf)_mm_max_ps((__m128)a, (__m128)b); }
#else
inline vf vmin(vf a, vf b) { return a < b ? a : b; }
inline vf vmax(vf a, vf b) { return a > b ? a : b; }
#endif
inline vf keep(vi mask, vf v) { return (vf)(mask & (vi)v); }  // v where mask, else +0

inline bool none_set(vi m) {
#if defined(__AVX__) && STREAMER_GROUP_WIDTH == 8
    return _mm256_testz_si256((__m256i)m, (__m256i)m);
#elif defined(__SSE4_1__) && STREAMER_GROUP_WIDTH == 4
    return _mm_testz_si128((__m128i)m, (__m128i)m);
#else
    int32_t acc = 0;
    for (int i = 0; i < GW; ++i) acc |= m[i];
    return acc == 0;
#endif
}

// 2^x for x >= EXP2_MIN (and x < 128): 2^round(x) * q(x - round(x)), q a degree-6 fit of 2^f on
// [-1/2, 1/2] (relative error < 1e-7).
inline vf exp2_clamped(vf x) {
    x = vmax(x, splat(EXP2_MIN));
    const vf magic = splat(12582912.f);  // 1.5 * 2^23: x + magic rounds x to an integer
    const vf t = x + magic;
    const vf f = x - (t - magic);  // in [-1/2, 1/2]
    vf p = splat(1.4990888e-4f);
    p = p * f + 1.3393083e-3f;
    p = p * f + 9.6196737e-3f;
    p = p * f + 5.5503473e-2f;
    p = p * f + 2.4022637e-1f;
    p = p * f + 6.9314718e-1f;
    p = p * f + 1.0f;
    const vi bits = ((vi)t - (0x4B400000 - 127)) << 23;  // 2^round(x): t's low mantissa bits hold it
    return p * (vf)bits;
}

// One Gaussian (entry k of the scratch, its row terms prepared) over a group of GW pixels at x
// offsets px, in front of transmittance T: its blending weight where it is composited (0
// elsewhere), the pixels it stops (their next transmittance would fall to t_min: they take no more
// fragments) and the transmittance behind it (0 where stopped).
struct FragmentStep {
    vf w;
    vi stop;
    vf T;
};

inline FragmentStep fragment_step(const Scratch& sc, uint32_t k, vf px, vf T, float alpha_min, float alpha_max,
                                  float t_min) {
    const vf dx = splat(sc.X[k]) - px;
    const vf e = (splat(sc.qa[k]) * dx + splat(sc.k1[k])) * dx + splat(sc.k0[k]);
    const vf u = exp2_clamped(e);
    const vi live = (e <= splat(sc.lo2[k])) & (u >= splat(alpha_min));
    const vf a = vmin(u, splat(alpha_max));
    const vf next_T = T * (splat(1.f) - keep(live, a));  // 1 - a is exact for a >= 1/2: no cancellation
    const vi stop = next_T <= splat(t_min);
    return {keep(live & ~stop, a * T), stop, keep(~stop, next_T)};
}

#ifdef STREAMER_AVX512_KERNEL
// AVX-512: a whole tile row per register, masks in k registers, 2^x as vscalefps(p(x - floor x), x).
inline void composite_group(const Scratch& sc, size_t m, int x_off, const TileJob& job, GroupOut& out) {
    const __m512 amin = _mm512_set1_ps(job.alpha_min), amax = _mm512_set1_ps(job.alpha_max);
    const __m512 tmin = _mm512_set1_ps(job.t_min), one = _mm512_set1_ps(1.f), zero = _mm512_setzero_ps();
    const __m512 lo = _mm512_set1_ps(EXP2_MIN);
    const __m512 px = _mm512_add_ps(_mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                    _mm512_set1_ps((float)x_off));
    const uint32_t* __restrict__ list = sc.list.data();
    const float *__restrict__ X = sc.X, *__restrict__ qa = sc.qa, *__restrict__ k1 = sc.k1, *__restrict__ k0 = sc.k0;
    const float *__restrict__ lo2 = sc.lo2, *__restrict__ Cr = sc.cr, *__restrict__ Cg = sc.cg, *__restrict__ Cb = sc.cb;
    __m512 T = one, T_end = zero, cr = zero, cg = zero, cb = zero;
    for (size_t j = 0; j < m; ++j) {
        const uint32_t k = list[j];
        const __m512 dx = _mm512_sub_ps(_mm512_set1_ps(X[k]), px);
        __m512 e = _mm512_fmadd_ps(_mm512_set1_ps(qa[k]), dx, _mm512_set1_ps(k1[k]));
        e = _mm512_fmadd_ps(e, dx, _mm512_set1_ps(k0[k]));
        const __m512 x = _mm512_max_ps(e, lo);
        const __m512 f = _mm512_reduce_ps(x, _MM_FROUND_TO_NEG_INF);  // x - floor(x)
        __m512 p = _mm512_set1_ps(EXP2_C[6]);
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_C[5]));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_C[4]));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_C[3]));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_C[2]));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_C[1]));
        p = _mm512_fmadd_ps(p, f, one);
        const __m512 u = _mm512_scalef_ps(p, x);  // p * 2^floor(x)
        const __mmask16 live = _mm512_mask_cmp_ps_mask(_mm512_cmp_ps_mask(e, _mm512_set1_ps(lo2[k]), _CMP_LE_OQ),
                                                       u, amin, _CMP_GE_OQ);
        const __m512 a = _mm512_min_ps(u, amax);
        const __m512 next_T = _mm512_mask3_fnmadd_ps(a, T, T, live);  // live ? T - a*T : T
        const __mmask16 stop = _mm512_cmp_ps_mask(next_T, tmin, _CMP_LE_OQ);
        const __mmask16 take = _mm512_kandn(stop, live);
        const __m512 w = _mm512_mul_ps(a, T);
        cr = _mm512_mask3_fmadd_ps(w, _mm512_set1_ps(Cr[k]), cr, take);
        cg = _mm512_mask3_fmadd_ps(w, _mm512_set1_ps(Cg[k]), cg, take);
        cb = _mm512_mask3_fmadd_ps(w, _mm512_set1_ps(Cb[k]), cb, take);
        T_end = _mm512_mask_max_ps(T_end, stop, T_end, T);
        T = _mm512_maskz_mov_ps(_mm512_knot(stop), next_T);
        if (stop && _mm512_cmp_ps_mask(T, zero, _CMP_NEQ_UQ) == 0) break;  // every pixel finished
    }
    _mm512_storeu_ps(out.T, _mm512_max_ps(T, T_end));
    _mm512_storeu_ps(out.r, cr);
    _mm512_storeu_ps(out.g, cg);
    _mm512_storeu_ps(out.b, cb);
}
#else
// Portable version (GCC/Clang vector extensions: AVX2 where compiled for). Same arithmetic.
inline void composite_group(const Scratch& sc, size_t m, int x_off, const TileJob& job, GroupOut& out) {
    const vf zero = splat(0.f);
    vf px;
    for (int i = 0; i < GW; ++i) px[i] = (float)(x_off + i);
    const uint32_t* __restrict__ list = sc.list.data();
    const float *__restrict__ Cr = sc.cr, *__restrict__ Cg = sc.cg, *__restrict__ Cb = sc.cb;
    vf T = splat(1.f), T_end = zero, cr = zero, cg = zero, cb = zero;
    for (size_t j = 0; j < m; ++j) {
        const uint32_t k = list[j];
        const FragmentStep f = fragment_step(sc, k, px, T, job.alpha_min, job.alpha_max, job.t_min);
        cr += f.w * Cr[k];
        cg += f.w * Cg[k];
        cb += f.w * Cb[k];
        T_end = vmax(T_end, keep(f.stop, T));  // later stops have T = 0
        T = f.T;
        if (!none_set(f.stop) && none_set(T != zero)) break;  // every pixel finished
    }
    const vf T_out = vmax(T, T_end);
    for (int i = 0; i < GW; ++i) {
        out.T[i] = T_out[i];
        out.r[i] = cr[i];
        out.g[i] = cg[i];
        out.b[i] = cb[i];
    }
}
#endif

// Loads a tile's m Gaussians (``ids`` into ``sorted``, front to back) into the scratch, relative to
// the centre of its first pixel (x0, y0), padded to a multiple of 16. Returns the padded count.
inline size_t load_tile(Scratch& sc, const Splat* sorted, const uint32_t* ids, uint32_t m, int x0, int y0) {
    const float cx0 = x0 + 0.5f, cy0 = y0 + 0.5f;
    const size_t m16 = (m + 15) / 16 * 16;
    sc.reserve(m16);
    for (uint32_t k = 0; k < m; ++k) {
        const Splat& s = sorted[ids[k]];
        sc.X[k] = s.mx - cx0;
        sc.Y[k] = s.my - cy0;
        sc.qa[k] = s.qa;
        sc.qb[k] = s.qb;
        sc.qc[k] = s.qc;
        sc.lo2[k] = s.log2_opacity;
        sc.cr[k] = s.r;
        sc.cg[k] = s.g;
        sc.cb[k] = s.b;
        sc.reach[k] = s.row_reach;
    }
    for (size_t k = m; k < m16; ++k) {  // padding: reaches no row
        sc.Y[k] = 0.f;
        sc.reach[k] = -1.f;
        sc.qb[k] = sc.qc[k] = sc.lo2[k] = 0.f;
    }
    return m16;
}

// Composites one tile: loads its Gaussians, then per pixel row lists the Gaussians whose ellipse
// reaches the row and composites its groups.
void composite_tile(const TileJob& job, int tile, Scratch& sc) {
    const int tx = tile % job.tiles_x, ty = tile / job.tiles_x;
    const int x0 = tx * TILE, y0 = ty * TILE;
    const int x1 = std::min(x0 + TILE, job.width), y1 = std::min(y0 + TILE, job.height);
    const uint32_t begin = job.offsets[tile], m = job.offsets[tile + 1] - begin;
    if (m == 0) {
        for (int py = y0; py < y1; ++py) write_background(job, py, x0, x1);
        return;
    }
    const size_t m16 = load_tile(sc, job.sorted, job.bins + begin, m, x0, y0);

    GroupOut out;
    for (int py = y0; py < y1; ++py) {
        const size_t mr = prepare_row(sc, m16, (float)(py - y0));
        if (mr == 0) {
            write_background(job, py, x0, x1);
            continue;
        }
        for (int gx = x0; gx < x1; gx += GW) {
            composite_group(sc, mr, gx - x0, job, out);
            const int n = std::min(GW, x1 - gx);
            float* rgb = job.rgb + ((size_t)py * job.width + gx) * 3;
            float* al = job.alpha + (size_t)py * job.width + gx;
            for (int i = 0; i < n; ++i) {
                rgb[3 * i + 0] = out.r[i] + out.T[i] * job.bg[0];
                rgb[3 * i + 1] = out.g[i] + out.T[i] * job.bg[1];
                rgb[3 * i + 2] = out.b[i] + out.T[i] * job.bg[2];
                al[i] = 1.f - out.T[i];
            }
        }
    }
}

int team_size(int num_threads) {
#ifdef _OPENMP
    return num_threads > 0 ? num_threads : omp_get_max_threads();
#else
    (void)num_threads;
    return 1;
#endif
}

// ---------------------------------------------------------------------------------------------
// Whole frame
// ---------------------------------------------------------------------------------------------

struct Inputs {
    const float *means, *quats, *scales, *opacities, *colors;
    int64_t n;
};

// An uninitialised array (std::vector would zero-fill megabytes per frame).
template <typename T>
std::unique_ptr<T[]> raw_array(size_t n) {
    return std::unique_ptr<T[]>(new T[std::max<size_t>(n, 1)]);
}

// Steps 1-3 of a frame: the visible Gaussians in depth order and every tile's list of them.
struct Binned {
    std::unique_ptr<Splat[]> sorted;     // visible Gaussians, front to back
    std::unique_ptr<uint32_t[]> source;  // index in the input of sorted[j]
    std::unique_ptr<uint32_t[]> bins;    // indices into sorted, tile after tile
    std::vector<uint32_t> offsets;       // [n_tiles + 1] start of each tile in bins
    size_t nv = 0;
    int tiles_x = 0, tiles_y = 0;
};

Binned bin_frame(const Inputs& in, const Cam& cam, const Settings& st, int nt) {
    const int W = cam.width, H = cam.height;
    const int tiles_x = (W + TILE - 1) / TILE, tiles_y = (H + TILE - 1) / TILE;
    const int n_tiles = tiles_x * tiles_y;
    const int64_t n = in.n;
#ifdef STREAMER_PROFILE
    auto prof_t0 = std::chrono::steady_clock::now();
#endif

    // 1. project every Gaussian and prepare its compositing record, tile rectangle and sort key
    auto splats = raw_array<Splat>((size_t)n);
    auto rects = raw_array<TileRect>((size_t)n);
    auto keys_all = raw_array<uint32_t>((size_t)n);
    auto visible = raw_array<uint8_t>((size_t)n);
#pragma omp parallel num_threads(nt)
    {
        ProjChunk pc;
#pragma omp for schedule(dynamic, 16)
        for (int64_t i0 = 0; i0 < n; i0 += CHUNK) {
            const int len = (int)std::min<int64_t>(CHUNK, n - i0);
            project_chunk(cam, st, in.means, in.quats, in.scales, in.opacities, i0, len, pc);
            for (int l = 0; l < len; ++l) {
                const int64_t i = i0 + l;
                visible[i] = (uint8_t)pc.visible[l];
                if (!pc.visible[l]) continue;
                Splat& s = splats[i];
                s.mx = pc.mx[l];
                s.my = pc.my[l];
                s.qa = -0.5f * LOG2E * pc.ca[l];
                s.qb = -LOG2E * pc.cb[l];
                s.qc = -0.5f * LOG2E * pc.cc[l];
                s.log2_opacity = pc.log2_opacity[l];
                s.r = in.colors ? in.colors[3 * i] : 0.f;
                s.g = in.colors ? in.colors[3 * i + 1] : 0.f;
                s.b = in.colors ? in.colors[3 * i + 2] : 0.f;
                s.row_reach = pc.reach_y[l];
                rects[i] = tile_rect(pc.mx[l], pc.my[l], pc.rx[l], pc.ry[l], tiles_x, tiles_y);
                keys_all[i] = float_key(pc.depth[l]);
            }
        }
    }
    PROF_MARK("project");

    // 2. sort the visible Gaussians by depth (stable: ties keep index order, as gsplat)
    std::vector<uint64_t> items;
    items.reserve((size_t)n);
    uint32_t min_key = 0xFFFFFFFFu, max_key = 0;
    for (int64_t i = 0; i < n; ++i) {
        if (visible[i]) {
            items.push_back((uint64_t)keys_all[i] << 32 | (uint64_t)i);
            min_key = std::min(min_key, keys_all[i]);
            max_key = std::max(max_key, keys_all[i]);
        }
    }
    radix_sort(items, min_key, max_key);
    const size_t nv = items.size();
    PROF_MARK("sort");

    // gather into depth order (independent loads in parallel, so the random reads overlap)
    Binned out;
    out.nv = nv;
    out.tiles_x = tiles_x;
    out.tiles_y = tiles_y;
    out.sorted = raw_array<Splat>(nv);
    out.source = raw_array<uint32_t>(nv);
    auto sorted_rects = raw_array<TileRect>(nv);
    Splat* sorted = out.sorted.get();
    uint32_t* source = out.source.get();
#pragma omp parallel for schedule(dynamic, 2048) num_threads(nt)
    for (int64_t j = 0; j < (int64_t)nv; ++j) {
        if (j + 16 < (int64_t)nv) {
            const uint32_t ahead = (uint32_t)items[j + 16];
            __builtin_prefetch(&splats[ahead]);
            __builtin_prefetch(reinterpret_cast<const char*>(&splats[ahead]) + sizeof(Splat) - 1);
            __builtin_prefetch(&rects[ahead]);
        }
        const uint32_t i = (uint32_t)items[j];
        sorted[j] = splats[i];
        sorted_rects[j] = rects[i];
        source[j] = i;
    }
    PROF_MARK("gather");

    // 3. bin: the sorted list is cut into chunks; each chunk's tile counts are summed in chunk
    //    order, so copying a chunk after the lower ones keeps every tile's list in depth order.
    //    (More chunks than threads: a thread that is descheduled does not stall the frame. The
    //    prefix sum and the allocation run outside the parallel regions: they may throw.)
    const int n_chunks = 4 * nt;
    std::vector<uint32_t> counts((size_t)n_chunks * n_tiles, 0);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int u = 0; u < n_chunks; ++u) {
        uint32_t* cnt = counts.data() + (size_t)u * n_tiles;
        for (size_t j = nv * u / n_chunks, end = nv * (u + 1) / n_chunks; j < end; ++j) {
            const TileRect& r = sorted_rects[j];
            for (int y = r.y0; y < r.y1; ++y)
                for (int x = r.x0; x < r.x1; ++x) ++cnt[y * tiles_x + x];
        }
    }
    out.offsets.assign((size_t)n_tiles + 1, 0);
    uint64_t total = 0;
    for (int tile = 0; tile < n_tiles; ++tile) {
        out.offsets[tile] = (uint32_t)total;
        for (int u = 0; u < n_chunks; ++u) {
            const uint32_t c = counts[(size_t)u * n_tiles + tile];
            counts[(size_t)u * n_tiles + tile] = (uint32_t)total;  // becomes chunk u's cursor
            total += c;
        }
        if (total > UINT32_MAX) throw std::length_error("too many Gaussian-tile overlaps (> 2^32)");
    }
    out.offsets[n_tiles] = (uint32_t)total;
    out.bins = raw_array<uint32_t>(total);
    uint32_t* bins = out.bins.get();
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int u = 0; u < n_chunks; ++u) {
        uint32_t* cnt = counts.data() + (size_t)u * n_tiles;
        for (size_t j = nv * u / n_chunks, end = nv * (u + 1) / n_chunks; j < end; ++j) {
            const TileRect& r = sorted_rects[j];
            for (int y = r.y0; y < r.y1; ++y)
                for (int x = r.x0; x < r.x1; ++x) bins[cnt[y * tiles_x + x]++] = (uint32_t)j;
        }
    }
    PROF_MARK("bin");
    return out;
}

void rasterize_frame(const Inputs& in, const Cam& cam, const Settings& st, const float bg[3], float* rgb,
                     float* alpha, int num_threads) {
    const int nt = team_size(num_threads);
    const Binned b = bin_frame(in, cam, st, nt);
    const int n_tiles = b.tiles_x * b.tiles_y;
    // 4. composite
    TileJob job{b.sorted.get(), b.bins.get(), b.offsets.data(), b.tiles_x, b.tiles_y, cam.width, cam.height,
                {bg[0], bg[1], bg[2]}, st.alpha_min, st.alpha_max, st.t_min, rgb, alpha};
#pragma omp parallel num_threads(nt)
    {
        Scratch scratch;
#pragma omp for schedule(dynamic, 1)
        for (int tile = 0; tile < n_tiles; ++tile) composite_tile(job, tile, scratch);
    }
}

// ---------------------------------------------------------------------------------------------
// 5. The adjoint of compositing with respect to the colours
// ---------------------------------------------------------------------------------------------
//
// A rendering is linear in the colours: rgb(p) = sum_i w_i(p) c_i + T(p) bg with blending weights
// w_i(p) = alpha_i(p) T_i(p). backproject_frame walks the same fragments in the same order with the
// same stopping rule as the compositing, GW pixels at a time over the same row lists (2^x is the
// portable kernel's, within 1e-7 of the AVX-512 kernel's), and accumulates, per Gaussian,
// sum_p w_i(p) image(p) (the transpose W^T applied to an image) and sum_p w_i(p) weight(p) (its
// footprint mass). Pixels of zero weight are skipped. Each Gaussian's share of a group is summed
// across the lanes (lane_sum) before it is added to that Gaussian: no scattered per-pixel writes.

struct AdjointJob {
    const Binned* b;
    int width, height;
    float alpha_min, alpha_max, t_min;
    const float* image;   // [H, W, 3]
    const float* weight;  // [H, W]
};

inline float lane_sum(vf v) {
#if defined(__AVX512F__) && STREAMER_GROUP_WIDTH == 16
    return _mm512_reduce_add_ps((__m512)v);
#elif defined(__AVX__) && STREAMER_GROUP_WIDTH == 8
    const __m128 h = _mm_add_ps(_mm256_castps256_ps128((__m256)v), _mm256_extractf128_ps((__m256)v, 1));
    const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)));
#else
    float total = 0.f;
    for (int i = 0; i < GW; ++i) total += v[i];
    return total;
#endif
}

void backproject_tile(const AdjointJob& job, int tile, Scratch& sc, float* sums, float* mass) {
    const Binned& b = *job.b;
    const int tx = tile % b.tiles_x, ty = tile / b.tiles_x;
    const int x0 = tx * TILE, y0 = ty * TILE;
    const int x1 = std::min(x0 + TILE, job.width), y1 = std::min(y0 + TILE, job.height);
    const uint32_t begin = b.offsets[tile], m = b.offsets[tile + 1] - begin;
    if (m == 0) return;
    const uint32_t* ids = b.bins.get() + begin;
    const size_t m16 = load_tile(sc, b.sorted.get(), ids, m, x0, y0);
    const vf zero = splat(0.f);
    for (int py = y0; py < y1; ++py) {
        const float* wrow = job.weight + (size_t)py * job.width;
        bool any = false;
        for (int px = x0; px < x1 && !any; ++px) any = wrow[px] != 0.f;
        if (!any) continue;
        const size_t mr = prepare_row(sc, m16, (float)(py - y0));
        if (mr == 0) continue;
        const uint32_t* __restrict__ list = sc.list.data();
        for (int gx = x0; gx < x1; gx += GW) {
            const int n = std::min(GW, x1 - gx);
            vf wp = zero, ir = zero, ig = zero, ib = zero, px;
            for (int i = 0; i < GW; ++i) px[i] = (float)(gx - x0 + i);
            for (int i = 0; i < n; ++i) {
                const size_t p = (size_t)py * job.width + gx + i;
                if (job.weight[p] == 0.f) continue;  // skipped: neither its image nor its weight counts
                wp[i] = job.weight[p];
                ir[i] = job.image[3 * p];
                ig[i] = job.image[3 * p + 1];
                ib[i] = job.image[3 * p + 2];
            }
            const vi counted = wp != zero;
            if (none_set(counted)) continue;
            vf T = keep(counted, splat(1.f));  // pixels that do not count are finished from the start
            for (size_t l = 0; l < mr; ++l) {
                const uint32_t k = list[l];
                const FragmentStep f = fragment_step(sc, k, px, T, job.alpha_min, job.alpha_max, job.t_min);
                if (!none_set(f.w != zero)) {
                    const size_t j = ids[k];
                    sums[3 * j] += lane_sum(f.w * ir);
                    sums[3 * j + 1] += lane_sum(f.w * ig);
                    sums[3 * j + 2] += lane_sum(f.w * ib);
                    mass[j] += lane_sum(f.w * wp);
                }
                T = f.T;
                if (none_set(T != zero)) break;  // every pixel finished
            }
        }
    }
}

void backproject_frame(const Inputs& in, const Cam& cam, const Settings& st, const float* image,
                       const float* weight, float* sums_out, float* mass_out, int num_threads) {
    const int nt = team_size(num_threads);
    const Binned b = bin_frame(in, cam, st, nt);
    const int n_tiles = b.tiles_x * b.tiles_y;
    const size_t nv = b.nv;
    // per-thread accumulators in depth order, summed afterwards (no atomics in the pixel loop)
    std::vector<float> acc((size_t)nt * nv * 4, 0.f);
    AdjointJob job{&b, cam.width, cam.height, st.alpha_min, st.alpha_max, st.t_min, image, weight};
#pragma omp parallel num_threads(nt)
    {
#ifdef _OPENMP
        const int me = omp_get_thread_num();
#else
        const int me = 0;
#endif
        float* sums = acc.data() + (size_t)me * nv * 4;
        float* mass = sums + nv * 3;
        Scratch scratch;
#pragma omp for schedule(dynamic, 1)
        for (int tile = 0; tile < n_tiles; ++tile) backproject_tile(job, tile, scratch, sums, mass);
    }
    std::fill(sums_out, sums_out + 3 * in.n, 0.f);
    std::fill(mass_out, mass_out + in.n, 0.f);
    for (int t = 0; t < nt; ++t) {
        const float* sums = acc.data() + (size_t)t * nv * 4;
        const float* mass = sums + nv * 3;
        for (size_t j = 0; j < nv; ++j) {
            const uint32_t i = b.source[j];
            sums_out[3 * i] += sums[3 * j];
            sums_out[3 * i + 1] += sums[3 * j + 1];
            sums_out[3 * i + 2] += sums[3 * j + 2];
            mass_out[i] += mass[j];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Python bindings
// ---------------------------------------------------------------------------------------------

using farray = py::array_t<float, py::array::c_style>;

const float* checked(const farray& a, const char* name, std::initializer_list<int64_t> shape) {
    if (a.ndim() != (py::ssize_t)shape.size())
        throw std::invalid_argument(std::string(name) + ": wrong number of dimensions");
    int d = 0;
    for (int64_t s : shape) {
        if (s >= 0 && a.shape(d) != s) throw std::invalid_argument(std::string(name) + ": wrong shape");
        ++d;
    }
    return a.data();
}

Settings make_settings(float eps2d, float near_plane, float far_plane, float radius_clip, float alpha_min,
                       float alpha_max, float t_min) {
    return Settings{eps2d, near_plane, far_plane, radius_clip, alpha_min, alpha_max, t_min};
}

void check_size(int width, int height) {
    if (width <= 0 || height <= 0) throw std::invalid_argument("width and height must be positive");
}

int64_t count_of(const farray& means) {
    if (means.ndim() != 2) throw std::invalid_argument("means: expected shape (N, 3)");
    const int64_t n = means.shape(0);
    if (n > INT32_MAX) throw std::invalid_argument("more than 2^31 Gaussians");
    return n;
}

py::tuple py_rasterize(const farray& means, const farray& quats, const farray& scales, const farray& opacities,
                       const farray& colors, const farray& viewmat, const farray& K, int width, int height,
                       std::vector<float> background, float eps2d, float near_plane, float far_plane,
                       float radius_clip, float alpha_min, float alpha_max, float t_min, int num_threads) {
    check_size(width, height);
    const int64_t n = count_of(means);
    if (background.size() != 3) throw std::invalid_argument("background: expected 3 values");
    Inputs in{checked(means, "means", {n, 3}), checked(quats, "quats", {n, 4}),
              checked(scales, "scales", {n, 3}), checked(opacities, "opacities", {n}),
              checked(colors, "colors", {n, 3}), n};
    const Cam cam = make_cam(checked(viewmat, "viewmat", {4, 4}), checked(K, "K", {3, 3}), width, height);
    const Settings st = make_settings(eps2d, near_plane, far_plane, radius_clip, alpha_min, alpha_max, t_min);
    farray rgb({(py::ssize_t)height, (py::ssize_t)width, (py::ssize_t)3});
    farray alpha({(py::ssize_t)height, (py::ssize_t)width});
    float* rgb_p = rgb.mutable_data();
    float* alpha_p = alpha.mutable_data();
    {
        py::gil_scoped_release release;
        rasterize_frame(in, cam, st, background.data(), rgb_p, alpha_p, num_threads);
    }
    return py::make_tuple(rgb, alpha);
}

py::tuple py_project(const farray& means, const farray& quats, const farray& scales,
                     const std::optional<farray>& opacities, const farray& viewmat, const farray& K, int width,
                     int height, float eps2d, float near_plane, float far_plane, float radius_clip,
                     float alpha_min, int num_threads) {
    check_size(width, height);
    const int64_t n = count_of(means);
    const float* m = checked(means, "means", {n, 3});
    const float* q = checked(quats, "quats", {n, 4});
    const float* s = checked(scales, "scales", {n, 3});
    const float* o = opacities ? checked(*opacities, "opacities", {n}) : nullptr;
    const Cam cam = make_cam(checked(viewmat, "viewmat", {4, 4}), checked(K, "K", {3, 3}), width, height);
    const Settings st = make_settings(eps2d, near_plane, far_plane, radius_clip, alpha_min, 0.f, 0.f);
    farray means2d({(py::ssize_t)n, (py::ssize_t)2}), conics({(py::ssize_t)n, (py::ssize_t)3});
    farray depths({(py::ssize_t)n});
    py::array_t<int32_t> radii({(py::ssize_t)n, (py::ssize_t)2});
    float *m2 = means2d.mutable_data(), *cn = conics.mutable_data(), *dp = depths.mutable_data();
    int32_t* rd = radii.mutable_data();
    {
        py::gil_scoped_release release;
        const int nt = team_size(num_threads);
#pragma omp parallel num_threads(nt)
        {
            ProjChunk pc;
#pragma omp for schedule(static)
            for (int64_t i0 = 0; i0 < n; i0 += CHUNK) {
                const int len = (int)std::min<int64_t>(CHUNK, n - i0);
                project_chunk(cam, st, m, q, s, o, i0, len, pc);
                for (int l = 0; l < len; ++l) {
                    const int64_t i = i0 + l;
                    const bool vis = pc.visible[l];
                    m2[2 * i] = vis ? pc.mx[l] : 0.f;
                    m2[2 * i + 1] = vis ? pc.my[l] : 0.f;
                    cn[3 * i] = vis ? pc.ca[l] : 0.f;
                    cn[3 * i + 1] = vis ? pc.cb[l] : 0.f;
                    cn[3 * i + 2] = vis ? pc.cc[l] : 0.f;
                    dp[i] = vis ? pc.depth[l] : 0.f;
                    const float big = 2147483520.f;  // largest float below 2^31: saturate like a GPU cast
                    rd[2 * i] = vis ? (int32_t)std::min(pc.rx[l], big) : 0;
                    rd[2 * i + 1] = vis ? (int32_t)std::min(pc.ry[l], big) : 0;
                }
            }
        }
    }
    return py::make_tuple(means2d, conics, depths, radii);
}

py::tuple py_backproject(const farray& means, const farray& quats, const farray& scales, const farray& opacities,
                         const farray& image, const farray& weight, const farray& viewmat, const farray& K,
                         float eps2d, float near_plane, float far_plane, float radius_clip, float alpha_min,
                         float alpha_max, float t_min, int num_threads) {
    const int64_t n = count_of(means);
    if (image.ndim() != 3 || image.shape(2) != 3) throw std::invalid_argument("image: expected shape (H, W, 3)");
    const int height = (int)image.shape(0), width = (int)image.shape(1);
    check_size(width, height);
    Inputs in{checked(means, "means", {n, 3}), checked(quats, "quats", {n, 4}),
              checked(scales, "scales", {n, 3}), checked(opacities, "opacities", {n}), nullptr, n};
    const float* img = image.data();
    const float* wt = checked(weight, "weight", {height, width});
    const Cam cam = make_cam(checked(viewmat, "viewmat", {4, 4}), checked(K, "K", {3, 3}), width, height);
    const Settings st = make_settings(eps2d, near_plane, far_plane, radius_clip, alpha_min, alpha_max, t_min);
    farray sums({(py::ssize_t)n, (py::ssize_t)3});
    farray mass({(py::ssize_t)n});
    float* sums_p = sums.mutable_data();
    float* mass_p = mass.mutable_data();
    {
        py::gil_scoped_release release;
        backproject_frame(in, cam, st, img, wt, sums_p, mass_p, num_threads);
    }
    return py::make_tuple(sums, mass);
}

int py_max_threads() { return team_size(0); }

// RGB float [H, W, 3] in [0, 1] (clamped) -> I420 planes stacked [H * 3 / 2, W] uint8, BT.601 limited
// range (as FFmpeg's rgb24 -> yuv420p), chroma from the mean colour of each 2x2 block. One pass,
// one thread: it runs once per streamed picture and must not compete with the tracker for cores.
py::array_t<uint8_t> py_rgb_to_i420(const farray& rgb) {
    if (rgb.ndim() != 3 || rgb.shape(2) != 3) throw std::invalid_argument("rgb_to_i420: expected rgb [H, W, 3]");
    const int H = static_cast<int>(rgb.shape(0)), W = static_cast<int>(rgb.shape(1));
    if (H % 2 || W % 2 || H <= 0 || W <= 0) throw std::invalid_argument("rgb_to_i420: H and W must be even and positive");
    py::array_t<uint8_t> out({static_cast<py::ssize_t>(H + H / 2), static_cast<py::ssize_t>(W)});
    const float* src = rgb.data();
    uint8_t* y = out.mutable_data();
    uint8_t* u = y + static_cast<size_t>(H) * W;
    uint8_t* v = u + static_cast<size_t>(H / 2) * (W / 2);
    auto clamp01 = [](float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); };
    {
        py::gil_scoped_release release;
        for (int r = 0; r < H; r += 2) {
            for (int c = 0; c < W; c += 2) {
                float sr = 0.f, sg = 0.f, sb = 0.f;
                for (int dy = 0; dy < 2; ++dy) {
                    for (int dx = 0; dx < 2; ++dx) {
                        const float* px = src + (static_cast<size_t>(r + dy) * W + (c + dx)) * 3;
                        const float R = clamp01(px[0]), G = clamp01(px[1]), B = clamp01(px[2]);
                        sr += R; sg += G; sb += B;
                        const float Y = 16.f + 65.481f * R + 128.553f * G + 24.966f * B;
                        y[static_cast<size_t>(r + dy) * W + (c + dx)] = static_cast<uint8_t>(Y + 0.5f);
                    }
                }
                sr *= 0.25f; sg *= 0.25f; sb *= 0.25f;
                const float U = 128.f - 37.797f * sr - 74.203f * sg + 112.0f * sb;
                const float V = 128.f + 112.0f * sr - 93.786f * sg - 18.214f * sb;
                const size_t ci = static_cast<size_t>(r / 2) * (W / 2) + c / 2;
                u[ci] = static_cast<uint8_t>(U + 0.5f);
                v[ci] = static_cast<uint8_t>(V + 0.5f);
            }
        }
    }
    return out;
}

}  // namespace

PYBIND11_MODULE(_cpu_raster, mod) {
    mod.doc() = "CPU tile rasterizer for 3D Gaussians (gsplat classic semantics), OpenMP + SIMD.";
    mod.def("rasterize", &py_rasterize, py::arg("means"), py::arg("quats"), py::arg("scales"),
            py::arg("opacities"), py::arg("colors"), py::arg("viewmat"), py::arg("K"), py::arg("width"),
            py::arg("height"), py::arg("background"), py::arg("eps2d"), py::arg("near_plane"),
            py::arg("far_plane"), py::arg("radius_clip"), py::arg("alpha_min"), py::arg("alpha_max"),
            py::arg("t_min"), py::arg("num_threads") = 0,
            "Render float32 C-contiguous arrays (means [N,3], quats [N,4] wxyz, scales [N,3], "
            "opacities [N], colors [N,3], viewmat [4,4], K [3,3]) -> (rgb [H,W,3], alpha [H,W]).");
    mod.def("project", &py_project, py::arg("means"), py::arg("quats"), py::arg("scales"),
            py::arg("opacities"), py::arg("viewmat"), py::arg("K"), py::arg("width"), py::arg("height"),
            py::arg("eps2d"), py::arg("near_plane"), py::arg("far_plane"), py::arg("radius_clip"),
            py::arg("alpha_min"), py::arg("num_threads") = 0,
            "EWA projection only -> (means2d [N,2], conics [N,3], depths [N], radii [N,2] int32); "
            "culled Gaussians have radii 0 and zeros elsewhere. opacities=None: fixed 3.33-sigma radii.");
    mod.def("backproject", &py_backproject, py::arg("means"), py::arg("quats"), py::arg("scales"),
            py::arg("opacities"), py::arg("image"), py::arg("weight"), py::arg("viewmat"), py::arg("K"),
            py::arg("eps2d"), py::arg("near_plane"), py::arg("far_plane"), py::arg("radius_clip"),
            py::arg("alpha_min"), py::arg("alpha_max"), py::arg("t_min"), py::arg("num_threads") = 0,
            "Adjoint of rendering w.r.t. the colours: image [H,W,3], weight [H,W] -> "
            "(sums [N,3] = sum_p w_i(p) image(p), mass [N] = sum_p w_i(p) weight(p)); pixels of weight 0 skipped.");
    mod.def("max_threads", &py_max_threads, "Number of OpenMP threads a call uses by default.");
    mod.def("rgb_to_i420", &py_rgb_to_i420, py::arg("rgb"),
            "RGB float32 [H, W, 3] in [0, 1] -> I420 planes stacked [H * 3 / 2, W] uint8 (BT.601 limited range).");
    mod.attr("GROUP_WIDTH") = GW;
    mod.attr("TILE_SIZE") = TILE;
}
