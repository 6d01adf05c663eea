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
//! The file is line-based: `keyring = NAME` adds a named keyring;
//! `threads = N` caps the threads the module uses to learn many keys at once
//! (`module::parallel`; 1 = never a thread of its own; the environment's
//! `KEYRING_PKCS11_THREADS` wins); `#` starts a comment; blank lines are
//! ignored. Other lines are reported by file and
//! line number — never their content, which may come from a file the reader
//! of the log must not see — and skipped, so a typo never disables the
//! module inside someone's ssh.
//!
//! In a program running with more privileges than its caller (setuid or
//! setgid, `AT_SECURE`), the caller's environment and home directory choose
//! nothing: only `/etc/keyring-pkcs11.conf` is read, and only if root owns
//! it. Elsewhere a file is read only if root or the real user owns it; in
//! both cases not if its group or others may write it. These checks are made
//! on the opened file, so the file cannot be swapped between check and read.
//!
//! A named keyring is a keyring whose description is NAME, found by searching
//! from the session keyring (which normally links the user keyring) and then
//! the user keyring, e.g. one made with `keyctl newring NAME @u`.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    pub named_keyrings: Vec<String>,
    /// At most this many threads, the caller's included, learn keys at once
    /// (`None`: one per CPU the process may use, at most 8).
    pub threads: Option<usize>,
}

const ETC_CONFIG: &str = "/etc/keyring-pkcs11.conf";

/// No configuration file is this long; a longer "file" (a device, or the
/// wrong file named in the environment) is not read to its end.
const MAX_FILE: u64 = 64 * 1024;

/// Where a configuration comes from: the process's environment, whether it
/// runs with privileges its caller lacks, its real uid, and the system file.
struct Sources<'a> {
    env: &'a dyn Fn(&str) -> Option<OsString>,
    secure: bool,
    uid: u32,
    etc: &'a Path,
}

impl Config {
    /// Reads the environment and the config file, logging what was refused.
    pub fn load() -> Config {
        let env = |k: &str| std::env::var_os(k);
        let (cfg, warnings) = Config::load_from(&Sources {
            env: &env,
            secure: crate::kernel::keyctl::secure_execution(),
            uid: crate::kernel::keyctl::uid(),
            etc: Path::new(ETC_CONFIG),
        });
        for w in warnings {
            crate::log::warn(format_args!("{w}"));
        }
        cfg
    }

