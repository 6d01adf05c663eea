//! An input is a sequence of [`Call`]s: one variant per function of the
//! PKCS#11 2.40 list (the unsupported ones grouped in [`Unsupported`]), plus
//! the harness's own steps: the scenarios of `scenario`, a fresh discovery
//! of a token, forgetting every handle, and a key quota in the mock kernel.
//! `FUZZ_DEBUG=1 fuzz/run --repro FILE` prints each call as it runs.

use crate::args::{Data, Mostly, OutLen, Rare, SessionRef, SlotRef, Target};
use crate::buffers::{Guarded, OutBuf, Words, check_len};
use crate::harness::{Harness, InitArgs};
use crate::mechanism::{MECHS, Mech, MechSpec, is_signature};
use crate::objects::{CreateTemplate, SetTemplate};
use crate::scenario::{DigestCheck, EncryptDecrypt, SignVerify};
use crate::template::{OutTemplateSpec, TemplateSpec};
use crate::wellformed::Generate;
use arbitrary::{Arbitrary, Unstructured};
use cryptoki_sys::*;
use std::ptr::null_mut;

/// Calls run per input, at most.
pub const MAX_CALLS: usize = 48;

#[derive(Debug)]
pub struct Input {
    /// The token of the session every input starts with; 240 or more: no
    /// `C_Initialize` first (see `harness::run`).
    pub first_slot: u8,
    pub calls: Vec<Call>,
}

/// Calls one after the other to the end of the input, without the byte
/// before each that a derived `Vec` spends on "one more?".
impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let first_slot = u.arbitrary()?;
        let mut calls = Vec::new();
        while !u.is_empty() && calls.len() < MAX_CALLS {
            calls.push(u.arbitrary()?);
        }
        Ok(Input { first_slot, calls })
    }

    fn arbitrary_take_rest(mut u: Unstructured<'a>) -> arbitrary::Result<Self> {
        Self::arbitrary(&mut u)
    }
}

