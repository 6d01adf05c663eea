#!/usr/bin/env bash
# Everything that needs a real kernel, run inside one lab guest (lab/test
# starts this twice per kernel, KP11_GUEST_PART below): every test binary in KP11_TEST_BINS with
# --include-ignored, the guest scripts registered in tests/lab/manifest (in
# its order), and the quickstart as a non-root user. Needs: KP11_TEST_BINS
# (test executables built on the host), KEYRING_PKCS11_MODULE,
# KEYRING_PKCS11_TEST_KEYS, KEYRING_PKCS11_TEST_HOOKS_MODULE.
#
# What ran is checked against the manifest (tests/lab/manifest-check): a
# binary or script that did not run or passed fewer than registered, or one
# that is not registered, fails the guest. The last line is what lab/test reads:
#   == guest KVER: P passed, F failed; expected at least E (tests/lab/manifest)
set -uo pipefail

: "${KP11_TEST_BINS:?}" "${KEYRING_PKCS11_MODULE:?}" "${KEYRING_PKCS11_TEST_KEYS:?}" "${KEYRING_PKCS11_TEST_HOOKS_MODULE:?}"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
passed=0 failed=0 suites_failed=()
results=$(mktemp) log=$(mktemp)

# KP11_GUEST_PART: "guest" (the default: everything but the parser's
# absence) or "no-parser" (tests/lab/no-parser.sh, then tests/no_parser.rs,
# in a freshly booted guest before anything there has made a private key:
# unloading pkcs8_key_parser under a key it parsed oopses the kernel). It
# names the manifest entries this guest must run.
part=${KP11_GUEST_PART:-guest}
case "$part" in guest|no-parser) ;; *) echo "guest: KP11_GUEST_PART=$part: guest or no-parser" >&2; exit 2 ;; esac

echo "== guest: kernel $(uname -r) ($part)"
# The lab must really be able to hold private keys; otherwise every test
# below would fail for a reason that has nothing to do with the module.
if [ "$part" = guest ]; then
  probe=$(openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 2>/dev/null | openssl pkcs8 -topk8 -outform DER -nocrypt | keyctl padd asymmetric kp11-probe @s 2>&1) \
    || { echo "guest: this kernel cannot hold a PKCS#8 private key ($probe); modprobe pkcs8_key_parser" >&2; exit 3; }
  keyctl unlink "$probe" @s > /dev/null
else
  modprobe pkcs8_key_parser || { echo "guest: no pkcs8_key_parser module in this kernel" >&2; exit 3; }
fi

# record NAME PASSED FAILED: one line for the manifest check, and how long
# NAME took since the last record (what a CI budget is made of).
last=$SECONDS
record() {
  echo "$1 $2 $3" >> "$results"
  passed=$((passed + $2)); failed=$((failed + $3))
  echo "== guest: $1: $2 passed, $3 failed, $((SECONDS - last)) s"
  last=$SECONDS
}

run_bins() {
  for bin in $KP11_TEST_BINS; do
    base=$(basename "$bin")
    name=tests/${base%-*}.rs          # cargo names test executables NAME-HASH
    echo "== guest: $name (all tests, including the kernel ones)"
    if "$bin" --include-ignored 2>&1 | tee "$log"; then :; else suites_failed+=("$name"); fi
    read -r p f < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } } END { print p + 0, f + 0 }' "$log")
    if grep -qE '^test result:' "$log"; then record "$name" "$p" "$f"; else
      suites_failed+=("$name (no result line)"); record "$name" 0 1
    fi
  done
}

run_scripts() {
  # Real clients end to end; each script ends with "NAME: N passed, M failed".
  # A script that stops at its first failure prints no such line: its passes
  # are its "ok - " lines, plus one failure.
  scripts=$(awk -v part="$part" '$1 == part && $2 ~ /^tests\/lab\/.*\.sh$/ { print $2 }' "$here/manifest")
  for script in $scripts; do
    suite=$(basename "$script" .sh)
    echo "== guest: $script (real clients)"
    if "$top/$script" "$KEYRING_PKCS11_MODULE" "$KEYRING_PKCS11_TEST_KEYS" 2>&1 | tee "$log"; then :; else suites_failed+=("$script"); fi
    read -r p f < <(sed -nE "s/^$suite: ([0-9]+) passed, ([0-9]+) failed.*/\1 \2/p" "$log" | tail -n 1)
    if [ -n "${p:-}" ]; then record "$script" "$p" "$f"; else
      record "$script" "$(grep -c '^ok - ' "$log")" 1
    fi
  done
  # Every executable script here but this runner is a guest script: one that
  # is not in the manifest would never run.
  for f in "$here"/*.sh; do
    [ -x "$f" ] && [ "$f" != "$here/guest.sh" ] || continue
    grep -q " tests/lab/$(basename "$f") " <(awk '$1 == "guest" || $1 == "no-parser" { print " " $2 " " }' "$here/manifest") \
      || record "tests/lab/$(basename "$f")" 0 0
  done
}

if [ "$part" = guest ]; then
  run_bins
  run_scripts
else
  # The scripts first: the test binary makes keys once the parser is back.
  run_scripts
  run_bins
fi

if [ "$part" = guest ]; then
  # The quickstart as an ordinary user would run it natively (non-root sshd).
  echo "== guest: quickstart (lab/lib/demo-ssh) as a non-root user"
  id kp11demo > /dev/null 2>&1 || useradd -m kp11demo
  # A login session of its own with @u linked, as pam_keyinit gives a login.
  if runuser -u kp11demo -- keyctl session - bash -c 'keyctl link @u @s && exec "$0" "$1"' \
      "$top/lab/lib/demo-ssh" "$KEYRING_PKCS11_MODULE" 2>&1 | tee "$log" && grep -qx "demo: OK" "$log"; then
    record lab/lib/demo-ssh 1 0
  else
    record lab/lib/demo-ssh 0 1; suites_failed+=("demo-ssh")
  fi
fi

echo "== guest: what ran, against tests/lab/manifest"
"$here/manifest-check" "$part" "$results" | tee "$log"
manifest_rc=${PIPESTATUS[0]}
((manifest_rc == 0)) || suites_failed+=("manifest")
expected=$(sed -nE "s/^manifest $part: expected at least ([0-9]+) passed.*/\1/p" "$log")

echo "== guest $(uname -r): $passed passed, $failed failed; expected at least ${expected:-?} (tests/lab/manifest)${suites_failed:+ (failing: ${suites_failed[*]})}"
[ "$failed" -eq 0 ] && [ ${#suites_failed[@]} -eq 0 ]
