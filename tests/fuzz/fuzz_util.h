/* tests/fuzz/fuzz_util.h - what the file-based fuzz targets share: the input written to a file
 * of this process's own (the loaders read paths, not memory). libFuzzer calls
 * LLVMFuzzerTestOneInput once per input, in one process; a crash, leak, sanitizer report or
 * timeout is a finding. Built and run by mk/90-fuzz.sh (./build.sh asan).
 */
#ifndef FUZZ_UTIL_H
#define FUZZ_UTIL_H

#define _POSIX_C_SOURCE 200809L
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* $TMPDIR/<prefix>.<pid>: a directory for this process's files, made once. */
static const char *fuzz_dir(const char *prefix) {
    static char dir[512];
    if (!dir[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/%s.%ld", t && *t ? t : "/tmp", prefix, (long)getpid());
        mkdir(dir, 0700);
    }
    return dir;
}

/* Writes data to dir/name; the path into path[n]. Exits when it cannot (the disk, not a finding). */
static void fuzz_write(const char *dir, const char *name, const uint8_t *data, size_t size, char *path, size_t n) {
    FILE *fp;
    snprintf(path, n, "%s/%s", dir, name);
    remove(path); /* rewriting in place would flush on truncate (ext4): slower by far */
    fp = fopen(path, "wb");
    if (!fp || (size && fwrite(data, 1, size, fp) != size) || fclose(fp)) {
        fprintf(stderr, "fuzz: cannot write %s\n", path);
        exit(2);
    }
}

#endif /* FUZZ_UTIL_H */