/// The deep paths come first: zero bytes (what a short input reads once
/// it runs dry) choose variant 0, a creation from a full CRT template.
#[derive(Arbitrary, Debug, Clone)]
pub enum Call {
    CreateObject {
        session: SessionRef,
        template: CreateTemplate,
        null_out: Rare,
    },
    GenerateKeyPair {
        session: SessionRef,
        spec: Generate,
        null_out: Rare,
    },
    /// Scenario: sign, then verify (see `scenario`).
    SignThenVerify(SignVerify),
    /// Scenario: encrypt, then decrypt.
    EncryptThenDecrypt(EncryptDecrypt),
    /// Scenario: a digest, compared.
    DigestThenCompare(DigestCheck),
    /// A session on a slot and every object of its token.
    Discover {
        slot: u8,
    },
    DestroyObject {
        target: Target,
    },
    SetAttributeValue {
        target: Target,
        template: SetTemplate,
    },
    GetAttributeValue {
        target: Target,
        template: OutTemplateSpec,
    },
    GetObjectSize {
        target: Target,
        null_out: Rare,
    },
    FindObjectsInit {
        session: SessionRef,
        template: TemplateSpec,
    },
    FindObjects {
        session: SessionRef,
        max: OutLen,
        null_count: Rare,
    },
    FindObjectsFinal {
        session: SessionRef,
    },
    Initialize(InitArgs),
    Finalize {
        reserved: Rare,
    },
    GetInfo {
        null_out: Rare,
    },
    GetFunctionList,
    GetSlotList {
        present: u8,
        len: OutLen,
        null_count: Rare,
    },
    GetSlotInfo {
        slot: SlotRef,
        null_out: Rare,
    },
    GetTokenInfo {
        slot: SlotRef,
        null_out: Rare,
    },
    GetMechanismList {
        slot: SlotRef,
        len: OutLen,
        null_count: Rare,
    },
    GetMechanismInfo {
        slot: SlotRef,
        mechanism: Mostly<u8, CK_MECHANISM_TYPE>,
        null_out: Rare,
    },
    OpenSession {
        slot: SlotRef,
        flags: SessionFlags,
        null_out: Rare,
    },
    CloseSession {
        session: SessionRef,
    },
    CloseAllSessions {
        slot: SlotRef,
    },
    GetSessionInfo {
        session: SessionRef,
        null_out: Rare,
    },
    Login {
        session: SessionRef,
        user: UserType,
        pin: Data,
    },
    Logout {
        session: SessionRef,
    },
    SignInit(OpInit),
    Sign(Produce),
    SignUpdate {
        session: SessionRef,
        data: Data,
    },
    SignFinal(Finish),
    VerifyInit(OpInit),
    Verify {
        session: SessionRef,
        data: Data,
        signature: Data,
    },
    VerifyUpdate {
        session: SessionRef,
        data: Data,
    },
    VerifyFinal {
        session: SessionRef,
        signature: Data,
    },
    VerifyRecoverInit(OpInit),
    VerifyRecover(Produce),
    EncryptInit(OpInit),
    Encrypt(Produce),
    DecryptInit(OpInit),
    Decrypt(Produce),
    DigestInit {
        session: SessionRef,
        /// A digest mechanism without parameters, or rarely any.
        mechanism: Mostly<u8, MechSpec>,
        null_mechanism: Rare,
    },
    Digest(Produce),
    DigestUpdate {
        session: SessionRef,
        data: Data,
    },
    DigestFinal(Finish),
    GenerateRandom {
        session: SessionRef,
        len: OutLen,
    },
    SeedRandom {
        session: SessionRef,
        seed: Data,
    },
    Unsupported {
        function: Unsupported,
        session: SessionRef,
        object: crate::args::ObjectRef,
        mechanism: MechSpec,
    },
    /// Drop every handle learnt so far: the next ones are made up.
    ForgetHandles,
    /// The mock kernel accepts this many more keys (None: no limit), so
    /// that a creation fails halfway (the key stored, its record refused)
    /// and must roll back.
    KeyQuota {
        left: Option<u8>,
    },
}

/// The functions the module answers with `CKR_FUNCTION_NOT_SUPPORTED`.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Unsupported {
    InitToken,
    InitPIN,
    SetPIN,
    GetOperationState,
    SetOperationState,
    CopyObject,
    EncryptUpdate,
    EncryptFinal,
    DecryptUpdate,
    DecryptFinal,
    DigestKey,
    SignRecoverInit,
    SignRecover,
    DigestEncryptUpdate,
    DecryptDigestUpdate,
    SignEncryptUpdate,
    DecryptVerifyUpdate,
    GenerateKey,
    WrapKey,
    UnwrapKey,
    DeriveKey,
    GetFunctionStatus,
    CancelFunction,
    WaitForSlotEvent,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum SessionFlags {
    SerialRw,
    Serial,
    /// Without CKF_SERIAL_SESSION, which 2.40 requires.
    Rw,
    Zero,
    Any(CK_FLAGS),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum UserType {
    User,
    So,
    ContextSpecific,
    Any(CK_USER_TYPE),
}

/// `C_*Init` of a key operation.
#[derive(Arbitrary, Debug, Clone)]
pub struct OpInit {
    pub target: Target,
    pub mechanism: MechSpec,
    /// Replace the type by one made for this operation.
    pub fitting: Option<u8>,
    pub null_mechanism: Rare,
}

/// A single-part operation: input data, and room for the output.
#[derive(Arbitrary, Debug, Clone)]
pub struct Produce {
    pub session: SessionRef,
    pub data: Data,
    pub out: OutLen,
    pub null_len: Rare,
}

/// The end of a multi-part operation: room for the output.
#[derive(Arbitrary, Debug, Clone)]
pub struct Finish {
    pub session: SessionRef,
    pub out: OutLen,
    pub null_len: Rare,
}

/// The key operations a `C_*Init` starts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum KeyOp {
    Sign,
    Verify,
    VerifyRecover,
    Encrypt,
    Decrypt,
}

