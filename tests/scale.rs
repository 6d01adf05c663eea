//! A token of thousands of keys (issue 13): searches by label and by
//! `CKA_ID` return exactly the right key, it signs, and a key another process
//! adds or removes shows at the next search. The keys are 512-bit (the
//! kernel takes them outside FIPS mode) so that thousands are made in
//! seconds; what is measured elsewhere (softhsm-compare) does not depend on
//! their size here. Needs a kernel that holds PKCS#8 keys: run by `lab/test`.

mod common;

use common::*;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use keyring_pkcs11::kernel::keyctl;
use rsa::pkcs8::EncodePrivateKey;
use rsa::traits::PublicKeyParts;
use sha1::Digest;
use std::process::Command;
use std::time::Instant;

/// How many keys: at least 2000 (KP11_SCALE_KEYS to change it).
fn count() -> usize {
    std::env::var("KP11_SCALE_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// CKA_ID as the module derives it: SHA-1 of the RSAPublicKey.
fn derived_id(k: &rsa::RsaPublicKey) -> Vec<u8> {
    use rsa::pkcs1::EncodeRsaPublicKey;
    sha1::Sha1::digest(k.to_pkcs1_der().unwrap().as_bytes()).to_vec()
}

#[test]
#[ignore = "needs a kernel that holds PKCS#8 private keys: run lab/test"]
fn thousands_of_keys_in_a_named_token() {
    let n = count();
    // A keyring of its own, as a token: nothing else in it, and it goes
    // with the test.
    let name = format!("kp11-scale-{}", std::process::id());
    let ring = keyctl::add_key("keyring", &name, &[], keyctl::KEY_SPEC_USER_KEYRING).unwrap();
    struct Drop_(keyctl::Serial);
    impl Drop for Drop_ {
        fn drop(&mut self) {
            let _ = keyctl::unlink(self.0, keyctl::KEY_SPEC_USER_KEYRING);
        }
    }
    let _ring = Drop_(ring);
    let start = Instant::now();
    let mut rng = rsa::rand_core::OsRng;
    let mut publics = Vec::with_capacity(n);
    for i in 0..n {
        let sk = rsa::RsaPrivateKey::new(&mut rng, 512).unwrap();
        let der = sk.to_pkcs8_der().unwrap();
        keyctl::add_key("asymmetric", &format!("k{i:05}"), der.as_bytes(), ring).unwrap();
        publics.push(sk.to_public_key());
    }
    println!("{n} keys made and loaded in {:?}", start.elapsed());
    // SAFETY: set before the module reads its configuration (the first
    // ctx() of this test binary, which holds this test alone).
    unsafe { std::env::set_var("KEYRING_PKCS11_KEYRINGS", &name) };
    let s = ctx().open_ro_session(slot_labelled(&name)).unwrap();

    // By label: exactly that key, and it signs.
    for i in [0, n / 2, n - 1] {
        let found = s
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(format!("k{i:05}").into_bytes()),
            ])
            .unwrap();
        assert_eq!(found.len(), 1, "k{i:05}");
        let modulus = attr_bytes(&s, found[0], AttributeType::Modulus);
        assert_eq!(modulus, publics[i].n().to_bytes_be(), "k{i:05}");
        let sig = s
            .sign(&Mechanism::Sha256RsaPkcs, found[0], b"scale")
            .unwrap();
        assert!(verifies(&publics[i], b"scale", &sig), "k{i:05} signs");
    }
    // By CKA_ID: the first search learns every key's ID.
    let t = Instant::now();
    for i in [1, n / 3, n - 2] {
        let found = s
            .find_objects(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Id(derived_id(&publics[i])),
            ])
            .unwrap();
        assert_eq!(found.len(), 1, "by id, key {i}");
        assert_eq!(
            attr_bytes(&s, found[0], AttributeType::Label),
            format!("k{i:05}").into_bytes()
        );
    }
    println!("first searches by CKA_ID: {:?}", t.elapsed());
    let all = s
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
        .unwrap();
    assert_eq!(all.len(), n);

    // Another process adds a key and removes one: seen at the next search.
    let late = rsa::RsaPrivateKey::new(&mut rng, 512).unwrap();
    let der_path = std::env::temp_dir().join(format!("kp11-scale-{}.der", std::process::id()));
    std::fs::write(&der_path, late.to_pkcs8_der().unwrap().as_bytes()).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "keyctl padd asymmetric late {ring} < {} && keyctl unlink $(keyctl search {ring} asymmetric k00007) {ring}",
            der_path.display()
        ))
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&der_path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let by_label = |l: &str| {
        s.find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(l.as_bytes().to_vec()),
        ])
        .unwrap()
    };
    assert_eq!(by_label("late").len(), 1);
    assert!(by_label("k00007").is_empty());
    let late_id = derived_id(&late.to_public_key());
    let by_id = s.find_objects(&[Attribute::Id(late_id)]).unwrap();
    assert_eq!(by_id.len(), 2, "the new key's private and public objects");
    assert!(
        s.find_objects(&[Attribute::Id(derived_id(&publics[7]))])
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
            .unwrap()
            .len(),
        n
    );
}

