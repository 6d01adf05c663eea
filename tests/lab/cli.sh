#!/usr/bin/env bash
# The keyring-pkcs11 command-line tool end to end, on a real kernel: import
# of every supported format (made here from one RSA key with openssl and
# ssh-keygen), passphrases from a file and from a terminal, ssh -I logins with
# imported OpenSSH keys (with and without a passphrase) and with a generated
# key, list/export-pub/remove as seen by a new process and by p11tool, named
# keyrings made by `tokens --create`, and the error paths: non-RSA keys, wrong
# passphrases, no terminal and a full key quota (EDQUOT), each with its exit
# status and message (a kernel without the PKCS#8 parser: no-parser.sh).
# Runs as root inside the lab guest. Usage: cli.sh MODULE.so KEYDIR
# The CLI is the keyring-pkcs11 binary next to MODULE.so.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../../lab/lib/sshd.sh"

module=$(realpath "$1")
keys=$(realpath "$2")
bin=$(dirname "$module")/keyring-pkcs11
work=$(mktemp -d /tmp/kp11-cli.XXXXXX)
port=${KP11_CLI_SSH_PORT:-2225}
me=$(id -un)
ring=kp11-cli-ring
sentinel=
pass=0
quota_keys=$(cat /proc/sys/kernel/keys/root_maxkeys)
quota_bytes=$(cat /proc/sys/kernel/keys/root_maxbytes)
fail() { echo "FAIL: $*" >&2; [ -f "$work/sshd.log" ] && tail -n 20 "$work/sshd.log" >&2; exit 1; }
ok() { echo "ok - $* (${SECONDS}s)"; pass=$((pass + 1)); }
cleanup() {
  stop_sshd "$work"
  [ -n "$sentinel" ] && keyctl unlink "$sentinel" @u > /dev/null 2>&1
  echo "$quota_keys" > /proc/sys/kernel/keys/root_maxkeys || true
  echo "$quota_bytes" > /proc/sys/kernel/keys/root_maxbytes || true
  local r id persistent
  persistent=$(keyctl get_persistent @s 2> /dev/null || true)
  for r in @u @s $persistent; do
    for id in $(keyctl rlist "$r" 2> /dev/null); do
      case "$(keyctl rdescribe "$id" 2> /dev/null)" in
        *";kp11-cli"*|*";keyring-pkcs11:"*) keyctl unlink "$id" "$r" > /dev/null 2>&1 || true ;;
      esac
    done
  done
  rm -rf "$work"
}
trap cleanup EXIT

[ -x "$bin" ] || fail "no CLI at $bin (cargo build makes it next to the module)"
echo "# kernel $(uname -r); cli $bin"

