//! softhsm-compare-probe: the fresh-process measurements of softhsm-compare,
//! in a binary that links nothing but libc (and the Rust runtime), so that the
//! module under test loads exactly what it needs itself.
//!
//!   cold   dlopen → C_Initialize → find → first signature, and peak RSS
//!   find   C_Initialize → first lookup → first signature on one token, then
//!          C_FindObjects cycles by label and listing everything
//!   loop   one operation --count times, for profilers (perf, valgrind
//!          --tool=callgrind): --op sign|pss|verify|find|list|attrs

use cryptoki_sys::*;
use keyring_pkcs11_testkit::{Module, Template};
use serde_json::json;
use softhsm_compare::measure::{rate, round, stats};
use softhsm_compare::{Args, MESSAGE, Mech, R, initialize, key, load, login, token};
use std::time::Instant;

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let mode = argv.get(1).cloned().unwrap_or_default();
    let rest = argv.get(2..).unwrap_or(&[]).to_vec();
    let r = Args::parse(&rest).and_then(|a| match mode.as_str() {
        "cold" => cold_child(&a),
        "find" => find_child(&a),
        "loop" => loop_child(&a),
        _ => Err("usage: softhsm-compare-probe cold|find|loop --opt value ...".into()),
    });
    if let Err(e) = r {
        eprintln!("softhsm-compare-probe {mode}: {e}");
        std::process::exit(1);
    }
}

/// Fresh process: dlopen → C_Initialize → token → session (→ C_Login if the
/// token requires it, as OpenSSH does) → find the private key by label →
/// C_SignInit + C_Sign (CKM_SHA256_RSA_PKCS). Prints phase times and the
/// process's peak RSS (VmHWM) as JSON.
fn cold_child(a: &Args) -> R<()> {
    let status = || -> (f64, f64) {
        let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let get = |k: &str| {
            s.lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN)
        };
        (get("VmHWM:"), get("VmRSS:"))
    };
    if a.opt("baseline").is_some() {
        let (hwm, rss) = status();
        println!("{}", json!({ "vm_hwm_kb": hwm, "vm_rss_kb": rss }));
        return Ok(());
    }
    let module = a.get("module")?;
    let t = Instant::now();
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let module = Module::load(module)?;
    let p = module.client();
    let dl = ms(t);
    let t1 = Instant::now();
    initialize(p)?;
    let init = ms(t1);
    let t2 = Instant::now();
    let tok = token(p, a.get("token")?)?;
    let s = p.open(tok.slot)?;
    if tok.flags & CKF_LOGIN_REQUIRED != 0 {
        login(p, s, a.get("pin")?)?;
    }
    let sess = ms(t2);
    let t3 = Instant::now();
    let k = key(p, s, CKO_PRIVATE_KEY, a.get("label")?)?;
    let find = ms(t3);
    let t4 = Instant::now();
    let mut sig = vec![0u8; 512];
    // The module tells the size (bits/8); a 512-byte buffer fits every key here.
    let n = p.sign_into(s, &Mech::Sha256Pkcs.mechanism(), k, MESSAGE, &mut sig)?;
    let sign = ms(t4);
    let total = ms(t);
    if n < 256 {
        return Err(format!("signature of {n} bytes"));
    }
    let (hwm, rss) = status();
    println!(
        "{}",
        json!({
            "total_ms": round(total), "dlopen_ms": round(dl), "initialize_ms": round(init),
            "session_login_ms": round(sess), "find_ms": round(find), "sign_ms": round(sign),
            "vm_hwm_kb": hwm, "vm_rss_kb": rss, "login": tok.flags & CKF_LOGIN_REQUIRED != 0,
        })
    );
    Ok(())
}

