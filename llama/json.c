/* llama/json.c - compiles clair.h's JSON reader/writer once for the trainer and its tools.
 * The project has one JSON implementation (clair.h); the trainer needs no HTTP, so curl is off. */
#define CLAIR_NO_CURL
#define CLAIR_IMPLEMENTATION
#include "../clair.h"
