// Training kernels over channels-last CPU tensors, built on first use by micronet_lib/accel/norm_kernel.py
// (torch.utils.cpp_extension); arithmetic in float32, storage in the input dtype (float32 or bfloat16).
//
// Training-mode BatchNorm2d, optionally followed by hard-swish: forward (batch statistics + normalise +
//    activation in two passes over x) and backward (two passes over dy and x). Why a kernel of our own:
//    ATen runs BatchNorm and hard-swish as separate passes, and its channels-last BatchNorm keeps
//    per-thread partial sums in adjacent rows of one buffer, so when C * 4 bytes is not a multiple of a
//    64-byte cache line (most widths of MicroNet) two threads write the same line on every row: measured
//    slower on two threads than on one. Here each thread sums in its own padded row, the activation is
//    applied in the same pass, and the hard-swish input is recomputed in the backward instead of being
//    stored. Sums in double per block.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

namespace {

inline float to_f(float v) { return v; }
inline float to_f(uint16_t v) { uint32_t u = uint32_t(v) << 16; float f; std::memcpy(&f, &u, 4); return f; }
inline void from_f(float& out, float v) { out = v; }
inline void from_f(uint16_t& out, float v) {  // round to nearest even, NaN stays NaN
  uint32_t u; std::memcpy(&u, &v, 4);
  uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  out = uint16_t(((u & 0x7fffffffu) > 0x7f800000u) ? ((u >> 16) | 0x40u) : rounded);
}
inline float hswish(float z) { return z * std::min(std::max(z + 3.f, 0.f), 6.f) * (1.f / 6.f); }
inline float hswish_slope(float z) {  // d hardswish / dz as torch's hardswish_backward: 0 below -3, z/3 + 1/2 to 3, 1 above
  float mid = z * (1.f / 3.f) + 0.5f;
  float s = z <= 3.f ? mid : 1.f;
  return z < -3.f ? 0.f : s;
}

// The [rows, C] data is walked as [rows / k, k * C] with k * C a multiple of 16 floats, so every inner
// loop runs whole vectors; per-channel values are tiled k times and per-channel sums folded at the end.
struct Tiling {
  int64_t C, k, width, groups, rows;
  Tiling(int64_t c, int64_t r) : C(c), k(16 / std::gcd(c, int64_t(16))), width(k * c), groups(r / k), rows(r) {}
  int64_t span(int64_t g) const { return std::min(width, (rows - g * k) * C); }  // last group may be partial
  int64_t ngroups() const { return (rows + k - 1) / k; }
  std::vector<float> tile(const float* v) const {
    std::vector<float> out(width);
    for (int64_t j = 0; j < width; ++j) out[j] = v[j % C];
    return out;
  }
};

constexpr int64_t kBlock = 32;  // groups summed in float before adding to the thread's double total

// Per-thread partial sums, each thread's row padded to a 64-byte line (no false sharing), then folded.
template <typename Body>
void reduce2(const Tiling& t, double* s1, double* s2, Body body) {
  int nt = at::get_num_threads();
  int64_t stride = (2 * t.width + 7) / 8 * 8;
  std::vector<double> part(size_t(nt) * stride, 0.0);
  at::parallel_for(0, t.ngroups(), 64, [&](int64_t begin, int64_t end) {
    double* p = part.data() + size_t(at::get_thread_num()) * stride;
    std::vector<float> buf(2 * t.width);
    for (int64_t g0 = begin; g0 < end; g0 += kBlock) {
      std::fill(buf.begin(), buf.end(), 0.f);
      for (int64_t g = g0; g < std::min(end, g0 + kBlock); ++g) body(g, buf.data(), buf.data() + t.width);
      for (int64_t j = 0; j < 2 * t.width; ++j) p[j] += buf[j];
    }
  });
  std::fill(s1, s1 + t.C, 0.0);
  std::fill(s2, s2 + t.C, 0.0);
  for (int th = 0; th < nt; ++th)
    for (int64_t j = 0; j < t.width; ++j) {
      s1[j % t.C] += part[size_t(th) * stride + j];
      s2[j % t.C] += part[size_t(th) * stride + t.width + j];
    }
}

template <typename T>
void stats(const T* __restrict__ x, const Tiling& t, const float* shift_c, double* s1, double* s2) {
  auto shift = t.tile(shift_c);
  const float* __restrict__ sh = shift.data();
  reduce2(t, s1, s2, [&](int64_t g, float* __restrict__ b1, float* __restrict__ b2) {
    const T* __restrict__ in = x + g * t.width;
    for (int64_t j = 0, n = t.span(g); j < n; ++j) { float d = to_f(in[j]) - sh[j]; b1[j] += d; b2[j] += d * d; }
  });
}

template <bool ACT, typename T>
void normalise(const T* __restrict__ x, T* __restrict__ y, const Tiling& t, const float* scale_c, const float* shift_c) {
  auto scale = t.tile(scale_c), shift = t.tile(shift_c);
  const float* __restrict__ a = scale.data();
  const float* __restrict__ b = shift.data();
  at::parallel_for(0, t.ngroups(), 64, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      const T* __restrict__ in = x + g * t.width;
      T* __restrict__ out = y + g * t.width;
      for (int64_t j = 0, n = t.span(g); j < n; ++j) {
        float z = to_f(in[j]) * a[j] + b[j];
        from_f(out[j], ACT ? hswish(z) : z);
      }
    }
  });
}

