/* train/hub.c - Hugging Face model ids: the local cache, and downloads into it (see hub.h).
 *
 * What huggingface_hub does, and so what this file does, for `ORG/NAME@REV`:
 *   1. REV names a commit: itself when it is 40 hex digits, else the commit in refs/REV.
 *   2. Online, the hub is asked first (GET /api/models/ORG/NAME/revision/REV: the commit and the
 *      file list), then each file the trainer needs that the snapshot lacks is looked up with
 *      HEAD /ORG/NAME/resolve/COMMIT/FILE (ETag or X-Linked-Etag, X-Linked-Size; LFS files answer
 *      with a redirect to their storage) and fetched into blobs/ETAG.incomplete, resumed with
 *      Range after a dropped connection, checked against the ETag, renamed to blobs/ETAG, and
 *      linked from snapshots/COMMIT/FILE. refs/REV is written last. An optional file the model
 *      does not have gets an empty marker .no_exist/COMMIT/FILE, as the Python tools write.
 *   3. When the hub cannot be reached or refuses (but not for an unknown revision), a complete
 *      snapshot already in the cache is used, with a note; HF_HUB_OFFLINE=1 skips step 2.
 * Concurrent downloads of one blob (two trainers, or the trainer and Python) are serialised by
 * flock on CACHE/.locks/models--ORG--NAME/ETAG.lock, the lock file huggingface_hub uses.
 */
#define _DEFAULT_SOURCE /* flock */
#define _POSIX_C_SOURCE 200809L

#include "hub.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../clair.h"
#include "../util.h"
#ifdef TRAIN_HUB_CURL
#include <curl/curl.h>
#endif

#define PATHSZ 4096
#define MAX_FILES 512 /* files fetched for one model: the fixed ones + the shards of the index */

#ifdef TRAIN_HUB_CURL /* the checksums, the cache writers and HTTP: what downloading needs */
/* ==========================================================================================
 * Checksums: an ETag is the sha256 of an LFS file, or git's sha1 of "blob SIZE\0" + content
 * ========================================================================================== */

typedef struct {
    uint32_t h[8];
    uint64_t len; /* bytes hashed so far */
    unsigned char buf[64];
    size_t n; /* bytes waiting in buf */
    int sha1; /* 1: SHA-1, 0: SHA-256 */
} digest;

