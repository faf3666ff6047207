// The time loops of bench's recurrent layers on the CPU; bench/kernels.py builds this file and holds the rest.
//
// Tensors are time-major, (steps, batch, gates * hidden), and stored by position in the text. Each thread runs the
// whole loop over its own rows of the batch, so threads never wait for each other within a step. A step is one
// small product with the recurrent weights (BLAS: MKL's, exported by libtorch) and one pass of gate arithmetic
// that the compiler vectorises (`omp simd`). A layer that reads backwards takes each text's lengths: its step t
// is the text's position length - 1 - t, and padding positions come after the text, as when reading forwards.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <vector>

extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*, const int*,
            const float*, const int*, const float*, float*, const int*);
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*, const double*, const int*,
            const double*, const int*, const double*, double*, const int*);
}

namespace {

constexpr int64_t kMinRows = 8;  // fewer rows per thread cost more in the product's overhead than they save

// c (m x n) += a (m x k) @ w^T, w (n x k), or a @ w, w (k x n); all row-major. BLAS is column-major: row-major
// c = a b is column-major c^T = b^T a^T.
template <typename T>
void add_product(bool transpose_w, int m, int n, int k, const T* a, const T* w, T* c) {
  const char tw = transpose_w ? 'T' : 'N', ta = 'N';
  const int ldw = transpose_w ? k : n;
  const T one = 1;
  if constexpr (std::is_same_v<T, float>) {
    sgemm_(&tw, &ta, &n, &m, &k, &one, w, &ldw, a, &k, &one, c, &n);
  } else {
    dgemm_(&tw, &ta, &n, &m, &k, &one, w, &ldw, a, &k, &one, c, &n);
  }
}

template <typename T> inline T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }
template <typename T> inline T tanh_exp(T x) { return T(2) / (T(1) + std::exp(T(-2) * x)) - T(1); }  // vectorises

// Where step t of each row is: its flat row in a (steps, batch, ...) tensor.
struct Steps {
  int64_t steps, batch;
  const int64_t* lengths;  // null when reading forwards
  int64_t row(int64_t t, int64_t b) const {
    return ((lengths && t < lengths[b]) ? lengths[b] - 1 - t : t) * batch + b;
  }
};

Steps steps_of(const at::Tensor& x, const std::optional<at::Tensor>& lengths) {
  Steps s{x.size(0), x.size(1), nullptr};
  if (lengths) {
    TORCH_CHECK(lengths->scalar_type() == at::kLong && lengths->is_contiguous() && lengths->numel() == s.batch,
                "lengths: expected ", s.batch, " contiguous int64 values");
    TORCH_CHECK(lengths->min().item<int64_t>() >= 0 && lengths->max().item<int64_t>() <= s.steps,
                "lengths: every length must lie in [0, ", s.steps, "]");
    s.lengths = lengths->data_ptr<int64_t>();
  }
  return s;
}

// Runs body(first_row, rows) on each thread's share of the batch.
template <typename F>
void over_batch(int64_t batch, const F& body) {
  at::parallel_for(0, batch, kMinRows, [&](int64_t b0, int64_t b1) { body(b0, b1 - b0); });
}

template <typename T>
void copy_row(const T* from, T* to, int64_t n) { std::copy(from, from + n, to); }

// ---- tanh RNN: h' = tanh(u + h W^T), u = x W_ih^T + b_ih + b_hh ----

template <typename T>
void rnn_forward(const Steps& s, int64_t hid, const T* u, const T* w, T* h_prev, T* out) {
  over_batch(s.batch, [&](int64_t b0, int64_t rows) {
    std::vector<T> h(rows * hid, T(0)), next(rows * hid);
    for (int64_t t = 0; t < s.steps; ++t) {
      for (int64_t b = 0; b < rows; ++b) {
        const int64_t r = s.row(t, b0 + b);
        copy_row(u + r * hid, &next[b * hid], hid);
        copy_row(&h[b * hid], h_prev + r * hid, hid);
      }
      add_product<T>(true, rows, hid, hid, h.data(), w, next.data());
      for (int64_t b = 0; b < rows; ++b) {
        T* hb = &h[b * hid];
        T* ob = out + s.row(t, b0 + b) * hid;
        const T* nb = &next[b * hid];
#pragma omp simd
        for (int64_t j = 0; j < hid; ++j) ob[j] = hb[j] = tanh_exp(nb[j]);
      }
    }
  });
}

