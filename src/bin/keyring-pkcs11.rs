//! `keyring-pkcs11`: import, generate, list, export and remove the RSA keys
//! that the keyring-pkcs11 PKCS#11 module serves from kernel keyrings.
//!
//! Everything goes through the library's own `Module` (the code behind the
//! C ABI), so the CLI applies exactly the checks and metadata that
//! `C_CreateObject`, `C_GenerateKeyPair` and `C_DestroyObject` do. The one
//! addition is a `KeyStore` wrapper that remembers the kernel's errno, so a
//! refusal is reported with its cause and remedy instead of a bare `CK_RV`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use cryptoki_sys::*;
use keyring_pkcs11::config::Config;
use keyring_pkcs11::error::Error as CkError;
use keyring_pkcs11::import::{self, ImportError};
use keyring_pkcs11::keyctl::{self, Errno, PkeyQuery, Serial};
use keyring_pkcs11::lifecycle;
use keyring_pkcs11::mechanism::{Hash, MechParams};
use keyring_pkcs11::module::{Module, Token};
use keyring_pkcs11::object::AttrValue;
use keyring_pkcs11::store::{KernelStore, KeyDesc, KeyStore, TokenKind};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

/// `println!` that does not panic when stdout is a closed pipe (`| head`).
macro_rules! out {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// Exit statuses.
const EXIT_INPUT: u8 = 1;
const EXIT_KERNEL: u8 = 2;

/// `CK_TOKEN_INFO.manufacturerID` of every token (the module's C ABI sets it).
const TOKEN_MANUFACTURER: &str = "Linux kernel keyrings";
const BUILTIN_TOKENS: [&str; 4] = ["session", "user", "persistent", "process"];

const ABOUT: &str = "Import, generate, list, export and remove the RSA keys that the \
keyring-pkcs11 PKCS#11 module serves from Linux kernel keyrings";

const LONG_ABOUT: &str = "\
Import, generate, list, export and remove the RSA keys that the keyring-pkcs11
PKCS#11 module serves from Linux kernel keyrings.

A key imported or generated here is handed to the kernel once. From then on it
can be used to sign and decrypt (by ssh -I, ssh-agent, p11tool, pkcs11-tool or
any other PKCS#11 client loading libkeyring_pkcs11.so), but not read back: the
kernel offers no way to (keyctl read answers EOPNOTSUPP), so neither this tool
nor the module nor a program with a memory-disclosure bug can leak it.

Tokens are keyrings. Choose one with --token (default: user):
  user        your user keyring (@u): keys live while you have processes
  session     your login session's keyring (@s): keys go when the session ends
  persistent  your persistent keyring: survives logout until it expires
  NAME        a keyring named NAME: create it with `keyring-pkcs11 tokens --create
              NAME`; PKCS#11 clients see it once it is configured, with
              KEYRING_PKCS11_KEYRINGS=NAME or a line `keyring = NAME` in
              ~/.config/keyring-pkcs11/keyring-pkcs11.conf
(The module also has a `process` token, whose keys die with the process that
uses the module; this tool cannot put keys there, as its process ends at once.)

A key is named by its label, by `id:HEX` (its CKA_ID), or by its PKCS#11 URI as
`list` prints it. Only RSA keys: the kernel cannot hold EC or Ed25519 private
keys.";

const AFTER_LONG_HELP: &str = "\
Examples:
  keyring-pkcs11 import ~/.ssh/id_rsa            # asks for the passphrase, if any
  keyring-pkcs11 import key.pem --label web --id 01 --token session
  keyring-pkcs11 generate --bits 3072 --label deploy
  keyring-pkcs11 export-pub deploy               # the line for authorized_keys
  ssh -I /path/to/libkeyring_pkcs11.so user@host # log in with the kernel's key
  keyring-pkcs11 list --all
  keyring-pkcs11 remove deploy
  keyring-pkcs11 tokens --create work            # a keyring \"work\" in @u

Exit status: 0 success; 1 usage or input error (unreadable or unsupported file,
wrong passphrase, no such key or token); 2 the kernel refused (the message names
the kernel's cause and what to do about it).

Environment: KEYRING_PKCS11_KEYRINGS and KEYRING_PKCS11_CONFIG name extra
keyrings, as for the module; KEYRING_PKCS11_LOG=info|debug shows the module's
own diagnostics (as -v and -vv do).";

#[derive(Parser)]
#[command(
    name = "keyring-pkcs11",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_long_help = AFTER_LONG_HELP,
    arg_required_else_help = true,
    after_help = "Run `keyring-pkcs11 --help` for an introduction and examples, \
                  `keyring-pkcs11 help COMMAND` for one command."
)]
struct Cli {
    /// Show the module's diagnostics on standard error (-vv: more)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load a private key file into a token (the kernel keeps it; the file is not changed)
    #[command(
        long_about = "\
Load a private key file into a token: the key is decoded, checked, converted to
PKCS#8 and handed to the kernel through the module's C_CreateObject. The file is
not changed; once the key is in the kernel, you may delete the file.

Formats (PEM or DER, detected from the content):
  PKCS#8            -----BEGIN PRIVATE KEY-----
  PKCS#1            -----BEGIN RSA PRIVATE KEY-----  (openssl -traditional)
  encrypted PKCS#8  -----BEGIN ENCRYPTED PRIVATE KEY-----  (asks for the passphrase)
  OpenSSH           -----BEGIN OPENSSH PRIVATE KEY-----  (with or without a passphrase)

The passphrase is asked for on the terminal, up to three times, or read from
--passphrase-file. Only RSA keys can be imported. A key whose label is taken in
the token, or that is in the token already, is refused rather than replaced.",
        after_long_help = "\
Examples:
  keyring-pkcs11 import ~/.ssh/id_rsa            # label: the key's comment
  keyring-pkcs11 import web.key --label web --cert web.crt --token session
  keyring-pkcs11 import key.p8 --passphrase-file pass.txt
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 | keyring-pkcs11 import - --label new
  shred -u web.key                                # the kernel has it now"
    )]
    Import(ImportArgs),
    /// Generate a new RSA key pair straight into a token
    #[command(
        long_about = "\
Generate a new RSA key pair into a token (C_GenerateKeyPair). The private key
goes to the kernel at once and exists nowhere else: it can never be exported or
backed up. Prints the new key's PKCS#11 URI and, last, its OpenSSH public key
line for authorized_keys.",
        after_long_help = "\
Examples:
  keyring-pkcs11 generate --label deploy
  keyring-pkcs11 generate --bits 4096 --label ci --id 01 --token work"
    )]
    Generate(GenerateArgs),
    /// List the keys in a token: URI, size, id, keyring, origin
    #[command(long_about = "\
List the RSA private keys of a token (--all: of every token), each with
  uri:      its PKCS#11 URI, as p11tool prints it (for p11tool, OpenSSL, curl...)
  key:      RSA and its size in bits, and the kernel key's serial (for keyctl)
  id:       its CKA_ID in hex (export-pub and remove take id:HEX)
  keyring:  the token and the keyring it lives in
  origin:   generated in the kernel's keyring, or imported
  cert:     the subject of its certificate, if the token holds one")]
    List(ListArgs),
    /// Print a key's public key, as an OpenSSH authorized_keys line or as PEM
    #[command(after_long_help = "\
Examples:
  keyring-pkcs11 export-pub deploy >> ~/.ssh/authorized_keys    # on the server
  keyring-pkcs11 export-pub id:01 --format pem > deploy.pub.pem
  keyring-pkcs11 export-pub 'pkcs11:token=work;object=ci'")]
    ExportPub(ExportArgs),
    /// Remove a key from its token (unlinks it from the keyring)
    #[command(
        long_about = "\
Remove a key from its token: the key is unlinked from the token's keyring (and
its metadata with it). The kernel destroys the key once nothing else links it.
Certificates of the key (same CKA_ID) in the token are removed with it.
There is no copy to restore the key from.",
        after_long_help = "\
Examples:
  keyring-pkcs11 remove deploy
  keyring-pkcs11 remove id:01 --token session
  keyring-pkcs11 remove 'pkcs11:token=work;object=ci;type=private'"
    )]
    Remove(RemoveArgs),
    /// List the tokens (keyrings), or create a named keyring
    #[command(
        long_about = "\
List every token the module offers: its label, whether its keyring exists,
how many keys it holds, its serial number and model, and which keyring it is.

