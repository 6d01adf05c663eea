//! Memory scrape: after importing a known key with C_CreateObject, generating
//! another with C_GenerateKeyPair and signing 100 times with each, the
//! process's writable memory holds no 32-byte piece of either key's private
//! exponent, primes, CRT exponents or CRT coefficient (d, p, q, dP, dQ, qInv,
//! in either byte order) — while the same scan finds pieces of both public
//! moduli, proving it looks where it should.
//!
//! The scanned process is a helper of this binary (`common::harness`) that
//! never holds those secrets in plain form itself. The imported key's file
//! is parsed in place (zero-copy DER), the template points into that buffer,
//! the buffer is wiped after the import, and the search needles are kept
//! XOR-masked and compared byte by byte, so the scan cannot find the
//! helper's own copies. The generated key comes from a module built with the
//! `test-hooks` feature (`KEYRING_PKCS11_TEST_HOOKS_MODULE`; `lab/test`
//! builds it into target/test-hooks), whose key generation is seeded by
//! `KEYRING_PKCS11_TEST_KEYGEN_SEED`: the test derives the same key from
//! the same seed with the `rsa` crate in its own process, which is not
//! scanned, and hands the helper only masked needles; the helper reports the
//! generated modulus, which must be the derived key's. Needs a kernel that
//! holds PKCS#8 keys: run by `lab/test` in the lab.

mod common;

use common::harness::{self, Helper, KERNEL, Test};
use common::*;
use cryptoki_sys::*;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::ptr::null_mut;
use std::time::Duration;
use zeroize::Zeroizing;

fn main() {
    harness::main_with_helpers(
        &[Test {
            name: "no_private_key_material_remains_in_process_memory",
            ignore: KERNEL,
            timeout: Duration::from_secs(900),
            run: no_private_key_material_remains_in_process_memory,
        }],
        &[Helper {
            name: "scrape",
            run: scrape,
        }],
    );
}

const MASK: u8 = 0x5a;

struct Needle {
    name: String,
    masked: Vec<u8>,
}

impl Needle {
    /// One line of the needles handed to the helper: NAME<tab>MASKED-HEX.
    fn line(&self) -> String {
        let hex: String = self.masked.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}\t{hex}\n", self.name)
    }

    fn parse(line: &str) -> Needle {
        let (name, hex) = line.split_once('\t').expect("NAME<tab>HEX");
        let masked = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        Needle {
            name: name.to_string(),
            masked,
        }
    }
}

/// Every 32-byte window of a value (non-overlapping, from its start; the
/// whole value if shorter), in both byte orders: a piece is as bad as the
/// whole (p − 1 is p to within its last byte; half of p factors n), and
/// bignum temporaries hold values little-endian in 64-bit limbs.
const WINDOW: usize = 32;

fn needles(name: &str, be: &[u8]) -> Vec<Needle> {
    let le: Vec<u8> = be.iter().rev().copied().collect();
    let mut v = Vec::new();
    for (order, bytes) in [("big-endian", be), ("little-endian", &le[..])] {
        let windows: Vec<&[u8]> = if bytes.len() < WINDOW {
            vec![bytes]
        } else {
            bytes.chunks_exact(WINDOW).collect()
        };
        for (i, w) in windows.into_iter().enumerate() {
            v.push(Needle {
                name: format!("{name} ({order}, piece {i})"),
                masked: w.iter().map(|b| b ^ MASK).collect(),
            });
        }
    }
    v
}

/// What a hit counts against: the value, without the piece and byte order.
fn value_of(needle_name: &str) -> &str {
    needle_name.split(" (").next().unwrap_or(needle_name)
}

const MASK8: u64 = u64::from_ne_bytes([MASK; 8]);

