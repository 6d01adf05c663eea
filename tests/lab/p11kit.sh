#!/usr/bin/env bash
# p11-kit integration: scripts/install registers the module with p11-kit, and
# then p11-kit list-modules, p11tool (no --provider) and p11-kit-proxy.so find
# our tokens and sign with a kernel key; --uninstall removes it again; a
# DESTDIR install stages the files without touching the system.
# The guest's /usr is read-only: the module goes to /var/tmp and its .module
# file to /etc/pkcs11/modules, which p11-kit reads as well.
# Runs inside the lab guest. Usage: p11kit.sh MODULE.so KEYDIR
set -uo pipefail

module=$(realpath "$1")
keys=$(realpath "$2")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
install=$here/../../scripts/install
from=$(dirname "$module")
work=$(mktemp -d /tmp/kp11-p11kit.XXXXXX)
proxy=$(pkg-config --variable=proxy_module p11-kit-1 2> /dev/null || true)
[ -n "$proxy" ] || proxy=/usr/lib/$(gcc -print-multiarch 2> /dev/null || echo x86_64-linux-gnu)/p11-kit-proxy.so
dirs=(--no-build --from "$from" --module-dir /var/tmp/kp11-p11kit/lib
      --config-dir /etc/pkcs11/modules --bindir /var/tmp/kp11-p11kit/bin)
passed=0 failed=0
ok() { echo "ok - $*"; passed=$((passed + 1)); }
bad() { echo "FAIL: $*" >&2; failed=$((failed + 1)); }
check() { # check DESCRIPTION COMMAND... : passes when COMMAND succeeds
  local what=$1; shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}
key=
cleanup() {
  [ -n "$key" ] && keyctl unlink "$key" @u > /dev/null 2>&1
  "$install" --uninstall "${dirs[@]}" > /dev/null 2>&1
  rm -rf "$work" /var/tmp/kp11-p11kit
}
trap cleanup EXIT
[ -f "$from/keyring-pkcs11" ] || { echo "p11kit: $from/keyring-pkcs11 not built" >&2; echo "p11kit: 0 passed, 1 failed"; exit 1; }

# 1. Install.
if "$install" "${dirs[@]}" > "$work/out" 2>&1; then ok "scripts/install into /var/tmp and /etc/pkcs11/modules"; else cat "$work/out" >&2; bad "scripts/install"; fi
conf=/etc/pkcs11/modules/keyring-pkcs11.module
check "the .module file names the installed .so by absolute path" \
  grep -qx "module: /var/tmp/kp11-p11kit/lib/libkeyring_pkcs11.so" "$conf"
check "the .module file says critical: no, trust-policy: no" \
  bash -c "grep -qx 'critical: no' '$conf' && grep -qx 'trust-policy: no' '$conf'"
check "the .so and the CLI are installed" \
  test -f /var/tmp/kp11-p11kit/lib/libkeyring_pkcs11.so -a -x /var/tmp/kp11-p11kit/bin/keyring-pkcs11

key=$(keyctl padd asymmetric kp11-p11kit @u < "$keys/rsa2048.pk8.der")

# 2. p11-kit itself.
p11-kit list-modules > "$work/modules" 2>&1
if grep -qE '^keyring-pkcs11: /var/tmp/kp11-p11kit/lib/libkeyring_pkcs11.so' "$work/modules" \
    && grep -q 'manufacturer: Linux kernel keyrings' "$work/modules" \
    && grep -qx '    token: user' "$work/modules" && grep -qx '    token: session' "$work/modules"; then
  ok "p11-kit list-modules shows the module and its tokens"
else
  cat "$work/modules" >&2; bad "p11-kit list-modules"
fi

# 3. GnuTLS p11tool, no --provider.
p11tool --list-tokens > "$work/tokens" 2>&1
if grep -qxF '	Label: user' "$work/tokens" && grep -qxF '	Label: persistent' "$work/tokens" \
    && grep -qxF '	Manufacturer: Linux kernel keyrings' "$work/tokens"; then
  ok "p11tool --list-tokens lists our tokens without --provider"
