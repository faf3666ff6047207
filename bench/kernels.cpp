// The time loops of bench's SimpleRNN and GRU layers on the CPU, and the matrix products around them;
// bench/kernels.py builds this file and holds the rest.
//
// Tensors are time-major, (steps, batch, gates * hidden). Each thread runs the whole loop over its own rows of the
// batch, so threads never wait for each other within a step. A step is one small product with the recurrent
// weights and one pass of gate arithmetic that the compiler vectorises (`omp simd`). h holds the state before
// every step and after the last: h[0] = 0, h[t + 1] = the output of step t.
//
// Products: oneDNN's sgemm where kernels.py found its library (BENCH_ONEDNN), for on AMD's CPUs it is far faster
// than MKL's (docs/performance.md); MKL's otherwise, and always in float64 (oneDNN has none). libtorch exports MKL's.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*, const int*,
            const float*, const int*, const float*, float*, const int*);
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*, const double*, const int*,
            const double*, const int*, const double*, double*, const int*);
#ifdef BENCH_ONEDNN
int dnnl_sgemm(char, char, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t, float,
               float*, int64_t);
#endif
}

namespace {

constexpr int64_t kMinRows = 8;  // fewer rows per thread cost more in the product's overhead than they save

// c (m x n) = a' b' + beta c, all row-major: a' is a (m x k), or a^T for ta (a: k x m); b' is b (k x n), or b^T
// for tb (b: n x k).
template <typename T>
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, const T* b, T beta, T* c) {
  const int64_t lda = ta ? m : k, ldb = tb ? k : n;
#ifdef BENCH_ONEDNN
  if constexpr (std::is_same_v<T, float>) {
    dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, 1.f, a, lda, b, ldb, beta, c, n);
    return;
  }
#endif
  // BLAS is column-major: row-major c = a' b' is column-major c^T = b'^T a'^T.
  const char cta = ta ? 'T' : 'N', ctb = tb ? 'T' : 'N';
  const int cm = n, cn = m, ck = k, clda = lda, cldb = ldb;
  const T one = 1;
  if constexpr (std::is_same_v<T, float>) {
    sgemm_(&ctb, &cta, &cm, &cn, &ck, &one, b, &cldb, a, &clda, &beta, c, &cm);
  } else {
    dgemm_(&ctb, &cta, &cm, &cn, &ck, &one, b, &cldb, a, &clda, &beta, c, &cm);
  }
}

// c (m x n) += a (m x k) @ w^T, w (n x k), or a @ w, w (k x n).
template <typename T>
void add_product(bool transpose_w, int m, int n, int k, const T* a, const T* w, T* c) {
  gemm<T>(false, transpose_w, m, n, k, a, w, T(1), c);
}

// Through exp, which the compiler vectorises. The clamps keep exp finite (-ffast-math assumes it is): beyond them
// both functions are at their limits in float32.
template <typename T> inline T sigmoid(T x) { return T(1) / (T(1) + std::exp(-std::clamp(x, T(-80), T(80)))); }
template <typename T> inline T tanh_exp(T x) {
  return T(2) / (T(1) + std::exp(T(-2) * std::clamp(x, T(-20), T(20)))) - T(1);
}

// Runs body(first_row, rows) on each thread's share of the batch.
template <typename F>
void over_batch(int64_t batch, const F& body) {
  at::parallel_for(0, batch, kMinRows, [&](int64_t b0, int64_t b1) { body(b0, b1 - b0); });
}

// ---- tanh RNN: h' = tanh(u + h W^T), u = x W_ih^T + b_ih + b_hh ----

template <typename T>
void rnn_forward(int64_t steps, int64_t batch, int64_t hid, const T* u, const T* w, T* h) {
  over_batch(batch, [&](int64_t b0, int64_t rows) {
    const int64_t n = rows * hid;
    std::fill(h + b0 * hid, h + b0 * hid + n, T(0));
    for (int64_t t = 0; t < steps; ++t) {
      const T* prev = h + (t * batch + b0) * hid;
      T* next = h + ((t + 1) * batch + b0) * hid;
      std::copy(u + (t * batch + b0) * hid, u + (t * batch + b0) * hid + n, next);
      add_product<T>(true, rows, hid, hid, prev, w, next);
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) next[i] = tanh_exp(next[i]);
    }
  });
}

