# mk/05-headers.sh - the single-file headers pasted alone (sourced by build.sh; see its header).
# Variables from build.sh: CC NVCC CFLAGS OMP BUILD SAN mode and the object lists; helpers:
# cc_obj, cc_prog, run_test NAME CMD...
#
# apo.h and clair.h are meant to be copied into other projects by themselves.
# tests/headers/check_header.sh copies each one ALONE into an empty directory and compiles it
# there (C99 with gcc and clang, C++11 with g++ and clang++, -pedantic -Wall -Wextra -Werror, in
# every mode it offers), compiles every example of its documentation, and checks that it ends
# with its license and names no file of this repository.

build_headers() { :; }   # nothing to build: the test compiles the headers itself

test_headers() {
  run_test header_apo bash tests/headers/check_header.sh apo.h APO
  run_test header_clair bash tests/headers/check_header.sh clair.h CLAIR
}
