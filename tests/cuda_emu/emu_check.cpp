// Runs ftdfast's CUDA kernels on the CPU emulator (emu.h) against naive
// float64 references: every tile configuration, sample splits, odd sizes,
// Conv1d/2d/3d with stride, padding, dilation and groups, fisher_distance with
// multi-chunk and tiny tensors, and the sqrt-normalisation of the matrix op.
// Build and run: tests/cuda_emu/run.sh (no GPU needed). Exit status 0 when
// every check passes.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "ftdfast/fisher_distance.h"
#include "ftdfast/sq_grad_sum.h"

using namespace ftdfast::cuda;

// The runtime calls the launchers make, on host memory.
extern "C" cudaError_t cudaGetLastError(void) { return cudaSuccess; }
extern "C" cudaError_t cudaMemsetAsync(void* p, int value, size_t count, cudaStream_t) {
  std::memset(p, value, count);
  return cudaSuccess;
}

namespace {

std::mt19937_64 rng(12345);
int failures = 0, checks = 0;

template <typename T>
std::vector<T> randn(size_t n) {
  std::normal_distribution<double> d;
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(d(rng));
  return v;
}

template <typename T>
double tolerance() {
  return std::is_same_v<T, double> ? 1e-12 : 2e-5;
}

template <typename T>
const char* dtype_name() {
  return std::is_same_v<T, double> ? "f64" : "f32";
}

void report(const std::string& what, double err, double tol) {
  ++checks;
  const bool ok = err <= tol;  // NaN fails
  if (!ok) ++failures;
  std::printf("%-4s %-78s max rel err %.3e (tol %.0e)\n", ok ? "ok" : "FAIL", what.c_str(), err, tol);
}

// max |x - ref| / max |ref| (absolute when ref is all zero).
double rel_err(const std::vector<double>& x, const std::vector<double>& ref) {
  double scale = 0.0, err = 0.0;
  for (double r : ref) scale = std::max(scale, std::abs(r));
  for (size_t j = 0; j < x.size(); ++j) {
    const double e = std::abs(x[j] - ref[j]);
    if (!(e <= err)) err = e;  // NaN sticks
  }
  return scale > 0 ? err / scale : err;
}

// Sum of `splits` partial planes of `plane` entries (NaN-filled before the
// launch, so an unwritten entry shows).
template <typename T>
std::vector<double> sum_planes(const std::vector<T>& out, int64_t splits, int64_t plane) {
  std::vector<double> s(plane, 0.0);
  for (int64_t z = 0; z < splits; ++z) {
    for (int64_t j = 0; j < plane; ++j) s[j] += static_cast<double>(out[z * plane + j]);
  }
  return s;
}

SqGradSumPlan forced_plan(int config, int64_t rows, int64_t cols, int64_t groups, int64_t splits) {
  const int64_t b = config == kTile64 ? 64 : config == kTile32 ? 32 : 16;
  SqGradSumPlan q{};
  q.config = config;
  q.tile_rows = q.tile_cols = b;
  q.tiles = groups * ((rows + b - 1) / b) * ((cols + b - 1) / b);
  q.splits = splits;
  return q;
}

// ---------------------------------------------------------------- linear
template <typename T>
void check_linear(int64_t n, int64_t t, int64_t i, int64_t o, int config, int64_t splits) {
  const auto a = randn<T>(n * t * i), g = randn<T>(n * t * o);
  std::vector<double> ref(o * i, 0.0), G(o * i);
  for (int64_t s = 0; s < n; ++s) {
    std::fill(G.begin(), G.end(), 0.0);
    for (int64_t tt = 0; tt < t; ++tt)
      for (int64_t oo = 0; oo < o; ++oo)
        for (int64_t ii = 0; ii < i; ++ii)
          G[oo * i + ii] += static_cast<double>(g[(s * t + tt) * o + oo]) * static_cast<double>(a[(s * t + tt) * i + ii]);
    for (int64_t j = 0; j < o * i; ++j) ref[j] += G[j] * G[j];
  }
  SqGradSumLinearArgs<T> args{};
  args.a = a.data();
  args.g = g.data();
  args.n = n;
  args.t = t;
  args.i = i;
  args.o = o;
  args.plan = forced_plan(config, o, i, 1, splits);
  std::vector<T> out(splits * o * i, std::numeric_limits<T>::quiet_NaN());
  args.out = out.data();
  const cudaError_t err = launch_sq_grad_sum_linear(args, nullptr);
  char what[200];
  std::snprintf(what, sizeof what, "linear %s n=%ld t=%ld i=%ld o=%ld tile=%ld splits=%ld", dtype_name<T>(),
                (long)n, (long)t, (long)i, (long)o, (long)args.plan.tile_rows, (long)splits);
  report(what, err == cudaSuccess ? rel_err(sum_planes(out, splits, o * i), ref) : INFINITY, tolerance<T>());
}

// ------------------------------------------------------------------ conv
struct ConvCase {
  int n, c_in, c_out, groups;
  int in[3], kernel[3], stride[3], padding[3], dilation[3];
  int dims;  // for the label only
};

template <typename T>
void check_conv(const ConvCase& c, int config, int64_t splits) {
  int out_size[3];
  for (int j = 0; j < 3; ++j) {
    out_size[j] = (c.in[j] + 2 * c.padding[j] - c.dilation[j] * (c.kernel[j] - 1) - 1) / c.stride[j] + 1;
  }
  const int64_t in_numel = (int64_t)c.in[0] * c.in[1] * c.in[2];
  const int64_t positions = (int64_t)out_size[0] * out_size[1] * out_size[2];
  const int cg = c.c_in / c.groups, og = c.c_out / c.groups;
  const int taps = c.kernel[0] * c.kernel[1] * c.kernel[2];
  const int64_t ckg = (int64_t)cg * taps;
  const auto x = randn<T>(c.n * c.c_in * in_numel), gy = randn<T>(c.n * c.c_out * positions);
  std::vector<double> ref(c.c_out * ckg, 0.0), G(c.c_out * ckg);
  for (int s = 0; s < c.n; ++s) {
    std::fill(G.begin(), G.end(), 0.0);
    for (int co = 0; co < c.c_out; ++co) {
      const int grp = co / og;
      for (int ci = 0; ci < cg; ++ci)
        for (int kd = 0; kd < c.kernel[0]; ++kd)
          for (int kh = 0; kh < c.kernel[1]; ++kh)
            for (int kw = 0; kw < c.kernel[2]; ++kw) {
              double acc = 0.0;
              for (int od = 0; od < out_size[0]; ++od)
                for (int oh = 0; oh < out_size[1]; ++oh)
                  for (int ow = 0; ow < out_size[2]; ++ow) {
                    const int id = od * c.stride[0] - c.padding[0] + kd * c.dilation[0];
                    const int ih = oh * c.stride[1] - c.padding[1] + kh * c.dilation[1];
                    const int iw = ow * c.stride[2] - c.padding[2] + kw * c.dilation[2];
                    if (id < 0 || id >= c.in[0] || ih < 0 || ih >= c.in[1] || iw < 0 || iw >= c.in[2]) continue;
                    const double xv = x[((int64_t)(s * c.c_in + grp * cg + ci) * c.in[0] + id) * c.in[1] * c.in[2] +
                                        ih * c.in[2] + iw];
                    const double gv = gy[((int64_t)(s * c.c_out + co) * out_size[0] + od) * out_size[1] * out_size[2] +
                                         oh * out_size[2] + ow];
                    acc += xv * gv;
                  }
              G[co * ckg + (ci * c.kernel[0] + kd) * c.kernel[1] * c.kernel[2] + kh * c.kernel[2] + kw] = acc;
            }
    }
    for (size_t j = 0; j < G.size(); ++j) ref[j] += G[j] * G[j];
  }
  SqGradSumConvArgs<T> args{};
  args.input = x.data();
  args.grad_output = gy.data();
  args.n = c.n;
  args.c_in = c.c_in;
  args.c_out = c.c_out;
  args.groups = c.groups;
  for (int j = 0; j < 3; ++j) {
    args.in[j] = c.in[j];
    args.out_size[j] = out_size[j];
    args.kernel[j] = c.kernel[j];
    args.stride[j] = c.stride[j];
    args.padding[j] = c.padding[j];
    args.dilation[j] = c.dilation[j];
  }
  args.plan = forced_plan(config, og, ckg, c.groups, splits);
  std::vector<T> out(splits * c.c_out * ckg, std::numeric_limits<T>::quiet_NaN());
  args.out = out.data();
  const cudaError_t err = launch_sq_grad_sum_conv(args, nullptr);
  char what[200];
  std::snprintf(what, sizeof what, "conv%dd %s n=%d cin=%d cout=%d g=%d out=%dx%dx%d k=%dx%dx%d tile=%ld splits=%ld",
                c.dims, dtype_name<T>(), c.n, c.c_in, c.c_out, c.groups, out_size[0], out_size[1], out_size[2],
                c.kernel[0], c.kernel[1], c.kernel[2], (long)args.plan.tile_rows, (long)splits);
  report(what, err == cudaSuccess ? rel_err(sum_planes(out, splits, c.c_out * ckg), ref) : INFINITY, tolerance<T>());
}

// ------------------------------------------------------- fisher_distance
template <typename T>
void check_fisher(const std::vector<int64_t>& numels, bool negative_b, double scale = 1.0) {
  std::vector<std::vector<T>> fa, fb;
  double ta = 0, tb = 0, ma = INFINITY, mb = INFINITY;
  for (int64_t m : numels) {
    auto a = randn<T>(m), b = randn<T>(m);
    for (auto& v : a) v = v * v;
    for (auto& v : b) v = v * v;
    if (negative_b && m > 3) b[m / 2] = T(-0.25);
    if (m > 2) a[1] = T(0);  // zeros are allowed
    for (auto& v : a) v = static_cast<T>(v * scale);  // both scaled: the same distance
    for (auto& v : b) v = static_cast<T>(v * scale);
    for (auto v : a) { ta += v; ma = std::min<double>(ma, v); }
    for (auto v : b) { tb += v; mb = std::min<double>(mb, v); }
    fa.push_back(std::move(a));
    fb.push_back(std::move(b));
  }
  double s2 = 0;
  for (size_t k = 0; k < numels.size(); ++k)
    for (int64_t j = 0; j < numels[k]; ++j) {
      const double d = std::sqrt(fa[k][j] / ta) - std::sqrt(fb[k][j] / tb);
      s2 += d * d;
    }
  const double d_ref = std::min(1.0, std::sqrt(std::max(0.0, 0.5 * s2)));
  std::vector<FisherSegment<T>> segs;
  int64_t chunks = 0;
  for (size_t k = 0; k < numels.size(); ++k) {
    if (numels[k] == 0) continue;  // as the glue does
    segs.push_back({fa[k].data(), fb[k].data(), numels[k], chunks});
    chunks += fisher_chunks(numels[k]);
  }
  std::vector<double> ws(fisher_workspace_doubles(chunks), std::numeric_limits<double>::quiet_NaN());
  T out = std::numeric_limits<T>::quiet_NaN();
  FisherDistanceArgs<T> args{segs.data(), (int64_t)segs.size(), chunks, ws.data(), &out};
  const cudaError_t err = launch_fisher_distance(args, nullptr);
  const double* r = ws.data() + fisher_result_offset(chunks);
  std::string what = std::string("fisher_distance ") + dtype_name<T>() + " numels";
  for (auto m : numels) what += " " + std::to_string(m);
  if (negative_b) what += " (negative in f_b)";
  if (scale != 1.0) what += " scaled by " + std::to_string(scale);
  const double tol = std::is_same_v<T, double> ? 1e-12 : 1e-6;
  if (err != cudaSuccess) {
    report(what, INFINITY, tol);
    return;
  }
  report(what + ": trace_a", std::abs(r[kTraceA] - ta) / ta, 1e-12);
  report(what + ": trace_b", std::abs(r[kTraceB] - tb) / std::abs(tb), 1e-12);
  report(what + ": min_a", std::abs(r[kMinA] - ma), 0.0);
  report(what + ": min_b", std::abs(r[kMinB] - mb), 0.0);
  if (negative_b) return;  // sqrt of a negative entry: NaN, which the glue never returns
  report(what + ": sum of squares", std::abs(r[kSumSq] - s2) / std::max(s2, 1e-300), 1e-12);
  report(what + ": d", std::abs(static_cast<double>(out) - d_ref), tol);
}

template <typename T>
void check_sqrt_normalize(int64_t rows, int64_t p) {
  auto x = randn<T>(rows * p);
  for (auto& v : x) v = v * v;
  std::vector<double> sums(rows), ref(rows * p), out(rows * p, std::numeric_limits<double>::quiet_NaN());
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0;
    for (int64_t j = 0; j < p; ++j) s += x[r * p + j];
    sums[r] = s;
    for (int64_t j = 0; j < p; ++j) ref[r * p + j] = std::sqrt(static_cast<double>(x[r * p + j]) / s);
  }
  SqrtNormalizeArgs<T> args{x.data(), sums.data(), out.data(), rows, p};
  const cudaError_t err = launch_sqrt_normalize(args, nullptr);
  report(std::string("sqrt_normalize ") + dtype_name<T>() + " " + std::to_string(rows) + "x" + std::to_string(p),
         err == cudaSuccess ? rel_err(out, ref) : INFINITY, 1e-15);
}

