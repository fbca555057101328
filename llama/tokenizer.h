/* llama/tokenizer.h - text to token ids exactly as Hugging Face `tokenizers` does it, and the
 * chat templates preference training needs (recognised by family; we do not run Jinja).
 *
 * Supported: byte-level BPE (Llama 3 / 3.1 / 3.2, SmolLM / SmolLM2, GPT-2) with their Split
 * regex pre-tokenizers, and the sentencepiece-style BPE of Llama 2 / TinyLlama (Metaspace,
 * byte fallback <0xNN>). Anything else is refused with a message naming the field.
 *
 * Errors: 0 on success, -1 with a message in `err` (file, field, what to do). No exit().
 */
#ifndef LLAMA_TOKENIZER_H
#define LLAMA_TOKENIZER_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tokenizer tokenizer;

/* A growable array of token ids. Zero-initialise it; tok_ids_free releases it. */
typedef struct { int *data; size_t len, cap; } tok_ids;
int tok_ids_push(tok_ids *v, int id);
void tok_ids_free(tok_ids *v);

/* Loads dir/tokenizer.json and, when present, dir/tokenizer_config.json (special tokens, chat
 * template). chat_template: NULL to recognise the template from tokenizer_config.json, or a
 * family name to override it: "llama3", "chatml", "llama2" (also "llama3.1": Llama 3.1/3.2/3.3
 * templates, with the dated default system block; see docs/design.md). */
int tokenizer_load(tokenizer **out, const char *dir, const char *chat_template,
                   char *err, size_t errsz);
/* The same from the texts of tokenizer.json and tokenizer_config.json (config_json may be NULL),
 * e.g. as gguf_tokenizer_json builds them from a GGUF file's metadata; `what` names their source
 * in messages. */
int tokenizer_load_json(tokenizer **out, const char *tokenizer_json, size_t tokenizer_len,
                        const char *config_json, size_t config_len, const char *what,
                        const char *chat_template, char *err, size_t errsz);
void tokenizer_free(tokenizer *t);

int tokenizer_vocab_size(const tokenizer *t);       /* model vocab + added tokens */
int tokenizer_bos_id(const tokenizer *t);           /* -1 when none */
int tokenizer_eos_id(const tokenizer *t);           /* the end-of-text / end-of-turn used to stop generation */
int tokenizer_token_id(const tokenizer *t, const char *token);   /* -1 when unknown */

/* Appends the ids of text[0..len) to out, as tokenizers' encode(text, add_special_tokens=False).
 * allow_special: 1 to turn special/added-token text (e.g. "<|eot_id|>") into those tokens; 0 to
 * encode such text as ordinary text (user content must never become a control token). */
int tokenizer_encode(const tokenizer *t, const char *text, size_t len, int allow_special,
                     tok_ids *out, char *err, size_t errsz);

/* Decodes ids into a NUL-terminated malloc'd string (*out_len excludes the NUL). */
int tokenizer_decode(const tokenizer *t, const int *ids, size_t n, char **out, size_t *out_len,
                     char *err, size_t errsz);

/* Streaming decode for generation: feed one id at a time; bytes of an incomplete UTF-8
 * character are held back until complete. Returns the number of bytes written to buf (at most
 * bufsz; 64 is always enough for one token plus held bytes is NOT guaranteed, use >= 256).
 * -1 (nothing consumed) when id is not a token or buf cannot take the held bytes + this token. */
typedef struct { unsigned char pending[8]; int n_pending; int started; } tok_stream;
int tokenizer_decode_stream(const tokenizer *t, tok_stream *s, int id, char *buf, size_t bufsz);

/* ---- Chat templates ---- */
typedef struct { const char *role; const char *content; } tok_message;  /* role: system/user/assistant */

/* The template family in use: "llama3", "llama3.1", "chatml", "llama2", or NULL if none was recognised
 * (the chat functions then fail with a message suggesting --chat-template). */
const char *tokenizer_chat_template(const tokenizer *t);

/* The ids of a conversation followed by the generation prompt (the assistant header), as
 * tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True). Message
 * contents are encoded with allow_special = 0. */
int tokenizer_chat_prompt(const tokenizer *t, const tok_message *msgs, int n_msgs,
                          tok_ids *out, char *err, size_t errsz);

/* Prompt + response, for preference training: out = the ids of tokenizer_chat_prompt(msgs)
 * (an exact prefix) followed by the ids of the assistant response and the template's end-of-turn
 * token(s). *response_start = index of the first response id in out. */
int tokenizer_chat_pair(const tokenizer *t, const tok_message *msgs, int n_msgs,
                        const char *response, tok_ids *out, size_t *response_start,
                        char *err, size_t errsz);

#ifdef __cplusplus
}
#endif
#endif /* LLAMA_TOKENIZER_H */
