//! The key operations of a session — sign, verify, verify-recover, encrypt,
//! decrypt — from `*Init` to the final call: one [`CryptOp`] per running
//! operation owns its checked mechanism and its input; the RSA work itself is
//! `crypto::operation`'s. Size queries and short buffers are answered without
//! doing the work, as the two-call convention wants.

use super::digest::DigestOp;
use super::{Module, SessionEntry};
use crate::crypto::operation;
use crate::error::{Error, Result};
use crate::hash::Hasher;
use crate::kernel::hints::KernelOp;
use crate::kernel::keyctl::{KEYCTL_SUPPORTS_DECRYPT, KEYCTL_SUPPORTS_SIGN};
use crate::log::esc;
use crate::mechanism::{self, MechParams, Padding, Resolved};
use crate::object::{Class, KeyInfo, KeyRecord};
use cryptoki_sys::*;
use std::sync::Arc;
use zeroize::Zeroizing;

/// The five kinds of key operation a session can have running at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Sign,
    Verify,
    VerifyRecover,
    Encrypt,
    Decrypt,
}

impl OpKind {
    const ALL: usize = 5;

    pub(super) fn index(self) -> usize {
        self as usize
    }

    /// The mechanism flag that must be set for this use.
    pub(super) fn flag(self) -> CK_FLAGS {
        match self {
            OpKind::Sign => CKF_SIGN,
            OpKind::Verify => CKF_VERIFY,
            OpKind::VerifyRecover => CKF_VERIFY_RECOVER,
            OpKind::Encrypt => CKF_ENCRYPT,
            OpKind::Decrypt => CKF_DECRYPT,
        }
    }

    /// The usage flag that must be true on the key's object.
    fn usage(self) -> CK_ATTRIBUTE_TYPE {
        match self {
            OpKind::Sign => CKA_SIGN,
            OpKind::Verify => CKA_VERIFY,
            OpKind::VerifyRecover => CKA_VERIFY_RECOVER,
            OpKind::Encrypt => CKA_ENCRYPT,
            OpKind::Decrypt => CKA_DECRYPT,
        }
    }

    /// For messages: "signing with key …".
    fn doing(self) -> &'static str {
        match self {
            OpKind::Sign => "signing",
            OpKind::Verify => "verifying",
            OpKind::VerifyRecover => "recovering a signature's data",
            OpKind::Encrypt => "encrypting",
            OpKind::Decrypt => "decrypting",
        }
    }

    /// Private-key operations need the private object, public ones the public.
    fn class(self) -> Class {
        match self {
            OpKind::Sign | OpKind::Decrypt => Class::Private,
            _ => Class::Public,
        }
    }
}

/// A session's running operations: at most one of each kind.
#[derive(Default)]
pub(super) struct Ops {
    pub(super) find: Option<Vec<CK_OBJECT_HANDLE>>,
    /// Counts the session's searches: `C_FindObjects` hands out handles of
    /// the one search it began with, even if another thread ends that one
    /// and begins another between its batches.
    pub(super) searches: u64,
    pub(super) crypt: [Option<CryptOp>; OpKind::ALL],
    pub(super) digest: Option<DigestOp>,
}

/// One key operation, from its `*Init` to its final call: the key, the
/// mechanism with its parameters checked against that key, and the input
/// gathered so far.
pub(super) struct CryptOp {
    slot: usize,
    key: Arc<KeyInfo>,
    mech: Resolved,
    acc: Acc,
    /// An update was called: only the final call may finish it now.
    multipart: bool,
    /// The key has `CKA_ALWAYS_AUTHENTICATE`: a context-specific login must
    /// come between this operation's init and its use.
    pub(super) needs_login: bool,
}

/// What the final call of an operation does: answer a size query, or run.
// Short-lived, on the stack of one call.
#[allow(clippy::large_enum_variant)]
enum Final {
    SizeOnly(usize),
    Run(CryptOp),
}

// One per session at most; boxing the hash state would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Acc {
    Hash(Hasher),
    /// Input collected as it is, wiped on drop: for CKM_RSA_PKCS it is usually
    /// a hash, but may be anything the caller wanted signed.
    Raw(Zeroizing<Vec<u8>>),
}

impl Acc {
    fn new(m: &Resolved) -> Acc {
        match m.spec.hash {
            Some(h) => Acc::Hash(h.hasher()),
            None => Acc::Raw(Zeroizing::new(Vec::new())),
        }
    }

