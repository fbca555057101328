/* tests/gpu/emu/mma.h - the nvcuda::wmma subset kernels.cu uses, for the CPU emulator (see
 * cuda_runtime.h here): bf16 16x16x16 fragments (matrix_a, matrix_b, row or column major) with
 * fp32 accumulators; load_matrix_sync, store_matrix_sync, fill_fragment, mma_sync.
 *
 * On a GPU a fragment is spread over the 32 lanes of a warp in an unspecified layout: each lane
 * holds num_elements of the 256, and code may only touch x[i] in ways that do not depend on which
 * element x[i] is (a uniform scaling, a fill). Here every lane holds the whole 16x16 tile, stored
 * in a deliberately scrambled order (frag_slot below: neither row- nor column-major), so a kernel
 * that assumes a layout - "x[i] is row i / 16" - computes garbage on the emulator as it would on
 * some GPU.
 *
 * Warp-collective semantics: every lane of a warp must make the same calls with the same
 * arguments. Loads and products check that: the first lane of a warp to reach its k-th call does
 * the work (a product sums in fp32 in k order) and records the call; the other lanes' k-th calls
 * compare theirs with it (a mismatch, as from lane-dependent code, is reported as an emulator
 * failure) and copy the result, so the work is done once per warp instead of 32 times. (A load
 * is thus made when the first lane reaches it: a lane that wrote the memory without a
 * __syncwarp() before the load is not seen, a race on a GPU too.)
 * Pointers must be 32-byte aligned and ldm a multiple of 16 bytes (CUDA's rules); both checked. */
#ifndef EMU_MMA_H
#define EMU_MMA_H
#include <deque>
#include <type_traits>
#include "cuda_runtime.h"
#include "cuda_bf16.h"

namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

/* where element (row, col) of a tile is kept in x[]: a fixed scramble (37 is odd: a bijection) */
static inline int frag_slot(int row, int col) { return ((col * 16 + row) * 37 + 11) & 255; }

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
    static_assert(M == 16 && N == 16 && K == 16, "the emulator has 16x16x16 fragments only");
    enum { num_elements = 256 };
    T x[256];
};

static inline void check_ptr(const void *p, unsigned ldm, size_t esz, const char *what)
{
    if ((uintptr_t)p % 32)
        emu_fail("%s: pointer 0x%llx not 32-byte aligned (%lld)", what, (long long)(uintptr_t)p, (long long)((uintptr_t)p % 32));
    if ((ldm * esz) % 16)
        emu_fail("%s: ldm %lld elements is not a multiple of 16 bytes%.0lld", what, (long long)ldm, 0);
}

/* Each warp's log of its collective calls (loads and products) since the last call every lane
 * has made: the first lane to reach its k-th call does the work and records it (what it was
 * asked, what it got); the other lanes' k-th calls must ask the same (or the kernel's lanes
 * diverged: reported) and copy the result. */
struct collective {
    unsigned char ask[2 * 256 * 2 + 256 * 4];   /* a load's pointer, ldm, layout; a product's a, b, c */
    size_t ask_size;
    unsigned char result[256 * 4];
    int uses;
};
struct warp_log {
    unsigned long serial;        /* emu::block_serial of the block this log belongs to */
    long base;                   /* call index of q.front() */
    long next[32];               /* each lane's next call index */
    std::deque<collective> q;
};
static warp_log warp_logs[emu::MAXT / 32];

/* This lane's k-th call: returns the record, and whether this lane is the first (must fill
 * result); `ask` is compared with the first lane's. */
static inline collective &collective_begin(const void *ask, size_t ask_size, bool *first, const char *what)
{
    int warp = emu::cur / 32, lane = emu::cur % 32;
    warp_log &log = warp_logs[warp];
    if (log.serial != emu::block_serial) {
        log.serial = emu::block_serial; log.base = 0; log.q.clear();
        memset(log.next, 0, sizeof log.next);
    }
    long k = log.next[lane]++;
    *first = k - log.base >= (long)log.q.size();
    if (*first) {
        log.q.emplace_back();
        collective &r = log.q.back();
        memcpy(r.ask, ask, ask_size);
        r.ask_size = ask_size;
        r.uses = 0;
    }
    collective &r = log.q[(size_t)(k - log.base)];
    if (r.ask_size != ask_size || memcmp(r.ask, ask, ask_size))
        emu_fail("%s: lane %lld of warp %lld made another call than its warp's first lane", what, lane, warp);
    return r;
}
static inline void collective_end(collective &r)
{
    int warp = emu::cur / 32;
    int lanes = emu::nthr - warp * 32 < 32 ? emu::nthr - warp * 32 : 32;
    warp_log &log = warp_logs[warp];
    r.uses++;
    while (!log.q.empty() && log.q.front().uses == lanes) { log.q.pop_front(); log.base++; }
}

