//! The trace wire scanner against its reference, prost decoding + `Mapper::traces`: requests
//! encoded by hand with fields in any order, repeated, merged and unknown; thousands of mutations
//! of them; and the edges of what prost refuses (nesting at its recursion limit, UTF-8 in fields
//! the mapping never reads, overlong varints, wrong wire types). Both paths must give the same
//! verdict, and the same observations or mapping error.

use cellpilot_core::config::IngestConfig;
use cellpilot_ingest::mapping::Mapper;
use cellpilot_ingest::wire::{WireTraces, check_against_prost, scan_traces};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use prost::encoding::encode_varint;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

fn mapper() -> Mapper {
    Mapper::new(&IngestConfig {
        cell_attributes: vec!["cell.id".into(), "cell".into()],
        // Short, so some names are cut (and counted as cut) on both paths.
        max_attribute_length: 12,
        ..IngestConfig::default()
    })
}

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const START_GROUP: u64 = 3;
const END_GROUP: u64 = 4;
const FIXED32: u64 = 5;

fn key(tag: u64, wt: u64, out: &mut Vec<u8>) {
    encode_varint(tag << 3 | wt, out);
}

fn ld(tag: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    key(tag, LEN, &mut out);
    encode_varint(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

fn var(tag: u64, v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    key(tag, VARINT, &mut out);
    encode_varint(v, &mut out);
    out
}

fn f64_field(tag: u64, v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    key(tag, FIXED64, &mut out);
    out.extend_from_slice(&v.to_le_bytes());
    out
}

fn f32_field(tag: u64, v: u32) -> Vec<u8> {
    let mut out = Vec::new();
    key(tag, FIXED32, &mut out);
    out.extend_from_slice(&v.to_le_bytes());
    out
}

/// Fields in a random order (repeated fields keep their relative order only by chance: the
/// mapping's last-wins and first-wins rules are exercised both ways).
fn shuffled(rng: &mut StdRng, mut fields: Vec<Vec<u8>>) -> Vec<u8> {
    fields.shuffle(rng);
    fields.concat()
}

fn pick<'a>(rng: &mut StdRng, pool: &[&'a str]) -> &'a str {
    pool[rng.random_range(0..pool.len())]
}

const KEYS: &[&str] = &[
    "cell.id",
    "cell",
    "http.route",
    "rpc.service",
    "rpc.method",
    "http.response.status_code",
    "http.status_code",
    "rpc.grpc.status_code",
    "error.type",
    "cause",
    "service.name",
    "app.other",
    "",
];
const STRINGS: &[&str] =
    &["", "a", "b", "/pay", "/cart/{id}", "Pay", "Charge", "503", " 500 ", "timeout", "cell-with-a-long-name", "é∂"];

/// An unknown field of any wire type (a group holds a varint and a string).
fn unknown(rng: &mut StdRng) -> Vec<u8> {
    let tag = rng.random_range(100..120);
    match rng.random_range(0..5) {
        0 => var(tag, rng.random()),
        1 => f64_field(tag, rng.random()),
        2 => f32_field(tag, rng.random()),
        3 => ld(tag, &[0xff, 0xfe, 0x00]),
        _ => {
            let mut out = Vec::new();
            key(tag, START_GROUP, &mut out);
            out.extend(var(1, 7));
            out.extend(ld(2, b"in a group"));
            key(tag, END_GROUP, &mut out);
            out
        }
    }
}

