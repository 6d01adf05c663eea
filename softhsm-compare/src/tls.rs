//! `handshakes`: full TLS 1.3 handshakes per second against one running
//! nginx (started by guest.sh), with the CPU each party spent.
//!
//! The client is this process: `--clients` threads, each connecting to
//! 127.0.0.1 again and again with a fresh OpenSSL `Ssl` (TLS 1.3 only, no
//! session cache, so no resumption: every connection is a full handshake),
//! sending an HTTP/1.0 GET of a tiny page and reading the answer to the end,
//! so every connection completes its handshake on both sides. After a
//! warm-up, a window of `--secs` seconds is counted: bounded in time, on the
//! loopback only.
//!
//! The guest has two CPUs and the client runs on them too, so the client's
//! own cost is measured, not guessed: `getrusage(RUSAGE_SELF)` over the
//! window gives the client threads' user + system CPU (this process does
//! nothing else meanwhile); nginx's CPU is read from /proc/PID/stat of the
//! master and workers (utime + stime: a kernel-held key's signature runs in
//! the worker's system time); the whole guest's busy CPU from /proc/stat's
//! idle time.

use serde_json::{Value, json};
use softhsm_compare::measure::{round, stats};
use softhsm_compare::{Args, R};
use std::process::{Command, Stdio};
use std::time::Instant;

fn cpus() -> f64 {
    std::thread::available_parallelism().map_or(2, |n| n.get()) as f64
}

fn ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// user + system CPU seconds of this process (every thread) so far.
fn self_cpu() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: u is a valid rusage to fill.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// utime + stime of one process, in seconds (0 if it is gone).
fn proc_cpu(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in brackets.
    let rest = s.rsplit_once(") ").map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after ") ".
    (t(11) + t(12)) / ticks_per_s()
}

/// The master and its children (the workers).
fn nginx_pids(master: u32) -> Vec<u32> {
    let mut v = vec![master];
    let kids = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
        .unwrap_or_default();
    v.extend(
        kids.split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok()),
    );
    v
}

/// Idle (idle + iowait) CPU seconds of the whole machine (/proc/stat, all
/// CPUs). Busy time is the window's CPU time minus this: the kernel measures
/// idle time exactly, while its user and system columns are sampled at
/// timer ticks, which an emulated guest on a loaded host misses (they then
/// sum to less than the processes' own exact CPU times).
fn machine_idle() -> f64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = s.lines().next().unwrap_or("");
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    (f.get(3).copied().unwrap_or(0.0) + f.get(4).copied().unwrap_or(0.0)) / ticks_per_s()
}

/// What one TLS connection negotiates, from `openssl s_client -brief`.
fn negotiated(port: u16) -> R<Value> {
    let o = Command::new("openssl")
        .args(["s_client", "-brief", "-tls1_3", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("openssl s_client: {e}"))?;
    let text = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(k))
            .map(|v| v.trim().to_string())
    };
    let v = json!({
        "protocol": get("Protocol version:"),
        "ciphersuite": get("Ciphersuite:"),
        "signature_type": get("Signature type:"),
        "hash": get("Hash used:"),
        "server_temp_key": get("Server Temp Key:"),
    });
    if v["protocol"] != "TLSv1.3" || v["signature_type"] != "RSA-PSS" {
        return Err(format!(
            "127.0.0.1:{port} did not answer with TLS 1.3 and an RSA-PSS signature: {text}"
        ));
    }
    Ok(v)
}

