//! Shared pieces of the integration tests: the built module, loaded through
//! the `cryptoki` crate (a real PKCS#11 client) and, for what `cryptoki`
//! cannot express (NULL pointers, raw two-call sequences), through its raw
//! function list. Tests that need a kernel able to hold private keys are
//! `#[ignore]`d on ordinary hosts and run by `lab/test` inside the lab.
#![allow(dead_code)]

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use keyring_pkcs11::keyctl;
use std::path::PathBuf;
use std::sync::OnceLock;

pub mod harness;
pub mod p11;

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

/// The raw 2.40 function list of the same loaded module, initialised by
/// [`ctx`].
pub fn raw() -> &'static cryptoki_sys::CK_FUNCTION_LIST {
    ctx();
    functions()
}

/// The module's 2.40 function list, loaded but not initialised: for tests
/// that drive `C_Initialize`/`C_Finalize` themselves (the `Pkcs11` of [`ctx`]
/// finalises when dropped and initialises once per process).
pub fn functions() -> &'static cryptoki_sys::CK_FUNCTION_LIST {
    static LIST: OnceLock<usize> = OnceLock::new();
    let addr = *LIST.get_or_init(|| unsafe {
        let lib = Box::leak(Box::new(
            cryptoki_sys::Pkcs11::new(module_path()).expect("dlopen"),
        ));
        let mut list: *mut cryptoki_sys::CK_FUNCTION_LIST = std::ptr::null_mut();
        assert_eq!(lib.C_GetFunctionList(&mut list), cryptoki_sys::CKR_OK);
        list as usize
    });
    unsafe { &*(addr as *const cryptoki_sys::CK_FUNCTION_LIST) }
}

/// The name of a return value, for messages.
pub fn rv_name(rv: cryptoki_sys::CK_RV) -> String {
    use cryptoki_sys::*;
    let n = match rv {
        CKR_OK => "CKR_OK",
        CKR_GENERAL_ERROR => "CKR_GENERAL_ERROR",
        CKR_ARGUMENTS_BAD => "CKR_ARGUMENTS_BAD",
        CKR_DEVICE_ERROR => "CKR_DEVICE_ERROR",
        CKR_CRYPTOKI_NOT_INITIALIZED => "CKR_CRYPTOKI_NOT_INITIALIZED",
        CKR_CRYPTOKI_ALREADY_INITIALIZED => "CKR_CRYPTOKI_ALREADY_INITIALIZED",
        CKR_SESSION_HANDLE_INVALID => "CKR_SESSION_HANDLE_INVALID",
        CKR_SESSION_CLOSED => "CKR_SESSION_CLOSED",
        CKR_OPERATION_NOT_INITIALIZED => "CKR_OPERATION_NOT_INITIALIZED",
        CKR_OPERATION_ACTIVE => "CKR_OPERATION_ACTIVE",
        CKR_KEY_HANDLE_INVALID => "CKR_KEY_HANDLE_INVALID",
        CKR_OBJECT_HANDLE_INVALID => "CKR_OBJECT_HANDLE_INVALID",
        CKR_TOKEN_NOT_PRESENT => "CKR_TOKEN_NOT_PRESENT",
        CKR_SLOT_ID_INVALID => "CKR_SLOT_ID_INVALID",
        CKR_BUFFER_TOO_SMALL => "CKR_BUFFER_TOO_SMALL",
        _ => return format!("{rv:#x}"),
    };
    n.to_string()
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
/// raw function list.
pub fn raw_rw_session(label: &str) -> cryptoki_sys::CK_SESSION_HANDLE {
    use cryptoki_sys::*;
    let mut h = 0;
    let slot = slot_labelled(label).id();
    let rv = unsafe {
        raw().C_OpenSession.unwrap()(
            slot,
            CKF_SERIAL_SESSION | CKF_RW_SESSION,
            std::ptr::null_mut(),
            None,
            &mut h,
        )
    };
    assert_eq!(rv, CKR_OK);
    h
}

/// A template entry pointing at `v`, which must outlive its use.
pub fn attr(t: cryptoki_sys::CK_ATTRIBUTE_TYPE, v: &[u8]) -> cryptoki_sys::CK_ATTRIBUTE {
    cryptoki_sys::CK_ATTRIBUTE {
        type_: t,
        pValue: v.as_ptr() as *mut _,
        ulValueLen: v.len() as cryptoki_sys::CK_ULONG,
    }
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
    let class = CKO_PRIVATE_KEY.to_ne_bytes();
    let kt = CKK_RSA.to_ne_bytes();
    let mut t = vec![
        attr(CKA_CLASS, &class),
        attr(CKA_KEY_TYPE, &kt),
        attr(CKA_LABEL, label.as_bytes()),
        attr(CKA_VALUE, der),
    ];
    if let Some(id) = id {
        t.push(attr(CKA_ID, id));
    }
    let mut o = 0;
    unsafe { raw().C_CreateObject.unwrap()(h, t.as_mut_ptr(), t.len() as CK_ULONG, &mut o) }
}

/// `C_GenerateKeyPair` of a 2048-bit RSA key.
pub fn generate_rsa(h: cryptoki_sys::CK_SESSION_HANDLE, label: &str) -> cryptoki_sys::CK_RV {
    use cryptoki_sys::*;
    let bits = (2048 as CK_ULONG).to_ne_bytes();
    let mut pubt = [
        attr(CKA_MODULUS_BITS, &bits),
        attr(CKA_LABEL, label.as_bytes()),
    ];
    let mut privt = [attr(CKA_LABEL, label.as_bytes())];
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

/// A helper (`common::harness::Helper`, registered as `list-user` by the
/// binaries that use [`listed_by_a_new_process`]): prints `LISTED <label>`
/// for each private key of the user token.
pub fn list_user() {
    let s = user_session();
    for o in s
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
        .unwrap()
    {
        let label = attr_bytes(&s, o, AttributeType::Label);
        println!("LISTED {}", String::from_utf8_lossy(&label));
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
