/* llama/model.h - the Llama model: config, parameter layout, checkpoint I/O, and the backend
 * interface that the CPU path (llama/model.c, its fast GEMM and exp in llama/gemm.c) and the CUDA
 * path (kernels.cu) both implement.
 *
 * Names follow Hugging Face's modeling_llama.py so a reader of either finds their way:
 * embed_tokens, input_layernorm, self_attn.{q,k,v,o}_proj, post_attention_layernorm,
 * mlp.{gate,up,down}_proj, norm, lm_head. Linear weights are stored as HF stores them, [out, in].
 *
 * Shapes use: V vocab_size, D hidden_size, I intermediate_size, L num_hidden_layers,
 * H num_attention_heads, K num_key_value_heads, hd head_dim, T tokens in a batch.
 *
 * Errors: functions that can fail return 0 on success and -1 on failure, with a message in the
 * caller's `err` buffer naming the file/field and what to do. Nothing here calls exit().
 */
#ifndef LLAMA_MODEL_H
#define LLAMA_MODEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------ */
/* Config (config.json)                                                                        */

#define LLAMA_MAX_EOS 8

typedef struct {
    int vocab_size;             /* V */
    int hidden_size;            /* D */
    int intermediate_size;      /* I */
    int num_hidden_layers;      /* L */
    int num_attention_heads;    /* H */
    int num_key_value_heads;    /* K (GQA); equal to H for plain multi-head attention */
    int head_dim;               /* hd; config's head_dim when present, else D / H */
    float rms_norm_eps;
    double rope_theta;
    int rope_llama3;            /* 1 when rope_scaling.rope_type (or .type) is "llama3" */
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_position_embeddings;
    int max_position_embeddings;
    int tie_word_embeddings;    /* 1: lm_head is embed_tokens (no lm_head.weight tensor) */
    int bos_token_id;           /* -1 when absent */
    int eos_token_ids[LLAMA_MAX_EOS];
    int n_eos;
    double initializer_range;   /* std of the random init (HF default 0.02) */
} llama_config;

/* Reads and validates config.json. Refuses (naming the field) anything we do not implement:
 * another model_type/architecture, attention_bias/mlp_bias true, another rope type, a
 * hidden_act other than silu, inconsistent head counts. */
int llama_config_load(const char *path, llama_config *cfg, char *err, size_t errsz);
/* Parses config JSON text already in memory (`what` names it in messages). */
int llama_config_parse(const char *json, size_t len, const char *what, llama_config *cfg,
                       char *err, size_t errsz);
/* Writes a config.json that transformers loads (LlamaForCausalLM), atomically (tmp + rename). */
int llama_config_save(const llama_config *cfg, const char *path, char *err, size_t errsz);

/* ------------------------------------------------------------------------------------------ */
/* Parameters: one flat fp32 buffer, carved into tensors by a table (llm.c style).             */

typedef struct {
    char name[80];              /* HF name, e.g. "model.layers.3.self_attn.q_proj.weight" */
    int ndim;                   /* 1 (norm weights) or 2 */
    int64_t shape[2];           /* HF shape ([out, in] for linear weights) */
    size_t offset;              /* in floats, from the start of the flat buffer */
    size_t numel;
} llama_tensor_info;

typedef struct {
    float *input_layernorm;          /* [D] */
    float *q_proj;                   /* [H*hd, D] */
    float *k_proj;                   /* [K*hd, D] */
    float *v_proj;                   /* [K*hd, D] */
    float *o_proj;                   /* [D, H*hd] */
    float *post_attention_layernorm; /* [D] */
    float *gate_proj;                /* [I, D] */
    float *up_proj;                  /* [I, D] */
    float *down_proj;                /* [D, I] */
} llama_layer_weights;

typedef struct {
    float *embed_tokens;             /* [V, D] */
    llama_layer_weights *layers;     /* [L] (array owned by this struct) */
    float *norm;                     /* [D] */
    float *lm_head;                  /* [V, D]; points at embed_tokens when tied */
} llama_weights;

