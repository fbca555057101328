/* tests/clair/test_http.c - the request engine's own contracts, without a server:
 * backoff bounds and growth, Retry-After replacing and capping it, and a run against a closed
 * port (connection refused) that retries max_attempts times and reports CLAIR_REQ_CONNECTION,
 * one done() per job, with next() pulled until it says no more. */
#define CLAIR_IMPLEMENTATION
#include "../../clair.h"
#include <stdio.h>
#include <string.h>

static int fails = 0;
#define CHECK(c, ...) do { if (!(c)) { fails++; fprintf(stderr, "FAIL line %d: ", __LINE__); fprintf(stderr, __VA_ARGS__); fprintf(stderr, "\n"); } } while (0)

typedef struct { int issued, done, connection_errors, attempts_ok; } ctx_t;

static int next(void *ctx, clair_job *job) {
    ctx_t *c = (ctx_t *)ctx;
    if (c->issued == 5) return 0;
    job->body = (char *)malloc(3); memcpy(job->body, "{}", 3); job->body_len = 2;
    job->user = (void *)(size_t)c->issued++;
    return 1;
}

static void done(void *ctx, clair_job *job) {
    ctx_t *c = (ctx_t *)ctx;
    c->done++;
    c->connection_errors += job->error == CLAIR_REQ_CONNECTION;
    c->attempts_ok += job->attempts == 3;
    CHECK(strstr(job->message, "gave up after 3 attempts") != NULL, "message: %s", job->message);
}

int main(void) {
    clair_http_opts o;
    unsigned long long rng = 42;
    int k;
    memset(&o, 0, sizeof o);
    o.backoff_s = 1; o.backoff_max_s = 8; o.retry_after_max_s = 30;
    for (k = 1; k <= 8; k++) {
        double want = k == 1 ? 1 : k == 2 ? 2 : k == 3 ? 4 : 8, lo = 1e9, hi = 0;
        int t;
        for (t = 0; t < 2000; t++) { double d = clair_backoff_s(&o, k, -1, &rng); if (d < lo) lo = d; if (d > hi) hi = d; }
        CHECK(lo >= 0.5 * want && hi < want && hi > 0.95 * want && lo < 0.55 * want, "attempt %d: jitter range [%g, %g], want [%g, %g)", k, lo, hi, 0.5 * want, want);
    }
    CHECK(clair_backoff_s(&o, 1, 7, &rng) == 7, "Retry-After replaces the backoff");
    CHECK(clair_backoff_s(&o, 1, 0, &rng) == 0, "Retry-After: 0 means now");
    CHECK(clair_backoff_s(&o, 1, 1000, &rng) == 30, "Retry-After is capped");

    /* a closed port: every attempt is refused at once */
    ctx_t c;
    char err[200];
    memset(&c, 0, sizeof c);
    o.url = "http://127.0.0.1:9/v1/chat/completions";      /* discard port: nothing listens */
    o.concurrency = 2; o.max_attempts = 3; o.backoff_s = 0.01; o.backoff_max_s = 0.02; o.seed = 1;
    struct timeval t0, t1;
    gettimeofday(&t0, NULL);
    CHECK(clair_http_run(&o, next, done, &c, err, sizeof err) == 0, "run: %s", err);
    gettimeofday(&t1, NULL);
    double el = (double)(t1.tv_sec - t0.tv_sec) + 1e-6 * (double)(t1.tv_usec - t0.tv_usec);
    /* 10 retries of <= 20 ms each, 2 at a time: retries must start on time, not at the next
     * half-second poll (a bug this test caught: 3 s) */
    CHECK(el < 1.0, "15 refused attempts took %.2f s", el);
    CHECK(c.issued == 5 && c.done == 5, "issued %d, done %d", c.issued, c.done);
    CHECK(c.connection_errors == 5 && c.attempts_ok == 5, "connection errors %d, 3 attempts %d", c.connection_errors, c.attempts_ok);
    printf("%s\n", fails ? "FAILED" : "http engine contracts ok");
    return fails ? 1 : 0;
}
