//! Keys whose public exponent is not 65537, on a real kernel. The module
//! recovers a kernel key's public key (`src/crypto/pubkey.rs`): the modulus from the
//! kernel's public operation, the exponent by trying a fixed list of small
//! values (65537, 3, 5, 17, 257, 7, 11, 13, 37, 41). Public operations run in
//! userspace for an exponent that fits in 32 bits, and through the kernel's
//! public operation beyond (`src/crypto/operation.rs`). A key the module
//! created in a keyring root owns has a record caching its public key, which
//! another process believes once the kernel key confirms it. So:
//!
//! - e = 3 and e = 17, loaded with `keyctl padd`: listed with that exponent,
//!   and every operation agrees with RustCrypto `rsa`;
//! - e = 2^32 + 15, loaded with `keyctl padd`: no process finds it by label
//!   or reads its label in a listing (the module logs that it skipped it),
//!   though the kernel holds and uses it;
//! - the same key made with `C_CreateObject` (as root, as the lab runs): the
//!   process that created it knows its public key from the template, lists
//!   it and uses it (its public operations through the kernel); a new process
//!   lists it too, from its record;
//! - `C_GenerateKeyPair` with e = 17 and e = 19: both work in the generating
//!   process, and a new process lists both (from their records);
//! - moduli of 2047 and 3071 bits (which the kernel reports as 2048 and 3072:
//!   it counts key sizes in bytes), loaded with `keyctl padd` and made with
//!   `C_CreateObject`: listed with their true `CKA_MODULUS_BITS` and used for
//!   everything.
//!
//! The keys come from `lab/test` (`openssl genpkey -pkeyopt
//! rsa_keygen_pubexp:E`, files `rsa2048-e<E>.pk8.der`; `rsa_keygen_bits:2047`
//! and `3071`, files `rsa2047.pk8.der`, `rsa3071.pk8.der`). `harness = false`:
//! what a new process sees is asked of a helper of this binary.

mod common;

use common::harness::{self, Helper, KERNEL, Test};
use common::*;
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::MechanismType;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki_sys::*;
use keyring_pkcs11::kernel::keyctl;
use keyring_pkcs11::kernel::store::{KernelStore, KeyStore};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Oaep, Pkcs1v15Encrypt, Pkcs1v15Sign, Pss, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// 2^32 + 15: the smallest odd exponent that does not fit in 32 bits and
/// that OpenSSL and RustCrypto (which stops at 2^33 − 1) both take.
const LARGE_E: u64 = (1 << 32) + 15;

fn main() {
    let t = Duration::from_secs(600);
    harness::main_with_helpers(
        &[
            Test {
                name: "exponents_3_and_17_loaded_with_keyctl_are_recovered_and_used",
                ignore: KERNEL,
                timeout: t,
                run: exponents_3_and_17_loaded_with_keyctl_are_recovered_and_used,
            },
            Test {
                name: "an_exponent_beyond_32_bits_loaded_with_keyctl_is_not_listed",
                ignore: KERNEL,
                timeout: t,
                run: an_exponent_beyond_32_bits_loaded_with_keyctl_is_not_listed,
            },
            Test {
                name: "an_exponent_beyond_32_bits_created_here_is_listed_from_its_record",
                ignore: KERNEL,
                timeout: t,
                run: an_exponent_beyond_32_bits_created_here_is_listed_from_its_record,
            },
            Test {
                name: "moduli_of_2047_and_3071_bits_are_listed_created_and_used",
                ignore: KERNEL,
                timeout: t,
                run: moduli_of_2047_and_3071_bits_are_listed_created_and_used,
            },
            Test {
                name: "generated_keys_are_listed_from_their_records",
                ignore: KERNEL,
                timeout: t,
                run: generated_keys_are_listed_from_their_records,
            },
        ],
        &[Helper {
            name: "list-user",
            run: list_user,
        }],
    );
}

fn private_of(der: &[u8]) -> RsaPrivateKey {
    use rsa::pkcs8::DecodePrivateKey;
    RsaPrivateKey::from_pkcs8_der(der).expect("PKCS#8 RSA key")
}

