//! Filling the big tokens with distinct keys (from `keys.rs`), each the way
//! its users would:
//!
//!   fill-module   keyring-pkcs11 as a server operator fills it: through the
//!                 module, `C_CreateObject` of the PKCS#8 key in CKA_VALUE
//!                 with CKA_TOKEN true (what `keyring-pkcs11 import` does),
//!                 as root, so each key gets its record caching its public key
//!   fill-kernel   `keyctl padd asymmetric` as a script would: `add_key` of
//!                 each PKCS#8 key, nothing else (no records)
//!   fill-softhsm  SoftHSMv2: `C_CreateObject` of each private key (full
//!                 CRT template) and its public key, same label, same CKA_ID
//!
//! Each prints what it took as JSON.

use crate::keys;
use cryptoki_sys::*;
use keyring_pkcs11::kernel::keyctl;
use keyring_pkcs11_testkit::Template;
use serde_json::json;
use softhsm_compare::measure::round;
use softhsm_compare::{Args, R, load, login, token};
use std::time::Instant;

pub fn label(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i:05}")
}

fn done(count: usize, t: Instant) {
    let s = t.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({ "keys": count, "seconds": round(s), "ms_per_key": round(s * 1e3 / count.max(1) as f64) })
    );
}

/// `fill-module --module SO --token NAME --keys FILE --count N --prefix P
/// [--threads 2]`: the module must see token NAME (KEYRING_PKCS11_KEYRINGS).
pub fn fill_module(a: &Args) -> R<()> {
    let module = load(a.get("module")?)?;
    let p = module.client();
    let slot = token(p, a.get("token")?)?.slot;
    let count: usize = a.num("count", 1)?;
    let prefix = a.get("prefix")?;
    let threads: usize = a.num("threads", 2)?;
    let ders = keys::read(a.get("keys")?, Some(count))?;
    let t = Instant::now();
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..threads)
            .map(|w| {
                let ders = &ders;
                sc.spawn(move || -> R<()> {
                    let s = p.open(slot)?;
                    let ck_true = [1u8];
                    for i in (w..count).step_by(threads) {
                        let l = label(prefix, i);
                        let mut t = Template::new()
                            .ulong(CKA_CLASS, CKO_PRIVATE_KEY)
                            .ulong(CKA_KEY_TYPE, CKK_RSA)
                            .bytes(CKA_TOKEN, &ck_true)
                            .bytes(CKA_LABEL, l.as_bytes())
                            .bytes(CKA_VALUE, &ders[i]);
                        p.create_object(s, &mut t)
                            .map_err(|f| format!("key {i} ({l}): {f}"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        hs.into_iter()
            .try_for_each(|h| h.join().map_err(|_| "fill thread panicked".to_string())?)
    })?;
    done(count, t);
    p.finalize()?;
    Ok(())
}

/// `fill-kernel --name NAME --keys FILE --count N --prefix P`: a keyring
/// NAME in @u holding the keys, added as `keyctl padd asymmetric` would.
pub fn fill_kernel(a: &Args) -> R<()> {
    let name = a.get("name")?;
    let count: usize = a.num("count", 1)?;
    let prefix = a.get("prefix")?;
    let ders = keys::read(a.get("keys")?, Some(count))?;
    let ring = keyctl::add_key("keyring", name, &[], keyctl::KEY_SPEC_USER_KEYRING)
        .map_err(|e| format!("add_key keyring {name}: {e}"))?;
    let t = Instant::now();
    for (i, der) in ders.iter().enumerate() {
        keyctl::add_key("asymmetric", &label(prefix, i), der, ring)
            .map_err(|e| format!("add_key #{i}: {e}"))?;
    }
    done(count, t);
    Ok(())
}

/// `fill-softhsm --module SO --token T --pin PIN --keys FILE --count N
/// --prefix P`: each key as a private and a public token object, with
/// keyring-pkcs11's CKA_ID (what `softhsm2-util --import` would make).
pub fn fill_softhsm(a: &Args) -> R<()> {
    let module = load(a.get("module")?)?;
    let p = module.client();
    let slot = token(p, a.get("token")?)?.slot;
    let s = p.open(slot)?;
    login(p, s, a.get("pin")?)?;
    let prefix = a.get("prefix")?;
    let count: usize = a.num("count", 1)?;
    let ders = keys::read(a.get("keys")?, Some(count))?;
    let t = Instant::now();
    let (yes, no) = ([1u8], [0u8]);
    for (i, der) in ders.iter().enumerate() {
        let k = keys::parts(der)?;
        let id = keys::derived_id(&k.n, &k.e)?;
        let l = label(prefix, i);
        let mut private = Template::new()
            .ulong(CKA_CLASS, CKO_PRIVATE_KEY)
            .ulong(CKA_KEY_TYPE, CKK_RSA)
            .bytes(CKA_TOKEN, &yes)
            .bytes(CKA_PRIVATE, &yes)
            .bytes(CKA_SENSITIVE, &yes)
            .bytes(CKA_EXTRACTABLE, &no)
            .bytes(CKA_SIGN, &yes)
            .bytes(CKA_DECRYPT, &yes)
            .bytes(CKA_LABEL, l.as_bytes())
            .bytes(CKA_ID, &id)
            .bytes(CKA_MODULUS, &k.n)
            .bytes(CKA_PUBLIC_EXPONENT, &k.e)
            .bytes(CKA_PRIVATE_EXPONENT, &k.d)
            .bytes(CKA_PRIME_1, &k.p)
            .bytes(CKA_PRIME_2, &k.q)
            .bytes(CKA_EXPONENT_1, &k.dp)
            .bytes(CKA_EXPONENT_2, &k.dq)
            .bytes(CKA_COEFFICIENT, &k.qinv);
        p.create_object(s, &mut private)
            .map_err(|f| format!("private key {i}: {f}"))?;
        let mut public = Template::new()
            .ulong(CKA_CLASS, CKO_PUBLIC_KEY)
            .ulong(CKA_KEY_TYPE, CKK_RSA)
            .bytes(CKA_TOKEN, &yes)
            .bytes(CKA_PRIVATE, &no)
            .bytes(CKA_VERIFY, &yes)
            .bytes(CKA_ENCRYPT, &yes)
            .bytes(CKA_LABEL, l.as_bytes())
            .bytes(CKA_ID, &id)
            .bytes(CKA_MODULUS, &k.n)
            .bytes(CKA_PUBLIC_EXPONENT, &k.e);
        p.create_object(s, &mut public)
            .map_err(|f| format!("public key {i}: {f}"))?;
    }
    done(count, t);
    p.finalize()?;
    Ok(())
}
