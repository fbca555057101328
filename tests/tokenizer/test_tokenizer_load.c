/* tests/tokenizer/test_tokenizer_load.c - tokenizer_load against crafted tokenizer directories:
 * every malformed model.merges entry (no space, not a string or pair, " " whose two parts are
 * empty, a late bad entry after good ones) is refused with a message naming the entry and
 * leaks nothing (ASan/LSan/UBSan builds check that); a directory or FIFO where tokenizer.json,
 * tokenizer_config.json or chat_template.jinja belongs is refused at once, naming the file and
 * what it is; a token id far beyond the vocabulary's size is refused before the id tables are
 * allocated.
 * Usage: test_tokenizer_load [tmp_dir]
 */
#define _POSIX_C_SOURCE 200809L
#include "../../llama/tokenizer.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

static char dir[600];

static void path_of(char *p, size_t n, const char *name) { snprintf(p, n, "%s/%s", dir, name); }

static void clear_dir(void) {
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[1200];
    if (!d) return;
    while ((e = readdir(d))) {
        struct stat st;
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        path_of(p, sizeof p, e->d_name);
        if (!lstat(p, &st) && S_ISDIR(st.st_mode)) rmdir(p);
        else remove(p);
    }
    closedir(d);
}

/* A byte-level BPE tokenizer.json over "a", "b", "ab", with the given merges (JSON array text)
 * and an extra vocab entry (JSON member text, may be ""). */
static void write_tokenizer(const char *merges, const char *extra_vocab) {
    char p[1200];
    FILE *fp;
    path_of(p, sizeof p, "tokenizer.json");
    fp = fopen(p, "wb");
    if (!fp) { printf("cannot write %s\n", p); exit(1); }
    fprintf(fp, "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2%s},\"merges\":%s},"
                "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true},"
                "\"decoder\":{\"type\":\"ByteLevel\"}}",
            extra_vocab, merges);
    fclose(fp);
}

static void expect_refused(const char *label, const char *want1, const char *want2) {
    tokenizer *t = NULL;
    char err[1024] = "";
    int rc;
    alarm(20); /* a loader waiting on a FIFO fails here instead of hanging */
    rc = tokenizer_load(&t, dir, NULL, err, sizeof err);
    alarm(0);
    CHECK(rc == -1 && t == NULL, "%s: loaded", label);
    CHECK(rc == -1 && strstr(err, want1) && (!want2 || strstr(err, want2)), "%s: message '%s' lacks '%s'%s%s", label, err, want1,
          want2 ? " / " : "", want2 ? want2 : "");
    printf("  %-36s -> %s\n", label, err);
    if (rc == 0) tokenizer_free(t);
}

int main(int argc, char **argv) {
    const char *tmp = argc > 1 ? argv[1] : "/tmp";
    char p[1200], err[1024];
    tokenizer *t = NULL;
    snprintf(dir, sizeof dir, "%s/tokload.%ld", tmp, (long)getpid());
    if (mkdir(dir, 0755)) { printf("cannot create %s\n", dir); return 1; }

    write_tokenizer("[\"a b\"]", "");
    CHECK(tokenizer_load(&t, dir, NULL, err, sizeof err) == 0, "the base tokenizer does not load: %s", err);
    if (t) {
        tok_ids ids = {NULL, 0, 0};
        CHECK(tokenizer_encode(t, "ab", 2, 0, &ids, err, sizeof err) == 0 && ids.len == 1 && ids.data[0] == 2, "\"ab\" is not one token");
        tok_ids_free(&ids);
        tokenizer_free(t);
    }

    printf("malformed merges:\n");
    write_tokenizer("[\"a b\",\"ab\"]", "");
    expect_refused("a late merge without a space", "model.merges[1]", "no space");
    write_tokenizer("[\"a b\",[\"a\"]]", "");
    expect_refused("a late merge of one part", "model.merges[1]", "neither");
    write_tokenizer("[\"a b\",7]", "");
    expect_refused("a late merge that is a number", "model.merges[1]", "neither");
    write_tokenizer("[\" \"]", "");
    expect_refused("merge \" \" (two empty parts)", "model.merges[0]", "not in model.vocab");
    write_tokenizer("[[\"\",\"\"]]", "");
    expect_refused("merge [\"\", \"\"]", "model.merges[0]", "not in model.vocab");
    write_tokenizer("[\"a b\",\"a c\"]", "");
    expect_refused("a late merge of an unknown token", "model.merges[1]", "not in model.vocab");

    printf("ids:\n");
    write_tokenizer("[\"a b\"]", ",\"c\":99999999");
    expect_refused("token id 99999999 in a 4-token vocab", "tokenizer.json", "99999999");

    printf("not regular files:\n");
    clear_dir();
    path_of(p, sizeof p, "tokenizer.json");
    mkdir(p, 0755);
    expect_refused("tokenizer.json is a directory", "tokenizer.json: is a directory", NULL);
    rmdir(p);
    if (mkfifo(p, 0644) == 0) {
        expect_refused("tokenizer.json is a FIFO", "tokenizer.json: not a regular file", NULL);
        remove(p);
    }
    write_tokenizer("[\"a b\"]", "");
    path_of(p, sizeof p, "tokenizer_config.json");
    mkdir(p, 0755);
    expect_refused("tokenizer_config.json is a directory", "tokenizer_config.json: is a directory", NULL);
    rmdir(p);
    path_of(p, sizeof p, "chat_template.jinja");
    if (mkfifo(p, 0644) == 0) {
        expect_refused("chat_template.jinja is a FIFO", "chat_template.jinja: not a regular file", NULL);
        remove(p);
    }

    clear_dir();
    rmdir(dir);
    if (failures) { printf("%d check(s) failed\n", failures); return 1; }
    printf("all tokenizer loading checks passed\n");
    return 0;
}
