//! The entry points that do real work.

use super::{
    Global, array, bytes, cryptoki_fn, mechanism, module, out, pad, read, template, two_call,
    write, write_list,
};
use crate::config::Config;
use crate::error::Error;
use crate::module::{Module, OpKind};
use crate::object::AttrValue;
use cryptoki_sys::*;
use std::ffi::c_void;
use std::sync::Arc;

/// PKCS#11 2.40, which is what `C_GetFunctionList` returns.
pub(super) const CRYPTOKI_VERSION: CK_VERSION = CK_VERSION {
    major: 2,
    minor: 40,
};

fn library_version() -> CK_VERSION {
    let major = env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap_or(0);
    let minor = env!("CARGO_PKG_VERSION_MINOR").parse().unwrap_or(0);
    CK_VERSION { major, minor }
}

/// The running kernel's version: the "firmware" behind every token.
fn kernel_version() -> CK_VERSION {
    let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = rel
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u8>().ok());
    CK_VERSION {
        major: it.next().unwrap_or(0),
        minor: it.next().unwrap_or(0),
    }
}

const MANUFACTURER: &str = "keyring-pkcs11";
const TOKEN_MANUFACTURER: &str = "Linux kernel keyrings";

cryptoki_fn!(C_Initialize(p_init_args: *mut c_void) {
    if let Some(args) = (p_init_args as *const CK_C_INITIALIZE_ARGS).as_ref() {
        let given = [args.CreateMutex.is_some(), args.DestroyMutex.is_some(), args.LockMutex.is_some(), args.UnlockMutex.is_some()];
        let n = given.iter().filter(|g| **g).count();
        if n != 0 && n != 4 {
            return Err(Error::new(CKR_ARGUMENTS_BAD));
        }
        // Our locks are the OS's (std, futex-based), which is right for every
        // combination the spec allows: no args, CKF_OS_LOCKING_OK, the four
        // callbacks, or both (p11-kit). We never create threads.
        // pReserved should be NULL, but libp11 passes its own pointer there;
        // refusing it would break the OpenSSL engine, so it is ignored.
    }
    let pid = std::process::id();
    if matches!(&*read(), Some(g) if g.pid == pid) {
        return Err(Error::new(CKR_CRYPTOKI_ALREADY_INITIALIZED));
    }
    // Resolving tokens calls the kernel: do it before taking the lock.
    let module = Arc::new(Module::new(crate::kernel::store::default_store(), &Config::load()));
    let mut g = write();
    if matches!(&*g, Some(g) if g.pid == pid) {
        return Err(Error::new(CKR_CRYPTOKI_ALREADY_INITIALIZED));
    }
    // A state inherited from a parent process is forgotten, not dropped: the
    // parent's other threads may have been changing its tables at the
    // instant of the fork, and they do not exist here to finish.
    if let Some(inherited) = g.replace(Global { pid, module }) {
        std::mem::forget(inherited);
    }
    Ok(())
});

cryptoki_fn!(C_Finalize(p_reserved: *mut c_void) {
    if !p_reserved.is_null() {
        return Err(Error::new(CKR_ARGUMENTS_BAD));
    }
    let pid = std::process::id();
    let mut g = write();
    match &*g {
        Some(m) if m.pid == pid => {
            // Drops every session and handle; calls still running on other
            // threads keep their own reference until they return.
            *g = None;
            Ok(())
        }
        _ => Err(Error::new(CKR_CRYPTOKI_NOT_INITIALIZED)),
    }
});

// `C_GetInfo` of the 2.40 list (and of the exported symbol): a client that
// got the 2.40 list is told 2.40; the 3.0 list has its own (see `v3`).
cryptoki_fn!(C_GetInfo(p_info: *mut CK_INFO) {
    get_info(p_info, CRYPTOKI_VERSION)
});

