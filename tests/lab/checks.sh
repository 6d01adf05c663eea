# shellcheck shell=bash
# Sourced by the guest scripts that run many independent checks
# (openssl.sh, pkcs11-tool.sh, threads.sh). The caller sets `suite` (the name
# on its summary line) and `work` (a temporary directory) first, records key
# ids it loads in `loaded` and a background server's pid in `server_pid`, and
# ends with `summary`. Every check runs even when an earlier one failed.
pass=0 failed=0 failures=()
: "${suite:?set suite before sourcing checks.sh}" "${work:?set work before sourcing checks.sh}"
loaded=() server_pid=

# A failure that makes the remaining checks meaningless.
die() { echo "FAIL: $*" >&2; echo "$suite: $pass passed, $((failed + 1)) failed (setup failed)"; exit 1; }
ok() { echo "ok - $*"; pass=$((pass + 1)); }
fail() { echo "FAIL: $*" >&2; failed=$((failed + 1)); failures+=("$*"); }
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  for id in "${loaded[@]:-}"; do
    if [ -n "$id" ]; then keyctl unlink "$id" @u > /dev/null 2>&1 || true; fi
  done
  rm -rf "$work"
}
trap cleanup EXIT

# check DESCRIPTION FUNCTION ARGS...: one independent check. FUNCTION prints
# what went wrong and returns non-zero; its output is shown only on failure.
check() {
  local what=$1; shift
  if "$@" > "$work/check.log" 2>&1; then ok "$what"; else
    fail "$what"
    # The reason is at the top (a dump follows it) and where the program
    # stopped at the end: a long log keeps both.
    local n
    n=$(wc -l < "$work/check.log")
    if [ "$n" -le 100 ]; then
      sed 's/^/#   /' "$work/check.log" >&2
    else
      { head -n 40 "$work/check.log"; echo "... ($((n - 100)) lines left out)"; tail -n 60 "$work/check.log"; } \
        | sed 's/^/#   /' >&2
    fi
  fi
}

# The line guest.sh reads, and the exit status.
summary() {
  if [ "$failed" -ne 0 ]; then
    echo "# failed checks:" >&2
    for f in "${failures[@]}"; do echo "#   $f" >&2; done
  fi
  echo "$suite: $pass passed, $failed failed"
  [ "$failed" -eq 0 ]
}
