/* llama/gguf.h - read a llama.cpp GGUF file of a Llama model straight into a llama_model.
 *
 * What it takes: GGUF v2/v3, general.architecture "llama", tensors in F32, F16, BF16, Q8_0,
 * Q4_0, Q4_1, Q5_0, Q5_1 or the K-quants Q2_K..Q6_K (dequantised to fp32 exactly as ggml and
 * the `gguf` Python package do), no rope
 * scaling baked in (a rope_freqs tensor is refused). What it does beyond reading:
 *   - the config comes from the llama.* metadata keys (and tokenizer.ggml.bos/eos_token_id);
 *   - llama.cpp's converter stored q_proj/k_proj rows permuted from Hugging Face's rotate-half
 *     layout to Meta's interleaved pairs; they are permuted back (k with num_key_value_heads),
 *     so the model is exactly the Hugging Face model that tools/gguf_to_hf.py writes.
 * Like the safetensors loader, every size, offset and count is checked against the file size
 * before anything large is allocated or read, and every metadata value it uses is checked for
 * its type and range first (general.alignment an integer power of two, sizes integers, numbers
 * finite): a wrong one is an error naming the key. Only a regular file is read (a FIFO or
 * device is refused, never waited on).
 */
#ifndef LLAMA_GGUF_H
#define LLAMA_GGUF_H

#include <stddef.h>
#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 if path names a GGUF file (it ends in ".gguf"): llama_model_load and the trainer's --model
 * then read it with the functions below instead of as a checkpoint directory. */
int gguf_is_path(const char *path);

/* Loads path into m (allocated here; free with llama_model_free). 0 on success, -1 with a
 * message naming the file and the key/tensor otherwise. */
int llama_model_load_gguf(llama_model *m, const char *path, char *err, size_t errsz);

/* n elements of ggml type `type` (src_bytes of blocks) into fp32 dst. -1 when the type is not one
 * of the above or the sizes do not fit its blocks. */
int gguf_dequantize(unsigned type, const void *src, size_t src_bytes, float *dst, size_t n);

/* The tokenizer in path's metadata (tokenizer.ggml.model "gpt2" with .pre, .tokens, .token_type,
 * .merges; or "llama", sentencepiece BPE, with .scores instead of merges; .bos/eos/unknown/
 * padding_token_id, tokenizer.chat_template) as the texts of a Hugging Face tokenizer.json and
 * tokenizer_config.json (malloc'd, NUL-terminated; for "gpt2" what tools/gguf_to_hf.py writes,
 * for "llama" Llama 2's tokenizer.json layout with the merges derived from the scores), for
 * tokenizer_load_json or to be saved beside a converted model.
 * 0, or -1 with a message naming the file and the key. */
int gguf_tokenizer_json(const char *path, char **tokenizer_json, size_t *tokenizer_len, char **config_json, size_t *config_len,
                        char *err, size_t errsz);

#ifdef __cplusplus
}
#endif
#endif /* LLAMA_GGUF_H */
