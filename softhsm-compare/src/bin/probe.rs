//! softhsm-compare-probe: the fresh-process measurements of softhsm-compare,
//! in a binary that links nothing but libc (and the Rust runtime), so that the
//! module under test loads exactly what it needs itself.
//!
//!   cold      dlopen → C_Initialize → find ONE key by label → first
//!             signature, and peak RSS (a TLS server's path)
//!   cold-all  dlopen → C_Initialize → list every public key and read its
//!             CKA_LABEL, CKA_ID, CKA_MODULUS, CKA_PUBLIC_EXPONENT → find the
//!             private key by CKA_ID → first signature (what `ssh -I`,
//!             `ssh-keygen -D` and p11tool listings do)
//!   find      C_Initialize → first lookup → first signature on one token,
//!             the first search by CKA_ID and the first listing, then
//!             C_FindObjects cycles by label, by CKA_ID and listing everything,
//!             and C_SignInit + C_Sign cycles with the key found
//!   rss       list every object of a token and read its attributes, then
//!             the process's VmHWM and VmRSS
//!   loop      one operation --count times, for profilers (perf, valgrind
//!             --tool=callgrind): --op sign|pss|verify|find|findid|list|attrs

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
        "cold-all" => cold_all_child(&a),
        "find" => find_child(&a),
        "rss" => rss_child(&a),
        "loop" => loop_child(&a),
        _ => Err("usage: softhsm-compare-probe cold|cold-all|find|rss|loop --opt value ...".into()),
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
/// The process's (VmHWM, VmRSS) in kB.
fn status() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    (get("VmHWM:"), get("VmRSS:"))
}

fn cold_child(a: &Args) -> R<()> {
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
/// token); the first search by CKA_ID and the first listing of everything
/// (what a module learns on first need); then C_FindObjects cycles by label,
/// by CKA_ID and listing every object.
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
    let id = p.attribute(s, k, CKA_ID)?;
    let by_id_once = || -> R<()> {
        let mut t = Template::new()
            .ulong(CKA_CLASS, CKO_PRIVATE_KEY)
            .bytes(CKA_ID, &id);
        let f = p.find(s, &mut t, 16)?;
        if f != [k] {
            return Err(format!("by CKA_ID: {} objects, want the one key", f.len()));
        }
        Ok(())
    };
    let t1 = Instant::now();
    by_id_once()?;
    let first_by_id = ms(t1);
    let t2 = Instant::now();
    let objects = p.find(s, &mut Template::new(), 64)?.len();
    let first_list = ms(t2);
    if objects != 2 * keys {
        return Err(format!(
            "token lists {objects} objects, want {} (a private and a public key per key)",
            2 * keys
        ));
    }
    let mut by_label = Vec::new();
    let mut by_id = Vec::new();
    let mut list_all = Vec::new();
    let mut sign = Vec::new();
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
        // What OpenSSH does before signing: the private key by CKA_ID.
        by_id.push(rate(1, secs, |_| {
            move || by_id_once().expect("find by CKA_ID")
        }));
        // What ssh-keygen -D / p11tool --list-all start with: every object.
        list_all.push(rate(1, secs, |_| {
            move || {
                let n = p.find(s, &mut Template::new(), 64).expect("list all").len();
                assert_eq!(n, objects);
            }
        }));
        // What a TLS server does at each handshake with the key it found:
        // C_SignInit + C_Sign. Twice as long: a signature takes milliseconds.
        sign.push(rate(1, 2.0 * secs, |_| {
            let mut sig = vec![0u8; 512];
            move || {
                p.sign_into(s, &Mech::Sha256Pkcs.mechanism(), k, MESSAGE, &mut sig)
                    .expect("sign");
            }
        }));
    }
    println!(
        "{}",
        json!({
            "init_session_ms": before_find, "first_find_ms": first_find, "init_to_first_signature_ms": first_sign,
            "first_find_by_id_ms": first_by_id, "first_list_all_ms": first_list,
            "by_label": stats(&by_label), "by_id": stats(&by_id), "list_all": stats(&list_all), "sign": stats(&sign), "objects": objects,
        })
    );
    Ok(())
}