fn any_value(rng: &mut StdRng, depth: u32) -> Vec<u8> {
    let mut fields = Vec::new();
    // Usually one field; sometimes none or two (a oneof: the last one wins).
    let n = [1, 1, 1, 1, 0, 2][rng.random_range(0..6)];
    for _ in 0..n {
        fields.push(match rng.random_range(0..10) {
            0..=2 => ld(1, pick(rng, STRINGS).as_bytes()),
            3 => var(2, rng.random_range(0..2)),
            4 => var(3, [200u64, 503, 14, 2, 4, (-1i64) as u64, 12345][rng.random_range(0..7)]),
            5 => f64_field(4, [503.0f64, 2.5, 14.0][rng.random_range(0..3)].to_bits()),
            6 if depth < 3 => {
                let values = (0..2).map(|_| ld(1, &any_value(rng, depth + 1))).collect();
                ld(5, &shuffled(rng, values))
            }
            7 if depth < 3 => ld(6, &ld(1, &key_value(rng, depth + 1))),
            8 => ld(7, &[1, 2, 3]),
            _ => var(8, 3),
        });
    }
    fields.concat()
}

fn key_value(rng: &mut StdRng, depth: u32) -> Vec<u8> {
    let mut fields = vec![ld(1, pick(rng, KEYS).as_bytes())];
    if rng.random_bool(0.9) {
        fields.push(ld(2, &any_value(rng, depth)));
    }
    if rng.random_bool(0.1) {
        // A second value merges into the first.
        fields.push(ld(2, &any_value(rng, depth)));
    }
    if rng.random_bool(0.05) {
        fields.push(ld(1, pick(rng, KEYS).as_bytes()));
    }
    if rng.random_bool(0.05) {
        fields.push(var(3, 1));
    }
    if rng.random_bool(0.05) {
        fields.push(unknown(rng));
    }
    // Key and value in either order.
    shuffled(rng, fields)
}

fn span(rng: &mut StdRng) -> Vec<u8> {
    let t = 1_800_000_000_000_000_000u64 + rng.random_range(0..1_000_000_000_000);
    let mut fields = vec![
        ld(1, &[7; 16][..if rng.random_bool(0.01) { 15 } else { 16 }]),
        ld(2, &vec![8; if rng.random_bool(0.01) { 9 } else { 8 }]),
        ld(5, pick(rng, &["GET /x", "POST /pay", "", "span-name-longer-than-twelve"]).as_bytes()),
        var(6, [2u64, 2, 2, 1, 3, 0, 5, 9][rng.random_range(0..8)]),
        f64_field(7, t),
        f64_field(8, t + rng.random_range(0..3_000_000_000)),
    ];
    for _ in 0..rng.random_range(0..8) {
        fields.push(ld(9, &key_value(rng, 0)));
    }
    for _ in 0..[0, 0, 0, 1, 2][rng.random_range(0..5)] {
        // Status: message and code, either alone; a second status merges into the first.
        let mut st = Vec::new();
        if rng.random_bool(0.3) {
            st.extend(ld(2, b"failed"));
        }
        if rng.random_bool(0.8) {
            st.extend(var(3, rng.random_range(0..3)));
        }
        fields.push(ld(15, &st));
    }
    if rng.random_bool(0.1) {
        let ev = [f64_field(1, t), ld(2, b"exception"), ld(3, &key_value(rng, 0)), var(4, 0)].concat();
        fields.push(ld(11, &ev));
    }
    if rng.random_bool(0.1) {
        let link =
            [ld(1, &[1; 16]), ld(2, &[2; 8]), ld(3, b"k=v"), ld(4, &key_value(rng, 0)), var(5, 0), f32_field(6, 1)]
                .concat();
        fields.push(ld(13, &link));
    }
    for (p, f) in [(0.05, ld(3, b"ts")), (0.05, ld(4, &[3; 8])), (0.05, var(10, 1)), (0.05, f32_field(16, 256))] {
        if rng.random_bool(p) {
            fields.push(f);
        }
    }
    if rng.random_bool(0.03) {
        // The kind again: the last one counts.
        fields.push(var(6, 2));
    }
    if rng.random_bool(0.05) {
        fields.push(unknown(rng));
    }
    shuffled(rng, fields)
}