pub(super) unsafe fn get_info(
    p_info: *mut CK_INFO,
    version: CK_VERSION,
) -> crate::error::Result<()> {
    module()?;
    let info = unsafe { out(p_info)? };
    *info = CK_INFO {
        cryptokiVersion: version,
        manufacturerID: pad(MANUFACTURER),
        flags: 0,
        libraryDescription: pad("Linux kernel keyring RSA keys"),
        libraryVersion: library_version(),
    };
    Ok(())
}

cryptoki_fn!(C_GetSlotList(token_present: CK_BBOOL, p_slot_list: *mut CK_SLOT_ID, pul_count: *mut CK_ULONG) {
    let slots = module()?.slot_list(token_present != CK_FALSE);
    write_list(&slots, p_slot_list, pul_count)
});

cryptoki_fn!(C_GetSlotInfo(slot_id: CK_SLOT_ID, p_info: *mut CK_SLOT_INFO) {
    let m = module()?;
    let out_info = out(p_info)?;
    let s = m.slot_info(slot_id)?;
    *out_info = CK_SLOT_INFO {
        slotDescription: pad(&s.description),
        manufacturerID: pad(MANUFACTURER),
        flags: if s.present { CKF_TOKEN_PRESENT } else { 0 },
        hardwareVersion: library_version(),
        firmwareVersion: kernel_version(),
    };
    Ok(())
});

cryptoki_fn!(C_GetTokenInfo(slot_id: CK_SLOT_ID, p_info: *mut CK_TOKEN_INFO) {
    let m = module()?;
    let out_info = out(p_info)?;
    let t = m.token_info(slot_id)?;
    *out_info = CK_TOKEN_INFO {
        label: pad(&t.label),
        manufacturerID: pad(TOKEN_MANUFACTURER),
        model: pad(t.model),
        serialNumber: pad(&t.serial),
        // Initialised (OpenSSH skips tokens without it). No PIN ever passes
        // through the module: kernel permissions decide who may use a key,
        // which is what a protected authentication path means. It also keeps
        // OpenSSH from prompting for a PIN on a token that holds no keys.
        flags: CKF_TOKEN_INITIALIZED | CKF_USER_PIN_INITIALIZED | CKF_PROTECTED_AUTHENTICATION_PATH,
        ulMaxSessionCount: CK_EFFECTIVELY_INFINITE,
        ulSessionCount: t.sessions as CK_ULONG,
        ulMaxRwSessionCount: CK_EFFECTIVELY_INFINITE,
        ulRwSessionCount: t.rw_sessions as CK_ULONG,
        ulMaxPinLen: 0,
        ulMinPinLen: 0,
        ulTotalPublicMemory: CK_UNAVAILABLE_INFORMATION,
        ulFreePublicMemory: CK_UNAVAILABLE_INFORMATION,
        ulTotalPrivateMemory: CK_UNAVAILABLE_INFORMATION,
        ulFreePrivateMemory: CK_UNAVAILABLE_INFORMATION,
        hardwareVersion: library_version(),
        firmwareVersion: kernel_version(),
        utcTime: [b' '; 16],
    };
    Ok(())
});

cryptoki_fn!(C_GetMechanismList(slot_id: CK_SLOT_ID, p_list: *mut CK_MECHANISM_TYPE, pul_count: *mut CK_ULONG) {
    let list = module()?.mechanism_list(slot_id)?;
    write_list(&list, p_list, pul_count)
});

cryptoki_fn!(C_GetMechanismInfo(slot_id: CK_SLOT_ID, ty: CK_MECHANISM_TYPE, p_info: *mut CK_MECHANISM_INFO) {
    let m = module()?;
    let o = out(p_info)?;
    *o = m.mechanism_info(slot_id, ty)?;
    Ok(())
});

cryptoki_fn!(C_OpenSession(slot_id: CK_SLOT_ID, flags: CK_FLAGS, _app: *mut c_void, _notify: CK_NOTIFY, ph_session: *mut CK_SESSION_HANDLE) {
    let m = module()?;
    let o = out(ph_session)?;
    *o = m.open_session(slot_id, flags)?;
    Ok(())
});