template <typename T>
void rnn_backward(const Steps& s, int64_t hid, const T* grad, const T* out, const T* w, T* dpre) {
  over_batch(s.batch, [&](int64_t b0, int64_t rows) {
    std::vector<T> dh(rows * hid), d(rows * hid);
    for (int64_t b = 0; b < rows; ++b) copy_row(grad + s.row(s.steps - 1, b0 + b) * hid, &dh[b * hid], hid);
    for (int64_t t = s.steps - 1; t >= 0; --t) {
      for (int64_t b = 0; b < rows; ++b) {
        const int64_t r = s.row(t, b0 + b);
        const T* o = out + r * hid;
        T* db = &d[b * hid];
        T* dp = dpre + r * hid;
        const T* dhb = &dh[b * hid];
#pragma omp simd
        for (int64_t j = 0; j < hid; ++j) dp[j] = db[j] = dhb[j] * (T(1) - o[j] * o[j]);
      }
      if (t == 0) break;
      for (int64_t b = 0; b < rows; ++b) copy_row(grad + s.row(t - 1, b0 + b) * hid, &dh[b * hid], hid);
      add_product<T>(false, rows, hid, hid, d.data(), w, dh.data());
    }
  });
}

// ---- GRU (gates r, z, n): r, z = sigmoid(x_rz + h W_rz^T + b_rz); n = tanh(x_n + r (h W_n^T + b_n));
//      h' = n + z (h - n) ----

template <typename T>
void gru_forward(const Steps& s, int64_t hid, const T* xw, const T* w, const T* bias, T* h_prev, T* out, T* rzn,
                 T* ghn) {
  over_batch(s.batch, [&](int64_t b0, int64_t rows) {
    std::vector<T> h(rows * hid, T(0)), gh(rows * 3 * hid);
    for (int64_t t = 0; t < s.steps; ++t) {
      std::fill(gh.begin(), gh.end(), T(0));
      add_product<T>(true, rows, 3 * hid, hid, h.data(), w, gh.data());
      for (int64_t b = 0; b < rows; ++b) {
        const int64_t r = s.row(t, b0 + b);
        const T* x = xw + r * 3 * hid;
        const T* g = &gh[b * 3 * hid];
        T* gates = rzn + r * 3 * hid;
        T* gn = ghn + r * hid;
        T* hb = &h[b * hid];
        T* ob = out + r * hid;
        copy_row(hb, h_prev + r * hid, hid);
#pragma omp simd
        for (int64_t j = 0; j < hid; ++j) {
          const T rj = sigmoid(x[j] + g[j] + bias[j]);
          const T zj = sigmoid(x[hid + j] + g[hid + j] + bias[hid + j]);
          const T gnj = g[2 * hid + j] + bias[2 * hid + j];
          const T nj = tanh_exp(x[2 * hid + j] + rj * gnj);
          gates[j] = rj, gates[hid + j] = zj, gates[2 * hid + j] = nj, gn[j] = gnj;
          ob[j] = hb[j] = nj + zj * (hb[j] - nj);
        }
      }
    }
  });
}

