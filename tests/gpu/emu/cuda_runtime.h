/* tests/gpu/emu/cuda_runtime.h - a CPU emulator of the CUDA subset kernels.cu uses.
 *
 * Why: CI and most development machines have nvcc but no GPU. Compiling kernels.cu with a host
 * C++ compiler and `-I tests/gpu/emu` (these headers shadow cuda_runtime.h, cuda_bf16.h,
 * cublas_v2.h and mma.h, the tensor-core fragments) runs the real backend code - every kernel body, every GEMM's shapes, strides and
 * leading dimensions, the whole orchestration - on the CPU, so the parity test against the CPU
 * path can run everywhere. What it cannot show: real-GPU races, timing, memory limits,
 * cuBLAS's own numerics, anything architecture-specific.
 *
 * How: each thread block runs its threads as ucontext fibers on one OS thread. A fiber runs
 * until __syncthreads() (waits for the whole block) or a warp shuffle or __syncwarp() (waits for
 * its warp); a
 * scheduler resumes fibers whose barrier is complete and reports a deadlock (a barrier not
 * reached by every thread) as an error. Device memory is host memory, filled with 0xFF (NaN) on
 * allocation so reads of never-written memory poison the results, and every GEMM checks that
 * each matrix it touches lies inside one allocation and that the leading dimensions are valid
 * (cuBLAS's own INVALID_VALUE rules). Grids are capped small (MAX_ELEM_BLOCKS / MAX_ROW_BLOCKS), which
 * also exercises the grid-stride loops. The blocks of a grid run in a different shuffled order at
 * every launch, as a GPU may run them, so a result that depends on block order (float atomics)
 * changes from run to run here too. GEMMs whose rows are not 16-byte aligned are counted
 * (emu_misaligned_gemms: real cuBLAS falls back to slow kernels for them), and tests can make the
 * n-th kernel launch from now fail (emu_fail_launch_after) to check error reporting. CUDA events
 * read the host clock. Test-only code: one translation unit includes it. */
#ifndef EMU_CUDA_RUNTIME_H
#define EMU_CUDA_RUNTIME_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>
#include <map>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define MAX_ELEM_BLOCKS 3
#define MAX_ROW_BLOCKS 5

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
static dim3 threadIdx, blockIdx, blockDim, gridDim;
/* CUDA's 16-byte vector type (kernels.cu moves packs of 4 fp32 or 8 bf16 as one int4). */
struct alignas(16) int4 { int x, y, z, w; };

typedef enum {
    cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2, cudaErrorInsufficientDriver = 35,
    cudaErrorNoDevice = 100, cudaErrorInvalidDevice = 101, cudaErrorLaunchOutOfResources = 701,
    cudaErrorIllegalAddress = 700, cudaErrorLaunchFailure = 719
} cudaError_t;
typedef enum { cudaMemcpyHostToHost = 0, cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3 } cudaMemcpyKind;
typedef enum { CUDA_R_32F = 0, CUDA_R_16BF = 14 } cudaDataType_t;
typedef struct emu_event { double seconds; } *cudaEvent_t;
typedef struct emu_stream *cudaStream_t;
typedef cudaDataType_t cudaDataType;
struct cudaDeviceProp { char name[256]; size_t totalGlobalMem; int multiProcessorCount; };

/* ---- device memory: a registry of allocations, for range checks ---- */
static std::map<uintptr_t, size_t> emu_allocs;
static cudaError_t emu_sticky = cudaSuccess;
static cudaError_t emu_last = cudaSuccess;   /* a non-sticky error: cudaGetLastError clears it */
/* Test hooks: GEMMs with a row or matrix start that is not 16-byte aligned, so far; and a
 * countdown: when >= 0, the launch that finds it at 0 does not run and reports
 * cudaErrorLaunchOutOfResources, which (as on a GPU) is not sticky: only the next
 * cudaGetLastError sees it, so nothing but the caller's own check can catch it. */
long emu_misaligned_gemms = 0;
int emu_fail_launch_after = -1;

static void emu_fail(const char *fmt, const char *what, long long a, long long b)
{
    fprintf(stderr, "CUDA EMULATOR: ");
    fprintf(stderr, fmt, what, a, b);
    fprintf(stderr, "\n");
    emu_sticky = cudaErrorIllegalAddress;
}

/* Is [p, p + bytes) inside one allocation? */
static bool emu_in_alloc(const void *p, size_t bytes)
{
    uintptr_t u = (uintptr_t)p;
    auto it = emu_allocs.upper_bound(u);
    if (it == emu_allocs.begin()) return false;
    --it;
    return u >= it->first && u + bytes <= it->first + it->second;
}

