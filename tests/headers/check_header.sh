#!/usr/bin/env bash
# tests/headers/check_header.sh HEADER PREFIX - proves that a single-file header can be pasted
# into another project alone:   tests/headers/check_header.sh clair.h CLAIR
#
#   1. The header is copied ALONE into a fresh empty directory and compiled there with
#      `#define PREFIX_IMPLEMENTATION`, as C99 (gcc, clang) and C++11 (g++, clang++), with
#      -pedantic -Wall -Wextra -Werror. A compiler that is not installed is reported and skipped.
#      Options the header offers are compiled too: PREFIX_STATIC, and PREFIX_NO_CURL (then the
#      default, with curl, only where <curl/curl.h> exists).
#   2. Every example in its documentation compiles on its own (-c), in both languages. An
#      example is a fence inside the comment: a line " *   ```c" opens it, " *   ```" closes it;
#      the " *" prefix and the common indentation are removed. An example whose first line is
#      `// needs curl` (or `/* needs curl */`) is compiled only where <curl/curl.h> exists; the
#      others are compiled with PREFIX_NO_CURL when the header has that option, so they must not
#      need libcurl. A failure names the example's line in the header.
#   3. The text: the header ends with its license block ("LICENSE: two licenses, use whichever
#      you prefer." near the end, nothing but comment after it), names no file of this
#      repository that a copier would not have, and has at least one example.
#
# One line per check. Exit 0 all passed, 1 something failed, 77 no compiler at all (skipped).
set -u

