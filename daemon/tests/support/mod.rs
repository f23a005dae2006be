//! What the daemon's integration tests share, so each test file says only what it tests:
//!
//! - [`testdata`]: the repository's `testdata/` (see its README for where each file came from);
//! - [`bin`], [`Cli`]: the built `bluezoned`, run as a user runs it, on a data directory, with
//!   the environment that would redirect it (systemd's directories, `BLUEZONED_DATA_DIR`,
//!   `RUST_LOG`) removed, and [`ok`]/[`fails`] that show stdout and stderr when the exit status
//!   is not the one expected;
//! - [`Running`]: a spawned daemon or server, killed when dropped;
//! - [`http`]: HTTP on 127.0.0.1 (a raw one-shot request and a proxy-free `reqwest` client);
//! - [`signer`], [`write_private`], [`now`]: small builders several files need.
//!
//! Each test binary uses a part of this module, hence `allow(dead_code)`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use bluezone_protocol::gaen::export::ExportSigner;
use serde_json::Value;

/// The `bluezoned` binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_bluezoned");

/// `testdata/<rel>` at the repository root.
pub fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(rel)
}

/// `bluezoned` with no arguments yet, in an environment that cannot redirect it elsewhere.
pub fn bin() -> Command {
    let mut c = Command::new(BIN);
    for v in [
        "STATE_DIRECTORY",
        "CREDENTIALS_DIRECTORY",
        "BLUEZONED_DATA_DIR",
        "RUST_LOG",
    ] {
        c.env_remove(v);
    }
    c
}

/// Runs `bluezoned ARGS` (no data directory) to completion.
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run bluezoned")
}

/// Asserts the command succeeded (showing its exit, stdout and stderr if not); its stdout.
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

/// Asserts the command failed (showing its stdout if not); its stderr.
pub fn fails(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "unexpectedly succeeded\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The CLI on one data directory: `bluezoned --data-dir DIR ARGS`.
#[derive(Clone, Debug)]
pub struct Cli {
    pub dir: PathBuf,
}

impl Cli {
    /// The CLI on `dir` (created by `init`, or by [`Cli::config`]).
    pub fn at(dir: impl Into<PathBuf>) -> Cli {
        Cli { dir: dir.into() }
    }

    /// `bluezoned --data-dir DIR ARGS`, not yet run (to add env or stdio).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = bin();
        c.arg("--data-dir").arg(&self.dir).args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run bluezoned")
    }

    /// Runs and asserts success; stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        ok(&self.run(args))
    }

    /// Runs and asserts failure; stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        fails(&self.run(args))
    }

    /// Runs and asserts success; stdout parsed as JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    /// `bluezoned init`.
    pub fn init(&self) -> &Cli {
        self.ok(&["init"]);
        self
    }

    /// Writes `DIR/bluezoned.toml` (creating DIR), the configuration every command reads.
    pub fn config(&self, toml: &str) -> &Cli {
        std::fs::create_dir_all(&self.dir).unwrap();
        std::fs::write(self.dir.join("bluezoned.toml"), toml).unwrap();
        self
    }

    /// `bluezoned --data-dir DIR run ARGS` in the background, output discarded.
    pub fn spawn(&self, args: &[&str]) -> Running {
        let mut run_args = vec!["run"];
        run_args.extend_from_slice(args);
        Running::spawn(
            self.cmd(&run_args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
    }
}

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Running(pub Child);

impl Running {
    pub fn spawn(cmd: &mut Command) -> Running {
        Running(cmd.spawn().expect("spawn bluezoned"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `bluezoned authority serve` on 127.0.0.1 (port 0) for the authority in `dir`, once it printed
/// its ready line (`{"listening": ADDR}`): the process and ADDR. No sleeping, no log reading.
pub fn authority_serve(dir: &Path) -> (Running, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Running::spawn(
        bin()
            .args(["authority", "serve", "--listen", "127.0.0.1:0", "--dir"])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: Value = serde_json::from_str(&line).expect("ready line");
    let addr = v["listening"]
        .as_str()
        .expect("listening address")
        .to_string();
    (child, addr)
}

/// Seconds since the Unix epoch, for tests whose data must be recent (retention, `--days`).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A GAEN export signer with a fixed P-256 key (every byte `seed`).
pub fn signer(key_id: &str, version: &str, seed: u8) -> ExportSigner {
    ExportSigner::new(
        key_id,
        version,
        p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap(),
    )
}

/// Writes a file only its owner can read (token files must be).
pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// HTTP to servers the tests start on 127.0.0.1.
pub mod http {
    use std::io::{Read, Write};

    use serde_json::Value;

    /// A client that never goes through a proxy from the environment (tests talk to loopback).
    pub fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    /// One blocking HTTP/1.1 POST on its own connection (`Connection: close`): the status and
    /// the body as JSON (`Null` if it is not JSON).
    pub fn post(addr: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, Value) {
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            sock,
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        sock.write_all(body).unwrap();
        let mut resp = Vec::new();
        sock.read_to_end(&mut resp).unwrap();
        let text = String::from_utf8_lossy(&resp);
        let status = text[9..12].parse().unwrap();
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }
}