/// One token in a fresh process: C_Initialize → the first lookup by label →
/// the first signature (what a client pays with this many keys in the
/// token), then C_FindObjects cycles by label and listing every object.
fn find_child(a: &Args) -> R<()> {
    let t = Instant::now();
    let ms = |t: Instant| round(t.elapsed().as_secs_f64() * 1e3);
    let module = load(a.get("module")?)?;
    let p = module.client();
    let tok = token(p, a.get("token")?)?;
    let s = p.open(tok.slot)?;
    if tok.flags & CKF_LOGIN_REQUIRED != 0 {
        login(p, s, a.get("pin")?)?;
    }
    let label = a.get("label")?.to_string();
    let keys: usize = a.num("keys", 1)?;
    let secs: f64 = a.num("secs", 0.5)?;
    let before_find = ms(t);
    let tf = Instant::now();
    let k = key(p, s, CKO_PRIVATE_KEY, &label)?;
    let first_find = ms(tf);
    let mut sig = vec![0u8; 512];
    p.sign_into(s, &Mech::Sha256Pkcs.mechanism(), k, MESSAGE, &mut sig)?;
    let first_sign = ms(t);
    // Everything below runs logged in on both modules.
    login(p, s, a.get("pin")?)?;
    let mut by_label = Vec::new();
    let mut list_all = Vec::new();
    let objects = std::sync::atomic::AtomicUsize::new(0);
    for _ in 0..3 {
        // What a PKCS#11 URI lookup does: class + label, one object back.
        by_label.push(rate(1, secs, |_| {
            let label = label.clone();
            move || {
                let mut t = Template::new()
                    .ulong(CKA_CLASS, CKO_PRIVATE_KEY)
                    .bytes(CKA_LABEL, label.as_bytes());
                let f = p.find(s, &mut t, 16).expect("find by label");
                assert_eq!(f.len(), 1);
            }
        }));
        // What ssh-keygen -D / p11tool --list-all start with: every object.
        list_all.push(rate(1, secs, |_| {
            let objects = &objects;
            move || {
                let mut t = Template::new();
                objects.store(
                    p.find(s, &mut t, 64).expect("list all").len(),
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
        }));
    }
    let objects = objects.into_inner();
    if objects != 2 * keys {
        return Err(format!(
            "token lists {objects} objects, want {} (a private and a public key per key)",
            2 * keys
        ));
    }
    println!(
        "{}",
        json!({
            "init_session_ms": before_find, "first_find_ms": first_find, "init_to_first_signature_ms": first_sign,
            "by_label": stats(&by_label), "list_all": stats(&list_all), "objects": objects,
        })
    );
    Ok(())
}

/// One operation `--count` times after setting up, so that a profiler run
/// with two counts gives the cost of one operation by difference.
fn loop_child(a: &Args) -> R<()> {
    let module = load(a.get("module")?)?;
    let p = module.client();
    let s = p.open(token(p, a.get("token")?)?.slot)?;
    login(p, s, a.get("pin")?)?;
    let label = a.get("label")?.to_string();
    let count: usize = a.num("count", 100)?;
    let private = key(p, s, CKO_PRIVATE_KEY, &label)?;
    let public = key(p, s, CKO_PUBLIC_KEY, &label)?;
    let mut sig = vec![0u8; 512];
    p.sign_into(s, &Mech::Sha256Pkcs.mechanism(), private, MESSAGE, &mut sig)?;
    let t = Instant::now();
    for _ in 0..count {
        match a.get("op")? {
            "sign" => {
                p.sign_into(s, &Mech::Sha256Pkcs.mechanism(), private, MESSAGE, &mut sig)?;
            }
            "pss" => {
                p.sign_into(s, &Mech::Sha256Pss.mechanism(), private, MESSAGE, &mut sig)?;
            }
            "find" => {
                key(p, s, CKO_PRIVATE_KEY, &label)?;
            }
            "list" => {
                p.find(s, &mut Template::new(), 64)?;
            }
            "verify" => {
                p.verify(s, &Mech::Sha256Pkcs.mechanism(), public, MESSAGE, &sig)?;
            }
            "attrs" => {
                let mut t = Template::new()
                    .out(CKA_ID, 64)
                    .out(CKA_MODULUS, 512)
                    .out(CKA_PUBLIC_EXPONENT, 16);
                p.get_attributes(s, public, &mut t)?;
            }
            o => return Err(format!("unknown --op {o}")),
        }
    }
    println!(
        "{}",
        json!({ "op": a.get("op")?, "count": count, "seconds": round(t.elapsed().as_secs_f64()) })
    );
    Ok(())
}
