/* tests/checkpoint/ckpt_tool.c - a small driver of the checkpoint code for the dev tool
 * tools/check_hf_roundtrip.py (which compares against transformers; not run in CI).
 *
 *   ckpt_tool save DIR V D I L H K TIED BF16 MAX_SHARD_BYTES SEED LLAMA3 [TOKENIZER_DIR]
 *       random model (llama_model_init_random, norms perturbed) saved with llama_model_save
 *   ckpt_tool dump DIR OUT
 *       llama_model_load, then OUT gets every tensor as "name n" lines in OUT.txt and the
 *       fp32 values back to back in OUT (llama_layout order)
 */
#include "../../llama/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    char err[1024];
    llama_model m;
    if (argc >= 14 && !strcmp(argv[1], "save")) {
        llama_config c;
        llama_save_opts o;
        size_t i;
        memset(&c, 0, sizeof c);
        c.vocab_size = atoi(argv[3]); c.hidden_size = atoi(argv[4]); c.intermediate_size = atoi(argv[5]);
        c.num_hidden_layers = atoi(argv[6]); c.num_attention_heads = atoi(argv[7]); c.num_key_value_heads = atoi(argv[8]);
        c.head_dim = c.hidden_size / c.num_attention_heads;
        c.tie_word_embeddings = atoi(argv[9]);
        c.rms_norm_eps = 1e-5f; c.rope_theta = 500000.0; c.max_position_embeddings = 4096;
        c.bos_token_id = 1; c.eos_token_ids[0] = 2; c.eos_token_ids[1] = 3; c.n_eos = 2; c.initializer_range = 0.02;
        if (atoi(argv[13])) {
            c.rope_llama3 = 1; c.rope_factor = 32; c.rope_low_freq_factor = 1; c.rope_high_freq_factor = 4;
            c.rope_original_max_position_embeddings = 8192;
            c.max_position_embeddings = 131072; /* transformers wants it above the original */
        }
        if (llama_model_alloc(&m, &c, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
        llama_model_init_random(&m, (uint64_t)atoll(argv[12]));
        for (i = 0; i < (size_t)m.n_tensors; i++)
            if (m.tensors[i].ndim == 1) {
                size_t k;
                for (k = 0; k < m.tensors[i].numel; k++) m.params[m.tensors[i].offset + k] = 1.0f + 0.01f * (float)((k * 7 + i) % 13);
            }
        memset(&o, 0, sizeof o);
        o.bf16 = atoi(argv[10]);
        o.max_shard_bytes = (size_t)atoll(argv[11]);
        o.tokenizer_from = argc > 14 ? argv[14] : NULL;
        if (llama_model_save(&m, argv[2], &o, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
        llama_model_free(&m);
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "dump")) {
        char txt[4096];
        FILE *fb, *ft;
        int i;
        if (llama_model_load(&m, argv[2], err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
        snprintf(txt, sizeof txt, "%s.txt", argv[3]);
        fb = fopen(argv[3], "wb");
        ft = fopen(txt, "w");
        if (!fb || !ft) { fprintf(stderr, "cannot write %s\n", argv[3]); return 1; }
        for (i = 0; i < m.n_tensors; i++) fprintf(ft, "%s %zu\n", m.tensors[i].name, m.tensors[i].numel);
        fwrite(m.params, sizeof(float), m.n_params, fb);
        fclose(fb);
        fclose(ft);
        llama_model_free(&m);
        return 0;
    }
    fprintf(stderr, "usage: ckpt_tool save DIR V D I L H K TIED BF16 MAX_SHARD SEED LLAMA3 [TOKDIR] | dump DIR OUT\n");
    return 2;
}
