//! Memory scrape: after importing a known key with C_CreateObject, generating
//! another with C_GenerateKeyPair and signing 100 times with each, this
//! process's writable memory holds no 32-byte piece of the imported key's
//! private exponent or primes (in either byte order) — while the same scan
//! does find pieces of its public modulus, proving the scan looks where it
//! should.
//!
//! The test never holds those secrets in plain form itself: the key file is
//! parsed in place (zero-copy DER), the template points into that buffer, the
//! buffer is wiped after the import, and the search needles are kept XOR-masked
//! and compared byte by byte, so the scan cannot find the test's own copies.
//! Alone in its test binary, so no other test's memory is scanned. Needs a
//! kernel that holds PKCS#8 keys: run by `lab/test` in the lab.

mod common;

use common::*;
use cryptoki_sys::*;
use keyring_pkcs11_testkit::{Mechanism, Template};
use std::os::unix::fs::FileExt;
use zeroize::Zeroizing;

const MASK: u8 = 0x5a;

struct Needle {
    name: String,
    masked: Vec<u8>,
}

/// Every 32-byte window of a value (non-overlapping, from its start), in
/// both byte orders: a fragment is as bad as the whole (p − 1 is p to within
/// its last byte; half of p factors n with Coppersmith's method), and
/// bignum temporaries hold values little-endian in 64-bit limbs.
const WINDOW: usize = 32;

fn needles(name: &str, be: &[u8]) -> Vec<Needle> {
    let le: Vec<u8> = be.iter().rev().copied().collect();
    let mut v = Vec::new();
    for (order, bytes) in [("big-endian", be), ("little-endian", &le[..])] {
        for (i, w) in bytes.chunks_exact(WINDOW).enumerate() {
            v.push(Needle {
                name: format!(
                    "{name} ({order}, bytes {}..{})",
                    i * WINDOW,
                    (i + 1) * WINDOW
                ),
                masked: w.iter().map(|b| b ^ MASK).collect(),
            });
        }
    }
    v
}

/// Counts occurrences of each needle in the process's writable mappings.
fn scan(needles: &[Needle]) -> Vec<usize> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mem = std::fs::File::open("/proc/self/mem").unwrap();
    let mut first = [false; 256];
    for n in needles {
        first[usize::from(n.masked[0] ^ MASK)] = true;
    }
    let longest = needles.iter().map(|n| n.masked.len()).max().unwrap();
    let mut hits = vec![0usize; needles.len()];
    let mut buf = vec![0u8; 1 << 20];
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (range, perms) = (f.next().unwrap(), f.next().unwrap());
        let path = f.nth(3).unwrap_or("");
        if !perms.starts_with("rw") || path.starts_with("[v") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let (start, end) = (
            u64::from_str_radix(start, 16).unwrap(),
            u64::from_str_radix(end, 16).unwrap(),
        );
        let mut at = start;
        while at < end {
            let want = (end - at).min(buf.len() as u64) as usize;
            let Ok(got) = mem.read_at(&mut buf[..want], at) else {
                break;
            };
            if got == 0 {
                break;
            }
            let hay = &buf[..got];
            // Count only matches that start in this chunk's non-overlapping part.
            let limit = if at + got as u64 >= end {
                got
            } else {
                got.saturating_sub(longest)
            };
            for i in 0..limit {
                if !first[usize::from(hay[i])] {
                    continue;
                }
                for (k, n) in needles.iter().enumerate() {
                    let l = n.masked.len();
                    if i + l <= got
                        && hay[i..i + l]
                            .iter()
                            .zip(&n.masked)
                            .all(|(h, m)| h ^ MASK == *m)
                    {
                        hits[k] += 1;
                    }
                }
            }
            at += limit.max(1) as u64;
        }
    }
    hits
}

fn sign_100(h: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE) {
    let mut sig = vec![0u8; 512];
    for i in 0..100u32 {
        client()
            .sign_into(h, &SHA256_RSA_PKCS, key, &i.to_be_bytes(), &mut sig)
            .unwrap();
    }
}

#[test]
#[ignore = "needs a kernel that holds PKCS#8 private keys: run lab/test"]
fn no_private_key_material_remains_in_process_memory() {
    let h = raw_rw_session("user");

    // 1. Import a known key from a full PKCS#11 template.
    let mut secret_needles = Vec::new();
    let modulus_needle;
    let imported;
    {
        let der = Zeroizing::new(key_der(3072));
        let info = pkcs8::PrivateKeyInfo::try_from(der.as_slice()).unwrap();
        let k = pkcs1::RsaPrivateKey::try_from(info.private_key).unwrap();
        secret_needles.extend(needles("private exponent", k.private_exponent.as_bytes()));
        secret_needles.extend(needles("prime 1", k.prime1.as_bytes()));
        secret_needles.extend(needles("prime 2", k.prime2.as_bytes()));
        modulus_needle = needles("modulus", k.modulus.as_bytes());
        // Borrowed, not copied: the template points into `der`.
        let mut t = Template::new()
            .ulong(CKA_CLASS, CKO_PRIVATE_KEY)
            .ulong(CKA_KEY_TYPE, CKK_RSA)
            .bytes(CKA_LABEL, b"kp11-scrape-imported")
            .bytes(CKA_MODULUS, k.modulus.as_bytes())
            .bytes(CKA_PUBLIC_EXPONENT, k.public_exponent.as_bytes())
            .bytes(CKA_PRIVATE_EXPONENT, k.private_exponent.as_bytes())
            .bytes(CKA_PRIME_1, k.prime1.as_bytes())
            .bytes(CKA_PRIME_2, k.prime2.as_bytes())
            .bytes(CKA_EXPONENT_1, k.exponent1.as_bytes())
            .bytes(CKA_EXPONENT_2, k.exponent2.as_bytes())
            .bytes(CKA_COEFFICIENT, k.coefficient.as_bytes());
        imported = client().create_object(h, &mut t).unwrap();
        // `der` (the only plain copy the test had) is wiped here.
    }

    // 2. Generate another key pair.
    let (_, gpriv) = client()
        .generate_key_pair(
            h,
            &Mechanism::new(CKM_RSA_PKCS_KEY_PAIR_GEN),
            &mut Template::new()
                .ulong(CKA_MODULUS_BITS, 2048)
                .bytes(CKA_LABEL, b"kp11-scrape-generated"),
            &mut Template::new(),
        )
        .unwrap();

    // 3. Use both.
    sign_100(h, imported);
    sign_100(h, gpriv);

    // 4. Scrape.
    let mut all = secret_needles;
    let n_secret = all.len();
    all.extend(modulus_needle);
    let hits = scan(&all);
    let found: Vec<String> = all
        .iter()
        .zip(&hits)
        .take(n_secret)
        .filter(|(_, c)| **c > 0)
        .map(|(n, c)| format!("{c} × {}", n.name))
        .collect();
    assert!(
        found.is_empty(),
        "pieces of the imported key's secrets remain in process memory: {}",
        found.join(", ")
    );
    let modulus_hits: usize = hits[n_secret..].iter().sum();
    assert!(
        modulus_hits > 0,
        "the scan did not find the public modulus: it is not looking at the right memory"
    );
    eprintln!(
        "memory scan: no {WINDOW}-byte piece of d, p or q in either byte order ({n_secret} needles); \
         pieces of the modulus found {modulus_hits} times"
    );

    for o in [imported, gpriv] {
        client().destroy_object(h, o).unwrap();
    }
}
