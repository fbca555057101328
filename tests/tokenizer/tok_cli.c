/* tests/tokenizer/tok_cli.c - a small command-line front end of llama/tokenizer.c for the
 * generator scripts' cross-checks against Hugging Face (tools/gen_tokenizer_expected.py --fuzz).
 *
 *   tok_cli DIR [--special]   reads lines of hex-encoded text from stdin; prints one line of
 *                             space-separated ids per input line ("ERR message" on failure)
 *   tok_cli DIR --decode      reads lines of space-separated ids; prints the hex of the bytes
 *   tok_cli DIR --chat FAMILY reads JSON lines {"messages": [{"role", "content"}...], "response"};
 *                             prints "prompt ids | pair ids" per line
 */
#include "../../llama/tokenizer.h"
#include "../../clair.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hexval(int c) { return c <= '9' ? c - '0' : (c | 32) - 'a' + 10; }

int main(int argc, char **argv) {
    char err[512];
    tokenizer *t;
    static char line[1 << 22];
    int special = argc > 2 && !strcmp(argv[2], "--special");
    int decode = argc > 2 && !strcmp(argv[2], "--decode");
    int chat = argc > 3 && !strcmp(argv[2], "--chat");
    if (argc < 2) { fprintf(stderr, "usage: tok_cli DIR [--special|--decode|--chat FAMILY] < lines\n"); return 2; }
    if (tokenizer_load(&t, argv[1], chat ? argv[3] : NULL, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    while (fgets(line, sizeof line, stdin)) {
        size_t n = strcspn(line, "\r\n"), i;
        line[n] = 0;
        if (chat) {
            clair_json j;
            const clair_json *ms;
            tok_message m[64];
            tok_ids p = {0}, q = {0};
            size_t rs, k, nm = 0;
            if (clair_json_parse(line, n, &j, err, sizeof err)) { printf("ERR %s\n", err); continue; }
            ms = clair_json_get(&j, "messages");
            for (k = 0; ms && k < ms->n && k < 64; k++, nm++) {
                m[k].role = clair_json_get_str(&ms->items[k], "role");
                m[k].content = clair_json_get_str(&ms->items[k], "content");
            }
            if (tokenizer_chat_prompt(t, m, (int)nm, &p, err, sizeof err) ||
                tokenizer_chat_pair(t, m, (int)nm, clair_json_get_str(&j, "response"), &q, &rs, err, sizeof err))
                printf("ERR %s\n", err);
            else {
                for (k = 0; k < p.len; k++) printf(k ? " %d" : "%d", p.data[k]);
                printf(" |");
                for (k = 0; k < q.len; k++) printf(" %d", q.data[k]);
                printf("\n");
            }
            tok_ids_free(&p); tok_ids_free(&q);
            clair_json_free(&j);
        } else if (decode) {
            tok_ids ids = {0};
            char *p = line, *end, *out;
            size_t len;
            for (;;) { long v = strtol(p, &end, 10); if (end == p) break; tok_ids_push(&ids, (int)v); p = end; }
            if (tokenizer_decode(t, ids.data, ids.len, &out, &len, err, sizeof err)) printf("ERR %s\n", err);
            else { for (i = 0; i < len; i++) printf("%02x", (unsigned char)out[i]); printf("\n"); free(out); }
            tok_ids_free(&ids);
        } else {
            tok_ids ids = {0};
            size_t m = n / 2;
            for (i = 0; i < m; i++) line[i] = (char)(hexval(line[2 * i]) * 16 + hexval(line[2 * i + 1]));
            if (tokenizer_encode(t, line, m, special, &ids, err, sizeof err)) printf("ERR %s\n", err);
            else { for (i = 0; i < ids.len; i++) printf(i ? " %d" : "%d", ids.data[i]); printf("\n"); }
            tok_ids_free(&ids);
        }
        fflush(stdout);
    }
    tokenizer_free(t);
    return 0;
}
