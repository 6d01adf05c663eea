//! Shared pieces of the integration tests: the built module, loaded through
//! the `cryptoki` crate (a real PKCS#11 client) and, for what `cryptoki`
//! cannot express (NULL pointers, raw two-call sequences, exact return
//! values), through the raw client of `keyring-pkcs11-testkit`. Tests that
//! need a kernel able to hold private keys are `#[ignore]`d on ordinary hosts
//! and run by `lab/test` inside the lab.
#![allow(dead_code)]

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use keyring_pkcs11::kernel::keyctl;
use keyring_pkcs11_testkit::{Client, Mechanism, Module, Rv, Template};
use std::path::PathBuf;
use std::sync::OnceLock;

pub mod harness;

/// The cdylib under test: `KEYRING_PKCS11_MODULE`, or the debug build.
pub fn module_path() -> PathBuf {
    if let Some(p) = std::env::var_os("KEYRING_PKCS11_MODULE") {
        return PathBuf::from(p);
    }
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let p = dir.join("debug").join("libkeyring_pkcs11.so");
    assert!(
        p.exists(),
        "{} not built: run `cargo build` first (lab/test does)",
        p.display()
    );
    p
}

/// One initialised context per test process: PKCS#11 state is per process.
pub fn ctx() -> &'static Pkcs11 {
    static CTX: OnceLock<Pkcs11> = OnceLock::new();
    CTX.get_or_init(|| {
        let p = Pkcs11::new(module_path()).expect("load module");
        p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .expect("C_Initialize");
        p
    })
}

/// The module loaded once more (the same handle as [`ctx`]'s) through the
/// raw client, for what `cryptoki` cannot express.
fn module() -> &'static Module {
    static MODULE: OnceLock<Module> = OnceLock::new();
    MODULE.get_or_init(|| Module::load(module_path()).expect("load module"))
}

/// A raw client of the module, not initialised: for tests that drive
/// `C_Initialize`/`C_Finalize` themselves (the `Pkcs11` of [`ctx`]
/// finalises when dropped and initialises once per process).
pub fn client() -> Client<'static> {
    module().client()
}

/// The slot of the token with this label, through the raw client.
pub fn slot_of(p: Client, label: &str) -> Result<cryptoki_sys::CK_SLOT_ID, String> {
    match p.token(label) {
        Ok(Some(t)) => Ok(t.slot),
        Ok(None) => Err(format!("no token labelled {label:?}")),
        Err(f) => Err(f.to_string()),
    }
}

/// The mechanism of the raw clients' signatures.
pub const SHA256_RSA_PKCS: Mechanism = Mechanism::new(cryptoki_sys::CKM_SHA256_RSA_PKCS);

/// The module's 2.40 function list, not initialised.
pub fn functions() -> &'static cryptoki_sys::CK_FUNCTION_LIST {
    module().functions()
}

/// The same function list, initialised by [`ctx`].
pub fn raw() -> &'static cryptoki_sys::CK_FUNCTION_LIST {
    ctx();
    functions()
}

pub fn slot_labelled(label: &str) -> Slot {
    let c = ctx();
    c.get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| c.get_token_info(*s).unwrap().label() == label)
        .unwrap_or_else(|| panic!("no token labelled {label:?}"))
}

pub fn user_session() -> Session {
    ctx().open_rw_session(slot_labelled("user")).unwrap()
}

/// Test keys made by `lab/test` with openssl on the host (key generation in
/// an emulated guest would take minutes): `rsa<bits>.pk8.der` (unencrypted
/// PKCS#8, what `keyctl padd asymmetric` takes).
pub fn key_der(bits: usize) -> Vec<u8> {
    key_file(&format!("rsa{bits}.pk8.der"))
}

/// A file of the test key directory (`lab/test` also makes 2048-bit keys
/// with other public exponents: `rsa2048-e<E>.pk8.der`).
pub fn key_file(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("KEYRING_PKCS11_TEST_KEYS")
        .expect("KEYRING_PKCS11_TEST_KEYS must name the directory of test keys (lab/test sets it)");
    let p = PathBuf::from(dir).join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn public_of(der: &[u8]) -> rsa::RsaPublicKey {
    use rsa::pkcs8::DecodePrivateKey;
    rsa::RsaPrivateKey::from_pkcs8_der(der)
        .expect("PKCS#8 RSA key")
        .to_public_key()
}

/// Whether `sig` is a valid `CKM_SHA256_RSA_PKCS` signature of `data`.
pub fn verifies(public: &rsa::RsaPublicKey, data: &[u8], sig: &[u8]) -> bool {
    use sha2::Digest;
    public
        .verify(
            rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
            &sha2::Sha256::digest(data),
            sig,
        )
        .is_ok()
}

/// A key loaded into the user keyring for one test; unlinked when dropped so
/// a native run leaves the user's keyring as it found it.
pub struct KernelKey {
    pub serial: keyctl::Serial,
    pub label: String,
    pub public: rsa::RsaPublicKey,
}

impl KernelKey {
    pub fn load(bits: usize, tag: &str) -> KernelKey {
        KernelKey::load_der(&key_der(bits), &format!("{tag}-{bits}"))
    }

    /// `keyctl padd asymmetric` of this PKCS#8 key into `@u`.
    pub fn load_der(der: &[u8], tag: &str) -> KernelKey {
        let label = format!("kp11-test-{tag}-{}", std::process::id());
        let serial = keyctl::add_key("asymmetric", &label, der, keyctl::KEY_SPEC_USER_KEYRING).unwrap_or_else(|e| {
            panic!("add_key(asymmetric) failed: {e}; this kernel cannot hold PKCS#8 keys (modprobe pkcs8_key_parser, or run inside lab/run)")
        });
        KernelKey {
            serial,
            label,
            public: public_of(der),
        }
    }

    pub fn find(&self, s: &Session, class: ObjectClass) -> ObjectHandle {
        let found = s
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Label(self.label.clone().into_bytes()),
            ])
            .unwrap();
        assert_eq!(
            found.len(),
            1,
            "exactly one {class:?} labelled {}",
            self.label
        );
        found[0]
    }
}

