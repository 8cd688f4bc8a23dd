# C-level declarations of the training kernel: BLAS, constants, element-wise
# helpers, network state. Included textually by _kernel.pyx (a .pxd would be
# looked up by the module's dotted name); nothing here is shared with other
# modules (everything is inline or extern, so no C-API capsule is exported —
# such process-wide state is what breaks a module imported by several
# interpreters).

from libc.math cimport expf, sqrt, sqrtf, tanhf
from libc.stdint cimport int32_t


cdef extern from "cblas.h" nogil:
    ctypedef enum CBLAS_ORDER:
        CblasRowMajor
    ctypedef enum CBLAS_TRANSPOSE:
        CblasNoTrans
        CblasTrans
    void scipy_cblas_sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb,
                           int m, int n, int k, float alpha, const float *a, int lda,
                           const float *b, int ldb, float beta, float *c, int ldc)
    void scipy_openblas_set_num_threads(int num_threads)


cdef extern from *:
    """
    #define TH_ACT_RELU 0
    #define TH_ACT_ELU 1
    #define TH_ACT_GELU 2
    #define TH_ACT_TANH 3
    #define TH_ACT_SIGMOID 4
    #define TH_ACT_NONE (-1)
    #define TH_OK 0
    #define TH_TIMEOUT 1
    #define TH_CANCELLED 2
    #define TH_NAN 3
    #define TH_LN_EPS 1e-5
    #define TH_GELU_K 0.7978845608028654f
    #define TH_GELU_C 0.044715f
    #define TH_ADAM_B1 0.9
    #define TH_ADAM_B2 0.999
    #define TH_ADAM_EPS 1e-8f

    /* AdamW over one tensor, in C so that restrict lets the compiler
       vectorise it: with a million parameters it costs as much as the GEMMs. */
    static void th_adamw(float *restrict p, float *restrict m, float *restrict v,
                         const float *restrict g, Py_ssize_t n, float decay,
                         float lr, float bc1, float bc2) {
        const float b1 = 0.9f, b2 = 0.999f;
        for (Py_ssize_t i = 0; i < n; i++) {
            float mi = b1 * m[i] + (1.0f - b1) * g[i];
            float vi = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
            m[i] = mi;
            v[i] = vi;
            p[i] = p[i] * decay - lr * (mi / bc1) / (sqrtf(vi / bc2) + TH_ADAM_EPS);
        }
    }

    /* Row-wise helpers: restrict pointers and split partial sums let -O3
       vectorise them (Cython's pointer arithmetic can't promise no aliasing). */
    static void th_add(float *restrict dst, const float *restrict src, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) dst[i] += src[i];
    }

    static double th_sum(const float *restrict x, Py_ssize_t n, double shift) {
        double acc[4] = {0.0, 0.0, 0.0, 0.0};
        Py_ssize_t i = 0;
        for (; i + 4 <= n; i += 4)
            for (int j = 0; j < 4; j++) acc[j] += (double)x[i + j] - shift;
        for (; i < n; i++) acc[0] += (double)x[i] - shift;
        return (acc[0] + acc[1]) + (acc[2] + acc[3]);
    }

    /* Normalise one row in place (mean 0, variance 1), return 1/std. */
    static float th_layernorm_row(float *restrict z, Py_ssize_t n) {
        double mean = th_sum(z, n, 0.0) / (double)n;
        double acc[4] = {0.0, 0.0, 0.0, 0.0};
        Py_ssize_t i = 0;
        for (; i + 4 <= n; i += 4)
            for (int j = 0; j < 4; j++) {
                double d = (double)z[i + j] - mean;
                acc[j] += d * d;
            }
        for (; i < n; i++) {
            double d = (double)z[i] - mean;
            acc[0] += d * d;
        }
        double var = ((acc[0] + acc[1]) + (acc[2] + acc[3])) / (double)n;
        float inv = (float)(1.0 / sqrt(var + TH_LN_EPS));
        float fmean = (float)mean;
        for (i = 0; i < n; i++) z[i] = (z[i] - fmean) * inv;
        return inv;
    }

    /* dz = inv * (dzn - mean(dzn) - zn * mean(dzn * zn)), in place on dz. */
    static void th_layernorm_back_row(float *restrict dz, const float *restrict zn,
                                      Py_ssize_t n, float inv) {
        double s1[4] = {0.0, 0.0, 0.0, 0.0}, s2[4] = {0.0, 0.0, 0.0, 0.0};
        Py_ssize_t i = 0;
        for (; i + 4 <= n; i += 4)
            for (int j = 0; j < 4; j++) {
                s1[j] += dz[i + j];
                s2[j] += (double)dz[i + j] * zn[i + j];
            }
        for (; i < n; i++) {
            s1[0] += dz[i];
            s2[0] += (double)dz[i] * zn[i];
        }
        float m1 = (float)(((s1[0] + s1[1]) + (s1[2] + s1[3])) / (double)n);
        float m2 = (float)(((s2[0] + s2[1]) + (s2[2] + s2[3])) / (double)n);
        for (i = 0; i < n; i++) dz[i] = inv * (dz[i] - m1 - zn[i] * m2);
    }

    static void th_relu(const float *restrict a, float *restrict h, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) h[i] = a[i] > 0.0f ? a[i] : 0.0f;
    }

    static void th_relu_grad(const float *restrict a, const float *restrict dh,
                             float *restrict da, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) da[i] = a[i] > 0.0f ? dh[i] : 0.0f;
    }
    """
    void th_add(float *dst, const float *src, Py_ssize_t n) noexcept nogil
    float th_layernorm_row(float *z, Py_ssize_t n) noexcept nogil
    void th_layernorm_back_row(float *dz, const float *zn, Py_ssize_t n, float inv) noexcept nogil
    void th_relu(const float *a, float *h, Py_ssize_t n) noexcept nogil
    void th_relu_grad(const float *a, const float *dh, float *da, Py_ssize_t n) noexcept nogil
    void th_adamw(float *p, float *m, float *v, const float *g, Py_ssize_t n, float decay,
                  float lr, float bc1, float bc2) noexcept nogil
    # Activation codes follow ga.training.ACTIVATIONS order.
    const int ACT_RELU "TH_ACT_RELU"
    const int ACT_ELU "TH_ACT_ELU"
    const int ACT_GELU "TH_ACT_GELU"
    const int ACT_TANH "TH_ACT_TANH"
    const int ACT_SIGMOID "TH_ACT_SIGMOID"
    const int ACT_NONE "TH_ACT_NONE"
    const int ST_OK "TH_OK"
    const int ST_TIMEOUT "TH_TIMEOUT"
    const int ST_CANCELLED "TH_CANCELLED"
    const int ST_NAN "TH_NAN"
    const double LN_EPS "TH_LN_EPS"
    const float GELU_K "TH_GELU_K"
    const float GELU_C "TH_GELU_C"
    const double ADAM_B1 "TH_ADAM_B1"
    const double ADAM_B2 "TH_ADAM_B2"
    const float ADAM_EPS "TH_ADAM_EPS"


