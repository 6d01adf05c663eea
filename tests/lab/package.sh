#!/usr/bin/env bash
# The Debian package (scripts/deb) installed the way servers get software:
# `dpkg -i`, then p11-kit, p11tool and OpenSSL (the libp11 engine and
# pkcs11-provider, each through its default module p11-kit-proxy) find the
# module with no path given; the man pages and completions are there; then
# `dpkg --purge` leaves no file of the package behind and nothing finds the
# module any more. The guest's /usr is a throwaway overlay, so installing
# changes nothing on the host.
# Runs inside the lab guest. Usage: package.sh MODULE.so KEYDIR
# (the .deb: $KP11_DEB, else the newest target/debian/keyring-pkcs11_*.deb
# beside MODULE's target directory; lab/test builds it first).
set -euo pipefail

module=$(realpath "$1")
keys=$(realpath "$2")
work=$(mktemp -d /tmp/kp11-package.XXXXXX)
suite=package
# shellcheck source=tests/lab/checks.sh
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"
deb=${KP11_DEB:-$(ls -t "$(dirname "$module")"/../debian/keyring-pkcs11_*.deb 2> /dev/null | head -n 1 || true)}
[ -n "$deb" ] && [ -f "$deb" ] || die "no .deb found (run scripts/deb; lab/test does)"
deb=$(realpath "$deb")
pkg=keyring-pkcs11
moddir=$(pkg-config --variable=p11_module_path p11-kit-1)
cfgdir=$(pkg-config --variable=p11_module_configs p11-kit-1)
label=kp11-deb
uri="pkcs11:token=user;object=$label;type=private"
purged=0
# Whatever happens, the package leaves the (throwaway) system again.
trap 'cleanup; [ "$purged" = 1 ] || dpkg --purge "$pkg" > /dev/null 2>&1 || true' EXIT

# Precondition: nothing of ours is there yet, or the checks below prove nothing.
if dpkg-query -W -f '${db:Status-Status}' "$pkg" 2> /dev/null | grep -qx installed \
    || [ -e "$cfgdir/keyring-pkcs11.module" ] || [ -e /etc/pkcs11/modules/keyring-pkcs11.module ]; then
  die "keyring-pkcs11 is already installed or registered with p11-kit here"
fi
echo "# kernel $(uname -r); $deb; p11-kit module dir $moddir"

id=$(keyctl padd asymmetric "$label" @u < "$keys/rsa2048.pk8.der") || die "keyctl padd asymmetric"
loaded+=("$id")
openssl pkey -in "$keys/rsa2048.pem" -pubout -out "$work/pub.pem"
head -c 1000 /dev/urandom > "$work/data"
openssl dgst -sha256 -binary -out "$work/data.sha256" "$work/data"

# --- install -------------------------------------------------------------------
# No man-db index rebuild (mandb) on install and removal, as with the debconf
# answer man-db/auto-update=false: over the 9p root under emulation it takes
# minutes, and `man` finds the pages without it. /var is a throwaway overlay.
rm -f /var/lib/man-db/auto-update
installed() {
  dpkg -i "$deb" > "$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; return 1; }
  [ "$(dpkg-query -W -f '${db:Status-Status}' "$pkg")" = installed ] || { echo "dpkg does not say installed"; return 1; }
  dpkg -L "$pkg" > "$work/files.all"
  # Files only (dpkg -L lists the directories too, most of them shared).
  while read -r f; do [ -f "$f" ] && echo "$f"; done < "$work/files.all" > "$work/files"
  local want
  for want in "$moddir/libkeyring_pkcs11.so" "$cfgdir/keyring-pkcs11.module" /usr/bin/keyring-pkcs11 \
      /usr/share/man/man1/keyring-pkcs11.1.gz /usr/share/doc/keyring-pkcs11/copyright; do
    grep -qx "$want" "$work/files" || { echo "$want is not in the package:"; cat "$work/files"; return 1; }
  done
}
check "dpkg -i $(basename "$deb"): installed; the module in $moddir, its .module in $cfgdir, the tool in /usr/bin" installed