/// `handshakes --name NAME --port P --master-pid PID [--clients 4]
/// [--secs 10] [--runs 3] --out FILE`: adds {NAME: results} to the JSON
/// object in FILE.
pub fn handshakes(a: &Args) -> R<()> {
    let name = a.get("name")?;
    let port: u16 = a.num("port", 8443)?;
    let master: u32 = a.num("master-pid", 0)?;
    let clients: usize = a.num("clients", 8)?;
    let secs: u64 = a.num("secs", 10)?;
    let runs: usize = a.num("runs", 3)?;
    let out = a.get("out")?;
    let cpus = cpus();
    let tls = negotiated(port)?;
    let mut samples = Vec::new();
    for r in 0..runs {
        let pids = nginx_pids(master);
        if pids.len() < 2 {
            return Err(format!("nginx master {master} has no workers"));
        }
        let s = window(port, clients, secs as f64, &pids)?;
        let hs = s.handshakes as f64;
        let sample = json!({
            "handshakes": s.handshakes, "seconds": round(s.wall), "per_s": round(hs / s.wall),
            "client_cpu_ms_per_handshake": round(s.client * 1e3 / hs),
            "nginx_cpu_ms_per_handshake": round(s.nginx * 1e3 / hs),
            "busy_cpu_ms_per_handshake": round(s.busy * 1e3 / hs),
            "other_cpu_ms_per_handshake": round((s.busy - s.client - s.nginx) * 1e3 / hs),
            "cpu_utilisation": round(s.busy / (cpus * s.wall)),
            "failed_connections": s.failed,
        });
        eprintln!(
            "softhsm-compare handshakes {name} run {}: {} handshakes in {:.1} s = {:.1}/s; CPU per handshake: client {:.2} ms, nginx {:.2} ms, all {:.2} ms; guest busy {:.0} %; {} failed",
            r + 1,
            s.handshakes,
            s.wall,
            hs / s.wall,
            s.client * 1e3 / hs,
            s.nginx * 1e3 / hs,
            s.busy * 1e3 / hs,
            100.0 * s.busy / (cpus * s.wall),
            s.failed
        );
        samples.push(sample);
    }
    let field = |k: &str| -> Vec<f64> { samples.iter().filter_map(|s| s[k].as_f64()).collect() };
    let result = json!({
        "per_s": stats(&field("per_s")),
        "client_cpu_ms_per_handshake": stats(&field("client_cpu_ms_per_handshake")),
        "nginx_cpu_ms_per_handshake": stats(&field("nginx_cpu_ms_per_handshake")),
        "busy_cpu_ms_per_handshake": stats(&field("busy_cpu_ms_per_handshake")),
        "other_cpu_ms_per_handshake": stats(&field("other_cpu_ms_per_handshake")),
        "cpu_utilisation": stats(&field("cpu_utilisation")),
        "runs": samples, "clients": clients, "seconds_per_run": secs, "cpus": cpus, "negotiated": tls,
        "client": "this process: threads of OpenSSL clients (TLS 1.3 only, no session cache), HTTP/1.0 GET / per connection",
    });
    let mut all: Value = std::fs::read_to_string(out)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(json!({}));
    all[name] = result;
    std::fs::write(out, serde_json::to_string_pretty(&all).unwrap()).map_err(|e| e.to_string())?;
    Ok(())
}

struct Window {
    handshakes: u64,
    failed: u64,
    wall: f64,
    client: f64,
    nginx: f64,
    busy: f64,
}

/// One measured window: `clients` threads connect for a 1 s warm-up, then
/// `secs` seconds are counted; the threads stop after the window.
fn window(port: u16, clients: usize, secs: f64, pids: &[u32]) -> R<Window> {
    use openssl::ssl::{SslConnector, SslMethod, SslSessionCacheMode, SslVerifyMode, SslVersion};
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let e = |x: openssl::error::ErrorStack| x.to_string();
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(e)?;
    b.set_min_proto_version(Some(SslVersion::TLS1_3))
        .map_err(e)?;
    b.set_max_proto_version(Some(SslVersion::TLS1_3))
        .map_err(e)?;
    b.set_verify(SslVerifyMode::NONE);
    b.set_session_cache_mode(SslSessionCacheMode::OFF);
    let connector = b.build();
    let done = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let reused = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let one = || -> R<()> {
        let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|x| x.to_string())?;
        tcp.set_nodelay(true).map_err(|x| x.to_string())?;
        let mut c = connector
            .configure()
            .map_err(e)?
            .verify_hostname(false)
            .connect("localhost", tcp)
            .map_err(|x| x.to_string())?;
        if c.ssl().session_reused() {
            reused.fetch_add(1, Ordering::Relaxed);
        }
        c.write_all(b"GET / HTTP/1.0\r\n\r\n")
            .map_err(|x| x.to_string())?;
        let mut answer = Vec::new();
        let _ = c.read_to_end(&mut answer);
        if !answer.starts_with(b"HTTP/1.1 200") {
            return Err(format!("answer: {}", String::from_utf8_lossy(&answer)));
        }
        Ok(())
    };
    let snap = || {
        (
            Instant::now(),
            done.load(Ordering::SeqCst),
            self_cpu(),
            pids.iter().map(|p| proc_cpu(*p)).sum::<f64>(),
            machine_idle(),
        )
    };
    let (a, z) = std::thread::scope(|sc| {
        for _ in 0..clients {
            sc.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    match one() {
                        Ok(()) => done.fetch_add(1, Ordering::SeqCst),
                        Err(m) => {
                            if failed.fetch_add(1, Ordering::SeqCst) < 3 {
                                eprintln!("softhsm-compare handshakes: a connection failed: {m}");
                            }
                            0
                        }
                    };
                }
            });
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
        let a = snap();
        std::thread::sleep(std::time::Duration::from_secs_f64(secs));
        let z = snap();
        stop.store(true, Ordering::Relaxed);
        (a, z)
    });
    if reused.load(Ordering::SeqCst) > 0 {
        return Err("a TLS session was resumed: the benchmark wants full handshakes only".into());
    }
    Ok(Window {
        handshakes: z.1 - a.1,
        failed: failed.load(Ordering::SeqCst),
        wall: z.0.duration_since(a.0).as_secs_f64(),
        client: z.2 - a.2,
        nginx: z.3 - a.3,
        busy: cpus() * z.0.duration_since(a.0).as_secs_f64() - (z.4 - a.4),
    })
}
