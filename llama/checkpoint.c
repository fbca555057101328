/* llama/checkpoint.c - Hugging Face checkpoint I/O for the Llama model: config.json, and
 * model.safetensors or a sharded model.safetensors.index.json, in both directions.
 *
 * Loading checks everything before reading a tensor byte: the config against what we
 * implement, every tensor's name/shape/dtype against llama_layout(cfg), every file's header
 * against its size (st_open). Missing and unexpected tensors are named.
 *
 * Saving writes every file under a temporary name in the target directory and renames them
 * into place only when all of them are complete, so a crash leaves the old checkpoint (or
 * nothing) rather than a mix.
 */
#define _POSIX_C_SOURCE 200809L /* mkdir, opendir, fsync, getpid */
#include "../util.h"
#include "model.h"
#include "gguf.h"
#include "safetensors.h"
#include "../clair.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>


/* dir + "/" + name into a new string (caller frees), NULL when out of memory. */
static char *path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = (char *)malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}


/* Writes data to "<path>.tmp.<pid>" with fsync; the caller renames it into place. */
static int write_tmp(const char *tmp, const char *data, size_t len, char *err, size_t errsz) {
    FILE *fp = fopen(tmp, "wb");
    if (!fp) return errf(err, errsz, "%s: cannot create: %s", tmp, strerror(errno));
    if (fwrite(data, 1, len, fp) != len || fflush(fp) || fsync(fileno(fp))) {
        fclose(fp);
        remove(tmp);
        return errf(err, errsz, "%s: write failed: %s (disk full?)", tmp, strerror(errno));
    }
    if (fclose(fp)) { remove(tmp); return errf(err, errsz, "%s: write failed: %s", tmp, strerror(errno)); }
    return 0;
}