fn rv_of<T: std::fmt::Debug>(r: cryptoki::error::Result<T>) -> RvError {
    match r {
        Err(Error::Pkcs11(rv, _)) => rv,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

fn find_one(s: &Session, label: &str, class: ObjectClass) -> ObjectHandle {
    let found = s
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1, "exactly one {class:?} labelled {label}");
    found[0]
}

/// Every operation of the key pair labelled `label`, checked against the
/// RustCrypto key `sk`: the objects carry its modulus and exponent;
/// signatures (PKCS#1 v1.5, PSS, raw) verify with RustCrypto and with the
/// module, and a wrong one does not; what the module encrypts (PKCS#1 v1.5,
/// OAEP, raw) RustCrypto decrypts, and the other way round.
fn use_everything(s: &Session, label: &str, sk: &RsaPrivateKey) {
    let pk = sk.to_public_key();
    let private = find_one(s, label, ObjectClass::PRIVATE_KEY);
    let public = find_one(s, label, ObjectClass::PUBLIC_KEY);
    for o in [private, public] {
        assert_eq!(
            attr_bytes(s, o, AttributeType::PublicExponent),
            pk.e().to_bytes_be(),
            "{label}: CKA_PUBLIC_EXPONENT"
        );
        assert_eq!(
            attr_bytes(s, o, AttributeType::Modulus),
            pk.n().to_bytes_be(),
            "{label}: CKA_MODULUS"
        );
    }
    let msg = format!("signed by {label}");
    let digest = Sha256::digest(msg.as_bytes());

    let sig = s
        .sign(&Mechanism::Sha256RsaPkcs, private, msg.as_bytes())
        .unwrap();
    pk.verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &sig)
        .unwrap_or_else(|e| panic!("{label}: PKCS#1 v1.5 signature: {e}"));
    s.verify(&Mechanism::Sha256RsaPkcs, public, msg.as_bytes(), &sig)
        .unwrap();
    assert_eq!(
        rv_of(s.verify(&Mechanism::Sha256RsaPkcs, public, b"another message", &sig)),
        RvError::SignatureInvalid,
        "{label}: C_Verify of a signature of something else"
    );

    let pss = PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 32u64.into(),
    };
    let sig = s
        .sign(&Mechanism::Sha256RsaPkcsPss(pss), private, msg.as_bytes())
        .unwrap();
    pk.verify(Pss::new_with_salt::<Sha256>(32), &digest, &sig)
        .unwrap_or_else(|e| panic!("{label}: PSS signature: {e}"));
    s.verify(
        &Mechanism::Sha256RsaPkcsPss(pss),
        public,
        msg.as_bytes(),
        &sig,
    )
    .unwrap();

    let k = pk.size();
    let mut block = vec![0u8; k];
    block[1..].fill(0x37);
    let raw = s.sign(&Mechanism::RsaX509, private, &block).unwrap();
    assert_eq!(
        BigUint::from_bytes_be(&raw).modpow(pk.e(), pk.n()),
        BigUint::from_bytes_be(&block),
        "{label}: the raw signature is m^d"
    );
    s.verify(&Mechanism::RsaX509, public, &block, &raw).unwrap();

    let mut rng = rsa::rand_core::OsRng;
    let ct = s
        .encrypt(&Mechanism::RsaPkcs, public, b"pkcs1 to rustcrypto")
        .unwrap();
    assert_eq!(
        sk.decrypt(Pkcs1v15Encrypt, &ct).unwrap(),
        b"pkcs1 to rustcrypto"
    );
    let ct = pk
        .encrypt(&mut rng, Pkcs1v15Encrypt, b"pkcs1 from rustcrypto")
        .unwrap();
    assert_eq!(
        s.decrypt(&Mechanism::RsaPkcs, private, &ct).unwrap(),
        b"pkcs1 from rustcrypto"
    );
    let oaep = PkcsOaepParams::new(
        MechanismType::SHA256,
        PkcsMgfType::MGF1_SHA256,
        PkcsOaepSource::empty(),
    );
    let ct = s
        .encrypt(&Mechanism::RsaPkcsOaep(oaep), public, b"oaep to rustcrypto")
        .unwrap();
    assert_eq!(
        sk.decrypt(Oaep::new::<Sha256>(), &ct).unwrap(),
        b"oaep to rustcrypto"
    );
    let ct = pk
        .encrypt(&mut rng, Oaep::new::<Sha256>(), b"oaep from rustcrypto")
        .unwrap();
    assert_eq!(
        s.decrypt(&Mechanism::RsaPkcsOaep(oaep), private, &ct)
            .unwrap(),
        b"oaep from rustcrypto"
    );
    let m = BigUint::from_bytes_be(b"raw to the power e");
    let ct = s
        .encrypt(&Mechanism::RsaX509, public, b"raw to the power e")
        .unwrap();
    assert_eq!(ct.len(), k);
    assert_eq!(
        BigUint::from_bytes_be(&ct),
        m.modpow(pk.e(), pk.n()),
        "{label}: C_Encrypt with CKM_RSA_X_509 is m^e mod n"
    );
}

