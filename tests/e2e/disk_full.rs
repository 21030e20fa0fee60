//! A real full disk: the data directory is a 16 MiB tmpfs this test mounts (it needs root, or
//! CAP_SYS_ADMIN, and `mount`/`umount`; `.ci/run` runs as root). Filled up, exports are answered
//! 503 with Retry-After and `/readyz` says why; once space is freed they are taken again; after
//! `kill -9` and a restart every acknowledged span is counted exactly once and nothing refused.

use crate::support::{Server, now_ns, server_span, traces};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A size-limited tmpfs, unmounted on drop (before the directory it is mounted under goes).
struct Tmpfs {
    path: PathBuf,
    _under: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        std::fs::create_dir(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("running mount");
        assert!(out.status.success(), "mounting a tmpfs needs root: {}", String::from_utf8_lossy(&out.stderr));
        Tmpfs { path, _under: dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// Writes `path` until the filesystem refuses: the disk is full.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0xa5u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    // The last partial page too.
    while f.write_all(&[0xa5]).is_ok() {}
}

async fn readyz(server: &Server) -> (u16, String) {
    let r = reqwest::get(format!("http://{}/readyz", server.web)).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root to mount a tmpfs"]
async fn a_full_disk_refuses_retryably_and_loses_nothing() {
    let fs = Tmpfs::mount("16m");
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut server = Server::start_in(&fs.path, &[]);
    // Each export: 300 spans on its own cell.
    let mut n = 0;
    let mut send = async |server: &Server, acked: &mut BTreeMap<String, u64>| {
        n += 1;
        let cell = format!("cell-{n:03}");
        // Latencies spread over many buckets, so the batch is not a handful of bytes.
        let spans = (0..300).map(|i| server_span(&cell, 200, now_ns(), 1_000_000 + i * 997_000)).collect();
        let r = server.post_otlp("traces", traces(Some("web"), spans)).await;
        let status = r.status().as_u16();
        let retry_after = r.headers().contains_key("retry-after");
        let body = r.bytes().await.unwrap();
        if status == 200 {
            *acked.entry(cell).or_default() += 300;
        }
        (status, retry_after, body)
    };
    for _ in 0..5 {
        assert_eq!(send(&server, &mut acked).await.0, 200);
    }

    let filler = fs.path.join("filler");
    fill(&filler);
    // An export is logged as a few hundred bytes of span batch, which may still fit in the
    // page the open segment already holds: those are taken (and counted in `acked`). Once
    // that page is used up, every export must be refused.
    let mut refused = 0;
    for attempt in 0.. {
        let (status, retry_after, body) = send(&server, &mut acked).await;
        if status == 200 && refused == 0 {
            assert!(attempt < 200, "a full disk never refused an export");
            continue;
        }
        assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
        assert!(retry_after, "the answer says when to retry");
        refused += 1;
        if refused == 5 {
            break;
        }
    }
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("WAL cannot be written"), "{body}");
    let metrics = reqwest::get(format!("http://{}/metrics", server.web)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(&format!("cellpilot_wal_write_failures_total {refused}")), "{metrics}");

    std::fs::remove_file(&filler).unwrap();
    for _ in 0..5 {
        assert_eq!(send(&server, &mut acked).await.0, 200, "space is back");
    }
    assert_eq!(readyz(&server).await.0, 200, "a successful write clears the WAL check");

    server.kill();
    let again = Server::start_in(&fs.path, &[]);
    let cells: BTreeMap<String, u64> = again
        .cells()
        .await
        .iter()
        .filter_map(|c| Some((c["cell"].as_str()?.to_string(), c["requests"].as_u64()?)))
        .filter(|(c, _)| c.starts_with("cell-"))
        .collect();
    assert_eq!(cells, acked, "acknowledged spans counted once; refused ones not at all");
    drop(again);
}
