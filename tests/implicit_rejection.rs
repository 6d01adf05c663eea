//! Implicit rejection in PKCS#1 v1.5 decryption (CKM_RSA_PKCS) with keys in
//! the kernel: a ciphertext whose padding is bad decrypts with CKR_OK to the
//! synthetic message that the README promises — the draft's algorithm keyed
//! by SHA-256 of the kernel key's private operation on its fixed input —
//! computed here independently from the key file with RustCrypto; the same
//! for every kernel key of that material; good ciphertexts still decrypt;
//! what the public key tells (not below n, not k bytes) is still an error.
//! Needs a kernel that holds PKCS#8 keys: `lab/test` runs it on 6.1 and 6.12.

mod common;

use common::*;
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectClass;
use keyring_pkcs11::rejection;
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BigUint, RsaPrivateKey};

fn rv_of<T: std::fmt::Debug>(r: cryptoki::error::Result<T>) -> RvError {
    match r {
        Err(Error::Pkcs11(rv, _)) => rv,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

fn to_k(v: BigUint, k: usize) -> Vec<u8> {
    let v = v.to_bytes_be();
    [vec![0u8; k - v.len()], v].concat()
}

/// What the module must answer for `c`, from the key file.
fn expected(sk: &RsaPrivateKey, c: &[u8]) -> Vec<u8> {
    let k = sk.size();
    let raw = |x: &[u8]| to_k(BigUint::from_bytes_be(x).modpow(sk.d(), sk.n()), k);
    let n = num_bigint::BigUint::from_bytes_be(&sk.n().to_bytes_be());
    let x0 = rejection::fixed_input(&n, sk.n().bits() as u32, k);
    let secret = rejection::derive_key(&raw(&x0));
    rejection::decode(&raw(c), c, &secret).unwrap().to_vec()
}

/// Encoded blocks that are bad in each way a Bleichenbacher oracle tells
/// apart, around an otherwise good encoding of "lorem ipsum".
fn bad_blocks(k: usize) -> Vec<(&'static str, Vec<u8>)> {
    let msg = b"lorem ipsum";
    let mut good = vec![0x5au8; k];
    good[0] = 0;
    good[1] = 2;
    good[k - msg.len() - 1] = 0;
    good[k - msg.len()..].copy_from_slice(msg);
    let with = |i: usize, b: u8| {
        let mut e = good.clone();
        e[i] = b;
        e
    };
    let mut no_separator = good.clone();
    no_separator[k - msg.len() - 1] = 0x5a;
    vec![
        ("first byte 0x01", with(0, 1)),
        ("block type 0x01", with(1, 1)),
        ("block type 0x00", with(1, 0)),
        ("zero in the first padding byte", with(2, 0)),
        ("zero in the eighth padding byte", with(9, 0)),
        ("no separator", no_separator),
        ("garbage", vec![0x11; k]),
    ]
}

#[test]
#[ignore = "needs a kernel that holds PKCS#8 private keys: run lab/test"]
fn bad_padding_decrypts_to_the_keys_synthetic_message() {
    for bits in [2048, 3072, 4096] {
        let key = KernelKey::load(bits, "implicit");
        let sk = RsaPrivateKey::from_pkcs8_der(&key_der(bits)).unwrap();
        let k = bits / 8;
        let s = user_session();
        let private = key.find(&s, ObjectClass::PRIVATE_KEY);
        // The same key material under another serial: its secret is
        // derived again, from the kernel, and must be the same.
        let twin = KernelKey::load(bits, "implicit-twin");
        let twin_private = twin.find(&s, ObjectClass::PRIVATE_KEY);
        let mut lengths = Vec::new();
        for (what, em) in bad_blocks(k) {
            let c = to_k(BigUint::from_bytes_be(&em).modpow(sk.e(), sk.n()), k);
            let got = s
                .decrypt(&Mechanism::RsaPkcs, private, &c)
                .unwrap_or_else(|e| panic!("{bits}-bit, {what}: {e}"));
            assert_eq!(got, expected(&sk, &c), "{bits}-bit, {what}");
            assert!(got.len() <= k - 11, "{bits}-bit, {what}");
            assert_ne!(got, b"lorem ipsum", "{bits}-bit, {what}");
            assert_eq!(
                s.decrypt(&Mechanism::RsaPkcs, twin_private, &c).unwrap(),
                got,
                "{bits}-bit, {what}: the same key under another serial"
            );
            lengths.push(got.len());
        }
        lengths.dedup();
        assert!(lengths.len() > 1, "{bits}-bit: lengths {lengths:?}");
        // The good block still decrypts.
        let (_, mut good) = bad_blocks(k).remove(0);
        good[0] = 0;
        let c = to_k(BigUint::from_bytes_be(&good).modpow(sk.e(), sk.n()), k);
        assert_eq!(
            s.decrypt(&Mechanism::RsaPkcs, private, &c).unwrap(),
            b"lorem ipsum"
        );
        // What anyone holding the public key can check is still refused.
        assert_eq!(
            rv_of(s.decrypt(&Mechanism::RsaPkcs, private, &sk.n().to_bytes_be())),
            RvError::EncryptedDataInvalid,
            "{bits}-bit: n itself"
        );
        assert_eq!(
            rv_of(s.decrypt(&Mechanism::RsaPkcs, private, &vec![0xff; k])),
            RvError::EncryptedDataInvalid
        );
        assert_eq!(
            rv_of(s.decrypt(&Mechanism::RsaPkcs, private, &c[1..])),
            RvError::EncryptedDataLenRange
        );
    }
}