    fn add(&mut self, data: &[u8], limit: usize) -> Result<()> {
        match self {
            Acc::Hash(h) => h.update(data),
            Acc::Raw(buf) => {
                if buf.len() + data.len() > limit {
                    return Err(Error::new(CKR_DATA_LEN_RANGE));
                }
                buf.extend_from_slice(data);
            }
        }
        Ok(())
    }

    /// What the RSA step works on: the message digest, or the raw input —
    /// borrowed, not copied, so an input of any length costs nothing before
    /// the operation checks it against the key's size.
    fn payload<'a>(&'a self, last: Option<&'a [u8]>) -> Payload<'a> {
        match self {
            Acc::Hash(h) => {
                let mut h = h.clone();
                if let Some(d) = last {
                    h.update(d);
                }
                Payload::Digest(Zeroizing::new(h.finish()))
            }
            Acc::Raw(buf) => Payload::Raw(last.unwrap_or(buf)),
        }
    }
}

/// See [`Acc::payload`].
enum Payload<'a> {
    Digest(Zeroizing<Vec<u8>>),
    Raw(&'a [u8]),
}

impl std::ops::Deref for Payload<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Payload::Digest(d) => d,
            Payload::Raw(r) => r,
        }
    }
}

impl CryptOp {
    /// Checks that `mech` with `params` may do `kind` with this object of
    /// `key` (`class`), before anything touches the kernel.
    /// Usage flags and `CKA_ALLOWED_MECHANISMS` are the key's creator's
    /// (`rec`), enforced here.
    fn new(
        slot: usize,
        kind: OpKind,
        key: Arc<KeyInfo>,
        rec: &KeyRecord,
        class: Class,
        mech: CK_MECHANISM_TYPE,
        params: &MechParams,
    ) -> Result<CryptOp> {
        let spec = mechanism::lookup(mech)
            .filter(|m| m.flags & kind.flag() != 0)
            .ok_or(Error::new(CKR_MECHANISM_INVALID))?;
        if class != kind.class() {
            return Err(Error::new(CKR_KEY_FUNCTION_NOT_PERMITTED));
        }
        if !rec.flag(&key, class, kind.usage()) {
            return Err(Error::refused(
                CKR_KEY_FUNCTION_NOT_PERMITTED,
                format!(
                    "{} with key \"{}\": its creator set attribute {:#x} false",
                    kind.doing(),
                    esc(&key.label),
                    kind.usage()
                ),
            ));
        }
        if !rec.allows(&key, class, mech) {
            return Err(Error::refused(
                CKR_MECHANISM_INVALID,
                format!(
                    "mechanism {mech:#x} is not in the CKA_ALLOWED_MECHANISMS of key \"{}\"",
                    esc(&key.label)
                ),
            ));
        }
        let mech = mechanism::resolve(spec, params, key.bits)?;
        Ok(CryptOp {
            slot,
            acc: Acc::new(&mech),
            needs_login: class == Class::Private && rec.flag(&key, class, CKA_ALWAYS_AUTHENTICATE),
            key,
            mech,
            multipart: false,
        })
    }
}

impl Module {
    /// `C_SessionCancel` (PKCS#11 3.0): ends the session's active operations
    /// named by `flags`. Cancelling a kind that is not running is not an
    /// error; our operations finish inside one call, so there is never one
    /// that cannot be cancelled. Flags of operations the module has no
    /// multi-call form of (message-based, key generation, wrapping) have
    /// nothing to cancel and are accepted for the same reason.
    pub fn session_cancel(&self, h: CK_SESSION_HANDLE, flags: CK_FLAGS) -> Result<()> {
        let s = self.state.lock().session(h)?;
        let mut ops = s.ops.lock();
        for kind in [
            OpKind::Sign,
            OpKind::Verify,
            OpKind::VerifyRecover,
            OpKind::Encrypt,
            OpKind::Decrypt,
        ] {
            if flags & kind.flag() != 0 {
                ops.crypt[kind.index()] = None;
            }
        }
        if flags & CKF_DIGEST != 0 {
            ops.digest = None;
        }
        if flags & CKF_FIND_OBJECTS != 0 {
            ops.find = None;
        }
        Ok(())
    }