    fn load_from(src: &Sources<'_>) -> (Config, Vec<String>) {
        let mut cfg = Config::default();
        let mut warnings = Vec::new();
        let env = |k: &str| if src.secure { None } else { (src.env)(k) };
        if let Some(list) = env("KEYRING_PKCS11_KEYRINGS") {
            cfg.add_list(&list.to_string_lossy());
        }
        let threads_env = env("KEYRING_PKCS11_THREADS");
        let (path, named) = match env("KEYRING_PKCS11_CONFIG") {
            Some(p) => (Some(PathBuf::from(p)), true),
            None => {
                let user = env("XDG_CONFIG_HOME")
                    .map(PathBuf::from)
                    .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".config")))
                    .map(|d| d.join("keyring-pkcs11").join("keyring-pkcs11.conf"));
                let found = [user, Some(src.etc.to_path_buf())]
                    .into_iter()
                    .flatten()
                    .find(|p| p.exists());
                (found, false)
            }
        };
        if let Some(path) = path {
            // Only root may configure a program its caller cannot control.
            let owners: &[u32] = if src.secure { &[0] } else { &[0, src.uid] };
            match read_file(&path, owners) {
                Ok(text) => cfg.add_file(&text, &path.display().to_string(), &mut warnings),
                Err(Refused::Missing) if !named => {}
                Err(why) => warnings.push(format!(
                    "ignoring the configuration file {}: {why}",
                    path.display()
                )),
            }
        }
        if let Some(v) = threads_env {
            cfg.set_threads(
                &v.to_string_lossy(),
                "KEYRING_PKCS11_THREADS",
                &mut warnings,
            );
        }
        (cfg, warnings)
    }

    fn add(&mut self, name: &str) {
        let name = name.trim();
        if !name.is_empty() && !self.named_keyrings.iter().any(|n| n == name) {
            self.named_keyrings.push(name.to_string());
        }
    }

    /// A thread count of 1 or more; more than the module ever uses is
    /// capped, anything else reported and ignored, never quoted.
    fn set_threads(&mut self, v: &str, origin: &str, warnings: &mut Vec<String>) {
        let max = crate::module::MAX_THREADS;
        match v.trim().parse::<usize>() {
            Ok(n) if n >= 1 => {
                if n > max {
                    warnings.push(format!("{origin}: at most {max} threads are used"));
                }
                self.threads = Some(n.min(max));
            }
            _ => warnings.push(format!(
                "{origin}: ignoring a thread count that is not a whole number from 1"
            )),
        }
    }

    fn add_list(&mut self, list: &str) {
        for n in list.split(|c: char| c == ',' || c.is_whitespace()) {
            self.add(n);
        }
    }

    fn add_file(&mut self, text: &str, origin: &str, warnings: &mut Vec<String>) {
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            match line.split_once('=') {
                Some((k, v)) if k.trim() == "keyring" => self.add(v),
                Some((k, v)) if k.trim() == "threads" => {
                    self.set_threads(v, &format!("{origin}:{}", i + 1), warnings)
                }
                _ => warnings.push(format!(
                    "{origin}:{}: ignoring a line that is not \"keyring = NAME\" or \"threads = N\"",
                    i + 1
                )),
            }
        }
    }
}

/// Why a configuration file was not read.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    Missing,
    Unreadable(std::io::ErrorKind),
    NotAFile,
    Owner { owner: u32, allowed: Vec<u32> },
    Writable { mode: u32 },
    TooLong,
    NotText,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Missing => f.write_str("it does not exist"),
            Refused::Unreadable(e) => write!(f, "cannot read it ({e})"),
            Refused::NotAFile => f.write_str("it is not a regular file"),
            Refused::Owner { owner, allowed } => {
                let allowed: Vec<String> = allowed.iter().map(|u| format!("uid {u}")).collect();
                write!(
                    f,
                    "it is owned by uid {owner}, not by {}",
                    allowed.join(" or ")
                )
            }
            Refused::Writable { mode } => write!(
                f,
                "it is writable by its group or by others (mode {mode:04o}); chmod go-w it"
            ),
            Refused::TooLong => write!(f, "it is longer than {MAX_FILE} bytes"),
            Refused::NotText => f.write_str("it is not UTF-8 text"),
        }
    }
}

/// Reads a configuration file if whoever could have written it may
/// configure this process: owned by one of `owners`, not writable by group
/// or others, a regular file. Checked on the opened file (fstat), so the
/// path cannot be made to point elsewhere between the check and the read;
/// opened non-blocking, so a FIFO named there cannot hang the host process.
fn read_file(path: &Path, owners: &[u32]) -> Result<String, Refused> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Refused::Missing,
            k => Refused::Unreadable(k),
        })?;
    let meta = f.metadata().map_err(|e| Refused::Unreadable(e.kind()))?;
    trusted(meta.is_file(), meta.uid(), meta.mode(), owners)?;
    if meta.len() > MAX_FILE {
        return Err(Refused::TooLong);
    }
    let mut raw = Vec::new();
    f.take(MAX_FILE + 1)
        .read_to_end(&mut raw)
        .map_err(|e| Refused::Unreadable(e.kind()))?;
    if raw.len() as u64 > MAX_FILE {
        return Err(Refused::TooLong);
    }
    String::from_utf8(raw).map_err(|_| Refused::NotText)
}