template <bool ACT, typename T>
void grad_sums(const T* __restrict__ dy, const T* __restrict__ x, const Tiling& t, const float* scale_c,
               const float* shift_c, const float* mean_c, double* sdz, double* sdzx) {
  auto scale = t.tile(scale_c), shift = t.tile(shift_c), mean = t.tile(mean_c);
  const float* __restrict__ a = scale.data();
  const float* __restrict__ b = shift.data();
  const float* __restrict__ m = mean.data();
  reduce2(t, sdz, sdzx, [&](int64_t g, float* __restrict__ b1, float* __restrict__ b2) {
    const T* __restrict__ gy = dy + g * t.width;
    const T* __restrict__ in = x + g * t.width;
    for (int64_t j = 0, n = t.span(g); j < n; ++j) {
      float xv = to_f(in[j]);
      float gz = ACT ? to_f(gy[j]) * hswish_slope(xv * a[j] + b[j]) : to_f(gy[j]);
      b1[j] += gz;
      b2[j] += gz * (xv - m[j]);
    }
  });
}

template <bool ACT, typename T>
void grad_input(const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ dx, const Tiling& t,
                const float* scale_c, const float* shift_c, const float* ca, const float* cb, const float* ck) {
  auto scale = t.tile(scale_c), shift = t.tile(shift_c), A = t.tile(ca), B = t.tile(cb), K = t.tile(ck);
  const float* __restrict__ s = scale.data();
  const float* __restrict__ h = shift.data();
  const float* __restrict__ pa = A.data();
  const float* __restrict__ pb = B.data();
  const float* __restrict__ pk = K.data();
  at::parallel_for(0, t.ngroups(), 64, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      const T* __restrict__ gy = dy + g * t.width;
      const T* __restrict__ in = x + g * t.width;
      T* __restrict__ out = dx + g * t.width;
      for (int64_t j = 0, n = t.span(g); j < n; ++j) {
        float xv = to_f(in[j]);
        float gz = ACT ? to_f(gy[j]) * hswish_slope(xv * s[j] + h[j]) : to_f(gy[j]);
        from_f(out[j], gz * pa[j] + xv * pb[j] + pk[j]);
      }
    }
  });
}

void check_input(const at::Tensor& x) {  // what every kernel here reads
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast), "input must be a 4-D channels-last tensor");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16, "input must be float32 or bfloat16");
}

// Another tensor (a gradient, a residual) in the input's dtype and layout, as the loops read it.
at::Tensor like_input(const at::Tensor& v, const at::Tensor& x) {
  return v.to(x.scalar_type()).contiguous(at::MemoryFormat::ChannelsLast);
}

void check(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  check_input(x);
  for (const auto* p : {&w, &b})
    TORCH_CHECK(p->scalar_type() == at::kFloat && p->is_contiguous() && p->numel() == x.size(1), "weight/bias must be float32 [C]");
}

template <typename F>
void by_dtype(const at::Tensor& x, F f) {  // f(float{}) or f(uint16_t{}): the storage type, bf16 as its bits
  if (x.scalar_type() == at::kFloat) f(float{}); else f(uint16_t{});
}

template <typename F>
void dispatch(const at::Tensor& x, bool act, F f) {  // f(activation or not, storage type)
  by_dtype(x, [&](auto tv) { if (act) f(std::true_type{}, tv); else f(std::false_type{}, tv); });
}

