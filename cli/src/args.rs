//! The command line: clap's definitions of every command and option (also
//! the source of the man page and shell completions).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

pub const ABOUT: &str = "Import, generate, list, export and remove the RSA keys that the \
keyring-pkcs11 PKCS#11 module serves from Linux kernel keyrings";

pub const LONG_ABOUT: &str = "\
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

pub const AFTER_LONG_HELP: &str = "\
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
pub struct Cli {
    /// Show the module's diagnostics on standard error (-vv: more)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// Run a program (a server) whose keys exist only in the kernel, for its lifetime
    #[command(
        long_about = "\
Run a program whose private keys exist only in the kernel, for as long as the
program (with everything it starts) runs.

The tool joins a new, anonymous session keyring, loads each key into it (every
format `import` reads), stores each certificate with its key, makes the keys
usable and visible to possessors of that keyring only (use only: no process can
link them elsewhere, revoke them or widen their permissions), wipes every buffer
that held key material, and then replaces itself with COMMAND (same process: it
works as a systemd ExecStart= with Type=simple, exec or notify, and with daemons
that fork or daemonise, Type=forking).
COMMAND and everything it starts (workers that drop privileges too) use the keys
as pkcs11:token=session;object=LABEL; nothing else can. When the last process of
that tree exits, however it dies (SIGKILL too), the kernel destroys the keys.

If anything is wrong (a file, a format, a passphrase, a label, the command,
or the kernel refuses a key), COMMAND is not started and no key is left behind.

COMMAND inherits the environment, file descriptors and ignored signals; its
signal mask is empty and SIGPIPE is at its default action. -v prints each key's
kernel serial (as root, `keyctl describe SERIAL` then answers \"Permission
denied\" while the key exists and \"Required key not available\" once it is gone).",
        after_long_help = "\
Examples:
  keyring-pkcs11 exec --key web=/etc/ssl/private/web.key -- nginx -g 'daemon off;'
  keyring-pkcs11 exec --key web=web.key --cert web=web.crt -- apache2ctl -DFOREGROUND
  # systemd: LoadCredentialEncrypted=web.key:/etc/credstore.encrypted/web.key
  ExecStart=/usr/bin/keyring-pkcs11 exec --credentials -- /usr/sbin/nginx -g 'daemon off;'

Exit status: 1 bad input (nothing started); 2 the kernel refused a key (nothing
started, nothing left behind); otherwise the status of COMMAND, which replaced
this process."
    )]
    Exec(ExecArgs),
}

#[derive(Args)]
pub struct TokenArg {
    /// Token (keyring): user, session, persistent, or a keyring NAME [default: user]
    #[arg(short, long, value_name = "TOKEN")]
    pub token: Option<String>,
}

#[derive(Args)]
pub struct ImportArgs {
    /// The private key file (PEM or DER; - reads standard input)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Label of the key (CKA_LABEL) [default: the OpenSSH comment, else the file name]
    #[arg(short, long)]
    pub label: Option<String>,
    /// CKA_ID in hex, e.g. 01 or a1:b2 [default: SHA-1 of the public key]
    #[arg(long, value_name = "HEX", value_parser = parse_id)]
    pub id: Option<HexId>,
    #[command(flatten)]
    pub token: TokenArg,
    /// Read the passphrase from this file (first line; - for standard input) instead of the terminal
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// An X.509 certificate (PEM or DER) to store with the key
    #[arg(long, value_name = "CERT")]
    pub cert: Option<PathBuf>,
}

