//! PKCS#11 §5.5, slot and token management: one slot per keyring.

use super::general::{MANUFACTURER, library_version};
use super::{cryptoki_fn, module, out, pad, write_list};
use cryptoki_sys::*;

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

const TOKEN_MANUFACTURER: &str = "Linux kernel keyrings";

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
        flags: if s.present { CKF_TOKEN_PRESENT } else { 0 }
            | if s.removable { CKF_REMOVABLE_DEVICE } else { 0 },
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
        // CKF_RNG: C_GenerateRandom reads the kernel's generator.
        flags: CKF_TOKEN_INITIALIZED
            | CKF_USER_PIN_INITIALIZED
            | CKF_PROTECTED_AUTHENTICATION_PATH
            | CKF_RNG,
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