/* The tensor table for a config, in checkpoint order: embed_tokens, then per layer
 * input_layernorm, q, k, v, o, post_attention_layernorm, gate, up, down; norm; lm_head (untied
 * only). Returns the number of tensors; *n_params gets the total float count. `out` may be
 * NULL to only count; otherwise it must hold 3 + 9 * L entries. */
int llama_layout(const llama_config *cfg, llama_tensor_info *out, size_t *n_params);

/* Views into any flat buffer with this layout (parameters, gradients, Adam moments). Call
 * llama_weights_free_view to release the layers array (not the buffer). */
int llama_weights_view(const llama_config *cfg, float *flat, llama_weights *out);
void llama_weights_free_view(llama_weights *w);

typedef struct {
    llama_config cfg;
    int n_tensors;
    llama_tensor_info *tensors;      /* [n_tensors] */
    size_t n_params;
    float *params;                   /* [n_params], fp32, one allocation */
    llama_weights w;                 /* views into params */
} llama_model;

/* Allocates a model for cfg (parameters zeroed). Refuses sizes that overflow or are absurd. */
int llama_model_alloc(llama_model *m, const llama_config *cfg, char *err, size_t errsz);
/* Hugging Face's init: normal(0, initializer_range) for linear and embedding weights, 1 for norms.
 * Deterministic for a seed (our own generator, the same on every machine). */
void llama_model_init_random(llama_model *m, uint64_t seed);
/* Loads a checkpoint directory: config.json, and model.safetensors or a sharded
 * model.safetensors.index.json; F32, BF16 or F16 tensors, converted to fp32. Every tensor's
 * name, shape, dtype and byte range is checked before use. */
int llama_model_load(llama_model *m, const char *dir, char *err, size_t errsz);
void llama_model_free(llama_model *m);

typedef struct {
    int bf16;                        /* 0: F32 tensors, 1: BF16 (round to nearest even) */
    size_t max_shard_bytes;          /* 0: default (5 GB, as transformers); above: sharded + index */
    const char *tokenizer_from;      /* directory whose tokenizer files are copied, or NULL */
} llama_save_opts;
/* Writes config.json + safetensors (+ index when sharded) + tokenizer files into dir.
 * Everything is written under temporary names and renamed only when complete. */
int llama_model_save(const llama_model *m, const char *dir, const llama_save_opts *opts,
                     char *err, size_t errsz);

/* ------------------------------------------------------------------------------------------ */
/* Batches and the objective                                                                   */

/* A batch of token sequences of different lengths, packed back to back (no padding).
 * Log-prob convention: logp[i] = log p(tokens[i] | tokens[seq_start[s] .. i-1]) for a token i
 * of sequence s that is not the sequence's first; logp[seq_start[s]] = 0. (This is HF's
 * "logits shifted by one against the labels", indexed by the label.) The summed completion
 * log-prob of sequence s is the sum of logp[i] over its tokens with completion[i] = 1. */
typedef struct {
    int n_seq;
    const int *tokens;               /* [T] token ids, all sequences back to back */
    const int *seq_start;            /* [n_seq + 1]; T = seq_start[n_seq] */
    const unsigned char *completion; /* [T] 1 if token i is a completion (label) token */
} llama_batch;

/* Sums logp over the completion tokens of each sequence: out[s], s < n_seq (double). */
void llama_completion_logp(const llama_batch *b, const float *logp, double *out);

typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
    long step;                       /* 1-based step count, for bias correction */
} llama_adamw;

/* ------------------------------------------------------------------------------------------ */
/* Backends: the CPU path and the CUDA path implement the same calls.                          */

typedef struct llama_backend llama_backend;
struct llama_backend {
    const char *name;                /* "cpu", "cuda-fp32", "cuda-bf16" */
    llama_config cfg;
    size_t n_params;
    char err[512];                   /* set when a call returns -1 */

