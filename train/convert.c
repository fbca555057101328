/* train/convert.c - GGUF models for the trainer. See convert.h. */
#include "convert.h"
#include "../llama/gguf.h"
#include "../llama/model.h"
#include "../util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int model_tokenizer_load(tokenizer **out, const char *model, const char *chat_template, char *err, size_t errsz) {
    char *tj = NULL, *cj = NULL;
    size_t tl = 0, cl = 0;
    int rc;
    if (!gguf_is_path(model)) return tokenizer_load(out, model, chat_template, err, errsz);
    *out = NULL;
    if (gguf_tokenizer_json(model, &tj, &tl, &cj, &cl, err, errsz)) return -1;
    rc = tokenizer_load_json(out, tj, tl, cj, cl, model, chat_template, err, errsz);
    free(tj);
    free(cj);
    return rc;
}

/* Says which chat template the data goes through (a wrong one silently trains on other text). */
void say_chat_template(const tokenizer *tok, int raw_text, const char *override) {
    const char *t = tokenizer_chat_template(tok);
    if (raw_text) fprintf(stderr, "chat template: none (--raw-text: prompt and response as plain text)\n");
    else fprintf(stderr, "chat template: %s (%s)\n", t ? t : "none recognised",
                 override ? "--chat-template" : "from the model's tokenizer files");
}

int model_exists(const char *model) {
    struct stat st;
    if (stat(model, &st)) return 0;
    return gguf_is_path(model) ? S_ISREG(st.st_mode) : S_ISDIR(st.st_mode);
}

static const char convert_usage[] =
    "usage: trainer convert --model FILE.gguf --out DIR [--dtype fp32|bf16]\n"
    "\n"
    "Writes a llama.cpp GGUF file of a Llama model as a Hugging Face checkpoint directory: config.json,\n"
    "model.safetensors (the weights dequantised, q/k rows in Hugging Face's order), tokenizer.json and\n"
    "tokenizer_config.json (with the chat template) from the file's metadata. transformers and every\n"
    "trainer command load the result. (--model FILE.gguf also works directly, without converting.)\n"
    "\n";

int cmd_convert(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *dtype = "fp32", *who = "trainer convert";
    char err[4096];
    llama_model m;
    llama_save_opts so;
    int rc;
    const opt_def defs[] = {
        {"--model", OPT_STR, &model, "FILE", "the GGUF file (general.architecture llama)"},
        {"--out", OPT_STR, &out, "DIR", "where to write the checkpoint"},
        {"--dtype", OPT_STR, &dtype, "T", "fp32 or bf16 (the dequantised weights are exact in fp32)"},
        {NULL, OPT_END, NULL, NULL, NULL}};
    rc = opts_parse(who, convert_usage, defs, argc, argv, 2, NULL, 0, NULL);
    if (rc == 1) return 0;
    if (rc < 0) return 2;
    if (!model || !out) {
        report(who, "--model and --out are required");
        return 2;
    }
    if (!gguf_is_path(model)) {
        report(who, "--model %s: expected a .gguf file (a checkpoint directory needs no conversion)", model);
        return 2;
    }
    if (strcmp(dtype, "fp32") && strcmp(dtype, "bf16")) {
        report(who, "--dtype must be fp32 or bf16");
        return 2;
    }
    if (llama_model_load_gguf(&m, model, err, sizeof err)) return report(who, "%s", err);
    memset(&so, 0, sizeof so);
    so.bf16 = !strcmp(dtype, "bf16");
    so.tokenizer_from = model;   /* tokenizer.json + tokenizer_config.json from the metadata */
    if (mkdir_p(out))
        rc = report(who, "cannot create %s (%s)", out, strerror(errno));
    else if (llama_model_save(&m, out, &so, err, sizeof err))
        rc = report(who, "%s", err);
    else
        fprintf(stderr, "wrote %s: %zu parameters, %d layers, hidden %d, vocab %d (%s)\n", out, m.n_params, m.cfg.num_hidden_layers,
                m.cfg.hidden_size, m.cfg.vocab_size, dtype);
    llama_model_free(&m);
    return rc;
}