    /// `C_SignInit`, `C_VerifyInit`, `C_VerifyRecoverInit`, `C_EncryptInit`,
    /// `C_DecryptInit`.
    pub fn op_init(
        &self,
        h: CK_SESSION_HANDLE,
        kind: OpKind,
        mech: CK_MECHANISM_TYPE,
        params: &MechParams,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let (s, info, rec, class) = self.object(h, key).map_err(|e| {
            if e.rv == CKR_OBJECT_HANDLE_INVALID {
                Error::new(CKR_KEY_HANDLE_INVALID)
            } else {
                e
            }
        })?;
        if s.ops.lock().crypt[kind.index()].is_some() {
            return Err(Error::new(CKR_OPERATION_ACTIVE));
        }
        let op = CryptOp::new(s.slot, kind, info.clone(), &rec, class, mech, params)?;
        // Fail now, not at C_Sign, if the key was revoked, expired or left
        // the token since it was found, no lock held. A key no longer
        // linked in the token's keyring itself has left the token even if
        // the kernel has not collected it yet (it may live elsewhere). A
        // server signs with the same key again and again: a search and the
        // keyring's size prove all of it (`still_found`), and only when they
        // do not are the links read and the key asked, for the exact cause.
        let found = self.still_found(s.slot, &info, rec.session);
        if !found && !self.still_linked(s.slot, info.serial) {
            self.forget(info.serial);
            return Err(Error::new(CKR_KEY_HANDLE_INVALID));
        }
        if kind.class() == Class::Private {
            let need = if kind == OpKind::Sign && op.mech.spec.padding == Padding::Pkcs1 {
                KEYCTL_SUPPORTS_SIGN
            } else {
                KEYCTL_SUPPORTS_DECRYPT
            };
            if !found || info.supported_ops.get().is_none() {
                let q = self.store.query(info.serial).map_err(|e| {
                    self.key_error(s.slot, info.serial, &info.label, e, kind.doing())
                })?;
                let _ = info.supported_ops.set(q.supported_ops);
            }
            if info.supported_ops.get().is_none_or(|ops| ops & need == 0) {
                return Err(Error::new(CKR_KEY_FUNCTION_NOT_PERMITTED));
            }
        } else if !found {
            // Public operations run in userspace on the recovered public key
            // (see `crypto`), so the kernel no longer notices a key that has
            // gone: check that it is alive (KEYCTL_DESCRIBE fails on a
            // revoked or expired key) without PKEY_QUERY's crypto set-up.
            self.store
                .describe(info.serial)
                .map_err(|e| self.key_error(s.slot, info.serial, &info.label, e, kind.doing()))?;
        }
        let mut ops = s.ops.lock();
        let slot = &mut ops.crypt[kind.index()];
        if slot.is_some() {
            return Err(Error::new(CKR_OPERATION_ACTIVE));
        }
        *slot = Some(op);
        Ok(())
    }

    /// `C_SignUpdate` and `C_VerifyUpdate`.
    pub fn op_update(&self, h: CK_SESSION_HANDLE, kind: OpKind, data: &[u8]) -> Result<()> {
        let s = self.state.lock().session(h)?;
        let mut ops = s.ops.lock();
        let slot = &mut ops.crypt[kind.index()];
        let op = slot
            .as_mut()
            .ok_or(Error::new(CKR_OPERATION_NOT_INITIALIZED))?;
        op.multipart = true;
        let limit = op.key.sig_len;
        if let Err(e) = op.acc.add(data, limit) {
            *slot = None;
            return Err(e);
        }
        Ok(())
    }

    /// Takes the operation out of the session for its final step, answering
    /// size queries (`out` = None) and too-small buffers without doing the
    /// work and without ending the operation. With `exact`, the output is
    /// exactly k bytes; otherwise k bounds it.
    fn take_for_final(
        &self,
        s: &SessionEntry,
        kind: OpKind,
        single: Option<&[u8]>,
        out: Option<&[u8]>,
        exact: bool,
    ) -> Result<Final> {
        let mut ops = s.ops.lock();
        let slot = &mut ops.crypt[kind.index()];
        let op = slot
            .as_ref()
            .ok_or(Error::new(CKR_OPERATION_NOT_INITIALIZED))?;
        if single.is_some() && op.multipart {
            // A one-part call after an update is a caller error; end it.
            *slot = None;
            return Err(Error::new(CKR_OPERATION_ACTIVE));
        }
        let need = op.key.sig_len;
        if op.needs_login && out.is_some() {
            return Err(Error::refused(
                CKR_USER_NOT_LOGGED_IN,
                format!(
                    "key \"{}\" has CKA_ALWAYS_AUTHENTICATE: log in (CKU_CONTEXT_SPECIFIC) before each use",
                    esc(&op.key.label)
                ),
            ));
        }
        match out {
            None => return Ok(Final::SizeOnly(need)),
            Some(buf) if exact && buf.len() < need => return Err(Error::buffer_too_small(need)),
            _ => {}
        }
        Ok(Final::Run(
            slot.take().expect("checked above under the same lock"),
        ))
    }

