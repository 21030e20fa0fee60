//! A local S3-compatible server (`s3s-fs`, installed by `cargo install s3s-fs --version 0.14.1
//! --features binary`) on a free loopback port over a temporary directory: what `bench cluster`
//! and the object-store and cluster tests store rollups in (the `local-s3` feature). `CELLPILOT_S3S_FS` names the program if it is not on
//! `PATH`.

use std::io::{Error, Result};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Access key the server accepts.
pub const ACCESS_KEY: &str = "cellpilot";
/// Secret key the server accepts.
pub const SECRET_KEY: &str = "cellpilot-secret";

/// A running `s3s-fs`, stopped when dropped.
#[derive(Debug)]
pub struct LocalS3 {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    root: tempfile::TempDir,
}

impl LocalS3 {
    /// Starts the server with one empty bucket named `bucket`; returns once it accepts connections.
    pub fn start(bucket: &str) -> Result<LocalS3> {
        let root = tempfile::tempdir()?;
        std::fs::create_dir(root.path().join(bucket))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let bin = std::env::var("CELLPILOT_S3S_FS").unwrap_or_else(|_| "s3s-fs".into());
        let mut child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| {
                Error::new(
                    e.kind(),
                    format!("starting {bin} (cargo install s3s-fs --version 0.14.1 --features binary): {e}"),
                )
            })?;
        let deadline = cellpilot_core::clock::monotonic() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait()? {
                return Err(Error::other(format!("{bin} exited with {status} before listening")));
            }
            if cellpilot_core::clock::monotonic() > deadline {
                let _ = child.kill();
                return Err(Error::other(format!("{bin} did not listen on port {port} within 20 s")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(LocalS3 { child, endpoint: format!("http://127.0.0.1:{port}"), root })
    }

    /// The directory holding the buckets.
    pub fn root(&self) -> &std::path::Path {
        self.root.path()
    }

    /// The `AWS_*` variables that point a client (a `serve`, `cellpilot generate`) at it.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
        ]
    }
}

impl Drop for LocalS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
