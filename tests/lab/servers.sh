#!/usr/bin/env bash
# Real servers whose keys exist only in the kernel, each started the way
# README "Servers" says, from the committed files in examples/servers/, with
# real clients over 127.0.0.1:
#   nginx   Debian's nginx.service + examples/servers/nginx.service.conf (a
#           drop-in: LoadCredentialEncrypted=, keyring-pkcs11 exec
#           --credentials), the libp11 engine; master root, workers www-data;
#           200 curl requests over TLS 1.3 and 1.2, a reload (SIGHUP).
#   Apache  Debian's apache2.service + examples/servers/apache2.service.conf,
#           mod_ssl through pkcs11-provider; `apachectl start` daemonises;
#           children www-data; curl over TLS 1.3 and 1.2.
#   sshd    examples/servers/sshd-hostkey-agent.service (ssh-agent with the
#           host key, ssh-add -s) + sshd-hostkey.conf (HostKeyAgent); an ssh
#           client pinning the kernel key's public key logs in.
#   curl    a TLS client certificate key in the kernel, mutual TLS against
#           openssl s_server -Verify 1: bookworm's curl 7.88 through the
#           libp11 engine, bookworm-backports' 8.14 through pkcs11-provider.
# systemd is not PID 1 in the lab: tests/lab/unit-start.py does what systemd
# does for a unit (credentials, environment, fresh session keyring per
# command, a cgroup, Type=forking/simple) and says what it does not.
# After its clients, every process of each server is scanned
# (tests/lab/memscan.py: every readable mapping) for d, p, q, dP, dQ, qInv in
# both byte orders: none may be found, while the modulus must be; the scanner
# itself is shown to find them in an openssl s_server that read the key file.
# Then the server's cgroup is SIGKILLed (cgroup.kill) and the kernel's key
# accounting must be back where it was: the keys are gone.
# Runs as root inside the lab guest. Usage: servers.sh MODULE.so KEYDIR
set -euo pipefail

module=$(realpath "$1")
keys=$(realpath "$2")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
ex=$top/examples/servers
work=$(mktemp -d /tmp/kp11-servers.XXXXXX)
chmod 755 "$work"
suite=servers
# shellcheck source=tests/lab/checks.sh
source "$here/checks.sh"
# shellcheck source=tests/lab/keyusage.sh
source "$here/keyusage.sh"
scan() { python3 "$here/memscan.py" "$@"; }
installed=/usr/lib/x86_64-linux-gnu/pkcs11/libkeyring_pkcs11.so
sshd_port=2226 mtls_port=4450
cgroups=()
servers_cleanup() {
  local cg
  for cg in "${cgroups[@]:-}"; do [ -n "$cg" ] && [ -e "$cg/cgroup.kill" ] && echo 1 > "$cg/cgroup.kill"; done
  [ -f "$work/sshd.pid" ] && kill "$(cat "$work/sshd.pid")" 2> /dev/null
  "$top/scripts/install" --uninstall > /dev/null 2>&1 || true
  cleanup
}
trap servers_cleanup EXIT

echo "# kernel $(uname -r); $(nginx -v 2>&1); $(apache2 -v | head -n 1); $(curl --version | head -n 1 | cut -d' ' -f1-2); $(ssh -V 2>&1)"
for b in 2048 3072 4096; do [ -r "$keys/rsa$b.pem" ] || die "$keys/rsa$b.pem missing (lab/test makes it)"; done

# --- installation, as an operator does it ------------------------------------
# The module, the tool, the configuration files; the private keys encrypted
# with systemd's host key into /etc/credstore.encrypted, the plain files gone.
"$top/scripts/install" --no-build --from "$(dirname "$module")" > "$work/install.log" 2>&1 \
  || { cat "$work/install.log"; die "scripts/install"; }