# expect RC CMD...: runs CMD, stdout in $work/out, stderr in $work/err, and
# requires exit status RC.
expect() {
  local want=$1 rc=0
  shift
  "$@" > "$work/out" 2> "$work/err" || rc=$?
  if [ "$rc" -ne "$want" ]; then
    { echo "--- stdout:"; cat "$work/out"; echo "--- stderr:"; cat "$work/err"; } >&2
    fail "'$*' exited $rc, want $want"
  fi
}
# has TEXT [FILE]: FILE (default: the last stdout) contains TEXT.
has() {
  grep -qF -- "$1" "${2:-$work/out}" || { cat "${2:-$work/out}" >&2; fail "no '$1' in ${2:-stdout}"; }
}
hasnt() {
  if grep -qF -- "$1" "${2:-$work/out}"; then cat "${2:-$work/out}" >&2; fail "unexpected '$1' in ${2:-stdout}"; fi
}
# tty ANSWER... -- CMD...: runs CMD on a pseudo-terminal, typing each ANSWER
# when CMD asks for a passphrase; output (the terminal's) in $work/out.
# Like a person, it types only once CMD has turned echo off (for at most
# 10 s): the prompt is printed first, and an answer typed in between would be
# echoed by the terminal, which the checks below would take for the CLI
# showing the passphrase (seen on a loaded machine).
tty() {
  python3 - "$@" > "$work/out" 2>&1 <<'PY'
import os, pty, sys, termios, time
args = sys.argv[1:]
cut = args.index("--")
answers, cmd = args[:cut], args[cut + 1:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(cmd[0], cmd)
seen = b""
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    sys.stdout.buffer.write(chunk)
    sys.stdout.flush()
    seen += chunk
    if seen.rstrip().endswith(b":") and b"passphrase" in seen.splitlines()[-1].lower():
        seen = b""
        # The tool prints its prompt before it turns echo off: wait for the
        # terminal to stop echoing (or 10 s), or a busy machine types the
        # answer into a terminal that still shows it.
        deadline = time.monotonic() + 10
        while termios.tcgetattr(fd)[3] & termios.ECHO and time.monotonic() < deadline:
            time.sleep(0.01)
        if answers:
            # On Linux the master's termios calls reach the terminal (slave).
            deadline = time.monotonic() + 10
            while termios.tcgetattr(fd)[3] & termios.ECHO and time.monotonic() < deadline:
                time.sleep(0.01)
            os.write(fd, answers.pop(0).encode() + b"\n")
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
PY
}

# The one RSA key, in every form the CLI reads.
key=$work/key.pem
install -m 600 "$keys/rsa2048.pem" "$key"
want=$(ssh-keygen -y -f "$key" | awk '{print $1, $2}')
want_id=$(openssl rsa -in "$key" -RSAPublicKey_out -outform DER 2> /dev/null | sha1sum | cut -d' ' -f1)
phrase=kp11-cli-pass
printf '%s\n' "$phrase" > "$work/pass"
printf 'not-it\n' > "$work/wrong"
openssl pkcs8 -topk8 -nocrypt -in "$key" -out "$work/pkcs8.pem"
openssl pkcs8 -topk8 -nocrypt -in "$key" -outform DER -out "$work/pkcs8.der"
openssl rsa -traditional -in "$key" -out "$work/pkcs1.pem" 2> /dev/null
openssl rsa -traditional -in "$key" -outform DER -out "$work/pkcs1.der" 2> /dev/null
openssl pkcs8 -topk8 -v2 aes-256-cbc -passout "pass:$phrase" -in "$key" -out "$work/enc.p8"
openssl pkcs8 -topk8 -v2 aes-256-cbc -passout "pass:$phrase" -in "$key" -outform DER -out "$work/enc.p8.der"
install -m 600 "$work/pkcs1.pem" "$work/id_rsa"
ssh-keygen -q -p -P '' -N '' -f "$work/id_rsa" > /dev/null          # rewritten in OpenSSH format
ssh-keygen -q -c -P '' -C kp11-cli-comment@lab -f "$work/id_rsa" > /dev/null
install -m 600 "$work/id_rsa" "$work/id_rsa_pass"
ssh-keygen -q -p -P '' -N "$phrase" -f "$work/id_rsa_pass" > /dev/null
ssh-keygen -y -f "$work/id_rsa" > "$work/id_rsa.pub"
head -n 1 "$work/pkcs1.pem" | grep -qx -- "-----BEGIN RSA PRIVATE KEY-----" || fail "openssl did not write PKCS#1"
for f in id_rsa id_rsa_pass; do
  head -n 1 "$work/$f" | grep -qx -- "-----BEGIN OPENSSH PRIVATE KEY-----" || fail "ssh-keygen did not write OpenSSH format ($f)"
done
grep -q "BEGIN ENCRYPTED PRIVATE KEY" "$work/enc.p8" || fail "openssl did not encrypt"

# A key that stays in the user token until section 11: every listing that
# shows something missing must show it, or the listing proves nothing.
sentinel=$(keyctl padd asymmetric kp11-sentinel @u < "$keys/rsa3072.pk8.der") || fail "keyctl padd of the sentinel key"
# p11list FILE [URI]: p11tool's listing of the user token; p11tool must
# succeed and list the sentinel.
p11list() {
  p11tool --provider "$module" --list-all "${2:-pkcs11:token=user}" > "$1" 2> "$1.err" \
    || { cat "$1" "$1.err" >&2; fail "p11tool --list-all exited non-zero"; }
  grep -q "object=kp11-sentinel;type=private" "$1" || { cat "$1" >&2; fail "p11tool does not list the sentinel key"; }
}
# listed: the last `keyring-pkcs11 list` shows the sentinel.
listed() { has "object=kp11-sentinel;type=private"; }

# Leftovers of this key in @u would make every import below a duplicate.
expect 0 "$bin" list
listed
hasnt "object=kp11-cli"

# 1. Help and usage errors.
expect 0 "$bin" --help
for w in import generate list export-pub remove tokens "Exit status" Examples; do has "$w"; done
expect 1 "$bin"
expect 1 "$bin" import
expect 1 "$bin" frobnicate
expect 1 "$bin" generate --bits 1024
has "possible values: 2048, 3072, 4096" "$work/err"
ok "--help explains commands, exit status and examples; usage errors exit 1"

# 2. Every format: import (URI, size, id, kernel key, keyring, origin).
# The URI form of a label (RFC 7512, as p11tool encodes it).
uri_label() { # ASCII labels only
  local s=$1 out="" c i
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    case $c in
      [A-Za-z0-9._-]) out+=$c ;;
      *) printf -v c '%%%02X' "'$c"; out+=$c ;;
    esac
  done
  echo "$out"
}
import_check() { # FILE LABEL FORMAT-TEXT [IMPORT-OPTIONS...]
  local file=$1 label=$2 format=$3
  shift 3
  expect 0 "$bin" import "$file" "$@"
  has "($format key) into token \"user\""
  has "object=$(uri_label "$label");type=private"
  has "RSA 2048 bits"
  has "id:       $want_id"        # the SHA-1 of the kernel key's public key: the file's key
  has "keyring:  token \"user\": user keyring (@u)"
  has "origin:   imported"
  # Out again with keyctl, by the serial the CLI printed (remove is tested below).
  serial=$(sed -n 's/^  key: .*, kernel key \([0-9]*\)$/\1/p' "$work/out")
  [ -n "$serial" ] || fail "import printed no kernel key serial"
  [ "$(keyctl rdescribe "$serial" | cut -d';' -f1,5)" = "asymmetric;$label" ] || fail "kernel key $serial is not $label"
  keyctl unlink "$serial" @u > /dev/null
}
import_check "$work/pkcs8.pem" kp11-cli-p8pem PKCS#8 --label kp11-cli-p8pem
import_check "$work/pkcs8.der" kp11-cli-p8der PKCS#8 --label kp11-cli-p8der
import_check "$work/pkcs1.pem" kp11-cli-p1pem PKCS#1 --label kp11-cli-p1pem
import_check "$work/pkcs1.der" kp11-cli-p1der PKCS#1 --label kp11-cli-p1der
import_check "$work/enc.p8" kp11-cli-encpem "encrypted PKCS#8" --label kp11-cli-encpem --passphrase-file "$work/pass"
import_check "$work/enc.p8.der" kp11-cli-encder "encrypted PKCS#8" --label kp11-cli-encder --passphrase-file - < "$work/pass"
import_check "$work/id_rsa" kp11-cli-comment@lab OpenSSH
import_check "$work/id_rsa_pass" kp11-cli-comment@lab "passphrase-protected OpenSSH" --passphrase-file "$work/pass"
ok "import of PKCS#8 and PKCS#1 (PEM, DER), encrypted PKCS#8 (PEM, DER; passphrase from a file and from stdin) and OpenSSH (plain, passphrase) keys: each the file's key (CKA_ID), in the kernel key printed"

