//! The keys of the big tokens: up to 10,000 distinct RSA-2048 keys, made once
//! on the host and cached under target/ (`softhsm-compare keygen`), read in
//! the guest by the fill commands.
//!
//! Generating 10,000 independent RSA-2048 keys takes OpenSSL about 0.12 s of
//! CPU each natively (20 CPU-minutes; on a host shared with other guests,
//! hours). Every measurement needs only that the keys be distinct RSA-2048
//! keys — a distinct modulus, so a distinct CKA_ID, a public key of its own to
//! recover or check, a PKCS#8 blob of the usual size — and none looks at how
//! they were made. So the keys are made from a pool of M independent
//! 1024-bit primes, one key per pair (p, q): 142 primes give 10,011 keys in
//! under a minute. (Keys that share primes are worthless as keys — a gcd of two
//! moduli factors both — and are fine as benchmark load; they are never used
//! for anything else.) `keygen` also times a few independent keys, so the
//! report can say how long the honest way would take here.

use openssl::bn::{BigNum, BigNumContext};
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use serde_json::json;
use softhsm_compare::measure::round;
use softhsm_compare::{Args, R};
use std::time::Instant;

const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const END: &str = "-----END PRIVATE KEY-----";

fn e<E: std::fmt::Display>(x: E) -> String {
    x.to_string()
}

/// The PKCS#8 DER of the first `count` keys of a file of concatenated
/// PKCS#8 PEM keys (all of them if `count` is `None`).
pub fn read(path: &str, count: Option<usize>) -> R<Vec<Vec<u8>>> {
    let text = std::fs::read_to_string(path).map_err(|x| format!("{path}: {x}"))?;
    let mut out = Vec::new();
    for block in text.split(BEGIN).skip(1) {
        if count.is_some_and(|c| out.len() >= c) {
            break;
        }
        let body = block
            .split(END)
            .next()
            .ok_or(format!("{path}: a key without its END line"))?;
        let b64: String = body.split_whitespace().collect();
        out.push(openssl::base64::decode_block(&b64).map_err(|x| format!("{path}: {x}"))?);
    }
    if let Some(c) = count {
        if out.len() < c {
            return Err(format!(
                "{path} holds {} keys, {c} wanted (softhsm-compare keygen)",
                out.len()
            ));
        }
    }
    Ok(out)
}

