//! Keyrings come and go while a module runs, and a token follows its
//! keyring: a named keyring recreated, a session keyring the process
//! replaces, a persistent keyring that would expire. Each test runs in a
//! process of its own (the module's configuration and keyrings are per
//! process); all need a kernel that holds private keys: run by `lab/test`.

mod common;

use common::harness::{self, KERNEL, Test};
use common::*;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::Session;
use keyring_pkcs11::kernel::keyctl;
use std::time::{Duration, Instant};

fn main() {
    harness::main(&[
        Test {
            name: "a_named_keyring_recreated_is_found_again",
            ignore: KERNEL,
            timeout: Duration::from_secs(120),
            run: a_named_keyring_recreated_is_found_again,
        },
        Test {
            name: "a_session_keyring_the_process_joins_is_followed",
            ignore: KERNEL,
            timeout: Duration::from_secs(120),
            run: a_session_keyring_the_process_joins_is_followed,
        },
        Test {
            name: "the_persistent_keyring_is_renewed_while_used",
            ignore: KERNEL,
            timeout: Duration::from_secs(180),
            run: the_persistent_keyring_is_renewed_while_used,
        },
    ]);
}

fn labels(s: &Session) -> Vec<String> {
    let found = s
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
        .expect("C_FindObjects: a token whose keyring changed must not be an error");
    found
        .into_iter()
        .map(|o| {
            String::from_utf8(attr_bytes(s, o, cryptoki::object::AttributeType::Label)).unwrap()
        })
        .collect()
}

fn signs(s: &Session, label: &str) -> bool {
    let Ok(found) = s.find_objects(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Label(label.as_bytes().to_vec()),
    ]) else {
        return false;
    };
    found
        .first()
        .is_some_and(|k| s.sign(&Mechanism::Sha256RsaPkcs, *k, b"still here").is_ok())
}

fn a_named_keyring_recreated_is_found_again() {
    let name = format!("kp11-ring-{}", std::process::id());
    // SAFETY: set before anything reads the environment (the first ctx()),
    // in a process of its own.
    unsafe { std::env::set_var("KEYRING_PKCS11_KEYRINGS", &name) };
    let make = |label: &str| {
        let ring = keyctl::add_key("keyring", &name, &[], keyctl::KEY_SPEC_USER_KEYRING).unwrap();
        keyctl::add_key("asymmetric", label, &key_der(2048), ring).unwrap();
        ring
    };
    let first = make("kp11-first");
    let slot = slot_labelled(&name);
    let s = ctx().open_ro_session(slot).unwrap();
    assert_eq!(labels(&s), ["kp11-first"]);
    assert!(signs(&s, "kp11-first"));
    // The keyring goes: the token is absent (not a device error) ...
    keyctl::unlink(first, keyctl::KEY_SPEC_USER_KEYRING).unwrap();
    let present = ctx().get_slots_with_token().unwrap();
    assert!(
        !present.contains(&slot),
        "the token of a removed keyring is absent"
    );
    assert!(ctx().get_slot_info(slot).unwrap().removable_device());
    // ... and a new keyring of that name is the token again, with its keys.
    let second = make("kp11-second");
    assert!(ctx().get_slots_with_token().unwrap().contains(&slot));
    let s = ctx().open_ro_session(slot).unwrap();
    assert_eq!(labels(&s), ["kp11-second"]);
    assert!(signs(&s, "kp11-second"));
    keyctl::unlink(second, keyctl::KEY_SPEC_USER_KEYRING).unwrap();
}

fn a_session_keyring_the_process_joins_is_followed() {
    let label = format!("kp11-joined-{}", std::process::id());
    let s = ctx().open_ro_session(slot_labelled("session")).unwrap();
    assert!(!labels(&s).contains(&label));
    // What a daemon does after the module was loaded (keyring-pkcs11 exec,
    // pam_keyinit, `keyctl session`): a new session keyring.
    keyctl::join_new_session_keyring().unwrap();
    keyctl::add_key(
        "asymmetric",
        &label,
        &key_der(2048),
        keyctl::KEY_SPEC_SESSION_KEYRING,
    )
    .unwrap();
    assert_eq!(labels(&s), std::slice::from_ref(&label));
    assert!(signs(&s, &label));
}

const EXPIRY: &str = "/proc/sys/kernel/keys/persistent_keyring_expiry";
/// How long the kernel keeps an expired key before collecting it (300 s).
const GC_DELAY: &str = "/proc/sys/kernel/keys/gc_delay";

/// Sets a sysctl for the length of a test, restoring it even on panic.
struct Sysctl(&'static str, String);

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Sysctl {
        let saved = std::fs::read_to_string(path).unwrap();
        std::fs::write(path, value).unwrap();
        Sysctl(path, saved)
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0, &self.1);
    }
}

fn the_persistent_keyring_is_renewed_while_used() {
    let _expiry = Sysctl::set(EXPIRY, "3");
    let _gc = Sysctl::set(GC_DELAY, "1");
    let label = format!("kp11-persist-{}", std::process::id());
    let slot = slot_labelled("persistent");
    let s = ctx().open_rw_session(slot).unwrap();
    // Drop an earlier test run's persistent keyring: start fresh.
    let ring = keyctl::persistent_keyring(keyctl::KEY_SPEC_PROCESS_KEYRING).unwrap();
    keyctl::add_key("asymmetric", &label, &key_der(2048), ring).unwrap();
    // Used every second for three times its expiry: it stays.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(9) {
        assert!(
            signs(&s, &label),
            "the key went while in use after {:?}",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(800));
    }
    // Unused past its expiry it goes (the kernel collects it gc_delay
    // later), as the kernel intends; the token is then the fresh persistent
    // keyring the kernel makes, not an error.
    std::thread::sleep(Duration::from_secs(8));
    let deadline = Instant::now() + Duration::from_secs(30);
    while labels(&s).contains(&label) {
        assert!(
            Instant::now() < deadline,
            "the unused persistent keyring never expired"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(ctx().get_slots_with_token().unwrap().contains(&slot));
}
