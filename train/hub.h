/* train/hub.h - Hugging Face model ids (`--model ORG/NAME[@REVISION]`) for the trainer.
 *
 * An id resolves to a snapshot directory of the local Hugging Face cache, the one that
 * huggingface_hub, transformers and the `hf` command line share:
 *
 *   CACHE/models--ORG--NAME/refs/REVISION          the commit a branch or tag points to
 *   CACHE/models--ORG--NAME/snapshots/COMMIT/FILE  relative symlink -> ../../blobs/ETAG
 *   CACHE/models--ORG--NAME/blobs/ETAG             the content (ETAG: sha256 of an LFS file,
 *                                                   the git blob sha1 of any other file)
 *
 * CACHE is $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub. Files missing there
 * are downloaded from $HF_ENDPOINT (default https://huggingface.co) with $HF_TOKEN (else the
 * token file `hf auth login` writes), resumably (blobs/ETAG.incomplete + HTTP Range), each one
 * checked against its ETag before it is renamed into place. HF_HUB_OFFLINE=1 never touches the
 * network. Only the files the trainer reads are fetched: config.json, the tokenizer files,
 * generation_config.json, and model.safetensors or model.safetensors.index.json + its shards.
 *
 * Downloading needs libcurl (the build defines TRAIN_HUB_CURL when its headers exist); without
 * it, ids still resolve from the cache and a missing model gets a message saying how to fetch it.
 */
#ifndef TRAIN_HUB_H
#define TRAIN_HUB_H

#include <stddef.h>

/* What an id must provide: a whole model, or (trainer init --tokenizer) its tokenizer only. */
typedef enum { HUB_MODEL, HUB_TOKENIZER } hub_need;

/* 1 if arg has the form of a model id (ORG/NAME or ORG/NAME@REVISION, the hub's characters)
 * and names no existing file or directory: a path that exists always stays a path. */
int hub_is_model_id(const char *arg);

/* Resolves id to a snapshot directory holding what `need` asks for, downloading what is missing
 * (progress on stderr). dir gets the path. 0, or -1 with a sentence in err that says what went
 * wrong (gated model without a token, no such model or revision, no network, offline mode with
 * an empty cache, a download that fails its checksum) and what to do. */
int hub_resolve(const char *id, hub_need need, char *dir, size_t dirsz, char *err, size_t errsz);

/* For a command line: every value of --model and --ref (whole models) and --tokenizer (the
 * tokenizer only), as "--flag VALUE" or "--flag=VALUE", that hub_is_model_id accepts is
 * replaced in argv by its snapshot directory (the strings live until the program exits).
 * Nothing happens when the line asks for --help. 0, or -1 with the message in err. */
int hub_resolve_args(int argc, char **argv, char *err, size_t errsz);

#endif /* TRAIN_HUB_H */