    /* Forward over a batch: fills logp[T] (see llama_batch). Keeps what backward needs (or
     * what lets it recompute) until the next forward. */
    int (*forward)(llama_backend *b, const llama_batch *batch, float *logp);
    /* Backward of the objective J = sum_i dlogp[i] * logp[i] for the batch of the last
     * forward call; gradients are ADDED to the backend's gradient buffer (accumulation). */
    int (*backward)(llama_backend *b, const llama_batch *batch, const float *dlogp);
    void (*zero_grad)(llama_backend *b);
    /* Global L2 norm of the gradient buffer (fp64 accumulation). Non-finite if any grad is. */
    double (*grad_norm)(llama_backend *b);
    /* One AdamW step on every parameter: g = grad * grad_scale (clipping, 1/accumulation);
     * m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr (mhat/(sqrt(vhat)+eps) + wd p),
     * weight decay only on 2-D tensors (HF Trainer leaves norms undecayed). */
    int (*adamw_step)(llama_backend *b, const llama_adamw *h, float grad_scale);
    /* Copies to host fp32 flat buffers in llama_layout order (any pointer may be NULL). */
    int (*get_state)(llama_backend *b, float *params, float *grads, float *adam_m, float *adam_v);
    /* Sets parameters and Adam moments from host fp32 buffers (resume). NULL leaves as is. */
    int (*set_state)(llama_backend *b, const float *params, const float *adam_m, const float *adam_v);
    void (*destroy)(llama_backend *b);
    void *impl;
};

/* The CPU backend trains m in place (it uses m->params as its parameters). */
llama_backend *llama_cpu_backend_create(llama_model *m, char *err, size_t errsz);

typedef struct {
    int device;                      /* CUDA device index */
    int bf16;                        /* 0: fp32 everywhere, TF32 off (debug/parity); 1: bf16 */
    int lean_optimizer;              /* bf16 weights + bf16 moments, stochastic rounding */
    int recompute;                   /* activation recomputation, LLAMA_RECOMPUTE_* below */
    int max_tokens;                  /* largest batch (T) it must plan memory for */
    int verbose;                     /* print the memory plan */
    int max_seq_tokens;              /* longest single sequence of a batch: sizes the attention
                                        scratch (0: max_tokens; a longer sequence is refused) */
    int profile;                     /* time each category of work with CUDA events (benchmarks) */
} llama_cuda_opts;
/* llama_cuda_opts.recompute: what forward keeps for backward (docs/design.md, "Recomputation").
 * NONE: every layer's activations (most memory, no recomputation); LAYER: each layer's input
 * only, backward reruns the layer's forward (GEMMs included; least memory); SELECTIVE: the
 * outputs of the GEMMs and attention per layer, backward recomputes only the norms and SwiGLU
 * (no GEMM twice; memory in between). All three give the same gradients. */
enum { LLAMA_RECOMPUTE_NONE = 0, LLAMA_RECOMPUTE_LAYER = 1, LLAMA_RECOMPUTE_SELECTIVE = 2 };
/* The CUDA backend (kernels.cu). In a build without CUDA it returns NULL with a message. */
llama_backend *llama_cuda_backend_create(const llama_model *m, const llama_cuda_opts *opts,
                                         char *err, size_t errsz);
/* kernels.cu only (a build without nvcc lacks them; tests and benchmarks of the CUDA path use them):
 * the memory plan without a device: the bytes creation would allocate (0: the options are
 * refused), its text in text[textsz]; */
size_t llama_cuda_memory_plan(const llama_config *cfg, const llama_cuda_opts *opts, char *text, size_t textsz);
/* the device time per category since the last reset (opts.profile): ms[0] layer GEMMs, ms[1]
 * attention, ms[2] elementwise, ms[3] LM head, ms[4] optimizer; */
int llama_cuda_time_split(llama_backend *b, double ms[5], int reset);
/* the cuBLAS time of one linear layer's forward + backward at [T, in] x [out, in] (bf16). */
int llama_cuda_linear_ceiling(int T, int in, int out, int reps, double *ms, char *err, size_t errsz);

/* ------------------------------------------------------------------------------------------ */
/* CPU building blocks: the twins that kernels.cu's kernels are tested against.               */