fn request(rng: &mut StdRng) -> Vec<u8> {
    let resource_spans = (0..rng.random_range(1..4))
        .map(|_| {
            let mut fields = Vec::new();
            for _ in 0..[1, 1, 1, 0, 2][rng.random_range(0..5)] {
                let mut attrs: Vec<Vec<u8>> = (0..rng.random_range(0..5)).map(|_| ld(1, &key_value(rng, 0))).collect();
                if rng.random_bool(0.7) {
                    let svc = pick(rng, &["checkout", "cart", "", "a-service-name-past-twelve"]);
                    attrs.push(ld(1, &[ld(1, b"service.name"), ld(2, &ld(1, svc.as_bytes()))].concat()));
                }
                if rng.random_bool(0.1) {
                    attrs.push(ld(3, &[ld(1, b"url"), ld(2, b"service"), ld(3, b"service.name")].concat()));
                }
                fields.push(ld(1, &shuffled(rng, attrs)));
            }
            for _ in 0..rng.random_range(1..3) {
                let mut scope = vec![];
                if rng.random_bool(0.5) {
                    scope.push(ld(1, &[ld(1, b"lib"), ld(2, b"1.0"), ld(3, &key_value(rng, 0))].concat()));
                }
                for _ in 0..rng.random_range(0..6) {
                    scope.push(ld(2, &span(rng)));
                }
                if rng.random_bool(0.1) {
                    scope.push(ld(3, b"https://schema"));
                }
                fields.push(ld(2, &shuffled(rng, scope)));
            }
            if rng.random_bool(0.1) {
                fields.push(ld(3, b"https://schema"));
            }
            ld(1, &shuffled(rng, fields))
        })
        .collect::<Vec<_>>();
    let mut body = resource_spans.concat();
    if rng.random_bool(0.05) {
        body.extend(unknown(rng));
    }
    body
}

#[test]
fn hand_encoded_requests_map_the_same_on_both_paths() {
    let m = mapper();
    let mut rng = StdRng::seed_from_u64(16);
    let (mut spans, mut failed) = (0, 0);
    for i in 0..3000 {
        let body = request(&mut rng);
        check_against_prost(&m, &body).unwrap_or_else(|e| panic!("request {i}: {e}"));
        let scanned = scan_traces(&m, &body).unwrap_or_else(|e| {
            let prost = ExportTraceServiceRequest::decode(&body[..]).map(|_| ());
            panic!("request {i} refused: {e:?} (prost: {prost:?})")
        });
        match scanned {
            Ok(obs) => spans += obs.spans.len(),
            Err(_) => failed += 1,
        }
    }
    // The generator reaches both outcomes, so the comparison above compared something.
    assert!(spans > 5_000, "{spans} request spans mapped");
    assert!(failed > 100, "{failed} requests with a bad id");
}

#[test]
fn mutated_requests_get_the_same_verdict_on_both_paths() {
    let m = mapper();
    let mut rng = StdRng::seed_from_u64(1616);
    let (mut refused, mut accepted) = (0, 0);
    for i in 0..1500 {
        let body = request(&mut rng);
        for j in 0..20 {
            let mut b = body.clone();
            if b.is_empty() {
                break;
            }
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..b.len());
                match rng.random_range(0..5) {
                    0 => b[at] ^= 1 << rng.random_range(0..8),
                    1 => b[at] = rng.random(),
                    2 => b.truncate(at),
                    3 => b.insert(at, rng.random()),
                    _ => {
                        b.remove(at);
                    }
                }
                if b.is_empty() {
                    break;
                }
            }
            check_against_prost(&m, &b).unwrap_or_else(|e| panic!("request {i}, mutation {j}: {e}\n{b:?}"));
            match ExportTraceServiceRequest::decode(&b[..]) {
                Ok(_) => accepted += 1,
                Err(_) => refused += 1,
            }
        }
    }
    assert!(refused > 1000 && accepted > 1000, "{refused} refused, {accepted} accepted");
}

/// `depth` AnyValues nested through ArrayValues, holding a string at the bottom.
fn nested_value(depth: usize, bottom: &[u8]) -> Vec<u8> {
    let mut v = ld(1, bottom);
    for _ in 0..depth {
        v = ld(5, &ld(1, &v));
    }
    v
}