With --create NAME, create a keyring NAME in your user keyring (@u), for a token
of its own. The module shows it once NAME is configured: in the environment
(KEYRING_PKCS11_KEYRINGS=NAME) or with a line `keyring = NAME` in the config file
(~/.config/keyring-pkcs11/keyring-pkcs11.conf, or $KEYRING_PKCS11_CONFIG).
This tool always accepts --token NAME, configured or not.",
        after_long_help = "\
Examples:
  keyring-pkcs11 tokens
  keyring-pkcs11 tokens --create work
  echo 'keyring = work' >> ~/.config/keyring-pkcs11/keyring-pkcs11.conf"
    )]
    Tokens(TokensArgs),
}

#[derive(Args)]
struct TokenArg {
    /// Token (keyring): user, session, persistent, or a keyring NAME [default: user]
    #[arg(short, long, value_name = "TOKEN")]
    token: Option<String>,
}

#[derive(Args)]
struct ImportArgs {
    /// The private key file (PEM or DER; - reads standard input)
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Label of the key (CKA_LABEL) [default: the OpenSSH comment, else the file name]
    #[arg(short, long)]
    label: Option<String>,
    /// CKA_ID in hex, e.g. 01 or a1:b2 [default: SHA-1 of the public key]
    #[arg(long, value_name = "HEX", value_parser = parse_id)]
    id: Option<HexId>,
    #[command(flatten)]
    token: TokenArg,
    /// Read the passphrase from this file (first line; - for standard input) instead of the terminal
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// An X.509 certificate (PEM or DER) to store with the key
    #[arg(long, value_name = "CERT")]
    cert: Option<PathBuf>,
}

#[derive(Args)]
struct GenerateArgs {
    /// Key size in bits: 2048, 3072 or 4096
    #[arg(short, long, default_value = "3072", value_parser = bits_parser())]
    bits: u32,
    /// Label of the key (CKA_LABEL) [default: rsa-<first 16 hex digits of its id>]
    #[arg(short, long)]
    label: Option<String>,
    /// CKA_ID in hex [default: SHA-1 of the public key]
    #[arg(long, value_name = "HEX", value_parser = parse_id)]
    id: Option<HexId>,
    #[command(flatten)]
    token: TokenArg,
}

#[derive(Args)]
struct ListArgs {
    #[command(flatten)]
    token: TokenArg,
    /// List the keys of every token
    #[arg(short, long, conflicts_with = "token")]
    all: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum PubFormat {
    /// One authorized_keys line: ssh-rsa AAAA... LABEL
    Openssh,
    /// X.509 SubjectPublicKeyInfo, PEM ("BEGIN PUBLIC KEY")
    Pem,
}

#[derive(Args)]
struct ExportArgs {
    /// The key: its label, id:HEX, or its pkcs11: URI
    #[arg(value_name = "KEY")]
    key: String,
    #[command(flatten)]
    token: TokenArg,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = PubFormat::Openssh)]
    format: PubFormat,
}

#[derive(Args)]
struct RemoveArgs {
    /// The key: its label, id:HEX, or its pkcs11: URI
    #[arg(value_name = "KEY")]
    key: String,
    #[command(flatten)]
    token: TokenArg,
}

#[derive(Args)]
struct TokensArgs {
    /// Create a keyring NAME in your user keyring (@u), for a token of its own
    #[arg(long, value_name = "NAME")]
    create: Option<String>,
}

/// A CKA_ID given in hex (a type of its own: clap takes `Vec<u8>` for many values).
#[derive(Clone)]
struct HexId(Vec<u8>);

fn parse_id(s: &str) -> Result<HexId, String> {
    parse_hex(s).map(HexId)
}

fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let digits: String = s
        .trim_start_matches("0x")
        .chars()
        .filter(|c| *c != ':')
        .collect();
    if digits.is_empty() || digits.len() % 2 != 0 {
        return Err("give an even number of hex digits, e.g. 01 or a1b2".into());
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16))
        .collect::<Result<_, _>>()
        .map_err(|_| "not hexadecimal".into())
}

/// The sizes `C_GenerateKeyPair` makes (`lifecycle::GENERATE_BITS`), shown
/// as the possible values.
const BITS: [&str; 3] = ["2048", "3072", "4096"];

fn bits_parser() -> impl clap::builder::TypedValueParser<Value = u32> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(BITS)
        .map(|s| s.parse::<u32>().expect("one of the possible values"))
}

/// A failure to report: what went wrong, then what to do about it.
#[derive(Debug)]
struct Fail {
    code: u8,
    msg: String,
    hints: Vec<String>,
}

impl Fail {
    fn input(msg: impl Into<String>) -> Fail {
        Fail {
            code: EXIT_INPUT,
            msg: msg.into(),
            hints: Vec::new(),
        }
    }

    fn kernel(msg: impl Into<String>) -> Fail {
        Fail {
            code: EXIT_KERNEL,
            msg: msg.into(),
            hints: Vec::new(),
        }
    }

    fn hint(mut self, h: impl Into<String>) -> Fail {
        self.hints.push(h.into());
        self
    }
}

type Res<T> = Result<T, Fail>;

// ---------------------------------------------------------------------------
// The kernel, as the library sees it, plus a memory of what it refused.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Resolve,
    Links,
    Describe,
    Query,
    Sign,
    PublicRaw,
    PrivateRaw,
    Add,
    Read,
    Unlink,
}

#[derive(Default)]
struct Recorder {
    inner: KernelStore,
    failures: Mutex<Vec<(Op, Errno)>>,
}

impl Recorder {
    fn note<T>(&self, op: Op, r: Result<T, Errno>) -> Result<T, Errno> {
        if let Err(e) = &r {
            self.failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((op, *e));
        }
        r
    }