extern "C" {
cudaError_t cudaGetDeviceCount(int *n) { *n = getenv("EMU_NO_DEVICE") ? 0 : 1; return *n ? cudaSuccess : cudaErrorNoDevice; }
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
/* The "device" has 80 GiB of which 64 are free at the start; allocations count against that.
 * Allocations of 256 MiB or more (a benchmark's memory ballast) are mapped lazily and not
 * poisoned, so they cost no host memory until touched. */
static const size_t EMU_FREE_AT_START = (size_t)64 << 30, EMU_LAZY = (size_t)256 << 20;
static size_t emu_allocated = 0;
cudaError_t cudaMalloc(void **p, size_t n)
{
    if (n > EMU_FREE_AT_START - emu_allocated) { *p = NULL; return cudaErrorMemoryAllocation; }
    if (n >= EMU_LAZY) {
        *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (*p == MAP_FAILED) { *p = NULL; return cudaErrorMemoryAllocation; }
    } else {
        *p = malloc(n);
        if (!*p) return cudaErrorMemoryAllocation;
        memset(*p, 0xFF, n);              /* NaN in fp32 and bf16: unwritten memory shows */
    }
    emu_allocs[(uintptr_t)*p] = n;
    emu_allocated += n;
    return cudaSuccess;
}
cudaError_t cudaFree(void *p)
{
    if (!p) return cudaSuccess;
    auto it = emu_allocs.find((uintptr_t)p);
    if (it == emu_allocs.end()) { emu_fail("%s %lld %lld: cudaFree of a pointer not from cudaMalloc", "", 0, 0); return cudaErrorInvalidValue; }
    size_t n = it->second;
    emu_allocs.erase(it);
    emu_allocated -= n;
    if (n >= EMU_LAZY) munmap(p, n); else free(p);
    return cudaSuccess;
}
/* cudaMemcpy calls so far: each one blocks the host until the device is idle, so tests can check
 * how many a backend call makes. */
long emu_memcpy_calls = 0;
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind k)
{
    emu_memcpy_calls++;
    if ((k == cudaMemcpyHostToDevice || k == cudaMemcpyDeviceToDevice) && !emu_in_alloc(dst, n)) { emu_fail("%s: memcpy destination out of bounds (%lld bytes) %lld", "", (long long)n, 0); return cudaErrorInvalidValue; }
    if ((k == cudaMemcpyDeviceToHost || k == cudaMemcpyDeviceToDevice) && !emu_in_alloc(src, n)) { emu_fail("%s: memcpy source out of bounds (%lld bytes) %lld", "", (long long)n, 0); return cudaErrorInvalidValue; }
    memmove(dst, src, n);
    return cudaSuccess;
}
cudaError_t cudaMemset(void *p, int v, size_t n)
{
    if (!emu_in_alloc(p, n)) { emu_fail("%s: memset out of bounds (%lld bytes) %lld", "", (long long)n, 0); return cudaErrorInvalidValue; }
    memset(p, v, n);
    return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t *fr, size_t *tot) { *fr = EMU_FREE_AT_START - emu_allocated; *tot = (size_t)80 << 30; return cudaSuccess; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d)
{
    (void)d; memset(p, 0, sizeof *p); strcpy(p->name, "CPU emulator (tests/gpu/emu)"); p->totalGlobalMem = (size_t)80 << 30;
    return cudaSuccess;
}
long emu_sync_calls = 0;   /* cudaDeviceSynchronize calls, for tests of host synchronisation */
cudaError_t cudaDeviceSynchronize(void) { emu_sync_calls++; return emu_sticky; }
cudaError_t cudaEventCreate(cudaEvent_t *e) { *e = (cudaEvent_t)calloc(1, sizeof **e); return *e ? cudaSuccess : cudaErrorMemoryAllocation; }
cudaError_t cudaEventDestroy(cudaEvent_t e) { free(e); return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    (void)s;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    e->seconds = ts.tv_sec + ts.tv_nsec * 1e-9;
    return emu_sticky;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) { (void)e; return emu_sticky; }
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) { *ms = (float)((b->seconds - a->seconds) * 1e3); return emu_sticky; }
cudaError_t cudaGetLastError(void)
{
    cudaError_t e = emu_sticky != cudaSuccess ? emu_sticky : emu_last;
    emu_last = cudaSuccess;
    return e;
}
const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected (emulator, EMU_NO_DEVICE set)";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered (emulator)";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch (emulator, emu_fail_launch_after)";
    default: return "emulated CUDA error";
    }
}
}

