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
softmax cross-entropy) are those of ``docs/network-spec.md``; ``thunderhelm.ga.training.candidate``
validates the spec and drives this kernel epoch by epoch, and
``thunderhelm.ga.training.reference`` is the numpy twin that the tests compare against.
"""

include "_kernel_decls.pxi"

from cpython.buffer cimport (
    PyBUF_C_CONTIGUOUS,
    PyBUF_FORMAT,
    PyBUF_WRITABLE,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.math cimport exp, isfinite, log
from libc.stdint cimport int32_t, int64_t, uintptr_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset
from posix.time cimport CLOCK_REALTIME, clock_gettime, timespec


# Status codes returned by Net.train_epoch, mirrored in thunderhelm.ga.training.candidate.
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


cdef float *_alloc(Py_ssize_t n) except NULL:
    cdef float *p = <float *>calloc(n if n > 0 else 1, sizeof(float))
    if not p:
        raise MemoryError(f"cannot allocate {n} floats")
    return p


cdef void _forward(NetState *s, int nb) noexcept nogil:
    """Forward pass for the nb rows already gathered into node 0 (logits in layer_a[-1])."""
    cdef int l, j, k, r, fi, fo, w
    cdef int col
    cdef float *z
    cdef float *a
    cdef const float *src
    cdef const float *b
    for l in range(s.n_layers):
        fi = s.fan_in[l]
        fo = s.fan_out[l]
        z = s.layer_z[l]
        a = s.layer_a[l]
        col = 0
        for j in range(s.in_off[l], s.in_off[l + 1]):
            k = s.in_ids[j]
            w = s.width[k]
            src = s.node_h[k]
            for r in range(nb):
                memcpy(z + <Py_ssize_t>r * fi + col, src + <Py_ssize_t>r * w,
                       w * sizeof(float))
            col += w
        # Layernorm per row (no affine); statistics in double for stability.
        for r in range(nb):
            s.layer_inv[l][r] = th_layernorm_row(z + <Py_ssize_t>r * fi, fi)
        scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, fo, fi, 1.0,
                          z, fi, s.params + s.w_off[l], fi, 0.0, a, fo)
        b = s.params + s.w_off[l] + <Py_ssize_t>fo * fi
        for r in range(nb):
            th_add(a + <Py_ssize_t>r * fo, b, fo)
        if l < s.n_layers - 1:
            _activate(s.act[l], a, s.node_h[l + 1], <Py_ssize_t>nb * fo)


cdef double _softmax_xent(NetState *s, int nb, bint want_grad, long *correct,
                          int64_t *per_class=NULL, const float *class_weight=NULL) noexcept nogil:
    """Summed cross-entropy of the logits; fills s.da with dLoss/dlogits (mean loss).

    ``per_class`` (3 x n_outputs, or NULL): adds each row to its predicted
    class's count, to its class's hits when right, and to its class's rows.
    ``class_weight`` (n_outputs, or NULL): each row's loss and gradient are
    scaled by its class's weight (the mean is still over the rows).
    """
    cdef int r, i, best, c = s.n_outputs
    cdef float *a = s.layer_a[s.n_layers - 1]
    cdef float *row
    cdef float mx
    cdef double ssum, total = 0.0, w = 1.0
    cdef int32_t y
    for r in range(nb):
        row = a + <Py_ssize_t>r * c
        y = s.labels[r]
        mx = row[0]
        best = 0
        for i in range(1, c):
            if row[i] > mx:
                mx = row[i]
                best = i
        if best == y:
            correct[0] += 1
        if per_class != NULL:
            per_class[best] += 1
            if best == y:
                per_class[c + y] += 1
            per_class[2 * c + y] += 1
        ssum = 0.0
        for i in range(c):
            ssum += exp(<double>(row[i] - mx))
        if class_weight != NULL:
            w = <double>class_weight[y]
        total += w * (log(ssum) - <double>(row[y] - mx))
        if want_grad:
            for i in range(c):
                s.da[<Py_ssize_t>r * c + i] = <float>(w * exp(<double>(row[i] - mx)) / ssum / nb)
            s.da[<Py_ssize_t>r * c + y] -= <float>(w / nb)
    return total


cdef double _squared_error(NetState *s, int nb, bint want_grad, double *abs_sum) noexcept nogil:
    """Summed squared error of the single output; fills s.da with d(mean loss)/d(output).

    The loss is the mean squared error (not halved), so the gradient is
    2 (prediction - target) / nb. ``abs_sum`` gets the summed absolute error.
    """
    cdef int r
    cdef float *a = s.layer_a[s.n_layers - 1]
    cdef double d, total = 0.0
    for r in range(nb):
        d = <double>a[r] - <double>s.targets[r]
        total += d * d
        abs_sum[0] += -d if d < 0.0 else d
        if want_grad:
            s.da[r] = <float>(2.0 * d / nb)
    return total


cdef void _backward(NetState *s, int nb) noexcept nogil:
    """Gradients of the mean loss into s.grads; s.da holds dLoss/dlogits."""
    cdef int l, j, k, r, i, fi, fo, w, col
    cdef float *z
    cdef float *gw
    cdef float *gb
    cdef bint needs_dz
    for l in range(1, s.n_nodes):
        memset(s.node_dh[l], 0, <Py_ssize_t>nb * s.width[l] * sizeof(float))
    for l in range(s.n_layers - 1, -1, -1):
        fi = s.fan_in[l]
        fo = s.fan_out[l]
        z = s.layer_z[l]
        if l < s.n_layers - 1:
            _activation_grad(s.act[l], s.layer_a[l], s.node_h[l + 1],
                             s.node_dh[l + 1], s.da, <Py_ssize_t>nb * fo)
        gw = s.grads + s.w_off[l]
        gb = gw + <Py_ssize_t>fo * fi
        scipy_cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, fo, fi, nb, 1.0,
                          s.da, fo, z, fi, 0.0, gw, fi)
        for i in range(fo):
            gb[i] = 0.0
        for r in range(nb):
            th_add(gb, s.da + <Py_ssize_t>r * fo, fo)
        needs_dz = False
        for j in range(s.in_off[l], s.in_off[l + 1]):
            if s.in_ids[j] != 0:
                needs_dz = True
        if not needs_dz:
            continue  # only the input feeds this layer: no gradient to pass on
        scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb, fi, fo, 1.0,
                          s.da, fo, s.params + s.w_off[l], fi, 0.0, s.dz, fi)
        for r in range(nb):
            th_layernorm_back_row(s.dz + <Py_ssize_t>r * fi, z + <Py_ssize_t>r * fi, fi,
                                  s.layer_inv[l][r])
        col = 0
        for j in range(s.in_off[l], s.in_off[l + 1]):
            k = s.in_ids[j]
            w = s.width[k]
            if k != 0:
                for r in range(nb):
                    th_add(s.node_dh[k] + <Py_ssize_t>r * w, s.dz + <Py_ssize_t>r * fi + col, w)
            col += w


cdef void _adamw(NetState *s, float lr, float wd) noexcept nogil:
    cdef int l
    cdef Py_ssize_t start, nw
    cdef float bc1, bc2
    s.step_count += 1
    bc1 = <float>(1.0 - ADAM_B1 ** s.step_count)
    bc2 = <float>(1.0 - ADAM_B2 ** s.step_count)
    for l in range(s.n_layers):
        start = s.w_off[l]
        nw = <Py_ssize_t>s.fan_out[l] * s.fan_in[l]
        # Decoupled weight decay on weights only, not biases.
        th_adamw(s.params + start, s.m + start, s.v + start, s.grads + start, nw,
                 <float>1.0 - lr * wd, lr, bc1, bc2)
        start += nw
        th_adamw(s.params + start, s.m + start, s.v + start, s.grads + start,
                 s.fan_out[l], 1.0, lr, bc1, bc2)


cdef void _gather(NetState *s, const float *x, const void *y, const int32_t *order,
                  Py_ssize_t start, int nb) noexcept nogil:
    """Copy the batch's rows (and labels, or targets for regression) into the scratch buffers."""
    cdef int r, nin = s.width[0]
    cdef Py_ssize_t row
    for r in range(nb):
        row = order[start + r] if order != NULL else start + r
        memcpy(s.node_h[0] + <Py_ssize_t>r * nin, x + row * nin, nin * sizeof(float))
        if y != NULL:
            if s.regression:
                s.targets[r] = (<const float *>y)[row]
            else:
                s.labels[r] = (<const int32_t *>y)[row]