#define ROL(x, n) (((x) << (n)) | ((x) >> (32 - (n))))
#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void sha256_block(uint32_t h[8], const unsigned char *p) {
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    uint32_t w[64], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    int i;
    for (i = 0; i < 16; i++) w[i] = be32(p + 4 * i);
    for (i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    for (i = 0; i < 64; i++) {
        uint32_t t1 = hh + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
}

static void sha1_block(uint32_t h[8], const unsigned char *p) {
    uint32_t w[80], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    int i;
    for (i = 0; i < 16; i++) w[i] = be32(p + 4 * i);
    for (i = 16; i < 80; i++) w[i] = ROL(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    for (i = 0; i < 80; i++) {
        uint32_t f, k, t;
        if (i < 20)
            f = (b & c) | (~b & d), k = 0x5a827999;
        else if (i < 40)
            f = b ^ c ^ d, k = 0x6ed9eba1;
        else if (i < 60)
            f = (b & c) | (b & d) | (c & d), k = 0x8f1bbcdc;
        else
            f = b ^ c ^ d, k = 0xca62c1d6;
        t = ROL(a, 5) + f + e + k + w[i];
        e = d, d = c, c = ROL(b, 30), b = a, a = t;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
}

static void digest_init(digest *d, int sha1) {
    static const uint32_t iv256[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    static const uint32_t iv1[8] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0, 0, 0, 0};
    memcpy(d->h, sha1 ? iv1 : iv256, sizeof d->h);
    d->len = 0;
    d->n = 0;
    d->sha1 = sha1;
}

static void digest_update(digest *d, const void *data, size_t n) {
    const unsigned char *p = (const unsigned char *)data;
    d->len += n;
    while (n > 0) {
        size_t take = 64 - d->n < n ? 64 - d->n : n;
        memcpy(d->buf + d->n, p, take);
        d->n += take, p += take, n -= take;
        if (d->n == 64) {
            if (d->sha1)
                sha1_block(d->h, d->buf);
            else
                sha256_block(d->h, d->buf);
            d->n = 0;
        }
    }
}

/* The digest as lowercase hex into hex (65 bytes). */
static void digest_hex(digest *d, char *hex) {
    unsigned char pad[72];
    uint64_t bits = d->len * 8;
    size_t padn = (d->n < 56 ? 56 : 120) - d->n, i;
    int words = d->sha1 ? 5 : 8;
    memset(pad, 0, sizeof pad);
    pad[0] = 0x80;
    for (i = 0; i < 8; i++) pad[padn + i] = (unsigned char)(bits >> (56 - 8 * i));
    digest_update(d, pad, padn + 8);
    for (i = 0; i < (size_t)words; i++) sprintf(hex + 8 * i, "%08x", (unsigned)d->h[i]);
}

/* 0 if the content of path has this ETag (64 hex digits: sha256; 40: git's blob sha1), else -1
 * with a message naming what to do. */
static int check_etag(const char *path, const char *what, const char *etag, char *err, size_t errsz) {
    struct stat st;
    digest d;
    char hex[72], *buf;
    size_t n;
    FILE *f = fopen(path, "rb");
    if (!f || fstat(fileno(f), &st)) {
        if (f) fclose(f);
        return errf(err, errsz, "cannot read %s (%s)", path, strerror(errno));
    }
    if (!(buf = (char *)malloc(1 << 20))) {
        fclose(f);
        return errf(err, errsz, "out of memory");
    }
    digest_init(&d, strlen(etag) == 40);
    if (d.sha1) {
        char head[32];
        int k = snprintf(head, sizeof head, "blob %lld", (long long)st.st_size);
        digest_update(&d, head, (size_t)k + 1); /* with its NUL */
    }
    while ((n = fread(buf, 1, 1 << 20, f)) > 0) digest_update(&d, buf, n);
    free(buf);
    if (ferror(f)) {
        fclose(f);
        return errf(err, errsz, "cannot read %s (%s)", path, strerror(errno));
    }
    fclose(f);
    digest_hex(&d, hex);
    if (strcmp(hex, etag))
        return errf(err, errsz,
                    "%s failed its checksum: its %s is %s, the hub's is %s (the download was corrupted; "
                    "the partial file is removed, run the command again)",
                    what, d.sha1 ? "git sha1" : "sha256", hex, etag);
    return 0;
}

#endif /* TRAIN_HUB_CURL */

/* ==========================================================================================
 * Ids, files and the cache layout
 * ========================================================================================== */

typedef struct {
    char repo[100]; /* ORG/NAME */
    char rev[256];  /* branch, tag or commit; "main" when none is given */
    int rev_is_commit;
} hub_id;

static int is_hex(const char *s, size_t n) {
    size_t i;
    if (strlen(s) != n) return 0;
    for (i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i])) return 0;
    return 1;
}

/* One part of a repo id, by huggingface_hub's rules: letters, digits, '-', '_', '.', neither
 * first nor last a '-' or '.', and no "--" or "..". */
static int id_part_ok(const char *s, size_t n) {
    size_t i;
    if (n == 0 || strchr("-.", s[0]) || strchr("-.", s[n - 1])) return 0;
    for (i = 0; i < n; i++) {
        if (!isalnum((unsigned char)s[i]) && !strchr("-_.", s[i])) return 0;
        if (i > 0 && (s[i] == '-' || s[i] == '.') && s[i] == s[i - 1]) return 0;
    }
    return 1;
}

/* A name safe to use under a directory: hub characters plus '/', no "..", no leading '/'. */
static int rel_name_ok(const char *s) {
    size_t i, n = strlen(s);
    if (n == 0 || n > 255 || s[0] == '/' || s[n - 1] == '/' || strstr(s, "..") || strstr(s, "//")) return 0;
    for (i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("-_./", s[i])) return 0;
    return 1;
}

static int parse_id(const char *arg, hub_id *id) {
    const char *at = strchr(arg, '@'), *slash = strchr(arg, '/');
    size_t n = at ? (size_t)(at - arg) : strlen(arg);
    if (!slash || slash > arg + n || memchr(slash + 1, '/', n - (size_t)(slash + 1 - arg)) || n > 96)
        return -1;
    if (!id_part_ok(arg, (size_t)(slash - arg)) || !id_part_ok(slash + 1, n - (size_t)(slash + 1 - arg)))
        return -1;
    memcpy(id->repo, arg, n);
    id->repo[n] = 0;
    fmt(id->rev, sizeof id->rev, "%s", at ? at + 1 : "main");
    if (at && (strlen(at + 1) >= sizeof id->rev || !rel_name_ok(id->rev))) return -1;
    id->rev_is_commit = is_hex(id->rev, 40);
    return 0;
}

int hub_is_model_id(const char *arg) {
    struct stat st;
    hub_id id;
    return arg && parse_id(arg, &id) == 0 && stat(arg, &st) != 0;
}

/* huggingface_hub's boolean environment variables: 1, ON, YES or TRUE, any case. */
static int env_true(const char *name) {
    const char *v = getenv(name);
    return v && (!strcmp(v, "1") || !strcasecmp(v, "on") || !strcasecmp(v, "yes") || !strcasecmp(v, "true"));
}

static const char *env_nonempty(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* $HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface */
static void hf_home(char *out, size_t n) {
    const char *v;
    if ((v = env_nonempty("HF_HOME")))
        fmt(out, n, "%s", v);
    else if ((v = env_nonempty("XDG_CACHE_HOME")))
        fmt(out, n, "%s/huggingface", v);
    else
        fmt(out, n, "%s/.cache/huggingface", env_nonempty("HOME") ? getenv("HOME") : ".");
}

/* $HF_HUB_CACHE (or its older name HUGGINGFACE_HUB_CACHE), else HF_HOME/hub */
static void cache_root(char *out, size_t n) {
    const char *v;
    char home[PATHSZ];
    if ((v = env_nonempty("HF_HUB_CACHE")) || (v = env_nonempty("HUGGINGFACE_HUB_CACHE"))) {
        fmt(out, n, "%s", v);
        return;
    }
    hf_home(home, sizeof home);
    fmt(out, n, "%s/hub", home);
}

/* $HF_TOKEN (or HUGGING_FACE_HUB_TOKEN), else the file `hf auth login` writes: $HF_TOKEN_PATH,
 * else HF_HOME/token. Empty when there is none. */
static void read_token(char *out, size_t n) {
    const char *v;
    char path[PATHSZ], *text;
    size_t len, i = 0, j;
    out[0] = 0;
    if ((v = env_nonempty("HF_TOKEN")) || (v = env_nonempty("HUGGING_FACE_HUB_TOKEN"))) {
        fmt(out, n, "%s", v);
    } else {
        if ((v = env_nonempty("HF_TOKEN_PATH"))) {
            fmt(path, sizeof path, "%s", v);
        } else {
            char home[PATHSZ];
            hf_home(home, sizeof home);
            fmt(path, sizeof path, "%s/token", home);
        }
        if ((text = read_file(path, 4096, &len, NULL, 0))) {
            fmt(out, n, "%s", text);
            free(text);
        }
    }
    while (out[i] && isspace((unsigned char)out[i])) i++;
    for (j = 0; out[i] && !isspace((unsigned char)out[i]) && j + 1 < n; i++) out[j++] = out[i];
    out[j] = 0;
}

typedef struct {
    hub_id id;
    hub_need need;
    char root[PATHSZ];     /* the cache */
    char folder[120];      /* models--ORG--NAME */
    char repo_dir[PATHSZ]; /* root/models--ORG--NAME */
    char commit[41];
    char endpoint[1024];
    char token[1024];
    int net_failed; /* the last failure: the hub could not be reached or refused (a cached
                       snapshot may stand in), not an unknown revision or a bad file */
    int n_downloaded;
    long long bytes_downloaded;
#ifdef TRAIN_HUB_CURL
    CURL *curl;
#endif
} hub_ctx;

/* Files the trainer reads: tokenizer.json (required, with the optional ones of tokenizer_optional
 * when the model has them) and, for a whole model, config.json and the weights. */
#define WEIGHTS "model.safetensors"
#define WEIGHTS_INDEX "model.safetensors.index.json"

static int listed(char **names, int n, const char *f) {
    int i;
    for (i = 0; i < n; i++)
        if (!strcmp(names[i], f)) return 1;
    return 0;
}

/* The distinct shard names of a model.safetensors.index.json ("weight_map": {tensor: file}).
 * names[] gets malloc'd strings (free each); *n their count. */
static int index_shards(const char *path, char **names, int max, int *n, char *err, size_t errsz) {
    size_t len, i;
    int rc = 0;
    char jerr[256];
    char *text = read_file(path, (size_t)64 << 20, &len, err, errsz);
    clair_json root;
    const clair_json *map;
    *n = 0;
    if (!text) return -1;
    if (clair_json_parse(text, len, &root, jerr, sizeof jerr)) {
        free(text);
        return errf(err, errsz, "%s: not valid JSON: %s", path, jerr);
    }
    free(text);
    map = clair_json_get(&root, "weight_map");
    if (!map || map->type != CLAIR_JSON_OBJECT || map->n == 0) {
        clair_json_free(&root);
        return errf(err, errsz, "%s: no \"weight_map\" object naming the shards", path);
    }
    for (i = 0; i < map->n && rc == 0; i++) {
        const clair_json *v = &map->items[i];
        if (v->type != CLAIR_JSON_STRING || !rel_name_ok(v->str)) {
            rc = errf(err, errsz, "%s: the shard of \"%s\" is not a plain file name", path, map->keys[i]);
            break;
        }
        if (listed(names, *n, v->str)) continue;
        if (*n == max)
            rc = errf(err, errsz, "%s: more than %d shards", path, max);
        else if (!(names[(*n)++] = strdup(v->str)))
            rc = errf(err, errsz, "out of memory");
    }
    clair_json_free(&root);
    return rc;
}

static void free_names(char **names, int n) {
    int i;
    for (i = 0; i < n; i++) free(names[i]);
}

/* 1 if snapshots/COMMIT holds everything h->need asks for; else 0 with the first missing file. */
static int snapshot_complete(const hub_ctx *h, const char *commit, char *missing, size_t msz) {
    char snap[PATHSZ], p[PATHSZ + 300], e[256];
    char *shards[MAX_FILES];
    int n = 0, i, ok = 1;
    fmt(snap, sizeof snap, "%s/snapshots/%s", h->repo_dir, commit);
    fmt(p, sizeof p, "%s/tokenizer.json", snap);
    if (!file_exists(p)) return fmt(missing, msz, "tokenizer.json"), 0;
    if (h->need == HUB_TOKENIZER) return 1;
    fmt(p, sizeof p, "%s/config.json", snap);
    if (!file_exists(p)) return fmt(missing, msz, "config.json"), 0;
    fmt(p, sizeof p, "%s/" WEIGHTS, snap);
    if (file_exists(p)) return 1;
    fmt(p, sizeof p, "%s/" WEIGHTS_INDEX, snap);
    if (!file_exists(p) || index_shards(p, shards, MAX_FILES, &n, e, sizeof e))
        return fmt(missing, msz, WEIGHTS), 0;
    for (i = 0; i < n && ok; i++) {
        fmt(p, sizeof p, "%s/%s", snap, shards[i]);
        if (!file_exists(p)) ok = 0, fmt(missing, msz, "%s", shards[i]);
    }
    free_names(shards, n);
    return ok;
}

/* The commit h->id.rev names in the cache (refs/REV), and whether its snapshot is complete:
 * 1 complete (commit set), 0 not (why in note). */
static int cached_snapshot(hub_ctx *h, char *commit, char *note, size_t nsz) {
    char ref[PATHSZ + 300], missing[300], *text;
    size_t len;
    if (h->id.rev_is_commit) {
        fmt(commit, 41, "%s", h->id.rev);
    } else {
        fmt(ref, sizeof ref, "%s/refs/%s", h->repo_dir, h->id.rev);
        if (!(text = read_file(ref, 4096, &len, NULL, 0)))
            return fmt(note, nsz, "%s@%s is not in the cache %s", h->id.repo, h->id.rev, h->root), 0;
        while (len > 0 && isspace((unsigned char)text[len - 1])) text[--len] = 0;
        if (!is_hex(text, 40)) {
            free(text);
            return fmt(note, nsz, "%s does not hold a commit hash", ref), 0;
        }
        fmt(commit, 41, "%s", text);
        free(text);
    }
    if (!snapshot_complete(h, commit, missing, sizeof missing))
        return fmt(note, nsz, "the cached snapshot %s of %s lacks %s", commit, h->id.repo, missing), 0;
    return 1;
}

#ifdef TRAIN_HUB_CURL
/* ==========================================================================================
 * HTTP (libcurl)
 * ========================================================================================== */

/* The tokenizer's files besides tokenizer.json, fetched when the model has them. */
static const char *const tokenizer_optional[] = {"tokenizer_config.json", "special_tokens_map.json",
                                                 "chat_template.jinja", "generation_config.json"};
#define N_TOKENIZER_OPTIONAL (sizeof tokenizer_optional / sizeof tokenizer_optional[0])

/* An empty marker .no_exist/COMMIT/FILE: the model has no FILE (read by transformers offline). */
static void mark_absent(const hub_ctx *h, const char *file) {
    char p[PATHSZ + 300];
    int fd;
    fmt(p, sizeof p, "%s/.no_exist/%s", h->repo_dir, h->commit);
    if (mkdir_p(p)) return;
    fmt(p, sizeof p, "%s/.no_exist/%s/%s", h->repo_dir, h->commit, file);
    if ((fd = open(p, O_WRONLY | O_CREAT, 0644)) >= 0) close(fd);
}

/* snapshots/COMMIT/FILE -> ../../blobs/ETAG (one more ../ per directory in FILE), replacing any
 * older link atomically. */
static int link_snapshot(const hub_ctx *h, const char *file, const char *etag, char *err, size_t errsz) {
    char path[PATHSZ + 300], tmp[PATHSZ + 340], target[PATHSZ] = "../../", *slash;
    const char *c;
    for (c = file; *c; c++)
        if (*c == '/') strcat(target, "../"); /* rel_name_ok: at most 127 of them */
    strcat(target, "blobs/");
    strcat(target, etag);
    fmt(path, sizeof path, "%s/snapshots/%s/%s", h->repo_dir, h->commit, file);
    slash = strrchr(path, '/');
    *slash = 0;
    if (mkdir_p(path)) return errf(err, errsz, "cannot create %s (%s)", path, strerror(errno));
    *slash = '/';
    fmt(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    unlink(tmp);
    if (symlink(target, tmp) || rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        return errf(err, errsz, "cannot link %s to the cache's blob %s (%s)", path, target, strerror(e));
    }
    return 0;
}

/* What a response said, from its headers (the last response's, when redirects are followed). */
typedef struct {
    long status;
    char etag[160], linked_etag[160], commit[64], location[2048], error_code[64], error_message[300];
    long long linked_size, content_length;
} http_meta;

/* Where a body goes: the download file (only for a 200/206), else memory (capped). */
typedef struct {
    CURL *curl;
    FILE *file;
    long long range_from; /* bytes already in file; asked for with Range */
    int decided, to_file;
    clair_buf mem;
    size_t mem_cap;
    const char *name; /* progress lines: the file, its size, when the last line was printed */
    long long total;
    double t0, last;
} http_sink;

static void header_value(const char *line, size_t n, const char *name, char *out, size_t outsz) {
    size_t k = strlen(name), i;
    if (n <= k || strncasecmp(line, name, k) || line[k] != ':') return;
    for (i = k + 1; i < n && (line[i] == ' ' || line[i] == '\t'); i++) {
    }
    while (n > i && (line[n - 1] == '\r' || line[n - 1] == '\n' || line[n - 1] == ' ')) n--;
    fmt(out, outsz, "%.*s", (int)(n - i), line + i);
}

static size_t on_header(char *line, size_t size, size_t count, void *ud) {
    http_meta *m = (http_meta *)ud;
    size_t n = size * count;
    char num[32] = "";
    if (n > 5 && !strncmp(line, "HTTP/", 5)) { /* a new response (after a redirect): start over */
        const char *sp = memchr(line, ' ', n);
        memset(m, 0, sizeof *m);
        m->linked_size = m->content_length = -1;
        m->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        return n;
    }
    header_value(line, n, "ETag", m->etag, sizeof m->etag);
    header_value(line, n, "X-Linked-Etag", m->linked_etag, sizeof m->linked_etag);
    header_value(line, n, "X-Repo-Commit", m->commit, sizeof m->commit);
    header_value(line, n, "Location", m->location, sizeof m->location);
    header_value(line, n, "X-Error-Code", m->error_code, sizeof m->error_code);
    header_value(line, n, "X-Error-Message", m->error_message, sizeof m->error_message);
    header_value(line, n, "X-Linked-Size", num, sizeof num);
    if (*num) m->linked_size = strtoll(num, NULL, 10), *num = 0;
    header_value(line, n, "Content-Length", num, sizeof num);
    if (*num) m->content_length = strtoll(num, NULL, 10);
    return n;
}

static size_t on_body(char *data, size_t size, size_t count, void *ud) {
    http_sink *s = (http_sink *)ud;
    size_t n = size * count;
    if (!s->decided) {
        long code = 0;
        curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &code);
        s->decided = 1;
        s->to_file = s->file && (code == 200 || code == 206);
        if (s->to_file && code == 200 && s->range_from > 0) { /* the server ignored Range */
            if (ftruncate(fileno(s->file), 0)) return 0;
            s->range_from = 0;
        }
    }
    if (s->to_file) return fwrite(data, 1, n, s->file);
    if (s->mem.len + n <= s->mem_cap) clair_buf_put(&s->mem, data, n);
    return s->mem.oom ? 0 : n;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
    http_sink *s = (http_sink *)ud;
    double t = now_s();
    (void)dltotal, (void)ultotal, (void)ulnow;
    if (s->name && s->to_file && t - s->last >= 5.0) {
        double done = (double)(s->range_from + dlnow) / 1e6;
        fprintf(stderr, "  %s: %.1f/%.1f MB (%.1f MB/s)\n", s->name, done, (double)s->total / 1e6,
                (double)dlnow / 1e6 / (t - s->t0 > 1e-3 ? t - s->t0 : 1e-3));
        s->last = t;
    }
    return 0;
}

/* One request; head: HEAD without following redirects (their headers are what we want), else GET
 * following them. The token goes only to the endpoint, never to the storage an LFS file is
 * redirected to. Returns curl's code; m gets the headers, cerr curl's message. */
static CURLcode http_request(hub_ctx *h, const char *url, int head, http_sink *s, http_meta *m, char *cerr) {
    struct curl_slist *hdrs = NULL;
    char auth[1100], range[40];
    size_t k;
    CURLcode rc;
    CURL *c = h->curl;
    curl_easy_reset(c);
    memset(m, 0, sizeof *m);
    m->linked_size = m->content_length = -1;
    cerr[0] = 0;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "clair-apo-trainer (libcurl)");
    curl_easy_setopt(c, CURLOPT_NOBODY, head ? 1L : 0L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, head ? 0L : 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(c, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L); /* a stalled transfer: 60 s without a byte */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, m);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    if (s->file) {
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, s);
    }
    if (s->range_from > 0) {
        fmt(range, sizeof range, "%lld-", s->range_from);
        curl_easy_setopt(c, CURLOPT_RANGE, range);
    }
    k = strlen(h->endpoint); /* the endpoint itself, not a host that merely starts like it */
    if (*h->token && !strncmp(url, h->endpoint, k) && (url[k] == '/' || url[k] == 0)) {
        fmt(auth, sizeof auth, "Authorization: Bearer %s", h->token);
        hdrs = curl_slist_append(hdrs, auth);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    }
    s->curl = c;
    rc = curl_easy_perform(c);
    curl_slist_free_all(hdrs);
    if (rc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &m->status);
    if (!cerr[0]) fmt(cerr, CURL_ERROR_SIZE, "%s", curl_easy_strerror(rc));
    return rc;
}