cdef inline void _activate(int act, const float *a, float *h, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef float x, t
    if act == ACT_RELU:
        th_relu(a, h, n)
    elif act == ACT_ELU:
        for i in range(n):
            h[i] = a[i] if a[i] > 0.0 else expf(a[i]) - 1.0
    elif act == ACT_GELU:
        for i in range(n):
            x = a[i]
            t = tanhf(GELU_K * (x + GELU_C * x * x * x))
            h[i] = 0.5 * x * (1.0 + t)
    elif act == ACT_TANH:
        for i in range(n):
            h[i] = tanhf(a[i])
    else:
        for i in range(n):
            x = a[i]
            # Split by sign so exp never overflows.
            if x >= 0.0:
                h[i] = 1.0 / (1.0 + expf(-x))
            else:
                t = expf(x)
                h[i] = t / (1.0 + t)


cdef inline void _activation_grad(int act, const float *a, const float *h, const float *dh,
                           float *da, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef float x, t, x2
    if act == ACT_RELU:
        th_relu_grad(a, dh, da, n)
    elif act == ACT_ELU:
        for i in range(n):
            da[i] = dh[i] if a[i] > 0.0 else dh[i] * (h[i] + 1.0)
    elif act == ACT_GELU:
        for i in range(n):
            x = a[i]
            x2 = x * x
            t = tanhf(GELU_K * (x + GELU_C * x2 * x))
            da[i] = dh[i] * (0.5 * (1.0 + t)
                             + 0.5 * x * (1.0 - t * t) * GELU_K
                             * (1.0 + 3.0 * GELU_C * x2))
    elif act == ACT_TANH:
        for i in range(n):
            da[i] = dh[i] * (1.0 - h[i] * h[i])
    else:
        for i in range(n):
            da[i] = dh[i] * h[i] * (1.0 - h[i])


cdef struct NetState:
    # Everything a network needs, in C memory, so the numeric routines are
    # plain functions: methods on the cdef class (vtable) break when a second
    # interpreter imports the module.
    int n_layers, n_nodes, n_outputs, cap, max_fan_in, max_fan_out
    long step_count
    Py_ssize_t n_params
    Py_ssize_t *w_off
    int *width
    int *fan_in
    int *fan_out
    int *act
    int *in_off
    int *in_ids
    float *params
    float *grads
    float *m
    float *v
    float **node_h
    float **node_dh
    float **layer_z
    float **layer_a
    float **layer_inv
    float *dz
    float *da
    int32_t *labels
    float *targets  # regression: the batch's standardised targets
    int regression  # 1: one linear output, squared error on float32 targets
