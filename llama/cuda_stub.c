/* llama/cuda_stub.c - the CUDA backend entry point of a build made without nvcc.
 *
 * build.sh compiles kernels.cu when nvcc exists; otherwise this file supplies
 * llama_cuda_backend_create so the trainer links the same way and can say clearly, at run time,
 * why there is no GPU path (instead of failing to link). */
#include <stdio.h>
#include "model.h"

llama_backend *llama_cuda_backend_create(const llama_model *m, const llama_cuda_opts *opts,
                                         char *err, size_t errsz)
{
    (void)m;
    (void)opts;
    if (err && errsz) snprintf(err, errsz, "built without CUDA: rebuild with nvcc available");
    return NULL;
}
