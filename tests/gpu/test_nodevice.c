/* tests/gpu/test_nodevice.c - the CUDA backend's refusals, checked on any machine.
 *
 * Without a GPU (CI, most build machines): llama_cuda_backend_create must return NULL with a
 * message saying there is no CUDA device - not crash, not exit. With a GPU: a device index that
 * does not exist, lean mode without bf16, a negative max_seq_tokens, and a model that cannot fit
 * (Llama-3-70B shape in fp32, 16 bytes/param = 1.1 TB) must each be refused with a message
 * naming the problem (the last one with the memory plan). The emulator build of this test
 * (device present, 64 GiB "free") checks the GPU-side refusals without a GPU. */
#include <stdio.h>
#include <string.h>
#include <cuda_runtime_api.h>
#include "../../llama/model.h"

static int fails = 0;

static void expect_refusal(const char *what, const llama_model *m, const llama_cuda_opts *o, const char *needle)
{
    char err[512] = "";
    llama_backend *b = llama_cuda_backend_create(m, o, err, sizeof err);
    if (b) {
        printf("FAIL %s: backend created, expected a refusal\n", what);
        b->destroy(b);
        fails++;
    } else if (!strstr(err, needle)) {
        printf("FAIL %s: message \"%s\" does not contain \"%s\"\n", what, err, needle);
        fails++;
    } else {
        printf("ok   %s: \"%s\"\n", what, err);
    }
}

static llama_config cfg_of(int V, int D, int I, int L, int H, int K)
{
    llama_config c;
    memset(&c, 0, sizeof c);
    c.vocab_size = V; c.hidden_size = D; c.intermediate_size = I; c.num_hidden_layers = L;
    c.num_attention_heads = H; c.num_key_value_heads = K; c.head_dim = D / H;
    c.rms_norm_eps = 1e-5f; c.rope_theta = 500000.0; c.max_position_embeddings = 8192;
    c.bos_token_id = -1; c.initializer_range = 0.02;
    return c;
}

int main(void)
{
    llama_model m;
    memset(&m, 0, sizeof m);                 /* params NULL: a config-only model */
    m.cfg = cfg_of(256, 64, 128, 2, 4, 2);
    llama_cuda_opts opts;
    memset(&opts, 0, sizeof opts);
    opts.max_tokens = 64;

    int n_devices = 0;
    cudaError_t e = cudaGetDeviceCount(&n_devices);
    if (e != cudaSuccess || n_devices == 0) {
        printf("no CUDA device here (%s): checking the no-device refusal\n",
               e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        expect_refusal("no device", &m, &opts, "no CUDA device");
        opts.bf16 = 1; opts.lean_optimizer = 1;
        expect_refusal("no device, bf16 lean", &m, &opts, "no CUDA device");
    } else {
        printf("%d CUDA device(s): checking refusals on a real device\n", n_devices);
        opts.device = n_devices + 7;
        expect_refusal("device index out of range", &m, &opts, "does not exist");
        opts.device = 0; opts.lean_optimizer = 1; opts.bf16 = 0;
        expect_refusal("lean without bf16", &m, &opts, "needs bf16");
        opts.lean_optimizer = 0; opts.max_tokens = 0;
        expect_refusal("max_tokens 0", &m, &opts, "max_tokens");
        m.cfg = cfg_of(128256, 8192, 28672, 80, 64, 8);   /* Llama-3-70B: 1.1 TB in fp32, fits no GPU */
        opts.max_tokens = 1024; opts.verbose = 1;
        expect_refusal("70B in fp32 does not fit", &m, &opts, "will not fit");
        expect_refusal("the refusal names the plan", &m, &opts, "memory plan (fp32");
        opts.max_tokens = 64; opts.max_seq_tokens = -1;
        expect_refusal("max_seq_tokens -1", &m, &opts, "max_seq_tokens");
    }
    if (fails) { printf("%d check(s) failed\n", fails); return 1; }
    printf("all refusals clear\n");
    return 0;
}
