//! softhsm-compare: SoftHSMv2 and keyring-pkcs11 driven through the same
//! PKCS#11 calls, with the raw kernel syscall as the limit for kernel-held
//! keys. Run by `softhsm-compare/run` (see the README); the modes:
//!
//!   bench      the whole benchmark, writing one JSON file (runs inside the lab)
//! (`softhsm-compare-probe cold|cold-all|find|rss` are its fresh-process measurements.)
//!   keygen     the distinct keys of the big tokens, cached on the host (keys.rs)
//!   fill-module, fill-kernel, fill-softhsm   make the 1…10,000-key tokens (fill.rs)
//!   handshakes TLS handshakes/s against one nginx, with CPU accounting (tls.rs)
//!   report     results JSON → markdown and the charts (runs on the host)
//!   verify-native  on the host, without emulation: the kernel's PKEY_VERIFY on
//!              a certificate's public key against ring and OpenSSL in-process

mod fill;
mod keys;
mod report;
mod report_scale;
mod scale;
mod sys;
mod tls;

use cryptoki_sys::*;
use keyring_pkcs11::kernel::keyctl;
use keyring_pkcs11_testkit::{Client, Module, Template};
use serde_json::{Value, json};
use sha2::Digest;
use softhsm_compare::measure::{med, rate, round, stats};
use softhsm_compare::{Args, MESSAGE, Mech, R, key, load, login, token};
use std::collections::HashMap;
use std::process::Command;
use std::time::Instant;

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let mode = argv.get(1).cloned().unwrap_or_default();
    let rest = argv.get(2..).unwrap_or(&[]).to_vec();
    let result = Args::parse(&rest).and_then(|a| match mode.as_str() {
        "bench" => bench(&a),
        "keygen" => keys::keygen(&a),
        "fill-module" => fill::fill_module(&a),
        "fill-kernel" => fill::fill_kernel(&a),
        "fill-softhsm" => fill::fill_softhsm(&a),
        "handshakes" => tls::handshakes(&a),
        "report" => report::report(&a.0),
        "verify-native" => verify_native(&a),
        _ => Err("usage: softhsm-compare bench|keygen|fill-module|fill-kernel|fill-softhsm|handshakes|report|verify-native --opt value ... (see softhsm-compare/README.md)".into()),
    });
    if let Err(e) = result {
        eprintln!("softhsm-compare {mode}: {e}");
        std::process::exit(1);
    }
}

const BITS: [usize; 3] = [2048, 3072, 4096];

fn label(bits: usize) -> String {
    format!("kp11-bench-{bits}")
}

fn log(msg: std::fmt::Arguments) {
    eprintln!("softhsm-compare: {msg}");
}

/// One module, initialised, with sessions on its benchmark token.
struct Side {
    module: Module,
    sessions: Vec<CK_SESSION_HANDLE>,
    keys: HashMap<usize, (CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)>,
}

impl Side {
    fn open(module: &str, token_label: &str, pin: &str, threads: usize) -> R<Side> {
        let module = load(module)?;
        let p = module.client();
        let slot = token(p, token_label)?.slot;
        let sessions = (0..threads)
            .map(|_| p.open(slot))
            .collect::<Result<Vec<_>, _>>()?;
        // Login is per application and token: one is enough for every session.
        // keyring-pkcs11 needs none but accepts any PIN; log in to both so
        // that both run in the same session state.
        login(p, sessions[0], pin)?;
        let mut keys = HashMap::new();
        for bits in BITS {
            let l = label(bits);
            keys.insert(
                bits,
                (
                    key(p, sessions[0], CKO_PRIVATE_KEY, &l)?,
                    key(p, sessions[0], CKO_PUBLIC_KEY, &l)?,
                ),
            );
        }
        Ok(Side {
            module,
            sessions,
            keys,
        })
    }

    fn p(&self) -> Client<'_> {
        self.module.client()
    }
}

/// What a sign-throughput run measures.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Impl {
    Raw,
    Ours,
    SoftHsm,
}

