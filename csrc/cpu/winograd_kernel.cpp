// Winograd F(4x4, 3x3) convolution transforms on the CPU (float32, float64), for the fast inference path.
//
// A 3x3 convolution with stride 1 and padding 1 of x [N, C, H, W] by w [K, C, 3, 3] is computed per 4x4 output tile
// from the 6x6 input patch around it: Y = A^T [ sum_c (G w G^T) (.) (B^T d B) ] A (Lavin & Gray, 2015), 36
// multiplications per tile and channel pair instead of 144. The weight transform U = G w G^T is computed once, in
// Python (detection/export/winograd.py); the 36 products over channels are one batched GEMM (torch.bmm); these
// kernels do the two data transforms:
//
//   winograd_f4x3_input(x [N, C, H, W], t0, t1) -> V [36, t1 - t0, C]: tiles t0..t1 of the N * ceil(H / 4) *
//       ceil(W / 4) tiles (n, i, j order), V[a * 6 + b, t] = (B^T d_t B)[a, b], d_t the zero-padded 6x6 patch
//       whose top-left pixel is (4i - 1, 4j - 1); x channels_last or contiguous (read in place)
//   winograd_f4x3_output_(y [N, K, H, W] channels_last or contiguous, M [36, T, K], bias [K] or None, t0, relu):
//       writes tiles t0..t0 + T of y = A^T M_t A (+ bias, then max(., 0))
// The tile ranges let the caller run the three steps on blocks of tiles whose buffers stay in cache.
//
// Both keep the channel loop innermost (vectorised by the compiler on channels-last data, strided on NCHW data) and
// run tiles in parallel (at::parallel_for). With B^T, A^T the F(4, 3) matrices for the points 0, 1, -1, 2, -2
// (written out below), the result equals the direct convolution up to float rounding (about 4x the direct error in
// float32).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace detection {
namespace cpu {
namespace {

constexpr int64_t kChunk = 64;  // channels per inner loop

// r = B^T s along one axis: s0..s5 -> r0..r5 (B^T rows: [4 0 -5 0 1 0], [0 -4 -4 1 1 0], [0 4 -4 -1 1 0],
// [0 -2 -1 2 1 0], [0 2 -1 -2 1 0], [0 4 0 -5 0 1]), for nc channels at stride `step` between the six inputs.
template <typename T>
inline void input_1d(const T* s, int64_t step, T* r, int64_t rstep, int64_t nc) {
  const T* s0 = s;
  const T* s1 = s + step;
  const T* s2 = s + 2 * step;
  const T* s3 = s + 3 * step;
  const T* s4 = s + 4 * step;
  const T* s5 = s + 5 * step;
  T* r0 = r;
  T* r1 = r + rstep;
  T* r2 = r + 2 * rstep;
  T* r3 = r + 3 * rstep;
  T* r4 = r + 4 * rstep;
  T* r5 = r + 5 * rstep;
  for (int64_t c = 0; c < nc; ++c) {
    const T a0 = s0[c], a1 = s1[c], a2 = s2[c], a3 = s3[c], a4 = s4[c], a5 = s5[c];
    r0[c] = T(4) * a0 - T(5) * a2 + a4;
    r1[c] = -T(4) * a1 - T(4) * a2 + a3 + a4;
    r2[c] = T(4) * a1 - T(4) * a2 - a3 + a4;
    r3[c] = -T(2) * a1 - a2 + T(2) * a3 + a4;
    r4[c] = T(2) * a1 - a2 - T(2) * a3 + a4;
    r5[c] = T(4) * a1 - T(5) * a3 + a5;
  }
}

// r = A^T s along one axis: s0..s5 -> r0..r3 (A^T rows: [1 1 1 1 1 0], [0 1 -1 2 -2 0], [0 1 1 4 4 0],
// [0 1 -1 8 -8 1]).
template <typename T>
inline void output_1d(const T* s, int64_t step, T* r, int64_t rstep, int64_t nc) {
  const T* s0 = s;
  const T* s1 = s + step;
  const T* s2 = s + 2 * step;
  const T* s3 = s + 3 * step;
  const T* s4 = s + 4 * step;
  const T* s5 = s + 5 * step;
  T* r0 = r;
  T* r1 = r + rstep;
  T* r2 = r + 2 * rstep;
  T* r3 = r + 3 * rstep;
  for (int64_t c = 0; c < nc; ++c) {
    const T a1 = s1[c], a2 = s2[c], a3 = s3[c], a4 = s4[c];
    const T p12 = a1 + a2, m12 = a1 - a2, p34 = a3 + a4, m34 = a3 - a4;
    r0[c] = s0[c] + p12 + p34;
    r1[c] = m12 + T(2) * m34;
    r2[c] = p12 + T(4) * p34;
    r3[c] = m12 + T(8) * m34 + s5[c];
  }
}

int64_t tiles_along(int64_t size) { return (size + 3) / 4; }

at::Tensor winograd_f4x3_input_cpu(const at::Tensor& input_, int64_t tile_begin, int64_t tile_end) {
  TORCH_CHECK(input_.dim() == 4, "winograd_f4x3_input: input must be [N, C, H, W], got ", input_.sizes());
  TORCH_CHECK(input_.device().is_cpu(), "winograd_f4x3_input: input must be a CPU tensor");
  const int64_t N = input_.size(0), C = input_.size(1), H = input_.size(2), W = input_.size(3);
  const int64_t th = tiles_along(H), tw = tiles_along(W), all_tiles = N * th * tw;
  TORCH_CHECK(0 <= tile_begin && tile_begin <= tile_end && tile_end <= all_tiles, "winograd_f4x3_input: tiles [",
              tile_begin, ", ", tile_end, ") outside [0, ", all_tiles, ")");
  const int64_t tiles = tile_end - tile_begin;
  at::Tensor out = at::empty({36, tiles, C}, input_.options());
  if (out.numel() == 0) return out;
  // Read in place from a channels_last or a contiguous (NCHW) map; anything else is made contiguous first.
  const bool nhwc = input_.is_contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor x = nhwc ? input_ : input_.contiguous();
  const int64_t sN = x.stride(0), sC = x.stride(1), sH = x.stride(2), sW = x.stride(3);

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "winograd_f4x3_input_cpu", [&] {
    using T = scalar_t;
    const T* in = x.data_ptr<T>();
    T* v = out.data_ptr<T>();
    const int64_t grain = std::max<int64_t>(1, 2048 / std::max<int64_t>(1, C));
    at::parallel_for(0, tiles, grain, [&](int64_t t0, int64_t t1) {
      std::vector<T> patch(36 * kChunk), rows(36 * kChunk);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t g = tile_begin + t;
        const int64_t n = g / (th * tw), i = (g / tw) % th, j = g % tw;
        for (int64_t c0 = 0; c0 < C; c0 += kChunk) {
          const int64_t nc = std::min(kChunk, C - c0);
          for (int64_t a = 0; a < 6; ++a) {  // the zero-padded 6x6 patch, [a][b][channel]
            const int64_t y = 4 * i - 1 + a;
            for (int64_t b = 0; b < 6; ++b) {
              const int64_t xx = 4 * j - 1 + b;
              T* dst = patch.data() + (a * 6 + b) * kChunk;
              if (y < 0 || y >= H || xx < 0 || xx >= W) {
                std::fill(dst, dst + nc, T(0));
              } else {
                const T* src = in + n * sN + y * sH + xx * sW + c0 * sC;
                if (sC == 1) {
                  std::copy(src, src + nc, dst);
                } else {
                  for (int64_t c = 0; c < nc; ++c) dst[c] = src[c * sC];
                }
              }
            }
          }
          for (int64_t b = 0; b < 6; ++b)  // rows[a'][b] = sum_a B^T[a', a] patch[a][b]
            input_1d(patch.data() + b * kChunk, 6 * kChunk, rows.data() + b * kChunk, 6 * kChunk, nc);
          T tmp[6 * kChunk];
          for (int64_t a = 0; a < 6; ++a) {  // V[a'][b'] = sum_b B^T[b', b] rows[a'][b]
            input_1d(rows.data() + a * 6 * kChunk, kChunk, tmp, kChunk, nc);
            for (int64_t b = 0; b < 6; ++b)
              std::copy(tmp + b * kChunk, tmp + b * kChunk + nc, v + ((a * 6 + b) * tiles + t) * C + c0);
          }
        }
      }
    });
  });
  return out;
}