/// A request of one request span with these fields besides its ids, kind and name.
fn with_span_fields(extra: &[Vec<u8>]) -> Vec<u8> {
    let mut sp = vec![ld(1, &[1; 16]), ld(2, &[2; 8]), var(6, 2), ld(5, b"GET")];
    sp.extend(extra.iter().cloned());
    ld(1, &ld(2, &ld(2, &sp.concat())))
}

fn attr(value: &[u8]) -> Vec<u8> {
    ld(9, &[ld(1, b"app.deep"), ld(2, value)].concat())
}

fn verdict(body: &[u8]) -> (bool, bool) {
    let m = mapper();
    check_against_prost(&m, body).unwrap_or_else(|e| panic!("{e}"));
    (scan_traces(&m, body).is_ok(), ExportTraceServiceRequest::decode(body).is_ok())
}

#[test]
fn nesting_is_refused_exactly_where_prost_refuses_it() {
    // Export(100) > ResourceSpans > ScopeSpans > Span > KeyValue > AnyValue, then two levels per
    // ArrayValue: find the deepest accepted and check the next is refused, on both paths.
    let accepted: Vec<bool> = (40..50).map(|d| verdict(&with_span_fields(&[attr(&nested_value(d, b"x"))])).0).collect();
    let last_ok = accepted.iter().rposition(|ok| *ok).expect("shallow nesting is accepted");
    assert!(last_ok < accepted.len() - 1, "deep nesting is refused: {accepted:?}");
    assert!(accepted[..=last_ok].iter().all(|ok| *ok) && accepted[last_ok + 1..].iter().all(|ok| !ok));
    // At the limit, an unknown field is charged too (prost's skip checks the limit): an empty
    // array at the bottom is fine, one holding an unknown varint is not.
    let d = 40 + last_ok;
    let wrap = |mut v: Vec<u8>| {
        for _ in 0..d {
            v = ld(5, &ld(1, &v));
        }
        v
    };
    assert_eq!(verdict(&with_span_fields(&[attr(&wrap(ld(5, &[])))])), (true, true));
    assert_eq!(verdict(&with_span_fields(&[attr(&wrap(ld(5, &var(100, 1))))])), (false, false));
}

#[test]
fn what_prost_refuses_in_fields_the_mapping_never_reads_is_refused() {
    let bad = [0xffu8, 0xfe];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("event name not UTF-8", with_span_fields(&[ld(11, &ld(2, &bad))])),
        ("link trace state not UTF-8", with_span_fields(&[ld(13, &ld(3, &bad))])),
        ("trace state not UTF-8", with_span_fields(&[ld(3, &bad)])),
        ("status message not UTF-8", with_span_fields(&[ld(15, &ld(2, &bad))])),
        ("nested key not UTF-8", with_span_fields(&[attr(&ld(6, &ld(1, &ld(1, &bad))))])),
        ("scope name not UTF-8", ld(1, &ld(2, &ld(1, &ld(1, &bad))))),
        ("entity ref key not UTF-8", ld(1, &ld(1, &ld(3, &ld(3, &bad))))),
        ("kind as fixed64", with_span_fields(&[f64_field(6, 2)])),
        ("start time as varint", with_span_fields(&[var(7, 2)])),
        ("flags as varint", with_span_fields(&[var(16, 1)])),
        ("attributes as varint", with_span_fields(&[var(9, 1)])),
        ("events as a group", {
            let mut g = Vec::new();
            key(11, START_GROUP, &mut g);
            key(11, END_GROUP, &mut g);
            with_span_fields(&[g])
        }),
        ("end group outside a group", {
            let mut g = Vec::new();
            key(100, END_GROUP, &mut g);
            with_span_fields(&[g])
        }),
        ("unmatched end group", {
            let mut g = Vec::new();
            key(100, START_GROUP, &mut g);
            key(101, END_GROUP, &mut g);
            with_span_fields(&[g])
        }),
        ("varint past 64 bits", {
            let mut v = Vec::new();
            key(6, VARINT, &mut v);
            v.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]);
            with_span_fields(&[v])
        }),
        ("wire type 6", {
            let mut v = Vec::new();
            encode_varint(100 << 3 | 6, &mut v);
            v.push(0);
            with_span_fields(&[v])
        }),
        ("field number 0", with_span_fields(&[vec![0x00, 0x00]])),
        ("length past the end", [with_span_fields(&[]), vec![0x0a, 0x05, 0x00]].concat()),
    ];
    for (what, body) in cases {
        assert_eq!(verdict(&body), (false, false), "{what}");
    }
    let fine: Vec<(&str, Vec<u8>)> = vec![
        ("a bad string in an unknown field", with_span_fields(&[ld(100, &bad)])),
        ("a group in an unknown field", {
            let mut g = Vec::new();
            key(100, START_GROUP, &mut g);
            g.extend(ld(1, &bad));
            key(100, END_GROUP, &mut g);
            with_span_fields(&[g])
        }),
        ("a ten-byte varint", {
            let mut v = Vec::new();
            key(10, VARINT, &mut v);
            v.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
            with_span_fields(&[v])
        }),
    ];
    for (what, body) in fine {
        assert_eq!(verdict(&body), (true, true), "{what}");
    }
}