# 3. ssh -I logs in with imported OpenSSH keys, without and with a passphrase
#    (typed on a terminal: asked for, not echoed, three tries).
start_sshd "$work" "$port" || fail "sshd did not start"
mapfile -t client < <(ssh_client_opts "$port")
login() { # PUBLIC-KEY LABEL: authorise only that key, log in with ssh -I
  echo "$1" > "$work/authorized_keys"
  out=$(ssh "${client[@]}" -I "$module" "$me@127.0.0.1" "echo in-as-\$(id -un)") || fail "ssh -I with key $2"
  [ "$out" = "in-as-$me" ] || fail "unexpected remote output: $out"
}
expect 0 "$bin" import "$work/id_rsa"
has "kp11-cli-comment@lab"
login "$want" kp11-cli-comment@lab
expect 0 "$bin" remove kp11-cli-comment@lab
ok "keyring-pkcs11 import id_rsa (OpenSSH, no passphrase; label = its comment), then ssh -I logs in"
tty "$phrase" -- "$bin" import "$work/id_rsa_pass" --label kp11-cli-tty || { cat "$work/out" >&2; fail "import with a typed passphrase"; }
has "Enter the passphrase for $work/id_rsa_pass:"
has "(passphrase-protected OpenSSH key) into token \"user\""
hasnt "$phrase"
login "$want" kp11-cli-tty
expect 0 "$bin" remove kp11-cli-tty
rc=0; tty one two three -- "$bin" import "$work/enc.p8" --label kp11-cli-tty || rc=$?
[ "$rc" -eq 1 ] || { cat "$work/out" >&2; fail "three wrong typed passphrases: exit $rc, want 1"; }
[ "$(grep -c "Wrong passphrase, try again." "$work/out")" -eq 2 ] || { cat "$work/out" >&2; fail "no second and third try"; }
has "wrong passphrase"
ok "keyring-pkcs11 import of a passphrase-protected OpenSSH key, passphrase typed (not echoed), then ssh -I logs in; three wrong tries: exit 1"

