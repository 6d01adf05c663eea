//! The token catalogue: one slot per keyring (session, user, persistent,
//! process, and the named keyrings of the configuration), its labels, models
//! and serials, and which mechanisms a token offers.

use super::Module;
use crate::error::{Error, Result};
use crate::kernel::keyctl::Serial;
use crate::kernel::store::{KeyStore, TokenKind};
use crate::mechanism::{self, Padding};
use cryptoki_sys::*;

/// A slot and its token.
#[derive(Debug, Clone)]
pub struct Token {
    pub kind: TokenKind,
    pub label: String,
    pub model: &'static str,
    pub serial: String,
    pub description: String,
}

impl Token {
    pub(super) fn new(kind: TokenKind, uid: u32) -> Token {
        let (label, model, serial, description) = match &kind {
            TokenKind::Session => (
                "session".to_string(),
                "session keyring",
                format!("s{uid}"),
                "session keyring (@s): keys live as long as the login session".to_string(),
            ),
            TokenKind::User => (
                "user".to_string(),
                "user keyring",
                format!("u{uid}"),
                "user keyring (@u): keys live while the user has processes".to_string(),
            ),
            TokenKind::Persistent => (
                "persistent".to_string(),
                "persist keyring",
                format!("p{uid}"),
                "persistent keyring: keys outlive logins until it expires".to_string(),
            ),
            TokenKind::Process => (
                "process".to_string(),
                "process keyring",
                format!("proc{uid}"),
                "process keyring (@p): keys die with the process, even on SIGKILL".to_string(),
            ),
            TokenKind::Named(n) => (
                n.clone(),
                "named keyring",
                format!("n{:08x}", fnv32(n.as_bytes())),
                format!("keyring \"{n}\""),
            ),
        };
        Token {
            kind,
            label,
            model,
            serial,
            description,
        }
    }
}

/// A stable, short hash for the serial numbers of named tokens.
fn fnv32(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

pub struct SlotInfo {
    pub description: String,
    pub present: bool,
}

pub struct TokenInfo {
    pub label: String,
    pub model: &'static str,
    pub serial: String,
    pub sessions: usize,
    pub rw_sessions: usize,
}

impl Module {
    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    pub(super) fn slot(&self, slot: CK_SLOT_ID) -> Result<usize> {
        let i = usize::try_from(slot).map_err(|_| Error::new(CKR_SLOT_ID_INVALID))?;
        if i < self.tokens.len() {
            Ok(i)
        } else {
            Err(Error::new(CKR_SLOT_ID_INVALID))
        }
    }

    /// The token's keyring; a named keyring that did not exist at start-up
    /// is looked for again, so one created later shows up.
    pub(super) fn keyring(&self, slot: usize) -> Option<Serial> {
        if let Some(k) = self.state.lock().keyrings[slot] {
            return Some(k);
        }
        if !matches!(self.tokens[slot].kind, TokenKind::Named(_)) {
            return None;
        }
        let found = resolve(&*self.store, &self.tokens[slot]);
        if found.is_some() {
            self.state.lock().keyrings[slot] = found;
        }
        found
    }

    pub fn slot_list(&self, present_only: bool) -> Vec<CK_SLOT_ID> {
        (0..self.tokens.len())
            .filter(|&i| !present_only || self.keyring(i).is_some())
            .map(|i| i as CK_SLOT_ID)
            .collect()
    }

    pub fn slot_info(&self, slot: CK_SLOT_ID) -> Result<SlotInfo> {
        let i = self.slot(slot)?;
        Ok(SlotInfo {
            description: self.tokens[i].description.clone(),
            present: self.keyring(i).is_some(),
        })
    }

    pub fn token_info(&self, slot: CK_SLOT_ID) -> Result<TokenInfo> {
        let i = self.slot(slot)?;
        if self.keyring(i).is_none() {
            return Err(Error::new(CKR_TOKEN_NOT_PRESENT));
        }
        let st = self.state.lock();
        let (mut sessions, mut rw_sessions) = (0, 0);
        for s in st.sessions.values().filter(|s| s.slot == i) {
            sessions += 1;
            rw_sessions += s.rw as usize;
        }
        let t = &self.tokens[i];
        Ok(TokenInfo {
            label: t.label.clone(),
            model: t.model,
            serial: t.serial.clone(),
            sessions,
            rw_sessions,
        })
    }

    pub(super) fn present_slot(&self, slot: CK_SLOT_ID) -> Result<(usize, Serial)> {
        let i = self.slot(slot)?;
        let k = self.keyring(i).ok_or(Error::new(CKR_TOKEN_NOT_PRESENT))?;
        Ok((i, k))
    }

    pub fn mechanism_list(&self, slot: CK_SLOT_ID) -> Result<Vec<CK_MECHANISM_TYPE>> {
        self.present_slot(slot)?;
        Ok(mechanism::MECHANISMS.iter().map(|m| m.ty).collect())
    }

    pub fn mechanism_info(
        &self,
        slot: CK_SLOT_ID,
        ty: CK_MECHANISM_TYPE,
    ) -> Result<CK_MECHANISM_INFO> {
        self.present_slot(slot)?;
        let m = mechanism::lookup(ty).ok_or(Error::new(CKR_MECHANISM_INVALID))?;
        // Digests use no key: their sizes are zero.
        let (min, max) = match m.padding {
            Padding::Digest => (0, 0),
            Padding::KeyGen => (
                CK_ULONG::from(crate::material::GENERATE_BITS[0]),
                CK_ULONG::from(crate::material::GENERATE_BITS[2]),
            ),
            _ => (mechanism::min_key_bits(), mechanism::MAX_KEY_BITS),
        };
        Ok(CK_MECHANISM_INFO {
            ulMinKeySize: min,
            ulMaxKeySize: max,
            flags: m.flags,
        })
    }
}

pub(super) fn resolve(store: &dyn KeyStore, t: &Token) -> Option<Serial> {
    match store.resolve(&t.kind) {
        Ok(s) => Some(s),
        Err(e) => {
            crate::log::info(format_args!("token \"{}\" not present: {e}", t.label));
            None
        }
    }
}