static int net_fail(hub_ctx *h, const char *cerr, char *err, size_t errsz) {
    h->net_failed = 1;
    return errf(
        err, errsz,
        "cannot reach the Hugging Face hub at %s (%s) for %s: connect to the network (or set HF_ENDPOINT "
        "to a reachable mirror), or pass a local checkpoint directory",
        h->endpoint, cerr, h->id.repo);
}

/* The message for an HTTP error from the hub: which of the usual cases it is, and what to do. */
static int http_fail(hub_ctx *h, const http_meta *m, const char *url, char *err, size_t errsz) {
    const char *code = m->error_code, *repo = h->id.repo, *ep = h->endpoint;
    char hub[340] = "";
    int have_token = *h->token != 0;
    if (*m->error_message) fmt(hub, sizeof hub, " (the hub says: %s)", m->error_message);
    h->net_failed = strcmp(code, "RevisionNotFound") && strcmp(code, "EntryNotFound");
    if (!strcmp(code, "GatedRepo"))
        return have_token
                   ? errf(err, errsz,
                          "%s is a gated model and the token in HF_TOKEN has not been granted access (HTTP "
                          "%ld): accept its conditions at %s/%s with that token's account and wait for "
                          "approval%s",
                          repo, m->status, ep, repo, hub)
                   : errf(err, errsz,
                          "%s is a gated model (HTTP %ld): accept its conditions at %s/%s, then set HF_TOKEN "
                          "to an access token of that account (%s/settings/tokens)%s",
                          repo, m->status, ep, repo, ep, hub);
    if (!strcmp(code, "RevisionNotFound"))
        return errf(err, errsz,
                    "%s has no revision '%s' (HTTP %ld): give a branch, tag or commit of the model "
                    "(ORG/NAME@REVISION; the default is main)%s",
                    repo, h->id.rev, m->status, hub);
    if (m->status == 401 && have_token && strstr(m->error_message, "nvalid credentials"))
        return errf(err, errsz,
                    "the hub refused the token in HF_TOKEN (HTTP 401, invalid credentials): create a "
                    "new one at %s/settings/tokens",
                    ep);
    if (!strcmp(code, "RepoNotFound") ||
        ((m->status == 401 || m->status == 404) && !strstr(url, "/resolve/")))
        return errf(err, errsz,
                    "there is no local directory %s and no model of that name at %s (HTTP %ld): check the "
                    "path, or the id (ORG/NAME, case matters)%s%s",
                    repo, ep, m->status,
                    have_token ? "; if it is private, the token in HF_TOKEN has no access to it"
                               : "; a private model needs HF_TOKEN (an access token)",
                    hub);
    if (m->status == 429)
        return errf(err, errsz,
                    "the hub is limiting requests (HTTP 429): wait a few minutes and run again%s%s",
                    have_token ? "" : " (an access token in HF_TOKEN raises the limit)", hub);
    if (m->status >= 500)
        return errf(err, errsz, "the hub answered HTTP %ld for %s: it may be down, try again later%s",
                    m->status, url, hub);
    return errf(err, errsz, "the hub answered HTTP %ld for %s%s", m->status, url, hub);
}