# 4. generate: URI, OpenSSH line; export-pub in both formats; ssh -I with it.
expect 0 "$bin" generate --bits 2048 --label kp11-cli-gen --id 0b:ad:c0:de
cp "$work/out" "$work/gen"
has "type=private"
has "id=%0B%AD%C0%DE;object=kp11-cli-gen;type=private"
has "origin:   generated"
genline=$(tail -n 1 "$work/gen")
case "$genline" in "ssh-rsa AAAA"*" kp11-cli-gen") ;; *) fail "generate's last line is not an OpenSSH public key: $genline" ;; esac
expect 0 "$bin" export-pub kp11-cli-gen
[ "$(cat "$work/out")" = "$genline" ] || fail "export-pub differs from what generate printed"
expect 0 "$bin" export-pub id:0badc0de --format pem
has "-----BEGIN PUBLIC KEY-----"
[ "$(ssh-keygen -i -m PKCS8 -f "$work/out" | awk '{print $1, $2}')" = "$(awk '{print $1, $2}' <<< "$genline")" ] \
  || fail "the PEM export is not the same key"
login "$genline" kp11-cli-gen
ok "generate --bits 2048 --label --id prints the URI and the OpenSSH line; export-pub (openssh, pem) agree; ssh -I logs in with it"

# 5. list: the URI is the one p11tool prints; size, id, keyring, origin.
expect 0 "$bin" import "$work/pkcs8.pem" --label "kp11-cli-imp x/y" --id 01
expect 0 "$bin" list
cp "$work/out" "$work/list"
p11list "$work/p11"
for l in kp11-cli-gen "kp11-cli-imp%20x%2Fy"; do
  uri=$(sed -n "s/^  uri: *\(.*object=$l;type=private\)$/\1/p" "$work/list")
  [ -n "$uri" ] || { cat "$work/list" >&2; fail "list shows no URI for $l"; }
  grep -qxF "	URL: $uri" "$work/p11" || { cat "$work/p11" >&2; fail "p11tool does not print list's URI $uri"; }
