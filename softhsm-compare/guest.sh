#!/usr/bin/env bash
# Inside ONE lab guest: identical RSA 2048/3072/4096 key pairs in a SoftHSMv2
# token and in the user keyring, the functional table, the tokens of 1 to
# 10,000 distinct keys, the benchmark, then TLS handshakes against nginx.
# Started by softhsm-compare/run; everything of SoftHSM's and nginx's lives
# under /tmp (its own SOFTHSM2_CONF per token, its own nginx.conf per server).
# Needs: KP11CMP_OURS (the module), KP11CMP_BIN (the benchmark binary),
# KP11CMP_KEYS (rsa{2048,3072,4096}.pem and .pk8.der), KP11CMP_MANY_KEYS (the
# distinct RSA-2048 keys of the big tokens, concatenated PKCS#8 PEM),
# KP11CMP_TOOL (the keyring-pkcs11 tool), KP11CMP_OUT (a writable directory
# shared with the host).
set -euo pipefail
: "${KP11CMP_OURS:?}" "${KP11CMP_BIN:?}" "${KP11CMP_KEYS:?}" "${KP11CMP_OUT:?}" "${KP11CMP_MANY_KEYS:?}" "${KP11CMP_TOOL:?}"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ours=$KP11CMP_OURS bin=$KP11CMP_BIN keys=$KP11CMP_KEYS out=$KP11CMP_OUT many=$KP11CMP_MANY_KEYS tool=$KP11CMP_TOOL
softhsm=/usr/lib/softhsm/libsofthsm2.so
pin=1234
work=/tmp/kp11cmp
ours_sizes=${KP11CMP_FIND_SIZES:-1,100,1000,10000}
padd_sizes=${KP11CMP_PADD_SIZES:-100,1000}
softhsm_sizes=${KP11CMP_SOFTHSM_SIZES:-1,100,1000}
start=$(date +%s)
say() { echo "== guest [$(($(date +%s) - start))s]: $*"; }
wanted() { [ -z "${KP11CMP_ONLY:-}" ] || [[ ",$KP11CMP_ONLY," == *",$1,"* ]]; }
mkdir -p "$work" "$out"
rm -f "$out/functional.tsv" "$out/bench.json" "$out/meta.env" "$out/fills.jsonl" "$out/tls.json"

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
touch "$out/functional.tsv"
if wanted functional; then
  say "functional table"
  SOFTHSM2_CONF=$work/softhsm/bench/softhsm2.conf "$here/functional.sh" softhsm "$softhsm" bench "$pin" "$keys" "$out/functional.tsv"
  KP11CMP_SSH_PORT=2323 KP11CMP_TLS_PORT=4444 "$here/functional.sh" keyring-pkcs11 "$ours" user "$pin" "$keys" "$out/functional.tsv"
fi