/* GET /api/models/REPO/revision/REV: the commit (h->commit) and the file list (names[]). */
static int list_files(hub_ctx *h, char **names, int max, int *n, char *err, size_t errsz) {
    char url[2048], cerr[CURL_ERROR_SIZE], jerr[256];
    char *rev = curl_easy_escape(h->curl, h->id.rev, 0);
    http_sink s;
    http_meta m;
    clair_json root;
    const clair_json *sib;
    const char *sha;
    CURLcode rc;
    size_t i;
    int status = 0;
    *n = 0;
    if (!rev) return errf(err, errsz, "out of memory");
    fmt(url, sizeof url, "%s/api/models/%s/revision/%s", h->endpoint, h->id.repo, rev);
    curl_free(rev);
    memset(&s, 0, sizeof s);
    s.mem_cap = (size_t)64 << 20;
    rc = http_request(h, url, 0, &s, &m, cerr);
    if (rc != CURLE_OK)
        status = net_fail(h, cerr, err, errsz);
    else if (m.status != 200)
        status = http_fail(h, &m, url, err, errsz);
    else if (clair_json_parse(s.mem.data ? s.mem.data : "", s.mem.len, &root, jerr, sizeof jerr))
        status = errf(err, errsz, "%s: the hub's answer is not valid JSON (%s)", url, jerr);
    if (status) {
        clair_buf_free(&s.mem);
        return status;
    }
    clair_buf_free(&s.mem);
    sha = clair_json_get_str(&root, "sha");
    sib = clair_json_get(&root, "siblings");
    if (!sha || !is_hex(sha, 40) || !sib || sib->type != CLAIR_JSON_ARRAY)
        status = errf(err, errsz, "%s: the hub's answer lacks \"sha\" (a commit) or \"siblings\" (the files)",
                      url);
    else
        fmt(h->commit, sizeof h->commit, "%s", sha);
    for (i = 0; status == 0 && i < sib->n && *n < max; i++) {
        const char *f = clair_json_get_str(&sib->items[i], "rfilename");
        if (f && !(names[(*n)++] = strdup(f))) status = errf(err, errsz, "out of memory");
    }
    clair_json_free(&root);
    return status;
}