cryptoki_fn!(C_CloseSession(h: CK_SESSION_HANDLE) {
    module()?.close_session(h)
});

cryptoki_fn!(C_CloseAllSessions(slot_id: CK_SLOT_ID) {
    module()?.close_all_sessions(slot_id)
});

cryptoki_fn!(C_GetSessionInfo(h: CK_SESSION_HANDLE, p_info: *mut CK_SESSION_INFO) {
    let m = module()?;
    let o = out(p_info)?;
    let s = m.session_info(h)?;
    *o = CK_SESSION_INFO { slotID: s.slot, state: s.state, flags: s.flags, ulDeviceError: 0 };
    Ok(())
});

// The PIN is deliberately not read: there is none (see `Module::login`).
cryptoki_fn!(C_Login(h: CK_SESSION_HANDLE, user: CK_USER_TYPE, _pin: *mut CK_UTF8CHAR, _pin_len: CK_ULONG) {
    module()?.login(h, user)
});

cryptoki_fn!(C_Logout(h: CK_SESSION_HANDLE) {
    module()?.logout(h)
});

cryptoki_fn!(C_GetObjectSize(h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE, pul_size: *mut CK_ULONG) {
    let m = module()?;
    let o = out(pul_size)?;
    m.attributes(h, obj, &[])?;
    *o = CK_UNAVAILABLE_INFORMATION;
    Ok(())
});

cryptoki_fn!(C_GetAttributeValue(h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE, p_template: *mut CK_ATTRIBUTE, count: CK_ULONG) {
    let m = module()?;
    let template = array(p_template, count)?;
    let types: Vec<CK_ATTRIBUTE_TYPE> = template.iter().map(|a| a.type_).collect();
    let values = m.attributes(h, obj, &types)?;
    // Every attribute is answered; the return value reports a problem with
    // any of them (PKCS#11 2.40 §5.7.5). Capacity is read before writing.
    let mut rv = CKR_OK;
    let mut fail = |a: &mut CK_ATTRIBUTE, code: CK_RV| {
        a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
        if rv == CKR_OK {
            rv = code;
        }
    };
    for (a, v) in template.iter_mut().zip(values) {
        match v {
            AttrValue::Value(v) if a.pValue.is_null() => a.ulValueLen = v.len() as CK_ULONG,
            AttrValue::Value(v) if (a.ulValueLen as usize) >= v.len() => {
                std::ptr::copy_nonoverlapping(v.as_ptr(), a.pValue as *mut u8, v.len());
                a.ulValueLen = v.len() as CK_ULONG;
            }
            AttrValue::Value(_) => fail(a, CKR_BUFFER_TOO_SMALL),
            AttrValue::Sensitive => fail(a, CKR_ATTRIBUTE_SENSITIVE),
            AttrValue::Invalid => fail(a, CKR_ATTRIBUTE_TYPE_INVALID),
        }
    }
    if rv == CKR_OK { Ok(()) } else { Err(Error::new(rv)) }
});

cryptoki_fn!(C_FindObjectsInit(h: CK_SESSION_HANDLE, p_template: *mut CK_ATTRIBUTE, count: CK_ULONG) {
    let m = module()?;
    let template = array(p_template, count)?
        .iter()
        .map(|a| Ok((a.type_, bytes(a.pValue as *const u8, a.ulValueLen)?.to_vec())))
        .collect::<crate::error::Result<Vec<_>>>()?;
    m.find_init(h, &template)
});

cryptoki_fn!(C_FindObjects(h: CK_SESSION_HANDLE, ph_object: *mut CK_OBJECT_HANDLE, max: CK_ULONG, pul_count: *mut CK_ULONG) {
    let m = module()?;
    let count = out(pul_count)?;
    let dest = array(ph_object, max)?;
    let found = m.find_next(h, dest.len())?;
    dest[..found.len()].copy_from_slice(&found);
    *count = found.len() as CK_ULONG;
    Ok(())
});

cryptoki_fn!(C_FindObjectsFinal(h: CK_SESSION_HANDLE) {
    module()?.find_final(h)
});