    fn take(&self) -> Vec<(Op, Errno)> {
        std::mem::take(&mut *self.failures.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl KeyStore for Recorder {
    fn resolve(&self, kind: &TokenKind) -> Result<Serial, Errno> {
        self.note(Op::Resolve, self.inner.resolve(kind))
    }
    fn links(&self, keyring: Serial) -> Result<Vec<Serial>, Errno> {
        self.note(Op::Links, self.inner.links(keyring))
    }
    fn describe(&self, key: Serial) -> Result<KeyDesc, Errno> {
        self.note(Op::Describe, self.inner.describe(key))
    }
    fn query(&self, key: Serial) -> Result<PkeyQuery, Errno> {
        self.note(Op::Query, self.inner.query(key))
    }
    fn sign(
        &self,
        key: Serial,
        hash: Option<Hash>,
        input: &[u8],
        out: &mut [u8],
    ) -> Result<usize, Errno> {
        self.note(Op::Sign, self.inner.sign(key, hash, input, out))
    }
    fn public_raw(&self, key: Serial, input: &[u8], out: &mut [u8]) -> Result<usize, Errno> {
        self.note(Op::PublicRaw, self.inner.public_raw(key, input, out))
    }
    fn private_raw(&self, key: Serial, input: &[u8], out: &mut [u8]) -> Result<usize, Errno> {
        self.note(Op::PrivateRaw, self.inner.private_raw(key, input, out))
    }
    fn add(
        &self,
        keyring: Serial,
        key_type: &str,
        description: &str,
        payload: &[u8],
    ) -> Result<Serial, Errno> {
        self.note(
            Op::Add,
            self.inner.add(keyring, key_type, description, payload),
        )
    }
    fn read(&self, key: Serial) -> Result<Vec<u8>, Errno> {
        self.note(Op::Read, self.inner.read(key))
    }
    fn unlink(&self, keyring: Serial, key: Serial) -> Result<(), Errno> {
        self.note(Op::Unlink, self.inner.unlink(keyring, key))
    }
}

fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EDQUOT => "EDQUOT",
        libc::EBADMSG => "EBADMSG",
        libc::ENOPKG => "ENOPKG",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::ENOKEY => "ENOKEY",
        libc::EKEYREVOKED => "EKEYREVOKED",
        libc::EKEYEXPIRED => "EKEYEXPIRED",
        libc::EKEYREJECTED => "EKEYREJECTED",
        libc::ENOMEM => "ENOMEM",
        libc::EINVAL => "EINVAL",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOENT => "ENOENT",
        libc::EEXIST => "EEXIST",
        libc::ENOTDIR => "ENOTDIR",
        libc::EFAULT => "EFAULT",
        libc::ENFILE => "ENFILE",
        libc::ENXIO => "ENXIO",
        _ => "",
    }
}

/// "Disk quota exceeded (EDQUOT)".
fn errno_text(e: Errno) -> String {
    let text = std::io::Error::from_raw_os_error(e.0).to_string();
    let text = text
        .rsplit_once(" (os error")
        .map_or(text.as_str(), |(t, _)| t)
        .to_string();
    match errno_name(e.0) {
        "" => format!("{text} (errno {})", e.0),
        name => format!("{text} ({name})"),
    }
}

/// A kernel refusal while doing `what` in `token`: the errno, then its
/// meaning and remedy.
fn kernel_fail(what: &str, token: &str, op: Op, e: Errno) -> Fail {
    let f = Fail::kernel(format!(
        "{what} (token \"{token}\"): the kernel refused: {}",
        errno_text(e)
    ));
    match e.0 {
        libc::EDQUOT => {
            let mut f = f.hint("your key quota is full:");
            f.hints.extend(lifecycle::quota_hints());
            f
        }
        libc::EBADMSG if op == Op::Add => f
            .hint("this kernel cannot parse PKCS#8 private keys: its pkcs8_key_parser module is not loaded")
            .hint("load it: sudo modprobe pkcs8_key_parser")
            .hint("and at every boot: echo pkcs8_key_parser | sudo tee /etc/modules-load.d/pkcs8.conf"),
        libc::ENOPKG => f.hint(
            "the kernel lacks the crypto support for this key (RSA: CONFIG_CRYPTO_RSA, CONFIG_PKCS8_PRIVATE_KEY_PARSER)",
        ),
        libc::EACCES | libc::EPERM => f
            .hint("you may not write to this token's keyring")
            .hint("see its owner and permissions: keyctl describe KEYRING (keyring-pkcs11 tokens shows which)"),
        libc::ENOKEY | libc::EKEYREVOKED | libc::EKEYEXPIRED | libc::EKEYREJECTED => {
            f.hint("the keyring or the key is gone (revoked, expired or unlinked)")
        }
        libc::ENOMEM => f.hint("the kernel is out of memory"),
        _ => f,
    }
}

fn rv_name(rv: CK_RV) -> String {
    let name = match rv {
        CKR_ATTRIBUTE_VALUE_INVALID => "CKR_ATTRIBUTE_VALUE_INVALID",
        CKR_TEMPLATE_INCONSISTENT => "CKR_TEMPLATE_INCONSISTENT",
        CKR_TEMPLATE_INCOMPLETE => "CKR_TEMPLATE_INCOMPLETE",
        CKR_KEY_SIZE_RANGE => "CKR_KEY_SIZE_RANGE",
        CKR_TOKEN_NOT_PRESENT => "CKR_TOKEN_NOT_PRESENT",
        CKR_TOKEN_WRITE_PROTECTED => "CKR_TOKEN_WRITE_PROTECTED",
        CKR_DEVICE_ERROR => "CKR_DEVICE_ERROR",
        CKR_DEVICE_MEMORY => "CKR_DEVICE_MEMORY",
        CKR_FUNCTION_FAILED => "CKR_FUNCTION_FAILED",
        CKR_FUNCTION_NOT_SUPPORTED => "CKR_FUNCTION_NOT_SUPPORTED",
        CKR_KEY_TYPE_INCONSISTENT => "CKR_KEY_TYPE_INCONSISTENT",
        CKR_OBJECT_HANDLE_INVALID => "CKR_OBJECT_HANDLE_INVALID",
        CKR_HOST_MEMORY => "CKR_HOST_MEMORY",
        CKR_GENERAL_ERROR => "CKR_GENERAL_ERROR",
        CKR_ACTION_PROHIBITED => "CKR_ACTION_PROHIBITED",
        _ => "",
    };
    if name.is_empty() {
        format!("CK_RV {rv:#x}")
    } else {
        name.to_string()
    }
}

// ---------------------------------------------------------------------------
// The module, its tokens and keys.

/// One RSA private key as the module shows it.
struct Key {
    slot: CK_SLOT_ID,
    handle: CK_OBJECT_HANDLE,
    label: String,
    id: Vec<u8>,
    modulus: Vec<u8>,
    exponent: Vec<u8>,
    local: bool,
    spki: Vec<u8>,
}

impl Key {
    fn bits(&self) -> usize {
        match self.modulus.iter().position(|b| *b != 0) {
            Some(i) => (self.modulus.len() - i) * 8 - self.modulus[i].leading_zeros() as usize,
            None => 0,
        }
    }
}

/// A certificate as the module shows it.
struct Cert {
    handle: CK_OBJECT_HANDLE,
    label: String,
    id: Vec<u8>,
    subject: Vec<u8>,
}

impl Cert {
    /// The subject as RFC 4514 text, e.g. `CN=www.example.org`.
    fn subject_text(&self) -> String {
        use pkcs8::der::Decode;
        x509_cert::name::Name::from_der(&self.subject)
            .map_or_else(|_| "(unreadable subject)".into(), |n| n.to_string())
    }
}

struct App {
    store: Arc<Recorder>,
    module: Module,
    sessions: Mutex<HashMap<CK_SLOT_ID, CK_SESSION_HANDLE>>,
}

impl App {
    /// The module with the configured tokens, plus `extra` named keyrings.
    fn new(extra: &[&str]) -> App {
        let mut config = Config::load();
        for name in extra {
            if !BUILTIN_TOKENS.contains(name) && !config.named_keyrings.iter().any(|n| n == name) {
                config.named_keyrings.push((*name).to_string());
            }
        }
        let store = Arc::new(Recorder::default());
        let module = Module::new(store.clone(), &config);
        store.take();
        App {
            store,
            module,
            sessions: Mutex::default(),
        }
    }

    fn token(&self, slot: CK_SLOT_ID) -> &Token {
        &self.module.tokens()[slot as usize]
    }

    fn slot(&self, label: &str) -> Res<CK_SLOT_ID> {
        self.module
            .tokens()
            .iter()
            .position(|t| t.label == label)
            .map(|i| i as CK_SLOT_ID)
            .ok_or_else(|| Fail::input(format!("no token \"{label}\"")))
    }

    /// A read-write session on a present token, or why the token is absent.
    fn session(&self, slot: CK_SLOT_ID) -> Res<CK_SESSION_HANDLE> {
        if let Some(h) = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&slot)
        {
            return Ok(*h);
        }
        self.store.take();
        let h = self
            .module
            .open_session(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)
            .map_err(|e| self.absent(slot, e))?;
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(slot, h);
        Ok(h)
    }