/* HEAD of FILE at the commit: the ETag to store it under, its size, and the URL to GET. Relative
 * redirects (a renamed repository) are followed; an absolute one is the storage of an LFS file. */
static int file_meta(hub_ctx *h, const char *file, char *etag, long long *size, char *get_url, size_t usz,
                     char *err, size_t errsz) {
    char url[2048], origin[1024], cerr[CURL_ERROR_SIZE], *e;
    const char *p;
    http_sink s;
    http_meta m;
    int hops;
    fmt(url, sizeof url, "%s/%s/resolve/%s/%s", h->endpoint, h->id.repo, h->commit, file);
    p = strstr(h->endpoint, "://");
    p = p ? strchr(p + 3, '/') : NULL;
    fmt(origin, sizeof origin, "%.*s", p ? (int)(p - h->endpoint) : (int)strlen(h->endpoint), h->endpoint);
    for (hops = 0;; hops++) {
        memset(&s, 0, sizeof s);
        s.mem_cap = 4096;
        if (http_request(h, url, 1, &s, &m, cerr) != CURLE_OK) return net_fail(h, cerr, err, errsz);
        clair_buf_free(&s.mem);
        if (m.status >= 300 && m.status < 400 && m.location[0] == '/' && hops < 5) {
            fmt(url, sizeof url, "%s%s", origin, m.location);
            continue;
        }
        break;
    }
    if (m.status >= 300 && m.status < 400 && *m.location)
        fmt(get_url, usz, "%s", m.location);
    else if (m.status >= 200 && m.status < 300)
        fmt(get_url, usz, "%s", url);
    else
        return http_fail(h, &m, url, err, errsz);
    /* The hub's ETag: X-Linked-Etag for an LFS file (the sha256), else ETag; W/ and quotes off. */
    e = *m.linked_etag ? m.linked_etag : m.etag;
    if (!strncmp(e, "W/", 2)) e += 2;
    if (*e == '"') e++;
    if (*e && e[strlen(e) - 1] == '"') e[strlen(e) - 1] = 0;
    if (!is_hex(e, 64) && !is_hex(e, 40)) {
        h->net_failed = 0;
        return errf(err, errsz, "%s: the hub gave no usable ETag ('%s'), so the download cannot be verified",
                    url, e);
    }
    fmt(etag, 65, "%s", e);
    *size = m.linked_size >= 0 ? m.linked_size : (m.status < 300 ? m.content_length : -1);
    return 0;
}