template <typename T>
T* ptr(const at::Tensor& t) { return reinterpret_cast<T*>(t.data_ptr()); }

}  // namespace

// Returns y, batch mean, 1/sqrt(var + eps), biased batch variance.
std::vector<at::Tensor> forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, double eps, bool act) {
  check(x, w, b);
  int64_t C = x.size(1), rows = x.numel() / C;
  TORCH_CHECK(rows > 0, "empty input");
  Tiling t(C, rows);
  // Shifted sums (shift = one sample per channel) keep E[x^2] - E[x]^2 from cancelling when |mean| >> std.
  auto shift0 = x.select(0, 0).select(1, 0).select(1, 0).to(at::kFloat).contiguous();
  const float* k = shift0.data_ptr<float>();
  std::vector<double> s1(C), s2(C);
  dispatch(x, act, [&](auto, auto tv) { using T = decltype(tv); stats(ptr<T>(x), t, k, s1.data(), s2.data()); });
  auto opt = w.options();
  auto mean = at::empty({C}, opt), invstd = at::empty({C}, opt), var = at::empty({C}, opt);
  std::vector<float> scale(C), shift(C);
  const float *wp = w.data_ptr<float>(), *bp = b.data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) {
    double d = s1[c] / rows, v = std::max(s2[c] / rows - d * d, 0.0), m = k[c] + d, is = 1.0 / std::sqrt(v + eps);
    mean.data_ptr<float>()[c] = float(m);
    var.data_ptr<float>()[c] = float(v);
    invstd.data_ptr<float>()[c] = float(is);
    scale[c] = float(wp[c] * is);
    shift[c] = float(bp[c] - m * wp[c] * is);
  }
  auto y = at::empty_like(x, at::MemoryFormat::ChannelsLast);
  dispatch(x, act, [&](auto a, auto tv) {
    using T = decltype(tv);
    normalise<decltype(a)::value>(ptr<T>(x), ptr<T>(y), t, scale.data(), shift.data());
  });
  return {y, mean, invstd, var};
}

// Returns grad input, grad weight, grad bias.
std::vector<at::Tensor> backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                                 const at::Tensor& mean, const at::Tensor& invstd, bool act) {
  check(x, w, b);
  auto dy = like_input(grad, x);
  int64_t C = x.size(1), rows = x.numel() / C;
  Tiling t(C, rows);
  const float *wp = w.data_ptr<float>(), *bp = b.data_ptr<float>(), *mp = mean.data_ptr<float>(), *ip = invstd.data_ptr<float>();
  std::vector<float> scale(C), shift(C), A(C), B(C), K(C);
  for (int64_t c = 0; c < C; ++c) {
    scale[c] = wp[c] * ip[c];
    shift[c] = bp[c] - mp[c] * wp[c] * ip[c];
  }
  std::vector<double> sdz(C), sdzx(C);
  dispatch(x, act, [&](auto a, auto tv) {
    using T = decltype(tv);
    grad_sums<decltype(a)::value>(ptr<T>(dy), ptr<T>(x), t, scale.data(), shift.data(), mp, sdz.data(), sdzx.data());
  });
  auto opt = w.options();
  auto gw = at::empty({C}, opt), gb = at::empty({C}, opt);
  for (int64_t c = 0; c < C; ++c) {
    // dx = w·invstd·(dz − mean(dz) − x̂·mean(dz·x̂)) = A·dz + B·x + K
    double is = ip[c], a = is * wp[c], mdz = sdz[c] / rows, mdzx = sdzx[c] / rows, bc = -a * is * is * mdzx;
    A[c] = float(a);
    B[c] = float(bc);
    K[c] = float(-a * mdz - bc * mp[c]);
    gw.data_ptr<float>()[c] = float(sdzx[c] * is);
    gb.data_ptr<float>()[c] = float(sdz[c]);
  }
  auto dx = at::empty_like(x, at::MemoryFormat::ChannelsLast);
  dispatch(x, act, [&](auto a, auto tv) {
    using T = decltype(tv);
    grad_input<decltype(a)::value>(ptr<T>(dy), ptr<T>(x), ptr<T>(dx), t, scale.data(), shift.data(), A.data(), B.data(), K.data());
  });
  return {dx, gw, gb};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward);
  m.def("backward", &backward);
}