#[test]
fn merged_fields_map_as_prost_merges_them() {
    let m = mapper();
    let kv = |k: &str, v: &str| ld(1, &[ld(1, k.as_bytes()), ld(2, &ld(1, v.as_bytes()))].concat());
    let span = [ld(1, &[1; 16]), ld(2, &[2; 8]), var(6, 2), ld(5, b"GET"), ld(15, &var(3, 2)), ld(15, &ld(2, b"m"))];
    // The resource after its spans, and sent twice: the cell comes from the second one.
    let body =
        ld(1, &[ld(2, &ld(2, &span.concat())), ld(1, &kv("service.name", "pay")), ld(1, &kv("cell", "c1"))].concat());
    check_against_prost(&m, &body).unwrap();
    let obs = scan_traces(&m, &body).unwrap().unwrap();
    assert_eq!(obs.spans.len(), 1);
    let o = obs.spans[0];
    assert_eq!(obs.strings.get(o.cell), "c1");
    assert_eq!(obs.strings.get(o.service), "pay");
    // The second status carried no code: the first one's ERROR stands.
    assert_eq!(obs.strings.get(o.cause), "error");
}

#[test]
fn a_refused_body_names_why_without_being_decoded() {
    let m = mapper();
    // A bad trace id in the first span and a bad string later: the decoding error wins.
    let body = [ld(1, &ld(2, &ld(2, &[ld(1, &[1; 3]), ld(2, &[2; 8])].concat()))), with_span_fields(&[ld(3, &[0xff])])]
        .concat();
    assert!(ExportTraceServiceRequest::decode(&body[..]).is_err(), "prost refuses it too");
    let wire = WireTraces::new(body.into());
    let err = wire.map(&m).unwrap_err();
    assert!(matches!(err, cellpilot_ingest::Error::BadInput(_)), "{err:?}");
    assert_eq!(err.to_string(), "invalid protobuf payload: a string is not UTF-8");
    // Without the bad string, the id is the answer, word for word as on the decoding path.
    let body = ld(1, &ld(2, &ld(2, &[ld(1, &[1; 3]), ld(2, &[2; 8])].concat())));
    let req = ExportTraceServiceRequest::decode(&body[..]).unwrap();
    let want = m.traces(&req).unwrap_err().to_string();
    assert_eq!(WireTraces::new(body.into()).map(&m).unwrap_err().to_string(), want);
    assert!(want.contains("trace_id must be 16 bytes, got 3"), "{want}");
}
