//! What the harness checks beyond crashes, panics and memory errors
//! (libfuzzer-sys aborts on any panic, so a panic caught by the module's
//! entry macro, `CKR_GENERAL_ERROR`, is reported too):
//! - every return value is a defined `CKR_*`;
//! - without `C_Initialize` (before it: one input in sixteen starts so;
//!   or after `C_Finalize`) every function says
//!   `CKR_CRYPTOKI_NOT_INITIALIZED`;
//! - a length no buffer has (`buffers::HUGE`) never succeeds;
//! - a mechanism that takes no parameter accepts an empty one (NULL or
//!   not, with a length of 0);
//! - a failed `C_CreateObject`, `C_GenerateKeyPair`, `C_SetAttributeValue`
//!   or `C_DestroyObject` leaves every token as it was (no key, metadata
//!   record or certificate added, changed or removed), seen in the mock
//!   kernel's keyrings;
//! - a destroyed object's handle is dead everywhere: no call with it
//!   succeeds in any session, no search returns it;
//! - after a successful `C_SetAttributeValue` every attribute reads back as
//!   set; after a successful creation or generation every attribute of the
//!   template reads back with the value given ([`CHECK_TEMPLATE_READBACK`]).
//!
//! The buffer and length promises are in `buffers`, the operations' in
//! `call` and `scenario`.

use crate::harness::Harness;
use crate::stats;
use crate::template::Attr;
use cryptoki_sys::*;
use keyring_pkcs11::kernel::keyctl::Serial;
use std::collections::BTreeMap;

/// Whether the read-back rule is enforced (PKCS#11 §5.7: a template the
/// module cannot honour exactly must fail). On: the module honours or
/// refuses every attribute; the one exception, `CKA_PRIVATE=TRUE` reading
/// back `CK_FALSE`, is allowed in [`Harness::check_readback`].
pub const CHECK_TEMPLATE_READBACK: bool = true;

const VALID_RV: &[CK_RV] = &[
    CKR_OK,
    CKR_CANCEL,
    CKR_HOST_MEMORY,
    CKR_SLOT_ID_INVALID,
    CKR_FUNCTION_FAILED,
    CKR_ARGUMENTS_BAD,
    CKR_NO_EVENT,
    CKR_NEED_TO_CREATE_THREADS,
    CKR_CANT_LOCK,
    CKR_ATTRIBUTE_READ_ONLY,
    CKR_ATTRIBUTE_SENSITIVE,
    CKR_ATTRIBUTE_TYPE_INVALID,
    CKR_ATTRIBUTE_VALUE_INVALID,
    CKR_ACTION_PROHIBITED,
    CKR_DATA_INVALID,
    CKR_DATA_LEN_RANGE,
    CKR_DEVICE_ERROR,
    CKR_DEVICE_MEMORY,
    CKR_DEVICE_REMOVED,
    CKR_ENCRYPTED_DATA_INVALID,
    CKR_ENCRYPTED_DATA_LEN_RANGE,
    CKR_FUNCTION_CANCELED,
    CKR_FUNCTION_NOT_PARALLEL,
    CKR_FUNCTION_NOT_SUPPORTED,
    CKR_KEY_HANDLE_INVALID,
    CKR_KEY_SIZE_RANGE,
    CKR_KEY_TYPE_INCONSISTENT,
    CKR_KEY_NOT_NEEDED,
    CKR_KEY_CHANGED,
    CKR_KEY_NEEDED,
    CKR_KEY_INDIGESTIBLE,
    CKR_KEY_FUNCTION_NOT_PERMITTED,
    CKR_KEY_NOT_WRAPPABLE,
    CKR_KEY_UNEXTRACTABLE,
    CKR_MECHANISM_INVALID,
    CKR_MECHANISM_PARAM_INVALID,
    CKR_OBJECT_HANDLE_INVALID,
    CKR_OPERATION_ACTIVE,
    CKR_OPERATION_NOT_INITIALIZED,
    CKR_PIN_INCORRECT,
    CKR_PIN_INVALID,
    CKR_PIN_LEN_RANGE,
    CKR_PIN_EXPIRED,
    CKR_PIN_LOCKED,
    CKR_SESSION_CLOSED,
    CKR_SESSION_COUNT,
    CKR_SESSION_HANDLE_INVALID,
    CKR_SESSION_PARALLEL_NOT_SUPPORTED,
    CKR_SESSION_READ_ONLY,
    CKR_SESSION_EXISTS,
    CKR_SESSION_READ_ONLY_EXISTS,
    CKR_SESSION_READ_WRITE_SO_EXISTS,
    CKR_SIGNATURE_INVALID,
    CKR_SIGNATURE_LEN_RANGE,
    CKR_TEMPLATE_INCOMPLETE,
    CKR_TEMPLATE_INCONSISTENT,
    CKR_TOKEN_NOT_PRESENT,
    CKR_TOKEN_NOT_RECOGNIZED,
    CKR_TOKEN_WRITE_PROTECTED,
    CKR_USER_ALREADY_LOGGED_IN,
    CKR_USER_NOT_LOGGED_IN,
    CKR_USER_PIN_NOT_INITIALIZED,
    CKR_USER_TYPE_INVALID,
    CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
    CKR_USER_TOO_MANY_TYPES,
    CKR_RANDOM_SEED_NOT_SUPPORTED,
    CKR_RANDOM_NO_RNG,
    CKR_DOMAIN_PARAMS_INVALID,
    CKR_BUFFER_TOO_SMALL,
    CKR_SAVED_STATE_INVALID,
    CKR_INFORMATION_SENSITIVE,
    CKR_STATE_UNSAVEABLE,
    CKR_CRYPTOKI_NOT_INITIALIZED,
    CKR_CRYPTOKI_ALREADY_INITIALIZED,
    CKR_MUTEX_BAD,
    CKR_MUTEX_NOT_LOCKED,
    CKR_FUNCTION_REJECTED,
    CKR_PUBLIC_KEY_INVALID,
];

