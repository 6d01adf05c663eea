//! The token catalogue: one slot per keyring (session, user, persistent,
//! process, and the named keyrings of the configuration), its labels, models
//! and serials, and which mechanisms a token offers.

use super::Module;
use crate::error::{Error, Result};
use crate::kernel::keyctl::Serial;
use crate::kernel::store::TokenKind;
use crate::log::esc;
use std::time::{Duration, Instant};

/// How often the persistent keyring's expiry is renewed while in use.
const RENEW_PERSISTENT: Duration = Duration::from_secs(1);
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
    /// The token can go away while the module runs (a named keyring can be
    /// unlinked or revoked): `CKF_REMOVABLE_DEVICE`.
    pub removable: bool,
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

    /// The token's keyring as it is now. Keyrings come and go: a named
    /// keyring can be created later or recreated, a process can join another
    /// session keyring, the persistent keyring expires when unused. So the
    /// keyring is looked up again at each use (one cheap system call),
    /// never remembered across them, and a token whose keyring is gone is
    /// absent until it is back. Looking up the persistent keyring renews its
    /// expiry timer: while the module uses it, it does not expire (done at
    /// most once a second).
    pub(super) fn keyring(&self, slot: usize) -> Option<Serial> {
        let t = &self.tokens[slot];
        let previous = {
            let st = self.state.lock();
            let cached = st.keyrings[slot];
            if t.kind == TokenKind::Persistent
                && cached.is_some()
                && st.renewed[slot].is_some_and(|at| at.elapsed() < RENEW_PERSISTENT)
            {
                return cached;
            }
            cached
        };
        let found = match self.store.resolve(&t.kind) {
            Ok(k) => Some(k),
            Err(e) => {
                if previous.is_some() {
                    crate::log::info(format_args!(
                        "token \"{}\" is no longer present: {e}",
                        esc(&t.label)
                    ));
                }
                None
            }
        };
        let mut st = self.state.lock();
        st.keyrings[slot] = found;
        st.renewed[slot] = found.map(|_| Instant::now());
        found
    }

    pub fn slot_list(&self, present_only: bool) -> Vec<CK_SLOT_ID> {
        (0..self.tokens.len())
            .filter(|&i| !present_only || self.present(i))
            .map(|i| i as CK_SLOT_ID)
            .collect()
    }

    pub fn slot_info(&self, slot: CK_SLOT_ID) -> Result<SlotInfo> {
        let i = self.slot(slot)?;
        Ok(SlotInfo {
            description: self.tokens[i].description.clone(),
            present: self.present(i),
            removable: matches!(self.tokens[i].kind, TokenKind::Named(_)),
        })
    }

    pub fn token_info(&self, slot: CK_SLOT_ID) -> Result<TokenInfo> {
        let i = self.slot(slot)?;
        if !self.present(i) {
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

    pub(super) fn present_slot(&self, slot: CK_SLOT_ID) -> Result<usize> {
        let i = self.slot(slot)?;
        if !self.present(i) {
            return Err(Error::new(CKR_TOKEN_NOT_PRESENT));
        }
        Ok(i)
    }

    /// Whether the token is there. Looking up the persistent keyring creates
    /// it (`KEYCTL_GET_PERSISTENT` has no "only if it exists"), and a process
    /// that merely lists slots must not make one for its user: the kernel
    /// makes one on demand wherever it has persistent keyrings at all, so that
    /// is what is asked until the token is used.
    fn present(&self, slot: usize) -> bool {
        match self.tokens[slot].kind {
            TokenKind::Persistent => {
                self.state.lock().keyrings[slot].is_some() || self.store.has_persistent_keyrings()
            }
            _ => self.keyring(slot).is_some(),
        }
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