relative() {
  grep -qx 'module: libkeyring_pkcs11.so' "$cfgdir/keyring-pkcs11.module" \
    || { echo "the .module file does not name the module relatively:"; grep '^module:' "$cfgdir/keyring-pkcs11.module"; return 1; }
}
check "the installed .module file says 'module: libkeyring_pkcs11.so' (relative to p11-kit's module directory)" relative

# --- found with no path given ----------------------------------------------------
list_modules() {
  p11-kit list-modules > "$work/modules" 2>&1 || { cat "$work/modules"; return 1; }
  grep -qE '^keyring-pkcs11: ' "$work/modules" && grep -q 'manufacturer: Linux kernel keyrings' "$work/modules" \
    && grep -qx '    token: user' "$work/modules" || { echo "p11-kit list-modules:"; cat "$work/modules"; return 1; }
}
check "p11-kit list-modules shows keyring-pkcs11 and its tokens" list_modules
p11tool_finds() {
  p11tool --list-tokens > "$work/tokens" 2>&1 || { cat "$work/tokens"; return 1; }
  grep -qxF '	Label: user' "$work/tokens" && grep -qxF '	Manufacturer: Linux kernel keyrings' "$work/tokens" \
    || { cat "$work/tokens"; return 1; }
  p11tool --test-sign "$uri" > "$work/testsign" 2>&1 || { cat "$work/testsign"; return 1; }
}
check "p11tool --list-tokens (no --provider) lists our tokens; p11tool --test-sign '$uri' signs" p11tool_finds
# The libp11 engine's default module is p11-kit-proxy: the engine is named,
# the module is not.
engine_signs() {
  openssl pkeyutl -engine pkcs11 -keyform engine -inkey "$uri" -sign -in "$work/data.sha256" \
      -pkeyopt digest:sha256 -out "$work/sig.engine" > "$work/engine.log" 2>&1 \
    || { cat "$work/engine.log"; return 1; }
  openssl pkeyutl -verify -pubin -inkey "$work/pub.pem" -in "$work/data.sha256" -sigfile "$work/sig.engine" -pkeyopt digest:sha256 \
    || { echo "the engine's signature does not verify"; return 1; }
}
check "openssl pkeyutl -engine pkcs11 -inkey '$uri' -sign (the engine's default module, p11-kit-proxy); openssl verifies" engine_signs
# pkcs11-provider without pkcs11-module-path: its default is p11-kit-proxy too.
cat > "$work/provider.cnf" <<CNF
openssl_conf = openssl_init
[openssl_init]
providers = provider_sect
[provider_sect]
default = default_sect
pkcs11 = pkcs11_sect
[default_sect]
activate = 1
[pkcs11_sect]
module = $(openssl version -m | sed -nE 's/^MODULESDIR: "(.*)"$/\1/p')/pkcs11.so
activate = 1
CNF
# p11-kit-proxy loads every registered module, and SoftHSMv2 2.6.1 (in the
# lab for softhsm-compare) crashes in its C_Finalize when the provider
# finalises the proxy at exit (SIGSEGV in libsofthsm2.so under
# p11_kit_modules_finalize, with or without this package): its registration
# is set aside for this one command (the guest's /usr is a throwaway overlay).
provider_signs() {
  local softhsm=$cfgdir/softhsm2.module aside= rc=0
  if [ -e "$softhsm" ]; then mv "$softhsm" "$work/" && aside=1; fi
  OPENSSL_CONF=$work/provider.cnf openssl pkeyutl -sign -inkey "$uri" -in "$work/data.sha256" \
      -pkeyopt digest:sha256 -out "$work/sig.provider" > "$work/provider.log" 2>&1 || rc=$?
  [ -z "$aside" ] || mv "$work/softhsm2.module" "$softhsm"
  [ "$rc" = 0 ] || { echo "exit status $rc"; cat "$work/provider.log"; return 1; }
  openssl pkeyutl -verify -pubin -inkey "$work/pub.pem" -in "$work/data.sha256" -sigfile "$work/sig.provider" -pkeyopt digest:sha256 \
    || { echo "the provider's signature does not verify"; return 1; }
}
check "pkcs11-provider with no pkcs11-module-path (default: p11-kit-proxy) signs with '$uri'; openssl verifies" provider_signs
tool_lists() {
  /usr/bin/keyring-pkcs11 list > "$work/list" 2>&1 || { cat "$work/list"; return 1; }
  grep -qF "object=$label;" "$work/list" || { cat "$work/list"; return 1; }
}
check "/usr/bin/keyring-pkcs11 list shows the key" tool_lists