impl Drop for KernelKey {
    fn drop(&mut self) {
        let _ = keyctl::unlink(self.serial, keyctl::KEY_SPEC_USER_KEYRING);
    }
}

pub fn attr_bytes(s: &Session, o: ObjectHandle, t: AttributeType) -> Vec<u8> {
    match s.get_attributes(o, &[t]).unwrap().pop() {
        Some(Attribute::Modulus(v))
        | Some(Attribute::PublicExponent(v))
        | Some(Attribute::Id(v))
        | Some(Attribute::Label(v)) => v,
        other => panic!("unexpected {other:?}"),
    }
}

/// A read-write session on the token with this label, opened through the
/// raw client (initialised by [`ctx`]).
pub fn raw_rw_session(label: &str) -> cryptoki_sys::CK_SESSION_HANDLE {
    let slot = slot_labelled(label).id();
    client().open(slot).unwrap()
}

/// Imports a key as PKCS#8 (`CKA_VALUE`), optionally with a `CKA_ID`
/// (which makes the module store a metadata record beside the key).
pub fn import_pkcs8(
    h: cryptoki_sys::CK_SESSION_HANDLE,
    label: &str,
    der: &[u8],
    id: Option<&[u8]>,
) -> cryptoki_sys::CK_RV {
    use cryptoki_sys::*;
    let mut t = Template::new()
        .ulong(CKA_CLASS, CKO_PRIVATE_KEY)
        .ulong(CKA_KEY_TYPE, CKK_RSA)
        .bytes(CKA_TOKEN, &[CK_TRUE])
        .bytes(CKA_LABEL, label.as_bytes())
        .bytes(CKA_VALUE, der);
    if let Some(id) = id {
        t = t.bytes(CKA_ID, id);
    }
    client().create_object(h, &mut t).rv()
}

/// `C_GenerateKeyPair` of a 2048-bit RSA key.
pub fn generate_rsa(h: cryptoki_sys::CK_SESSION_HANDLE, label: &str) -> cryptoki_sys::CK_RV {
    use cryptoki_sys::*;
    let mut public = Template::new()
        .ulong(CKA_MODULUS_BITS, 2048)
        .bytes(CKA_LABEL, label.as_bytes());
    let mut private = Template::new()
        .bytes(CKA_TOKEN, &[CK_TRUE])
        .bytes(CKA_LABEL, label.as_bytes());
    client()
        .generate_key_pair(
            h,
            &Mechanism::new(CKM_RSA_PKCS_KEY_PAIR_GEN),
            &mut public,
            &mut private,
        )
        .rv()
}

/// A helper (`common::harness::Helper`, registered as `list-user` by the
/// binaries that use [`listed_by_a_new_process`]): prints `LISTED <label>`
/// for each private key of the user token.
pub fn list_user() {
    let s = user_session();
    for o in s
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
        .unwrap()
    {
        // A listing by class learns no public key: a key whose public key
        // cannot be learned is in it, and its handle is dead at first use.
        match s.get_attributes(o, &[AttributeType::Label]) {
            Ok(a) => match a.as_slice() {
                [Attribute::Label(l)] => println!("LISTED {}", String::from_utf8_lossy(l)),
                other => panic!("CKA_LABEL read as {other:?}"),
            },
            Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::KeyHandleInvalid, _)) => {
                println!("UNUSABLE {o:?}")
            }
            Err(e) => panic!("CKA_LABEL: {e}"),
        }
    }
}

/// The labels of the user token's private keys as a process that has not
/// seen them before lists them (the `list-user` helper, with `env` added).
pub fn listed_by_a_new_process(env: &[(&str, &str)]) -> Vec<String> {
    let o = harness::helper("list-user")
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        o.status.success() && harness::helper_done("list-user", &o.stdout),
        "helper list-user failed ({})",
        o.status
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("LISTED ").map(str::to_string))
        .collect()
}

/// A raw `CK_ATTRIBUTE` over `value` (which must outlive its use), for the
/// tests that build C templates by hand.
pub fn attr(t: cryptoki_sys::CK_ATTRIBUTE_TYPE, value: &[u8]) -> cryptoki_sys::CK_ATTRIBUTE {
    cryptoki_sys::CK_ATTRIBUTE {
        type_: t,
        pValue: value.as_ptr() as *mut _,
        ulValueLen: value.len() as cryptoki_sys::CK_ULONG,
    }
}