#[allow(clippy::too_many_arguments)]
fn sign_rate(
    imp: Impl,
    ours: &Side,
    soft: &Side,
    serial: i32,
    bits: usize,
    mech: Mech,
    threads: usize,
    secs: f64,
) -> f64 {
    let k = bits / 8;
    match imp {
        Impl::Raw => {
            let digest = sha2::Sha256::digest(MESSAGE).to_vec();
            // For PSS the module does the encoding itself and asks the kernel
            // for the raw private operation: that syscall is its limit.
            let mut x = vec![0x5au8; k];
            x[0] = 0;
            rate(threads, secs, |_| {
                let digest = digest.clone();
                let x = x.clone();
                let mut out = vec![0u8; k];
                move || {
                    let r = match mech {
                        Mech::Sha256Pkcs => {
                            keyctl::pkey_sign(serial, "enc=pkcs1 hash=sha256", &digest, &mut out)
                        }
                        Mech::Sha256Pss => keyctl::pkey_decrypt(serial, "enc=raw", &x, &mut out),
                    };
                    assert_eq!(r.expect("raw keyctl op"), k);
                }
            })
        }
        Impl::Ours | Impl::SoftHsm => {
            let side = if imp == Impl::Ours { ours } else { soft };
            let key = side.keys[&bits].0;
            rate(threads, secs, |i| {
                let p = side.p();
                let s = side.sessions[i];
                let mut sig = vec![0u8; k];
                move || {
                    let n = p
                        .sign_into(s, &mech.mechanism(), key, MESSAGE, &mut sig)
                        .expect("C_Sign");
                    assert_eq!(n, k);
                }
            })
        }
    }
}

fn read_serials(a: &Args) -> R<HashMap<usize, i32>> {
    let mut m = HashMap::new();
    for part in a.get("serials")?.split(',') {
        let (b, s) = part.split_once(':').ok_or("--serials BITS:SERIAL,...")?;
        m.insert(
            b.parse().map_err(|_| "bits")?,
            s.parse().map_err(|_| "serial")?,
        );
    }
    Ok(m)
}