    /// `C_Sign` (`data` = Some) and `C_SignFinal` (`data` = None).
    pub fn sign(
        &self,
        h: CK_SESSION_HANDLE,
        data: Option<&[u8]>,
        out: Option<&mut [u8]>,
    ) -> Result<usize> {
        self.produce(h, OpKind::Sign, data, out)
    }

    /// `C_Encrypt`: single-part only, as PKCS#11 defines RSA encryption.
    pub fn encrypt(
        &self,
        h: CK_SESSION_HANDLE,
        data: &[u8],
        out: Option<&mut [u8]>,
    ) -> Result<usize> {
        self.produce(h, OpKind::Encrypt, Some(data), out)
    }

    /// `C_Decrypt`: single-part only.
    pub fn decrypt(
        &self,
        h: CK_SESSION_HANDLE,
        data: &[u8],
        out: Option<&mut [u8]>,
    ) -> Result<usize> {
        self.produce(h, OpKind::Decrypt, Some(data), out)
    }

    /// `C_VerifyRecover`.
    pub fn verify_recover(
        &self,
        h: CK_SESSION_HANDLE,
        signature: &[u8],
        out: Option<&mut [u8]>,
    ) -> Result<usize> {
        self.produce(h, OpKind::VerifyRecover, Some(signature), out)
    }

    /// The operations that produce bytes. Output lengths: a signature or a
    /// ciphertext is exactly k bytes, so a short buffer is refused before any
    /// work; a plaintext is at most k bytes, so a size query answers k, and a
    /// buffer shorter than k is tried, answering the exact length if it does
    /// not fit (the operation then stays active, per the two-call convention).
    fn produce(
        &self,
        h: CK_SESSION_HANDLE,
        kind: OpKind,
        data: Option<&[u8]>,
        out: Option<&mut [u8]>,
    ) -> Result<usize> {
        let s = self.state.lock().session(h)?;
        let exact = matches!(kind, OpKind::Sign | OpKind::Encrypt);
        let op = match self.take_for_final(&s, kind, data, out.as_deref(), exact)? {
            Final::Run(op) => op,
            Final::SizeOnly(n) => return Ok(n),
        };
        let payload = op.acc.payload(data);
        let store = &*self.store;
        let result: Result<Zeroizing<Vec<u8>>> = match kind {
            OpKind::Sign => {
                operation::sign(store, &*op.key, &op.mech, &payload).map(Zeroizing::new)
            }
            OpKind::Encrypt => {
                operation::encrypt(store, &*op.key, &op.mech, &payload).map(Zeroizing::new)
            }
            OpKind::Decrypt => operation::decrypt(store, &*op.key, &op.mech, &payload),
            OpKind::VerifyRecover => {
                operation::verify_recover(store, &*op.key, &op.mech, &payload).map(Zeroizing::new)
            }
            OpKind::Verify => unreachable!("verify produces no bytes"),
        };
        let result = result.map_err(|e| self.op_error(&op, e, kind))?;
        let out = out.expect("size queries were answered above");
        if out.len() < result.len() {
            // Only for decryption and recovery: keep the operation so the
            // caller can retry with a larger buffer.
            s.ops.lock().crypt[kind.index()] = Some(op);
            return Err(Error::buffer_too_small(result.len()));
        }
        out[..result.len()].copy_from_slice(&result);
        Ok(result.len())
    }

    /// `C_Verify` (`data` = Some) and `C_VerifyFinal` (`data` = None).
    pub fn verify(
        &self,
        h: CK_SESSION_HANDLE,
        data: Option<&[u8]>,
        signature: &[u8],
    ) -> Result<()> {
        let s = self.state.lock().session(h)?;
        let Final::Run(op) =
            self.take_for_final(&s, OpKind::Verify, data, Some(signature), false)?
        else {
            unreachable!("a verification always has its signature")
        };
        let payload = op.acc.payload(data);
        operation::verify(&*self.store, &*op.key, &op.mech, &payload, signature)
            .map_err(|e| self.op_error(&op, e, OpKind::Verify))
    }

    /// A kernel refusal during an operation is about the key: it may have
    /// left the token (see `key_error`).
    fn op_error(&self, op: &CryptOp, e: Error, kind: OpKind) -> Error {
        match e.kernel_cause() {
            Some((KernelOp::UseKey, errno)) => {
                self.key_error(op.slot, op.key.serial, &op.key.label, errno, kind.doing())
            }
            _ => e,
        }
    }
}
