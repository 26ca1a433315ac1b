# Shared by every kernels/cython/*.pyx through `include "_common.pxi"`: the scalar
# activations (each for float32 and float64), the thread count of the module's OpenMP
# regions, and the team primitives of the kernels that share a loop between threads.
#
# Fused types resolve at compile time, so `if floating is float` costs nothing at run time:
# float32 kernels never round-trip through double.
from cython cimport floating
from libc.math cimport exp, expf, tanh


cdef inline floating exp_(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef extern from "_fastmath.h":
    float fast_tanhf "tgs_tanhf"(float x) noexcept nogil
    float fast_sigmoidf "tgs_sigmoidf"(float x) noexcept nogil


cdef extern from "_fastmath.h":
    float sumf "tgs_sumf"(const float* a, Py_ssize_t n) noexcept nogil
    double sumd "tgs_sumd"(const double* a, Py_ssize_t n) noexcept nogil
    float dotf "tgs_dotf"(const float* a, const float* b, Py_ssize_t n) noexcept nogil
    double dotd "tgs_dotd"(const double* a, const double* b, Py_ssize_t n) noexcept nogil
    float maxf "tgs_maxf"(const float* a, const unsigned char* excluded, Py_ssize_t n) noexcept nogil
    double maxd "tgs_maxd"(const double* a, const unsigned char* excluded, Py_ssize_t n) noexcept nogil


cdef inline floating row_sum(const floating* a, Py_ssize_t n) noexcept nogil:
    """sum(a[:n]), vectorised (_fastmath.h: lane-wise partial sums)."""
    if floating is float:
        return sumf(a, n)
    else:
        return sumd(a, n)


cdef inline floating row_dot(const floating* a, const floating* b, Py_ssize_t n) noexcept nogil:
    """sum(a[:n] * b[:n]), vectorised."""
    if floating is float:
        return dotf(a, b, n)
    else:
        return dotd(a, b, n)


cdef inline floating row_max(const floating* a, const unsigned char* excluded, Py_ssize_t n) noexcept nogil:
    """max of a[:n] over the entries not excluded (-inf when none), vectorised."""
    if floating is float:
        return maxf(a, excluded, n)
    else:
        return maxd(a, excluded, n)


cdef inline floating tanh_(floating x) noexcept nogil:
    """tanh; in float32 inline arithmetic (_fastmath.h) that the gate loops vectorise without
    calling libmvec, in float64 libm's."""
    if floating is float:
        return fast_tanhf(x)
    else:
        return tanh(x)


cdef inline floating sigmoid(floating x) noexcept nogil:
    """σ(x) = 1/(1+e^-x).  float64 writes it as (1 + tanh(x/2))/2, as the reference does, so
    that it never overflows (e^-x is inf for x < -709); float32's exp clamps its argument."""
    if floating is float:
        return fast_sigmoidf(x)
    else:
        return 0.5 + 0.5 * tanh(0.5 * x)


def default_threads():
    """Threads of the OpenMP regions: $TGS_CYTHON_THREADS, else every core this process may
    run on.  Each region is one per kernel call (a whole batch, or a whole sequence for the
    recurrences' teams), never one per time step, so waking the threads is paid once.  That,
    and GOMP_SPINCOUNT=10000 (set while GNU OpenMP loads: kernels/cython/__init__.py) so the team's idle threads sleep
    soon and leave the cores to the NumPy GEMMs around each call, is what makes the threads
    pay on 2 cores; with one region per step and libgomp's default spinning, a threaded
    recurrence was 50x slower than a serial one."""
    import os
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        return max(1, int(os.environ.get("TGS_CYTHON_THREADS", cores)))
    except ValueError:
        return cores


# Threads of this module's OpenMP regions.
cdef int _threads = default_threads()


def set_num_threads(int n):
    """Threads of this module's OpenMP regions (1 = serial); see default_threads()."""
    global _threads
    _threads = max(1, n)


def get_num_threads():
    """Threads of this module's OpenMP regions."""
    return _threads


# A team of OpenMP threads that stays together for a whole time loop: each thread owns a
# slice of the hidden units and the threads meet at a barrier once per step. Without OpenMP
# the team is the calling thread alone and the barrier is nothing.
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define TGS_TEAM_SIZE() omp_get_num_threads()
    #define TGS_TEAM_RANK() omp_get_thread_num()
    #define TGS_BARRIER() _Pragma("omp barrier")
    #else
    #define TGS_TEAM_SIZE() 1
    #define TGS_TEAM_RANK() 0
    #define TGS_BARRIER()
    #endif
    """
    int team_size "TGS_TEAM_SIZE"() noexcept nogil
    int team_rank "TGS_TEAM_RANK"() noexcept nogil
    void barrier "TGS_BARRIER"() noexcept nogil


cdef inline void team_share(Py_ssize_t H, Py_ssize_t* start, Py_ssize_t* count) noexcept nogil:
    """This thread's slice [start, start+count) of H units: equal slices, whole SIMD
    registers (multiples of 16) where H allows; trailing threads may get none."""
    cdef Py_ssize_t size = team_size(), rank = team_rank()
    cdef Py_ssize_t chunk = (H + size - 1) // size
    chunk = ((chunk + 15) // 16) * 16
    start[0] = min(H, rank * chunk)
    count[0] = min(H, start[0] + chunk) - start[0]