/// The calls that produce output by the two-call convention.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Sign,
    SignFinal,
    VerifyRecover,
    Encrypt,
    Decrypt,
    Digest,
    DigestFinal,
}

impl Harness {
    pub fn run(&mut self, call: Call) {
        match &call {
            Call::CreateObject {
                session,
                template,
                null_out,
            } => self.create_object(*session, template, *null_out),
            Call::GenerateKeyPair {
                session,
                spec,
                null_out,
            } => self.generate_key_pair(*session, spec, *null_out),
            Call::SignThenVerify(plan) => self.sign_verify(plan),
            Call::EncryptThenDecrypt(plan) => self.encrypt_decrypt(plan),
            Call::DigestThenCompare(plan) => self.digest_check(plan),
            Call::Discover { slot } => {
                self.discover(*slot);
            }
            Call::DestroyObject { target } => self.destroy_object(*target),
            Call::SetAttributeValue { target, template } => self.set_attributes(*target, template),
            Call::GetAttributeValue { target, template } => self.get_attributes(*target, template),
            Call::GetObjectSize { target, null_out } => self.get_object_size(*target, *null_out),
            Call::FindObjectsInit { session, template } => {
                let s = self.session(*session);
                let mut t = template.build();
                let p = t.ptr();
                call!(self, C_FindObjectsInit(s, p, t.count));
                t.check("C_FindObjectsInit");
            }
            Call::FindObjects {
                session,
                max,
                null_count,
            } => self.find_objects(*session, *max, *null_count),
            Call::FindObjectsFinal { session } => {
                let s = self.session(*session);
                call!(self, C_FindObjectsFinal(s));
            }
            Call::Initialize(args) => self.initialize(args),
            Call::Finalize { reserved } => {
                let mut r = 0u8;
                let p = if reserved.0 {
                    &mut r as *mut u8 as *mut std::ffi::c_void
                } else {
                    null_mut()
                };
                if call!(self, C_Finalize(p)) == CKR_OK {
                    self.initialized = false;
                }
            }
            Call::GetInfo { null_out } => {
                let mut info = Guarded::<CK_INFO>::new();
                call!(self, C_GetInfo(info.ptr(null_out.0)));
                info.check("C_GetInfo");
            }
            Call::GetFunctionList => {
                let rv = call!(self, C_GetFunctionList(null_mut()));
                assert_eq!(rv, CKR_ARGUMENTS_BAD, "C_GetFunctionList(NULL)");
                let mut p: *mut CK_FUNCTION_LIST = null_mut();
                let rv = call!(self, C_GetFunctionList(&mut p));
                assert_eq!(rv, CKR_OK);
                assert!(std::ptr::eq(p, self.fl), "C_GetFunctionList: another list");
            }
            Call::GetSlotList {
                present,
                len,
                null_count,
            } => {
                let present = present % 3;
                self.list(len.capped(12), *null_count, |h, p, c| {
                    call!(h, C_GetSlotList(present, p, c))
                });
            }
            Call::GetSlotInfo { slot, null_out } => {
                let mut info = Guarded::<CK_SLOT_INFO>::new();
                call!(self, C_GetSlotInfo(slot.value(), info.ptr(null_out.0)));
                info.check("C_GetSlotInfo");
            }
            Call::GetTokenInfo { slot, null_out } => {
                let mut info = Guarded::<CK_TOKEN_INFO>::new();
                call!(self, C_GetTokenInfo(slot.value(), info.ptr(null_out.0)));
                info.check("C_GetTokenInfo");
            }
            Call::GetMechanismList {
                slot,
                len,
                null_count,
            } => {
                let slot = slot.value();
                self.list(len.capped(40), *null_count, |h, p, c| {
                    call!(h, C_GetMechanismList(slot, p, c))
                });
            }
            Call::GetMechanismInfo {
                slot,
                mechanism,
                null_out,
            } => {
                let m = match mechanism {
                    Mostly::Usual(i) => MECHS[usize::from(*i) % MECHS.len()],
                    Mostly::Odd(m) => *m,
                };
                let mut info = Guarded::<CK_MECHANISM_INFO>::new();
                call!(
                    self,
                    C_GetMechanismInfo(slot.value(), m, info.ptr(null_out.0))
                );
                info.check("C_GetMechanismInfo");
            }
            Call::OpenSession {
                slot,
                flags,
                null_out,
            } => {
                let flags = match *flags {
                    SessionFlags::SerialRw => CKF_SERIAL_SESSION | CKF_RW_SESSION,
                    SessionFlags::Serial => CKF_SERIAL_SESSION,
                    SessionFlags::Rw => CKF_RW_SESSION,
                    SessionFlags::Zero => 0,
                    SessionFlags::Any(f) => f,
                };
                let mut s = Guarded::<CK_SESSION_HANDLE>::new();
                let rv = call!(
                    self,
                    C_OpenSession(slot.value(), flags, null_mut(), None, s.ptr(null_out.0))
                );
                s.check("C_OpenSession");
                if rv == CKR_OK {
                    self.sessions.push(s.value);
                }
            }
            Call::CloseSession { session } => {
                let s = self.session(*session);
                call!(self, C_CloseSession(s));
            }
            Call::CloseAllSessions { slot } => {
                call!(self, C_CloseAllSessions(slot.value()));
            }
            Call::GetSessionInfo { session, null_out } => {
                let s = self.session(*session);
                let mut info = Guarded::<CK_SESSION_INFO>::new();
                call!(self, C_GetSessionInfo(s, info.ptr(null_out.0)));
                info.check("C_GetSessionInfo");
            }
            Call::Login { session, user, pin } => {
                let s = self.session(*session);
                let user = match *user {
                    UserType::User => CKU_USER,
                    UserType::So => CKU_SO,
                    UserType::ContextSpecific => CKU_CONTEXT_SPECIFIC,
                    UserType::Any(u) => u,
                };
                let (mut pin, len) = self.data(pin);
                call!(self, C_Login(s, user, pin.ptr(), len));
            }
            Call::Logout { session } => {
                let s = self.session(*session);
                call!(self, C_Logout(s));
            }
            Call::SignInit(a) => self.op_init(a, KeyOp::Sign),
            Call::VerifyInit(a) => self.op_init(a, KeyOp::Verify),
            Call::VerifyRecoverInit(a) => self.op_init(a, KeyOp::VerifyRecover),
            Call::EncryptInit(a) => self.op_init(a, KeyOp::Encrypt),
            Call::DecryptInit(a) => self.op_init(a, KeyOp::Decrypt),
            Call::Sign(p) => self.produce(Kind::Sign, p),
            Call::SignFinal(f) => self.produce(Kind::SignFinal, &f.produce()),
            Call::VerifyRecover(p) => self.produce(Kind::VerifyRecover, p),
            Call::Encrypt(p) => self.produce(Kind::Encrypt, p),
            Call::Decrypt(p) => self.produce(Kind::Decrypt, p),
            Call::Digest(p) => self.produce(Kind::Digest, p),
            Call::DigestFinal(f) => self.produce(Kind::DigestFinal, &f.produce()),
            Call::SignUpdate { session, data } => {
                let s = self.session(*session);
                let (mut d, len) = self.data(data);
                call!(self, C_SignUpdate(s, d.ptr(), len));
            }
            Call::VerifyUpdate { session, data } => {
                let s = self.session(*session);
                let (mut d, len) = self.data(data);
                call!(self, C_VerifyUpdate(s, d.ptr(), len));
            }
            Call::DigestUpdate { session, data } => {
                let s = self.session(*session);
                let (mut d, len) = self.data(data);
                call!(self, C_DigestUpdate(s, d.ptr(), len));
            }
            Call::Verify {
                session,
                data,
                signature,
            } => {
                let s = self.session(*session);
                let (mut d, len) = self.data(data);
                let (mut sig, slen) = self.data(signature);
                call!(self, C_Verify(s, d.ptr(), len, sig.ptr(), slen));
            }
            Call::VerifyFinal { session, signature } => {
                let s = self.session(*session);
                let (mut sig, slen) = self.data(signature);
                call!(self, C_VerifyFinal(s, sig.ptr(), slen));
            }
            Call::DigestInit {
                session,
                mechanism,
                null_mechanism,
            } => {
                let s = self.session(*session);
                let mut m = match mechanism {
                    Mostly::Usual(i) => {
                        let digests = [CKM_SHA_1, CKM_SHA224, CKM_SHA256, CKM_SHA384, CKM_SHA512];
                        Mech::new(digests[usize::from(*i) % 5], Vec::new(), Vec::new())
                    }
                    Mostly::Odd(spec) => spec.build(None),
                };
                let rv = call!(self, C_DigestInit(s, m.ptr(*null_mechanism)));
                crate::mechanism::check_empty_parameter("C_DigestInit", &m.m, *null_mechanism, rv);
            }
            Call::GenerateRandom { session, len } => {
                let s = self.session(*session);
                let mut b = OutBuf::new(len.room());
                let claim = match len {
                    OutLen::Null { claim } => claim % 65,
                    _ => len.claim(),
                };
                call!(self, C_GenerateRandom(s, b.ptr(), claim));
                b.check("C_GenerateRandom");
            }
            Call::SeedRandom { session, seed } => {
                let s = self.session(*session);
                let (mut d, len) = self.data(seed);
                call!(self, C_SeedRandom(s, d.ptr(), len));
            }
            Call::Unsupported {
                function,
                session,
                object,
                mechanism,
            } => {
                let (s, o) = (self.session(*session), self.object(*object));
                self.unsupported(*function, s, o, mechanism);
            }
            Call::ForgetHandles => self.forget(),
            Call::KeyQuota { left } => {
                *self.store.add_quota.lock() = left.map(|n| usize::from(n % 4));
            }
        }
    }