static long long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) ? 0 : (long long)st.st_size;
}

static int is_transient(CURLcode rc) {
    return rc == CURLE_PARTIAL_FILE || rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR ||
           rc == CURLE_OPERATION_TIMEDOUT || rc == CURLE_GOT_NOTHING || rc == CURLE_COULDNT_CONNECT;
}

/* GET url into blob.incomplete, resuming what an earlier attempt (or run) left there, retrying a
 * dropped connection; then the size and the checksum; then renamed to blob. */
static int download_blob(hub_ctx *h, const char *file, const char *url, const char *etag, long long size,
                         const char *blob, char *err, size_t errsz) {
    char inc[PATHSZ + 300], cerr[CURL_ERROR_SIZE], what[400];
    int attempt;
    fmt(inc, sizeof inc, "%s.incomplete", blob);
    fmt(what, sizeof what, "%s/%s", h->id.repo, file);
    for (attempt = 1;; attempt++) {
        long long have = file_size(inc);
        http_sink s;
        http_meta m;
        CURLcode rc;
        FILE *f;
        if (size >= 0 && have == size) break; /* all there (an earlier run stopped before the rename) */
        if (size >= 0 && have > size && truncate(inc, 0) == 0) have = 0;
        if (attempt == 1 && size >= 0)
            fprintf(stderr, "downloading %s (%.*f MB)%s\n", what, size < 100000 ? 3 : 1, (double)size / 1e6,
                    have > 0 ? ", resuming a partial download" : "");
        else if (attempt == 1)
            fprintf(stderr, "downloading %s%s\n", what, have > 0 ? ", resuming a partial download" : "");
        if (!(f = fopen(inc, "ab"))) return errf(err, errsz, "cannot write %s (%s)", inc, strerror(errno));
        memset(&s, 0, sizeof s);
        s.file = f;
        s.range_from = have;
        s.mem_cap = 4096;
        s.name = file;
        s.total = size;
        s.t0 = s.last = now_s();
        rc = http_request(h, url, 0, &s, &m, cerr);
        if (fclose(f) && rc == CURLE_OK) rc = CURLE_WRITE_ERROR;
        clair_buf_free(&s.mem);
        if (rc == CURLE_OK && (m.status == 200 || m.status == 206)) break;
        if (rc == CURLE_OK && m.status == 416 && attempt < 5) { /* a stale partial file: start over */
            if (truncate(inc, 0)) return errf(err, errsz, "cannot truncate %s (%s)", inc, strerror(errno));
            continue;
        }
        if (rc == CURLE_OK) return http_fail(h, &m, url, err, errsz);
        if (rc == CURLE_WRITE_ERROR) return errf(err, errsz, "cannot write %s (%s)", inc, strerror(errno));
        if (!is_transient(rc) || attempt == 5) return net_fail(h, cerr, err, errsz);
        fprintf(stderr, "  %s: %s after %.1f MB; resuming (attempt %d of 5)\n", file, cerr,
                (double)file_size(inc) / 1e6, attempt + 1);
        {
            struct timespec ts = {0, 250000000L * attempt};
            nanosleep(&ts, NULL);
        }
    }
    if (size >= 0 && file_size(inc) != size) {
        long long got = file_size(inc);
        unlink(inc);
        return errf(err, errsz,
                    "%s: got %lld bytes, the hub announced %lld; the partial file is removed, run the "
                    "command again",
                    what, got, size);
    }
    if (check_etag(inc, what, etag, err, errsz)) {
        unlink(inc);
        return -1;
    }
    if (rename(inc, blob)) return errf(err, errsz, "cannot rename %s to %s (%s)", inc, blob, strerror(errno));
    h->n_downloaded++;
    h->bytes_downloaded += file_size(blob);
    return 0;
}

