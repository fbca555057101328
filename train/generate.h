/* train/generate.h - `trainer generate`: sample the model's own answers to prompts (CLAIR's
 * first step: the rejected responses), many prompts at once with a KV cache, resumable,
 * reproducible per prompt whatever the batch size. */
#ifndef TRAIN_GENERATE_H
#define TRAIN_GENERATE_H

#include <stdint.h>

/* Samples a token from logits[V]: temperature 0 = greedy; else softmax(logits / T) restricted
 * to the smallest set of most likely tokens whose probability reaches top_p (nucleus sampling).
 * work: scratch of V entries. */
typedef struct {
    float p;
    int id;
} prob_id;
int sample_token(const float *logits, int V, double temperature, double top_p, uint64_t *rng, prob_id *work);

/* The command: trainer generate --model DIR --prompts FILE --out FILE [flags]. */
int cmd_generate(int argc, char **argv);

#endif /* TRAIN_GENERATE_H */