template <typename T>
void run_all() {
  // linear: every tile, no split / uneven split / one sample per split; odd
  // sizes, t < kBK, t = kBK, t > kBK with a remainder, multi-tile outputs.
  for (int config : {kTile64, kTile32, kTile16}) {
    check_linear<T>(3, 5, 7, 11, config, 1);
    check_linear<T>(5, 17, 70, 65, config, 2);
    check_linear<T>(4, 16, 33, 20, config, 4);
    check_linear<T>(1, 2, 1, 1, config, 1);
  }
  check_linear<T>(7, 3, 130, 9, kTile64, 3);
  check_linear<T>(2, 40, 9, 131, kTile32, 1);
  // conv: (n, c_in, c_out, groups, in, kernel, stride, padding, dilation, dims)
  const ConvCase cases[] = {
      {3, 4, 6, 1, {1, 1, 9}, {1, 1, 3}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1},
      {3, 4, 6, 2, {1, 1, 11}, {1, 1, 3}, {1, 1, 2}, {0, 0, 1}, {1, 1, 2}, 1},
      {2, 3, 5, 1, {1, 7, 6}, {1, 3, 3}, {1, 1, 1}, {0, 1, 1}, {1, 1, 1}, 2},
      {2, 3, 7, 1, {1, 9, 5}, {1, 3, 2}, {1, 2, 1}, {0, 1, 0}, {1, 1, 2}, 2},
      {2, 2, 3, 1, {1, 10, 8}, {1, 2, 3}, {1, 3, 2}, {0, 2, 2}, {1, 1, 1}, 2},
      {2, 6, 6, 6, {1, 7, 8}, {1, 3, 3}, {1, 2, 1}, {0, 1, 2}, {1, 1, 2}, 2},
      {2, 3, 6, 3, {1, 6, 6}, {1, 3, 3}, {1, 1, 1}, {0, 1, 1}, {1, 1, 1}, 2},
      {2, 8, 70, 1, {1, 5, 5}, {1, 3, 3}, {1, 1, 1}, {0, 1, 1}, {1, 1, 1}, 2},
      {2, 3, 4, 1, {5, 6, 7}, {2, 3, 2}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 3},
      {2, 4, 8, 2, {5, 6, 7}, {2, 3, 2}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 3},
      {2, 3, 4, 1, {7, 8, 9}, {3, 2, 3}, {2, 1, 2}, {0, 1, 1}, {1, 2, 1}, 3},
  };
  for (const ConvCase& c : cases) {
    for (int config : {kTile64, kTile32, kTile16}) {
      check_conv<T>(c, config, 1);
    }
    check_conv<T>(c, kTile16, c.n);
  }
  // fisher_distance: one tiny tensor, several chunks with remainders, an
  // empty tensor (left out of the table), a 0-dim tensor (1 entry).
  check_fisher<T>({37}, false);
  check_fisher<T>({3 * 8192 + 5, 1, 0, 8192, 11}, false);
  check_fisher<T>({5, 20000}, true);
  // Traces far from 1 (tiny losses, float64): the same distance as unscaled.
  if constexpr (std::is_same_v<T, double>) {
    for (double scale : {1e-160, 1e-200, 1e-300, 1e-310, 1e+150}) {
      check_fisher<T>({3 * 8192 + 5, 11}, false, scale);
    }
  }
  check_sqrt_normalize<T>(3, 1000);
  check_sqrt_normalize<T>(2, 1);
}

}  // namespace

int main() {
  // The planner on realistic layers (H100: 132 SMs): config, tiles, splits.
  struct Layer {
    const char* name;
    int64_t rows, cols, groups, n;
  };
  const Layer layers[] = {{"resnet18 conv1 64x27", 64, 27, 1, 64},   {"resnet18 layer1 64x576", 64, 576, 1, 64},
                          {"resnet18 layer4 512x4608", 512, 4608, 1, 64}, {"lenet conv1 6x25", 6, 25, 1, 256},
                          {"transformer 768x256", 768, 256, 1, 32},   {"depthwise 1x9 g=256", 1, 9, 256, 64}};
  for (const Layer& l : layers) {
    const auto q = plan_sq_grad_sum(l.rows, l.cols, l.groups, l.n, 132);
    std::printf("plan %-28s tile %3ld tiles %5ld splits %3ld\n", l.name, (long)q.tile_rows, (long)q.tiles,
                (long)q.splits);
  }
  run_all<double>();
  run_all<float>();
  std::printf("%d of %d checks passed\n", checks - failures, checks);
  return failures == 0 ? 0 : 1;
}