/// Fresh process, as `ssh -I` / `ssh-keygen -D` / a p11tool listing: every
/// public key listed and its CKA_LABEL, CKA_ID, CKA_MODULUS and
/// CKA_PUBLIC_EXPONENT read (one C_GetAttributeValue per key, buffers large
/// enough), then the private key of the one labelled --label found by its
/// CKA_ID (as OpenSSH does) and a signature.
fn cold_all_child(a: &Args) -> R<()> {
    let t = Instant::now();
    let ms = |t: Instant| round(t.elapsed().as_secs_f64() * 1e3);
    let module = Module::load(a.get("module")?)?;
    let p = module.client();
    initialize(p)?;
    let tok = token(p, a.get("token")?)?;
    let s = p.open(tok.slot)?;
    if tok.flags & CKF_LOGIN_REQUIRED != 0 {
        login(p, s, a.get("pin")?)?;
    }
    let init = ms(t);
    let want = a.get("label")?;
    let t1 = Instant::now();
    let publics = p.find(s, &mut Template::new().ulong(CKA_CLASS, CKO_PUBLIC_KEY), 64)?;
    let list = ms(t1);
    let t2 = Instant::now();
    let mut id = None;
    for &h in &publics {
        let mut t = Template::new()
            .out(CKA_LABEL, 256)
            .out(CKA_ID, 64)
            .out(CKA_MODULUS, 512)
            .out(CKA_PUBLIC_EXPONENT, 16);
        p.get_attributes(s, h, &mut t)?;
        if t.value(2).len() < 256 {
            return Err(format!(
                "public key {h}: a modulus of {} bytes",
                t.value(2).len()
            ));
        }
        if t.value(0) == want.as_bytes() {
            id = Some(t.value(1).to_vec());
        }
    }
    let attrs = ms(t2);
    let id = id.ok_or(format!("no public key labelled {want:?}"))?;
    let t3 = Instant::now();
    let mut ft = Template::new()
        .ulong(CKA_CLASS, CKO_PRIVATE_KEY)
        .bytes(CKA_ID, &id);
    let found = p.find(s, &mut ft, 16)?;
    let [k] = found[..] else {
        return Err(format!(
            "{} private keys with the CKA_ID of {want:?}",
            found.len()
        ));
    };
    let find = ms(t3);
    let t4 = Instant::now();
    let mut sig = vec![0u8; 512];
    p.sign_into(s, &Mech::Sha256Pkcs.mechanism(), k, MESSAGE, &mut sig)?;
    let sign = ms(t4);
    let total = ms(t);
    let (hwm, rss) = status();
    println!(
        "{}",
        json!({
            "total_ms": total, "init_session_ms": init, "list_ms": list, "attributes_ms": attrs,
            "find_ms": find, "sign_ms": sign, "public_keys": publics.len(), "vm_hwm_kb": hwm, "vm_rss_kb": rss,
        })
    );
    Ok(())
}

/// Fresh process: every object of the token listed and its CKA_CLASS,
/// CKA_LABEL, CKA_ID, CKA_MODULUS and CKA_PUBLIC_EXPONENT read; then the
/// memory the process holds.
fn rss_child(a: &Args) -> R<()> {
    let t = Instant::now();
    let module = load(a.get("module")?)?;
    let p = module.client();
    let tok = token(p, a.get("token")?)?;
    let s = p.open(tok.slot)?;
    login(p, s, a.get("pin")?)?;
    let (hwm0, rss0) = status();
    let objects = p.find(s, &mut Template::new(), 64)?;
    for &h in &objects {
        let mut t = Template::new()
            .out(CKA_CLASS, 8)
            .out(CKA_LABEL, 256)
            .out(CKA_ID, 64)
            .out(CKA_MODULUS, 512)
            .out(CKA_PUBLIC_EXPONENT, 16);
        p.get_attributes(s, h, &mut t)?;
        if t.value(3).len() < 256 {
            return Err(format!(
                "object {h}: a modulus of {} bytes",
                t.value(3).len()
            ));
        }
    }
    let (hwm, rss) = status();
    println!(
        "{}",
        json!({
            "objects": objects.len(), "seconds": round(t.elapsed().as_secs_f64()),
            "vm_hwm_kb": hwm, "vm_rss_kb": rss, "opened_vm_hwm_kb": hwm0, "opened_vm_rss_kb": rss0,
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
    let id = p.attribute(s, private, CKA_ID)?;
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
            "findid" => {
                let mut t = Template::new()
                    .ulong(CKA_CLASS, CKO_PRIVATE_KEY)
                    .bytes(CKA_ID, &id);
                p.find(s, &mut t, 16)?;
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