/// Counts occurrences of each needle in the process's writable mappings.
/// Needles are looked up by their first 8 bytes, masked, so the scan holds
/// no piece of a secret in plain form and costs one hash per byte however
/// many needles there are.
fn scan(needles: &[Needle]) -> Vec<usize> {
    use std::collections::HashMap;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mem = std::fs::File::open("/proc/self/mem").unwrap();
    let mut by_prefix: HashMap<u64, Vec<usize>> = HashMap::new();
    for (k, n) in needles.iter().enumerate() {
        assert!(
            n.masked.len() >= 8,
            "needle {} shorter than 8 bytes",
            n.name
        );
        let prefix = u64::from_ne_bytes(n.masked[..8].try_into().unwrap());
        by_prefix.entry(prefix).or_default().push(k);
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
            for i in 0..limit.min(got.saturating_sub(7)) {
                let word = u64::from_ne_bytes(hay[i..i + 8].try_into().unwrap()) ^ MASK8;
                let Some(candidates) = by_prefix.get(&word) else {
                    continue;
                };
                for &k in candidates {
                    let n = &needles[k];
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
    let f = raw();
    let mut m = CK_MECHANISM {
        mechanism: CKM_SHA256_RSA_PKCS,
        pParameter: null_mut(),
        ulParameterLen: 0,
    };
    let mut sig = vec![0u8; 512];
    for i in 0..100u32 {
        let mut data = i.to_be_bytes();
        let mut len = sig.len() as CK_ULONG;
        unsafe {
            assert_eq!(f.C_SignInit.unwrap()(h, &mut m, key), CKR_OK);
            assert_eq!(
                f.C_Sign.unwrap()(h, data.as_mut_ptr(), 4, sig.as_mut_ptr(), &mut len),
                CKR_OK
            );
        }
    }
}

/// The `test-hooks` build of the module (see the top of this file).
fn hooks_module() -> PathBuf {
    let p = std::env::var_os("KEYRING_PKCS11_TEST_HOOKS_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/test-hooks/debug/libkeyring_pkcs11.so")
        });
    assert!(
        p.exists(),
        "{} not built: cargo build --lib --features test-hooks --target-dir target/test-hooks (lab/test does)",
        p.display()
    );
    p
}

fn no_private_key_material_remains_in_process_memory() {
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    let mut seed = [0u8; 32];
    rsa::rand_core::OsRng.fill_bytes(&mut seed);
    let seed_hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    // The key the module will generate from this seed: the same call as
    // src/material.rs generate, 2048 bits, e = 65537.
    let key = rsa::RsaPrivateKey::new_with_exp(
        &mut rand_chacha::ChaCha20Rng::from_seed(seed),
        2048,
        &rsa::BigUint::from(65537u32),
    )
    .unwrap();
    let mut input = String::new();
    for (name, v) in [
        ("private exponent", key.d().clone()),
        ("prime 1", key.primes()[0].clone()),
        ("prime 2", key.primes()[1].clone()),
        ("CRT exponent 1 (dP)", key.dp().unwrap().clone()),
        ("CRT exponent 2 (dQ)", key.dq().unwrap().clone()),
        (
            "CRT coefficient (qInv)",
            key.qinv().unwrap().to_biguint().unwrap(),
        ),
    ] {
        for n in needles(&format!("generated key's {name}"), &v.to_bytes_be()) {
            input.push_str(&n.line());
        }
    }
    let mut child = harness::helper("scrape")
        .env("KEYRING_PKCS11_MODULE", hooks_module())
        .env("KEYRING_PKCS11_TEST_KEYGEN_SEED", &seed_hex)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && harness::helper_done("scrape", &o.stdout),
        "helper scrape failed ({}):\n{out}",
        o.status
    );
    print!("{out}");
    let n_hex: String = key
        .n()
        .to_bytes_be()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        out.lines()
            .any(|l| l == format!("GENERATED-MODULUS {n_hex}")),
        "the module did not generate the key derived from the seed (a build without test-hooks?): the scan for its secrets would prove nothing"
    );
    let mut secrets = std::collections::BTreeSet::new();
    let mut moduli = std::collections::BTreeMap::new();
    let mut found = Vec::new();
    for l in out.lines() {
        let Some(rest) = l.strip_prefix("HITS ") else {
            continue;
        };
        let (count, name) = rest.split_once(' ').unwrap();
        let count: usize = count.parse().unwrap();
        if name.contains("modulus") {
            *moduli.entry(value_of(name).to_string()).or_insert(0) += count;
        } else {
            secrets.insert(value_of(name).to_string());
            if count > 0 {
                found.push(format!("{count} × {name}"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "pieces of private key values remain in process memory: {}",
        found.join(", ")
    );
    for (name, count) in &moduli {
        assert!(
            *count > 0,
            "the scan found no piece of the {name}: it is not looking at the right memory"
        );
    }
    // d, p, q, dP, dQ, qInv of each key; both moduli.
    assert_eq!(
        (secrets.len(), moduli.len()),
        (12, 2),
        "the helper scanned for everything: {secrets:?} {moduli:?}"
    );
}

/// Helper: imports the 3072-bit test key, generates a 2048-bit key, signs
/// 100 times with each, then scans its own memory for the needles (masked,
/// on stdin for the generated key) and prints `HITS <count> <name>`.
fn scrape() {
    let f = raw();
    let h = raw_rw_session("user");

    // 1. Import a known key from a full PKCS#11 template.
    let mut secret_needles = Vec::new();
    let modulus_needle;
    let imported;
    {
        let der = Zeroizing::new(key_der(3072));
        let info = pkcs8::PrivateKeyInfo::try_from(der.as_slice()).unwrap();
        let k = pkcs1::RsaPrivateKey::try_from(info.private_key).unwrap();
        for (name, v) in [
            ("private exponent", &k.private_exponent),
            ("prime 1", &k.prime1),
            ("prime 2", &k.prime2),
            ("CRT exponent 1 (dP)", &k.exponent1),
            ("CRT exponent 2 (dQ)", &k.exponent2),
            ("CRT coefficient (qInv)", &k.coefficient),
        ] {
            secret_needles.extend(needles(&format!("imported key's {name}"), v.as_bytes()));
        }
        modulus_needle = needles("imported key's public modulus", k.modulus.as_bytes());
        let class = CKO_PRIVATE_KEY.to_ne_bytes();
        let kt = CKK_RSA.to_ne_bytes();
        let mut t = [
            attr(CKA_CLASS, &class),
            attr(CKA_KEY_TYPE, &kt),
            attr(CKA_LABEL, b"kp11-scrape-imported"),
            attr(CKA_MODULUS, k.modulus.as_bytes()),
            attr(CKA_PUBLIC_EXPONENT, k.public_exponent.as_bytes()),
            attr(CKA_PRIVATE_EXPONENT, k.private_exponent.as_bytes()),
            attr(CKA_PRIME_1, k.prime1.as_bytes()),
            attr(CKA_PRIME_2, k.prime2.as_bytes()),
            attr(CKA_EXPONENT_1, k.exponent1.as_bytes()),
            attr(CKA_EXPONENT_2, k.exponent2.as_bytes()),
            attr(CKA_COEFFICIENT, k.coefficient.as_bytes()),
        ];
        let mut o = 0;
        assert_eq!(
            unsafe { f.C_CreateObject.unwrap()(h, t.as_mut_ptr(), t.len() as CK_ULONG, &mut o) },
            CKR_OK
        );
        imported = o;
        // `der` (the only plain copy the test had) is wiped here.
    }

    // 2. Generate another key pair.
    let bits = (2048 as CK_ULONG).to_ne_bytes();
    let mut pubt = [
        attr(CKA_MODULUS_BITS, &bits),
        attr(CKA_LABEL, b"kp11-scrape-generated"),
    ];
    let mut gm = CK_MECHANISM {
        mechanism: CKM_RSA_PKCS_KEY_PAIR_GEN,
        pParameter: null_mut(),
        ulParameterLen: 0,
    };
    let (mut gpub, mut gpriv) = (0, 0);
    let rv = unsafe {
        f.C_GenerateKeyPair.unwrap()(
            h,
            &mut gm,
            pubt.as_mut_ptr(),
            2,
            null_mut(),
            0,
            &mut gpub,
            &mut gpriv,
        )
    };
    assert_eq!(rv, CKR_OK);

    // 3. Use both.
    sign_100(h, imported);
    sign_100(h, gpriv);

    // 4. Scrape, for the generated key's secrets too (masked, from stdin).
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).unwrap();
    secret_needles.extend(input.lines().map(Needle::parse));
    let mut n = vec![0u8; 256];
    let mut a = CK_ATTRIBUTE {
        type_: CKA_MODULUS,
        pValue: n.as_mut_ptr() as *mut _,
        ulValueLen: n.len() as CK_ULONG,
    };
    assert_eq!(
        unsafe { f.C_GetAttributeValue.unwrap()(h, gpub, &mut a, 1) },
        CKR_OK
    );
    n.truncate(a.ulValueLen as usize);
    let mut all = secret_needles;
    all.extend(modulus_needle);
    all.extend(needles("generated key's public modulus", &n));
    let hits = scan(&all);
    for (needle, c) in all.iter().zip(&hits) {
        println!("HITS {c} {}", needle.name);
    }
    let hex: String = n.iter().map(|b| format!("{b:02x}")).collect();
    println!("GENERATED-MODULUS {hex}");
    for o in [imported, gpriv] {
        assert_eq!(unsafe { f.C_DestroyObject.unwrap()(h, o) }, CKR_OK);
    }
}