template <typename T> static inline cudaError_t cudaMalloc(T **p, size_t n) { return cudaMalloc((void **)p, n); }   /* as CUDA's */

/* ---- atomics and intrinsics (fibers never run concurrently: plain operations are atomic) ---- */
static inline float atomicAdd(float *p, float v) { float o = *p; *p = o + v; return o; }
static inline double atomicAdd(double *p, double v) { double o = *p; *p = o + v; return o; }
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline float cospif(float x) { return (float)cos(M_PI * (double)x); }

/* ---- fibers ---- */
namespace emu {
enum { READY, WAIT_BLOCK, WAIT_WARP, DONE };
struct fiber { ucontext_t ctx; int state; dim3 tid; };
static const int MAXT = 1024, STACK = 64 * 1024;
static fiber fibers[MAXT];
static char *stacks;
static ucontext_t sched;
static int nthr, cur;
static void (*body_fn)(void *);
static void *body_arg;
static double shfl_slot[MAXT];
static unsigned long block_serial;   /* counts blocks run: per-block state (mma.h) resets on a new one */

static void entry(void)
{
    body_fn(body_arg);
    fibers[cur].state = DONE;                 /* returns to sched through uc_link */
}

static void yield_as(int state)
{
    fibers[cur].state = state;
    swapcontext(&fibers[cur].ctx, &sched);
}

/* Runs body(arg) as every thread of every block of the grid. */
static void run(dim3 g, dim3 b, void (*fn)(void *), void *arg)
{
    int nt = (int)(b.x * b.y * b.z);
    if (nt < 1 || nt > MAXT) { emu_fail("%s: block of %lld threads %lld", "launch", nt, 0); return; }
    if (!stacks) stacks = (char *)malloc((size_t)MAXT * STACK);
    if (emu_fail_launch_after >= 0 && emu_fail_launch_after-- == 0) { emu_last = cudaErrorLaunchOutOfResources; return; }
    gridDim = g; blockDim = b; body_fn = fn; body_arg = arg; nthr = nt;
    /* the blocks in a shuffled order, a new one at every launch (xorshift, Fisher-Yates) */
    static uint64_t order_rng = 0x9E3779B97F4A7C15ull;
    static unsigned order[1 << 16];   /* kernels with their own grids (flash attention) go past the capped ones */
    unsigned n_blocks = g.x * g.y * g.z;
    if (n_blocks > sizeof order / sizeof order[0]) { emu_fail("%s: grid of %lld blocks (emulator limit %lld)", "launch", n_blocks, (long long)(sizeof order / sizeof order[0])); return; }
    for (unsigned i = 0; i < n_blocks; i++) order[i] = i;
    for (unsigned i = n_blocks; i > 1; i--) {
        order_rng ^= order_rng << 13; order_rng ^= order_rng >> 7; order_rng ^= order_rng << 17;
        unsigned j = (unsigned)(order_rng % i), t = order[i - 1];
        order[i - 1] = order[j]; order[j] = t;
    }
    for (unsigned k = 0; k < n_blocks; k++) {
                unsigned block = order[k], bx = block % g.x, by = block / g.x % g.y, bz = block / (g.x * g.y);
                blockIdx = dim3(bx, by, bz);
                block_serial++;
                for (int i = 0; i < nt; i++) {
                    fiber *f = &fibers[i];
                    f->tid = dim3(i % b.x, (i / b.x) % b.y, i / (b.x * b.y));
                    f->state = READY;
                    getcontext(&f->ctx);
                    f->ctx.uc_stack.ss_sp = stacks + (size_t)i * STACK;
                    f->ctx.uc_stack.ss_size = STACK;
                    f->ctx.uc_link = &sched;
                    makecontext(&f->ctx, entry, 0);
                }
                for (;;) {
                    int ran = 0, done = 0;
                    for (int i = 0; i < nt; i++) {
                        if (fibers[i].state == READY) {
                            cur = i; threadIdx = fibers[i].tid;
                            swapcontext(&sched, &fibers[i].ctx);
                            ran = 1;
                        }
                        done += fibers[i].state == DONE;
                    }
                    if (done == nt) break;
                    if (ran) continue;
                    /* nobody ready: release a complete barrier */
                    int released = 0, blockwait = 1;
                    for (int i = 0; i < nt; i++) if (fibers[i].state != DONE && fibers[i].state != WAIT_BLOCK) blockwait = 0;
                    if (blockwait) { for (int i = 0; i < nt; i++) if (fibers[i].state == WAIT_BLOCK) fibers[i].state = READY; released = 1; }
                    for (int w = 0; w * 32 < nt && !released; w++) {
                        int all = 1, any = 0;
                        for (int i = w * 32; i < nt && i < w * 32 + 32; i++) {
                            if (fibers[i].state == WAIT_WARP) any = 1;
                            else if (fibers[i].state != DONE) all = 0;
                        }
                        if (all && any) { for (int i = w * 32; i < nt && i < w * 32 + 32; i++) if (fibers[i].state == WAIT_WARP) fibers[i].state = READY; released = 1; }
                    }
                    if (!released) {
                        emu_fail("%s: deadlock in block %lld (threads at different barriers) %lld", "kernel", bx, 0);
                        fprintf(stderr, "CUDA EMULATOR: aborting: a real GPU would hang or misbehave here\n");
                        abort();
                    }
                }
            }
}

template <typename F> struct launch_t {
    dim3 g, b; F f;
    template <typename... A> void operator()(A... args) const
    {
        auto call = [&]() { f(args...); };
        typedef decltype(call) L;
        dim3 bb = b;
        static const int full = getenv("EMU_FULL_BLOCKS") != NULL;              /* keep the launch's block size */
        if (!full && bb.y == 1 && bb.z == 1 && bb.x > 64 && bb.x % 64 == 0) bb.x = 64;   /* 2 warps: same code paths, 4x fewer fibers */
        run(g, bb, [](void *p) { (*(L *)p)(); }, (void *)&call);
    }
};
template <typename... P> launch_t<void (*)(P...)> launcher(dim3 g, dim3 b, void (*f)(P...)) { return {g, b, f}; }
} /* namespace emu */