fn bench(a: &Args) -> R<()> {
    let ours_so = a.get("ours")?;
    let soft_so = a.get("softhsm")?;
    let pin = a.get("pin")?;
    let ours_token = a.opt("ours-token").unwrap_or("user");
    let soft_token = a.opt("softhsm-token").unwrap_or("bench");
    let conf_dir = a.get("softhsm-confs")?;
    let out = a.get("out")?;
    let runs: usize = a.num("runs", 5)?;
    let secs: f64 = a.num("secs", 1.5)?;
    let short: f64 = a.num("short-secs", 0.5)?;
    let cold_runs: usize = a.num("cold-runs", 7)?;
    let serials = read_serials(a)?;
    let sizes = |k: &str, default: &str| -> R<Vec<usize>> {
        a.opt(k)
            .unwrap_or(default)
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().map_err(|_| format!("bad --{k} {s}")))
            .collect()
    };
    let find_sizes = sizes("find-sizes", "1,100,1000,10000")?;
    let padd_sizes = sizes("padd-sizes", "100,1000")?;
    let softhsm_sizes = sizes("softhsm-sizes", "1,100,1000")?;
    let only: Option<Vec<String>> = a
        .opt("only")
        .map(|s| s.split(',').map(String::from).collect());
    let want = |part: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == part));
    let t0 = Instant::now();

    let ours = Side::open(ours_so, ours_token, pin, 2)?;
    let soft = Side::open(soft_so, soft_token, pin, 2)?;
    let mut result = json!({});

    // Identical keys: PKCS#1 v1.5 is deterministic, so all three must give
    // the same bytes; each side verifies the other's PSS signature.
    for bits in BITS {
        let k = bits / 8;
        let mut s1 = vec![0u8; k];
        let mut s2 = vec![0u8; k];
        let mut s3 = vec![0u8; k];
        ours.p().sign_into(
            ours.sessions[0],
            &Mech::Sha256Pkcs.mechanism(),
            ours.keys[&bits].0,
            MESSAGE,
            &mut s1,
        )?;
        soft.p().sign_into(
            soft.sessions[0],
            &Mech::Sha256Pkcs.mechanism(),
            soft.keys[&bits].0,
            MESSAGE,
            &mut s2,
        )?;
        let digest = sha2::Sha256::digest(MESSAGE);
        keyctl::pkey_sign(serials[&bits], "enc=pkcs1 hash=sha256", &digest, &mut s3)
            .map_err(|e| format!("pkey_sign: {e}"))?;
        if s1 != s2 || s1 != s3 {
            return Err(format!(
                "RSA-{bits}: the kernel key and the SoftHSM key are not the same key (PKCS#1 signatures differ)"
            ));
        }
        ours.p().sign_into(
            ours.sessions[0],
            &Mech::Sha256Pss.mechanism(),
            ours.keys[&bits].0,
            MESSAGE,
            &mut s1,
        )?;
        soft.p().sign_into(
            soft.sessions[0],
            &Mech::Sha256Pss.mechanism(),
            soft.keys[&bits].0,
            MESSAGE,
            &mut s2,
        )?;
        soft.p().verify(
            soft.sessions[0],
            &Mech::Sha256Pss.mechanism(),
            soft.keys[&bits].1,
            MESSAGE,
            &s1,
        )?;
        ours.p().verify(
            ours.sessions[0],
            &Mech::Sha256Pss.mechanism(),
            ours.keys[&bits].1,
            MESSAGE,
            &s2,
        )?;
    }
    log(format_args!(
        "keys are identical on both sides (PKCS#1 signatures byte-equal, PSS cross-verified)"
    ));

    // --- C_Sign throughput ------------------------------------------------
    if want("sign") {
        let mut rows = Vec::new();
        let paired =
            |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x / y).collect() };
        for bits in BITS {
            for mech in [Mech::Sha256Pkcs, Mech::Sha256Pss] {
                // v[(impl, threads)]: one rate per run. Within a run the three
                // implementations and both thread counts are measured back to
                // back, the order rotating between runs, so that a drift or a
                // busy host hits all of them alike; ratios are then taken run
                // by run (paired) as well as between medians.
                let mut v: HashMap<(&str, usize), Vec<f64>> = HashMap::new();
                let order = [Impl::Raw, Impl::Ours, Impl::SoftHsm];
                for r in 0..runs {
                    for j in 0..3 {
                        let imp = order[(r + j) % 3];
                        for threads in [1usize, 2] {
                            let x = sign_rate(
                                imp,
                                &ours,
                                &soft,
                                serials[&bits],
                                bits,
                                mech,
                                threads,
                                secs,
                            );
                            let tag = match imp {
                                Impl::Raw => "raw",
                                Impl::Ours => "ours",
                                Impl::SoftHsm => "softhsm",
                            };
                            v.entry((tag, threads)).or_default().push(x);
                        }
                    }
                }
                for threads in [1usize, 2] {
                    let g = |t: &'static str| -> &Vec<f64> { &v[&(t, threads)] };
                    let row = json!({
                        "bits": bits, "mechanism": mech.name(), "threads": threads,
                        "raw_syscall": stats(g("raw")),
                        "raw_syscall_is": match mech { Mech::Sha256Pkcs => "KEYCTL_PKEY_SIGN enc=pkcs1 hash=sha256", Mech::Sha256Pss => "KEYCTL_PKEY_DECRYPT enc=raw" },
                        "keyring_pkcs11": stats(g("ours")),
                        "softhsm": stats(g("softhsm")),
                        "ours_over_raw_paired": stats(&paired(g("ours"), g("raw"))),
                        "two_over_one_threads_paired": if threads == 2 {
                            json!({
                                "keyring_pkcs11": stats(&paired(&v[&("ours", 2)], &v[&("ours", 1)])),
                                "raw_syscall": stats(&paired(&v[&("raw", 2)], &v[&("raw", 1)])),
                                "softhsm": stats(&paired(&v[&("softhsm", 2)], &v[&("softhsm", 1)])),
                            })
                        } else { Value::Null },
                    });
                    log(format_args!(
                        "sign RSA-{bits} {} {threads}t: raw {:.1}/s, ours {:.1}/s (paired ratio {:.3}), softhsm {:.1}/s  [{:.0}s]",
                        mech.short(),
                        med(&row["raw_syscall"]),
                        med(&row["keyring_pkcs11"]),
                        med(&row["ours_over_raw_paired"]),
                        med(&row["softhsm"]),
                        t0.elapsed().as_secs_f64()
                    ));
                    rows.push(row);
                }
            }
        }
        result["sign"] = json!(rows);

        // What C_SignInit adds around the signature: KEYCTL_SEARCH of the
        // token's keyring for the key's label (is it still there?); and
        // what that replaced: KEYCTL_READ of the keyring and
        // KEYCTL_PKEY_QUERY.
        let user = sys::keyring_id(sys::KEY_SPEC_USER_KEYRING);
        let largest = find_sizes.iter().max().copied();
        let big = largest
            .map(|n| sys::find_keyring(&format!("find-{n}")))
            .unwrap_or(-1);
        let mut ov = json!({});
        let big_label = largest.map(|n| fill::label(&format!("find-{n}"), n - 1));
        for (name, ring, l) in [
            ("search_user_keyring", user, Some(label(2048))),
            ("search_largest_find_keyring", big, big_label),
        ] {
            let Some(l) = l.filter(|_| ring > 0) else {
                continue;
            };
            let l = std::ffi::CString::new(l).map_err(|e| e.to_string())?;
            if sys::search_key(ring, &l) < 0 {
                return Err(format!(
                    "KEYCTL_SEARCH finds no key {l:?} in keyring {ring}"
                ));
            }
            let v: Vec<f64> = (0..3)
                .map(|_| {
                    rate(1, short, |_| {
                        let l = l.clone();
                        move || assert!(sys::search_key(ring, &l) > 0)
                    })
                })
                .collect();
            ov[name] = json!({ "per_s": stats(&v) });
        }
        for bits in BITS {
            let serial = serials[&bits];
            let v: Vec<f64> = (0..3)
                .map(|_| rate(1, short, |_| move || assert!(sys::pkey_query(serial))))
                .collect();
            ov[format!("pkey_query_{bits}")] = stats(&v);
        }
        for (name, ring) in [
            ("read_user_keyring", user),
            ("read_largest_find_keyring", big),
        ] {
            if ring > 0 {
                // A buffer the keyring's links fit in (10,000 keys and their
                // records are 80 kB of serials).
                let n = sys::read(ring, &mut []);
                let buf = vec![0u8; n.max(0) as usize + 4096];
                let v: Vec<f64> = (0..3)
                    .map(|_| {
                        rate(1, short, |_| {
                            let mut b = buf.clone();
                            move || assert!(sys::read(ring, &mut b) >= 0)
                        })
                    })
                    .collect();
                ov[name] = json!({ "per_s": stats(&v), "links": n / 4 });
            }
        }
        log(format_args!(
            "overhead syscalls: KEYCTL_SEARCH @u {:.0}/s, largest token {:.0}/s; PKEY_QUERY 2048 {:.0}/s, 4096 {:.0}/s; KEYCTL_READ @u {:.0}/s",
            med(&ov["search_user_keyring"]["per_s"]),
            med(&ov["search_largest_find_keyring"]["per_s"]),
            med(&ov["pkey_query_2048"]),
            med(&ov["pkey_query_4096"]),
            med(&ov["read_user_keyring"]["per_s"])
        ));
        result["sign_overhead_syscalls"] = ov;

        // OpenSSL signing in-process with the same RSA-2048 key (what nginx
        // does with a key file): the handshake benchmark's reference.
        if let Some(dir) = a.opt("keys") {
            use openssl::{hash::MessageDigest, pkey::PKey, rsa::Padding, sign::Signer};
            let pem = std::fs::read(format!("{dir}/rsa2048.pem")).map_err(|e| e.to_string())?;
            let key = PKey::private_key_from_pem(&pem).map_err(|e| e.to_string())?;
            let mut o = json!({});
            for (name, pss) in [("pkcs1", false), ("pss", true)] {
                let v: Vec<f64> = (0..runs)
                    .map(|_| {
                        rate(1, secs, |_| {
                            let key = &key;
                            move || {
                                let mut sg = Signer::new(MessageDigest::sha256(), key).unwrap();
                                if pss {
                                    sg.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
                                    sg.set_rsa_pss_saltlen(
                                        openssl::sign::RsaPssSaltlen::DIGEST_LENGTH,
                                    )
                                    .unwrap();
                                    sg.set_rsa_mgf1_md(MessageDigest::sha256()).unwrap();
                                }
                                assert_eq!(sg.sign_oneshot_to_vec(MESSAGE).unwrap().len(), 256);
                            }
                        })
                    })
                    .collect();
                o[name] = stats(&v);
            }
            log(format_args!(
                "OpenSSL in-process RSA-2048: PKCS#1 {:.1}/s, PSS {:.1}/s",
                med(&o["pkcs1"]),
                med(&o["pss"])
            ));
            result["openssl_in_process_sign_2048"] = o;
        }
    }

    // --- verify throughput ----------------------------------------------
    if want("verify") {
        let mut rows = Vec::new();
        for bits in BITS {
            let k = bits / 8;
            let (opriv, opub) = ours.keys[&bits];
            let s = ours.sessions[0];
            let n = ours.p().attribute(s, opub, CKA_MODULUS)?;
            let e = ours.p().attribute(s, opub, CKA_PUBLIC_EXPONENT)?;
            let digest = sha2::Sha256::digest(MESSAGE).to_vec();
            let mut sig_pkcs = vec![0u8; k];
            let mut sig_pss = vec![0u8; k];
            ours.p().sign_into(
                s,
                &Mech::Sha256Pkcs.mechanism(),
                opriv,
                MESSAGE,
                &mut sig_pkcs,
            )?;
            ours.p().sign_into(
                s,
                &Mech::Sha256Pss.mechanism(),
                opriv,
                MESSAGE,
                &mut sig_pss,
            )?;
            let serial = serials[&bits];
            let ring_key = ring::signature::RsaPublicKeyComponents {
                n: n.clone(),
                e: e.clone(),
            };
            ring_key
                .verify(
                    &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                    MESSAGE,
                    &sig_pkcs,
                )
                .map_err(|_| "ring rejects PKCS#1")?;
            ring_key
                .verify(
                    &ring::signature::RSA_PSS_2048_8192_SHA256,
                    MESSAGE,
                    &sig_pss,
                )
                .map_err(|_| "ring rejects PSS")?;
            let mut v: HashMap<&str, Vec<f64>> = HashMap::new();
            for _ in 0..3 {
                let kernel = rate(1, short, |_| {
                    let (d, sg) = (digest.clone(), sig_pkcs.clone());
                    move || {
                        keyctl::pkey_verify(serial, "enc=pkcs1 hash=sha256", &d, &sg)
                            .expect("PKEY_VERIFY")
                    }
                });
                v.entry("kernel").or_default().push(kernel);
                for (side, tag) in [(&ours, "ours"), (&soft, "softhsm")] {
                    for (mech, sig, t2) in [
                        (Mech::Sha256Pkcs, &sig_pkcs, "pkcs"),
                        (Mech::Sha256Pss, &sig_pss, "pss"),
                    ] {
                        let key = side.keys[&bits].1;
                        let x = rate(1, short, |_| {
                            let (p, s, sig) = (side.p(), side.sessions[0], sig.clone());
                            move || {
                                p.verify(s, &mech.mechanism(), key, MESSAGE, &sig)
                                    .expect("C_Verify")
                            }
                        });
                        v.entry(if tag == "ours" {
                            if t2 == "pkcs" {
                                "ours_pkcs"
                            } else {
                                "ours_pss"
                            }
                        } else if t2 == "pkcs" {
                            "softhsm_pkcs"
                        } else {
                            "softhsm_pss"
                        })
                        .or_default()
                        .push(x);
                    }
                }
                let ossl = openssl::rsa::Rsa::from_public_components(
                    openssl::bn::BigNum::from_slice(&n).map_err(|e| e.to_string())?,
                    openssl::bn::BigNum::from_slice(&e).map_err(|e| e.to_string())?,
                )
                .map_err(|e| e.to_string())?;
                let x = rate(1, short, |_| {
                    let (key, sig, mut out) = (&ossl, sig_pkcs.clone(), vec![0u8; k]);
                    move || {
                        let m = key
                            .public_decrypt(&sig, &mut out, openssl::rsa::Padding::NONE)
                            .expect("RSA public op");
                        assert_eq!(m, k);
                    }
                });
                v.entry("openssl_raw").or_default().push(x);
                let rsa_key = rsa_public(&n, &e)?;
                let x = rate(1, short, |_| {
                    let (key, d, sig) = (&rsa_key, digest.clone(), sig_pkcs.clone());
                    move || {
                        key.verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &d, &sig)
                            .expect("rsa crate verify")
                    }
                });
                v.entry("rsa_crate").or_default().push(x);
                for (alg, sig, tag) in [
                    (
                        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                        &sig_pkcs,
                        "ring_pkcs",
                    ),
                    (
                        &ring::signature::RSA_PSS_2048_8192_SHA256,
                        &sig_pss,
                        "ring_pss",
                    ),
                ] {
                    let x = rate(1, short, |_| {
                        let (key, sig) = (&ring_key, sig.clone());
                        move || key.verify(alg, MESSAGE, &sig).expect("ring verify")
                    });
                    v.entry(tag).or_default().push(x);
                }
            }
            let row = json!({
                "bits": bits,
                "kernel_pkey_verify": stats(&v["kernel"]),
                "keyring_pkcs11_pkcs1": stats(&v["ours_pkcs"]),
                "keyring_pkcs11_pss": stats(&v["ours_pss"]),
                "softhsm_pkcs1": stats(&v["softhsm_pkcs"]),
                "softhsm_pss": stats(&v["softhsm_pss"]),
                "ring_pkcs1": stats(&v["ring_pkcs"]),
                "ring_pss": stats(&v["ring_pss"]),
                "openssl_raw_public_op": stats(&v["openssl_raw"]),
                "rsa_crate_pkcs1": stats(&v["rsa_crate"]),
            });
            log(format_args!(
                "verify RSA-{bits}: kernel {:.0}/s, ours {:.0}/s, softhsm {:.0}/s, ring {:.0}/s, openssl raw {:.0}/s",
                med(&row["kernel_pkey_verify"]),
                med(&row["keyring_pkcs11_pkcs1"]),
                med(&row["softhsm_pkcs1"]),
                med(&row["ring_pkcs1"]),
                med(&row["openssl_raw_public_op"])
            ));
            rows.push(row);
        }
        result["verify"] = json!(rows);
    }

    // --- C_GetAttributeValue --------------------------------------------
    if want("attributes") {
        let mut out = json!({});
        for (side, tag) in [(&ours, "keyring_pkcs11"), (&soft, "softhsm")] {
            let (priv_h, pub_h) = side.keys[&2048];
            let s = side.sessions[0];
            let mut v3 = Vec::new();
            let mut v1 = Vec::new();
            for _ in 0..3 {
                // What OpenSSH reads of every public key: CKA_ID, CKA_MODULUS,
                // CKA_PUBLIC_EXPONENT, in one call with buffers large enough.
                v3.push(rate(1, short, |_| {
                    let mut t = Template::new()
                        .out(CKA_ID, 64)
                        .out(CKA_MODULUS, 512)
                        .out(CKA_PUBLIC_EXPONENT, 16);
                    let p = side.p();
                    move || {
                        t.reset();
                        p.get_attributes(s, pub_h, &mut t)
                            .expect("C_GetAttributeValue");
                        assert_eq!(t.value(1).len(), 256);
                    }
                }));
                // One small attribute of the private key.
                v1.push(rate(1, short, |_| {
                    let mut t = Template::new().out(CKA_KEY_TYPE, 8);
                    let p = side.p();
                    move || {
                        t.reset();
                        p.get_attributes(s, priv_h, &mut t)
                            .expect("C_GetAttributeValue");
                    }
                }));
            }
            out[tag] =
                json!({ "public_id_modulus_exponent": stats(&v3), "private_key_type": stats(&v1) });
        }
        log(format_args!(
            "C_GetAttributeValue: ours {:.0}/s, softhsm {:.0}/s",
            med(&out["keyring_pkcs11"]["public_id_modulus_exponent"]),
            med(&out["softhsm"]["public_id_modulus_exponent"])
        ));
        result["attributes"] = out;
    }

    // The fresh-process measurements run in a separate small binary that
    // links nothing but libc: no OpenSSL already loaded to flatter SoftHSMv2's
    // dlopen time or RSS, no ring.
    let me = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("softhsm-compare-probe");
    let softhsm_conf = |token: &str| format!("{conf_dir}/{token}/softhsm2.conf");

    // --- tokens of 1 … 10,000 keys, each measured in fresh processes --------
    let scale = scale::Scale {
        ours_so,
        soft_so,
        pin,
        conf_dir,
        probe: me.clone(),
        ours_sizes: find_sizes.clone(),
        padd_sizes: padd_sizes.clone(),
        softhsm_sizes: softhsm_sizes.clone(),
        short,
        cold_runs,
        limit: a.num("find-limit", 240.0)?,
        t0,
    };
    if want("find") {
        result["find"] = scale.find()?;
    }
    if want("cold") {
        result["cold_label"] = scale.cold("cold")?;
        result["cold_all"] = scale.cold("cold-all")?;
    }
    if want("rss") {
        result["rss"] = scale.rss()?;
    }

    // --- C_Initialize → first signature, and peak RSS, in fresh processes --
    if want("cold") {
        let cold = |module: &str, token: &str, label: &str, keyrings: &str| -> R<Value> {
            let t = Instant::now();
            let o = Command::new(&me)
                .args([
                    "cold", "--module", module, "--token", token, "--label", label, "--pin", pin,
                ])
                .env("SOFTHSM2_CONF", softhsm_conf(token))
                .env("KEYRING_PKCS11_KEYRINGS", keyrings)
                .output()
                .map_err(|e| e.to_string())?;
            let wall = t.elapsed().as_secs_f64() * 1e3;
            if !o.status.success() {
                return Err(format!(
                    "cold child ({module}, {token}) failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
            let mut v: Value =
                serde_json::from_slice(&o.stdout).map_err(|e| format!("cold child output: {e}"))?;
            v["process_ms"] = json!(round(wall));
            Ok(v)
        };
        let summarize = |samples: &[Value]| -> Value {
            let mut out = json!({});
            for k in [
                "total_ms",
                "process_ms",
                "dlopen_ms",
                "initialize_ms",
                "session_login_ms",
                "find_ms",
                "sign_ms",
                "vm_hwm_kb",
                "vm_rss_kb",
            ] {
                let v: Vec<f64> = samples.iter().filter_map(|s| s[k].as_f64()).collect();
                out[k] = stats(&v);
            }
            out
        };
        // A process that loads nothing: what the benchmark binary itself costs.
        let base = Command::new(&me)
            .args(["cold", "--baseline", "1"])
            .output()
            .map_err(|e| e.to_string())?;
        let base: Value =
            serde_json::from_slice(&base.stdout).map_err(|e| format!("baseline: {e}"))?;
        let mut rows = Vec::new();
        let cases = vec![(
            ours_token.to_string(),
            soft_token.to_string(),
            label(2048),
            3usize,
            cold_runs,
        )];
        for (otok, stok, lab, nkeys, reps) in cases {
            let mut so = Vec::new();
            let mut ss = Vec::new();
            let keyrings = String::new();
            for _ in 0..reps {
                so.push(cold(ours_so, &otok, &lab, &keyrings)?);
                ss.push(cold(soft_so, &stok, &lab, "")?);
            }
            let row = json!({
                "keys_in_token": nkeys, "token": otok, "label": lab,
                "keyring_pkcs11": summarize(&so), "softhsm": summarize(&ss),
            });
            log(format_args!(
                "C_Initialize → first signature ({otok}, {nkeys} keys): ours {:.1} ms, softhsm {:.1} ms; VmHWM ours {} kB softhsm {} kB  [{:.0}s]",
                med(&row["keyring_pkcs11"]["total_ms"]),
                med(&row["softhsm"]["total_ms"]),
                med(&row["keyring_pkcs11"]["vm_hwm_kb"]),
                med(&row["softhsm"]["vm_hwm_kb"]),
                t0.elapsed().as_secs_f64()
            ));
            rows.push(row);
        }
        result["cold_start"] = json!(rows);
        result["baseline_process"] = base;
    }

    result["settings"] = json!({
        "runs": runs, "seconds_per_sign_run": secs, "seconds_per_short_run": short, "cold_runs": cold_runs,
        "sizes": { "keyring_pkcs11": find_sizes, "keyring_pkcs11_padd": padd_sizes, "softhsm": softhsm_sizes },
        "message_bytes": MESSAGE.len(), "pss": "MGF1-SHA256, 32-byte salt",
    });
    result["bench_seconds"] = json!(round(t0.elapsed().as_secs_f64()));
    std::fs::write(out, serde_json::to_string_pretty(&result).unwrap())
        .map_err(|e| format!("{out}: {e}"))?;
    log(format_args!(
        "wrote {out} after {:.0}s",
        t0.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Runs a child, killing it after `limit` seconds: `Ok(None)` then.
pub(crate) fn run_limited(mut cmd: Command, limit: f64) -> R<Option<Vec<u8>>> {
    use std::io::Read;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            let mut out = Vec::new();
            let mut err = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_end(&mut out)
                .map_err(|e| e.to_string())?;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .map_err(|e| e.to_string())?;
            if !st.success() {
                return Err(format!("child failed ({st}): {err}"));
            }
            return Ok(Some(out));
        }
        if t.elapsed().as_secs_f64() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Natively on the host (whose kernel loads X.509 certificates but not
/// private keys): how much faster than the kernel's PKEY_VERIFY userspace
/// public-key code is without emulation. Each key file is made into a
/// self-signed certificate, loaded into the process keyring, and a
/// signature made with OpenSSL is verified by the kernel, ring and OpenSSL.
fn verify_native(a: &Args) -> R<()> {
    use openssl::{hash::MessageDigest, pkey::PKey, sign::Signer, x509};
    let dir = a.get("keys")?;
    let out = a.get("out")?;
    let secs: f64 = a.num("secs", 1.0)?;
    let e = |x: openssl::error::ErrorStack| x.to_string();
    let mut rows = Vec::new();
    for bits in BITS {
        let pem = std::fs::read(format!("{dir}/rsa{bits}.pem")).map_err(|x| x.to_string())?;
        let key = PKey::private_key_from_pem(&pem).map_err(e)?;
        let mut b = x509::X509Builder::new().map_err(e)?;
        let mut name = x509::X509NameBuilder::new().map_err(e)?;
        name.append_entry_by_text("CN", "softhsm-compare")
            .map_err(e)?;
        let name = name.build();
        b.set_subject_name(&name).map_err(e)?;
        b.set_issuer_name(&name).map_err(e)?;
        b.set_pubkey(&key).map_err(e)?;
        let (t0, t1) = (
            openssl::asn1::Asn1Time::days_from_now(0).map_err(e)?,
            openssl::asn1::Asn1Time::days_from_now(1).map_err(e)?,
        );
        b.set_not_before(&t0).map_err(e)?;
        b.set_not_after(&t1).map_err(e)?;
        b.sign(&key, MessageDigest::sha256()).map_err(e)?;
        let cert = b.build().to_der().map_err(e)?;
        let serial = keyctl::add_key(
            "asymmetric",
            &format!("softhsm-compare-native-{bits}"),
            &cert,
            -2,
        )
        .map_err(|x| format!("add_key of an X.509 certificate: {x}"))?;
        let mut signer = Signer::new(MessageDigest::sha256(), &key).map_err(e)?;
        let sig = signer.sign_oneshot_to_vec(MESSAGE).map_err(e)?;
        let digest = sha2::Sha256::digest(MESSAGE).to_vec();
        let rsa = key.rsa().map_err(e)?;
        let (n, ex) = (rsa.n().to_vec(), rsa.e().to_vec());
        let pubkey = openssl::rsa::Rsa::from_public_components(
            openssl::bn::BigNum::from_slice(&n).map_err(e)?,
            openssl::bn::BigNum::from_slice(&ex).map_err(e)?,
        )
        .map_err(e)?;
        let ring_key = ring::signature::RsaPublicKeyComponents {
            n: n.clone(),
            e: ex.clone(),
        };
        let k = bits / 8;
        let mut v: HashMap<&str, Vec<f64>> = HashMap::new();
        for _ in 0..3 {
            v.entry("kernel").or_default().push(rate(1, secs, |_| {
                let (d, s) = (digest.clone(), sig.clone());
                move || {
                    keyctl::pkey_verify(serial, "enc=pkcs1 hash=sha256", &d, &s)
                        .expect("PKEY_VERIFY")
                }
            }));
            v.entry("ring").or_default().push(rate(1, secs, |_| {
                let (kk, s) = (&ring_key, sig.clone());
                move || {
                    kk.verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, MESSAGE, &s)
                        .expect("ring")
                }
            }));
            v.entry("openssl").or_default().push(rate(1, secs, |_| {
                let (kk, s, mut o) = (&pubkey, sig.clone(), vec![0u8; k]);
                move || {
                    assert_eq!(
                        kk.public_decrypt(&s, &mut o, openssl::rsa::Padding::NONE)
                            .expect("openssl"),
                        k
                    )
                }
            }));
            let rsa_key = rsa_public(&n, &ex)?;
            v.entry("rsa_crate").or_default().push(rate(1, secs, |_| {
                let (kk, d, s) = (&rsa_key, digest.clone(), sig.clone());
                move || {
                    kk.verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &d, &s)
                        .expect("rsa crate")
                }
            }));
            let (nb, xb) = (num_bigint_of(&n), num_bigint_of(&sig));
            let e32 = ex.iter().fold(0u32, |a, b| a << 8 | u32::from(*b));
            v.entry("ours").or_default().push(rate(1, secs, |_| {
                let (nn, x) = (&nb, &xb);
                move || {
                    std::hint::black_box(keyring_pkcs11::pow_small(x, e32, nn));
                }
            }));
            v.entry("openssl_sign")
                .or_default()
                .push(rate(1, secs, |_| {
                    let kk = &key;
                    move || {
                        let mut sg = Signer::new(MessageDigest::sha256(), kk).unwrap();
                        sg.sign_oneshot_to_vec(MESSAGE).unwrap();
                    }
                }));
        }
        let _ = keyctl::unlink(serial, -2);
        let row = json!({
            "bits": bits,
            "kernel_pkey_verify": stats(&v["kernel"]),
            "ring_pkcs1_verify": stats(&v["ring"]),
            "openssl_raw_public_op": stats(&v["openssl"]),
            "rsa_crate_pkcs1_verify": stats(&v["rsa_crate"]),
            "keyring_pkcs11_public_op": stats(&v["ours"]),
            "openssl_sign": stats(&v["openssl_sign"]),
        });
        log(format_args!(
            "native RSA-{bits}: kernel PKEY_VERIFY {:.0}/s, ring {:.0}/s ({:.1}×), OpenSSL raw public op {:.0}/s ({:.1}×), rsa crate {:.0}/s ({:.2}×); OpenSSL sign {:.0}/s",
            med(&row["kernel_pkey_verify"]),
            med(&row["ring_pkcs1_verify"]),
            med(&row["ring_pkcs1_verify"]) / med(&row["kernel_pkey_verify"]),
            med(&row["openssl_raw_public_op"]),
            med(&row["openssl_raw_public_op"]) / med(&row["kernel_pkey_verify"]),
            med(&row["rsa_crate_pkcs1_verify"]),
            med(&row["rsa_crate_pkcs1_verify"]) / med(&row["kernel_pkey_verify"]),
            med(&row["openssl_sign"])
        ));
        rows.push(row);
    }
    std::fs::write(
        out,
        serde_json::to_string_pretty(&json!({ "verify_native": rows })).unwrap(),
    )
    .map_err(|x| x.to_string())?;
    Ok(())
}

/// The `rsa` crate's public key from big-endian (n, e).
fn rsa_public(n: &[u8], e: &[u8]) -> R<rsa::RsaPublicKey> {
    rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(n),
        rsa::BigUint::from_bytes_be(e),
    )
    .map_err(|x| x.to_string())
}

/// keyring-pkcs11's own bignum type (num-bigint), from big-endian bytes.
fn num_bigint_of(b: &[u8]) -> num_bigint::BigUint {
    num_bigint::BigUint::from_bytes_be(b)
}
