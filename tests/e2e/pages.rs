//! The HTML pages render from live data, with every attribute value escaped (a cell named
//! `<script>alert(1)</script>` is text), charts drawn as inline SVG, and no external assets.

use crate::support::{Server, now_ns, server_span, traces};

const EVIL: &str = "<script>alert(1)</script>";

async fn page(server: &Server, path: &str) -> String {
    let r = reqwest::get(format!("http://{}{path}", server.web)).await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"), "{path}");
    r.text().await.unwrap()
}

#[tokio::test]
async fn pages_render_and_escape() {
    let mut cfg = tempfile::NamedTempFile::new().unwrap();
    use std::io::Write;
    write!(cfg, "[[slo]]\nname = \"shop\"\navailability = 0.999\nlatency_p999_ms = 500\n").unwrap();
    let data = tempfile::tempdir().unwrap();
    let server = Server::spawn(&["serve", "--config", cfg.path().to_str().unwrap()], data.path(), &[]);
    let now = now_ns();
    let spans = ["ok-cell", EVIL]
        .iter()
        .flat_map(|cell| (0..100).map(move |i| server_span(cell, if i < 7 { 500 } else { 200 }, now, 5_000_000)))
        .collect();
    assert_eq!(server.post_otlp("traces", traces(None, spans)).await.status(), 200);

    let home = page(&server, "/").await;
    assert!(home.contains("ok-cell") && home.contains("<svg"), "cell grid with sparklines");
    assert!(home.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "the cell name is shown as text");
    assert!(!home.contains(EVIL), "and never as markup");
    assert!(home.contains("href=\"/sla/shop?range=30d\""), "the card links to its period");
    // A name with `/` in it still links to its own page: one percent-encoded path segment.
    assert!(home.contains("href=\"/cells/%3Cscript%3Ealert%281%29%3C%2Fscript%3E\""), "{home}");
    // (The icon is an inline SVG, whose xmlns names a URL without loading it.)
    let external = ["src=\"http", "href=\"http", "href=\"//", "url(http", "@import"];
    assert!(!external.iter().any(|p| home.contains(p)), "no external assets");

    let cell = page(&server, "/cells/ok-cell?range=15m").await;
    assert!(cell.matches("<svg").count() >= 3, "three charts");
    assert!(
        cell.contains("<td>GET /</td><td class=\"num\">100</td><td class=\"num\">7.000 %</td>"),
        "the routes table: {cell}"
    );
    assert!(cell.contains("class=\"on\" href=\"/cells/ok-cell?range=15m\""), "the range picker marks the range");
    let evil_cell = page(&server, &format!("/cells/{}", "%3Cscript%3Ealert(1)%3C%2Fscript%3E")).await;
    assert!(!evil_cell.contains(EVIL));

    let sla = page(&server, "/sla/shop?range=1h").await;
    assert!(sla.contains("bad events 14"), "7 + 7 errors: {sla}");
    for p in ["/decisions", "/alerts", "/query"] {
        page(&server, p).await;
    }
    let bad = reqwest::get(format!("http://{}/cells/ok-cell?range=2w", server.web)).await.unwrap();
    assert_eq!(bad.status(), 400);
}