// dgh: the gradients of h W^T + b (r, z and n parts); dxw: of the input projections x W_ih^T + b_ih.
template <typename T>
void gru_backward(const Steps& s, int64_t hid, const T* grad, const T* h_prev, const T* rzn, const T* ghn,
                  const T* w, T* dgh, T* dxw) {
  over_batch(s.batch, [&](int64_t b0, int64_t rows) {
    std::vector<T> dh(rows * hid), dg(rows * 3 * hid);
    for (int64_t b = 0; b < rows; ++b) copy_row(grad + s.row(s.steps - 1, b0 + b) * hid, &dh[b * hid], hid);
    for (int64_t t = s.steps - 1; t >= 0; --t) {
      for (int64_t b = 0; b < rows; ++b) {
        const int64_t r = s.row(t, b0 + b);
        const T* gates = rzn + r * 3 * hid;
        const T* gn = ghn + r * hid;
        const T* hp = h_prev + r * hid;
        T* dgb = &dg[b * 3 * hid];
        T* dx = dxw + r * 3 * hid;
        T* d = &dh[b * hid];
#pragma omp simd
        for (int64_t j = 0; j < hid; ++j) {
          const T rj = gates[j], zj = gates[hid + j], nj = gates[2 * hid + j];
          const T dn = d[j] * (T(1) - zj) * (T(1) - nj * nj);
          const T dz = d[j] * (hp[j] - nj) * zj * (T(1) - zj);
          const T dr = dn * gn[j] * rj * (T(1) - rj);
          dgb[j] = dx[j] = dr, dgb[hid + j] = dx[hid + j] = dz;
          dgb[2 * hid + j] = dn * rj, dx[2 * hid + j] = dn;
          d[j] *= zj;
        }
        copy_row(dgb, dgh + r * 3 * hid, 3 * hid);
      }
      if (t == 0) break;
      for (int64_t b = 0; b < rows; ++b) {
        const T* g = grad + s.row(t - 1, b0 + b) * hid;
        T* d = &dh[b * hid];
#pragma omp simd
        for (int64_t j = 0; j < hid; ++j) d[j] += g[j];
      }
      add_product<T>(false, rows, hid, 3 * hid, dg.data(), w, dh.data());
    }
  });
}

// ---- LSTM (gates i, f, g, o): c' = f c + i g; h' = o tanh(c'); u = x W_ih^T + b_ih + b_hh ----

template <typename T>
void lstm_forward(const Steps& s, int64_t hid, const T* u, const T* w, T* h_prev, T* c_prev, T* out, T* gates) {
  over_batch(s.batch, [&](int64_t b0, int64_t rows) {
    std::vector<T> h(rows * hid, T(0)), c(rows * hid, T(0)), pre(rows * 4 * hid);
    for (int64_t t = 0; t < s.steps; ++t) {
      for (int64_t b = 0; b < rows; ++b) copy_row(u + s.row(t, b0 + b) * 4 * hid, &pre[b * 4 * hid], 4 * hid);
      add_product<T>(true, rows, 4 * hid, hid, h.data(), w, pre.data());
      for (int64_t b = 0; b < rows; ++b) {
        const int64_t r = s.row(t, b0 + b);
        const T* p = &pre[b * 4 * hid];
        T* gb = gates + r * 4 * hid;
        T* hb = &h[b * hid];
        T* cb = &c[b * hid];
        T* ob = out + r * hid;
        copy_row(hb, h_prev + r * hid, hid);
        copy_row(cb, c_prev + r * hid, hid);
#pragma omp simd
        for (int64_t j = 0; j < hid; ++j) {
          const T i = sigmoid(p[j]), f = sigmoid(p[hid + j]), g = tanh_exp(p[2 * hid + j]),
                  o = sigmoid(p[3 * hid + j]);
          gb[j] = i, gb[hid + j] = f, gb[2 * hid + j] = g, gb[3 * hid + j] = o;
          cb[j] = f * cb[j] + i * g;
          ob[j] = hb[j] = o * tanh_exp(cb[j]);
        }
      }
    }
  });
}