# --- tokens of 1 … 10,000 distinct keys -----------------------------------------------
# Root's key quota, as /proc/key-users counts it: "keys bytes" (qnkeys qnbytes).
quota() { awk '$1 == "0:" { split($4, k, "/"); split($5, b, "/"); print k[1], b[1] }' /proc/key-users; }
fill_line() { # SIDE N FILL-JSON QUOTA-BEFORE QUOTA-AFTER
  local q0 q1
  read -r -a q0 <<< "$4"
  read -r -a q1 <<< "$5"
  printf '{"side":"%s","keys":%s,"fill":%s,"quota_keys":%s,"quota_bytes":%s}\n' "$1" "$2" "$3" \
    $((q1[0] - q0[0])) $((q1[1] - q0[1])) >> "$out/fills.jsonl"
}
{
  echo "root_maxkeys=$(cat /proc/sys/kernel/keys/root_maxkeys)"
  echo "root_maxbytes=$(cat /proc/sys/kernel/keys/root_maxbytes)"
  echo "quota_before_tokens=$(quota)"
} >> "$out/meta.env"
# keyring-pkcs11 as a server operator fills it: through the module, as root,
# so that each key's record caches its public key.
for n in ${ours_sizes//,/ }; do
  t=find-$n
  keyctl newring "$t" @u > /dev/null
  q0=$(quota)
  f=$(KEYRING_PKCS11_KEYRINGS=$t "$bin" fill-module --module "$ours" --token "$t" --keys "$many" --count "$n" --prefix "$t" --threads 2)
  fill_line keyring_pkcs11 "$n" "$f" "$q0" "$(quota)"
  say "token $t: $n keys through the module (C_CreateObject, PKCS#8 in CKA_VALUE, CKA_TOKEN): $f; root's quota now $(quota) of $(cat /proc/sys/kernel/keys/root_maxkeys) keys / $(cat /proc/sys/kernel/keys/root_maxbytes) bytes"
done
# keyctl padd: kernel keys alone, no records.
for n in ${padd_sizes//,/ }; do
  t=padd-$n
  q0=$(quota)
  f=$("$bin" fill-kernel --name "$t" --keys "$many" --count "$n" --prefix "$t")
  fill_line keyring_pkcs11_padd "$n" "$f" "$q0" "$(quota)"
  say "token $t: $n keys with add_key (keyctl padd): $f"
done
for n in ${softhsm_sizes//,/ }; do
  t=find-$n
  softhsm_token "$t"
  f=$(SOFTHSM2_CONF=$work/softhsm/$t/softhsm2.conf "$bin" fill-softhsm --module "$softhsm" --token "$t" --pin "$pin" --keys "$many" --count "$n" --prefix "$t")
  fill_line softhsm "$n" "$f" "0 0" "0 0"
  say "SoftHSM token $t: $n keys (C_CreateObject, private + public): $f"
done
echo "quota_after_tokens=$(quota)" >> "$out/meta.env"

# --- benchmark -----------------------------------------------------------------------------
say "benchmark"
SOFTHSM2_CONF=$work/softhsm/bench/softhsm2.conf "$bin" bench --ours "$ours" --softhsm "$softhsm" --pin "$pin" \
  --softhsm-confs "$work/softhsm" --serials "$(IFS=,; echo "${serials[*]}")" --keys "$keys" \
  --find-sizes "$ours_sizes" --padd-sizes "$padd_sizes" --softhsm-sizes "$softhsm_sizes" \
  --runs "${KP11CMP_RUNS:-5}" --secs "${KP11CMP_SECS:-1.5}" --short-secs "${KP11CMP_SHORT_SECS:-0.5}" \
  --cold-runs "${KP11CMP_COLD_RUNS:-7}" ${KP11CMP_ONLY:+--only "$KP11CMP_ONLY"} \
  ${KP11CMP_FIND_LIMIT:+--find-limit "$KP11CMP_FIND_LIMIT"} --out "$out/bench.json"

# --- TLS handshakes ----------------------------------------------------------------------
# One nginx at a time: 2 workers (www-data), RSA-2048, TLS 1.3 only, no session
# cache, no tickets, the same certificate; the key in a file (OpenSSL in-process),
# in SoftHSMv2 (libp11 engine) and in the kernel through keyring-pkcs11 (libp11
# engine; the key loaded by `keyring-pkcs11 exec` into the server's own session
# keyring, as README "Servers" starts nginx).
if wanted tls; then
  say "TLS handshakes"
  ng=$work/nginx
  mkdir -p "$ng"
  openssl req -new -x509 -key "$keys/rsa2048.pem" -subj /CN=localhost -days 2 -out "$ng/cert.pem" 2> /dev/null
  softhsm_token tls
  softhsm_import tls "$keys/rsa2048.pem" kp11-bench-2048
  # libp11 re-initialises the module in each worker after the fork: SoftHSM
  # then opens its token again, as www-data.
  chown -R www-data: "$work/softhsm/tls"
  engine_conf() { # FILE MODULE [PIN]
    printf '%s\n' 'openssl_conf = openssl_init' '[openssl_init]' 'engines = engine_section' '[engine_section]' \
      'pkcs11 = pkcs11_section' '[pkcs11_section]' 'engine_id = pkcs11' \
      'dynamic_path = /usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so' "MODULE_PATH = $2" ${3:+"PIN = $3"} 'init = 1' > "$1"
  }
  nginx_conf() { # NAME PORT KEY
    local d=$ng/$1
    mkdir -p "$d/tmp"
    chown www-data: "$d/tmp"
    cat > "$d/nginx.conf" << NGINX
user www-data;
worker_processes 2;
pid $d/nginx.pid;
error_log $d/error.log warn;
env OPENSSL_CONF;
env SOFTHSM2_CONF;
events { worker_connections 512; }
http {
  access_log off;
  client_body_temp_path $d/tmp/body;
  proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fastcgi;
  uwsgi_temp_path $d/tmp/uwsgi;
  scgi_temp_path $d/tmp/scgi;
  server {
    listen 127.0.0.1:$2 ssl;
    ssl_certificate $ng/cert.pem;
    ssl_certificate_key $3;
    ssl_protocols TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;
    location / { return 200 "ok\n"; }
  }
}
NGINX
  }
  listening() { awk -v p="$(printf ':%04X$' "$1")" '$2 ~ p && $4 == "0A" { f = 1 } END { exit !f }' /proc/net/tcp; }
  measure() { # NAME PORT COMMAND...: nginx in the foreground (its master is our child), measured, stopped
    local name=$1 port=$2 pid i
    shift 2
    "$@" -c "$ng/$name/nginx.conf" -g 'daemon off;' > "$ng/$name/stdout" 2>&1 &
    pid=$!
    for i in $(seq 300); do listening "$port" && break; sleep 0.1; done
    listening "$port" || { cat "$ng/$name/stdout" "$ng/$name/error.log"; echo "nginx ($name) did not start" >&2; kill "$pid" 2> /dev/null; return 1; }
    sleep 1
    local rc=0
    "$bin" handshakes --name "$name" --port "$port" --master-pid "$pid" --clients "${KP11CMP_TLS_CLIENTS:-8}" \
      --secs "${KP11CMP_TLS_SECS:-10}" --runs "${KP11CMP_TLS_RUNS:-3}" --out "$out/tls.json" || rc=$?
    kill -QUIT "$pid"
    wait "$pid" || true
    # What nginx complained of (a client closing early is not news).
    grep -v -e 'peer closed connection' -e '^$' "$ng/$name/error.log" | tail -n 5 || true
    return "$rc"
  }
  nginx_conf file 8443 "$keys/rsa2048.pem"
  nginx_conf softhsm 8444 '"engine:pkcs11:pkcs11:token=tls;object=kp11-bench-2048;type=private"'
  nginx_conf keyring-pkcs11 8445 '"engine:pkcs11:pkcs11:token=session;object=web;type=private"'
  engine_conf "$ng/softhsm/openssl.cnf" "$softhsm" "$pin"
  engine_conf "$ng/keyring-pkcs11/openssl.cnf" "$ours"
  # A server that fails is said so and left out; the rest of the results stand.
  measure file 8443 nginx || say "nginx with the key file: FAILED"
  measure softhsm 8444 env "SOFTHSM2_CONF=$work/softhsm/tls/softhsm2.conf" "OPENSSL_CONF=$ng/softhsm/openssl.cnf" nginx \
    || say "nginx with SoftHSMv2: FAILED"
  measure keyring-pkcs11 8445 env "OPENSSL_CONF=$ng/keyring-pkcs11/openssl.cnf" "$tool" exec --key "web=$keys/rsa2048.pem" -- nginx \
    || say "nginx with keyring-pkcs11: FAILED"
fi
echo "guest_seconds=$(($(date +%s) - start))" >> "$out/meta.env"
say "done"