cdef double _batch_loss(NetState *s, int nb, bint want_grad, long *correct, double *abs_sum,
                        int64_t *per_class, const float *class_weight) noexcept nogil:
    """The head's summed loss of the gathered batch (softmax cross-entropy or squared error)."""
    if s.regression:
        return _squared_error(s, nb, want_grad, abs_sum)
    return _softmax_xent(s, nb, want_grad, correct, per_class, class_weight)


cdef int _check_labels(NetState *s, const int32_t *y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if y[i] < 0 or y[i] >= s.n_outputs:
            return 0
    return 1


cdef int _check_targets(NetState *s, const void *y, Py_ssize_t n) noexcept nogil:
    """Labels in range for classification; finite targets for regression."""
    cdef Py_ssize_t i
    if not s.regression:
        return _check_labels(s, <const int32_t *>y, n)
    for i in range(n):
        if not isfinite((<const float *>y)[i]):
            return 0
    return 1

# ------------------------------------------------------------------ Python API


cdef class Net:
    """One network's weights, optimiser state and scratch buffers (all C memory).

    Layers are the units in spec order followed by the output layer. The flat
    parameter vector holds, per layer, ``W`` (fan_out x fan_in, row-major) then
    ``b`` (fan_out); ``thunderhelm.ga.training.candidate`` builds and exports it in that order.
    """

    cdef NetState s

    def __cinit__(self, int n_inputs, int n_outputs, tuple unit_inputs, tuple unit_neurons,
                  tuple unit_acts, tuple output_inputs, int max_rows, bint regression=False):
        cdef int n_units = len(unit_inputs)
        cdef int l, k, j, total_in = 0
        if n_inputs < 1 or n_outputs < 1 or max_rows < 1:
            raise ValueError("n_inputs, n_outputs and max_rows must be positive")
        if regression and n_outputs != 1:
            raise ValueError(f"a regression network has one output, not {n_outputs}")
        self.s.regression = 1 if regression else 0
        if len(unit_neurons) != n_units or len(unit_acts) != n_units:
            raise ValueError("unit_inputs, unit_neurons and unit_acts differ in length")
        self.s.n_layers = n_units + 1
        self.s.n_nodes = n_units + 1
        self.s.n_outputs = n_outputs
        self.s.cap = max_rows
        for l in range(n_units):
            total_in += len(unit_inputs[l])
        total_in += len(output_inputs)
        self.s.width = <int *>calloc(self.s.n_nodes, sizeof(int))
        self.s.fan_in = <int *>calloc(self.s.n_layers, sizeof(int))
        self.s.fan_out = <int *>calloc(self.s.n_layers, sizeof(int))
        self.s.act = <int *>calloc(self.s.n_layers, sizeof(int))
        self.s.in_off = <int *>calloc(self.s.n_layers + 1, sizeof(int))
        self.s.in_ids = <int *>calloc(total_in, sizeof(int))
        self.s.w_off = <Py_ssize_t *>calloc(self.s.n_layers, sizeof(Py_ssize_t))
        self.s.node_h = <float **>calloc(self.s.n_nodes, sizeof(float *))
        self.s.node_dh = <float **>calloc(self.s.n_nodes, sizeof(float *))
        self.s.layer_z = <float **>calloc(self.s.n_layers, sizeof(float *))
        self.s.layer_a = <float **>calloc(self.s.n_layers, sizeof(float *))
        self.s.layer_inv = <float **>calloc(self.s.n_layers, sizeof(float *))
        if (not self.s.width or not self.s.fan_in or not self.s.fan_out or not self.s.act
                or not self.s.in_off or not self.s.in_ids or not self.s.w_off or not self.s.node_h
                or not self.s.node_dh or not self.s.layer_z or not self.s.layer_a
                or not self.s.layer_inv):
            raise MemoryError()
        self.s.width[0] = n_inputs
        for l in range(n_units):
            self.s.width[l + 1] = unit_neurons[l]
            if self.s.width[l + 1] < 1:
                raise ValueError("unit widths must be positive")
        # Wiring: layer l reads in_ids[in_off[l]:in_off[l+1]]; ids must be earlier nodes.
        k = 0
        for l in range(self.s.n_layers):
            ids = unit_inputs[l] if l < n_units else output_inputs
            self.s.in_off[l] = k
            if len(ids) == 0:
                raise ValueError(f"layer {l} has no inputs")
            for j in ids:
                if j < 0 or j > l:
                    raise ValueError(f"layer {l} reads node {j}, which is not earlier")
                self.s.in_ids[k] = j
                self.s.fan_in[l] += self.s.width[j]
                k += 1
            self.s.fan_out[l] = unit_neurons[l] if l < n_units else n_outputs
            self.s.act[l] = unit_acts[l] if l < n_units else ACT_NONE
            if l < n_units and not (ACT_RELU <= self.s.act[l] <= ACT_SIGMOID):
                raise ValueError(f"unknown activation code {self.s.act[l]}")
            self.s.w_off[l] = self.s.n_params
            self.s.n_params += <Py_ssize_t>self.s.fan_out[l] * (self.s.fan_in[l] + 1)
            self.s.max_fan_in = max(self.s.max_fan_in, self.s.fan_in[l])
            self.s.max_fan_out = max(self.s.max_fan_out, self.s.fan_out[l])
        self.s.in_off[self.s.n_layers] = k
        self.s.params = _alloc(self.s.n_params)
        self.s.grads = _alloc(self.s.n_params)
        self.s.m = _alloc(self.s.n_params)
        self.s.v = _alloc(self.s.n_params)
        for l in range(self.s.n_nodes):
            self.s.node_h[l] = _alloc(<Py_ssize_t>max_rows * self.s.width[l])
            if l > 0:
                self.s.node_dh[l] = _alloc(<Py_ssize_t>max_rows * self.s.width[l])
        for l in range(self.s.n_layers):
            self.s.layer_z[l] = _alloc(<Py_ssize_t>max_rows * self.s.fan_in[l])
            self.s.layer_a[l] = _alloc(<Py_ssize_t>max_rows * self.s.fan_out[l])
            self.s.layer_inv[l] = _alloc(max_rows)
        self.s.dz = _alloc(<Py_ssize_t>max_rows * self.s.max_fan_in)
        self.s.da = _alloc(<Py_ssize_t>max_rows * self.s.max_fan_out)
        self.s.labels = <int32_t *>calloc(max_rows, sizeof(int32_t))
        if not self.s.labels:
            raise MemoryError()
        self.s.targets = _alloc(max_rows)

    def __dealloc__(self):
        cdef int l
        if self.s.node_h:
            for l in range(self.s.n_nodes):
                free(self.s.node_h[l])
                free(self.s.node_dh[l])
        if self.s.layer_z:
            for l in range(self.s.n_layers):
                free(self.s.layer_z[l])
                free(self.s.layer_a[l])
                free(self.s.layer_inv[l])
        free(self.s.width); free(self.s.fan_in); free(self.s.fan_out); free(self.s.act)
        free(self.s.in_off); free(self.s.in_ids); free(self.s.w_off)
        free(self.s.params); free(self.s.grads); free(self.s.m); free(self.s.v)
        free(self.s.node_h); free(self.s.node_dh)
        free(self.s.layer_z); free(self.s.layer_a); free(self.s.layer_inv)
        free(self.s.dz); free(self.s.da); free(self.s.labels); free(self.s.targets)

    @property
    def n_params(self):
        return self.s.n_params

    @property
    def max_rows(self):
        return self.s.cap

    @property
    def regression(self):
        return bool(self.s.regression)

    def _target_error(self):
        if self.s.regression:
            return ValueError("regression targets must be finite float32 numbers")
        return ValueError(f"labels must be in 0..{self.s.n_outputs - 1}")

    def _no_class_weight(self, class_weight):
        if self.s.regression and class_weight is not None:
            raise ValueError("class_weight applies to classification only")


    def set_params(self, buf):
        """Load the flat float32 parameter vector (resets the optimiser state)."""
        cdef Py_buffer view
        _get_buffer(buf, &view, 4, True, self.s.n_params * 4)
        try:
            memcpy(self.s.params, view.buf, self.s.n_params * sizeof(float))
        finally:
            PyBuffer_Release(&view)
        memset(self.s.m, 0, self.s.n_params * sizeof(float))
        memset(self.s.v, 0, self.s.n_params * sizeof(float))
        self.s.step_count = 0

    def get_params(self):
        """The flat float32 parameter vector as bytes (native byte order)."""
        return PyBytes_FromStringAndSize(<char *>self.s.params, self.s.n_params * sizeof(float))

    def get_grads(self):
        """Gradients from the last forward_backward/training batch, as float32 bytes."""
        return PyBytes_FromStringAndSize(<char *>self.s.grads, self.s.n_params * sizeof(float))

    def forward_logits(self, x, int n):
        """Logits for the first n rows of x (n <= max_rows), as float32 bytes (test hook)."""
        cdef Py_buffer view
        if n < 1 or n > self.s.cap:
            raise ValueError(f"n must be in 1..{self.s.cap}")
        _get_buffer(x, &view, 4, True, <Py_ssize_t>n * self.s.width[0] * 4)
        try:
            with nogil:
                _gather(&self.s, <const float *>view.buf, NULL, NULL, 0, n)
                _forward(&self.s, n)
        finally:
            PyBuffer_Release(&view)
        return PyBytes_FromStringAndSize(<char *>self.s.layer_a[self.s.n_layers - 1],
                                         <Py_ssize_t>n * self.s.n_outputs * sizeof(float))

    def forward_backward(self, x, y, int n, class_weight=None):
        """Mean loss of the first n rows and their gradients into get_grads() (test hook).

        ``y``: int32 labels, or float32 targets for a regression net.
        """
        cdef Py_buffer xv, yv, wv
        cdef const float *weights = NULL
        cdef double loss, abs_sum = 0.0
        cdef long correct = 0
        if n < 1 or n > self.s.cap:
            raise ValueError(f"n must be in 1..{self.s.cap}")
        self._no_class_weight(class_weight)
        _get_buffer(x, &xv, 4, True, <Py_ssize_t>n * self.s.width[0] * 4)
        try:
            _get_buffer(y, &yv, 4, self.s.regression, <Py_ssize_t>n * 4)
            try:
                if not _check_targets(&self.s, yv.buf, n):
                    raise self._target_error()
                if class_weight is not None:
                    _get_buffer(class_weight, &wv, 4, True, self.s.n_outputs * 4)
                    weights = <const float *>wv.buf
                try:
                    with nogil:
                        _gather(&self.s, <const float *>xv.buf, yv.buf, NULL, 0, n)
                        _forward(&self.s, n)
                        loss = _batch_loss(&self.s, n, True, &correct, &abs_sum, NULL,
                                           weights) / n
                        _backward(&self.s, n)
                finally:
                    if weights != NULL:
                        PyBuffer_Release(&wv)
            finally:
                PyBuffer_Release(&yv)
        finally:
            PyBuffer_Release(&xv)
        return loss

    def train_epoch(self, x, y, order, Py_ssize_t n, int batch_size, float lr, float wd,
                    double deadline, cancel=None, class_weight=None):
        """One pass over the rows of x in ``order`` (int32 permutation of 0..n-1).

        Between batches it stops cooperatively when time.time() >= deadline or
        when the first byte of ``cancel`` is nonzero. Returns
        ``(status, loss_sum, rows_done)`` with status one of STATUS_*; loss_sum
        is the summed per-row loss of the completed batches. ``class_weight``:
        float32 per class, scaling each row's loss (None: every row alike).
        A regression net takes float32 targets as ``y`` and no class_weight.
        """
        cdef Py_buffer xv, yv, ov, cv, wv
        cdef const float *weights = NULL
        cdef bint have_cancel = cancel is not None
        cdef volatile const char *flag = NULL
        cdef Py_ssize_t start = 0, i
        cdef int nb, status = ST_OK
        cdef double total = 0.0, batch_loss, abs_sum = 0.0
        cdef long correct = 0
        cdef const int32_t *ord
        if n < 1 or batch_size < 1 or batch_size > self.s.cap:
            raise ValueError(f"need n >= 1 and batch_size in 1..{self.s.cap}")
        self._no_class_weight(class_weight)
        _get_buffer(x, &xv, 4, True, n * self.s.width[0] * 4)
        try:
            _get_buffer(y, &yv, 4, self.s.regression, n * 4)
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
                        if not _check_targets(&self.s, yv.buf, n):
                            raise self._target_error()
                        if class_weight is not None:
                            _get_buffer(class_weight, &wv, 4, True, self.s.n_outputs * 4)
                            weights = <const float *>wv.buf
                        with nogil:
                            while start < n:
                                if flag != NULL and flag[0] != 0:
                                    status = ST_CANCELLED
                                    break
                                if _now() >= deadline:
                                    status = ST_TIMEOUT
                                    break
                                nb = <int>min(<Py_ssize_t>batch_size, n - start)
                                _gather(&self.s, <const float *>xv.buf, yv.buf, ord, start, nb)
                                _forward(&self.s, nb)
                                batch_loss = _batch_loss(&self.s, nb, True, &correct, &abs_sum,
                                                         NULL, weights)
                                if not isfinite(batch_loss):
                                    status = ST_NAN
                                    break
                                _backward(&self.s, nb)
                                _adamw(&self.s, lr, wd)
                                total += batch_loss
                                start += nb
                    finally:
                        if weights != NULL:
                            PyBuffer_Release(&wv)
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
            for i in range(self.s.n_params):
                if not isfinite(self.s.params[i]):
                    status = ST_NAN
                    break
        return status, total, start

    def evaluate(self, x, y, Py_ssize_t n, per_class=None):
        """``(loss_sum, correct)`` over the first n rows, in chunks of max_rows.

        ``per_class``: a writable buffer of 3 x n_outputs int64, zeroed here
        and filled with each class's predicted rows, right predictions and
        rows (what balanced accuracy and macro-F1 are computed from).

        A regression net (float32 targets, no ``per_class``) returns
        ``(squared_error_sum, absolute_error_sum)`` instead.
        """
        cdef Py_buffer xv, yv, cv
        cdef int64_t *counts = NULL
        cdef Py_ssize_t k
        cdef Py_ssize_t start = 0
        cdef int nb
        cdef double total = 0.0, abs_sum = 0.0
        cdef long correct = 0
        if n < 1:
            raise ValueError("need n >= 1")
        if self.s.regression and per_class is not None:
            raise ValueError("per_class counts apply to classification only")
        _get_buffer(x, &xv, 4, True, n * self.s.width[0] * 4)
        try:
            _get_buffer(y, &yv, 4, self.s.regression, n * 4)
            try:
                if not _check_targets(&self.s, yv.buf, n):
                    raise self._target_error()
                if per_class is not None:
                    PyObject_GetBuffer(per_class, &cv, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
                    if cv.len != 3 * self.s.n_outputs * 8:
                        PyBuffer_Release(&cv)
                        raise ValueError(f"per_class must hold {3 * self.s.n_outputs} int64")
                    counts = <int64_t *>cv.buf
                    for k in range(3 * self.s.n_outputs):
                        counts[k] = 0
                try:
                    with nogil:
                        while start < n:
                            nb = <int>min(<Py_ssize_t>self.s.cap, n - start)
                            _gather(&self.s, <const float *>xv.buf, yv.buf, NULL, start, nb)
                            _forward(&self.s, nb)
                            total += _batch_loss(&self.s, nb, False, &correct, &abs_sum, counts,
                                                 NULL)
                            start += nb
                finally:
                    if counts != NULL:
                        PyBuffer_Release(&cv)
            finally:
                PyBuffer_Release(&yv)
        finally:
            PyBuffer_Release(&xv)
        if self.s.regression:
            return total, abs_sum
        return total, correct
