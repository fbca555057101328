/* train/convert.h - models given as llama.cpp GGUF files: the tokenizer of a --model that may be
 * a checkpoint directory or a .gguf file, and `trainer convert` (a GGUF file into a Hugging Face
 * checkpoint directory). */
#ifndef TRAIN_CONVERT_H
#define TRAIN_CONVERT_H

#include <stddef.h>
#include "../llama/tokenizer.h"

/* The tokenizer of --model: tokenizer_load on a checkpoint directory, or the one in a GGUF file's
 * metadata (llama/gguf.h) when model ends in ".gguf". */
int model_tokenizer_load(tokenizer **out, const char *model, const char *chat_template, char *err, size_t errsz);
/* Says on stderr which chat template the data goes through (or that there is none, --raw-text):
 * a wrong template trains silently on other text than the user meant. */
void say_chat_template(const tokenizer *tok, int raw_text, const char *override);

/* 1 if model names an existing directory, or a GGUF file that exists. */
int model_exists(const char *model);

/* The command: trainer convert --model FILE.gguf --out DIR [--dtype fp32|bf16]. */
int cmd_convert(int argc, char **argv);

#endif /* TRAIN_CONVERT_H */
