/* tests/hub/hub_cli.c - resolves a model id as ./trainer does (train/hub.c), for tests/hub/run.sh:
 * the build links it with train/hub.c compiled without libcurl, to test that variant on machines
 * that have libcurl too.
 *
 *   hub_cli [--tokenizer] ORG/NAME[@REVISION]    prints the snapshot directory; exit 1 on failure */
#include <stdio.h>
#include <string.h>

#include "../../train/hub.h"
#include "../../util.h"

int main(int argc, char **argv) {
    char dir[4096], err[2048];
    int tok = argc > 2 && !strcmp(argv[1], "--tokenizer");
    if (argc != 2 + tok) {
        fprintf(stderr, "usage: hub_cli [--tokenizer] ORG/NAME[@REVISION]\n");
        return 2;
    }
    if (hub_resolve(argv[1 + tok], tok ? HUB_TOKENIZER : HUB_MODEL, dir, sizeof dir, err, sizeof err))
        return report("hub_cli", "%s", err);
    printf("%s\n", dir);
    return 0;
}