/* FILE at h->commit into the cache (unless the snapshot has it already). */
static int fetch_file(hub_ctx *h, const char *file, char *err, size_t errsz) {
    char snap[PATHSZ + 300], blob[PATHSZ + 100], lock[PATHSZ + 300], get_url[2048], etag[65];
    long long size = -1;
    int fd, rc = 0;
    fmt(snap, sizeof snap, "%s/snapshots/%s/%s", h->repo_dir, h->commit, file);
    if (file_exists(snap)) return 0;
    if (file_meta(h, file, etag, &size, get_url, sizeof get_url, err, errsz)) return -1;
    fmt(blob, sizeof blob, "%s/blobs", h->repo_dir);
    fmt(lock, sizeof lock, "%s/.locks/%s", h->root, h->folder);
    if (mkdir_p(blob) || mkdir_p(lock))
        return errf(err, errsz, "cannot create %s (%s)", blob, strerror(errno));
    fmt(blob, sizeof blob, "%s/blobs/%s", h->repo_dir, etag);
    fmt(lock, sizeof lock, "%s/.locks/%s/%s.lock", h->root, h->folder, etag);
    if ((fd = open(lock, O_RDWR | O_CREAT, 0644)) < 0)
        return errf(err, errsz, "cannot open the lock file %s (%s)", lock, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB)) {
        fprintf(stderr, "waiting for another process that downloads %s/%s (lock %s)\n", h->id.repo, file,
                lock);
        flock(fd, LOCK_EX);
    }
    if (!file_exists(blob)) rc = download_blob(h, file, get_url, etag, size, blob, err, errsz);
    close(fd); /* releases the lock */
    return rc ? rc : link_snapshot(h, file, etag, err, errsz);
}

/* Asks the hub for the revision and fetches every file h->need asks for that the cache lacks. */
static int download_model(hub_ctx *h, char *err, size_t errsz) {
    char *names[MAX_FILES], *shards[MAX_FILES], p[PATHSZ + 300];
    int n = 0, n_shards = 0, i, rc;
    size_t k;
    if (list_files(h, names, MAX_FILES, &n, err, errsz)) return free_names(names, n), -1;
    h->net_failed = 0;
    rc = 0;
    if (!listed(names, n, "tokenizer.json"))
        rc =
            errf(err, errsz, "%s has no tokenizer.json; the trainer reads the Hugging Face tokenizers format",
                 h->id.repo);
    else if (h->need == HUB_MODEL && !listed(names, n, "config.json"))
        rc = errf(err, errsz, "%s has no config.json: it is not a Transformers checkpoint", h->id.repo);
    else if (h->need == HUB_MODEL && !listed(names, n, WEIGHTS) && !listed(names, n, WEIGHTS_INDEX))
        rc = errf(err, errsz, "%s has no safetensors weights (%s or %s); the trainer reads only safetensors",
                  h->id.repo, WEIGHTS, WEIGHTS_INDEX);
    if (!rc) rc = fetch_file(h, "tokenizer.json", err, errsz);
    for (k = 0; !rc && k < N_TOKENIZER_OPTIONAL; k++) {
        if (listed(names, n, tokenizer_optional[k]))
            rc = fetch_file(h, tokenizer_optional[k], err, errsz);
        else
            mark_absent(h, tokenizer_optional[k]);
    }
    if (!rc && h->need == HUB_MODEL) rc = fetch_file(h, "config.json", err, errsz);
    if (!rc && h->need == HUB_MODEL) {
        if (listed(names, n, WEIGHTS)) {
            rc = fetch_file(h, WEIGHTS, err, errsz);
        } else if (!(rc = fetch_file(h, WEIGHTS_INDEX, err, errsz))) {
            fmt(p, sizeof p, "%s/snapshots/%s/" WEIGHTS_INDEX, h->repo_dir, h->commit);
            rc = index_shards(p, shards, MAX_FILES, &n_shards, err, errsz);
            for (i = 0; !rc && i < n_shards; i++) rc = fetch_file(h, shards[i], err, errsz);
            free_names(shards, n_shards);
        }
    }
    free_names(names, n);
    if (rc) return -1;
    if (!h->id.rev_is_commit) { /* refs/REV last: a reader never sees a ref to a half snapshot */
        fmt(p, sizeof p, "%s/refs/%s", h->repo_dir, h->id.rev);
        *strrchr(p, '/') = 0;
        if (mkdir_p(p)) return errf(err, errsz, "cannot create %s (%s)", p, strerror(errno));
        fmt(p, sizeof p, "%s/refs/%s", h->repo_dir, h->id.rev);
        if (write_file_atomic(p, h->commit, 40, err, errsz)) return -1;
    }
    return 0;
}
#endif /* TRAIN_HUB_CURL */