/// Entry points that answer the same whether or not the library is
/// initialised (the unsupported ones may say so first).
const ANSWER_ANYWAY: &[&str] = &[
    "C_GetFunctionList",
    "C_Initialize",
    "C_InitToken",
    "C_InitPIN",
    "C_SetPIN",
    "C_GetOperationState",
    "C_SetOperationState",
    "C_CopyObject",
    "C_EncryptUpdate",
    "C_EncryptFinal",
    "C_DecryptUpdate",
    "C_DecryptFinal",
    "C_DigestKey",
    "C_SignRecoverInit",
    "C_SignRecover",
    "C_DigestEncryptUpdate",
    "C_DecryptDigestUpdate",
    "C_SignEncryptUpdate",
    "C_DecryptVerifyUpdate",
    "C_GenerateKey",
    "C_WrapKey",
    "C_UnwrapKey",
    "C_DeriveKey",
    "C_GetFunctionStatus",
    "C_CancelFunction",
    "C_WaitForSlotEvent",
];

/// What a call says when its session or the library is gone, whatever the
/// object.
const NO_SESSION: &[CK_RV] = &[
    CKR_SESSION_HANDLE_INVALID,
    CKR_SESSION_CLOSED,
    CKR_CRYPTOKI_NOT_INITIALIZED,
];

/// Every token's keyring as the mock kernel holds it: the keys linked in
/// it, each with its type, description and payload.
pub type Tokens = BTreeMap<String, Vec<(Serial, String, String, Vec<u8>)>>;