void winograd_f4x3_output_cpu(at::Tensor& out, const at::Tensor& m_, const c10::optional<at::Tensor>& bias_,
                              int64_t tile_begin, bool relu) {
  TORCH_CHECK(out.dim() == 4 && out.device().is_cpu() &&
                  (out.is_contiguous(at::MemoryFormat::ChannelsLast) || out.is_contiguous()),
              "winograd_f4x3_output: out must be a channels_last or contiguous CPU [N, K, H, W] tensor");
  TORCH_CHECK(m_.dim() == 3 && m_.size(0) == 36 && m_.device().is_cpu() && m_.scalar_type() == out.scalar_type(),
              "winograd_f4x3_output: products must be a [36, T, K] CPU tensor of out's dtype, got ", m_.sizes());
  const int64_t N = out.size(0), K = out.size(1), H = out.size(2), W = out.size(3);
  const int64_t th = tiles_along(H), tw = tiles_along(W), tiles = m_.size(1);
  TORCH_CHECK(m_.size(2) == K, "winograd_f4x3_output: products have ", m_.size(2), " channels, out ", K);
  TORCH_CHECK(tile_begin >= 0 && tile_begin + tiles <= N * th * tw, "winograd_f4x3_output: tiles [", tile_begin,
              ", ", tile_begin + tiles, ") outside [0, ", N * th * tw, ")");
  const bool has_bias = bias_.has_value() && bias_->defined();
  at::Tensor bias;
  if (has_bias) {
    bias = bias_->contiguous();
    TORCH_CHECK(bias.dim() == 1 && bias.size(0) == K && bias.scalar_type() == m_.scalar_type(),
                "winograd_f4x3_output: bias must be [", K, "] of the products' dtype");
  }
  if (m_.numel() == 0) return;
  const at::Tensor m = m_.contiguous();

  AT_DISPATCH_FLOATING_TYPES(m.scalar_type(), "winograd_f4x3_output_cpu", [&] {
    using T = scalar_t;
    const T* mp = m.data_ptr<T>();
    const T* bp = has_bias ? bias.data_ptr<T>() : nullptr;
    T* y = out.data_ptr<T>();
    const int64_t oN = out.stride(0), oK = K > 1 ? out.stride(1) : 1, oH = out.stride(2), oW = out.stride(3);
    const int64_t grain = std::max<int64_t>(1, 2048 / std::max<int64_t>(1, K));
    at::parallel_for(0, tiles, grain, [&](int64_t t0, int64_t t1) {
      std::vector<T> prod(36 * kChunk), rows(24 * kChunk), tile(16 * kChunk);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t g = tile_begin + t;
        const int64_t n = g / (th * tw), i = (g / tw) % th, j = g % tw;
        for (int64_t k0 = 0; k0 < K; k0 += kChunk) {
          const int64_t nk = std::min(kChunk, K - k0);
          for (int64_t ab = 0; ab < 36; ++ab) {
            const T* src = mp + (ab * tiles + t) * K + k0;
            std::copy(src, src + nk, prod.data() + ab * kChunk);
          }
          for (int64_t b = 0; b < 6; ++b)  // rows[p][b] = sum_a A^T[p, a] prod[a][b]
            output_1d(prod.data() + b * kChunk, 6 * kChunk, rows.data() + b * kChunk, 6 * kChunk, nk);
          for (int64_t p = 0; p < 4; ++p)  // tile[p][q] = sum_b A^T[q, b] rows[p][b]
            output_1d(rows.data() + p * 6 * kChunk, kChunk, tile.data() + p * 4 * kChunk, kChunk, nk);
          for (int64_t p = 0; p < 4; ++p) {
            const int64_t yy = 4 * i + p;
            if (yy >= H) break;
            for (int64_t q = 0; q < 4; ++q) {
              const int64_t xx = 4 * j + q;
              if (xx >= W) break;
              const T* src = tile.data() + (p * 4 + q) * kChunk;
              T* dst = y + n * oN + yy * oH + xx * oW + k0 * oK;
              if (oK != 1) {  // NCHW: a channel's values are H * W apart
                for (int64_t c = 0; c < nk; ++c) {
                  T v = bp != nullptr ? src[c] + bp[k0 + c] : src[c];
                  dst[c * oK] = relu ? std::max(v, T(0)) : v;
                }
              } else if (bp != nullptr) {
                const T* bb = bp + k0;
                if (relu) {
                  for (int64_t c = 0; c < nk; ++c) dst[c] = std::max(src[c] + bb[c], T(0));
                } else {
                  for (int64_t c = 0; c < nk; ++c) dst[c] = src[c] + bb[c];
                }
              } else if (relu) {
                for (int64_t c = 0; c < nk; ++c) dst[c] = std::max(src[c], T(0));
              } else {
                std::copy(src, src + nk, dst);
              }
            }
          }
        }
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(detection, CPU, m) {
  m.impl("_winograd_f4x3_input", TORCH_FN(winograd_f4x3_input_cpu));
  m.impl("_winograd_f4x3_output_", TORCH_FN(winograd_f4x3_output_cpu));
}

}  // namespace cpu
}  // namespace detection