template <typename T>
void lstm_backward(const Steps& s, int64_t hid, const T* grad, const T* c_prev, const T* gates, const T* w,
                   T* dgates) {
  over_batch(s.batch, [&](int64_t b0, int64_t rows) {
    std::vector<T> dh(rows * hid), dc(rows * hid, T(0)), dg(rows * 4 * hid);
    for (int64_t b = 0; b < rows; ++b) copy_row(grad + s.row(s.steps - 1, b0 + b) * hid, &dh[b * hid], hid);
    for (int64_t t = s.steps - 1; t >= 0; --t) {
      for (int64_t b = 0; b < rows; ++b) {
        const int64_t r = s.row(t, b0 + b);
        const T* gb = gates + r * 4 * hid;
        const T* cp = c_prev + r * hid;
        T* dgb = &dg[b * 4 * hid];
        const T* dhb = &dh[b * hid];
        T* dcb = &dc[b * hid];
#pragma omp simd
        for (int64_t j = 0; j < hid; ++j) {
          const T i = gb[j], f = gb[hid + j], g = gb[2 * hid + j], o = gb[3 * hid + j];
          const T tc = tanh_exp(f * cp[j] + i * g);
          const T dcj = dcb[j] + dhb[j] * o * (T(1) - tc * tc);
          dgb[j] = dcj * g * i * (T(1) - i);
          dgb[hid + j] = dcj * cp[j] * f * (T(1) - f);
          dgb[2 * hid + j] = dcj * i * (T(1) - g * g);
          dgb[3 * hid + j] = dhb[j] * tc * o * (T(1) - o);
          dcb[j] = dcj * f;
        }
        copy_row(dgb, dgates + r * 4 * hid, 4 * hid);
      }
      if (t == 0) break;
      for (int64_t b = 0; b < rows; ++b) copy_row(grad + s.row(t - 1, b0 + b) * hid, &dh[b * hid], hid);
      add_product<T>(false, rows, hid, 4 * hid, dg.data(), w, dh.data());
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

std::tuple<at::Tensor, at::Tensor> rnn_forward_op(const at::Tensor& u, const at::Tensor& w,
                                                  const std::optional<at::Tensor>& lengths) {
  check(u, 3, "u"), check(w, 2, "w_hh");
  const Steps s = steps_of(u, lengths);
  auto h_prev = at::empty_like(u), out = at::empty_like(u);
  BENCH_DISPATCH(u, [&] { rnn_forward<scalar_t>(s, w.size(1), ptr<scalar_t>(u), ptr<scalar_t>(w),
                                                ptr<scalar_t>(h_prev), ptr<scalar_t>(out)); });
  return {h_prev, out};
}

at::Tensor rnn_backward_op(const at::Tensor& grad, const at::Tensor& out, const at::Tensor& w,
                           const std::optional<at::Tensor>& lengths) {
  check(grad, 3, "grad"), check(out, 3, "out"), check(w, 2, "w_hh");
  const Steps s = steps_of(grad, lengths);
  auto dpre = at::empty_like(grad);
  BENCH_DISPATCH(grad, [&] { rnn_backward<scalar_t>(s, w.size(1), ptr<scalar_t>(grad), ptr<scalar_t>(out),
                                                    ptr<scalar_t>(w), ptr<scalar_t>(dpre)); });
  return dpre;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_forward_op(
    const at::Tensor& xw, const at::Tensor& w, const at::Tensor& b, const std::optional<at::Tensor>& lengths) {
  check(xw, 3, "xw"), check(w, 2, "w_hh"), check(b, 1, "b_hh");
  const Steps s = steps_of(xw, lengths);
  const int64_t hid = w.size(1);
  auto h_prev = at::empty({s.steps, s.batch, hid}, xw.options()), out = at::empty_like(h_prev);
  auto rzn = at::empty_like(xw), ghn = at::empty_like(h_prev);
  BENCH_DISPATCH(xw, [&] { gru_forward<scalar_t>(s, hid, ptr<scalar_t>(xw), ptr<scalar_t>(w), ptr<scalar_t>(b),
                                                 ptr<scalar_t>(h_prev), ptr<scalar_t>(out), ptr<scalar_t>(rzn),
                                                 ptr<scalar_t>(ghn)); });
  return {h_prev, out, rzn, ghn};
}

std::tuple<at::Tensor, at::Tensor> gru_backward_op(const at::Tensor& grad, const at::Tensor& h_prev,
                                                   const at::Tensor& rzn, const at::Tensor& ghn, const at::Tensor& w,
                                                   const std::optional<at::Tensor>& lengths) {
  check(grad, 3, "grad"), check(h_prev, 3, "h_prev"), check(rzn, 3, "rzn"), check(ghn, 3, "ghn"), check(w, 2, "w_hh");
  const Steps s = steps_of(grad, lengths);
  auto dgh = at::empty_like(rzn), dxw = at::empty_like(rzn);
  BENCH_DISPATCH(grad, [&] { gru_backward<scalar_t>(s, w.size(1), ptr<scalar_t>(grad), ptr<scalar_t>(h_prev),
                                                    ptr<scalar_t>(rzn), ptr<scalar_t>(ghn), ptr<scalar_t>(w),
                                                    ptr<scalar_t>(dgh), ptr<scalar_t>(dxw)); });
  return {dgh, dxw};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_forward_op(
    const at::Tensor& u, const at::Tensor& w, const std::optional<at::Tensor>& lengths) {
  check(u, 3, "u"), check(w, 2, "w_hh");
  const Steps s = steps_of(u, lengths);
  const int64_t hid = w.size(1);
  auto h_prev = at::empty({s.steps, s.batch, hid}, u.options());
  auto c_prev = at::empty_like(h_prev), out = at::empty_like(h_prev), gates = at::empty_like(u);
  BENCH_DISPATCH(u, [&] { lstm_forward<scalar_t>(s, hid, ptr<scalar_t>(u), ptr<scalar_t>(w), ptr<scalar_t>(h_prev),
                                                 ptr<scalar_t>(c_prev), ptr<scalar_t>(out), ptr<scalar_t>(gates)); });
  return {h_prev, c_prev, out, gates};
}

at::Tensor lstm_backward_op(const at::Tensor& grad, const at::Tensor& c_prev, const at::Tensor& gates,
                            const at::Tensor& w, const std::optional<at::Tensor>& lengths) {
  check(grad, 3, "grad"), check(c_prev, 3, "c_prev"), check(gates, 3, "gates"), check(w, 2, "w_hh");
  const Steps s = steps_of(grad, lengths);
  auto dgates = at::empty_like(gates);
  BENCH_DISPATCH(grad, [&] { lstm_backward<scalar_t>(s, w.size(1), ptr<scalar_t>(grad), ptr<scalar_t>(c_prev),
                                                     ptr<scalar_t>(gates), ptr<scalar_t>(w), ptr<scalar_t>(dgates)); });
  return dgates;
}

}  // namespace

TORCH_LIBRARY(bench_kernels, m) {
  m.def("rnn_forward(Tensor u, Tensor w_hh, Tensor? lengths) -> (Tensor, Tensor)", rnn_forward_op);
  m.def("rnn_backward(Tensor grad, Tensor out, Tensor w_hh, Tensor? lengths) -> Tensor", rnn_backward_op);
  m.def("gru_forward(Tensor xw, Tensor w_hh, Tensor b_hh, Tensor? lengths) -> (Tensor, Tensor, Tensor, Tensor)",
        gru_forward_op);
  m.def("gru_backward(Tensor grad, Tensor h_prev, Tensor rzn, Tensor ghn, Tensor w_hh, Tensor? lengths)"
        " -> (Tensor, Tensor)", gru_backward_op);
  m.def("lstm_forward(Tensor u, Tensor w_hh, Tensor? lengths) -> (Tensor, Tensor, Tensor, Tensor)", lstm_forward_op);
  m.def("lstm_backward(Tensor grad, Tensor c_prev, Tensor gates, Tensor w_hh, Tensor? lengths) -> Tensor",
        lstm_backward_op);
}