    fn absent(&self, slot: CK_SLOT_ID, e: CkError) -> Fail {
        let t = self.token(slot);
        // Ask the kernel again, for the reason.
        let why = self.store.inner.resolve(&t.kind).err();
        if e.rv != CKR_TOKEN_NOT_PRESENT {
            return Fail::kernel(format!(
                "cannot open token \"{}\": {}",
                t.label,
                rv_name(e.rv)
            ));
        }
        match (&t.kind, why) {
            (TokenKind::Named(n), None | Some(Errno(libc::ENOKEY))) => {
                Fail::input(format!("token \"{n}\": there is no keyring named \"{n}\""))
                    .hint(format!("create it: keyring-pkcs11 tokens --create {n}"))
            }
            (TokenKind::Persistent, Some(Errno(libc::EOPNOTSUPP))) => Fail::kernel(
                "token \"persistent\": this kernel has no persistent keyrings (CONFIG_PERSISTENT_KEYRINGS)",
            )
            .hint("use the user or session token instead"),
            (_, Some(e)) => Fail::kernel(format!(
                "token \"{}\": the kernel will not give its keyring: {}",
                t.label,
                errno_text(e)
            )),
            (_, None) => Fail::kernel(format!("token \"{}\" is not present", t.label)),
        }
    }

    /// The handles of a token's objects of one class.
    fn objects(&self, slot: CK_SLOT_ID, class: CK_OBJECT_CLASS) -> Res<Vec<CK_OBJECT_HANDLE>> {
        let h = self.session(slot)?;
        self.store.take();
        let fail = |e: CkError| {
            Fail::kernel(format!(
                "cannot read the objects of token \"{}\": {}",
                self.token(slot).label,
                rv_name(e.rv)
            ))
        };
        self.module
            .find_init(h, &[(CKA_CLASS, ulong(class))])
            .map_err(|e| {
                match self
                    .store
                    .take()
                    .into_iter()
                    .rfind(|(op, _)| *op == Op::Links)
                {
                    Some((op, errno)) => {
                        kernel_fail("reading the keyring", &self.token(slot).label, op, errno)
                    }
                    None => fail(e),
                }
            })?;
        let mut handles = Vec::new();
        loop {
            let batch = self.module.find_next(h, 64).map_err(fail)?;
            if batch.is_empty() {
                break;
            }
            handles.extend(batch);
        }
        self.module.find_final(h).map_err(fail)?;
        Ok(handles)
    }

    /// The certificates of a token.
    fn certs(&self, slot: CK_SLOT_ID) -> Res<Vec<Cert>> {
        let h = self.session(slot)?;
        let mut certs = Vec::new();
        for handle in self.objects(slot, CKO_CERTIFICATE)? {
            let Ok(v) = self
                .module
                .attributes(h, handle, &[CKA_LABEL, CKA_ID, CKA_SUBJECT])
            else {
                continue;
            };
            let get = |i: usize| match &v[i] {
                AttrValue::Value(b) => b.clone(),
                _ => Vec::new(),
            };
            certs.push(Cert {
                handle,
                label: String::from_utf8_lossy(&get(0)).into_owned(),
                id: get(1),
                subject: get(2),
            });
        }
        Ok(certs)
    }

    /// The RSA private keys of a token.
    fn keys(&self, slot: CK_SLOT_ID) -> Res<Vec<Key>> {
        let handles = self.objects(slot, CKO_PRIVATE_KEY)?;
        let mut keys = Vec::new();
        for handle in handles {
            // A key may vanish between the search and now: skip it.
            if let Ok(k) = self.key(slot, handle) {
                keys.push(k);
            }
        }
        keys.sort_by(|a, b| a.label.cmp(&b.label));
        Ok(keys)
    }

    fn key(&self, slot: CK_SLOT_ID, handle: CK_OBJECT_HANDLE) -> Result<Key, CkError> {
        let h = self
            .session(slot)
            .map_err(|_| CkError::new(CKR_TOKEN_NOT_PRESENT))?;
        let v = self.module.attributes(
            h,
            handle,
            &[
                CKA_LABEL,
                CKA_ID,
                CKA_MODULUS,
                CKA_PUBLIC_EXPONENT,
                CKA_LOCAL,
                CKA_PUBLIC_KEY_INFO,
            ],
        )?;
        let get = |i: usize| match &v[i] {
            AttrValue::Value(b) => b.clone(),
            _ => Vec::new(),
        };
        Ok(Key {
            slot,
            handle,
            label: String::from_utf8_lossy(&get(0)).into_owned(),
            id: get(1),
            modulus: get(2),
            exponent: get(3),
            local: get(4) == [1],
            spki: get(5),
        })
    }

    /// The kernel's own view of a token's keyring: every key linked in it.
    fn kernel_view(&self, slot: CK_SLOT_ID) -> Option<(Serial, Vec<(Serial, KeyDesc)>)> {
        let kind = &self.token(slot).kind;
        let ring = self.store.inner.resolve(kind).ok()?;
        let links = self.store.inner.links(ring).ok()?;
        let keys = links
            .into_iter()
            .filter_map(|s| self.store.inner.describe(s).ok().map(|d| (s, d)))
            .collect();
        Some((ring, keys))
    }

    /// A URI's token part, as p11tool prints it.
    fn token_uri(&self, slot: CK_SLOT_ID) -> String {
        let t = self.token(slot);
        format!(
            "pkcs11:model={};manufacturer={};serial={};token={}",
            pct(t.model.as_bytes(), false),
            pct(TOKEN_MANUFACTURER.as_bytes(), false),
            pct(t.serial.as_bytes(), false),
            pct(t.label.as_bytes(), false)
        )
    }

    fn key_uri(&self, k: &Key) -> String {
        format!(
            "{};id={};object={};type=private",
            self.token_uri(k.slot),
            pct(&k.id, true),
            pct(k.label.as_bytes(), false)
        )
    }

    /// The module with the token a key selector (and `--token`) names,
    /// and the one key it selects.
    fn with_key(selector: &str, token: Option<&str>) -> Res<(App, Key)> {
        let sel = Selector::parse(selector)?;
        let extra: Vec<&str> = token.into_iter().chain(sel.token_label()).collect();
        let app = App::new(&extra);
        let key = app.find(&sel, token)?;
        Ok((app, key))
    }

    /// Resolves a key selector to exactly one key.
    fn find(&self, sel: &Selector, token: Option<&str>) -> Res<Key> {
        let tokens = self.module.tokens();
        let slots: Vec<CK_SLOT_ID> = match (sel, token) {
            (Selector::Uri(u), t) if u.names_token() => {
                let slots: Vec<_> = (0..tokens.len())
                    .filter(|&i| u.token_matches(&tokens[i]))
                    .map(|i| i as CK_SLOT_ID)
                    .collect();
                if let Some(t) = t {
                    if !slots.iter().any(|&s| self.token(s).label == t) {
                        return Err(Fail::input(format!(
                            "the URI names another token than --token {t}"
                        )));
                    }
                }
                slots
            }
            (Selector::Uri(_), None) => self.module.slot_list(true),
            (_, t) => vec![self.slot(t.unwrap_or("user"))?],
        };
        let mut found = Vec::new();
        let mut searched = Vec::new();
        for &slot in &slots {
            searched.push(self.token(slot).label.clone());
            // With a URI over several tokens, skip the absent ones.
            let keys = match self.keys(slot) {
                Ok(k) => k,
                Err(f) if slots.len() == 1 => return Err(f),
                Err(_) => continue,
            };
            found.extend(keys.into_iter().filter(|k| sel.matches(k)));
        }
        match found.len() {
            1 => Ok(found.pop().expect("one")),
            0 => Err(Fail::input(format!(
                "no key {} in token{} {}",
                sel.describe(),
                if searched.len() == 1 { "" } else { "s" },
                searched.join(", ")
            ))
            .hint(match (sel, token) {
                (Selector::Uri(_), _) => "see the keys and their URIs: keyring-pkcs11 list --all".to_string(),
                (_, Some(t)) => format!("see the keys: keyring-pkcs11 list --token {t}"),
                (_, None) => "see the keys: keyring-pkcs11 list (--all for every token; choose one with --token)".to_string(),
            })),
            _ => {
                let mut f = Fail::input(format!(
                    "{} keys {}; name one by its URI:",
                    found.len(),
                    sel.describe()
                ));
                for k in &found {
                    f = f.hint(self.key_uri(k));
                }
                Err(f)
            }
        }
    }