# --- man pages and completions -----------------------------------------------------
man_page() {
  MANWIDTH=100 man -P cat keyring-pkcs11 > "$work/man" 2> "$work/man.err" || { cat "$work/man.err"; return 1; }
  # (man justifies lines: words may be separated by more than one space)
  grep -qE '^ +keyring-pkcs11 +- +Import, +generate' "$work/man" \
    && grep -qE '^ +keyring-pkcs11-exec\(1\)$' "$work/man" || { head -n 20 "$work/man"; return 1; }
  MANWIDTH=100 man -P cat keyring-pkcs11-import > "$work/man.import" 2>&1 && grep -q -- '--passphrase-file' "$work/man.import" \
    || { echo "man keyring-pkcs11-import:"; head -n 20 "$work/man.import"; return 1; }
}
check "man keyring-pkcs11 and man keyring-pkcs11-import show the pages generated from the clap definitions" man_page
completions() {
  local f
  for f in /usr/share/bash-completion/completions/keyring-pkcs11 /usr/share/zsh/vendor-completions/_keyring-pkcs11 \
      /usr/share/fish/vendor_completions.d/keyring-pkcs11.fish; do
    grep -qx "$f" "$work/files" && [ -s "$f" ] || { echo "$f missing or empty"; return 1; }
  done
  # The bash completion is valid bash and registers a completion that knows the commands.
  bash -c 'source /usr/share/bash-completion/completions/keyring-pkcs11 && complete -p keyring-pkcs11' > "$work/complete" 2>&1 \
    || { cat "$work/complete"; return 1; }
  grep -q 'export-pub' /usr/share/bash-completion/completions/keyring-pkcs11 || { echo "bash completion lacks export-pub"; return 1; }
}
check "bash, zsh and fish completions are installed; the bash one loads and registers keyring-pkcs11" completions

# --- removal ---------------------------------------------------------------------------
removed() {
  dpkg --purge "$pkg" > "$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; return 1; }
  purged=1
  dpkg-query -W -f '${db:Status-Status}' "$pkg" 2> /dev/null | grep -qx installed && { echo "still installed"; return 1; }
  local left=0 f
  [ -s "$work/files" ] || { echo "no file list from the install step"; return 1; }
  while read -r f; do [ -e "$f" ] && { echo "left behind: $f"; left=1; }; done < "$work/files"
  [ "$left" = 0 ]
}
check "dpkg --purge: not installed, no file of the package left" removed
gone() {
  p11-kit list-modules > "$work/modules" 2>&1
  p11tool --list-tokens > "$work/tokens" 2>&1
  if grep -q 'keyring-pkcs11' "$work/modules" || grep -q 'Linux kernel keyrings' "$work/tokens"; then
    echo "p11-kit or p11tool still sees the module"; return 1
  fi
  grep -q '^p11-kit-trust' "$work/modules" || { echo "p11-kit list-modules did not work:"; cat "$work/modules"; return 1; }
  if openssl pkeyutl -engine pkcs11 -keyform engine -inkey "$uri" -sign -in "$work/data.sha256" -pkeyopt digest:sha256 \
      -out /dev/null > /dev/null 2>&1; then
    echo "the engine still finds the key"; return 1
  fi
}
check "after removal neither p11-kit, p11tool nor the engine finds the module" gone

summary