#[test]
#[ignore = "needs a kernel that holds PKCS#8 private keys: run lab/test"]
fn a_forged_record_does_not_change_a_keys_public_key() {
    let label = format!("kp11-forged-{}", std::process::id());
    let k = KernelKey::load(2048, &label);
    let real = k.public.n().to_bytes_be();
    // Two records a writer of the keyring could plant, both caching the
    // key's label and another 2048-bit key's public key (e = 17): one named
    // after the key's real ID, one named after the other key's, as the
    // module would name a record of that key.
    let other = public_of(&key_file("rsa2048-e17.pk8.der"));
    let record = format!(
        "keyring-pkcs11 1\nlabel={}\nn={}\ne=11\n",
        hex(k.label.as_bytes()),
        hex(&other.n().to_bytes_be())
    );
    let mut planted = Vec::new();
    for id in [derived_id(&k.public), derived_id(&other)] {
        planted.push(
            keyctl::add_key(
                "user",
                &format!("keyring-pkcs11:{}", hex(&id)),
                record.as_bytes(),
                keyctl::KEY_SPEC_USER_KEYRING,
            )
            .unwrap(),
        );
    }
    // Another process lists the token: the module's log names both.
    let out = Command::new("p11tool")
        .args([
            "--provider",
            &module_path().display().to_string(),
            "--list-all",
            "pkcs11:token=user",
        ])
        .env("KEYRING_PKCS11_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "p11tool --list-all: {out:?}");
    let log = String::from_utf8_lossy(&out.stderr);
    for why in [
        "caches a public key its name does not match",
        "the public key its record caches is not the kernel key's",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("(\"{}\")", k.label)) && l.contains(why)),
            "the log does not say of {label} that {why}:\n{log}"
        );
    }
    let s = user_session();
    // A full listing, which reads the records first, and a search by label.
    for template in [
        vec![Attribute::Class(ObjectClass::PUBLIC_KEY)],
        vec![
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Label(k.label.clone().into_bytes()),
        ],
    ] {
        let found = s.find_objects(&template).unwrap();
        let mine: Vec<_> = found
            .into_iter()
            .filter(|o| attr_bytes(&s, *o, AttributeType::Label) == k.label.as_bytes())
            .collect();
        assert_eq!(mine.len(), 1);
        assert_eq!(attr_bytes(&s, mine[0], AttributeType::Modulus), real);
        assert_eq!(
            attr_bytes(&s, mine[0], AttributeType::PublicExponent),
            vec![1, 0, 1]
        );
    }
    for serial in planted {
        keyctl::unlink(serial, keyctl::KEY_SPEC_USER_KEYRING).unwrap();
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