struct load_ask { const void *p; unsigned ldm; int row_major; };

template <typename Use, typename T, typename L>
static inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, L> &f, const T *p, unsigned ldm)
{
    const bool row = std::is_same<L, row_major>::value;
    load_ask ask = {p, ldm, row};
    bool first;
    collective &r = collective_begin(&ask, sizeof ask, &first, "load_matrix_sync");
    if (first) {
        check_ptr(p, ldm, sizeof(T), "load_matrix_sync");
        T *x = (T *)r.result;
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 16; j++) x[frag_slot(i, j)] = row ? p[(size_t)i * ldm + j] : p[(size_t)j * ldm + i];
    }
    memcpy(f.x, r.result, sizeof f.x);
    collective_end(r);
}
static inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float> &f, const float *p, unsigned ldm,
                                    layout_t layout)
{
    load_ask ask = {p, ldm, layout == mem_row_major};
    bool first;
    collective &r = collective_begin(&ask, sizeof ask, &first, "load_matrix_sync");
    if (first) {
        check_ptr(p, ldm, 4, "load_matrix_sync");
        float *x = (float *)r.result;
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 16; j++)
                x[frag_slot(i, j)] = layout == mem_row_major ? p[(size_t)i * ldm + j] : p[(size_t)j * ldm + i];
    }
    memcpy(f.x, r.result, sizeof f.x);
    collective_end(r);
}
/* Every lane stores (what it holds: the same tile in every lane of correct code). */
static inline void store_matrix_sync(float *p, const fragment<accumulator, 16, 16, 16, float> &f, unsigned ldm,
                                     layout_t layout)
{
    check_ptr(p, ldm, 4, "store_matrix_sync");
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++)
            (layout == mem_row_major ? p[(size_t)i * ldm + j] : p[(size_t)j * ldm + i]) = f.x[frag_slot(i, j)];
}
template <typename Use, typename T, typename L>
static inline void fill_fragment(fragment<Use, 16, 16, 16, T, L> &f, T v)
{
    for (int i = 0; i < 256; i++) f.x[i] = v;
}

/* d = a b + c: fp32 products summed in k order onto c. */
template <typename LA, typename LB>
static inline void mma_sync(fragment<accumulator, 16, 16, 16, float> &d,
                            const fragment<matrix_a, 16, 16, 16, __nv_bfloat16, LA> &a,
                            const fragment<matrix_b, 16, 16, 16, __nv_bfloat16, LB> &b,
                            const fragment<accumulator, 16, 16, 16, float> &c)
{
    unsigned char ask[sizeof ((collective *)0)->ask];
    memcpy(ask, a.x, 512); memcpy(ask + 512, b.x, 512); memcpy(ask + 1024, c.x, 1024);
    bool first;
    collective &r = collective_begin(ask, sizeof ask, &first, "mma_sync");
    if (first) {
        float A[16][16], B[16][16], C[16][16];   /* plain row-major copies: a loop the compiler vectorises */
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 16; j++) {
                A[i][j] = __bfloat162float(a.x[frag_slot(i, j)]);
                B[i][j] = __bfloat162float(b.x[frag_slot(i, j)]);
                C[i][j] = c.x[frag_slot(i, j)];
            }
        for (int i = 0; i < 16; i++)
            for (int k = 0; k < 16; k++)
                for (int j = 0; j < 16; j++) C[i][j] += A[i][k] * B[k][j];
        float *x = (float *)r.result;
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 16; j++) x[frag_slot(i, j)] = C[i][j];
    }
    memcpy(d.x, r.result, sizeof d.x);
    collective_end(r);
}
} /* namespace wmma */
} /* namespace nvcuda */
#endif