impl Harness {
    /// The rules every return value follows; counts the call.
    pub fn check_rv(&self, name: &'static str, rv: CK_RV) -> CK_RV {
        stats::count(name, rv);
        if crate::harness::debug() {
            eprintln!("  {name} -> {rv:#x}");
        }
        assert_ne!(
            rv, CKR_GENERAL_ERROR,
            "{name}: CKR_GENERAL_ERROR (a panic caught in the module)"
        );
        assert!(
            VALID_RV.contains(&rv),
            "{name}: undefined return value {rv:#x}"
        );
        if !self.initialized && !ANSWER_ANYWAY.contains(&name) {
            // A bad argument may be noticed first.
            assert!(
                matches!(rv, CKR_CRYPTOKI_NOT_INITIALIZED | CKR_ARGUMENTS_BAD),
                "{name} before C_Initialize: {rv:#x}"
            );
        }
        rv
    }

    /// A call with a destroyed object's handle did not succeed.
    pub fn check_alive(&self, name: &str, o: CK_OBJECT_HANDLE, rv: CK_RV) {
        assert!(
            !(rv == CKR_OK && self.dead.contains(&o)),
            "{name}: CKR_OK with the handle {o} of a destroyed object"
        );
    }

    /// No search returns a destroyed object.
    pub fn check_found(&self, found: &[CK_OBJECT_HANDLE]) {
        if let Some(o) = found.iter().find(|o| self.dead.contains(o)) {
            panic!("C_FindObjects: returned the handle {o} of a destroyed object");
        }
    }

    pub fn tokens(&self) -> Tokens {
        let keys = self.store.keys.lock();
        let rings = self.store.keyrings.lock();
        rings
            .iter()
            // Keyrings the module makes (`new:` in the mock): a token's
            // session objects' keyring, made on the first write of a
            // session object and kept for the next, and the scratch keyring
            // a record is replaced through. Empty, they hold nothing of any
            // token, and a call that failed after making one changed none.
            .filter(|(name, (_, linked))| !(name.starts_with("new:") && linked.is_empty()))
            .map(|(name, (_, linked))| {
                let linked = linked
                    .iter()
                    .map(|s| {
                        let k = &keys[s];
                        (
                            *s,
                            k.desc.key_type.clone(),
                            k.desc.description.clone(),
                            k.payload.clone(),
                        )
                    })
                    .collect();
                (name.clone(), linked)
            })
            .collect()
    }

    /// A failed call that may write to a token left every token as it was.
    pub fn check_unchanged(&self, name: &str, rv: CK_RV, before: &Tokens) {
        if rv == CKR_OK {
            return;
        }
        let after = self.tokens();
        if &after != before {
            panic!(
                "{name} failed ({rv:#x}) yet changed the tokens: {}",
                diff(before, &after)
            );
        }
    }

    /// After a successful `C_DestroyObject`: one key or certificate (and
    /// the key's metadata record) left its token, nothing else changed, and
    /// the handle is dead in every session.
    pub fn check_destroyed(
        &mut self,
        o: CK_OBJECT_HANDLE,
        before: &Tokens,
        twin: Option<CK_OBJECT_HANDLE>,
    ) {
        let after = self.tokens();
        let mut gone = Vec::new();
        for (ring, keys) in before {
            let now = after.get(ring).map_or(&[][..], Vec::as_slice);
            assert!(
                now.iter().all(|k| keys.contains(k)),
                "C_DestroyObject added or changed a key: {}",
                diff(before, &after)
            );
            gone.extend(keys.iter().filter(|k| !now.contains(k)));
        }
        let objects = gone
            .iter()
            .filter(|(_, ty, desc, _)| {
                ty == "asymmetric" || desc.starts_with("keyring-pkcs11:cert:")
            })
            .count();
        assert_eq!(
            objects,
            1,
            "C_DestroyObject of {o} removed {objects} objects: {}",
            diff(before, &after)
        );
        self.dead.insert(o);
        self.dead.extend(twin);
        for s in self.sessions.clone() {
            for h in std::iter::once(o).chain(twin) {
                let rv = match self.attribute(s, h, CKA_CLASS) {
                    Ok(_) => CKR_OK,
                    Err(rv) => rv,
                };
                assert!(
                    rv == CKR_OBJECT_HANDLE_INVALID || NO_SESSION.contains(&rv),
                    "C_GetAttributeValue of destroyed object {h} in session {s}: {rv:#x}"
                );
            }
        }
    }