/* The two fast kernels under the CPU model, in llama/gemm.c (everything else here is in
 * llama/model.c). */

/* C[r, j] += sum_kk A[r*ars + kk*aks] * B[kk*bks + j*bjs] for r < n, j < m, kk < k (C row-major
 * with leading dimension ldc): the strided GEMM every product of the CPU model goes through. */
void llama_gemm(float *C, size_t ldc, const float *A, ptrdiff_t ars, ptrdiff_t aks, const float *B,
                ptrdiff_t bks, ptrdiff_t bjs, int n, int k, int m);
/* For tests: which kernel llama_gemm (and llama_exp_f32) uses; 0 = the best this CPU has
 * (default), 1 = generic (GCC/Clang vector extensions for the baseline target, or plain C),
 * 2 = AVX2+FMA, 3 = AVX-512, 4 = plain loops (the definition; slow; the exp of level 1).
 * Returns -1 (and changes nothing) where the CPU or build lacks it. Not to be called while a
 * product runs. */
int llama_gemm_force_level(int level);
/* x[i] = exp(x[i] * scale - shift) in fp32, vectorisable (the softmax exps of attention and the
 * LM head); for arguments <= 88, 0 below -87, relative error ~1e-7 */
void llama_exp_f32(float *x, int n, float scale, float shift);

/* out[n, o] = x[n, i] @ w[o, i]^T   (a Linear layer; w as HF stores it) */
void llama_matmul(float *out, const float *x, const float *w, int n, int in_dim, int out_dim);
/* out[n, d] = x / sqrt(mean(x^2) + eps) * w, per row */
void llama_rmsnorm(float *out, const float *x, const float *w, int n, int d, float eps);
/* inv_freq[hd/2] for the config, llama3 rope scaling applied when configured */
void llama_rope_inv_freq(const llama_config *cfg, double *inv_freq);
/* Rotates one position's heads in place, HF rotate-half convention (j pairs with j + hd/2):
 * x[h*hd + j] for n_heads heads. */
void llama_rope_apply(float *x, int n_heads, int hd, int pos, const double *inv_freq);

/* Inference with a KV cache (generation), CPU. The cache has n_seq slots, one sequence each, so
 * that many prompts decode together: llama_decode runs every new token of every slot it is given
 * through each linear layer as one product (the GEMMs of the training forward), which reads each
 * weight once per step instead of once per prompt. */
typedef struct {
    int n_seq;                       /* slots */
    int max_pos;                     /* capacity of each slot, in positions */
    float *k, *v;                    /* [L, n_seq, max_pos, K*hd], after RoPE (k) */
    int *len;                        /* [n_seq] positions filled in each slot */
} llama_kv_cache;
int llama_kv_cache_alloc(llama_kv_cache *c, const llama_config *cfg, int n_seq, int max_pos,
                         char *err, size_t errsz);
void llama_kv_cache_free(llama_kv_cache *c);

/* Appends tokens to slots and returns each slot's next-token logits. Entry e < n feeds
 * tokens[start[e] .. start[e+1]) to slot slot[e] at positions len[slot[e]] onwards and writes
 * logits[e*V .. e*V + V) for its last token. A whole prompt is one entry (the prefill: attention
 * by the training forward's GEMM routine when the slot is empty); a decoding step is one token
 * per slot. A slot appears at most once per call. An entry's logits depend only on its own slot's
 * tokens and on how they were split into calls, never on the other entries or the thread count
 * (bit for bit), so batching prompts does not change their answers. */
int llama_decode(const llama_model *m, llama_kv_cache *c, int n, const int *slot, const int *tokens,
                 const int *start, float *logits, char *err, size_t errsz);

/* The reference: one token into slot 0 at position len[0], plain loops (llama_decode is tested
 * against it); writes logits[V]. */
int llama_decode_step(const llama_model *m, llama_kv_cache *c, int token, float *logits,
                      char *err, size_t errsz);

#ifdef __cplusplus
}
#endif
#endif /* LLAMA_MODEL_H */
