//! What refusing a hostile trace export costs: a 16 MiB body of 8 M empty span attributes with a
//! bad field at its very end is refused by the wire scanner with allocations bounded by a small
//! constant, not by a decode of everything before the bad field. Its own test binary: it reads
//! the process's peak resident memory (Linux `VmHWM`, reset through `/proc/self/clear_refs`).

use cellpilot_core::config::IngestConfig;
use cellpilot_ingest::mapping::Mapper;
use cellpilot_ingest::wire::WireTraces;

/// A line of `/proc/self/status`, in KiB.
fn status_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap()
}

/// A length-delimited field.
fn ld(field: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 12);
    varint(&mut out, u64::from(field << 3 | 2));
    varint(&mut out, body.len() as u64);
    out.extend_from_slice(body);
    out
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[test]
fn refusing_8m_attributes_with_a_bad_last_field_allocates_next_to_nothing() {
    const ATTRS: usize = 8 << 20;
    // One span: 8 M empty attributes (field 9, 2 bytes each), then a name that is not UTF-8.
    let mut span = Vec::with_capacity(ATTRS * 2 + 64);
    span.extend(ld(1, &[1; 16]));
    span.extend(ld(2, &[2; 8]));
    for _ in 0..ATTRS {
        span.extend_from_slice(&[0x4a, 0x00]);
    }
    span.extend(ld(5, &[0xff]));
    let body = ld(1, &ld(2, &ld(2, &span)));
    assert!(body.len() > 16 << 20);
    let mapper = Mapper::new(&IngestConfig::default());
    let wire = WireTraces::new(body.into());
    drop(span);
    // The peak starts again from what is resident now.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = status_kib("VmRSS:");
    let err = wire.map(&mapper).unwrap_err();
    let extra_mib = status_kib("VmHWM:").saturating_sub(before) >> 10;
    assert!(err.to_string().contains("not UTF-8"), "{err}");
    // A decode would hold each attribute (~64 bytes): over 500 MiB. The scanner holds none.
    assert!(extra_mib < 16, "refusing took {extra_mib} MiB more");
}