    /// After a successful creation: each attribute of `template` that the
    /// module looked at reads back from `o` as given (a secret as
    /// `CKR_ATTRIBUTE_SENSITIVE`).
    pub fn check_readback(
        &self,
        name: &str,
        s: CK_SESSION_HANDLE,
        o: CK_OBJECT_HANDLE,
        template: &[Attr],
    ) {
        if !CHECK_TEMPLATE_READBACK {
            return;
        }
        for a in template {
            // NULL with a length of 0 is an empty value.
            let given = match &a.value {
                Some(v) if a.claim == v.len() as CK_ULONG => v.as_slice(),
                Some(v) => panic!(
                    "{name}: CKR_OK with a length of {:#x} beside a {}-byte value",
                    a.claim,
                    v.len()
                ),
                None if a.claim == 0 => &[],
                None => panic!("{name}: CKR_OK with a NULL value of {} bytes", a.claim),
            };
            match self.attribute(s, o, a.ty) {
                Ok((_, got)) if same_value(a.ty, given, &got) => {}
                Err(CKR_ATTRIBUTE_SENSITIVE) if is_secret(a.ty) => {}
                // The one documented exception (README, Objects): these
                // tokens have no private objects, and CKA_PRIVATE=TRUE,
                // which every client sends for private keys, is accepted
                // and reads back CK_FALSE.
                Ok((_, got)) if a.ty == CKA_PRIVATE && given == [CK_TRUE] && got == [CK_FALSE] => {}
                got => panic!(
                    "{name}: attribute {:#x} given as {given:02x?} reads back as {got:02x?}",
                    a.ty
                ),
            }
        }
    }
}

impl Harness {
    /// After a successful `C_SetAttributeValue`: each attribute reads back
    /// as set (the last value given for it).
    pub fn check_set(&self, s: CK_SESSION_HANDLE, o: CK_OBJECT_HANDLE, template: &[Attr]) {
        for (i, a) in template.iter().enumerate() {
            if template[i + 1..].iter().any(|b| b.ty == a.ty) {
                continue;
            }
            let Some(given) = &a.value else { continue };
            assert_eq!(
                a.claim,
                given.len() as CK_ULONG,
                "C_SetAttributeValue: CKR_OK with a length no buffer has"
            );
            match self.attribute(s, o, a.ty) {
                Ok((_, got)) if same_value(a.ty, given, &got) => {}
                got => panic!(
                    "C_SetAttributeValue: attribute {:#x} set to {given:02x?} reads back as {got:02x?}",
                    a.ty
                ),
            }
        }
    }
}

fn is_secret(ty: CK_ATTRIBUTE_TYPE) -> bool {
    matches!(
        ty,
        CKA_VALUE
            | CKA_PRIVATE_EXPONENT
            | CKA_PRIME_1
            | CKA_PRIME_2
            | CKA_EXPONENT_1
            | CKA_EXPONENT_2
            | CKA_COEFFICIENT
    )
}

/// Big integers are equal as numbers: a leading zero is an encoding.
fn same_value(ty: CK_ATTRIBUTE_TYPE, given: &[u8], got: &[u8]) -> bool {
    let strip = |v: &[u8]| -> Vec<u8> { v.iter().copied().skip_while(|b| *b == 0).collect() };
    match ty {
        CKA_MODULUS | CKA_PUBLIC_EXPONENT => strip(given) == strip(got),
        _ => given == got,
    }
}

fn diff(before: &Tokens, after: &Tokens) -> String {
    let mut out = Vec::new();
    for (ring, keys) in after {
        let was = before.get(ring).cloned().unwrap_or_default();
        for k in keys.iter().filter(|k| !was.contains(k)) {
            out.push(format!("{ring} +{} {} {:?}", k.0, k.1, k.2));
        }
        for k in was.iter().filter(|k| !keys.contains(k)) {
            out.push(format!("{ring} -{} {} {:?}", k.0, k.1, k.2));
        }
    }
    out.join("; ")
}