fn exponents_3_and_17_loaded_with_keyctl_are_recovered_and_used() {
    for e in [3u64, 17] {
        let der = key_file(&format!("rsa2048-e{e}.pk8.der"));
        let sk = private_of(&der);
        assert_eq!(*sk.e(), BigUint::from(e), "the key file's exponent");
        let key = KernelKey::load_der(&der, &format!("e{e}"));
        let s = user_session();
        use_everything(&s, &key.label, &sk);
        assert!(
            listed_by_a_new_process(&[]).contains(&key.label),
            "e = {e}: a new process lists the key"
        );
    }
}

fn an_exponent_beyond_32_bits_loaded_with_keyctl_is_not_listed() {
    let der = key_file(&format!("rsa2048-e{LARGE_E}.pk8.der"));
    let sk = private_of(&der);
    assert_eq!(*sk.e(), BigUint::from(LARGE_E), "the key file's exponent");
    let control = KernelKey::load(2048, "large-e-control");
    let key = KernelKey::load_der(&der, "large-e-keyctl");
    // The kernel holds it and signs with it.
    let mut sig = [0u8; 256];
    let digest = Sha256::digest(b"kernel");
    let n = KernelStore
        .sign(
            key.serial,
            Some(keyring_pkcs11::Hash::Sha256),
            &digest,
            &mut sig,
        )
        .expect("the kernel signs with the key");
    sk.to_public_key()
        .verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &sig[..n])
        .expect("the kernel's signature verifies");
    // Neither a new process nor this one (which sees it first now) lists it;
    // the other key, in the same listing, is listed.
    let s = user_session();
    let here: Vec<ObjectHandle> = s
        .find_objects(&[Attribute::Label(key.label.clone().into_bytes())])
        .unwrap();
    assert!(
        here.is_empty(),
        "this process lists the key with e = 2^32 + 15"
    );
    find_one(&s, &control.label, ObjectClass::PRIVATE_KEY);
    let there = listed_by_a_new_process(&[]);
    assert!(
        there.contains(&control.label),
        "a new process does not list the other key: {there:?}"
    );
    assert!(
        !there.contains(&key.label),
        "a new process lists the key with e = 2^32 + 15: {there:?}"
    );
}

fn an_exponent_beyond_32_bits_created_here_is_listed_from_its_record() {
    let der = key_file(&format!("rsa2048-e{LARGE_E}.pk8.der"));
    let sk = private_of(&der);
    let control = KernelKey::load(2048, "large-e-control");
    let label = format!("kp11-test-large-e-created-{}", std::process::id());
    let h = raw_rw_session("user");
    assert_eq!(import_pkcs8(h, &label, &der, None), CKR_OK);
    let serial = keyctl::search(keyctl::KEY_SPEC_USER_KEYRING, "asymmetric", &label)
        .expect("the created key is in @u");
    let _unlink = Unlink(serial);
    // Here: listed with its exponent and usable (public operations through
    // the kernel, as the exponent does not fit in 32 bits).
    let s = user_session();
    use_everything(&s, &label, &sk);
    // A new process lists it too: root's key has a record that caches its
    // public key, which the kernel key confirms (one public operation).
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the lab runs as root: root owns the key"
    );
    let there = listed_by_a_new_process(&[]);
    assert!(
        there.contains(&control.label),
        "a new process does not list the other key: {there:?}"
    );
    assert!(
        there.contains(&label),
        "a new process does not list the created key with e = 2^32 + 15, whose record caches its public key: {there:?}"
    );
}

fn moduli_of_2047_and_3071_bits_are_listed_created_and_used() {
    for file_bits in [2047, 3071] {
        let der = key_file(&format!("rsa{file_bits}.pk8.der"));
        let sk = private_of(&der);
        // OpenSSL asked for an odd size may give one bit less (3070 seen).
        let bits = sk.n().bits() as CK_ULONG;
        assert!(
            bits % 8 != 0 && bits + 8 > file_bits,
            "rsa{file_bits}.pk8.der: a modulus of {bits} bits"
        );
        let check = |s: &Session, label: &str| {
            // CKA_MODULUS_BITS is a public key's attribute (the private
            // key's CKA_MODULUS is checked by use_everything).
            let o = find_one(s, label, ObjectClass::PUBLIC_KEY);
            let got = s.get_attributes(o, &[AttributeType::ModulusBits]).unwrap();
            let [Attribute::ModulusBits(got)] = got.as_slice() else {
                panic!("{label}: CKA_MODULUS_BITS reads {got:?}")
            };
            assert_eq!(CK_ULONG::from(*got), bits, "{label}: CKA_MODULUS_BITS");
            use_everything(s, label, &sk);
        };
        // Loaded with keyctl: found in the keyring, its public key recovered.
        {
            let key = KernelKey::load_der(&der, &format!("bits{bits}"));
            check(&user_session(), &key.label);
            assert!(
                listed_by_a_new_process(&[]).contains(&key.label),
                "{bits} bits: a new process lists the key"
            );
        }
        // Made through the module, from its PKCS#8 (the keyctl copy gone:
        // the module refuses a key already in the token).
        let label = format!("kp11-test-created-{bits}-{}", std::process::id());
        let h = raw_rw_session("user");
        assert_eq!(
            import_pkcs8(h, &label, &der, None),
            CKR_OK,
            "C_CreateObject of a {bits}-bit key"
        );
        let serial = keyctl::search(keyctl::KEY_SPEC_USER_KEYRING, "asymmetric", &label)
            .expect("the created key is in @u");
        let _unlink = Unlink(serial);
        check(&user_session(), &label);
    }
}

