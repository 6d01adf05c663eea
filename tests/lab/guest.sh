#!/usr/bin/env bash
# Everything that needs a real kernel, run inside one lab guest (lab/test
# starts this once per kernel). Needs: KP11_TEST_BINS (test executables built
# on the host), KEYRING_PKCS11_MODULE, KEYRING_PKCS11_TEST_KEYS.
set -uo pipefail

: "${KP11_TEST_BINS:?}" "${KEYRING_PKCS11_MODULE:?}" "${KEYRING_PKCS11_TEST_KEYS:?}"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
passed=0 failed=0 suites_failed=()

echo "== guest: kernel $(uname -r)"
# The lab must really be able to hold private keys; otherwise every test
# below would fail for a reason that has nothing to do with the module.
probe=$(openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 2>/dev/null | openssl pkcs8 -topk8 -outform DER -nocrypt | keyctl padd asymmetric kp11-probe @s 2>&1) \
  || { echo "guest: this kernel cannot hold a PKCS#8 private key ($probe); modprobe pkcs8_key_parser" >&2; exit 3; }
keyctl unlink "$probe" @s > /dev/null

count() { # add up the libtest summaries in a log
  local p f
  read -r p f < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } } END { print p + 0, f + 0 }' "$1")
  passed=$((passed + p)); failed=$((failed + f))
}

log=$(mktemp)
for bin in $KP11_TEST_BINS; do
  name=$(basename "$bin")
  echo "== guest: $name (all tests, including the kernel ones)"
  if "$bin" --include-ignored 2>&1 | tee "$log"; then :; else suites_failed+=("$name"); fi
  count "$log"
  grep -qE '^test result:' "$log" || { suites_failed+=("$name (no result line)"); failed=$((failed + 1)); }
done

# Real clients end to end; each script ends with "NAME: N passed, 0 failed".
for script in ssh tokens openssl pkcs11-tool lifecycle cli cli-memory p11kit threads \
    provider package exec servers; do
  echo "== guest: $script.sh (real clients)"
  if "$here/$script.sh" "$KEYRING_PKCS11_MODULE" "$KEYRING_PKCS11_TEST_KEYS" 2>&1 | tee "$log"; then :; else suites_failed+=("$script.sh"); fi
  read -r p f < <(sed -nE "s/^$script: ([0-9]+) passed, ([0-9]+) failed.*/\1 \2/p" "$log" | tail -n 1)
  passed=$((passed + ${p:-0}))
  if [ -n "$p" ]; then failed=$((failed + f)); else failed=$((failed + 1)); fi
done

# The quickstart as an ordinary user would run it natively (non-root sshd).
echo "== guest: quickstart (lab/lib/demo-ssh) as a non-root user"
id kp11demo > /dev/null 2>&1 || useradd -m kp11demo
# A login session of its own with @u linked, as pam_keyinit gives a login.
if runuser -u kp11demo -- keyctl session - bash -c 'keyctl link @u @s && exec "$0" "$1"' \
    "$here/../../lab/lib/demo-ssh" "$KEYRING_PKCS11_MODULE" 2>&1 | tee "$log" && grep -qx "demo: OK" "$log"; then
  passed=$((passed + 1))
else
  failed=$((failed + 1)); suites_failed+=("demo-ssh")
fi

echo "== guest $(uname -r): $passed passed, $failed failed${suites_failed:+ (failing: ${suites_failed[*]})}"
[ "$failed" -eq 0 ] && [ ${#suites_failed[@]} -eq 0 ]
