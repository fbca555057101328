/* llama/json.c - the JSON reader/writer of llama/ and the trainer: clair.h's, compiled once here.
 *
 * The project has exactly one JSON implementation: the strict RFC 8259 reader and compact writer
 * in clair.h (its appendix). llama/ reads config.json, tokenizer.json, safetensors headers and
 * JSONL training records with it, the trainer its resumable state and metrics logs, and the clair
 * tool the reviser's replies. Why one and not a second, smaller parser here:
 *   - one set of rules: a file that one part of the project accepts, every part accepts; invalid
 *     UTF-8, lone surrogates, trailing commas or garbage and over-deep nesting are errors
 *     everywhere, with the same "line L, column C" message;
 *   - one place to test: the JSON corpus and the fuzzing in the clair unit tests cover all users.
 * The code lives in clair.h, not here, so that clair.h stays one self-contained file for anyone
 * who copies it alone. The trainer needs no HTTP: CLAIR_NO_CURL keeps libcurl out of it. */
#define CLAIR_NO_CURL
#define CLAIR_IMPLEMENTATION
#include "../clair.h"