fn op_init(
    h: CK_SESSION_HANDLE,
    kind: OpKind,
    p_mechanism: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> crate::error::Result<()> {
    let m = module()?;
    // SAFETY: `mechanism` checks the pointer; the caller promises the rest.
    let (ty, params) = unsafe { mechanism(p_mechanism)? };
    m.op_init(h, kind, ty, &params, key)
}

cryptoki_fn!(C_SignInit(h: CK_SESSION_HANDLE, p_mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
    op_init(h, OpKind::Sign, p_mechanism, key)
});

cryptoki_fn!(C_Sign(h: CK_SESSION_HANDLE, p_data: *mut CK_BYTE, data_len: CK_ULONG, p_signature: *mut CK_BYTE, pul_signature_len: *mut CK_ULONG) {
    let m = module()?;
    let data = bytes(p_data, data_len)?;
    two_call(p_signature, pul_signature_len, |buf| m.sign(h, Some(data), buf))
});

cryptoki_fn!(C_SignUpdate(h: CK_SESSION_HANDLE, p_part: *mut CK_BYTE, part_len: CK_ULONG) {
    let m = module()?;
    m.op_update(h, OpKind::Sign, bytes(p_part, part_len)?)
});

cryptoki_fn!(C_SignFinal(h: CK_SESSION_HANDLE, p_signature: *mut CK_BYTE, pul_signature_len: *mut CK_ULONG) {
    let m = module()?;
    two_call(p_signature, pul_signature_len, |buf| m.sign(h, None, buf))
});

cryptoki_fn!(C_VerifyInit(h: CK_SESSION_HANDLE, p_mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
    op_init(h, OpKind::Verify, p_mechanism, key)
});

cryptoki_fn!(C_Verify(h: CK_SESSION_HANDLE, p_data: *mut CK_BYTE, data_len: CK_ULONG, p_signature: *mut CK_BYTE, signature_len: CK_ULONG) {
    let m = module()?;
    m.verify(h, Some(bytes(p_data, data_len)?), bytes(p_signature, signature_len)?)
});

cryptoki_fn!(C_VerifyUpdate(h: CK_SESSION_HANDLE, p_part: *mut CK_BYTE, part_len: CK_ULONG) {
    let m = module()?;
    m.op_update(h, OpKind::Verify, bytes(p_part, part_len)?)
});

cryptoki_fn!(C_VerifyFinal(h: CK_SESSION_HANDLE, p_signature: *mut CK_BYTE, signature_len: CK_ULONG) {
    let m = module()?;
    m.verify(h, None, bytes(p_signature, signature_len)?)
});

cryptoki_fn!(C_VerifyRecoverInit(h: CK_SESSION_HANDLE, p_mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
    op_init(h, OpKind::VerifyRecover, p_mechanism, key)
});

cryptoki_fn!(C_VerifyRecover(h: CK_SESSION_HANDLE, p_signature: *mut CK_BYTE, signature_len: CK_ULONG, p_data: *mut CK_BYTE, pul_data_len: *mut CK_ULONG) {
    let m = module()?;
    let sig = bytes(p_signature, signature_len)?;
    two_call(p_data, pul_data_len, |buf| m.verify_recover(h, sig, buf))
});

cryptoki_fn!(C_EncryptInit(h: CK_SESSION_HANDLE, p_mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
    op_init(h, OpKind::Encrypt, p_mechanism, key)
});

cryptoki_fn!(C_Encrypt(h: CK_SESSION_HANDLE, p_data: *mut CK_BYTE, data_len: CK_ULONG, p_out: *mut CK_BYTE, pul_out_len: *mut CK_ULONG) {
    let m = module()?;
    let data = bytes(p_data, data_len)?;
    two_call(p_out, pul_out_len, |buf| m.encrypt(h, data, buf))
});

cryptoki_fn!(C_DecryptInit(h: CK_SESSION_HANDLE, p_mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
    op_init(h, OpKind::Decrypt, p_mechanism, key)
});

cryptoki_fn!(C_Decrypt(h: CK_SESSION_HANDLE, p_data: *mut CK_BYTE, data_len: CK_ULONG, p_out: *mut CK_BYTE, pul_out_len: *mut CK_ULONG) {
    let m = module()?;
    let data = bytes(p_data, data_len)?;
    two_call(p_out, pul_out_len, |buf| m.decrypt(h, data, buf))
});

cryptoki_fn!(C_DigestInit(h: CK_SESSION_HANDLE, p_mechanism: *mut CK_MECHANISM) {
    let m = module()?;
    let (ty, params) = mechanism(p_mechanism)?;
    m.digest_init(h, ty, &params)
});

cryptoki_fn!(C_Digest(h: CK_SESSION_HANDLE, p_data: *mut CK_BYTE, data_len: CK_ULONG, p_digest: *mut CK_BYTE, pul_digest_len: *mut CK_ULONG) {
    let m = module()?;
    let data = bytes(p_data, data_len)?;
    two_call(p_digest, pul_digest_len, |buf| m.digest(h, Some(data), buf))
});

cryptoki_fn!(C_DigestUpdate(h: CK_SESSION_HANDLE, p_part: *mut CK_BYTE, part_len: CK_ULONG) {
    let m = module()?;
    m.digest_update(h, bytes(p_part, part_len)?)
});

cryptoki_fn!(C_DigestFinal(h: CK_SESSION_HANDLE, p_digest: *mut CK_BYTE, pul_digest_len: *mut CK_ULONG) {
    let m = module()?;
    two_call(p_digest, pul_digest_len, |buf| m.digest(h, None, buf))
});

cryptoki_fn!(C_GenerateRandom(h: CK_SESSION_HANDLE, p_out: *mut CK_BYTE, out_len: CK_ULONG) {
    let m = module()?;
    m.session_info(h)?;
    let buf = array(p_out, out_len)?;
    crate::random::fill(buf).map_err(|_| Error::new(CKR_FUNCTION_FAILED))
});

cryptoki_fn!(C_SeedRandom(h: CK_SESSION_HANDLE, _p_seed: *mut CK_BYTE, _seed_len: CK_ULONG) {
    // The kernel's generator takes no seed from us.
    module()?.session_info(h)?;
    Err(Error::new(CKR_RANDOM_SEED_NOT_SUPPORTED))
});

cryptoki_fn!(C_CreateObject(h: CK_SESSION_HANDLE, p_template: *mut CK_ATTRIBUTE, count: CK_ULONG, ph_object: *mut CK_OBJECT_HANDLE) {
    let m = module()?;
    let o = out(ph_object)?;
    let t = template(p_template, count)?;
    *o = m.create_object(h, &t)?;
    Ok(())
});

cryptoki_fn!(C_GenerateKeyPair(
    h: CK_SESSION_HANDLE,
    p_mechanism: *mut CK_MECHANISM,
    p_public: *mut CK_ATTRIBUTE,
    public_count: CK_ULONG,
    p_private: *mut CK_ATTRIBUTE,
    private_count: CK_ULONG,
    ph_public: *mut CK_OBJECT_HANDLE,
    ph_private: *mut CK_OBJECT_HANDLE,
) {
    let m = module()?;
    let (ty, params) = mechanism(p_mechanism)?;
    let pub_out = out(ph_public)?;
    let priv_out = out(ph_private)?;
    let (pt, st) = (template(p_public, public_count)?, template(p_private, private_count)?);
    let (public, private) = m.generate_key_pair(h, ty, &params, &pt, &st)?;
    *pub_out = public;
    *priv_out = private;
    Ok(())
});

cryptoki_fn!(C_DestroyObject(h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE) {
    module()?.destroy_object(h, obj)
});

cryptoki_fn!(C_SetAttributeValue(h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE, p_template: *mut CK_ATTRIBUTE, count: CK_ULONG) {
    let m = module()?;
    let t = template(p_template, count)?;
    m.set_attributes(h, obj, &t)
});
