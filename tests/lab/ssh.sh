#!/usr/bin/env bash
# End-to-end: unmodified OpenSSH with kernel-held keys, through the module.
# Runs as root inside the lab guest (or natively as root on a kernel that
# holds PKCS#8 keys). Usage: ssh.sh MODULE.so KEYDIR
# KEYDIR holds rsa{2048,3072,4096}.pem made by lab/test on the host.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../../lab/lib/sshd.sh"

module=$(realpath "$1")
keys=$(realpath "$2")
work=$(mktemp -d /tmp/kp11-ssh.XXXXXX)
port=${KP11_SSH_PORT:-2222}
me=$(id -un)
pass=0
fail() { echo "FAIL: $*" >&2; [ -f "$work/sshd.log" ] && tail -n 30 "$work/sshd.log" >&2; exit 1; }
ok() { echo "ok - $*"; pass=$((pass + 1)); }
cleanup() {
  stop_sshd "$work"
  [ -n "${SSH_AGENT_PID:-}" ] && kill "$SSH_AGENT_PID" 2>/dev/null || true
  for id in "${loaded[@]:-}"; do [ -n "$id" ] && keyctl unlink "$id" @u >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
loaded=()
trap cleanup EXIT

echo "# kernel $(uname -r); module $module"

# 1. Load keys exactly as the Cloudflare post does: PKCS#8 DER into keyctl padd.
for bits in 2048 3072 4096; do
  install -m 600 "$keys/rsa$bits.pem" "$work/rsa$bits.pem"
  id=$(openssl pkcs8 -topk8 -outform DER -nocrypt -in "$work/rsa$bits.pem" | keyctl padd asymmetric "kp11-ssh-$bits" @u) \
    || fail "keyctl padd asymmetric (is pkcs8_key_parser loaded? modprobe pkcs8_key_parser)"
  loaded+=("$id")
  ssh-keygen -y -f "$work/rsa$bits.pem" | awk '{print $1, $2}' > "$work/rsa$bits.pub"
done
ok "loaded 2048/3072/4096-bit keys with keyctl padd asymmetric NAME @u"

# 2. ssh-keygen -D lists the same public keys as ssh-keygen -y on the files.
ssh-keygen -D "$module" > "$work/listed" 2> "$work/keygen.err" || { cat "$work/keygen.err" >&2; fail "ssh-keygen -D"; }
awk '{print $1, $2}' "$work/listed" | sort -u > "$work/listed.keys"
for bits in 2048 3072 4096; do
  grep -qxF "$(cat "$work/rsa$bits.pub")" "$work/listed.keys" || { cat "$work/listed" >&2; fail "ssh-keygen -D does not list the $bits-bit key"; }
done
if grep -qiE "login failed|pin" "$work/keygen.err"; then cat "$work/keygen.err" >&2; fail "ssh-keygen -D asked for a login or PIN"; fi
ok "ssh-keygen -D prints the same public keys as ssh-keygen -y ($(wc -l < "$work/listed.keys") keys listed)"

# 3. A throwaway sshd on loopback, touching nothing of the system's ssh setup.
start_sshd "$work" "$port" || fail "sshd did not start"
mapfile -t client < <(ssh_client_opts "$port")

# 4. ssh -I: each key size, each signature algorithm; only that key is authorised.
for bits in 2048 3072 4096; do
  cp "$work/rsa$bits.pub" "$work/authorized_keys"
  for alg in rsa-sha2-256 rsa-sha2-512 ssh-rsa; do
    before=$(grep -cE "pkalg $alg |have $alg signature" "$work/sshd.log" || true)
    out=$(ssh "${client[@]}" -I "$module" -o PubkeyAcceptedAlgorithms="$alg" "$me@127.0.0.1" "echo logged-in-as-\$(id -un)") \
      || fail "ssh -I with the $bits-bit key and $alg"
    [ "$out" = "logged-in-as-$me" ] || fail "unexpected remote output: $out"
    # sshd's privilege-separated child logs through its monitor, which may
    # write after the session is over (slowly, on a loaded emulated guest):
    # wait for one more line naming ALG (query or signature) than before.
    for _ in $(seq 200); do
      [ "$(grep -cE "pkalg $alg |have $alg signature" "$work/sshd.log" || true)" -gt "$before" ] && break
      sleep 0.1
    done
    [ "$(grep -cE "pkalg $alg |have $alg signature" "$work/sshd.log" || true)" -gt "$before" ] || fail "sshd did not see a $alg signature"
    ok "ssh -I login with the $bits-bit kernel key using $alg"
  done
done

# 5. ssh-agent + ssh-add -s (module allowed with -P), then a login via the agent.
cat "$work"/rsa*.pub > "$work/authorized_keys"
eval "$(ssh-agent -s -P "$(dirname "$module")/*")" > /dev/null
# ssh-add asks for a PIN; there is none, so it gets an empty line on stdin.
printf '\n' | setsid -w ssh-add -s "$module" > "$work/add.out" 2>&1 || { cat "$work/add.out" >&2; fail "ssh-add -s"; }
ssh-add -L | awk '{print $1, $2}' | sort -u > "$work/agent.keys"
for bits in 2048 3072 4096; do
  grep -qxF "$(cat "$work/rsa$bits.pub")" "$work/agent.keys" || fail "the agent does not hold the $bits-bit key"
done
out=$(ssh "${client[@]}" -o PubkeyAcceptedAlgorithms=rsa-sha2-512 "$me@127.0.0.1" "echo via-agent") || fail "ssh via the agent"
[ "$out" = "via-agent" ] || fail "unexpected remote output: $out"
ok "ssh-agent + ssh-add -s, then an ssh login through the agent"

echo "ssh: $pass passed, 0 failed"
