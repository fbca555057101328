/* tests/fuzz/fuzz_reply.c - a server's reply: the /chat/completions JSON through clair_json_parse
 * and clair_chat_content, and the text through clair_parse_reply (with the default markers,
 * and with a marker taken from the input's first line). Spans must lie inside the text. */
#include "../../clair.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_reply(const char *s, size_t n, const char *marker) {
    clair_reply r;
    memset(&r, 0, sizeof r);
    if (clair_parse_reply(s, n, marker, &r) != CLAIR_PARSE_OK) return;
    if (r.rationale && (r.rationale < s || r.rationale + r.rationale_len > s + n)) abort();
    if (!r.revision || r.revision < s || r.revision + r.revision_len > s + n || r.marker_off > n) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *s = (const char *)data;
    char err[256], marker[64];
    clair_json v;
    const char *nl = (const char *)memchr(s, '\n', size);
    check_reply(s, size, NULL);
    if (nl && nl > s && (size_t)(nl - s) < sizeof marker && !memchr(s, 0, (size_t)(nl - s))) {
        memcpy(marker, s, (size_t)(nl - s));
        marker[nl - s] = 0;
        check_reply(nl + 1, size - (size_t)(nl + 1 - s), marker);
    }
    if (clair_json_parse(s, size, &v, err, sizeof err) == 0) {
        const char *content = NULL;
        size_t len = 0;
        if (clair_chat_content(&v, &content, &len, err, sizeof err) == 0) {
            if (!content) abort();
            check_reply(content, len, NULL);
        } else if (!err[0]) {
            abort();
        }
        clair_json_free(&v);
    }
    return 0;
}