/* ==========================================================================================
 * Resolving ids
 * ========================================================================================== */

static int hub_ctx_init(hub_ctx *h, const char *id, hub_need need, char *err, size_t errsz) {
    const char *ep = env_nonempty("HF_ENDPOINT"), *c;
    memset(h, 0, sizeof *h);
    if (parse_id(id, &h->id))
        return errf(err, errsz,
                    "'%s' is neither a local path nor a Hugging Face model id (ORG/NAME[@REVISION])", id);
    h->need = need;
    cache_root(h->root, sizeof h->root);
    c = strchr(h->id.repo, '/');
    fmt(h->folder, sizeof h->folder, "models--%.*s--%s", (int)(c - h->id.repo), h->id.repo, c + 1);
    fmt(h->repo_dir, sizeof h->repo_dir, "%s/%s", h->root, h->folder);
    fmt(h->endpoint, sizeof h->endpoint, "%s", ep ? ep : "https://huggingface.co");
    while (strlen(h->endpoint) > 8 && h->endpoint[strlen(h->endpoint) - 1] == '/')
        h->endpoint[strlen(h->endpoint) - 1] = 0;
    read_token(h->token, sizeof h->token);
    return 0;
}

int hub_resolve(const char *id, hub_need need, char *dir, size_t dirsz, char *err, size_t errsz) {
    hub_ctx h;
    char cached[41], note[PATHSZ + 400];
    int have;
    if (hub_ctx_init(&h, id, need, err, errsz)) return -1;
    have = cached_snapshot(&h, cached, note, sizeof note);
    if (env_true("HF_HUB_OFFLINE") || env_true("TRANSFORMERS_OFFLINE")) {
        if (!have)
            return errf(err, errsz,
                        "HF_HUB_OFFLINE is set and %s (nor is it a local directory): unset HF_HUB_OFFLINE to "
                        "download it, or pass a local checkpoint directory",
                        note);
    } else if (!have || !h.id.rev_is_commit) {
#ifdef TRAIN_HUB_CURL
        int rc;
        if (curl_global_init(CURL_GLOBAL_DEFAULT) || !(h.curl = curl_easy_init()))
            return errf(err, errsz, "cannot start libcurl");
        rc = download_model(&h, err, errsz);
        curl_easy_cleanup(h.curl);
        if (rc == 0) {
            fmt(dir, dirsz, "%s/snapshots/%s", h.repo_dir, h.commit);
            if (h.n_downloaded)
                fprintf(stderr, "%s: downloaded %d file%s (%.1f MB) into %s\n", id, h.n_downloaded,
                        h.n_downloaded > 1 ? "s" : "", (double)h.bytes_downloaded / 1e6, dir);
            else
                fprintf(stderr, "%s: %s (cached)\n", id, dir);
            return 0;
        }
        if (!have || !h.net_failed) return -1;
        fprintf(stderr, "note: %s\nnote: using the cached snapshot %s of %s\n", err, cached, id);
#else
        if (!have)
            return errf(
                err, errsz,
                "%s, and this trainer was built without libcurl, so it cannot download it: install libcurl's "
                "headers (Debian/Ubuntu: apt-get install libcurl4-openssl-dev) and rebuild with ./build.sh, "
                "or "
                "fetch the model into the cache with `hf download %s` (the trainer then finds it), or pass a "
                "local checkpoint directory",
                note, h.id.repo);
#endif
    }
    fmt(dir, dirsz, "%s/snapshots/%s", h.repo_dir, cached);
    fprintf(stderr, "%s: %s (cached)\n", id, dir);
    return 0;
}

/* Resolved argv values: reachable from here until the program exits. */
static char *resolved_args[16];

int hub_resolve_args(int argc, char **argv, char *err, size_t errsz) {
    static const struct {
        const char *flag;
        hub_need need;
    } flags[] = {{"--model", HUB_MODEL}, {"--ref", HUB_MODEL}, {"--tokenizer", HUB_TOKENIZER}};
    int i, n_resolved = 0;
    size_t f;
    for (i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 0;
    for (i = 1; i < argc; i++) {
        for (f = 0; f < sizeof flags / sizeof flags[0]; f++) {
            size_t k = strlen(flags[f].flag);
            char dir[PATHSZ], **slot = NULL, *s;
            const char *value = NULL;
            if (!strcmp(argv[i], flags[f].flag) && i + 1 < argc)
                slot = &argv[i + 1], value = argv[i + 1];
            else if (!strncmp(argv[i], flags[f].flag, k) && argv[i][k] == '=')
                slot = &argv[i], value = argv[i] + k + 1;
            if (!slot || !hub_is_model_id(value)) continue;
            if (n_resolved == (int)(sizeof resolved_args / sizeof resolved_args[0]))
                return errf(err, errsz, "too many model ids on one command line");
            if (hub_resolve(value, flags[f].need, dir, sizeof dir, err, errsz)) return -1;
            if (!(s = (char *)malloc(k + 1 + strlen(dir) + 1))) return errf(err, errsz, "out of memory");
            sprintf(s, "%s%s", slot == &argv[i] ? flags[f].flag : "", slot == &argv[i] ? "=" : "");
            strcat(s, dir);
            *slot = resolved_args[n_resolved++] = s;
        }
    }
    return 0;
}
