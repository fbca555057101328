/* llama/safetensors.h - read and write safetensors files (Hugging Face's tensor container).
 *
 * Format: u64 little-endian header length N, then N bytes of JSON
 *     {"name": {"dtype": "F32", "shape": [a, b], "data_offsets": [begin, end]}, ...,
 *      "__metadata__": {"key": "string value", ...}}
 * then the data buffer. Offsets are relative to the first byte after the header. Like the
 * reference reader, st_open insists that the tensors' byte ranges are contiguous and cover the
 * buffer exactly, and that the header is at most 100 MB: a file that passes st_open can be read
 * without any further bounds worry, and a lying file is refused before any large allocation.
 *
 * Reading converts on the fly (F32/BF16/F16 -> fp32; I32/I64/U8/BOOL -> int32), in chunks, so
 * memory stays at the destination buffer plus a small staging buffer.
 *
 * Errors: 0 on success, -1 with a message in err (naming the file and the tensor/field).
 */
#ifndef LLAMA_SAFETENSORS_H
#define LLAMA_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ST_MAX_HEADER (100u * 1000u * 1000u) /* bytes; the reference reader's cap */
#define ST_MAX_NDIM 8

typedef struct {
    char name[160];
    char dtype[8];              /* "F32", "BF16", "F16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL", ... */
    int ndim;
    int64_t shape[ST_MAX_NDIM];
    uint64_t begin, end;        /* absolute file offsets of the tensor's bytes, [begin, end) */
} st_tensor;

/* A name and its position in some table, for lookups by name in O(log n) (st_names_sort,
 * st_names_find): loaders match tens of thousands of names against each other, and a file
 * that holds many names must not make that quadratic. */
typedef struct {
    const char *name;
    int i;
} st_name;

typedef struct {
    char *path;
    size_t file_size;
    int n;                      /* number of tensors */
    st_tensor *tensors;         /* [n], in header order */
    st_name *by_name;           /* [n] the tensors sorted by name (st_find) */
    char *metadata_json;        /* "__metadata__" object as JSON text, or NULL when absent */
    FILE *fp;                   /* open for reading */
    uint64_t data_start;        /* 8 + header length */
} st_file;

/* Opens path for reading if it is a regular file; a directory, FIFO or device is refused with a
 * message naming the file (never waited on: a FIFO without a writer would block). NULL on
 * failure, with the reason in err. */
FILE *st_fopen_regular(const char *path, char *err, size_t errsz);

/* Sorts names[0..n) by name (ties by position). */
void st_names_sort(st_name *names, size_t n);
/* Position (the .i) of name in sorted names, or -1; for a repeated name, the lowest .i. */
int st_names_find(const st_name *names, size_t n, const char *name);

/* Opens and fully validates a file. On failure f is left empty (st_close is still safe). */
int st_open(st_file *f, const char *path, char *err, size_t errsz);
/* Tensor by name, or NULL (a binary search). */
const st_tensor *st_find(const st_file *f, const char *name);
/* Number of elements (product of the shape; 1 for a 0-d tensor). */
size_t st_numel(const st_tensor *t);
/* Bytes per element of a dtype name, or 0 if unknown. */
size_t st_dtype_size(const char *dtype);
/* Reads a floating tensor (F32, BF16, F16) into dst[st_numel(t)] as fp32. */
int st_read_f32(st_file *f, const st_tensor *t, float *dst, char *err, size_t errsz);
/* Reads an integer tensor (I32, I64, U8, BOOL) into dst[st_numel(t)]; I64 values outside the
 * int32 range are an error naming the element. */
int st_read_i32(st_file *f, const st_tensor *t, int32_t *dst, char *err, size_t errsz);
/* Reads a tensor's raw bytes (t->end - t->begin of them) as stored, little-endian. */
int st_read_raw(st_file *f, const st_tensor *t, void *dst, char *err, size_t errsz);
void st_close(st_file *f);

/* One tensor to write: data holds numel elements of dtype, little-endian. */
typedef struct {
    const char *name;
    const char *dtype;
    int ndim;
    int64_t shape[ST_MAX_NDIM];
    const void *data;
} st_write_tensor;

/* Writes a file with these tensors in the given order; metadata_json is a JSON object whose
 * values are strings (safetensors' rule) or NULL. The header is padded with spaces to a
 * multiple of 8 bytes (aligned data, as the reference writer does). Written to "<path>.tmp.<pid>",
 * flushed, fsync'ed and renamed over path: a reader never sees a half-written file. */
int st_write(const char *path, const st_write_tensor *ts, int n, const char *metadata_json,
             char *err, size_t errsz);

/* Writes tensors whose data is produced on the fly, in chunks: fill(ctx, i, byte_offset, buf,
 * nbytes) must write bytes [byte_offset, byte_offset + nbytes) of tensor i (in its dtype,
 * little-endian) into buf; chunks are whole elements. Lets the model save in BF16 without a
 * second full copy of the weights. Same atomicity as st_write; data fields are ignored. */
typedef int (*st_fill_fn)(void *ctx, int i, size_t byte_offset, void *buf, size_t nbytes);
int st_write_fn(const char *path, const st_write_tensor *ts, int n, const char *metadata_json,
                st_fill_fn fill, void *ctx, char *err, size_t errsz);

/* fp32 -> bf16 with round to nearest even; NaN stays NaN (quiet), infinities stay. */
uint16_t st_f32_to_bf16(float x);
float st_bf16_to_f32(uint16_t h);
/* IEEE half -> fp32, subnormals, infinities and NaN included. */
float st_f16_to_f32(uint16_t h);
/* fp32 -> IEEE half, round to nearest even, overflow to infinity. */
uint16_t st_f32_to_f16(float x);

#ifdef __cplusplus
}
#endif
#endif /* LLAMA_SAFETENSORS_H */