done
has "model=user%20keyring;manufacturer=Linux%20kernel%20keyrings;serial=u0;token=user;id=%01;object=kp11-cli-imp%20x%2Fy;type=private"
has "id:       0badc0de"
has "id:       01"
[ "$(grep -c "RSA 2048 bits, kernel key [0-9]" "$work/list")" -eq 2 ] || fail "list does not give size and kernel key of both"
has "origin:   generated in the kernel's keyring"
has "origin:   imported"
expect 0 "$bin" list --all
has "kp11-cli-gen"
ok "list: PKCS#11 URIs exactly as p11tool prints them, key size, kernel key, CKA_ID, token and keyring, generated or imported"

# 6. Duplicates are refused, not silently replaced.
expect 1 "$bin" import "$work/pkcs1.pem" --label kp11-cli-gen
has "already has a key labelled \"kp11-cli-gen\"" "$work/err"
expect 1 "$bin" import "$work/pkcs1.pem" --label kp11-cli-again
has "this key is already in token \"user\", labelled \"kp11-cli-imp x/y\"" "$work/err"
ok "a taken label, or a key already in the token, is refused (exit 1)"

# 7. remove, then a new process (and p11tool) no longer sees the key.
expect 0 "$bin" remove 'pkcs11:token=user;object=kp11-cli-imp%20x%2Fy'
expect 0 "$bin" remove kp11-cli-gen
expect 0 "$bin" list
listed
hasnt "kp11-cli"
p11list "$work/p11.removed"
if grep -q "kp11-cli" "$work/p11.removed"; then cat "$work/p11.removed" >&2; fail "p11tool still lists a removed key"; fi
expect 1 "$bin" remove kp11-cli-gen
has "no key labelled \"kp11-cli-gen\"" "$work/err"
ok "remove (by URI and by label): gone for a new process and for p11tool; removing again exits 1"

# 8. Named keyrings: tokens --create, then a token once configured.
expect 0 "$bin" tokens
for t in session user persistent; do grep -qE "^$t +yes" "$work/out" || { cat "$work/out" >&2; fail "tokens: $t not present"; }; done
expect 0 "$bin" tokens --create "$ring"
has "created keyring \"$ring\""
keyctl search @u keyring "$ring" > /dev/null || fail "no keyring $ring in @u"
expect 0 "$bin" tokens --create "$ring"
has "already exists"
expect 0 env KEYRING_PKCS11_KEYRINGS="$ring" "$bin" tokens
grep -qE "^$ring +yes +0 +n[0-9a-f]{8} +named keyring" "$work/out" || { cat "$work/out" >&2; fail "tokens does not show $ring"; }
KEYRING_PKCS11_KEYRINGS=$ring p11tool --provider "$module" --list-tokens | grep -qxF "	Label: $ring" || fail "p11tool does not see token $ring"
expect 0 "$bin" import "$work/pkcs8.pem" --token "$ring" --label kp11-cli-named
has "named keyring \"$ring\""
expect 0 "$bin" export-pub "pkcs11:token=$ring;object=kp11-cli-named"     # no configuration needed
[ "$(awk '{print $1, $2}' "$work/out")" = "$want" ] || fail "export-pub by URI from the named token"
KEYRING_PKCS11_KEYRINGS=$ring p11tool --provider "$module" --list-all "pkcs11:token=$ring" | grep -q "object=kp11-cli-named;type=private" \
  || fail "p11tool does not see the key in $ring"
expect 0 "$bin" remove kp11-cli-named --token "$ring"
expect 1 "$bin" list --token kp11-cli-nope
has "tokens --create kp11-cli-nope" "$work/err"
keyctl unlink "$(keyctl search @u keyring "$ring")" @u > /dev/null
ok "tokens --create NAME makes a keyring in @u; with KEYRING_PKCS11_KEYRINGS=NAME it is a token (CLI and p11tool); import/export/remove there"

# 9. Keys the kernel cannot hold, and bad passphrases.
ssh-keygen -q -t ed25519 -N '' -C kp11-cli-ed -f "$work/ed25519"
openssl genpkey -algorithm ed25519 -out "$work/ed25519.pem"
for f in ed25519 ed25519.pem; do
  expect 1 "$bin" import "$work/$f"
  has "Ed25519" "$work/err"
  has "the kernel can hold only RSA private keys" "$work/err"