    /// C_GetSlotList and C_GetMechanismList: `len` elements of room (None:
    /// NULL), the count claimed accordingly.
    fn list(
        &mut self,
        len: OutLen,
        null_count: Rare,
        f: impl FnOnce(&Self, *mut CK_ULONG, *mut CK_ULONG) -> CK_RV,
    ) {
        let mut mem = Words::new(len.room());
        let mut count = Guarded::<CK_ULONG>::new();
        count.value = len.claim();
        let rv = f(self, mem.ptr(), count.ptr(null_count.0));
        mem.check("list");
        count.check("list count");
        if let Some(n) = len.room() {
            if rv == CKR_OK {
                assert!(
                    count.value as usize <= n,
                    "list: {} elements in room for {n}",
                    count.value
                );
            }
            if rv == CKR_BUFFER_TOO_SMALL {
                assert!(
                    count.value as usize > n,
                    "list: CKR_BUFFER_TOO_SMALL yet {} fit",
                    count.value
                );
            }
        }
    }

    fn op_init(&mut self, a: &OpInit, op: KeyOp) {
        let (s, o) = self.target(a.target);
        let fitting: Option<&[CK_MECHANISM_TYPE]> = match op {
            KeyOp::Encrypt | KeyOp::Decrypt => {
                Some(&[CKM_RSA_PKCS, CKM_RSA_X_509, CKM_RSA_PKCS_OAEP])
            }
            KeyOp::VerifyRecover => Some(&[CKM_RSA_PKCS, CKM_RSA_X_509]),
            KeyOp::Sign | KeyOp::Verify => None,
        };
        let ty = a.fitting.map(|i| {
            let i = usize::from(i);
            match fitting {
                Some(list) => list[i % list.len()],
                None => {
                    let sigs: Vec<_> = MECHS.iter().copied().filter(|m| is_signature(*m)).collect();
                    sigs[i % sigs.len()]
                }
            }
        });
        let mut m = a.mechanism.build(ty);
        let p = m.ptr(a.null_mechanism);
        let (name, rv) = match op {
            KeyOp::Sign => ("C_SignInit", call!(self, C_SignInit(s, p, o))),
            KeyOp::Verify => ("C_VerifyInit", call!(self, C_VerifyInit(s, p, o))),
            KeyOp::VerifyRecover => (
                "C_VerifyRecoverInit",
                call!(self, C_VerifyRecoverInit(s, p, o)),
            ),
            KeyOp::Encrypt => ("C_EncryptInit", call!(self, C_EncryptInit(s, p, o))),
            KeyOp::Decrypt => ("C_DecryptInit", call!(self, C_DecryptInit(s, p, o))),
        };
        self.check_alive(name, o, rv);
        crate::mechanism::check_empty_parameter(name, &m.m, a.null_mechanism, rv);
    }