// du[t] = dh[t] (1 - h[t + 1]^2), where dh[t] = grad[t] + du[t + 1] W.
template <typename T>
void rnn_backward(int64_t steps, int64_t batch, int64_t hid, const T* grad, const T* h, const T* w, T* du) {
  over_batch(batch, [&](int64_t b0, int64_t rows) {
    const int64_t n = rows * hid;
    std::vector<T> dh(grad + ((steps - 1) * batch + b0) * hid, grad + ((steps - 1) * batch + b0) * hid + n);
    for (int64_t t = steps - 1; t >= 0; --t) {
      T* d = du + (t * batch + b0) * hid;
      const T* ht = h + ((t + 1) * batch + b0) * hid;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) d[i] = dh[i] * (T(1) - ht[i] * ht[i]);
      if (t == 0) break;
      std::copy(grad + ((t - 1) * batch + b0) * hid, grad + ((t - 1) * batch + b0) * hid + n, dh.begin());
      add_product<T>(false, rows, hid, hid, d, w, dh.data());
    }
  });
}

// ---- GRU (gates r, z, n): r, z = sigmoid(x_rz + h W_rz^T + b_rz); n = tanh(x_n + r (h W_n^T + b_n));
//      h' = n + z (h - n) ----

template <typename T>
void gru_forward(int64_t steps, int64_t batch, int64_t hid, const T* xw, const T* w, const T* bias, T* h, T* rzn,
                 T* ghn) {
  over_batch(batch, [&](int64_t b0, int64_t rows) {
    std::vector<T> gh(rows * 3 * hid);
    std::fill(h + b0 * hid, h + (b0 + rows) * hid, T(0));
    for (int64_t t = 0; t < steps; ++t) {
      const T* prev = h + (t * batch + b0) * hid;
      std::fill(gh.begin(), gh.end(), T(0));
      add_product<T>(true, rows, 3 * hid, hid, prev, w, gh.data());
      for (int64_t b = 0; b < rows; ++b) {
        const int64_t row = t * batch + b0 + b;
        const T* x = xw + row * 3 * hid;
        const T* g = &gh[b * 3 * hid];
        T* gates = rzn + row * 3 * hid;
        T* gn = ghn + row * hid;
        const T* hp = prev + b * hid;
        T* hn = h + (row + batch) * hid;
#pragma omp simd
        for (int64_t j = 0; j < hid; ++j) {
          const T r = sigmoid(x[j] + g[j] + bias[j]);
          const T z = sigmoid(x[hid + j] + g[hid + j] + bias[hid + j]);
          const T gnj = g[2 * hid + j] + bias[2 * hid + j];
          const T n = tanh_exp(x[2 * hid + j] + r * gnj);
          gates[j] = r, gates[hid + j] = z, gates[2 * hid + j] = n, gn[j] = gnj;
          hn[j] = n + z * (hp[j] - n);
        }
      }
    }
  });
}

// dgh: the gradients of h W^T + b_hh (r, z and n parts); dxw: of the input projections x W_ih^T + b_ih.
template <typename T>
void gru_backward(int64_t steps, int64_t batch, int64_t hid, const T* grad, const T* h, const T* rzn, const T* ghn,
                  const T* w, T* dgh, T* dxw) {
  over_batch(batch, [&](int64_t b0, int64_t rows) {
    const int64_t n = rows * hid;
    std::vector<T> dh(grad + ((steps - 1) * batch + b0) * hid, grad + ((steps - 1) * batch + b0) * hid + n);
    for (int64_t t = steps - 1; t >= 0; --t) {
      const int64_t row0 = t * batch + b0;
      for (int64_t b = 0; b < rows; ++b) {
        const T* gates = rzn + (row0 + b) * 3 * hid;
        const T* gn = ghn + (row0 + b) * hid;
        const T* hp = h + (row0 + b) * hid;  // the state before step t
        T* dg = dgh + (row0 + b) * 3 * hid;
        T* dx = dxw + (row0 + b) * 3 * hid;
        T* d = &dh[b * hid];
#pragma omp simd
        for (int64_t j = 0; j < hid; ++j) {
          const T r = gates[j], z = gates[hid + j], nj = gates[2 * hid + j];
          const T dn = d[j] * (T(1) - z) * (T(1) - nj * nj);
          const T dz = d[j] * (hp[j] - nj) * z * (T(1) - z);
          const T dr = dn * gn[j] * r * (T(1) - r);
          dg[j] = dx[j] = dr, dg[hid + j] = dx[hid + j] = dz;
          dg[2 * hid + j] = dn * r, dx[2 * hid + j] = dn;
          d[j] *= z;
        }
      }
      if (t == 0) break;
      const T* g = grad + (t - 1) * batch * hid + b0 * hid;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) dh[i] += g[i];
      add_product<T>(false, rows, hid, 3 * hid, dgh + row0 * 3 * hid, w, dh.data());
    }
  });
}

// ---- the operators: checks, buffers and the dtype dispatch ----

void check(const at::Tensor& t, int64_t dim, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.dim() == dim && t.is_contiguous(), name, ": expected a contiguous CPU tensor of ",
              dim, " dimensions");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name, ": float32 or float64 only");
}