    /// A token that keys can be written to.
    fn writable_slot(&self, label: &str) -> Res<CK_SLOT_ID> {
        let slot = self.slot(label)?;
        if self.token(slot).kind == TokenKind::Process {
            return Err(Fail::input(
                "the process token's keyring dies with the process using it, here this command: a key put there would be gone at once",
            )
            .hint("use --token user (the default), session, persistent or a named keyring"));
        }
        self.session(slot)?;
        Ok(slot)
    }

    /// Refuses a label that is taken: the kernel would silently replace the
    /// key of the same description in the keyring.
    fn check_label_free(&self, slot: CK_SLOT_ID, label: &str) -> Res<()> {
        let taken = self.keys(slot)?.into_iter().find(|k| k.label == label);
        let kernel_taken = self.kernel_view(slot).is_some_and(|(_, keys)| {
            keys.iter()
                .any(|(_, d)| d.key_type == "asymmetric" && d.description == label)
        });
        if taken.is_some() || kernel_taken {
            let t = &self.token(slot).label;
            let mut f = Fail::input(format!(
                "token \"{t}\" already has a key labelled \"{label}\"; adding another would replace it"
            ));
            if let Some(k) = taken {
                f = f.hint(self.key_uri(&k));
            }
            return Err(f.hint(
                "choose another --label, or remove the old key first: keyring-pkcs11 remove LABEL",
            ));
        }
        Ok(())
    }

    /// Maps a failed create/generate/destroy to its cause.
    fn write_fail(&self, slot: CK_SLOT_ID, what: &str, e: CkError) -> Fail {
        let token = self.token(slot).label.clone();
        let failures = self.store.take();
        let kernel = failures
            .iter()
            .rev()
            .find(|(op, _)| matches!(op, Op::Add | Op::Unlink))
            .or_else(|| {
                failures
                    .iter()
                    .rev()
                    .find(|(op, _)| matches!(op, Op::Query | Op::PrivateRaw | Op::PublicRaw))
            });
        if let Some((op, errno)) = kernel {
            return kernel_fail(what, &token, *op, *errno);
        }
        match e.rv {
            CKR_TEMPLATE_INCONSISTENT => Fail::kernel(format!(
                "{what} (token \"{token}\") failed: the kernel's key did not check out against the public key (size, capabilities or a test operation)"
            ))
            .hint("run again with -v to see the module's diagnostics"),
            CKR_KEY_SIZE_RANGE => Fail::input(format!("{what}: unsupported key size")),
            rv => Fail::kernel(format!(
                "{what} (token \"{token}\") failed: {}",
                rv_name(rv)
            ))
            .hint("run again with -v to see the module's diagnostics"),
        }
    }

    /// Prints a key as `list` shows it.
    fn print_key(&self, out: &mut impl Write, k: &Key, serial: Option<Serial>, certs: &[Cert]) {
        let t = self.token(k.slot);
        let _ = writeln!(out, "{}", k.label);
        let _ = writeln!(out, "  uri:      {}", self.key_uri(k));
        let _ = writeln!(
            out,
            "  key:      RSA {} bits{}",
            k.bits(),
            serial.map_or(String::new(), |s| format!(", kernel key {s}"))
        );
        let _ = writeln!(out, "  id:       {}", lifecycle::hex(&k.id));
        let _ = writeln!(
            out,
            "  keyring:  token \"{}\": {}",
            t.label,
            keyring_kind(&t.kind)
        );
        let _ = writeln!(
            out,
            "  origin:   {}",
            if k.local {
                "generated in the kernel's keyring (never left it)"
            } else {
                "imported"
            }
        );
        for c in certs.iter().filter(|c| c.id == k.id) {
            let _ = writeln!(out, "  cert:     {}", c.subject_text());
        }
    }