/// `keygen --count N --out FILE`: FILE holds at least N distinct RSA-2048
/// keys afterwards (kept if it already does). Prints what it did as JSON,
/// also written to FILE.json.
pub fn keygen(a: &Args) -> R<()> {
    let count: usize = a.num("count", 10_000)?;
    let out = a.get("out")?;
    if let Ok(have) = read(out, None) {
        if have.len() >= count {
            eprintln!(
                "softhsm-compare keygen: {out} holds {} keys already",
                have.len()
            );
            return Ok(());
        }
    }
    // The honest way, timed on a few keys: what one independent key costs in
    // CPU time (wall time on a shared host says more about the host).
    let cpu = || {
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: u is a valid rusage to fill.
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
        u.ru_utime.tv_sec as f64 + u.ru_utime.tv_usec as f64 * 1e-6
    };
    let (c0, t) = (cpu(), Instant::now());
    let probes = a.num("probe-keys", 8usize)?;
    for _ in 0..probes {
        Rsa::generate(2048).map_err(e)?;
    }
    let independent_s = (cpu() - c0) / probes as f64;
    let independent_wall_s = t.elapsed().as_secs_f64() / probes as f64;

    let m = (2usize..).find(|m| m * (m - 1) / 2 >= count).unwrap();
    let t = Instant::now();
    let sixty_five_537 = 65537u32;
    // Two threads: the host has two CPUs.
    let primes: Vec<BigNum> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..2)
            .map(|w| {
                sc.spawn(move || -> R<Vec<BigNum>> {
                    let mut v = Vec::new();
                    while v.len() < (m + 1 - w) / 2 {
                        let mut p = BigNum::new().map_err(e)?;
                        // Top two bits set (OpenSSL's prime generation does
                        // that), so every product has exactly 2048 bits.
                        p.generate_prime(1024, false, None, None).map_err(e)?;
                        // e must be invertible mod p − 1.
                        if p.mod_word(sixty_five_537).map_err(e)? != 1 {
                            v.push(p);
                        }
                    }
                    Ok(v)
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in hs {
            all.extend(h.join().map_err(|_| "prime thread panicked")??);
        }
        Ok::<_, String>(all)
    })?;
    let primes_s = t.elapsed().as_secs_f64();
    for i in 0..primes.len() {
        for j in 0..i {
            if primes[i] == primes[j] {
                return Err("the same prime twice: run keygen again".into());
            }
        }
    }
    let mut ctx = BigNumContext::new().map_err(e)?;
    let one = BigNum::from_u32(1).map_err(e)?;
    let ev = BigNum::from_u32(sixty_five_537).map_err(e)?;
    let mut pem = Vec::new();
    let mut made = 0;
    'pairs: for i in 0..m {
        for j in i + 1..m {
            if made == count {
                break 'pairs;
            }
            let (p, q) = if primes[i] > primes[j] {
                (&primes[i], &primes[j])
            } else {
                (&primes[j], &primes[i])
            };
            let mut n = BigNum::new().map_err(e)?;
            n.checked_mul(p, q, &mut ctx).map_err(e)?;
            let mut p1 = BigNum::new().map_err(e)?;
            p1.checked_sub(p, &one).map_err(e)?;
            let mut q1 = BigNum::new().map_err(e)?;
            q1.checked_sub(q, &one).map_err(e)?;
            let mut phi = BigNum::new().map_err(e)?;
            phi.checked_mul(&p1, &q1, &mut ctx).map_err(e)?;
            let mut d = BigNum::new().map_err(e)?;
            d.mod_inverse(&ev, &phi, &mut ctx).map_err(e)?;
            let mut dp = BigNum::new().map_err(e)?;
            dp.nnmod(&d, &p1, &mut ctx).map_err(e)?;
            let mut dq = BigNum::new().map_err(e)?;
            dq.nnmod(&d, &q1, &mut ctx).map_err(e)?;
            let mut qinv = BigNum::new().map_err(e)?;
            qinv.mod_inverse(q, p, &mut ctx).map_err(e)?;
            let rsa = Rsa::from_private_components(
                n,
                ev.to_owned().map_err(e)?,
                d,
                openssl::bn::BigNumRef::to_owned(p).map_err(e)?,
                openssl::bn::BigNumRef::to_owned(q).map_err(e)?,
                dp,
                dq,
                qinv,
            )
            .map_err(e)?;
            if made % 1000 == 0 && !rsa.check_key().map_err(e)? {
                return Err(format!("key {made} fails OpenSSL's check"));
            }
            pem.extend(
                PKey::from_rsa(rsa)
                    .map_err(e)?
                    .private_key_to_pem_pkcs8()
                    .map_err(e)?,
            );
            made += 1;
        }
    }
    let total_s = t.elapsed().as_secs_f64();
    let tmp = format!("{out}.tmp");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|x| format!("{tmp}: {x}"))?;
        std::io::Write::write_all(&mut f, &pem).map_err(e)?;
    }
    std::fs::rename(&tmp, out).map_err(e)?;
    let info = json!({
        "keys": made, "primes": m, "seconds": round(total_s), "primes_seconds": round(primes_s),
        "independent_key_seconds": round(independent_s),
        "independent_key_wall_seconds": round(independent_wall_s),
        "independent_keys_would_take_minutes": round(independent_s * made as f64 / 60.0),
        "host_load": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    });
    std::fs::write(format!("{out}.json"), info.to_string()).map_err(e)?;
    println!("{info}");
    Ok(())
}

/// What a fill needs of one key: its parts (SoftHSM gets a full template).
pub struct Parts {
    pub n: Vec<u8>,
    pub e: Vec<u8>,
    pub d: Vec<u8>,
    pub p: Vec<u8>,
    pub q: Vec<u8>,
    pub dp: Vec<u8>,
    pub dq: Vec<u8>,
    pub qinv: Vec<u8>,
}

pub fn parts(der: &[u8]) -> R<Parts> {
    let k = PKey::private_key_from_der(der).map_err(e)?;
    let r = k.rsa().map_err(e)?;
    let v = |b: Option<&openssl::bn::BigNumRef>| b.map(|b| b.to_vec()).ok_or("no CRT part");
    Ok(Parts {
        n: r.n().to_vec(),
        e: r.e().to_vec(),
        d: r.d().to_vec(),
        p: v(r.p())?,
        q: v(r.q())?,
        dp: v(r.dmp1())?,
        dq: v(r.dmq1())?,
        qinv: v(r.iqmp())?,
    })
}

/// CKA_ID as keyring-pkcs11 derives it: SHA-1 of the DER RSAPublicKey.
pub fn derived_id(n: &[u8], e: &[u8]) -> R<Vec<u8>> {
    let r = Rsa::from_public_components(
        BigNum::from_slice(n).map_err(self::e)?,
        BigNum::from_slice(e).map_err(self::e)?,
    )
    .map_err(self::e)?;
    let der = r.public_key_to_der_pkcs1().map_err(self::e)?;
    Ok(openssl::sha::sha1(&der).to_vec())
}
