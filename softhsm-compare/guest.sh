#!/usr/bin/env bash
# Inside ONE lab guest: identical RSA 2048/3072/4096 key pairs in a SoftHSMv2
# token and in the user keyring, the functional table, the 1/100/1000-key
# tokens, then the benchmark. Started by softhsm-compare/run; everything of
# SoftHSM's lives under /tmp (its own SOFTHSM2_CONF per token).
# Needs: KP11CMP_OURS (the module), KP11CMP_BIN (the benchmark binary),
# KP11CMP_KEYS (rsa{2048,3072,4096}.pem and .pk8.der), KP11CMP_OUT (a
# writable directory shared with the host).
set -euo pipefail
: "${KP11CMP_OURS:?}" "${KP11CMP_BIN:?}" "${KP11CMP_KEYS:?}" "${KP11CMP_OUT:?}"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ours=$KP11CMP_OURS bin=$KP11CMP_BIN keys=$KP11CMP_KEYS out=$KP11CMP_OUT
softhsm=/usr/lib/softhsm/libsofthsm2.so
pin=1234
work=/tmp/kp11cmp
sizes=${KP11CMP_FIND_SIZES:-1,100,1000}
start=$(date +%s)
say() { echo "== guest [$(($(date +%s) - start))s]: $*"; }
mkdir -p "$work" "$out"
rm -f "$out/functional.tsv" "$out/bench.json" "$out/meta.env"

say "kernel $(uname -r); $(openssl version); softhsm2 $(dpkg-query -W -f '${Version}' softhsm2)"
{
  echo "kernel=$(uname -r)"
  echo "kernel_version=$(cut -d' ' -f1-3 /proc/version) $(sed -n 's/.*Debian \([^ ]*\).*/(Debian \1)/p' /proc/version)"
  echo "softhsm=$(dpkg-query -W -f '${Version}' softhsm2)"
  echo "openssl=$(openssl version | cut -d' ' -f1-2)"
  echo "guest_cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "guest_cpus=$(nproc)"
} > "$out/meta.env"

# --- the same key pairs on both sides ----------------------------------------------
# CKA_ID as keyring-pkcs11 computes it: SHA-1 of the DER RSAPublicKey.
key_id() { openssl rsa -in "$1" -RSAPublicKey_out -outform DER 2> /dev/null | sha1sum | cut -d' ' -f1; }
softhsm_token() { # LABEL: a token in a directory and config of its own
  local d=$work/softhsm/$1
  mkdir -p "$d/tokens"
  printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' "$d" > "$d/softhsm2.conf"
  SOFTHSM2_CONF=$d/softhsm2.conf softhsm2-util --init-token --free --label "$1" --pin "$pin" --so-pin 12345678 > /dev/null
}
softhsm_import() { # TOKEN PEM LABEL
  SOFTHSM2_CONF=$work/softhsm/$1/softhsm2.conf softhsm2-util --import "$2" --token "$1" --label "$3" --id "$(key_id "$2")" --pin "$pin" > /dev/null
}
serials=()
softhsm_token bench
for bits in 2048 3072 4096; do
  s=$(openssl pkcs8 -topk8 -outform DER -nocrypt -in "$keys/rsa$bits.pem" | keyctl padd asymmetric "kp11-bench-$bits" @u)
  serials+=("$bits:$s")
  softhsm_import bench "$keys/rsa$bits.pem" "kp11-bench-$bits"
done
say "loaded kp11-bench-{2048,3072,4096}: kernel @u (serials ${serials[*]}) and SoftHSM token 'bench' (same CKA_ID)"

# --- functional table ----------------------------------------------------------------
say "functional table"
touch "$out/functional.tsv"
SOFTHSM2_CONF=$work/softhsm/bench/softhsm2.conf "$here/functional.sh" softhsm "$softhsm" bench "$pin" "$keys" "$out/functional.tsv"
KP11CMP_SSH_PORT=2323 KP11CMP_TLS_PORT=4444 "$here/functional.sh" keyring-pkcs11 "$ours" user "$pin" "$keys" "$out/functional.tsv"

# --- tokens with 1, 100, 1000 keys ------------------------------------------------------
for n in ${sizes//,/ }; do
  t=find-$n
  "$bin" fill-kernel --name "$t" --count "$n" --der "$keys/rsa2048.pk8.der" > /dev/null
  softhsm_token "$t"
  softhsm_import "$t" "$keys/rsa2048.pem" "$t-0000"
  SOFTHSM2_CONF=$work/softhsm/$t/softhsm2.conf "$bin" fill-softhsm --module "$softhsm" --token "$t" --pin "$pin" --prefix "$t" --count "$n"
  say "token $t: $n keys in keyring $t (in @u) and in SoftHSM token $t"
done

# --- benchmark -----------------------------------------------------------------------------
say "benchmark"
SOFTHSM2_CONF=$work/softhsm/bench/softhsm2.conf "$bin" bench --ours "$ours" --softhsm "$softhsm" --pin "$pin" \
  --softhsm-confs "$work/softhsm" --serials "$(IFS=,; echo "${serials[*]}")" --find-sizes "$sizes" \
  --runs "${KP11CMP_RUNS:-5}" --secs "${KP11CMP_SECS:-1.5}" --short-secs "${KP11CMP_SHORT_SECS:-0.5}" \
  --cold-runs "${KP11CMP_COLD_RUNS:-7}" ${KP11CMP_ONLY:+--only "$KP11CMP_ONLY"} \
  ${KP11CMP_FIND_LIMIT:+--find-limit "$KP11CMP_FIND_LIMIT"} --out "$out/bench.json"
echo "guest_seconds=$(($(date +%s) - start))" >> "$out/meta.env"
say "done"