    /// Kernel key serials by label, for the keys of a token.
    fn serials(&self, slot: CK_SLOT_ID) -> HashMap<String, Serial> {
        self.kernel_view(slot)
            .map(|(_, keys)| {
                keys.into_iter()
                    .filter(|(_, d)| d.key_type == "asymmetric")
                    .map(|(s, d)| (d.description, s))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn keyring_kind(kind: &TokenKind) -> String {
    match kind {
        TokenKind::Session => "session keyring (@s)".into(),
        TokenKind::User => "user keyring (@u)".into(),
        TokenKind::Persistent => "persistent keyring".into(),
        TokenKind::Process => "process keyring (@p)".into(),
        TokenKind::Named(n) => format!("named keyring \"{n}\""),
    }
}

/// RFC 7512 percent-encoding as p11tool prints it: letters, digits and
/// `-_.` as they are, every other byte `%XX`; `force` encodes all bytes.
fn pct(b: &[u8], force: bool) -> String {
    b.iter()
        .map(|&c| {
            if !force && (c.is_ascii_alphanumeric() || b"-_.".contains(&c)) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

fn unpct(s: &str) -> Res<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Fail::input(format!("bad percent-encoding in URI: {s}")))?;
            out.push(h);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// A PKCS#11 URI's path attributes (RFC 7512).
#[derive(Default)]
struct Uri {
    token: Option<String>,
    manufacturer: Option<String>,
    serial: Option<String>,
    model: Option<String>,
    object: Option<String>,
    id: Option<Vec<u8>>,
    kind: Option<String>,
}

impl Uri {
    fn parse(s: &str) -> Res<Uri> {
        let body = s
            .strip_prefix("pkcs11:")
            .ok_or_else(|| Fail::input("a PKCS#11 URI starts with pkcs11:"))?;
        let path = body.split_once('?').map_or(body, |(p, _)| p);
        let mut u = Uri::default();
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (k, v) = attr
                .split_once('=')
                .ok_or_else(|| Fail::input(format!("bad URI attribute \"{attr}\"")))?;
            let v = unpct(v)?;
            let text = || {
                String::from_utf8(v.clone())
                    .map_err(|_| Fail::input(format!("URI attribute {k} is not UTF-8")))
            };
            match k {
                "token" => u.token = Some(text()?),
                "manufacturer" => u.manufacturer = Some(text()?),
                "serial" => u.serial = Some(text()?),
                "model" => u.model = Some(text()?),
                "object" => u.object = Some(text()?),
                "id" => u.id = Some(v),
                "type" => u.kind = Some(text()?),
                "library-manufacturer"
                | "library-description"
                | "library-version"
                | "slot-description"
                | "slot-manufacturer"
                | "slot-id" => {}
                other => {
                    return Err(Fail::input(format!(
                        "unsupported URI attribute \"{other}\""
                    )));
                }
            }
        }
        if let Some(t) = &u.kind {
            if t != "private" && t != "public" {
                return Err(Fail::input(format!(
                    "type={t}: this tool handles keys (type=private or type=public)"
                )));
            }
        }
        Ok(u)
    }

    fn names_token(&self) -> bool {
        self.token.is_some() || self.serial.is_some() || self.model.is_some()
    }

    fn token_matches(&self, t: &Token) -> bool {
        self.token.as_ref().is_none_or(|x| *x == t.label)
            && self.serial.as_ref().is_none_or(|x| *x == t.serial)
            && self.model.as_ref().is_none_or(|x| x == t.model)
            && self
                .manufacturer
                .as_ref()
                .is_none_or(|x| x == TOKEN_MANUFACTURER)
    }
}

enum Selector {
    Label(String),
    Id(Vec<u8>),
    Uri(Uri),
}

impl Selector {
    fn parse(s: &str) -> Res<Selector> {
        if s.starts_with("pkcs11:") {
            return Uri::parse(s).map(Selector::Uri);
        }
        if let Some(hex) = s.strip_prefix("id:") {
            return parse_hex(hex)
                .map(Selector::Id)
                .map_err(|e| Fail::input(format!("id:{hex}: {e}")));
        }
        if s.is_empty() {
            return Err(Fail::input("give a key's label, id:HEX or pkcs11: URI"));
        }
        Ok(Selector::Label(s.to_string()))
    }

    fn matches(&self, k: &Key) -> bool {
        match self {
            Selector::Label(l) => k.label == *l,
            Selector::Id(id) => k.id == *id,
            Selector::Uri(u) => {
                u.object.as_ref().is_none_or(|o| *o == k.label)
                    && u.id.as_ref().is_none_or(|i| *i == k.id)
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Selector::Label(l) => format!("labelled \"{l}\""),
            Selector::Id(id) => format!("with id {}", lifecycle::hex(id)),
            Selector::Uri(_) => "matching the URI".into(),
        }
    }

    /// The token a URI names by label, so that an unconfigured named
    /// keyring still gets a token.
    fn token_label(&self) -> Option<&str> {
        match self {
            Selector::Uri(u) => u.token.as_deref(),
            _ => None,
        }
    }
}

/// The OpenSSH `authorized_keys` line of a key.
fn openssh_line(k: &Key) -> Res<String> {
    let mpint = |b: &[u8]| {
        ssh_key::Mpint::from_positive_bytes(b)
            .map_err(|e| Fail::kernel(format!("bad public key from the module: {e}")))
    };
    let public = ssh_key::public::RsaPublicKey {
        e: mpint(&k.exponent)?,
        n: mpint(&k.modulus)?,
    };
    ssh_key::PublicKey::new(ssh_key::public::KeyData::Rsa(public), k.label.as_str())
        .to_openssh()
        .map_err(|e| Fail::kernel(format!("cannot encode the OpenSSH public key: {e}")))
}

/// The module next to this program, for the `ssh -I` hint.
fn module_path() -> Option<PathBuf> {
    let p = std::env::current_exe()
        .ok()?
        .parent()?
        .join("libkeyring_pkcs11.so");
    p.exists().then_some(p)
}

// ---------------------------------------------------------------------------
// Commands.

/// Reads a file (or standard input for `-`) that may hold a secret, into a
/// buffer that is wiped when dropped. It grows by copying into a new wiped
/// buffer, never by reallocating, so no copy of the secret is left behind.
fn read_input(path: &Path, what: &str) -> Res<Zeroizing<Vec<u8>>> {
    fn read_all(mut r: impl Read, hint: usize) -> std::io::Result<Zeroizing<Vec<u8>>> {
        let mut data = Zeroizing::new(Vec::with_capacity(hint.max(4096) + 1));
        loop {
            if data.len() == data.capacity() {
                let mut bigger = Zeroizing::new(Vec::with_capacity(data.capacity() * 2));
                bigger.extend_from_slice(&data);
                data = bigger;
            }
            let len = data.len();
            let spare = data.capacity() - len;
            data.resize(len + spare, 0);
            match r.read(&mut data[len..]) {
                Ok(0) => {
                    data.truncate(len);
                    return Ok(data);
                }
                Ok(n) => data.truncate(len + n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => data.truncate(len),
                Err(e) => return Err(e),
            }
        }
    }
    let r = if path.as_os_str() == "-" {
        read_all(std::io::stdin().lock(), 0)
    } else {
        std::fs::File::open(path).and_then(|f| {
            let hint = f.metadata().map_or(0, |m| m.len() as usize);
            read_all(f, hint)
        })
    };
    r.map_err(|e| Fail::input(format!("cannot read {what} {}: {e}", path.display())))
}

/// Where passphrases come from: a file (read once), or the terminal (up to
/// three tries).
fn passphrases<'a>(
    file: Option<&'a Path>,
    key_name: &'a str,
) -> impl FnMut(u32) -> Result<Zeroizing<String>, ImportError> + 'a {
    move |attempt| match file {
        Some(path) => {
            if attempt > 1 {
                return Err(ImportError::WrongPassphrase);
            }
            let raw = read_input(path, "passphrase file")
                .map_err(|f| ImportError::NoPassphrase(f.msg))?;
            let line = raw.split(|b| *b == b'\n').next().unwrap_or(&[]);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            std::str::from_utf8(line)
                .map(|s| Zeroizing::new(s.to_string()))
                .map_err(|_| ImportError::NoPassphrase("the passphrase file is not UTF-8".into()))
        }
        None => {
            if attempt > 3 {
                return Err(ImportError::WrongPassphrase);
            }
            if attempt > 1 {
                eprintln!("Wrong passphrase, try again.");
            }
            rpassword::prompt_password(format!("Enter the passphrase for {key_name}: "))
                .map(Zeroizing::new)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::Interrupted => {
                        ImportError::NoPassphrase("no passphrase given; nothing was imported".into())
                    }
                    _ => ImportError::NoPassphrase(
                        "the key is encrypted, and there is no terminal to ask for its passphrase on; give it with --passphrase-file FILE (- reads standard input)".into(),
                    ),
                })
        }
    }
}

fn ulong(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

fn cmd_import(a: ImportArgs) -> Res<()> {
    let token = a.token.token.as_deref().unwrap_or("user");
    if a.file.as_os_str() == "-" && a.passphrase_file.as_deref() == Some(Path::new("-")) {
        return Err(Fail::input(
            "the key and its passphrase cannot both come from standard input",
        ));
    }
    let shown = a.file.display().to_string();
    let data = read_input(&a.file, "key file")?;
    let cert = match &a.cert {
        Some(p) => {
            let raw = read_input(p, "certificate")?;
            Some(
                import::certificate(&raw)
                    .map_err(|e| Fail::input(format!("certificate {}: {e}", p.display())))?,
            )
        }
        None => None,
    };
    let app = App::new(&[token]);
    let slot = app.writable_slot(token)?;
    let mut source = passphrases(a.passphrase_file.as_deref(), &shown);
    let key = import::decode(&data, &mut source).map_err(|e| {
        let f = Fail::input(format!("{shown}: {e}"));
        match e {
            ImportError::WrongPassphrase => f.hint(if a.passphrase_file.is_some() {
                "the passphrase file's first line is the passphrase (without the newline)"
            } else {
                "the key was not imported"
            }),
            ImportError::NotRsa(_) => f.hint(
                "make an RSA key instead: keyring-pkcs11 generate, or ssh-keygen -t rsa -b 3072",
            ),
            _ => f,
        }
    })?;
    drop(data);
    if let Some(c) = &cert {
        match &c.rsa_public {
            Some((n, e)) if *n == key.modulus && *e == key.exponent => {}
            _ => {
                return Err(Fail::input(
                    "the certificate is not for this key (its public key differs)",
                ));
            }
        }
    }
    let label = a.label.clone().or(key.comment.clone()).or_else(|| {
        (a.file.as_os_str() != "-")
            .then(|| a.file.file_name().map(|n| n.to_string_lossy().into_owned()))
            .flatten()
    });
    if let Some(l) = &label {
        if l.is_empty() {
            return Err(Fail::input("the label may not be empty"));
        }
        app.check_label_free(slot, l)?;
    }
    if let Some(k) = app
        .keys(slot)?
        .into_iter()
        .find(|k| k.modulus == key.modulus)
    {
        return Err(Fail::input(format!(
            "this key is already in token \"{}\", labelled \"{}\"",
            app.token(slot).label,
            k.label
        ))
        .hint(app.key_uri(&k)));
    }
    let h = app.session(slot)?;
    let mut template: Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> = vec![
        (CKA_CLASS, ulong(CKO_PRIVATE_KEY)),
        (CKA_KEY_TYPE, ulong(CKK_RSA)),
        (CKA_TOKEN, vec![CK_TRUE]),
    ];
    if let Some(l) = &label {
        template.push((CKA_LABEL, l.as_bytes().to_vec()));
    }
    if let Some(HexId(id)) = &a.id {
        template.push((CKA_ID, id.clone()));
    }
    let mut refs: Vec<(CK_ATTRIBUTE_TYPE, &[u8])> =
        template.iter().map(|(t, v)| (*t, v.as_slice())).collect();
    refs.push((CKA_VALUE, &key.pkcs8));
    app.store.take();
    let handle = app
        .module
        .create_object(h, &refs)
        .map_err(|e| app.write_fail(slot, "adding the key", e))?;
    drop(refs);
    let created = app
        .key(slot, handle)
        .map_err(|e| app.write_fail(slot, "reading the new key", e))?;
    if let Some(c) = &cert {
        let owned: Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> = vec![
            (CKA_CLASS, ulong(CKO_CERTIFICATE)),
            (CKA_CERTIFICATE_TYPE, ulong(CKC_X_509)),
            (CKA_TOKEN, vec![CK_TRUE]),
            (CKA_LABEL, created.label.as_bytes().to_vec()),
            (CKA_ID, created.id.clone()),
            (CKA_SUBJECT, c.subject.clone()),
            (CKA_ISSUER, c.issuer.clone()),
            (CKA_SERIAL_NUMBER, c.serial.clone()),
            (CKA_VALUE, c.der.clone()),
        ];
        let tmpl: Vec<(CK_ATTRIBUTE_TYPE, &[u8])> =
            owned.iter().map(|(t, v)| (*t, v.as_slice())).collect();
        app.store.take();
        if let Err(e) = app.module.create_object(h, &tmpl) {
            // All or nothing: take the key out again.
            let undo = app.module.destroy_object(h, handle);
            let kept = if undo.is_ok() {
                "nothing was imported"
            } else {
                "the key itself WAS imported; remove it with keyring-pkcs11 remove"
            };
            return Err(if e.rv == CKR_ATTRIBUTE_VALUE_INVALID {
                Fail::input(format!(
                    "certificates are not supported yet by this module, or not this one (C_CreateObject answered CKR_ATTRIBUTE_VALUE_INVALID for it); {kept}"
                ))
                .hint("import the key without --cert")
            } else {
                let mut f = app.write_fail(slot, "adding the certificate", e);
                f.msg.push_str(&format!("; {kept}"));
                f
            });
        }
    }
    let serials = app.serials(slot);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "imported {} ({} key) into token \"{}\"{}:",
        shown,
        key.format,
        app.token(slot).label,
        if cert.is_some() {
            ", with its certificate"
        } else {
            ""
        }
    );
    let certs = app.certs(slot).unwrap_or_default();
    app.print_key(
        &mut out,
        &created,
        serials.get(&created.label).copied(),
        &certs,
    );
    if let Some(m) = module_path() {
        let _ = writeln!(out, "use it:     ssh -I {} USER@HOST", m.display());
    }
    Ok(())
}

fn cmd_generate(a: GenerateArgs) -> Res<()> {
    let token = a.token.token.as_deref().unwrap_or("user");
    let app = App::new(&[token]);
    let slot = app.writable_slot(token)?;
    if let Some(l) = &a.label {
        if l.is_empty() {
            return Err(Fail::input("the label may not be empty"));
        }
        app.check_label_free(slot, l)?;
    }
    let h = app.session(slot)?;
    let bits = ulong(CK_ULONG::from(a.bits));
    let mut public: Vec<(CK_ATTRIBUTE_TYPE, &[u8])> = vec![
        (CKA_MODULUS_BITS, &bits),
        (CKA_PUBLIC_EXPONENT, &[1, 0, 1]),
        (CKA_TOKEN, &[CK_TRUE]),
    ];
    let mut private: Vec<(CK_ATTRIBUTE_TYPE, &[u8])> =
        vec![(CKA_TOKEN, &[CK_TRUE]), (CKA_SENSITIVE, &[CK_TRUE])];
    if let Some(l) = &a.label {
        private.push((CKA_LABEL, l.as_bytes()));
        public.push((CKA_LABEL, l.as_bytes()));
    }
    if let Some(HexId(id)) = &a.id {
        private.push((CKA_ID, id));
        public.push((CKA_ID, id));
    }
    app.store.take();
    let (_, handle) = app
        .module
        .generate_key_pair(
            h,
            CKM_RSA_PKCS_KEY_PAIR_GEN,
            &MechParams::None,
            &public,
            &private,
        )
        .map_err(|e| app.write_fail(slot, "generating a key", e))?;
    let key = app
        .key(slot, handle)
        .map_err(|e| app.write_fail(slot, "reading the new key", e))?;
    let serials = app.serials(slot);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "generated an RSA {}-bit key in token \"{}\":",
        a.bits,
        app.token(slot).label
    );
    app.print_key(&mut out, &key, serials.get(&key.label).copied(), &[]);
    let _ = writeln!(
        out,
        "OpenSSH public key, for ~/.ssh/authorized_keys on a server:"
    );
    let _ = writeln!(out, "{}", openssh_line(&key)?);
    Ok(())
}

fn cmd_list(a: ListArgs) -> Res<()> {
    let token = a.token.token.as_deref();
    let app = App::new(&token.into_iter().collect::<Vec<_>>());
    let slots = if a.all {
        app.module.slot_list(true)
    } else {
        vec![app.slot(token.unwrap_or("user"))?]
    };
    let mut out = std::io::stdout().lock();
    let mut total = 0;
    for slot in slots {
        let keys = match app.keys(slot) {
            Ok(k) => k,
            Err(f) if a.all => {
                eprintln!("keyring-pkcs11: {}", f.msg);
                continue;
            }
            Err(f) => return Err(f),
        };
        let certs = app.certs(slot).unwrap_or_default();
        let view = app.kernel_view(slot);
        let serials: HashMap<&str, Serial> = view
            .as_ref()
            .map(|(_, keys)| {
                keys.iter()
                    .filter(|(_, d)| d.key_type == "asymmetric")
                    .map(|(s, d)| (d.description.as_str(), *s))
                    .collect()
            })
            .unwrap_or_default();
        for k in &keys {
            if total > 0 {
                let _ = writeln!(out);
            }
            app.print_key(&mut out, k, serials.get(k.label.as_str()).copied(), &certs);
            total += 1;
        }
        for c in certs.iter().filter(|c| !keys.iter().any(|k| k.id == c.id)) {
            if total > 0 {
                let _ = writeln!(out);
            }
            let _ = writeln!(out, "{} (a certificate without its key)", c.label);
            let _ = writeln!(out, "  cert:     {}", c.subject_text());
            let _ = writeln!(out, "  id:       {}", lifecycle::hex(&c.id));
            let _ = writeln!(
                out,
                "  keyring:  token \"{}\": {}",
                app.token(slot).label,
                keyring_kind(&app.token(slot).kind)
            );
            total += 1;
        }
        // Asymmetric keys the module does not offer: say so, not silently.
        let unusable: Vec<String> = serials
            .iter()
            .filter(|(d, _)| !keys.iter().any(|k| k.label == **d))
            .map(|(d, s)| format!("\"{d}\" ({s})"))
            .collect();
        if !unusable.is_empty() {
            eprintln!(
                "note: token \"{}\" also holds asymmetric key(s) that are not usable RSA private keys (certificates, public keys, other algorithms, or keys you may not use): {}",
                app.token(slot).label,
                unusable.join(", ")
            );
        }
    }
    if total == 0 {
        eprintln!(
            "no keys{}; add one with keyring-pkcs11 import FILE or keyring-pkcs11 generate",
            if a.all {
                " in any token".to_string()
            } else {
                format!(" in token \"{}\"", token.unwrap_or("user"))
            }
        );
    }
    Ok(())
}

fn cmd_export(a: ExportArgs) -> Res<()> {
    let (_app, key) = App::with_key(&a.key, a.token.token.as_deref())?;
    match a.format {
        PubFormat::Openssh => out!("{}", openssh_line(&key)?),
        PubFormat::Pem => {
            let pem =
                pkcs8::der::pem::encode_string("PUBLIC KEY", pkcs8::LineEnding::LF, &key.spki)
                    .map_err(|e| Fail::kernel(format!("cannot encode the public key: {e}")))?;
            let _ = write!(std::io::stdout(), "{pem}");
        }
    }
    Ok(())
}

fn cmd_remove(a: RemoveArgs) -> Res<()> {
    let (app, key) = App::with_key(&a.key, a.token.token.as_deref())?;
    let uri = app.key_uri(&key);
    let h = app.session(key.slot)?;
    // Its certificates (same CKA_ID) go with it: without the key they are
    // of no use in this token.
    let certs: Vec<Cert> = app
        .certs(key.slot)?
        .into_iter()
        .filter(|c| c.id == key.id)
        .collect();
    app.store.take();
    app.module
        .destroy_object(h, key.handle)
        .map_err(|e| app.write_fail(key.slot, "removing the key", e))?;
    out!(
        "removed \"{}\" from token \"{}\"\n  was: {uri}",
        key.label,
        app.token(key.slot).label
    );
    for c in certs {
        app.store.take();
        app.module
            .destroy_object(h, c.handle)
            .map_err(|e| app.write_fail(key.slot, "removing the key's certificate", e))?;
        out!("  and its certificate: {}", c.subject_text());
    }
    Ok(())
}

fn check_keyring_name(name: &str) -> Res<()> {
    if name.is_empty() {
        return Err(Fail::input("give the new keyring a name"));
    }
    if BUILTIN_TOKENS.contains(&name) {
        return Err(Fail::input(format!(
            "\"{name}\" is the label of a built-in token; choose another name"
        )));
    }
    if name.starts_with('.') {
        return Err(Fail::input(
            "names starting with '.' are reserved by the kernel",
        ));
    }
    if name
        .chars()
        .any(|c| c == ',' || c == '#' || c.is_whitespace() || c.is_control())
    {
        return Err(Fail::input(
            "a keyring name for a token may not contain spaces, commas or '#' (they separate names in the configuration)",
        ));
    }
    if name.len() > 32 {
        return Err(Fail::input(
            "a token label has at most 32 bytes (PKCS#11 CK_TOKEN_INFO.label); choose a shorter name",
        ));
    }
    Ok(())
}

fn cmd_tokens(a: TokensArgs) -> Res<()> {
    if let Some(name) = a.create {
        check_keyring_name(&name)?;
        let existing = keyctl::search(keyctl::KEY_SPEC_SESSION_KEYRING, "keyring", &name)
            .or_else(|_| keyctl::search(keyctl::KEY_SPEC_USER_KEYRING, "keyring", &name));
        let configured = Config::load().named_keyrings.contains(&name);
        match existing {
            Ok(serial) => out!("keyring \"{name}\" already exists (keyring {serial})"),
            Err(_) => {
                let serial = keyctl::add_key("keyring", &name, &[], keyctl::KEY_SPEC_USER_KEYRING)
                    .map_err(|e| kernel_fail("creating a keyring", "user", Op::Add, e))?;
                out!("created keyring \"{name}\" (keyring {serial}) in your user keyring (@u)");
            }
        }
        if configured {
            out!("it is configured: PKCS#11 clients see it as token \"{name}\"");
        } else {
            out!(
                "to make PKCS#11 clients (ssh -I, p11tool, ...) see it as token \"{name}\", configure it:\n  export KEYRING_PKCS11_KEYRINGS={name}\nor add this line to ~/.config/keyring-pkcs11/keyring-pkcs11.conf:\n  keyring = {name}\nThis tool takes --token {name} in any case."
            );
        }
        return Ok(());
    }
    let app = App::new(&[]);
    let mut rows = vec![[
        "TOKEN".to_string(),
        "PRESENT".into(),
        "KEYS".into(),
        "SERIAL".into(),
        "MODEL".into(),
        "KEYRING".into(),
        "DESCRIPTION".into(),
    ]];
    for slot in app.module.slot_list(false) {
        let t = app.token(slot);
        let present = app
            .module
            .slot_info(slot)
            .map(|s| s.present)
            .unwrap_or(false);
        let (keys, ring) = if present {
            (
                app.keys(slot)
                    .map_or("?".to_string(), |k| k.len().to_string()),
                app.kernel_view(slot)
                    .map_or("?".to_string(), |(r, _)| r.to_string()),
            )
        } else {
            ("-".into(), "-".into())
        };
        rows.push([
            t.label.clone(),
            if present { "yes" } else { "no" }.into(),
            keys,
            t.serial.clone(),
            t.model.to_string(),
            ring,
            t.description.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = std::io::stdout().lock();
    for r in &rows {
        let mut line = String::new();
        for (c, w) in widths.iter().enumerate() {
            line.push_str(&format!("{:w$}  ", r[c]));
        }
        line.push_str(&r[6]);
        let _ = writeln!(out, "{line}");
    }
    for r in rows.iter().skip(1).filter(|r| r[1] == "no") {
        let _ = writeln!(
            out,
            "token \"{0}\" has no keyring yet; create it: keyring-pkcs11 tokens --create {0}",
            r[0]
        );
    }
    let _ = writeln!(
        out,
        "Choose a token with --token LABEL; PKCS#11 clients take URIs like pkcs11:token=LABEL."
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_INPUT)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // The module logs to stderr; here its warnings would only repeat, less
    // clearly, what this tool reports itself. -v and -vv show them.
    use keyring_pkcs11::log::{self, Level};
    log::set_level(match cli.verbose {
        0 => match std::env::var("KEYRING_PKCS11_LOG") {
            Ok(v) => log::parse(Some(&v)),
            Err(_) => Level::Error,
        },
        1 => Level::Info,
        _ => Level::Debug,
    });
    let r = match cli.command {
        Command::Import(a) => cmd_import(a),
        Command::Generate(a) => cmd_generate(a),
        Command::List(a) => cmd_list(a),
        Command::ExportPub(a) => cmd_export(a),
        Command::Remove(a) => cmd_remove(a),
        Command::Tokens(a) => cmd_tokens(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("keyring-pkcs11: error: {}", f.msg);
            for h in &f.hints {
                eprintln!("  {h}");
            }
            ExitCode::from(f.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn uris_encode_like_p11tool_and_parse_back() {
        assert_eq!(pct(b"user keyring", false), "user%20keyring");
        assert_eq!(pct(b"a-b_c.d/e", false), "a-b_c.d%2Fe");
        assert_eq!(pct(&[0xab, 0x01], true), "%AB%01");
        let u = Uri::parse("pkcs11:model=user%20keyring;token=user;id=%ab%01;object=my%20key;type=private?pin-value=x").unwrap();
        assert_eq!(u.token.as_deref(), Some("user"));
        assert_eq!(u.model.as_deref(), Some("user keyring"));
        assert_eq!(u.object.as_deref(), Some("my key"));
        assert_eq!(u.id, Some(vec![0xab, 0x01]));
        assert!(Uri::parse("pkcs11:type=cert").is_err());
        assert!(Uri::parse("pkcs11:object=%zz").is_err());
        assert!(Uri::parse("pkcs11:bogus=1").is_err());
    }

    #[test]
    fn hex_ids_and_sizes() {
        assert_eq!(parse_hex("a1:B2").unwrap(), vec![0xa1, 0xb2]);
        assert_eq!(parse_hex("0x01").unwrap(), vec![1]);
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
        let generate =
            |args: &[&str]| Cli::try_parse_from([&["keyring-pkcs11", "generate"], args].concat());
        assert!(matches!(
            generate(&["--bits", "4096"]).map(|c| c.command),
            Ok(Command::Generate(GenerateArgs { bits: 4096, .. }))
        ));
        assert!(generate(&["--bits", "1024"]).is_err());
        assert_eq!(
            BITS.map(|b| b.parse::<u32>().unwrap()),
            lifecycle::GENERATE_BITS
        );
        assert!(
            matches!(generate(&["--id", "a1:02"]).map(|c| c.command), Ok(Command::Generate(GenerateArgs { id: Some(HexId(ref v)), .. })) if v == &[0xa1, 2])
        );
        assert!(check_keyring_name("work").is_ok());
        for bad in ["", "user", ".x", "a b", "a,b", "a#b"] {
            assert!(check_keyring_name(bad).is_err(), "{bad}");
        }
    }
}