template <typename T> T* ptr(const at::Tensor& t) { return t.data_ptr<T>(); }

#define BENCH_DISPATCH(x, ...) AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bench_kernels", __VA_ARGS__)

// a @ b for 2-D tensors, each contiguous or the transpose of a contiguous one.
at::Tensor mm_op(const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(0), "mm: expected matrices (m, k) and (k, n)");
  const bool ta = !a.is_contiguous() && a.t().is_contiguous(), tb = !b.is_contiguous() && b.t().is_contiguous();
  const auto a_ = ta ? a : a.contiguous(), b_ = tb ? b : b.contiguous();
  check(ta ? a_.t() : a_, 2, "a"), check(tb ? b_.t() : b_, 2, "b");
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "mm: a and b differ in dtype");
  auto c = at::empty({a.size(0), b.size(1)}, a.options());
  BENCH_DISPATCH(a, [&] { gemm<scalar_t>(ta, tb, a.size(0), b.size(1), a.size(1), ptr<scalar_t>(a_), ptr<scalar_t>(b_),
                                         scalar_t(0), ptr<scalar_t>(c)); });
  return c;
}

at::Tensor rnn_forward_op(const at::Tensor& u, const at::Tensor& w) {
  check(u, 3, "u"), check(w, 2, "w_hh");
  const int64_t steps = u.size(0), batch = u.size(1), hid = u.size(2);
  auto h = at::empty({steps + 1, batch, hid}, u.options());
  BENCH_DISPATCH(u, [&] { rnn_forward<scalar_t>(steps, batch, hid, ptr<scalar_t>(u), ptr<scalar_t>(w),
                                                ptr<scalar_t>(h)); });
  return h;
}

at::Tensor rnn_backward_op(const at::Tensor& grad, const at::Tensor& h, const at::Tensor& w) {
  check(grad, 3, "grad"), check(h, 3, "h"), check(w, 2, "w_hh");
  auto du = at::empty_like(grad);
  BENCH_DISPATCH(grad, [&] { rnn_backward<scalar_t>(grad.size(0), grad.size(1), grad.size(2), ptr<scalar_t>(grad),
                                                    ptr<scalar_t>(h), ptr<scalar_t>(w), ptr<scalar_t>(du)); });
  return du;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_forward_op(const at::Tensor& xw, const at::Tensor& w,
                                                              const at::Tensor& b) {
  check(xw, 3, "xw"), check(w, 2, "w_hh"), check(b, 1, "b_hh");
  const int64_t steps = xw.size(0), batch = xw.size(1), hid = w.size(1);
  auto h = at::empty({steps + 1, batch, hid}, xw.options());
  auto rzn = at::empty_like(xw), ghn = at::empty({steps, batch, hid}, xw.options());
  BENCH_DISPATCH(xw, [&] { gru_forward<scalar_t>(steps, batch, hid, ptr<scalar_t>(xw), ptr<scalar_t>(w),
                                                 ptr<scalar_t>(b), ptr<scalar_t>(h), ptr<scalar_t>(rzn),
                                                 ptr<scalar_t>(ghn)); });
  return {h, rzn, ghn};
}

std::tuple<at::Tensor, at::Tensor> gru_backward_op(const at::Tensor& grad, const at::Tensor& h, const at::Tensor& rzn,
                                                   const at::Tensor& ghn, const at::Tensor& w) {
  check(grad, 3, "grad"), check(h, 3, "h"), check(rzn, 3, "rzn"), check(ghn, 3, "ghn"), check(w, 2, "w_hh");
  auto dgh = at::empty_like(rzn), dxw = at::empty_like(rzn);
  BENCH_DISPATCH(grad, [&] { gru_backward<scalar_t>(grad.size(0), grad.size(1), grad.size(2), ptr<scalar_t>(grad),
                                                    ptr<scalar_t>(h), ptr<scalar_t>(rzn), ptr<scalar_t>(ghn),
                                                    ptr<scalar_t>(w), ptr<scalar_t>(dgh), ptr<scalar_t>(dxw)); });
  return {dgh, dxw};
}

}  // namespace

TORCH_LIBRARY(bench_kernels, m) {
  m.def("mm(Tensor a, Tensor b) -> Tensor", mm_op);
  m.def("rnn_forward(Tensor u, Tensor w_hh) -> Tensor", rnn_forward_op);
  m.def("rnn_backward(Tensor grad, Tensor h, Tensor w_hh) -> Tensor", rnn_backward_op);
  m.def("gru_forward(Tensor xw, Tensor w_hh, Tensor b_hh) -> (Tensor, Tensor, Tensor)", gru_forward_op);
  m.def("gru_backward(Tensor grad, Tensor h, Tensor rzn, Tensor ghn, Tensor w_hh) -> (Tensor, Tensor)", gru_backward_op);
}