#define LAUNCH(grid, block, ...) emu::launcher(dim3(grid), dim3(block), __VA_ARGS__)

static inline void __syncthreads(void) { emu::yield_as(emu::WAIT_BLOCK); }
/* A warp barrier: memory written by one lane before it is visible to the warp's other lanes
 * after it (the flash-attention kernels pass tiles between lanes through shared memory). */
static inline void __syncwarp(unsigned mask = 0xffffffffu) { (void)mask; emu::yield_as(emu::WAIT_WARP); }
template <typename T> static inline T __shfl_xor_sync(unsigned mask, T v, int lanemask)
{
    (void)mask;
    int me = emu::cur;
    emu::shfl_slot[me] = (double)v;
    emu::yield_as(emu::WAIT_WARP);           /* everyone in the warp has written */
    T r = (T)emu::shfl_slot[me ^ lanemask];
    emu::yield_as(emu::WAIT_WARP);           /* everyone has read before slots are reused */
    return r;
}

/* kernels.cu's 16-byte vector loads and stores (load_pack, store_pack) pass their address here:
 * a GPU faults on a misaligned one ("misaligned address"), and a pack that runs past its buffer
 * is an out-of-bounds access; both are reported as an illegal address. */
#define VECTOR_ACCESS(p) emu_vector_access((const void *)(p))
static inline void emu_vector_access(const void *p)
{
    if ((uintptr_t)p % 16)
        emu_fail("%s: 16-byte vector access at 0x%llx, %lld mod 16 (must be 0)", "misaligned address",
                 (long long)(uintptr_t)p, (long long)((uintptr_t)p % 16));
    else if (!emu_in_alloc(p, 16))
        emu_fail("%s: 16-byte vector access at 0x%llx outside every allocation%.0lld", "out of bounds",
                 (long long)(uintptr_t)p, 0);
}

/* block_sum / block_max with kernels.cu's contract (every thread of the block calls it, every
 * thread gets the result), as two block barriers instead of ~25 emulated shuffles. Compile
 * with -DEMU_REAL_SHUFFLES to run kernels.cu's own warp-shuffle versions instead (slow). */
#ifndef EMU_REAL_SHUFFLES
#define EMU_BLOCK_REDUCE
namespace emu { static double red_slot[MAXT]; }
template <typename F> static inline F block_sum(F v)
{
    emu::red_slot[emu::cur] = (double)v;
    __syncthreads();
    F s = 0;
    for (int i = 0; i < emu::nthr; i++) s += (F)emu::red_slot[i];   /* the same order in every thread */
    __syncthreads();
    return s;
}
static inline float block_max(float v)
{
    emu::red_slot[emu::cur] = (double)v;
    __syncthreads();
    float m = -INFINITY;
    for (int i = 0; i < emu::nthr; i++) m = fmaxf(m, (float)emu::red_slot[i]);
    __syncthreads();
    return m;
}
#endif
#endif