done
expect 1 "$bin" import "$work/enc.p8" --passphrase-file "$work/wrong"
has "wrong passphrase" "$work/err"
expect 1 "$bin" import "$work/id_rsa_pass" --passphrase-file "$work/wrong"
has "wrong passphrase" "$work/err"
expect 1 "$bin" import "$work/id_rsa_pass"
has "no terminal to ask for its passphrase" "$work/err"
has "--passphrase-file" "$work/err"
expect 1 "$bin" import "$work/id_rsa.pub"
has "public key" "$work/err"
expect 1 "$bin" import "$work/pkcs8.pem" --token process
expect 0 "$bin" list
listed
hasnt "kp11-cli"
ok "ed25519 keys (OpenSSH, PKCS#8), wrong passphrases, no terminal, a .pub file, the process token: exit 1 with the reason; nothing imported"

# 10. Certificates: stored with the key; another key's certificate is refused.
openssl req -new -x509 -key "$key" -subj /CN=kp11-cli -days 2 -out "$work/cert.pem" 2> /dev/null
openssl req -new -x509 -key "$keys/rsa3072.pem" -subj /CN=other -days 2 -out "$work/other.pem" 2> /dev/null
expect 1 "$bin" import "$work/pkcs8.pem" --label kp11-cli-cert --cert "$work/other.pem"
has "not for this key" "$work/err"
expect 0 "$bin" list
listed
hasnt "kp11-cli-cert"
expect 0 "$bin" import "$work/pkcs8.pem" --label kp11-cli-cert --cert "$work/cert.pem"
has "with its certificate"
has "cert:     CN=kp11-cli"
p11list "$work/p11.cert"
for type in private cert; do
  grep -q "object=kp11-cli-cert;type=$type" "$work/p11.cert" || { cat "$work/p11.cert" >&2; fail "after import --cert p11tool shows no $type object"; }
done
expect 0 "$bin" remove kp11-cli-cert
has "and its certificate: CN=kp11-cli"
p11list "$work/p11.uncert"
if grep -q "kp11-cli-cert" "$work/p11.uncert"; then cat "$work/p11.uncert" >&2; fail "the key or its certificate outlived the removal"; fi
ok "import --cert stores the certificate with its key (p11tool lists both; remove takes both); another key's certificate is refused and nothing is imported"

# 11. The kernel refuses: a full key quota (EDQUOT). (No PKCS#8 parser:
# tests/lab/no-parser.sh, in a guest of its own.)
quota_line() { awk -v u="$(id -u):" '$1 == u' /proc/key-users; }
used_keys=$(quota_line | awk '{split($4, a, "/"); print a[1]}')
echo "$used_keys" > /proc/sys/kernel/keys/root_maxkeys
expect 2 "$bin" import "$work/pkcs8.pem" --label kp11-cli-quota
echo "$quota_keys" > /proc/sys/kernel/keys/root_maxkeys
has "Disk quota exceeded (EDQUOT)" "$work/err"
has "number-of-keys quota is exhausted" "$work/err"
has "sysctl -w kernel.keys.root_maxkeys=" "$work/err"
used_bytes=$(quota_line | awk '{split($5, a, "/"); print a[1]}')
echo "$((used_bytes + 8))" > /proc/sys/kernel/keys/root_maxbytes
expect 2 "$bin" import "$work/pkcs8.pem" --label kp11-cli-quota
echo "$quota_bytes" > /proc/sys/kernel/keys/root_maxbytes
has "(EDQUOT)" "$work/err"
has "kernel.keys.root_maxbytes" "$work/err"
expect 0 "$bin" list
listed
hasnt "kp11-cli-quota"
ok "a full key quota: exit 2, EDQUOT, which quota (keys, then bytes) and the sysctl that raises it"

echo "cli: $pass passed, 0 failed"
