# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, subinterpreters_compatible=own_gil, auto_pickle=False
# cython: binding=False
"""Training kernel for candidate networks, usable inside isolated sub-interpreters.

numpy cannot be imported in an isolated sub-interpreter, so candidate networks
are trained here: plain C loops plus single-threaded OpenBLAS sgemm, float32
throughout, with the GIL released around every numeric loop so interpreters in
the pool train in parallel.

Rules this module follows so that it is safe in several interpreters at once
(see the pool findings in the design notes):

* compiled with ``subinterpreters_compatible=own_gil`` and
  ``CYTHON_USE_MODULE_STATE=1``;
* no typed memoryviews (their process-global state breaks as soon as a second
  interpreter imports the module); buffers are taken with
  ``PyObject_GetBuffer`` and released in ``finally``;
* no module-level Python-object globals; all state lives in ``Net`` objects.

The network semantics (layernorm without affine, concatenated inputs, AdamW,
softmax cross-entropy) are those of ``docs/network-spec.md``; ``ga.training``
validates the spec and drives this kernel epoch by epoch, and
``ga.reference`` is the numpy twin that the tests compare against.
"""

from cpython.buffer cimport (
    PyBUF_C_CONTIGUOUS,
    PyBUF_FORMAT,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.math cimport exp, expf, isfinite, log, sqrt, sqrtf, tanhf
from libc.stdint cimport int32_t, uintptr_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset
from posix.time cimport CLOCK_REALTIME, clock_gettime, timespec


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
    """
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

# Status codes returned by Net.train_epoch, mirrored in ga.training.
STATUS_OK = 0
STATUS_TIMEOUT = 1
STATUS_CANCELLED = 2
STATUS_NAN = 3


def set_blas_threads(int n):
    """Pin OpenBLAS to ``n`` threads: the pool already runs one interpreter per core."""
    scipy_openblas_set_num_threads(n)


# One interpreter per core means BLAS must not start its own threads.
scipy_openblas_set_num_threads(1)


cdef inline double _now() noexcept nogil:
    # CLOCK_REALTIME is what time.time() reads, so deadlines compare directly.
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef int _get_buffer(object obj, Py_buffer *view, Py_ssize_t itemsize,
                     bint is_float, Py_ssize_t expected_bytes) except -1:
    """Acquire a C-contiguous buffer of float32 (is_float) or int32 items.

    Raw byte buffers (bytes, ``memoryview.cast('B')``) are accepted too, since
    that is how numpy data crosses into a sub-interpreter.
    """
    PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
    cdef bytes fmt
    cdef bint ok
    try:
        fmt = b"B" if view.format == NULL else <bytes>view.format
        if fmt[:1] in (b"<", b"=", b"@"):
            fmt = fmt[1:]
        if fmt in (b"B", b"b", b"c"):
            ok = view.itemsize == 1
        elif is_float:
            ok = fmt == b"f" and view.itemsize == 4
        else:
            ok = fmt in (b"i", b"l", b"I") and view.itemsize == 4
        if not ok:
            raise TypeError(
                f"buffer format {fmt!r} (itemsize {view.itemsize}) is not "
                f"{'float32' if is_float else 'int32'} or raw bytes")
        if view.len != expected_bytes:
            raise ValueError(f"buffer holds {view.len} bytes, expected {expected_bytes}")
        if (<uintptr_t>view.buf) % itemsize != 0:
            raise ValueError("buffer is not aligned to its item size")
    except BaseException:
        PyBuffer_Release(view)
        raise
    return 0


cdef void _activate(int act, const float *a, float *h, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef float x, t
    if act == ACT_RELU:
        for i in range(n):
            h[i] = a[i] if a[i] > 0.0 else 0.0
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


cdef void _activation_grad(int act, const float *a, const float *h, const float *dh,
                           float *da, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef float x, t, x2
    if act == ACT_RELU:
        for i in range(n):
            da[i] = dh[i] if a[i] > 0.0 else 0.0
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


cdef class Net:
    """One network's weights, optimiser state and scratch buffers (all C memory).

    Layers are the units in spec order followed by the output layer. The flat
    parameter vector holds, per layer, ``W`` (fan_out x fan_in, row-major) then
    ``b`` (fan_out); ``ga.training`` builds and exports it in that order.
    """

    cdef int n_layers, n_nodes, n_outputs, cap, max_fan_in, max_fan_out
    cdef long step_count
    cdef Py_ssize_t n_params
    cdef int *width
    cdef int *fan_in
    cdef int *fan_out
    cdef int *act
    cdef int *in_off
    cdef int *in_ids
    cdef Py_ssize_t *w_off
    cdef float *params
    cdef float *grads
    cdef float *m
    cdef float *v
    cdef float **node_h
    cdef float **node_dh
    cdef float **layer_z
    cdef float **layer_a
    cdef float **layer_inv
    cdef float *dz
    cdef float *da
    cdef int32_t *labels

    def __cinit__(self, int n_inputs, int n_outputs, tuple unit_inputs, tuple unit_neurons,
                  tuple unit_acts, tuple output_inputs, int max_rows):
        cdef int n_units = len(unit_inputs)
        cdef int l, k, j, total_in = 0
        if n_inputs < 1 or n_outputs < 1 or max_rows < 1:
            raise ValueError("n_inputs, n_outputs and max_rows must be positive")
        if len(unit_neurons) != n_units or len(unit_acts) != n_units:
            raise ValueError("unit_inputs, unit_neurons and unit_acts differ in length")
        self.n_layers = n_units + 1
        self.n_nodes = n_units + 1
        self.n_outputs = n_outputs
        self.cap = max_rows
        for l in range(n_units):
            total_in += len(unit_inputs[l])
        total_in += len(output_inputs)
        self.width = <int *>calloc(self.n_nodes, sizeof(int))
        self.fan_in = <int *>calloc(self.n_layers, sizeof(int))
        self.fan_out = <int *>calloc(self.n_layers, sizeof(int))
        self.act = <int *>calloc(self.n_layers, sizeof(int))
        self.in_off = <int *>calloc(self.n_layers + 1, sizeof(int))
        self.in_ids = <int *>calloc(total_in, sizeof(int))
        self.w_off = <Py_ssize_t *>calloc(self.n_layers, sizeof(Py_ssize_t))
        self.node_h = <float **>calloc(self.n_nodes, sizeof(float *))
        self.node_dh = <float **>calloc(self.n_nodes, sizeof(float *))
        self.layer_z = <float **>calloc(self.n_layers, sizeof(float *))
        self.layer_a = <float **>calloc(self.n_layers, sizeof(float *))
        self.layer_inv = <float **>calloc(self.n_layers, sizeof(float *))
        if (not self.width or not self.fan_in or not self.fan_out or not self.act
                or not self.in_off or not self.in_ids or not self.w_off or not self.node_h
                or not self.node_dh or not self.layer_z or not self.layer_a
                or not self.layer_inv):
            raise MemoryError()
        self.width[0] = n_inputs
        for l in range(n_units):
            self.width[l + 1] = unit_neurons[l]
            if self.width[l + 1] < 1:
                raise ValueError("unit widths must be positive")
        # Wiring: layer l reads in_ids[in_off[l]:in_off[l+1]]; ids must be earlier nodes.
        k = 0
        for l in range(self.n_layers):
            ids = unit_inputs[l] if l < n_units else output_inputs
            self.in_off[l] = k
            if len(ids) == 0:
                raise ValueError(f"layer {l} has no inputs")
            for j in ids:
                if j < 0 or j > l:
                    raise ValueError(f"layer {l} reads node {j}, which is not earlier")
                self.in_ids[k] = j
                self.fan_in[l] += self.width[j]
                k += 1
            self.fan_out[l] = unit_neurons[l] if l < n_units else n_outputs
            self.act[l] = unit_acts[l] if l < n_units else ACT_NONE
            if l < n_units and not (ACT_RELU <= self.act[l] <= ACT_SIGMOID):
                raise ValueError(f"unknown activation code {self.act[l]}")
            self.w_off[l] = self.n_params
            self.n_params += <Py_ssize_t>self.fan_out[l] * (self.fan_in[l] + 1)
            self.max_fan_in = max(self.max_fan_in, self.fan_in[l])
            self.max_fan_out = max(self.max_fan_out, self.fan_out[l])
        self.in_off[self.n_layers] = k
        self.params = self._alloc(self.n_params)
        self.grads = self._alloc(self.n_params)
        self.m = self._alloc(self.n_params)
        self.v = self._alloc(self.n_params)
        for l in range(self.n_nodes):
            self.node_h[l] = self._alloc(<Py_ssize_t>max_rows * self.width[l])
            if l > 0:
                self.node_dh[l] = self._alloc(<Py_ssize_t>max_rows * self.width[l])
        for l in range(self.n_layers):
            self.layer_z[l] = self._alloc(<Py_ssize_t>max_rows * self.fan_in[l])
            self.layer_a[l] = self._alloc(<Py_ssize_t>max_rows * self.fan_out[l])
            self.layer_inv[l] = self._alloc(max_rows)
        self.dz = self._alloc(<Py_ssize_t>max_rows * self.max_fan_in)
        self.da = self._alloc(<Py_ssize_t>max_rows * self.max_fan_out)
        self.labels = <int32_t *>calloc(max_rows, sizeof(int32_t))
        if not self.labels:
            raise MemoryError()

    cdef float *_alloc(self, Py_ssize_t n) except NULL:
        cdef float *p = <float *>calloc(n if n > 0 else 1, sizeof(float))
        if not p:
            raise MemoryError(f"cannot allocate {n} floats")
        return p

    def __dealloc__(self):
        cdef int l
        if self.node_h:
            for l in range(self.n_nodes):
                free(self.node_h[l])
                free(self.node_dh[l])
        if self.layer_z:
            for l in range(self.n_layers):
                free(self.layer_z[l])
                free(self.layer_a[l])
                free(self.layer_inv[l])
        free(self.width); free(self.fan_in); free(self.fan_out); free(self.act)
        free(self.in_off); free(self.in_ids); free(self.w_off)
        free(self.params); free(self.grads); free(self.m); free(self.v)
        free(self.node_h); free(self.node_dh)
        free(self.layer_z); free(self.layer_a); free(self.layer_inv)
        free(self.dz); free(self.da); free(self.labels)

    @property
    def n_params(self):
        return self.n_params

    @property
    def max_rows(self):
        return self.cap

    # ------------------------------------------------------------------ numerics

    cdef void _forward(self, int nb) noexcept nogil:
        """Forward pass for the nb rows already gathered into node 0 (logits in layer_a[-1])."""
        cdef int l, j, k, r, i, fi, fo, w
        cdef int col
        cdef float *z
        cdef float *a
        cdef const float *src
        cdef const float *b
        cdef double mean, var, d
        cdef float inv, fmean
        for l in range(self.n_layers):
            fi = self.fan_in[l]
            fo = self.fan_out[l]
            z = self.layer_z[l]
            a = self.layer_a[l]
            col = 0
            for j in range(self.in_off[l], self.in_off[l + 1]):
                k = self.in_ids[j]
                w = self.width[k]
                src = self.node_h[k]
                for r in range(nb):
                    memcpy(z + <Py_ssize_t>r * fi + col, src + <Py_ssize_t>r * w,
                           w * sizeof(float))
                col += w
            # Layernorm per row (no affine); statistics in double for stability.
            for r in range(nb):
                mean = 0.0
                for i in range(fi):
                    mean += z[<Py_ssize_t>r * fi + i]
                mean /= fi
                var = 0.0
                for i in range(fi):
                    d = z[<Py_ssize_t>r * fi + i] - mean
                    var += d * d
                var /= fi
                inv = <float>(1.0 / sqrt(var + LN_EPS))
                fmean = <float>mean
                self.layer_inv[l][r] = inv
                for i in range(fi):
                    z[<Py_ssize_t>r * fi + i] = (z[<Py_ssize_t>r * fi + i] - fmean) * inv
            scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, fo, fi, 1.0,
                              z, fi, self.params + self.w_off[l], fi, 0.0, a, fo)
            b = self.params + self.w_off[l] + <Py_ssize_t>fo * fi
            for r in range(nb):
                for i in range(fo):
                    a[<Py_ssize_t>r * fo + i] += b[i]
            if l < self.n_layers - 1:
                _activate(self.act[l], a, self.node_h[l + 1], <Py_ssize_t>nb * fo)

    cdef double _softmax_xent(self, int nb, bint want_grad, long *correct) noexcept nogil:
        """Summed cross-entropy of the logits; fills self.da with dLoss/dlogits (mean loss)."""
        cdef int r, i, best, c = self.n_outputs
        cdef float *a = self.layer_a[self.n_layers - 1]
        cdef float *row
        cdef float mx
        cdef double s, total = 0.0
        cdef int32_t y
        for r in range(nb):
            row = a + <Py_ssize_t>r * c
            y = self.labels[r]
            mx = row[0]
            best = 0
            for i in range(1, c):
                if row[i] > mx:
                    mx = row[i]
                    best = i
            if best == y:
                correct[0] += 1
            s = 0.0
            for i in range(c):
                s += exp(<double>(row[i] - mx))
            total += log(s) - <double>(row[y] - mx)
            if want_grad:
                for i in range(c):
                    self.da[<Py_ssize_t>r * c + i] = <float>(exp(<double>(row[i] - mx)) / s / nb)
                self.da[<Py_ssize_t>r * c + y] -= <float>(1.0 / nb)
        return total

    cdef void _backward(self, int nb) noexcept nogil:
        """Gradients of the mean loss into self.grads; self.da holds dLoss/dlogits."""
        cdef int l, j, k, r, i, fi, fo, w, col
        cdef float *z
        cdef float *gw
        cdef float *gb
        cdef float *dzr
        cdef float *zr
        cdef float *dst
        cdef double s1, s2
        cdef float m1, m2, inv
        cdef bint needs_dz
        for l in range(1, self.n_nodes):
            memset(self.node_dh[l], 0, <Py_ssize_t>nb * self.width[l] * sizeof(float))
        for l in range(self.n_layers - 1, -1, -1):
            fi = self.fan_in[l]
            fo = self.fan_out[l]
            z = self.layer_z[l]
            if l < self.n_layers - 1:
                _activation_grad(self.act[l], self.layer_a[l], self.node_h[l + 1],
                                 self.node_dh[l + 1], self.da, <Py_ssize_t>nb * fo)
            gw = self.grads + self.w_off[l]
            gb = gw + <Py_ssize_t>fo * fi
            scipy_cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, fo, fi, nb, 1.0,
                              self.da, fo, z, fi, 0.0, gw, fi)
            for i in range(fo):
                gb[i] = 0.0
            for r in range(nb):
                for i in range(fo):
                    gb[i] += self.da[<Py_ssize_t>r * fo + i]
            needs_dz = False
            for j in range(self.in_off[l], self.in_off[l + 1]):
                if self.in_ids[j] != 0:
                    needs_dz = True
            if not needs_dz:
                continue  # only the input feeds this layer: no gradient to pass on
            scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb, fi, fo, 1.0,
                              self.da, fo, self.params + self.w_off[l], fi, 0.0, self.dz, fi)
            # Layernorm backward: dz = inv * (dzn - mean(dzn) - zn * mean(dzn * zn)).
            for r in range(nb):
                dzr = self.dz + <Py_ssize_t>r * fi
                zr = z + <Py_ssize_t>r * fi
                s1 = 0.0
                s2 = 0.0
                for i in range(fi):
                    s1 += dzr[i]
                    s2 += dzr[i] * zr[i]
                m1 = <float>(s1 / fi)
                m2 = <float>(s2 / fi)
                inv = self.layer_inv[l][r]
                for i in range(fi):
                    dzr[i] = inv * (dzr[i] - m1 - zr[i] * m2)
            col = 0
            for j in range(self.in_off[l], self.in_off[l + 1]):
                k = self.in_ids[j]
                w = self.width[k]
                if k != 0:
                    for r in range(nb):
                        dst = self.node_dh[k] + <Py_ssize_t>r * w
                        dzr = self.dz + <Py_ssize_t>r * fi + col
                        for i in range(w):
                            dst[i] += dzr[i]
                col += w

    cdef void _adamw(self, float lr, float wd) noexcept nogil:
        cdef int l
        cdef Py_ssize_t i, start, nw, end
        cdef float g, decay
        cdef float b1 = ADAM_B1, b2 = ADAM_B2
        cdef float bc1, bc2
        self.step_count += 1
        bc1 = <float>(1.0 - ADAM_B1 ** self.step_count)
        bc2 = <float>(1.0 - ADAM_B2 ** self.step_count)
        decay = <float>1.0 - lr * wd
        for l in range(self.n_layers):
            start = self.w_off[l]
            nw = <Py_ssize_t>self.fan_out[l] * self.fan_in[l]
            end = start + nw + self.fan_out[l]
            # Decoupled weight decay on weights only, not biases.
            for i in range(start, start + nw):
                self.params[i] *= decay
            for i in range(start, end):
                g = self.grads[i]
                self.m[i] = b1 * self.m[i] + (<float>1.0 - b1) * g
                self.v[i] = b2 * self.v[i] + (<float>1.0 - b2) * g * g
                self.params[i] -= lr * (self.m[i] / bc1) / (
                    sqrtf(self.v[i] / bc2) + ADAM_EPS)

    cdef void _gather(self, const float *x, const int32_t *y, const int32_t *order,
                      Py_ssize_t start, int nb) noexcept nogil:
        cdef int r, nin = self.width[0]
        cdef Py_ssize_t row
        for r in range(nb):
            row = order[start + r] if order != NULL else start + r
            memcpy(self.node_h[0] + <Py_ssize_t>r * nin, x + row * nin, nin * sizeof(float))
            if y != NULL:
                self.labels[r] = y[row]

    cdef int _check_labels(self, const int32_t *y, Py_ssize_t n) noexcept nogil:
        cdef Py_ssize_t i
        for i in range(n):
            if y[i] < 0 or y[i] >= self.n_outputs:
                return 0
        return 1

    # ------------------------------------------------------------------ Python API

    def set_params(self, buf):
        """Load the flat float32 parameter vector (resets the optimiser state)."""
        cdef Py_buffer view
        _get_buffer(buf, &view, 4, True, self.n_params * 4)
        try:
            memcpy(self.params, view.buf, self.n_params * sizeof(float))
        finally:
            PyBuffer_Release(&view)
        memset(self.m, 0, self.n_params * sizeof(float))
        memset(self.v, 0, self.n_params * sizeof(float))
        self.step_count = 0

    def get_params(self):
        """The flat float32 parameter vector as bytes (native byte order)."""
        return PyBytes_FromStringAndSize(<char *>self.params, self.n_params * sizeof(float))

    def get_grads(self):
        """Gradients from the last forward_backward/training batch, as float32 bytes."""
        return PyBytes_FromStringAndSize(<char *>self.grads, self.n_params * sizeof(float))

    def forward_logits(self, x, int n):
        """Logits for the first n rows of x (n <= max_rows), as float32 bytes (test hook)."""
        cdef Py_buffer view
        if n < 1 or n > self.cap:
            raise ValueError(f"n must be in 1..{self.cap}")
        _get_buffer(x, &view, 4, True, <Py_ssize_t>n * self.width[0] * 4)
        try:
            with nogil:
                self._gather(<const float *>view.buf, NULL, NULL, 0, n)
                self._forward(n)
        finally:
            PyBuffer_Release(&view)
        return PyBytes_FromStringAndSize(<char *>self.layer_a[self.n_layers - 1],
                                         <Py_ssize_t>n * self.n_outputs * sizeof(float))

    def forward_backward(self, x, y, int n):
        """Mean loss of the first n rows and their gradients into get_grads() (test hook)."""
        cdef Py_buffer xv, yv
        cdef double loss
        cdef long correct = 0
        if n < 1 or n > self.cap:
            raise ValueError(f"n must be in 1..{self.cap}")
        _get_buffer(x, &xv, 4, True, <Py_ssize_t>n * self.width[0] * 4)
        try:
            _get_buffer(y, &yv, 4, False, <Py_ssize_t>n * 4)
            try:
                if not self._check_labels(<const int32_t *>yv.buf, n):
                    raise ValueError(f"labels must be in 0..{self.n_outputs - 1}")
                with nogil:
                    self._gather(<const float *>xv.buf, <const int32_t *>yv.buf, NULL, 0, n)
                    self._forward(n)
                    loss = self._softmax_xent(n, True, &correct) / n
                    self._backward(n)
            finally:
                PyBuffer_Release(&yv)
        finally:
            PyBuffer_Release(&xv)
        return loss

    def train_epoch(self, x, y, order, Py_ssize_t n, int batch_size, float lr, float wd,
                    double deadline, cancel=None):
        """One pass over the rows of x in ``order`` (int32 permutation of 0..n-1).

        Between batches it stops cooperatively when time.time() >= deadline or
        when the first byte of ``cancel`` is nonzero. Returns
        ``(status, loss_sum, rows_done)`` with status one of STATUS_*; loss_sum
        is the summed per-row loss of the completed batches.
        """
        cdef Py_buffer xv, yv, ov, cv
        cdef bint have_cancel = cancel is not None
        cdef volatile const char *flag = NULL
        cdef Py_ssize_t start = 0, i
        cdef int nb, status = ST_OK
        cdef double total = 0.0, batch_loss
        cdef long correct = 0
        cdef const int32_t *ord
        if n < 1 or batch_size < 1 or batch_size > self.cap:
            raise ValueError(f"need n >= 1 and batch_size in 1..{self.cap}")
        _get_buffer(x, &xv, 4, True, n * self.width[0] * 4)
        try:
            _get_buffer(y, &yv, 4, False, n * 4)
            try:
                _get_buffer(order, &ov, 4, False, n * 4)
                try:
                    if have_cancel:
                        PyObject_GetBuffer(cancel, &cv, 0)
                    try:
                        if have_cancel:
                            if cv.len < 1:
                                raise ValueError("cancel buffer is empty")
                            flag = <volatile const char *>cv.buf
                        ord = <const int32_t *>ov.buf
                        for i in range(n):
                            if ord[i] < 0 or ord[i] >= n:
                                raise ValueError("order holds an index outside 0..n-1")
                        if not self._check_labels(<const int32_t *>yv.buf, n):
                            raise ValueError(f"labels must be in 0..{self.n_outputs - 1}")
                        with nogil:
                            while start < n:
                                if flag != NULL and flag[0] != 0:
                                    status = ST_CANCELLED
                                    break
                                if _now() >= deadline:
                                    status = ST_TIMEOUT
                                    break
                                nb = <int>min(<Py_ssize_t>batch_size, n - start)
                                self._gather(<const float *>xv.buf, <const int32_t *>yv.buf,
                                             ord, start, nb)
                                self._forward(nb)
                                batch_loss = self._softmax_xent(nb, True, &correct)
                                if not isfinite(batch_loss):
                                    status = ST_NAN
                                    break
                                self._backward(nb)
                                self._adamw(lr, wd)
                                total += batch_loss
                                start += nb
                    finally:
                        if have_cancel:
                            PyBuffer_Release(&cv)
                finally:
                    PyBuffer_Release(&ov)
            finally:
                PyBuffer_Release(&yv)
        finally:
            PyBuffer_Release(&xv)
        if status == ST_OK:
            # A finite loss can still leave non-finite weights behind (overflowing update).
            for i in range(self.n_params):
                if not isfinite(self.params[i]):
                    status = ST_NAN
                    break
        return status, total, start

    def evaluate(self, x, y, Py_ssize_t n):
        """``(loss_sum, correct)`` over the first n rows, in chunks of max_rows."""
        cdef Py_buffer xv, yv
        cdef Py_ssize_t start = 0
        cdef int nb
        cdef double total = 0.0
        cdef long correct = 0
        if n < 1:
            raise ValueError("need n >= 1")
        _get_buffer(x, &xv, 4, True, n * self.width[0] * 4)
        try:
            _get_buffer(y, &yv, 4, False, n * 4)
            try:
                if not self._check_labels(<const int32_t *>yv.buf, n):
                    raise ValueError(f"labels must be in 0..{self.n_outputs - 1}")
                with nogil:
                    while start < n:
                        nb = <int>min(<Py_ssize_t>self.cap, n - start)
                        self._gather(<const float *>xv.buf, <const int32_t *>yv.buf, NULL,
                                     start, nb)
                        self._forward(nb)
                        total += self._softmax_xent(nb, False, &correct)
                        start += nb
            finally:
                PyBuffer_Release(&yv)
        finally:
            PyBuffer_Release(&xv)
        return total, correct