    /// C_Sign, C_SignFinal, C_VerifyRecover, C_Encrypt, C_Decrypt,
    /// C_Digest and C_DigestFinal, with the two-call convention's promises
    /// checked: a size query (or, for outputs of a fixed length, a buffer too
    /// short) does no private-key work and leaves the operation active; a
    /// result ends it.
    fn produce(&mut self, kind: Kind, a: &Produce) {
        let s = self.session(a.session);
        let (mut d, dlen) = self.data(&a.data);
        let dp = d.ptr();
        let name = match kind {
            Kind::Sign => "C_Sign",
            Kind::SignFinal => "C_SignFinal",
            Kind::VerifyRecover => "C_VerifyRecover",
            Kind::Encrypt => "C_Encrypt",
            Kind::Decrypt => "C_Decrypt",
            Kind::Digest => "C_Digest",
            Kind::DigestFinal => "C_DigestFinal",
        };
        let run = |h: &Self, out: *mut u8, plen: *mut CK_ULONG| match kind {
            Kind::Sign => call!(h, C_Sign(s, dp, dlen, out, plen)),
            Kind::SignFinal => call!(h, C_SignFinal(s, out, plen)),
            Kind::VerifyRecover => call!(h, C_VerifyRecover(s, dp, dlen, out, plen)),
            Kind::Encrypt => call!(h, C_Encrypt(s, dp, dlen, out, plen)),
            Kind::Decrypt => call!(h, C_Decrypt(s, dp, dlen, out, plen)),
            Kind::Digest => call!(h, C_Digest(s, dp, dlen, out, plen)),
            Kind::DigestFinal => call!(h, C_DigestFinal(s, out, plen)),
        };
        let room = a.out.room();
        let mut out = OutBuf::new(room);
        let mut plen = Guarded::<CK_ULONG>::new();
        plen.value = a.out.claim();
        let ops = self.private_ops();
        let rv = run(self, out.ptr(), plen.ptr(a.null_len.0));
        out.check(name);
        plen.check(name);
        check_len(name, rv, room, plen.value);
        let exact = matches!(kind, Kind::Sign | Kind::SignFinal | Kind::Encrypt);
        if room.is_none() || (exact && rv == CKR_BUFFER_TOO_SMALL) {
            assert_eq!(
                self.private_ops(),
                ops,
                "{name}: a size query used the private key"
            );
        }
        if rv == CKR_BUFFER_TOO_SMALL || (rv == CKR_OK && room.is_none()) {
            // The operation must still be there: ask for the size again.
            let ops = self.private_ops();
            let mut again = Guarded::<CK_ULONG>::new();
            let rv2 = run(self, null_mut(), &mut again.value);
            assert_eq!(rv2, CKR_OK, "{name}: the operation ended after rv {rv:#x}");
            again.check(name);
            assert_eq!(
                self.private_ops(),
                ops,
                "{name}: a size query used the private key"
            );
        }
        if rv == CKR_OK && room.is_some() {
            self.last = out.bytes(plen.value as usize).to_vec();
            // Done: the operation is over.
            let mut again = Guarded::<CK_ULONG>::new();
            let rv2 = run(self, null_mut(), &mut again.value);
            assert_eq!(
                rv2, CKR_OPERATION_NOT_INITIALIZED,
                "{name}: still active after success"
            );
        }
    }

