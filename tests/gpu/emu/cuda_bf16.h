/* tests/gpu/emu/cuda_bf16.h - bf16 for the CPU emulator (see cuda_runtime.h here): the storage
 * type and the conversions kernels.cu uses, with CUDA's rounding (to nearest even; NaN kept). */
#ifndef EMU_CUDA_BF16_H
#define EMU_CUDA_BF16_H
#include "cuda_runtime.h"

struct __nv_bfloat16 { unsigned short x; };

static inline float __bfloat162float(__nv_bfloat16 h) { return __uint_as_float((unsigned)h.x << 16); }
static inline __nv_bfloat16 __float2bfloat16(float f)
{
    unsigned u = __float_as_uint(f);
    __nv_bfloat16 h;
    if ((u & 0x7fffffffu) > 0x7f800000u) { h.x = (unsigned short)((u >> 16) | 0x40); return h; }
    u += 0x7fffu + ((u >> 16) & 1);
    h.x = (unsigned short)(u >> 16);
    return h;
}
static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short s) { __nv_bfloat16 h; h.x = s; return h; }
static inline __nv_bfloat16 atomicAdd(__nv_bfloat16 *p, __nv_bfloat16 v)
{
    __nv_bfloat16 o = *p;
    *p = __float2bfloat16(__bfloat162float(o) + __bfloat162float(v));
    return o;
}
#endif