if [ $# -ne 2 ]; then echo "usage: $0 HEADER PREFIX   (e.g. $0 clair.h CLAIR)" >&2; exit 2; fi
src=$1 prefix=$2
[ -f "$src" ] || { echo "FAIL  $src: no such file"; exit 1; }
name=$(basename "$src")

work=$(mktemp -d "${TMPDIR:-/tmp}/check_header.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
cp "$src" "$work/$name"
hdr="$work/$name"

checks=0 failures=0
ok()   { checks=$((checks + 1)); echo "ok    $*"; }
fail() { checks=$((checks + 1)); failures=$((failures + 1)); echo "FAIL  $*"; }
note() { echo "note  $*"; }

# ---------------------------------------------------------------------------------- the text

lines=$(wc -l <"$hdr")
lic=$(grep -n -F 'LICENSE: two licenses, use whichever you prefer.' "$hdr" | tail -n 1 | cut -d: -f1)
if [ -z "$lic" ]; then
  fail "license: no line 'LICENSE: two licenses, use whichever you prefer.' in $name"
elif [ $((lines - lic)) -gt 40 ]; then
  fail "license: the license block starts at $name:$lic, $((lines - lic)) lines before the end (must be the last lines)"
elif tail -n +"$((lic + 1))" "$hdr" | grep -v -q -E '^ \*( |$)|^ \*/$'; then
  bad=$(tail -n +"$((lic + 1))" "$hdr" | grep -n -v -E '^ \*( |$)|^ \*/$' | head -n 1)
  fail "license: not the end of $name: line $((lic + ${bad%%:*})) after it is not comment: ${bad#*:}"
elif [ "$(tail -n 1 "$hdr")" != " */" ]; then
  fail "license: $name does not end with the license block's closing ' */'"
else
  ok "license block at the end ($name:$lic)"
fi

path_ok=1
for p in docs/ tests/ tools/ llama/ trainer.c clair.c kernels.cu; do
  while IFS= read -r hit; do
    [ -n "$hit" ] || continue
    fail "self-contained: $name:${hit%%:*} names '$p', which a copier does not have: ${hit#*:}"
    path_ok=0
  done < <(grep -n -F -- "$p" "$hdr")
done
[ $path_ok -eq 1 ] && ok "self-contained: no repository paths in $name"

# Extract the examples: snip_LINE.c holds the example whose first line is LINE of the header;
# the file "snippets" lists the LINEs in order.
awk -v dir="$work" '
  function text(s) { sub(/^[ \t]*\*/, "", s); return s }
  {
    t = text($0); gsub(/^[ \t]+|[ \t]+$/, "", t)
    if (!in_snip && $0 ~ /^[ \t]*\*/ && t == "```c") { in_snip = 1; start = NR + 1; n = 0; next }
    if (in_snip && t == "```") {
      # remove the indentation common to all non-blank lines
      ind = -1
      for (i = 1; i <= n; i++) if (body[i] ~ /[^ \t]/) { match(body[i], /^ */); if (ind < 0 || RLENGTH < ind) ind = RLENGTH }
      f = dir "/snip_" start ".c"
      printf "" > f
      for (i = 1; i <= n; i++) print (body[i] ~ /[^ \t]/ ? substr(body[i], ind + 1) : "") > f
      close(f); print start > (dir "/snippets"); in_snip = 0; next
    }
    if (in_snip) body[++n] = text($0)
  }
  END { if (in_snip) print start - 1 > (dir "/unclosed") }
' "$hdr"
if [ -f "$work/unclosed" ]; then
  fail "examples: the fence opened at $name:$(cat "$work/unclosed") is never closed (a line ' *   \`\`\`')"
fi
snips=$(cat "$work/snippets" 2>/dev/null)
if [ -z "$snips" ]; then
  fail "examples: $name has no example (a fenced ' *   \`\`\`c' block in its comment)"
else
  ok "examples: $(echo "$snips" | wc -l) found in $name (lines $(echo "$snips" | paste -s -d, -))"
fi

# ------------------------------------------------------------------------------ the compilers

has_option() { grep -q -- "$1" "$hdr"; }
no_curl_opt=""; static_opt=""
has_option "${prefix}_NO_CURL" && no_curl_opt="-D${prefix}_NO_CURL"
has_option "${prefix}_STATIC" && static_opt="-D${prefix}_STATIC"

# Each compiler: label, command, language flags.
compilers=(
  "gcc|gcc|-x c -std=c99"
  "clang|clang|-x c -std=c99"
  "g++|g++|-x c++ -std=c++11"
  "clang++|clang++|-x c++ -std=c++11"
)
strict="-pedantic -Wall -Wextra -Werror"
found=0

# compile LABEL CMD LANGFLAGS SOURCE DEFINES...: compiles in the header's directory; on failure
# prints the compiler's messages, indented.
compile() {
  local label=$1 cmd=$2 lang=$3 file=$4; shift 4
  local log="$work/compile.log"
  # shellcheck disable=SC2086
  if (cd "$work" && $cmd $lang $strict "$@" -c "$file" -o "$work/out.o") >"$log" 2>&1; then return 0; fi
  sed 's/^/        /' "$log" | head -n 30
  return 1
}

printf '#define %s_IMPLEMENTATION\n#include "%s"\n#include "%s"   /* a second include changes nothing */\n' \
  "$prefix" "$name" "$name" >"$work/main.c"

for entry in "${compilers[@]}"; do
  IFS='|' read -r label cmd lang <<<"$entry"
  if ! command -v "$cmd" >/dev/null 2>&1; then note "$label not installed: its checks skipped"; continue; fi
  found=1
  std=${lang##* -std=}
  have_curl=0
  if [ -n "$no_curl_opt" ]; then
    # shellcheck disable=SC2086
    if echo '#include <curl/curl.h>' | (cd "$work" && $cmd $lang -E - -o /dev/null) >/dev/null 2>&1; then
      have_curl=1
    else
      note "$label: <curl/curl.h> not found: $name compiled with $no_curl_opt only"
    fi
  fi
  # the header in each mode it offers
  modes=()
  if [ -z "$no_curl_opt" ] || [ $have_curl -eq 1 ]; then modes+=(""); fi
  [ -n "$no_curl_opt" ] && modes+=("$no_curl_opt")
  if [ -n "$static_opt" ]; then
    if [ -z "$no_curl_opt" ] || [ $have_curl -eq 1 ]; then modes+=("$static_opt"); else modes+=("$static_opt $no_curl_opt"); fi
  fi
  for m in "${modes[@]}"; do
    # shellcheck disable=SC2086
    if compile "$label" "$cmd" "$lang" main.c $m; then ok "compile $name alone: $label -std=$std${m:+ $m}"
    else fail "compile $name alone: $label -std=$std${m:+ $m}"; fi
  done
  # the examples
  for s in $snips; do
    first=$(grep -m 1 -v '^[[:space:]]*$' "$work/snip_$s.c")
    defs=$no_curl_opt
    case "$first" in
      "// needs curl"*|"/* needs curl */"*)
        if [ -z "$no_curl_opt" ]; then defs=""
        elif [ $have_curl -eq 1 ]; then defs=""
        else note "example at $name:$s needs curl: not compiled with $label (no <curl/curl.h>)"; continue; fi ;;
    esac
    { printf '#define %s_IMPLEMENTATION\n#include "%s"\n#line %s "%s"\n' "$prefix" "$name" "$s" "$name"
      cat "$work/snip_$s.c"; } >"$work/example.c"
    # shellcheck disable=SC2086
    if compile "$label" "$cmd" "$lang" example.c $defs; then ok "example at $name:$s: $label -std=$std${defs:+ $defs}"
    else fail "example at $name:$s: $label -std=$std${defs:+ $defs} (compiler messages above)"; fi
  done
done

echo "check_header $name: $checks checks, $failures failed"
[ $failures -eq 0 ] || exit 1
if [ $found -eq 0 ]; then echo "SKIP no C or C++ compiler installed (gcc, clang, g++, clang++)"; exit 77; fi
exit 0
