//! A token of thousands of keys (issue 13): searches by label and by
//! `CKA_ID` return exactly the right key, it signs, and a key another process
//! adds or removes shows at the next search. The keys are 512-bit (the
//! kernel takes them outside FIPS mode) so that thousands are made in
//! seconds; what is measured elsewhere (softhsm-compare) does not depend on
//! their size here. Each test runs in a process of its own: the named token
//! must be configured before the module's first `C_Initialize` in its
//! process, which another test's session would otherwise do first (seen:
//! "no token labelled kp11-scale-N" when both shared libtest's process).
//! Needs a kernel that holds PKCS#8 keys: run by `lab/test`.

mod common;

use common::harness::{self, KERNEL, Test};
use common::*;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use keyring_pkcs11::kernel::keyctl;
use rsa::pkcs8::EncodePrivateKey;
use rsa::traits::PublicKeyParts;
use sha1::Digest;
use std::process::Command;
use std::time::{Duration, Instant};

fn main() {
    harness::main(&[
        Test {
            name: "thousands_of_keys_in_a_named_token",
            ignore: KERNEL,
            timeout: Duration::from_secs(900),
            run: thousands_of_keys_in_a_named_token,
        },
        Test {
            name: "a_forged_record_does_not_change_a_keys_public_key",
            ignore: KERNEL,
            timeout: Duration::from_secs(300),
            run: a_forged_record_does_not_change_a_keys_public_key,
        },
    ]);
}

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

    // What `ssh -I` and p11tool do, by a real client in fresh processes: list
    // every public key, then read each one's attributes. The module learns
    // each key read together with the keys after it, on every CPU of the
    // guest; with one thread, one by one. Both must give every key its own
    // public key: CKA_ID is derived from it.
    let want: std::collections::HashMap<String, String> = publics
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("k{i:05}"), hex(&derived_id(p))))
        .collect();
    for threads in [None, Some("1")] {
        let t = Instant::now();
        let mut cmd = Command::new("pkcs11-tool");
        cmd.arg("--module")
            .arg(module_path())
            .args(["--token-label", &name, "--list-objects", "--type", "pubkey"])
            .env("KEYRING_PKCS11_KEYRINGS", &name);
        if let Some(v) = threads {
            cmd.env("KEYRING_PKCS11_THREADS", v);
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "pkcs11-tool --list-objects: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut got = std::collections::HashMap::new();
        let mut label = None;
        for line in text.lines().map(str::trim) {
            if let Some(l) = line.strip_prefix("label:") {
                label = Some(l.trim().to_string());
            } else if let Some(id) = line.strip_prefix("ID:") {
                let l = label.take().expect("a label before each ID");
                assert!(got.insert(l, id.trim().to_string()).is_none());
            }
        }
        assert_eq!(got.len(), n, "threads {threads:?}: every key, once");
        for (l, id) in &want {
            assert_eq!(got.get(l), Some(id), "threads {threads:?}: {l}");
        }
        println!(
            "pkcs11-tool, every public key listed (threads {threads:?}): {:?}",
            t.elapsed()
        );
    }
    // SAFETY: set before the module reads its configuration (the first
    // ctx() of this process, which runs this test alone) and while no other
    // thread runs.
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
    // Later searches of keys by CKA_ID check the keys found last instead of
    // reading every link while the keyring holds as many; another process's
    // change of a key's CKA_ID shows at the next one: a record added (one
    // link more), then that record replaced (as many links).
    let keys_by_id = |id: &[u8]| {
        s.find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Id(id.to_vec()),
        ])
        .unwrap()
    };
    let id1 = derived_id(&publics[1]);
    assert_eq!(keys_by_id(&id1).len(), 1);
    let set_id = |old: &[u8], new: &[u8]| {
        let out = Command::new("pkcs11-tool")
            .arg("--module")
            .arg(module_path())
            .args(["--token-label", &name, "--type", "privkey"])
            .args(["--id", &hex(old), "--set-id", &hex(new)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pkcs11-tool --set-id: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    set_id(&id1, &[0x77]);
    assert!(keys_by_id(&id1).is_empty(), "k00001 has another ID now");
    let found = keys_by_id(&[0x77]);
    assert_eq!(found.len(), 1);
    assert_eq!(attr_bytes(&s, found[0], AttributeType::Label), b"k00001");
    let before = keyctl::keyring_link_count(ring).unwrap();
    set_id(&[0x77], &[0x78]);
    assert_eq!(
        keyctl::keyring_link_count(ring).unwrap(),
        before,
        "a record replaced"
    );
    assert!(
        keys_by_id(&[0x77]).is_empty(),
        "the replaced record is read"
    );
    assert_eq!(keys_by_id(&[0x78]).len(), 1);
    set_id(&[0x78], &id1);
    assert_eq!(keys_by_id(&id1).len(), 1);
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
    // As many links as before: the key found last by this ID is gone, and
    // an ID no key had is a full look.
    assert_eq!(keyctl::keyring_link_count(ring).unwrap(), before);
    assert!(keys_by_id(&derived_id(&publics[7])).is_empty());
    let late_id = derived_id(&late.to_public_key());
    assert_eq!(keys_by_id(&late_id).len(), 1);
    let by_label = |l: &str| {
        s.find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(l.as_bytes().to_vec()),
        ])
        .unwrap()
    };
    assert_eq!(by_label("late").len(), 1);
    assert!(by_label("k00007").is_empty());
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

fn a_forged_record_does_not_change_a_keys_public_key() {
    let label = format!("kp11-forged-{}", std::process::id());
    let k = KernelKey::load(2048, &label);
    let real = k.public.n().to_bytes_be();
    // Two records with its label claiming another 2048-bit modulus, as a
    // writer of the keyring could plant them: one named after the key's
    // real ID (it contradicts its own name), one named after the forged
    // key's ID (consistent in itself: only the kernel can tell it wrong).
    let other = public_of(&key_der(3072));
    let mut n = other.n().to_bytes_be()[..256].to_vec();
    n[255] |= 1; // an RSA modulus is odd
    let forged = rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(&n),
        rsa::BigUint::from(65537u32),
    )
    .unwrap();
    let record = format!(
        "keyring-pkcs11 1\nlabel={}\nn={}\ne=010001\n",
        hex(k.label.as_bytes()),
        hex(&forged.n().to_bytes_be())
    );
    let planted: Vec<_> = [derived_id(&k.public), derived_id(&forged)]
        .iter()
        .map(|id| {
            keyctl::add_key(
                "user",
                &format!("keyring-pkcs11:{}", hex(id)),
                record.as_bytes(),
                keyctl::KEY_SPEC_USER_KEYRING,
            )
            .unwrap()
        })
        .collect();
    // Another process lists the token: the module's log names both
    // forgeries. (Seen to fail: without the warning for a record whose
    // public key is not its name's, the first message is missing.)
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
    let log = String::from_utf8_lossy(&out.stderr);
    for (serial, said) in [
        (
            planted[0],
            "the public key it caches is not the one its name's CKA_ID is derived from",
        ),
        (
            0,
            "the public key its record caches is not the kernel key's",
        ),
    ] {
        let named = format!("(\"{}\"): {said}", k.label);
        assert!(
            log.lines()
                .any(|l| l.contains(&named)
                    && (serial == 0 || l.contains(&format!("record {serial} ")))),
            "the log does not name the forged record ({said}):\n{log}"
        );
    }
    let s = user_session();
    // A full listing, which reads the record first, and a search by label.
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
    }
    for r in planted {
        keyctl::unlink(r, keyctl::KEY_SPEC_USER_KEYRING).unwrap();
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