/// Unlinks a key from `@u` when dropped.
struct Unlink(keyctl::Serial);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = keyctl::unlink(self.0, keyctl::KEY_SPEC_USER_KEYRING);
    }
}

/// `C_GenerateKeyPair` of a 2048-bit key with exponent `e`.
fn generate(h: CK_SESSION_HANDLE, label: &str, e: u64) -> CK_RV {
    let bits = (2048 as CK_ULONG).to_ne_bytes();
    let e = BigUint::from(e).to_bytes_be();
    let mut pubt = [
        attr(CKA_MODULUS_BITS, &bits),
        attr(CKA_PUBLIC_EXPONENT, &e),
        attr(CKA_LABEL, label.as_bytes()),
    ];
    let mut privt = [
        attr(CKA_TOKEN, &[CK_TRUE]),
        attr(CKA_LABEL, label.as_bytes()),
    ];
    let mut m = CK_MECHANISM {
        mechanism: CKM_RSA_PKCS_KEY_PAIR_GEN,
        pParameter: std::ptr::null_mut(),
        ulParameterLen: 0,
    };
    let (mut pu, mut pr) = (0, 0);
    unsafe {
        raw().C_GenerateKeyPair.unwrap()(
            h,
            &mut m,
            pubt.as_mut_ptr(),
            pubt.len() as CK_ULONG,
            privt.as_mut_ptr(),
            privt.len() as CK_ULONG,
            &mut pu,
            &mut pr,
        )
    }
}

fn generated_keys_are_listed_from_their_records() {
    let h = raw_rw_session("user");
    let s = user_session();
    let mut made = Vec::new();
    for e in [17u64, 19] {
        let label = format!("kp11-test-gen-e{e}-{}", std::process::id());
        let rv = generate(h, &label, e);
        assert_eq!(rv, CKR_OK, "C_GenerateKeyPair with e = {e}");
        let serial = keyctl::search(keyctl::KEY_SPEC_USER_KEYRING, "asymmetric", &label)
            .expect("the generated key is in @u");
        made.push(Unlink(serial));
        // Here: listed with its exponent, and it signs what it verifies.
        let public = find_one(&s, &label, ObjectClass::PUBLIC_KEY);
        for o in [public, find_one(&s, &label, ObjectClass::PRIVATE_KEY)] {
            assert_eq!(
                attr_bytes(&s, o, AttributeType::PublicExponent),
                BigUint::from(e).to_bytes_be()
            );
        }
        let n = attr_bytes(&s, public, AttributeType::Modulus);
        let pk = RsaPublicKey::new(BigUint::from_bytes_be(&n), BigUint::from(e)).unwrap();
        let private = find_one(&s, &label, ObjectClass::PRIVATE_KEY);
        let sig = s.sign(&Mechanism::Sha256RsaPkcs, private, b"gen").unwrap();
        pk.verify(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(b"gen"), &sig)
            .unwrap();
        s.verify(&Mechanism::Sha256RsaPkcs, public, b"gen", &sig)
            .unwrap();
        // 19 is not among the exponents recovery tries: a new process knows
        // it only from the record.
        let there = listed_by_a_new_process(&[]);
        assert!(
            there.contains(&label),
            "e = {e}: a new process does not list it: {there:?}"
        );
    }
    // An exponent beyond 32 bits is refused at generation.
    let label = format!("kp11-test-gen-large-{}", std::process::id());
    assert_eq!(
        generate(h, &label, LARGE_E),
        CKR_ATTRIBUTE_VALUE_INVALID,
        "C_GenerateKeyPair with e = 2^32 + 15"
    );
}