[ -x "$installed" ] && command -v keyring-pkcs11 > /dev/null || die "scripts/install put nothing at $installed"
mkdir -p -m 700 /etc/credstore.encrypted
mkdir -p /etc/keyring-pkcs11 /etc/systemd/system/nginx.service.d /etc/systemd/system/apache2.service.d /etc/ssh/sshd_config.d
install -m 644 "$ex/openssl-provider.cnf" "$ex/openssl-engine.cnf" /etc/keyring-pkcs11/
install -m 644 "$ex/nginx.service.conf" /etc/systemd/system/nginx.service.d/keyring-pkcs11.conf
install -m 644 "$ex/nginx-site.conf" /etc/nginx/sites-enabled/kernel-key
rm -f /etc/nginx/sites-enabled/default
install -m 644 "$ex/apache2.service.conf" /etc/systemd/system/apache2.service.d/keyring-pkcs11.conf
install -m 644 "$ex/apache2-site.conf" /etc/apache2/sites-available/kernel-key.conf
a2enmod -q ssl > /dev/null && a2ensite -q kernel-key > /dev/null || die "a2enmod ssl / a2ensite kernel-key"
install -m 644 "$ex/sshd-hostkey-agent.service" /etc/systemd/system/sshd-hostkey-agent.service
install -m 644 "$ex/sshd-hostkey.conf" /etc/ssh/sshd_config.d/hostkey-agent.conf

web=$keys/rsa2048.pem host=$keys/rsa3072.pem client=$keys/rsa4096.pem
openssl req -new -x509 -key "$web" -subj /CN=localhost -addext subjectAltName=DNS:localhost -days 2 -out /etc/ssl/certs/web.crt 2> /dev/null
openssl req -new -x509 -key "$client" -subj /CN=kp11-client -days 2 -out "$work/client.crt" 2> /dev/null
systemd-creds setup > /dev/null 2>&1 || true
systemd-creds encrypt --with-key=host --name=web.key "$web" /etc/credstore.encrypted/web.key \
  || die "systemd-creds encrypt (host key)"
# The host key as Debian keeps it (OpenSSH format), encrypted, then removed.
install -m 600 "$host" /etc/ssh/ssh_host_rsa_key
ssh-keygen -q -p -P '' -N '' -f /etc/ssh/ssh_host_rsa_key > /dev/null
ssh-keygen -y -f /etc/ssh/ssh_host_rsa_key > /etc/ssh/ssh_host_rsa_key.pub
systemd-creds encrypt --with-key=host --name=host.key /etc/ssh/ssh_host_rsa_key /etc/credstore.encrypted/ssh_host_rsa_key \
  || die "systemd-creds encrypt the host key"
rm -f /etc/ssh/ssh_host_rsa_key
ok "installed (scripts/install, examples/servers/*); web and host keys encrypted with systemd-creds (host key), the host key file removed"

# start UNIT-FILE [DROP-IN]: sets mainpid and cgroup.
start() {
  local out
  out=$(python3 "$here/unit-start.py" "$@" 2> "$work/unit.err") || { cat "$work/unit.err" "/run/kp11-units/$(basename "$1").log" 2> /dev/null; return 1; }
  cat "$work/unit.err"
  mainpid=$(sed -n 's/^MAINPID=//p' <<< "$out")
  cgroup=$(sed -n 's/^CGROUP=//p' <<< "$out")
  cgroups+=("$cgroup")
}
pids() { cat "$1/cgroup.procs"; }
uid_of() { awk '/^Uid:/ { print $2 }' "/proc/$1/status"; }
# killed CGROUP BEFORE: SIGKILL to every process in the cgroup (what systemd's
# stop ends with), then the kernel's accounting is back to BEFORE.
killed() {
  local cg=$1 before=$2 i
  echo 1 > "$cg/cgroup.kill"
  for i in $(seq 100); do [ -z "$(pids "$cg")" ] && break; sleep 0.1; done
  [ -z "$(pids "$cg")" ] || { echo "processes left: $(pids "$cg")"; return 1; }
  settle "$before" || return 1
  echo "keys gone: usage back to '$before' (${SECONDS}s)"
}