/// Whether a file of this kind, owner and mode may configure us.
fn trusted(regular: bool, owner: u32, mode: u32, owners: &[u32]) -> Result<(), Refused> {
    if !regular {
        return Err(Refused::NotAFile);
    }
    if !owners.contains(&owner) {
        return Err(Refused::Owner {
            owner,
            allowed: owners.to_vec(),
        });
    }
    if mode & 0o022 != 0 {
        return Err(Refused::Writable {
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn env_list_and_file_merge_without_duplicates() {
        let mut c = Config::default();
        let mut w = Vec::new();
        c.add_list("work, ci  web,,");
        c.add_file(
            "# comment\nkeyring = deploy\n\nkeyring=work # dup\nbogus line\n",
            "test",
            &mut w,
        );
        assert_eq!(c.named_keyrings, vec!["work", "ci", "web", "deploy"]);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn threads_from_the_file_and_the_environment() {
        let mut c = Config::default();
        let mut w = Vec::new();
        c.add_file("threads = 3\n", "f", &mut w);
        assert_eq!((c.threads, w.len()), (Some(3), 0));
        // Too many is capped and said; nonsense is said and changes nothing,
        // without being quoted.
        c.add_file(
            "threads = 99\nthreads = 0\nthreads = x7secret\n",
            "f",
            &mut w,
        );
        assert_eq!(c.threads, Some(crate::module::MAX_THREADS));
        assert_eq!(w.len(), 3);
        assert!(w[0].starts_with("f:1:") && w[1].starts_with("f:2:"));
        assert!(!w.iter().any(|w| w.contains("99") || w.contains("x7secret")));

        let vars: HashMap<&str, OsString> =
            [("KEYRING_PKCS11_THREADS", OsString::from("1"))].into();
        let env = |k: &str| vars.get(k).cloned();
        let none = Path::new("/nonexistent/keyring-pkcs11.conf");
        let src = |secure| Sources {
            env: &env,
            secure,
            uid: me(),
            etc: none,
        };
        assert_eq!(Config::load_from(&src(false)).0.threads, Some(1));
        // A caller cannot choose it for a program with more privileges.
        assert_eq!(Config::load_from(&src(true)).0.threads, None);
    }

    /// A scratch directory, removed when dropped.
    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let d = std::env::temp_dir().join(format!("kp11-config-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }

        fn file(&self, name: &str, text: &str, mode: u32) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn load(
        vars: &[(&str, &Path)],
        secure: bool,
        uid: u32,
        etc: &Path,
    ) -> (Vec<String>, Vec<String>) {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_os_str().to_owned()))
            .collect();
        let env = |k: &str| vars.get(k).cloned();
        let (c, w) = Config::load_from(&Sources {
            env: &env,
            secure,
            uid,
            etc,
        });
        (c.named_keyrings, w)
    }

    fn me() -> u32 {
        crate::kernel::keyctl::uid()
    }

    /// A bad line is reported by file and line number, never by content.
    /// Seen failing before the fix: the warning quoted the line.
    #[test]
    fn a_bad_line_is_reported_by_number_without_its_content() {
        let d = Dir::new("bad");
        let f = d.file(
            "c.conf",
            "keyring = a\nroot:$6$secret-hash:19000::\n",
            0o600,
        );
        let (names, w) = load(
            &[("KEYRING_PKCS11_CONFIG", &f)],
            false,
            me(),
            &d.0.join("none"),
        );
        assert_eq!(names, ["a"]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains(&format!("{}:2:", f.display())), "{w:?}");
        assert!(!w[0].contains("secret") && !w[0].contains("root:"), "{w:?}");
    }

    /// With AT_SECURE, neither the environment nor the home directory
    /// chooses anything; the system file still counts. Seen failing before
    /// the fix: the names came from KEYRING_PKCS11_KEYRINGS and the file.
    #[test]
    fn a_secure_process_ignores_the_environment() {
        let d = Dir::new("secure");
        let named = d.file("named.conf", "keyring = from-env-file\n", 0o600);
        std::fs::create_dir_all(d.0.join("keyring-pkcs11")).unwrap();
        d.file(
            "keyring-pkcs11/keyring-pkcs11.conf",
            "keyring = from-xdg\n",
            0o600,
        );
        let etc = d.file("etc.conf", "keyring = from-etc\n", 0o644);
        let list = PathBuf::from("from-env");
        let all = [
            ("KEYRING_PKCS11_KEYRINGS", list.as_path()),
            ("KEYRING_PKCS11_CONFIG", named.as_path()),
        ];
        let (names, _) = load(&all, false, me(), &etc);
        assert_eq!(names, ["from-env", "from-env-file"]);
        let (names, _) = load(&[("XDG_CONFIG_HOME", &d.0)], false, me(), &etc);
        assert_eq!(names, ["from-xdg"]);
        let (names, _) = load(&[("HOME", &d.0)], false, me(), &etc);
        assert_eq!(names, ["from-etc"], "HOME/.config does not exist here");

        let (names, w) = load(&all, true, me(), &etc);
        if me() == 0 {
            assert_eq!(names, ["from-etc"], "{w:?}");
        } else {
            // Not root: the system file is ours, which a secure process
            // does not accept.
            assert!(names.is_empty(), "{names:?}");
        }
        let (names, _) = load(&[("XDG_CONFIG_HOME", &d.0)], true, me(), &d.0.join("none"));
        assert!(names.is_empty(), "{names:?}");
    }

    /// Seen failing before the fix: both files were read.
    #[test]
    fn files_others_may_write_are_refused() {
        let d = Dir::new("mode");
        for (mode, ok) in [(0o600, true), (0o644, true), (0o664, false), (0o646, false)] {
            let f = d.file("c.conf", "keyring = k\n", mode);
            let (names, w) = load(&[("KEYRING_PKCS11_CONFIG", &f)], false, me(), &f);
            assert_eq!(names.len(), usize::from(ok), "mode {mode:o}: {w:?}");
            if !ok {
                assert!(w[0].contains("writable") && w[0].contains(&f.display().to_string()));
            }
        }
        // Not a regular file: refused without reading (and without
        // blocking on a FIFO or reading a device to its end).
        let (names, w) = load(&[("KEYRING_PKCS11_CONFIG", &d.0)], false, me(), &d.0);
        assert!(names.is_empty());
        assert!(w[0].contains("not a regular file"), "{w:?}");
        // Named but missing: said; the default places missing: silent.
        let gone = d.0.join("gone.conf");
        let (_, w) = load(&[("KEYRING_PKCS11_CONFIG", &gone)], false, me(), &gone);
        assert!(w[0].contains("does not exist"), "{w:?}");
        let (_, w) = load(&[], false, me(), &gone);
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn owners_root_or_the_real_user_and_only_root_when_secure() {
        assert_eq!(trusted(true, 0, 0o100644, &[0, 1000]), Ok(()));
        assert_eq!(trusted(true, 1000, 0o100600, &[0, 1000]), Ok(()));
        assert!(matches!(
            trusted(true, 1001, 0o100644, &[0, 1000]),
            Err(Refused::Owner { owner: 1001, .. })
        ));
        assert!(trusted(true, 1000, 0o100644, &[0]).is_err());
        assert_eq!(
            trusted(true, 0, 0o100664, &[0]),
            Err(Refused::Writable { mode: 0o664 })
        );
        assert_eq!(trusted(false, 0, 0o40755, &[0]), Err(Refused::NotAFile));
        let msg = Refused::Owner {
            owner: 1001,
            allowed: vec![0, 1000],
        }
        .to_string();
        assert_eq!(msg, "it is owned by uid 1001, not by uid 0 or uid 1000");
    }
}