else
  cat "$work/tokens" >&2; bad "p11tool --list-tokens"
fi
p11tool --list-all-privkeys 'pkcs11:token=user' > "$work/privkeys" 2>&1
if grep -q 'object=kp11-p11kit;type=private' "$work/privkeys"; then
  ok "p11tool --list-all-privkeys 'pkcs11:token=user' finds the key loaded with keyctl padd"
else
  cat "$work/privkeys" >&2; bad "p11tool --list-all-privkeys"
fi
if p11tool --test-sign 'pkcs11:token=user;object=kp11-p11kit;type=private' > "$work/testsign" 2>&1; then
  ok "p11tool --test-sign signs with the kernel key and verifies"
else
  cat "$work/testsign" >&2; bad "p11tool --test-sign"
fi

# 4. OpenSC pkcs11-tool through p11-kit-proxy.so.
pkcs11-tool --module "$proxy" -L > "$work/slots" 2>&1
if grep -qE 'token label +: user$' "$work/slots" && grep -qE 'token manufacturer +: Linux kernel keyrings' "$work/slots"; then
  ok "pkcs11-tool --module p11-kit-proxy.so -L lists our tokens"
else
  cat "$work/slots" >&2; bad "pkcs11-tool -L through the proxy"
fi
printf 'signed through p11-kit-proxy\n' > "$work/data"
openssl pkey -in "$keys/rsa2048.pem" -pubout -out "$work/pub.pem" 2> /dev/null
if pkcs11-tool --module "$proxy" --token-label user --sign -m SHA256-RSA-PKCS --label kp11-p11kit \
      -i "$work/data" -o "$work/sig" > "$work/sign" 2>&1 \
    && openssl dgst -sha256 -verify "$work/pub.pem" -signature "$work/sig" "$work/data" > /dev/null 2>&1; then
  ok "pkcs11-tool signs through p11-kit-proxy.so; openssl verifies"
else
  cat "$work/sign" >&2; bad "signing through p11-kit-proxy.so"
fi

# 5. Uninstall.
"$install" --uninstall "${dirs[@]}" > "$work/out" 2>&1
check "--uninstall removes the .so, the .module file and the CLI" \
  test ! -e "$conf" -a ! -e /var/tmp/kp11-p11kit/lib/libkeyring_pkcs11.so -a ! -e /var/tmp/kp11-p11kit/bin/keyring-pkcs11
p11-kit list-modules > "$work/modules" 2>&1
p11tool --list-tokens > "$work/tokens" 2>&1
if grep -q '^p11-kit-trust' "$work/modules" && ! grep -q 'keyring-pkcs11' "$work/modules" \
    && grep -q 'Label:' "$work/tokens" && ! grep -q 'Linux kernel keyrings' "$work/tokens"; then
  ok "after uninstall neither p11-kit nor p11tool sees the module"
else
  cat "$work/modules" "$work/tokens" >&2; bad "still visible after uninstall"
fi

# 6. A packaging install: everything under DESTDIR, the .module file naming
# the final path, nothing outside DESTDIR.
stage=$work/stage
moddir=$(pkg-config --variable=p11_module_path p11-kit-1)
cfgdir=$(pkg-config --variable=p11_module_configs p11-kit-1)
if DESTDIR=$stage PREFIX=/usr "$install" --no-build --from "$from" > "$work/out" 2>&1 \
    && [ -f "$stage$moddir/libkeyring_pkcs11.so" ] && [ -x "$stage/usr/bin/keyring-pkcs11" ] \
    && grep -qx "module: $moddir/libkeyring_pkcs11.so" "$stage$cfgdir/keyring-pkcs11.module" \
    && [ ! -e "$cfgdir/keyring-pkcs11.module" ]; then
  ok "DESTDIR=… PREFIX=/usr stages into $moddir and $cfgdir"
else
  cat "$work/out" >&2; find "$stage" >&2; bad "DESTDIR install"
fi

echo "p11kit: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