    fn unsupported(
        &mut self,
        function: Unsupported,
        s: CK_SESSION_HANDLE,
        o: CK_OBJECT_HANDLE,
        mechanism: &MechSpec,
    ) {
        use Unsupported::*;
        let mut buf = OutBuf::new(Some(64));
        let mut len: CK_ULONG = 64;
        let mut m = mechanism.build(None);
        let (b, mp, lp) = (
            buf.ptr(),
            &mut m.m as *mut CK_MECHANISM,
            &mut len as *mut CK_ULONG,
        );
        let mut handle: CK_OBJECT_HANDLE = 0;
        let hp = &mut handle as *mut CK_OBJECT_HANDLE;
        let t = null_mut::<CK_ATTRIBUTE>();
        match function {
            InitToken => call!(self, C_InitToken(0, b, 8, b)),
            InitPIN => call!(self, C_InitPIN(s, b, 8)),
            SetPIN => call!(self, C_SetPIN(s, b, 8, b, 8)),
            GetOperationState => call!(self, C_GetOperationState(s, b, lp)),
            SetOperationState => call!(self, C_SetOperationState(s, b, 64, o, o)),
            CopyObject => call!(self, C_CopyObject(s, o, t, 0, hp)),
            EncryptUpdate => call!(self, C_EncryptUpdate(s, b, 8, b, lp)),
            EncryptFinal => call!(self, C_EncryptFinal(s, b, lp)),
            DecryptUpdate => call!(self, C_DecryptUpdate(s, b, 8, b, lp)),
            DecryptFinal => call!(self, C_DecryptFinal(s, b, lp)),
            DigestKey => call!(self, C_DigestKey(s, o)),
            SignRecoverInit => call!(self, C_SignRecoverInit(s, mp, o)),
            SignRecover => call!(self, C_SignRecover(s, b, 8, b, lp)),
            DigestEncryptUpdate => call!(self, C_DigestEncryptUpdate(s, b, 8, b, lp)),
            DecryptDigestUpdate => call!(self, C_DecryptDigestUpdate(s, b, 8, b, lp)),
            SignEncryptUpdate => call!(self, C_SignEncryptUpdate(s, b, 8, b, lp)),
            DecryptVerifyUpdate => call!(self, C_DecryptVerifyUpdate(s, b, 8, b, lp)),
            GenerateKey => call!(self, C_GenerateKey(s, mp, t, 0, hp)),
            WrapKey => call!(self, C_WrapKey(s, mp, o, o, b, lp)),
            UnwrapKey => call!(self, C_UnwrapKey(s, mp, o, b, 8, t, 0, hp)),
            DeriveKey => call!(self, C_DeriveKey(s, mp, o, t, 0, hp)),
            GetFunctionStatus => call!(self, C_GetFunctionStatus(s)),
            CancelFunction => call!(self, C_CancelFunction(s)),
            WaitForSlotEvent => {
                let mut slot: CK_SLOT_ID = 0;
                call!(
                    self,
                    C_WaitForSlotEvent(CKF_DONT_BLOCK, &mut slot, null_mut())
                )
            }
        };
        buf.check("an unsupported function");
    }
}

impl Finish {
    fn produce(&self) -> Produce {
        Produce {
            session: self.session,
            data: Data::Null { claim: 0 },
            out: self.out,
            null_len: self.null_len,
        }
    }
}