# --- 0. the scanner finds a key that a process holds ---------------------------
# openssl s_server with the key file: OpenSSL holds d, p, q... as bignums.
mkdir "$work/www"
head -c 262144 /dev/urandom > "$work/www/big"     # what curl downloads (through a FIFO, section 4)
(cd "$work/www" && exec openssl s_server -accept "127.0.0.1:$mtls_port" -cert /etc/ssl/certs/web.crt -key "$web" \
   -Verify 1 -CAfile "$work/client.crt" -WWW -quiet > "$work/s_server.log" 2>&1) &
server_pid=$!
listening() { awk -v p="$(printf ':%04X$' "$1")" '$2 ~ p && $4 == "0A" { f = 1 } END { exit !f }' /proc/net/tcp; }
for _ in $(seq 100); do listening "$mtls_port" && break; sleep 0.1; done
scanner_control() {
  local rc=0
  scan "$web" "$server_pid" || rc=$?
  [ "$rc" -eq 1 ] || { echo "memscan exited $rc on a process holding the key, want 1 (found)"; return 1; }
}
check "the scanner finds the private key in openssl s_server, which read the key file (exit 1)" scanner_control

# --- 1. nginx -------------------------------------------------------------------
before=$(steady_usage)
nginx_started() {
  start /lib/systemd/system/nginx.service /etc/systemd/system/nginx.service.d/keyring-pkcs11.conf || return 1
  [ "$(uid_of "$mainpid")" = 0 ] || { echo "master not root"; return 1; }
  workers=$(pgrep -P "$mainpid" -u www-data -x nginx | tr '\n' ' ')
  echo "master $mainpid, workers: $workers"
  [ "$(wc -w <<< "$workers")" -ge 2 ] || { echo "fewer than 2 workers as www-data"; return 1; }
}
check "nginx started as the unit says (ExecStartPre nginx -t, ExecStart, both under keyring-pkcs11 exec --credentials): master root, ≥2 workers www-data" nginx_started
https() { curl -sS --max-time 30 --no-sessionid --cacert /etc/ssl/certs/web.crt --resolve localhost:443:127.0.0.1 -H 'Connection: close' "$@"; }
# get N TLSVER...: N requests, each a new connection and a full handshake.
urls() { local i; for ((i = 0; i < $1; i++)); do echo "https://localhost/$i"; done; }
traffic() {
  local v clients=()
  : > "$work/answers"
  for v in 1.3 1.3 1.2 1.2; do
    https --tlsv"$v" --tls-max "$v" $(urls 50) >> "$work/answers.$v.$RANDOM" 2>&1 &
    clients+=($!)
  done
  wait "${clients[@]}"
  cat "$work"/answers.* > "$work/answers"; rm -f "$work"/answers.*
  local n13 n12 served
  n13=$(grep -c '^[0-9]* TLSv1.3$' "$work/answers" || true)
  n12=$(grep -c '^[0-9]* TLSv1.2$' "$work/answers" || true)
  served=$(awk '{ print $1 }' "$work/answers" | sort | uniq -c | tr '\n' ';')
  echo "TLS 1.3: $n13, TLS 1.2: $n12; answered by (count pid): $served"
  [ "$n13" -eq 100 ] && [ "$n12" -eq 100 ] || { grep -v '^[0-9]* TLSv1\.[23]$' "$work/answers" | head; tail -n 20 /var/log/nginx/error.log; return 1; }
  [ "$(awk '{ print $1 }' "$work/answers" | sort -u | wc -l)" -ge 2 ] || { echo "one worker answered everything"; return 1; }
}
check "nginx: 200 requests (100 over TLS 1.3, 100 over TLS 1.2, a full handshake each), all answered, by more than one worker" traffic
reloaded() {
  python3 "$here/unit-start.py" /lib/systemd/system/nginx.service /etc/systemd/system/nginx.service.d/keyring-pkcs11.conf --reload 2>&1 || return 1
  local i new
  for i in $(seq 100); do
    new=$(pgrep -P "$mainpid" -u www-data -x nginx | tr '\n' ' ')
    [ -n "$new" ] && ! grep -qw "$(awk '{ print $1 }' <<< "$workers")" <<< "$new" && break
    sleep 0.1
  done
  echo "workers after reload: $new"
  local out
  out=$(https --tlsv1.3 https://localhost/after-reload) || return 1
  echo "$out"
  grep -q "^[0-9]* TLSv1.3$" <<< "$out"
}
check "nginx: ExecReload (SIGHUP): the master loads the key again from the kernel, new workers answer" reloaded
check "nginx: no process of the service (master, workers) holds d, p, q, dP, dQ or qInv; each holds the modulus" \
  scan "$web" $(pids "$cgroup")
check "nginx: SIGKILL to the service's cgroup: the key leaves the kernel" killed "$cgroup" "$before"

# --- 2. Apache httpd ---------------------------------------------------------------
before=$(steady_usage)
apache_started() {
  start /lib/systemd/system/apache2.service /etc/systemd/system/apache2.service.d/keyring-pkcs11.conf || return 1
  local children
  children=$(pgrep -P "$mainpid" -u www-data | tr '\n' ' ')
  echo "parent $mainpid ($(uid_of "$mainpid")), children www-data: $children"
  [ "$(uid_of "$mainpid")" = 0 ] && [ -n "$children" ] || return 1
  grep -q '/ossl-modules/pkcs11.so$' "/proc/$mainpid/maps" || { echo "pkcs11-provider is not loaded"; return 1; }
  grep -q "$installed\$" "/proc/$mainpid/maps" || { echo "the module is not loaded"; return 1; }
  if grep -q '/engines-3/' "/proc/$mainpid/maps"; then echo "an OpenSSL engine is loaded"; return 1; fi
}
check "Apache started as the unit says (apachectl start under keyring-pkcs11 exec --credentials, daemonised): parent root, children www-data; pkcs11-provider and the module loaded, no engine" apache_started
apache_traffic() {
  local v i out n=0
  for v in 1.3 1.2; do
    for i in 1 2 3 4 5; do
      out=$(https --tlsv"$v" --tls-max "$v" -o /dev/null -w '%{http_code}' -v https://localhost/ 2>&1) || { echo "$out"; return 1; }
      grep -q "SSL connection using TLSv$v " <<< "$out" && [ "${out: -3}" = 200 ] || { echo "$out"; return 1; }
      n=$((n + 1))
    done
  done
  echo "$n requests answered"
}
check "Apache: 5 requests over TLS 1.3 and 5 over TLS 1.2, a full handshake each, all answered 200" apache_traffic
check "Apache: no process of the service holds d, p, q, dP, dQ or qInv; each holds the modulus" scan "$web" $(pids "$cgroup")
check "Apache: SIGKILL to the service's cgroup: the key leaves the kernel" killed "$cgroup" "$before"

# --- 3. sshd with its host key in the kernel -----------------------------------
before=$(steady_usage)
sock=/run/sshd-hostkey-agent.sock
ssh-keygen -q -t ed25519 -N '' -f "$work/client_ed25519"
cp "$work/client_ed25519.pub" "$work/authorized_keys"
cat > "$work/sshd_config" <<CFG
ListenAddress 127.0.0.1
Port $sshd_port
Include /etc/ssh/sshd_config.d/hostkey-agent.conf
PidFile $work/sshd.pid
AuthorizedKeysFile $work/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
StrictModes no
CFG
ssh_login() { # KNOWN_HOSTS ALGORITHM
  ssh -F /dev/null -p "$sshd_port" -i "$work/client_ed25519" -o BatchMode=yes -o IdentitiesOnly=yes \
    -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$1" -o GlobalKnownHostsFile=/dev/null \
    -o HostKeyAlgorithms="$2" root@127.0.0.1 'echo logged-in'
}
agent_started() {
  start /etc/systemd/system/sshd-hostkey-agent.service || return 1
  local listed
  listed=$(SSH_AUTH_SOCK=$sock ssh-add -L) || { echo "the agent lists no key"; return 1; }
  echo "$listed"
  [ "$(awk '{ print $1, $2 }' <<< "$listed")" = "$(awk '{ print $1, $2 }' /etc/ssh/ssh_host_rsa_key.pub)" ] \
    || { echo "the agent's key is not the host key"; return 1; }
  echo "[127.0.0.1]:$sshd_port $(awk '{ print $1, $2 }' <<< "$listed")" > "$work/known_hosts"
  /usr/sbin/sshd -f "$work/sshd_config" -E "$work/sshd.log" || return 1
  for _ in $(seq 100); do [ -s "$work/sshd.pid" ] && break; sleep 0.1; done
  [ -s "$work/sshd.pid" ]
}
check "ssh-agent started as the unit says (keyring-pkcs11 exec --credentials, ssh-add -s of the installed module); it lists the host key; sshd with HostKeyAgent started" agent_started
logins() {
  local alg out
  for alg in rsa-sha2-512 rsa-sha2-256; do
    out=$(ssh_login "$work/known_hosts" "$alg" 2>&1) || { echo "$out"; tail -n 20 "$work/sshd.log"; return 1; }
    [ "$out" = logged-in ] || { echo "$out"; return 1; }
  done
  # Pinning is real: another key in known_hosts is refused.
  echo "[127.0.0.1]:$sshd_port $(ssh-keygen -y -f "$web" | awk '{ print $1, $2 }')" > "$work/known_hosts.other"
  if out=$(ssh_login "$work/known_hosts.other" rsa-sha2-256 2>&1); then echo "logged in with another host key pinned"; return 1; fi
  grep -q "REMOTE HOST IDENTIFICATION HAS CHANGED\|Host key verification failed" <<< "$out" || { echo "$out"; return 1; }
}
check "ssh (StrictHostKeyChecking yes, known_hosts = the kernel key's public key) logs in, rsa-sha2-512 and -256; another pinned key is refused" logins
check "sshd: no process of the agent's service (ssh-agent, ssh-pkcs11-helper) nor sshd holds d, p, q, dP, dQ or qInv; each holds the modulus" \
  scan "$host" $(pids "$cgroup") "$(cat "$work/sshd.pid")"
agent_killed() {
  killed "$cgroup" "$before" || return 1
  local out
  if out=$(ssh_login "$work/known_hosts" rsa-sha2-256 2>&1); then echo "logged in without the host key's agent"; return 1; fi
  echo "after: $out"
}
check "sshd: SIGKILL to the agent's cgroup: the host key leaves the kernel, and sshd can no longer prove its identity" agent_killed
kill "$(cat "$work/sshd.pid")" 2> /dev/null || true

# --- 4. curl with its client certificate's key in the kernel ------------------
# Bookworm's curl 7.88 loads the libp11 engine itself for a pkcs11: key (the
# engine's configuration is the nginx recipe's, module: keyring-pkcs11);
# curl 8.12 and later also take the key from an OpenSSL 3 provider
# (--key-type PROV): bookworm-backports' 8.14, unpacked by lab/setup beside
# the system's curl, runs through pkcs11-provider with no engine at all.
curl_provider=${KEYRING_PKCS11_LAB_CACHE:-/var/cache/keyring-pkcs11-lab}/curl/bin/curl
before=$(steady_usage)
curl_mtls() { # CURL OPENSSL_CONF [ENV...] -- CURL-ARGS...: in the cgroup kp11-curl
  local bin=$1 conf=$2 envs=()
  shift 2
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  bash -c 'echo $$ > "$0/cgroup.procs"; exec "$@"' /sys/fs/cgroup/kp11-curl \
    env OPENSSL_CONF="$conf" "${envs[@]}" \
    keyring-pkcs11 exec --key client="$client" -- \
    "$bin" -sS --max-time 60 --cacert /etc/ssl/certs/web.crt --resolve "localhost:$mtls_port:127.0.0.1" \
      --cert "$work/client.crt" --key 'pkcs11:token=session;object=client;type=private' "$@"
}
mkdir -p /sys/fs/cgroup/kp11-curl; cgroups+=(/sys/fs/cgroup/kp11-curl)
# mtls CURL OPENSSL_CONF LOADED NOT-LOADED [ENV...] -- [CURL-ARGS...]: a
# download with the client key in the kernel; LOADED (a mapping) must be in
# curl, NOT-LOADED must not. curl is scanned mid-transfer: the file it asks
# for is a FIFO, which s_server opens once the handshake (and the client's
# signature) is done and which gives nothing until written here.
mtls() {
  local bin=$1 conf=$2 loaded=$3 unloaded=$4 cg=/sys/fs/cgroup/kp11-curl i rc=0 p
  shift 4
  rm -f "$work/got" "$work/www/slow"; mkfifo "$work/www/slow"
  local seen=$(grep -c "CN = kp11-client" "$work/s_server.log" || true)
  curl_mtls "$bin" "$conf" "$@" -o "$work/got" "https://localhost:$mtls_port/slow" > "$work/curl.log" 2>&1 &
  local curl_pid=$!
  release() { timeout 30 dd if="$work/www/big" of="$work/www/slow" status=none || true; }
  for i in $(seq 300); do
    (($(grep -c "CN = kp11-client" "$work/s_server.log") > seen)) && break
    kill -0 "$curl_pid" 2> /dev/null || break
    sleep 0.1
  done
  (($(grep -c "CN = kp11-client" "$work/s_server.log") > seen)) || {
    wait "$curl_pid" || rc=$?; echo "s_server saw no client certificate; curl exited $rc"; cat "$work/curl.log" "$work/s_server.log"; return 1
  }
  p=$(pids "$cg")
  if ! { grep -q "$loaded" "/proc/$p/maps" && grep -q "$installed\$" "/proc/$p/maps"; }; then
    echo "curl (pid $p) has not loaded $loaded and the module"; release; wait "$curl_pid"; return 1
  fi
  if grep -q "$unloaded" "/proc/$p/maps"; then echo "curl has loaded $unloaded"; release; wait "$curl_pid"; return 1; fi
  scan "$client" $p || { release; wait "$curl_pid"; cat "$work/curl.log"; return 1; }
  release
  wait "$curl_pid" || { cat "$work/curl.log" "$work/s_server.log"; return 1; }
  cmp "$work/got" "$work/www/big" || return 1
  settle "$before"
}
check "curl 7.88 (libp11 engine, OPENSSL_CONF=openssl-engine.cnf) authenticates with a kernel-held client key to s_server -Verify 1; no secret in curl's memory mid-transfer; the key gone when curl exits" \
  mtls curl /etc/keyring-pkcs11/openssl-engine.cnf '/engines-3/pkcs11.so$' '/ossl-modules/pkcs11.so$' --
provider_curl() {
  "$curl_provider" --version | head -n 1 | grep -E '^curl 8\.(1[2-9]|[2-9][0-9])' \
    || { echo "no curl 8.12 or later at $curl_provider (lab/setup unpacks it)"; return 1; }
  mtls "$curl_provider" /etc/keyring-pkcs11/openssl-provider.cnf '/ossl-modules/pkcs11.so$' '/engines-3/pkcs11.so$' \
    OPENSSL_ENGINES=/nonexistent -- --key-type PROV
}
check "curl 8.14 (bookworm-backports) through pkcs11-provider alone (--key-type PROV, OPENSSL_CONF=openssl-provider.cnf, no engine): the same mutual TLS, scan and end of the key" \
  provider_curl
provider_only() {
  local out rc=0
  out=$(curl_mtls curl /etc/keyring-pkcs11/openssl-provider.cnf OPENSSL_ENGINES=/nonexistent -- -o /dev/null "https://localhost:$mtls_port/big" 2>&1) || rc=$?
  echo "exit $rc: $out"
  [ "$rc" -ne 0 ] && grep -q "SSL Engine 'pkcs11' not found" <<< "$out"
}
check "curl 7.88 with only pkcs11-provider (engine kept out): fails, \"SSL Engine 'pkcs11' not found\" (README says so)" provider_only

summary
