//! Which keyrings become tokens.
//!
//! The session, user and persistent keyrings are always offered. More
//! (named) keyrings come from, in order, and without duplicates:
//! 1. `KEYRING_PKCS11_KEYRINGS`: names separated by commas or whitespace;
//! 2. the file named by `KEYRING_PKCS11_CONFIG`, or else
//!    `$XDG_CONFIG_HOME/keyring-pkcs11/keyring-pkcs11.conf`
//!    (`~/.config/...` when XDG_CONFIG_HOME is unset), or else
//!    `/etc/keyring-pkcs11.conf` — the first that exists.
//!
//! The file is line-based: `keyring = NAME` adds a named keyring; `#` starts a
//! comment; blank lines are ignored. Unknown keys are reported once and skipped,
//! so a typo never disables the module inside someone's ssh.
//!
//! A named keyring is a keyring whose description is NAME, found by searching
//! from the session keyring (which normally links the user keyring) and then
//! the user keyring, e.g. one made with `keyctl newring NAME @u`.

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    pub named_keyrings: Vec<String>,
}

impl Config {
    /// Reads the environment and the config file.
    pub fn load() -> Config {
        let env = std::env::var("KEYRING_PKCS11_KEYRINGS").ok();
        let file = config_path().and_then(|p| std::fs::read_to_string(&p).ok().map(|t| (p, t)));
        let mut cfg = Config::default();
        if let Some(list) = env {
            cfg.add_list(&list);
        }
        if let Some((path, text)) = file {
            cfg.add_file(&text, &path.display().to_string());
        }
        cfg
    }

    fn add(&mut self, name: &str) {
        let name = name.trim();
        if !name.is_empty() && !self.named_keyrings.iter().any(|n| n == name) {
            self.named_keyrings.push(name.to_string());
        }
    }

    fn add_list(&mut self, list: &str) {
        for n in list.split(|c: char| c == ',' || c.is_whitespace()) {
            self.add(n);
        }
    }

    fn add_file(&mut self, text: &str, origin: &str) {
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            match line.split_once('=') {
                Some((k, v)) if k.trim() == "keyring" => self.add(v),
                _ => crate::log::warn(format_args!(
                    "{origin}:{}: ignoring unknown line {line:?}",
                    i + 1
                )),
            }
        }
    }
}

fn config_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KEYRING_PKCS11_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let user = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("keyring-pkcs11").join("keyring-pkcs11.conf"));
    [user, Some(PathBuf::from("/etc/keyring-pkcs11.conf"))]
        .into_iter()
        .flatten()
        .find(|p| p.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_list_and_file_merge_without_duplicates() {
        let mut c = Config::default();
        c.add_list("work, ci  web,,");
        c.add_file(
            "# comment\nkeyring = deploy\n\nkeyring=work # dup\nbogus line\n",
            "test",
        );
        assert_eq!(c.named_keyrings, vec!["work", "ci", "web", "deploy"]);
    }
}