static int write_atomic(const char *path, const char *data, size_t len, char *err, size_t errsz) {
    char *tmp = (char *)malloc(strlen(path) + 32);
    int rc;
    if (!tmp) return errf(err, errsz, "%s: out of memory", path);
    sprintf(tmp, "%s.tmp.%ld", path, (long)getpid());
    rc = write_tmp(tmp, data, len, err, errsz);
    if (!rc && rename(tmp, path)) {
        rc = errf(err, errsz, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
        remove(tmp);
    }
    free(tmp);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* config.json                                                                                 */

/* Limits far above any Llama that exists (Llama-3.1-405B: D 16384, I 53248, L 126, H 128,
 * V 128256) but low enough that products of them cannot overflow and a typo is caught. */
#define CFG_MAX_VOCAB (1 << 22)
#define CFG_MAX_HIDDEN (1 << 17)
#define CFG_MAX_INTER (1 << 19)
#define CFG_MAX_LAYERS 4096
#define CFG_MAX_HEADS 4096
#define CFG_MAX_HEAD_DIM 4096
#define CFG_MAX_POS (1 << 26)

/* An optional integer member: absent or null leaves *out (returns 0); anything but an exact
 * integer in [lo, hi] is an error naming the field. */
static int cfg_int(const clair_json *o, const char *key, long long lo, long long hi, int required, int *out,
                   const char *what, char *err, size_t errsz) {
    const clair_json *v = clair_json_get(o, key);
    long long x;
    if (!v || v->type == CLAIR_JSON_NULL) {
        if (required) return errf(err, errsz, "%s: \"%s\" is missing (required for a Llama config)", what, key);
        return 0;
    }
    if (clair_json_get_int(o, key, &x))
        return errf(err, errsz, "%s: \"%s\" must be an integer, got a %s", what, key, v->type == CLAIR_JSON_NUMBER ? "non-integral number" : clair_json_type_name(v->type));
    if (x < lo || x > hi)
        return errf(err, errsz, "%s: \"%s\" = %lld is out of the supported range [%lld, %lld]", what, key, x, lo, hi);
    *out = (int)x;
    return 0;
}

static int cfg_num(const clair_json *o, const char *key, double *out, const char *what, char *err, size_t errsz) {
    const clair_json *v = clair_json_get(o, key);
    if (!v || v->type == CLAIR_JSON_NULL) return 0;
    if (v->type != CLAIR_JSON_NUMBER) return errf(err, errsz, "%s: \"%s\" must be a number, got a %s", what, key, clair_json_type_name(v->type));
    *out = v->number;
    return 0;
}

static int cfg_bool(const clair_json *o, const char *key, int *out, const char *what, char *err, size_t errsz) {
    const clair_json *v = clair_json_get(o, key);
    if (!v || v->type == CLAIR_JSON_NULL) return 0;
    if (v->type != CLAIR_JSON_BOOL) return errf(err, errsz, "%s: \"%s\" must be true or false, got a %s", what, key, clair_json_type_name(v->type));
    *out = v->boolean;
    return 0;
}

/* rope_scaling (transformers 4) or rope_parameters (transformers 5): null, "default" or
 * "llama3"; anything else would change the positions' meaning, so it is refused. */
static int cfg_rope(const clair_json *r, const char *field, llama_config *c, const char *what, char *err, size_t errsz) {
    const char *type;
    if (!r || r->type == CLAIR_JSON_NULL) return 0;
    if (r->type != CLAIR_JSON_OBJECT) return errf(err, errsz, "%s: \"%s\" must be an object or null, got a %s", what, field, clair_json_type_name(r->type));
    type = clair_json_get_str(r, "rope_type");
    if (!type) type = clair_json_get_str(r, "type");
    if (!strcmp(field, "rope_parameters")) { /* transformers 5 keeps rope_theta in here */
        if (cfg_num(r, "rope_theta", &c->rope_theta, what, err, errsz)) return -1;
    }
    if (!type || !strcmp(type, "default")) return 0;
    if (strcmp(type, "llama3"))
        return errf(err, errsz, "%s: \"%s\".rope_type = \"%s\" is not supported (only none/\"default\" and \"llama3\")", what, field, type);
    c->rope_llama3 = 1;
    {
        static const char *keys[] = {"factor", "low_freq_factor", "high_freq_factor"};
        double *dst[3];
        int i;
        dst[0] = &c->rope_factor; dst[1] = &c->rope_low_freq_factor; dst[2] = &c->rope_high_freq_factor;
        for (i = 0; i < 3; i++) {
            double x;
            if (clair_json_get_num(r, keys[i], &x) || !(x > 0) || x > 1e6)
                return errf(err, errsz, "%s: \"%s\".%s must be a positive number for llama3 rope scaling", what, field, keys[i]);
            *dst[i] = x;
        }
    }
    if (cfg_int(r, "original_max_position_embeddings", 1, CFG_MAX_POS, 1, &c->rope_original_max_position_embeddings, what, err, errsz))
        return errf(err, errsz, "%s: \"%s\".original_max_position_embeddings must be a positive integer for llama3 rope scaling", what, field);
    if (!(c->rope_high_freq_factor > c->rope_low_freq_factor))
        return errf(err, errsz, "%s: \"%s\": high_freq_factor (%g) must be greater than low_freq_factor (%g)", what, field,
                       c->rope_high_freq_factor, c->rope_low_freq_factor);
    return 0;
}

int llama_config_parse(const char *json, size_t len, const char *what, llama_config *c, char *err, size_t errsz) {
    clair_json root;
    const clair_json *v;
    char jerr[256];
    int rc = -1, head_dim = 0;
    const char *s;

    memset(c, 0, sizeof *c);
    if (!what) what = "config.json";
    if (clair_json_parse(json, len, &root, jerr, sizeof jerr)) return errf(err, errsz, "%s: not valid JSON: %s", what, jerr);
    if (root.type != CLAIR_JSON_OBJECT) { errf(err, errsz, "%s: expected a JSON object, got a %s", what, clair_json_type_name(root.type)); goto done; }

    /* What model is this? Refuse anything that is not a plain Llama. */
    v = clair_json_get(&root, "model_type");
    if (v && (v->type != CLAIR_JSON_STRING || strcmp(v->str, "llama"))) {
        errf(err, errsz, "%s: \"model_type\" is %s%s%s, only \"llama\" is supported", what,
                v->type == CLAIR_JSON_STRING ? "\"" : "", v->type == CLAIR_JSON_STRING ? v->str : clair_json_type_name(v->type),
                v->type == CLAIR_JSON_STRING ? "\"" : "");
        goto done;
    }
    v = clair_json_get(&root, "architectures");
    if (v && v->type != CLAIR_JSON_NULL) {
        size_t i;
        if (v->type != CLAIR_JSON_ARRAY) { errf(err, errsz, "%s: \"architectures\" must be an array", what); goto done; }
        for (i = 0; i < v->n; i++)
            if (v->items[i].type != CLAIR_JSON_STRING || strcmp(v->items[i].str, "LlamaForCausalLM")) {
                errf(err, errsz, "%s: \"architectures\" contains %s%s%s; only \"LlamaForCausalLM\" is supported", what,
                        v->items[i].type == CLAIR_JSON_STRING ? "\"" : "a ",
                        v->items[i].type == CLAIR_JSON_STRING ? v->items[i].str : clair_json_type_name(v->items[i].type),
                        v->items[i].type == CLAIR_JSON_STRING ? "\"" : "");
                goto done;
            }
    }
    s = clair_json_get_str(&root, "hidden_act");
    v = clair_json_get(&root, "hidden_act");
    if (v && v->type != CLAIR_JSON_NULL && (!s || strcmp(s, "silu"))) {
        errf(err, errsz, "%s: \"hidden_act\" is \"%s\"; only \"silu\" (SwiGLU) is supported", what, s ? s : clair_json_type_name(v->type));
        goto done;
    }
    {
        static const char *no[] = {"attention_bias", "mlp_bias"};
        int i, b;
        for (i = 0; i < 2; i++) {
            b = 0;
            if (cfg_bool(&root, no[i], &b, what, err, errsz)) goto done;
            if (b) { errf(err, errsz, "%s: \"%s\" is true; biases in the Llama projections are not supported", what, no[i]); goto done; }
        }
    }

    /* Sizes. */
    if (cfg_int(&root, "vocab_size", 1, CFG_MAX_VOCAB, 1, &c->vocab_size, what, err, errsz) ||
        cfg_int(&root, "hidden_size", 1, CFG_MAX_HIDDEN, 1, &c->hidden_size, what, err, errsz) ||
        cfg_int(&root, "intermediate_size", 1, CFG_MAX_INTER, 1, &c->intermediate_size, what, err, errsz) ||
        cfg_int(&root, "num_hidden_layers", 1, CFG_MAX_LAYERS, 1, &c->num_hidden_layers, what, err, errsz) ||
        cfg_int(&root, "num_attention_heads", 1, CFG_MAX_HEADS, 1, &c->num_attention_heads, what, err, errsz))
        goto done;
    c->num_key_value_heads = c->num_attention_heads; /* transformers' default: plain multi-head */
    if (cfg_int(&root, "num_key_value_heads", 1, CFG_MAX_HEADS, 0, &c->num_key_value_heads, what, err, errsz) ||
        cfg_int(&root, "head_dim", 1, CFG_MAX_HEAD_DIM, 0, &head_dim, what, err, errsz))
        goto done;
    if (c->num_attention_heads % c->num_key_value_heads) {
        errf(err, errsz, "%s: \"num_attention_heads\" (%d) is not a multiple of \"num_key_value_heads\" (%d)", what,
                c->num_attention_heads, c->num_key_value_heads);
        goto done;
    }
    if (head_dim) c->head_dim = head_dim;
    else {
        if (c->hidden_size % c->num_attention_heads) {
            errf(err, errsz, "%s: \"hidden_size\" (%d) is not a multiple of \"num_attention_heads\" (%d) and there is no \"head_dim\"",
                    what, c->hidden_size, c->num_attention_heads);
            goto done;
        }
        c->head_dim = c->hidden_size / c->num_attention_heads;
    }
    if (c->head_dim % 2) { errf(err, errsz, "%s: head_dim %d is odd; rotary embeddings need an even head_dim", what, c->head_dim); goto done; }
    if ((long long)c->num_attention_heads * c->head_dim > CFG_MAX_HIDDEN) {
        errf(err, errsz, "%s: num_attention_heads x head_dim = %lld is absurdly large", what, (long long)c->num_attention_heads * c->head_dim);
        goto done;
    }

    /* Numbers, with transformers' LlamaConfig defaults when absent. */
    {
        double eps = 1e-6;
        if (cfg_num(&root, "rms_norm_eps", &eps, what, err, errsz)) goto done;
        if (!(eps > 0 && eps < 1)) { errf(err, errsz, "%s: \"rms_norm_eps\" = %g must be in (0, 1)", what, eps); goto done; }
        c->rms_norm_eps = (float)eps;
    }
    c->rope_theta = 10000.0;
    c->max_position_embeddings = 2048;
    c->initializer_range = 0.02;
    if (cfg_num(&root, "rope_theta", &c->rope_theta, what, err, errsz) ||
        cfg_int(&root, "max_position_embeddings", 1, CFG_MAX_POS, 0, &c->max_position_embeddings, what, err, errsz) ||
        cfg_num(&root, "initializer_range", &c->initializer_range, what, err, errsz) ||
        cfg_bool(&root, "tie_word_embeddings", &c->tie_word_embeddings, what, err, errsz))
        goto done;
    if (cfg_rope(clair_json_get(&root, "rope_scaling"), "rope_scaling", c, what, err, errsz)) goto done;
    if (cfg_rope(clair_json_get(&root, "rope_parameters"), "rope_parameters", c, what, err, errsz)) goto done;
    if (!(c->rope_theta > 0 && c->rope_theta < 1e12)) { errf(err, errsz, "%s: \"rope_theta\" = %g must be positive", what, c->rope_theta); goto done; }
    if (!(c->initializer_range >= 0 && c->initializer_range < 10)) { errf(err, errsz, "%s: \"initializer_range\" = %g is out of range", what, c->initializer_range); goto done; }

    /* Special token ids: bos an integer or null; eos an integer, a list of them, or null. */
    c->bos_token_id = -1;
    if (cfg_int(&root, "bos_token_id", 0, c->vocab_size - 1, 0, &c->bos_token_id, what, err, errsz)) goto done;
    v = clair_json_get(&root, "eos_token_id");
    if (v && v->type == CLAIR_JSON_ARRAY) {
        size_t i;
        if (v->n > LLAMA_MAX_EOS) { errf(err, errsz, "%s: \"eos_token_id\" lists %zu ids, at most %d supported", what, v->n, LLAMA_MAX_EOS); goto done; }
        for (i = 0; i < v->n; i++) {
            const clair_json *e = &v->items[i];
            if (e->type != CLAIR_JSON_NUMBER || e->number != floor(e->number) || e->number < 0 || e->number >= c->vocab_size) {
                errf(err, errsz, "%s: \"eos_token_id\"[%zu] must be a token id in [0, %d)", what, i, c->vocab_size);
                goto done;
            }
            c->eos_token_ids[c->n_eos++] = (int)e->number;
        }
    } else if (v && v->type != CLAIR_JSON_NULL) {
        int id = -1;
        if (cfg_int(&root, "eos_token_id", 0, c->vocab_size - 1, 0, &id, what, err, errsz)) goto done;
        c->eos_token_ids[c->n_eos++] = id;
    }
    rc = 0;
done:
    clair_json_free(&root);
    return rc;
}

int llama_config_load(const char *path, llama_config *cfg, char *err, size_t errsz) {
    size_t len;
    char *text = read_file(path, 16u << 20, &len, err, errsz);
    int rc;
    if (!text) return -1;
    rc = llama_config_parse(text, len, path, cfg, err, errsz);
    free(text);
    return rc;
}

/* The shortest decimal that reads back as the same float (1e-05, not 9.9999997473787516e-06). */
static void put_float(clair_buf *b, float x) {
    char s[64];
    int p;
    for (p = 6; p <= 9; p++) {
        snprintf(s, sizeof s, "%.*g", p, (double)x);
        if (strtof(s, NULL) == x) break;
    }
    clair_buf_puts(b, s);
}

/* config.json text in transformers' own layout (legacy rope_theta/rope_scaling keys, which
 * transformers 4 reads and transformers 5 converts). dtype: "float32" or "bfloat16". */
static int config_json(const llama_config *c, const char *dtype, clair_buf *b) {
    int i;
    clair_buf_puts(b, "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"attention_bias\": false,\n  \"attention_dropout\": 0.0,\n");
    if (c->bos_token_id >= 0) clair_buf_printf(b, "  \"bos_token_id\": %d,\n", c->bos_token_id);
    else clair_buf_puts(b, "  \"bos_token_id\": null,\n");
    if (c->n_eos == 0) clair_buf_puts(b, "  \"eos_token_id\": null,\n");
    else if (c->n_eos == 1) clair_buf_printf(b, "  \"eos_token_id\": %d,\n", c->eos_token_ids[0]);
    else {
        clair_buf_puts(b, "  \"eos_token_id\": [");
        for (i = 0; i < c->n_eos; i++) clair_buf_printf(b, "%s%d", i ? ", " : "", c->eos_token_ids[i]);
        clair_buf_puts(b, "],\n");
    }
    clair_buf_printf(b, "  \"head_dim\": %d,\n  \"hidden_act\": \"silu\",\n  \"hidden_size\": %d,\n", c->head_dim, c->hidden_size);
    clair_buf_puts(b, "  \"initializer_range\": ");
    clair_json_write_number(b, c->initializer_range);
    clair_buf_printf(b, ",\n  \"intermediate_size\": %d,\n  \"max_position_embeddings\": %d,\n  \"mlp_bias\": false,\n"
                        "  \"model_type\": \"llama\",\n  \"num_attention_heads\": %d,\n  \"num_hidden_layers\": %d,\n"
                        "  \"num_key_value_heads\": %d,\n  \"pretraining_tp\": 1,\n  \"rms_norm_eps\": ",
                     c->intermediate_size, c->max_position_embeddings, c->num_attention_heads, c->num_hidden_layers,
                     c->num_key_value_heads);
    put_float(b, c->rms_norm_eps);
    clair_buf_puts(b, ",\n  \"rope_scaling\": ");
    if (c->rope_llama3) {
        clair_buf_puts(b, "{\n    \"factor\": ");
        clair_json_write_number(b, c->rope_factor);
        clair_buf_puts(b, ",\n    \"high_freq_factor\": ");
        clair_json_write_number(b, c->rope_high_freq_factor);
        clair_buf_puts(b, ",\n    \"low_freq_factor\": ");
        clair_json_write_number(b, c->rope_low_freq_factor);
        clair_buf_printf(b, ",\n    \"original_max_position_embeddings\": %d,\n    \"rope_type\": \"llama3\"\n  }",
                         c->rope_original_max_position_embeddings);
    } else {
        clair_buf_puts(b, "null");
    }
    clair_buf_puts(b, ",\n  \"rope_theta\": ");
    clair_json_write_number(b, c->rope_theta);
    clair_buf_printf(b, ",\n  \"tie_word_embeddings\": %s,\n  \"torch_dtype\": \"%s\",\n  \"use_cache\": true,\n  \"vocab_size\": %d\n}\n",
                     c->tie_word_embeddings ? "true" : "false", dtype, c->vocab_size);
    return b->oom ? -1 : 0;
}

int llama_config_save(const llama_config *cfg, const char *path, char *err, size_t errsz) {
    clair_buf b;
    int rc;
    memset(&b, 0, sizeof b);
    if (config_json(cfg, "float32", &b)) { clair_buf_free(&b); return errf(err, errsz, "%s: out of memory", path); }
    rc = write_atomic(path, b.data, b.len, err, errsz);
    clair_buf_free(&b);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Loading tensors                                                                             */

/* A shard file name from an index must be a plain file name inside the checkpoint dir. */
static int safe_file_name(const char *s) {
    return s[0] && s[0] != '.' && !strchr(s, '/') && !strchr(s, '\\');
}

/* Old conversions carry the rotary cache as a buffer; transformers ignores it, and so do we. */
static int ignorable_tensor(const char *name) {
    const char *s = strstr(name, ".rotary_emb.inv_freq");
    return s && s[strlen(".rotary_emb.inv_freq")] == 0;
}

typedef struct {
    int n_files, cap;
    char **files;       /* [n_files] shard file names, each once */
    st_file *st;        /* [n_files] */
} shard_set;

static void shards_free(shard_set *s) {
    int i;
    for (i = 0; i < s->n_files; i++) {
        st_close(&s->st[i]);
        free(s->files[i]);
    }
    free(s->files);
    free(s->st);
    memset(s, 0, sizeof *s);
}

/* Appends a file name (the caller makes sure it is not there yet). */
static int shards_add(shard_set *s, const char *name) {
    if (s->n_files == s->cap) {
        int cap = s->cap ? 2 * s->cap : 4;
        char **nf = (char **)realloc(s->files, (size_t)cap * sizeof *nf);
        st_file *ns;
        if (!nf) return -1;
        s->files = nf;
        ns = (st_file *)realloc(s->st, (size_t)cap * sizeof *ns);
        if (!ns) return -1;
        s->st = ns;
        s->cap = cap;
    }
    memset(&s->st[s->n_files], 0, sizeof *s->st);
    s->files[s->n_files] = (char *)malloc(strlen(name) + 1);
    if (!s->files[s->n_files]) return -1;
    strcpy(s->files[s->n_files], name);
    return s->n_files++;
}

/* The index's weight_map, checked: *keys gets its tensor names sorted (for lookups; a name may
 * appear once), and s the shard files, each once, in the order of their first mention. Sorting
 * keeps this n log n: an index may name hundreds of thousands of files. */
static int index_files(const char *index_path, const clair_json *wm, shard_set *s, st_name **keys,
                       char *err, size_t errsz) {
    st_name *files = (st_name *)calloc(wm->n + 1, sizeof *files);
    unsigned char *first = (unsigned char *)calloc(wm->n + 1, 1);
    size_t i;
    int rc = -1;
    *keys = (st_name *)calloc(wm->n + 1, sizeof **keys);
    if (!files || !first || !*keys || wm->n > INT_MAX) { errf(err, errsz, "%s: out of memory", index_path); goto done; }
    for (i = 0; i < wm->n; i++) {
        const clair_json *f = &wm->items[i];
        if (wm->key_lens[i] != strlen(wm->keys[i])) {
            errf(err, errsz, "%s: weight_map has a tensor name with a NUL character", index_path);
            goto done;
        }
        if (f->type != CLAIR_JSON_STRING || !safe_file_name(f->str) || f->len != strlen(f->str)) {
            errf(err, errsz, "%s: weight_map[\"%.80s\"] must be a file name inside the checkpoint directory", index_path, wm->keys[i]);
            goto done;
        }
        (*keys)[i].name = wm->keys[i];
        (*keys)[i].i = (int)i;
        files[i].name = f->str;
        files[i].i = (int)i;
    }
    st_names_sort(*keys, wm->n);
    for (i = 1; i < wm->n; i++)
        if (!strcmp((*keys)[i - 1].name, (*keys)[i].name)) {
            errf(err, errsz, "%s: weight_map lists tensor '%.80s' twice", index_path, (*keys)[i].name);
            goto done;
        }
    st_names_sort(files, wm->n);
    for (i = 0; i < wm->n; i++) /* ties are sorted by position: the first of a run is the first mention */
        if (i == 0 || strcmp(files[i - 1].name, files[i].name)) first[files[i].i] = 1;
    for (i = 0; i < wm->n; i++)
        if (first[i] && shards_add(s, wm->items[i].str) < 0) { errf(err, errsz, "%s: out of memory", index_path); goto done; }
    rc = 0;
done:
    free(files);
    free(first);
    return rc;
}

/* Reads the index's weight_map: the set of shard files and, for checking, the map itself with
 * its names sorted (*keys, weight_map->n of them). */
static int read_index(const char *index_path, shard_set *s, clair_json *map_root, const clair_json **weight_map,
                      st_name **keys, char *err, size_t errsz) {
    size_t len;
    char jerr[256];
    char *text = read_file(index_path, 64u << 20, &len, err, errsz);
    const clair_json *wm;
    if (!text) return -1;
    if (clair_json_parse(text, len, map_root, jerr, sizeof jerr)) {
        free(text);
        return errf(err, errsz, "%s: not valid JSON: %s", index_path, jerr);
    }
    free(text);
    wm = clair_json_get(map_root, "weight_map");
    if (!wm || wm->type != CLAIR_JSON_OBJECT)
        return errf(err, errsz, "%s: missing \"weight_map\" object", index_path);
    if (index_files(index_path, wm, s, keys, err, errsz)) return -1;
    *weight_map = wm;
    return 0;
}

/* Stored tensors matched against the layout config.json implies. Every lookup is a binary
 * search in a sorted table: a crafted checkpoint with 100k tensors and a 4096-layer config
 * must fail (or load) in n log n, not n^2. */
typedef struct {
    const char *dir;
    const llama_config *cfg;
    const llama_tensor_info *lay;  /* [lay_n] */
    int lay_n;
    const shard_set *sh;
    const clair_json *weight_map;  /* NULL without an index */
    const st_name *wm_keys;        /* [weight_map->n] its tensor names, sorted */
    /* every stored tensor of every file has a number g = base[file] + its place in the file */
    int n_stored;
    int *base;                     /* [n_files] */
    st_name *stored;               /* [n_stored] sorted by name */
    unsigned char *used;           /* [n_stored] matched to the layout */
    /* results */
    int *where;                    /* [lay_n] file of each layout tensor */
    const st_tensor **found;       /* [lay_n] */
    const st_tensor *tied_head;    /* a stored lm_head.weight of a tied config, to compare */
    int tied_head_file, n_ignored;
} tensor_match;

static void match_free(tensor_match *tm) {
    free(tm->base);
    free(tm->stored);
    free(tm->used);
    free(tm->where);
    free(tm->found);
}

/* The file of stored tensor g. */
static int match_file_of(const tensor_match *tm, int g) {
    int lo = 0, hi = tm->sh->n_files - 1;
    while (lo < hi) { /* the last file whose base is <= g */
        int mid = lo + (hi - lo + 1) / 2;
        if (tm->base[mid] <= g) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* Numbers and sorts every stored tensor; a name stored in two files is an error. */
static int match_index_stored(tensor_match *tm, char *err, size_t errsz) {
    const shard_set *sh = tm->sh;
    long long total = 0;
    int j, i, g = 0;
    tm->base = (int *)calloc((size_t)sh->n_files + 1, sizeof *tm->base);
    if (!tm->base) return errf(err, errsz, "%s: out of memory loading the checkpoint", tm->dir);
    for (j = 0; j < sh->n_files; j++) {
        tm->base[j] = (int)total;
        total += sh->st[j].n;
        if (total > INT_MAX) return errf(err, errsz, "%s: more than %d tensors in all", tm->dir, INT_MAX);
    }
    tm->n_stored = (int)total;
    tm->stored = (st_name *)calloc((size_t)total + 1, sizeof *tm->stored);
    tm->used = (unsigned char *)calloc((size_t)total + 1, 1);
    tm->where = (int *)calloc((size_t)tm->lay_n + 1, sizeof *tm->where);
    tm->found = (const st_tensor **)calloc((size_t)tm->lay_n + 1, sizeof *tm->found);
    if (!tm->stored || !tm->used || !tm->where || !tm->found) return errf(err, errsz, "%s: out of memory loading the checkpoint", tm->dir);
    for (j = 0; j < sh->n_files; j++)
        for (i = 0; i < sh->st[j].n; i++, g++) {
            tm->stored[g].name = sh->st[j].tensors[i].name;
            tm->stored[g].i = g;
        }
    st_names_sort(tm->stored, (size_t)total);
    for (g = 1; g < tm->n_stored; g++)
        if (!strcmp(tm->stored[g - 1].name, tm->stored[g].name))
            return errf(err, errsz, "%s: tensor '%s' is stored twice (in %s and %s)", tm->dir, tm->stored[g].name,
                        sh->files[match_file_of(tm, tm->stored[g - 1].i)], sh->files[match_file_of(tm, tm->stored[g].i)]);
    return 0;
}

/* Shape and dtype of stored tensor t against layout tensor ti. */
static int match_check_shape(const tensor_match *tm, const llama_tensor_info *ti, const st_tensor *t, int file,
                             char *err, size_t errsz) {
    int k, shape_ok = t->ndim == ti->ndim;
    for (k = 0; shape_ok && k < ti->ndim; k++) shape_ok = t->shape[k] == ti->shape[k];
    if (!shape_ok) {
        char want[64], got[128];
        int o = 0;
        snprintf(want, sizeof want, ti->ndim == 1 ? "[%lld]" : "[%lld, %lld]", (long long)ti->shape[0], (long long)(ti->ndim > 1 ? ti->shape[1] : 0));
        o += snprintf(got + o, sizeof got - (size_t)o, "[");
        for (k = 0; k < t->ndim && o < 100; k++) o += snprintf(got + o, sizeof got - (size_t)o, "%s%lld", k ? ", " : "", (long long)t->shape[k]);
        snprintf(got + o, sizeof got - (size_t)o, "]");
        return errf(err, errsz, "%s/%s: tensor '%s' has shape %s, but config.json implies %s", tm->dir, tm->sh->files[file], ti->name, got, want);
    }
    if (strcmp(t->dtype, "F32") && strcmp(t->dtype, "BF16") && strcmp(t->dtype, "F16"))
        return errf(err, errsz, "%s/%s: tensor '%s' has dtype %s; only F32, BF16 and F16 are supported", tm->dir, tm->sh->files[file], ti->name, t->dtype);
    return 0;
}

/* Match every layout tensor to exactly one stored tensor; check shape, dtype and the index. */
static int match_layout(tensor_match *tm, char *err, size_t errsz) {
    int i, n_missing = 0;
    char first_missing[96] = "";
    if (match_index_stored(tm, err, errsz)) return -1;
    for (i = 0; i < tm->lay_n; i++) {
        const llama_tensor_info *ti = &tm->lay[i];
        int g = st_names_find(tm->stored, (size_t)tm->n_stored, ti->name), file;
        tm->where[i] = -1;
        if (g < 0) {
            if (!n_missing++) snprintf(first_missing, sizeof first_missing, "%s", ti->name);
            continue;
        }
        file = match_file_of(tm, g);
        tm->used[g] = 1;
        tm->where[i] = file;
        tm->found[i] = &tm->sh->st[file].tensors[g - tm->base[file]];
        if (tm->weight_map) {
            int q = st_names_find(tm->wm_keys, tm->weight_map->n, ti->name);
            const char *wf = q >= 0 ? tm->weight_map->items[q].str : NULL;
            if (!wf || strcmp(wf, tm->sh->files[file]))
                return errf(err, errsz, "%s: model.safetensors.index.json maps '%s' to %s but it is stored in %s", tm->dir, ti->name,
                            wf ? wf : "(nothing)", tm->sh->files[file]);
        }
        if (match_check_shape(tm, ti, tm->found[i], file, err, errsz)) return -1;
    }
    if (n_missing)
        return errf(err, errsz, "%s: %d tensor(s) that config.json requires are missing, first '%s'%s", tm->dir, n_missing, first_missing,
                    strcmp(first_missing, "lm_head.weight") ? ""
                    : " (the checkpoint may have tied embeddings: set \"tie_word_embeddings\": true in config.json)");
    return 0;
}

/* Every stored tensor must be one we expect: an unexpected one means the config and the
 * weights disagree (another architecture, extra biases, ...), which must not pass silently.
 * And the index lists nothing that is not there. */
static int match_leftovers(tensor_match *tm, char *err, size_t errsz) {
    const llama_config *cfg = tm->cfg;
    const shard_set *sh = tm->sh;
    int j, i, g = 0;
    for (j = 0; j < sh->n_files; j++) {
        for (i = 0; i < sh->st[j].n; i++, g++) {
            const st_tensor *t = &sh->st[j].tensors[i];
            if (tm->used[g]) continue;
            if (ignorable_tensor(t->name)) { tm->n_ignored++; continue; }
            if (cfg->tie_word_embeddings && !strcmp(t->name, "lm_head.weight") && t->ndim == 2 &&
                t->shape[0] == cfg->vocab_size && t->shape[1] == cfg->hidden_size &&
                (!strcmp(t->dtype, "F32") || !strcmp(t->dtype, "BF16") || !strcmp(t->dtype, "F16"))) {
                tm->tied_head = t;
                tm->tied_head_file = j;
                continue;
            }
            if (tm->weight_map && st_names_find(tm->wm_keys, tm->weight_map->n, t->name) < 0)
                return errf(err, errsz, "%s/%s: tensor '%s' is not listed in model.safetensors.index.json", tm->dir, sh->files[j], t->name);
            return errf(err, errsz, "%s/%s: unexpected tensor '%s' (shape ndim %d, %s): not part of a Llama model with this config.json "
                        "(%d layers%s)", tm->dir, sh->files[j], t->name, t->ndim, t->dtype, cfg->num_hidden_layers,
                        cfg->tie_word_embeddings ? ", tied embeddings" : ", untied embeddings");
        }
    }
    if (tm->weight_map) {
        const clair_json *wm = tm->weight_map;
        size_t q;
        for (q = 0; q < wm->n; q++) {
            int g2 = st_names_find(tm->stored, (size_t)tm->n_stored, wm->keys[q]);
            if (g2 < 0 || strcmp(sh->files[match_file_of(tm, g2)], wm->items[q].str))
                return errf(err, errsz, "%s: model.safetensors.index.json lists '%s' in %s, but that file does not contain it", tm->dir,
                            wm->keys[q], wm->items[q].str);
        }
    }
    return 0;
}

int llama_model_load(llama_model *m, const char *dir, char *err, size_t errsz) {
    llama_config cfg;
    shard_set sh;
    clair_json index;
    tensor_match tm;
    st_name *wm_keys = NULL;                 /* the index's tensor names, sorted */
    const clair_json *weight_map = NULL;
    char *path = NULL, *index_path = NULL;
    int i, rc = -1, lay_n = 0;
    llama_tensor_info *lay = NULL;           /* [lay_n] what config.json implies */

    /* a llama.cpp file instead of a directory: the same model, dequantised (llama/gguf.h) */
    if (gguf_is_path(dir)) return llama_model_load_gguf(m, dir, err, errsz);
    memset(m, 0, sizeof *m);
    memset(&sh, 0, sizeof sh);
    memset(&index, 0, sizeof index);
    memset(&tm, 0, sizeof tm);

    path = path_join(dir, "config.json");
    if (!path) return errf(err, errsz, "%s: out of memory", dir);
    if (llama_config_load(path, &cfg, err, errsz)) goto done;
    /* The tensor table first, and no parameter memory until every tensor has been checked:
     * a config.json that lies about the sizes must not cost a huge allocation. */
    lay_n = llama_layout(&cfg, NULL, NULL);
    lay = (llama_tensor_info *)calloc((size_t)lay_n + 1, sizeof *lay);
    if (!lay) { errf(err, errsz, "%s: out of memory loading the checkpoint", dir); goto done; }
    llama_layout(&cfg, lay, NULL);

    /* Which files: model.safetensors when present, else the index, in transformers' order
     * of preference (its from_pretrained looks for the single file first). */
    index_path = path_join(dir, "model.safetensors.index.json");
    if (!index_path) { errf(err, errsz, "%s: out of memory loading the checkpoint", dir); goto done; }
    {
        char *single = path_join(dir, "model.safetensors");
        int have_single = single && file_exists(single);
        struct stat ist;
        free(single);
        /* an index that is there but not a file (a directory, a FIFO): read_file says so */
        if (!have_single && stat(index_path, &ist) == 0) {
            if (read_index(index_path, &sh, &index, &weight_map, &wm_keys, err, errsz)) goto done;
        } else if (shards_add(&sh, "model.safetensors") < 0) {
            errf(err, errsz, "%s: out of memory loading the checkpoint", dir);
            goto done;
        }
    }
    for (i = 0; i < sh.n_files; i++) {
        char *p = path_join(dir, sh.files[i]);
        struct stat st;
        int r;
        if (!p) { errf(err, errsz, "%s: out of memory loading the checkpoint", dir); goto done; }
        if (!weight_map && stat(p, &st) && errno == ENOENT) { /* anything else there: st_open says what it is */
            errf(err, errsz, "%s: no model.safetensors or model.safetensors.index.json (only safetensors checkpoints are supported)", dir);
            free(p);
            goto done;
        }
        r = st_open(&sh.st[i], p, err, errsz);
        free(p);
        if (r) goto done;
    }

    tm.dir = dir;
    tm.cfg = &cfg;
    tm.lay = lay;
    tm.lay_n = lay_n;
    tm.sh = &sh;
    tm.weight_map = weight_map;
    tm.wm_keys = wm_keys;
    tm.tied_head_file = -1;
    if (match_layout(&tm, err, errsz) || match_leftovers(&tm, err, errsz)) goto done;

    /* All checks passed: allocate and read. */
    if (llama_model_alloc(m, &cfg, err, errsz)) goto done;
    if (m->n_tensors != lay_n) { errf(err, errsz, "internal error: layout changed"); goto done; }
    for (i = 0; i < m->n_tensors; i++)
        if (st_read_f32(&sh.st[tm.where[i]], tm.found[i], m->params + m->tensors[i].offset, err, errsz)) goto done;

    /* A tied checkpoint that still stores lm_head.weight: transformers 5 keeps it tied when the
     * two are equal and silently unties them when they differ. We cannot untie, so refuse. */
    if (tm.tied_head) {
        size_t n = (size_t)cfg.vocab_size * (size_t)cfg.hidden_size, q;
        float *tmp = (float *)malloc(n * sizeof *tmp);
        if (!tmp) { errf(err, errsz, "%s: out of memory loading the checkpoint", dir); goto done; }
        if (st_read_f32(&sh.st[tm.tied_head_file], tm.tied_head, tmp, err, errsz)) { free(tmp); goto done; }
        for (q = 0; q < n; q++)
            if (memcmp(&tmp[q], &m->w.embed_tokens[q], sizeof(float))) break;
        free(tmp);
        if (q < n) {
            errf(err, errsz, "%s: config.json says tie_word_embeddings=true but lm_head.weight differs from model.embed_tokens.weight "
                    "(element %zu); set \"tie_word_embeddings\": false in config.json if the head is meant to be separate", dir, q);
            goto done;
        }
    }
    if (tm.n_ignored) fprintf(stderr, "llama_model_load: %s: ignored %d rotary_emb.inv_freq buffer(s) (recomputed from the config)\n", dir, tm.n_ignored);
    rc = 0;
done:
    if (rc) llama_model_free(m);
    shards_free(&sh);
    clair_json_free(&index);
    match_free(&tm);
    free(wm_keys);
    free(lay);
    free(path);
    free(index_path);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Saving                                                                                      */

typedef struct { const llama_model *m; const int *tensor_of; int bf16; } save_ctx;

/* Produces a chunk of tensor i's bytes from the fp32 parameters, converting to BF16 if asked. */
static int fill_tensor(void *vctx, int i, size_t at, void *buf, size_t nbytes) {
    const save_ctx *c = (const save_ctx *)vctx;
    const llama_tensor_info *ti = &c->m->tensors[c->tensor_of[i]];
    const float *src = c->m->params + ti->offset;
    size_t k;
    if (!c->bf16) {
        unsigned char *d = (unsigned char *)buf;
        src += at / 4;
        for (k = 0; k < nbytes / 4; k++) { /* little-endian whatever the host */
            uint32_t u;
            memcpy(&u, &src[k], 4);
            d[4 * k] = (unsigned char)u; d[4 * k + 1] = (unsigned char)(u >> 8);
            d[4 * k + 2] = (unsigned char)(u >> 16); d[4 * k + 3] = (unsigned char)(u >> 24);
        }
    } else {
        unsigned char *d = (unsigned char *)buf;
        src += at / 2;
        for (k = 0; k < nbytes / 2; k++) {
            uint16_t h = st_f32_to_bf16(src[k]);
            d[2 * k] = (unsigned char)h;
            d[2 * k + 1] = (unsigned char)(h >> 8);
        }
    }
    return 0;
}

#define MAX_OUT_FILES 4096

typedef struct { char *final_path, *tmp_path; } pending_file;

static int pending_add(pending_file *p, int *n, const char *dir, const char *name) {
    char tmpname[300];
    if (*n >= MAX_OUT_FILES) return -1;
    snprintf(tmpname, sizeof tmpname, ".%s.partial.%ld", name, (long)getpid());
    p[*n].final_path = path_join(dir, name);
    p[*n].tmp_path = path_join(dir, tmpname);
    if (!p[*n].final_path || !p[*n].tmp_path) return -1;
    return (*n)++;
}

/* Removes model files of an earlier save that this one does not overwrite (a stale
 * model.safetensors beside a new index would be loaded instead of it). */
static void remove_stale(const char *dir, const pending_file *p, int n) {
    DIR *d = opendir(dir);
    struct dirent *e;
    if (!d) return;
    while ((e = readdir(d))) {
        const char *s = e->d_name;
        size_t L = strlen(s);
        int ours = 0, i, is_model = !strcmp(s, "model.safetensors") || !strcmp(s, "model.safetensors.index.json") ||
                                     (L == strlen("model-00001-of-00002.safetensors") && !strncmp(s, "model-", 6) &&
                                      !strcmp(s + L - 12, ".safetensors") && strstr(s, "-of-"));
        if (!is_model) continue;
        for (i = 0; i < n && !ours; i++) {
            const char *b = strrchr(p[i].final_path, '/');
            ours = b && !strcmp(b + 1, s);
        }
        if (!ours) {
            char *full = path_join(dir, s);
            if (full) { remove(full); free(full); }
        }
    }
    closedir(d);
}

/* tokenizer.json and tokenizer_config.json built from a GGUF file's metadata. */
static int gguf_tokenizer_files(const char *gguf, const char *dir, pending_file *pend, int *n_pend, char *err, size_t errsz) {
    char *text[2] = {NULL, NULL};
    size_t len[2];
    int k, j, rc = -1;
    if (gguf_tokenizer_json(gguf, &text[0], &len[0], &text[1], &len[1], err, errsz)) return -1;
    for (j = 0; j < 2; j++) {
        if ((k = pending_add(pend, n_pend, dir, j ? "tokenizer_config.json" : "tokenizer.json")) < 0) { errf(err, errsz, "out of memory"); goto done; }
        if (write_tmp(pend[k].tmp_path, text[j], len[j], err, errsz)) goto done;
    }
    rc = 0;
done:
    free(text[0]);
    free(text[1]);
    return rc;
}

static int copy_file(const char *src, const char *dst_tmp, char *err, size_t errsz) {
    size_t len;
    char *data = read_file(src, (size_t)1 << 31, &len, err, errsz);
    int rc;
    if (!data) return -1;
    rc = write_tmp(dst_tmp, data, len, err, errsz);
    free(data);
    return rc;
}

int llama_model_save(const llama_model *m, const char *dir, const llama_save_opts *opts, char *err, size_t errsz) {
    static const char *tok_files[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                      "generation_config.json", "tokenizer.model", "chat_template.jinja"};
    llama_save_opts o;
    pending_file *pend = NULL;
    int n_pend = 0, i, rc = -1, n_shards = 0, n_tok = 0;
    int *shard_of = NULL, *tensor_of = NULL;
    st_write_tensor *wt = NULL;
    size_t es, total = 0, max_shard;
    clair_buf b;
    struct stat st;

    memset(&b, 0, sizeof b);
    if (opts) o = *opts;
    else memset(&o, 0, sizeof o);
    es = o.bf16 ? 2 : 4;
    max_shard = o.max_shard_bytes ? o.max_shard_bytes : (size_t)5000000000ull; /* transformers' "5GB" */

    if (mkdir(dir, 0755) && errno != EEXIST) return errf(err, errsz, "%s: cannot create directory: %s", dir, strerror(errno));
    if (stat(dir, &st) || !S_ISDIR(st.st_mode)) return errf(err, errsz, "%s: exists and is not a directory", dir);

    pend = (pending_file *)calloc(MAX_OUT_FILES, sizeof *pend);
    shard_of = (int *)calloc((size_t)m->n_tensors + 1, sizeof *shard_of);
    tensor_of = (int *)calloc((size_t)m->n_tensors + 1, sizeof *tensor_of);
    wt = (st_write_tensor *)calloc((size_t)m->n_tensors + 1, sizeof *wt);
    if (!pend || !shard_of || !tensor_of || !wt) { errf(err, errsz, "out of memory"); goto done; }

    /* Shards: tensors in layout order, a new shard when the next tensor would exceed the limit
     * (a tensor larger than the limit gets a shard of its own, as in transformers). */
    {
        size_t cur = 0;
        for (i = 0; i < m->n_tensors; i++) {
            size_t bytes = m->tensors[i].numel * es;
            if (i == 0 || (cur > 0 && cur + bytes > max_shard)) { n_shards++; cur = 0; }
            shard_of[i] = n_shards - 1;
            cur += bytes;
            total += bytes;
        }
        if (n_shards > 99999) { errf(err, errsz, "%s: %d shards; raise max_shard_bytes", dir, n_shards); goto done; }
    }

    /* Each shard: its own safetensors file, written to a temporary name. */
    for (int s = 0; s < n_shards; s++) {
        char name[64];
        int nt = 0, k;
        save_ctx ctx;
        if (n_shards == 1) snprintf(name, sizeof name, "model.safetensors");
        else snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
        if ((k = pending_add(pend, &n_pend, dir, name)) < 0) { errf(err, errsz, "out of memory"); goto done; }
        for (i = 0; i < m->n_tensors; i++) {
            if (shard_of[i] != s) continue;
            wt[nt].name = m->tensors[i].name;
            wt[nt].dtype = o.bf16 ? "BF16" : "F32";
            wt[nt].ndim = m->tensors[i].ndim;
            wt[nt].shape[0] = m->tensors[i].shape[0];
            wt[nt].shape[1] = m->tensors[i].ndim > 1 ? m->tensors[i].shape[1] : 0;
            tensor_of[nt] = i;
            nt++;
        }
        ctx.m = m;
        ctx.tensor_of = tensor_of;
        ctx.bf16 = o.bf16;
        if (st_write_fn(pend[k].tmp_path, wt, nt, "{\"format\":\"pt\"}", fill_tensor, &ctx, err, errsz)) goto done;
    }

    /* The index, as transformers writes it: metadata.total_size and weight_map. */
    if (n_shards > 1) {
        int k;
        clair_buf_printf(&b, "{\n  \"metadata\": {\n    \"total_parameters\": %zu,\n    \"total_size\": %zu\n  },\n  \"weight_map\": {\n",
                         m->n_params, total);
        for (i = 0; i < m->n_tensors; i++) {
            char name[64];
            snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", shard_of[i] + 1, n_shards);
            clair_buf_puts(&b, "    ");
            clair_json_write_string(&b, m->tensors[i].name, strlen(m->tensors[i].name));
            clair_buf_puts(&b, ": ");
            clair_json_write_string(&b, name, strlen(name));
            clair_buf_puts(&b, i + 1 < m->n_tensors ? ",\n" : "\n");
        }
        clair_buf_puts(&b, "  }\n}\n");
        if (b.oom || (k = pending_add(pend, &n_pend, dir, "model.safetensors.index.json")) < 0) { errf(err, errsz, "out of memory"); goto done; }
        if (write_tmp(pend[k].tmp_path, b.data, b.len, err, errsz)) goto done;
        clair_buf_free(&b);
    }

    /* config.json */
    {
        int k;
        memset(&b, 0, sizeof b);
        if (config_json(&m->cfg, o.bf16 ? "bfloat16" : "float32", &b) || (k = pending_add(pend, &n_pend, dir, "config.json")) < 0) {
            errf(err, errsz, "out of memory");
            goto done;
        }
        if (write_tmp(pend[k].tmp_path, b.data, b.len, err, errsz)) goto done;
        clair_buf_free(&b);
    }

    /* Tokenizer files, unless they are already there (saving into the directory we loaded). */
    if (o.tokenizer_from) {
        struct stat s1, s2;
        int same = stat(o.tokenizer_from, &s1) == 0 && stat(dir, &s2) == 0 && s1.st_dev == s2.st_dev && s1.st_ino == s2.st_ino;
        if (gguf_is_path(o.tokenizer_from)) {
            if (gguf_tokenizer_files(o.tokenizer_from, dir, pend, &n_pend, err, errsz)) goto done;
        } else if (!same) {
            for (i = 0; i < (int)(sizeof tok_files / sizeof tok_files[0]); i++) {
                char *src = path_join(o.tokenizer_from, tok_files[i]);
                int k;
                if (!src) { errf(err, errsz, "out of memory"); goto done; }
                if (!file_exists(src)) { free(src); continue; }
                if ((k = pending_add(pend, &n_pend, dir, tok_files[i])) < 0) { free(src); errf(err, errsz, "out of memory"); goto done; }
                if (copy_file(src, pend[k].tmp_path, err, errsz)) { free(src); goto done; }
                free(src);
                n_tok++;
            }
            if (!n_tok) {
                errf(err, errsz, "%s: no tokenizer files (tokenizer.json, tokenizer_config.json, ...) to copy", o.tokenizer_from);
                goto done;
            }
        }
    }

    /* Everything is complete on disk: now make it visible. Weights first, config last, so a
     * reader that sees the new config.json sees the new weights. */
    remove_stale(dir, pend, n_pend);
    for (i = 0; i < n_pend; i++)
        if (rename(pend[i].tmp_path, pend[i].final_path)) {
            errf(err, errsz, "%s: cannot rename into place: %s", pend[i].final_path, strerror(errno));
            goto done;
        }
    {   /* make the renames themselves durable */
        int fd = open(dir, O_RDONLY);
        if (fd >= 0) { fsync(fd); close(fd); }
    }
    rc = 0;
done:
    for (i = 0; i < n_pend; i++) {
        if (rc) remove(pend[i].tmp_path); /* nothing half-written stays behind */
        free(pend[i].final_path);
        free(pend[i].tmp_path);
    }
    free(pend);
    free(shard_of);
    free(tensor_of);
    free(wt);
    clair_buf_free(&b);
    return rc;
}