#[derive(Args)]
pub struct GenerateArgs {
    /// Key size in bits: 2048, 3072 or 4096
    #[arg(short, long, default_value = "3072", value_parser = bits_parser())]
    pub bits: u32,
    /// Label of the key (CKA_LABEL) [default: rsa-<first 16 hex digits of its id>]
    #[arg(short, long)]
    pub label: Option<String>,
    /// CKA_ID in hex [default: SHA-1 of the public key]
    #[arg(long, value_name = "HEX", value_parser = parse_id)]
    pub id: Option<HexId>,
    #[command(flatten)]
    pub token: TokenArg,
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub token: TokenArg,
    /// List the keys of every token
    #[arg(short, long, conflicts_with = "token")]
    pub all: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum PubFormat {
    /// One authorized_keys line: ssh-rsa AAAA... LABEL
    Openssh,
    /// X.509 SubjectPublicKeyInfo, PEM ("BEGIN PUBLIC KEY")
    Pem,
}

#[derive(Args)]
pub struct ExportArgs {
    /// The key: its label, id:HEX, or its pkcs11: URI
    #[arg(value_name = "KEY")]
    pub key: String,
    #[command(flatten)]
    pub token: TokenArg,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = PubFormat::Openssh)]
    pub format: PubFormat,
}

#[derive(Args)]
pub struct RemoveArgs {
    /// The key: its label, id:HEX, or its pkcs11: URI
    #[arg(value_name = "KEY")]
    pub key: String,
    #[command(flatten)]
    pub token: TokenArg,
}

#[derive(Args)]
pub struct TokensArgs {
    /// Create a keyring NAME in your user keyring (@u), for a token of its own
    #[arg(long, value_name = "NAME")]
    pub create: Option<String>,
}

#[derive(Args)]
pub struct ExecArgs {
    /// A key for the program: LABEL=FILE (PEM or DER, any format import reads; FILE - reads standard input); repeatable
    #[arg(long = "key", value_name = "LABEL=FILE", value_parser = parse_labelled)]
    pub keys: Vec<Labelled>,
    /// A certificate for a key: LABEL=FILE (PEM or DER), stored with the key; repeatable
    #[arg(long = "cert", value_name = "LABEL=FILE", value_parser = parse_labelled)]
    pub certs: Vec<Labelled>,
    /// Load every *.key in $CREDENTIALS_DIRECTORY (systemd LoadCredential=, LoadCredentialEncrypted=), labelled by its file name without .key, with LABEL.crt as its certificate if there is one
    #[arg(long)]
    pub credentials: bool,
    /// Read the passphrase of encrypted keys from this file (first line; - for standard input)
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// The program to run, and its arguments (after --)
    #[arg(
        value_name = "COMMAND",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<std::ffi::OsString>,
}

/// `LABEL=FILE`.
#[derive(Clone, Debug)]
pub struct Labelled(pub String, pub PathBuf);

pub fn parse_labelled(s: &str) -> Result<Labelled, String> {
    match s.split_once('=') {
        Some((label, file)) if !label.is_empty() && !file.is_empty() => {
            if label.contains('\0') {
                return Err("a label cannot contain NUL".into());
            }
            Ok(Labelled(label.to_string(), PathBuf::from(file)))
        }
        _ => Err(format!(
            "give LABEL=FILE, e.g. web=/etc/ssl/private/web.key (got {s:?})"
        )),
    }
}

/// A CKA_ID given in hex (a type of its own: clap takes `Vec<u8>` for many values).
#[derive(Clone)]
pub struct HexId(pub Vec<u8>);

pub fn parse_id(s: &str) -> Result<HexId, String> {
    parse_hex(s).map(HexId)
}

pub fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
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

/// The sizes `C_GenerateKeyPair` makes (`keyring_pkcs11::GENERATE_BITS`), shown
/// as the possible values.
pub const BITS: [&str; 3] = ["2048", "3072", "4096"];

pub fn bits_parser() -> impl clap::builder::TypedValueParser<Value = u32> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(BITS)
        .map(|s| s.parse::<u32>().expect("one of the possible values"))
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
            keyring_pkcs11::GENERATE_BITS
        );
        assert!(
            matches!(generate(&["--id", "a1:02"]).map(|c| c.command), Ok(Command::Generate(GenerateArgs { id: Some(HexId(ref v)), .. })) if v == &[0xa1, 2])
        );
    }
}
