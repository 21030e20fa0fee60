//! The OTLP trace wire scanner: maps an `ExportTraceServiceRequest` straight from its protobuf
//! bytes, reading only what the mapping needs (span ids' lengths, kind, name, times, status, the
//! span and resource attributes) with every string borrowed from the body, and skipping the rest
//! without allocating.
//!
//! Skipping is not trusting: every field is checked as prost checks it when it decodes the whole
//! message — the wire type of every known field, UTF-8 of every string (events', links' and
//! scopes' too), varints that overflow, lengths past the end, groups, prost's recursion limit of
//! 100 nested messages (charged the way prost charges it, unknown fields included) — so the
//! scanner refuses exactly what prost refuses. Repeated occurrences merge as prost merges them:
//! a resource or status sent twice is one message, a scalar sent twice keeps the last value.
//!
//! prost stays the reference, in the tests: the differential tests and the `otlp_wire` fuzz
//! target hold both paths to the same verdicts and observations. A body the scanner refuses is
//! refused with the scanner's reason and never decoded, so refusing costs no more than scanning
//! (a prost decode of 8 M empty attributes before a bad last field would take ~545 MiB).

use crate::attrs::Val;
use crate::error::{Error, Result};
use crate::mapping::{Mapper, Observations, ResourceView, SPAN_STATUS_ERROR, Scan, SpanAt, SpanView};
#[cfg(any(test, feature = "internals"))]
pub use crate::protowire::Refused;
#[cfg(any(test, feature = "internals"))]
pub use differential::check_against_prost;
use crate::protowire::{Cur, LEN, R};
use prost::bytes::Bytes;

#[cfg(any(test, feature = "internals"))]
mod differential;

/// prost's recursion limit: how many messages deep a body may nest.
const RECURSION_LIMIT: u32 = 100;

/// A trace export still in its protobuf encoding, mapped by the scanner.
#[derive(Debug)]
pub struct WireTraces {
    bytes: Bytes,
}

impl WireTraces {
    /// A protobuf `ExportTraceServiceRequest`, not yet checked.
    pub fn new(bytes: Bytes) -> Self {
        Self { bytes }
    }

    /// The body as it came (what the WAL keeps).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The request's observations, or why it is refused.
    pub fn map<'a>(&'a self, mapper: &Mapper) -> Result<Observations<'a>> {
        match scan_traces(mapper, &self.bytes) {
            Ok(mapped) => mapped,
            Err(refused) => Err(Error::BadInput(format!("invalid protobuf payload: {}", refused.0))),
        }
    }
}

/// Scans and maps a protobuf `ExportTraceServiceRequest`: `Err` when prost would refuse the body,
/// else the mapping's own answer (its observations, or its error, e.g. a trace id of the wrong
/// length — reported only once the whole body is known to decode, as on the decoding path).
pub fn scan_traces<'a>(mapper: &Mapper, body: &'a [u8]) -> R<Result<Observations<'a>>> {
    let mut s = Traces { mapper, out: Observations::default(), failed: None, res_attrs: Vec::new() };
    let mut c = Cur::new(body);
    let ctx = RECURSION_LIMIT;
    let mut ri = 0;
    while !c.done() {
        let (tag, wt) = c.key()?;
        match tag {
            1 => {
                let rs = c.message(wt, ctx)?;
                s.resource_spans(rs, ctx - 1, ri)?;
                ri += 1;
            }
            _ => c.skip(wt, tag, ctx)?,
        }
    }
    Ok(match s.failed {
        Some(e) => Err(e),
        None => Ok(s.out),
    })
}

/// Spans in a protobuf `ExportTraceServiceRequest`, counted without reading them (the admission
/// check before a request is queued); `None` when the levels above the spans do not parse.
/// Exact for any body prost accepts: every span it decodes is a length-delimited field 2 of a
/// field 2 of a field 1.
pub fn count_spans(body: &[u8]) -> Option<u64> {
    // The walk hops from span to span, one dependent load each: read the body through once in
    // order first, which the hardware prefetches at memory bandwidth, so the hops (and the
    // scan that follows) find it in cache.
    std::hint::black_box(body.iter().step_by(64).fold(0u8, |a, &b| a ^ b));
    let mut n = 0u64;
    each_field(body, 1, &mut |rs| {
        each_field(rs, 2, &mut |ss| {
            each_field(ss, 2, &mut |_| {
                n += 1;
                Ok(())
            })
        })
    })
    .ok()?;
    Some(n)
}

/// Calls `f` with every length-delimited field `tag` of a message, skipping the others.
fn each_field<'a>(b: &'a [u8], tag: u32, f: &mut dyn FnMut(&'a [u8]) -> R<()>) -> R<()> {
    let mut c = Cur::new(b);
    while !c.done() {
        let (t, wt) = c.key()?;
        if t == tag && wt == LEN {
            let n = c.varint()?;
            f(c.take(n)?)?;
        } else {
            c.skip(wt, t, RECURSION_LIMIT)?;
        }
    }
    Ok(())
}

struct Traces<'m, 'a> {
    mapper: &'m Mapper,
    out: Observations<'a>,
    /// The first mapping error; what the body maps to once it is known to decode.
    failed: Option<Error>,
    /// The current resource's attributes, in order (reused across resources).
    res_attrs: Vec<(&'a [u8], Val<'a>)>,
}

impl<'a> Traces<'_, 'a> {
    fn resource_spans(&mut self, b: &'a [u8], ctx: u32, ri: usize) -> R<()> {
        // The resource may follow its spans on the wire: read it (and check every other field)
        // first, then map the spans.
        self.res_attrs.clear();
        let mut c = Cur::new(b);
        while !c.done() {
            let (tag, wt) = c.key()?;
            match tag {
                1 => {
                    let r = c.message(wt, ctx)?;
                    self.resource(r, ctx - 1)?;
                }
                2 => {
                    c.message(wt, ctx)?;
                }
                3 => {
                    c.string(wt)?;
                }
                _ => c.skip(wt, tag, ctx)?,
            }
        }
        let res = self.mapper.resource(&mut self.out, &self.res_attrs);
        let mut c = Cur::new(b);
        let mut si = 0;
        while !c.done() {
            let (tag, wt) = c.key()?;
            if tag == 2 {
                let ss = c.message(wt, ctx)?;
                self.scope_spans(ss, ctx - 1, &res, ri, si)?;
                si += 1;
            } else {
                c.skip(wt, tag, ctx)?;
            }
        }
        Ok(())
    }

    /// A `Resource` (several merge: their attributes add up).
    fn resource(&mut self, b: &'a [u8], ctx: u32) -> R<()> {
        let mut c = Cur::new(b);
        while !c.done() {
            let (tag, wt) = c.key()?;
            match tag {
                1 => {
                    let kv = c.message(wt, ctx)?;
                    self.res_attrs.push(key_value(kv, ctx - 1)?);
                }
                2 => {
                    c.varint_field(wt)?;
                }
                3 => {
                    let e = c.message(wt, ctx)?;
                    entity_ref(e, ctx - 1)?;
                }
                _ => c.skip(wt, tag, ctx)?,
            }
        }
        Ok(())
    }

    fn scope_spans(&mut self, b: &'a [u8], ctx: u32, res: &ResourceView<'a>, ri: usize, si: usize) -> R<()> {
        let mut c = Cur::new(b);
        let mut pi = 0;
        while !c.done() {
            let (tag, wt) = c.key()?;
            match tag {
                1 => {
                    let sc = c.message(wt, ctx)?;
                    scope(sc, ctx - 1)?;
                }
                2 => {
                    let sp = c.message(wt, ctx)?;
                    self.span(sp, ctx - 1, res, SpanAt { resource: ri, scope: si, span: pi })?;
                    pi += 1;
                }
                3 => {
                    c.string(wt)?;
                }
                _ => c.skip(wt, tag, ctx)?,
            }
        }
        Ok(())
    }

    fn span(&mut self, b: &'a [u8], ctx: u32, res: &ResourceView<'a>, at: SpanAt) -> R<()> {
        let cell_keys = self.mapper.cell_keys();
        let mut v = SpanView::default();
        let mut scan = Scan::default();
        let mut status_code = 0i32;
        let mut c = Cur::new(b);
        while !c.done() {
            let (tag, wt) = c.key()?;
            match tag {
                1 => v.trace_id_len = c.bytes(wt)?.len(),
                2 => v.span_id_len = c.bytes(wt)?.len(),
                3 => {
                    c.string(wt)?;
                }
                4 => {
                    c.bytes(wt)?;
                }
                5 => v.name = c.text(wt)?,
                6 => v.kind = c.varint_field(wt)? as i32,
                7 => v.start = c.fixed64(wt)?,
                8 => v.end = c.fixed64(wt)?,
                9 => {
                    let kv = c.message(wt, ctx)?;
                    let (key, val) = key_value(kv, ctx - 1)?;
                    scan.feed(key, val, cell_keys);
                }
                10 | 12 | 14 => {
                    c.varint_field(wt)?;
                }
                11 => {
                    let e = c.message(wt, ctx)?;
                    event(e, ctx - 1)?;
                }
                13 => {
                    let l = c.message(wt, ctx)?;
                    link(l, ctx - 1)?;
                }
                15 => {
                    let st = c.message(wt, ctx)?;
                    status(st, ctx - 1, &mut status_code)?;
                }
                16 => {
                    c.fixed32(wt)?;
                }
                _ => c.skip(wt, tag, ctx)?,
            }
        }
        if self.failed.is_none() {
            v.status_error = status_code == SPAN_STATUS_ERROR;
            if let Err(e) = self.mapper.span(&mut self.out, res, at, &v, || scan) {
                self.failed = Some(e);
            }
        }
        Ok(())
    }
}

/// A `Status`; several merge, so the last code sent wins.
fn status(b: &[u8], ctx: u32, code: &mut i32) -> R<()> {
    let mut c = Cur::new(b);
    while !c.done() {
        let (tag, wt) = c.key()?;
        match tag {
            2 => {
                c.string(wt)?;
            }
            3 => *code = c.varint_field(wt)? as i32,
            _ => c.skip(wt, tag, ctx)?,
        }
    }
    Ok(())
}

/// A `KeyValue`: its key and value (an `AnyValue` sent twice merges: the last field set wins).
fn key_value(b: &[u8], ctx: u32) -> R<(&[u8], Val<'_>)> {
    // The value is a message: at the recursion limit the general walk says so.
    if ctx > 0
        && let Some(kv) = plain_key_value(b)
    {
        return Ok(kv);
    }
    key_value_walk(b, ctx)
}

/// `key_value` field by field.
fn key_value_walk(b: &[u8], ctx: u32) -> R<(&[u8], Val<'_>)> {
    let mut key: &[u8] = &[];
    let mut val = Val::Absent;
    let mut c = Cur::new(b);
    while !c.done() {
        let (tag, wt) = c.key()?;
        match tag {
            1 => key = c.text(wt)?,
            2 => {
                let a = c.message(wt, ctx)?;
                any_value(a, ctx - 1, &mut val)?;
            }
            3 => {
                c.varint_field(wt)?;
            }
            _ => c.skip(wt, tag, ctx)?,
        }
    }
    Ok((key, val))
}

/// Nearly every attribute is an ASCII key then an `AnyValue` of one ASCII string or one
/// integer, each length in one byte: read that shape with a few compares, what the general walk
/// would make of it. `None` for any other shape (the general walk reads or refuses it).
#[inline(always)]
fn plain_key_value(b: &[u8]) -> Option<(&[u8], Val<'_>)> {
    let [0x0a, klen, rest @ ..] = b else { return None };
    let klen = usize::from(*klen);
    if klen >= 0x80 || rest.len() < klen {
        return None;
    }
    let (key, rest) = rest.split_at(klen);
    let [0x12, vlen, value @ ..] = rest else { return None };
    if *vlen >= 0x80 || usize::from(*vlen) != value.len() {
        return None;
    }
    let val = match value {
        // Every tag and length byte of this shape is below 0x80: one check of the whole
        // attribute covers its key and its text.
        [0x0a, slen, text @ ..] if *slen < 0x80 && usize::from(*slen) == text.len() && b.is_ascii() => Val::Str(text),
        _ if !key.is_ascii() => return None,
        // Up to nine bytes: the tenth's own checks are the general walk's.
        [0x18, int @ ..] if (1..=9).contains(&int.len()) => {
            let (last, high) = int.split_last()?;
            if *last >= 0x80 || high.iter().any(|&b| b < 0x80) {
                return None;
            }
            let v = int.iter().rev().fold(0u64, |v, &b| (v << 7) | u64::from(b & 0x7f));
            Val::Int(v as i64)
        }
        _ => return None,
    };
    Some((key, val))
}

/// An `AnyValue`'s fields, each replacing `val` (a oneof: the last one set is the value).
fn any_value<'a>(b: &'a [u8], ctx: u32, val: &mut Val<'a>) -> R<()> {
    let mut c = Cur::new(b);
    while !c.done() {
        let (tag, wt) = c.key()?;
        match tag {
            1 => *val = Val::Str(c.text(wt)?),
            3 => *val = Val::Int(c.varint_field(wt)? as i64),
            4 => *val = Val::Double(f64::from_bits(c.fixed64(wt)?)),
            2 | 8 => {
                c.varint_field(wt)?;
                *val = Val::Other;
            }
            5 => {
                let a = c.message(wt, ctx)?;
                array_value(a, ctx - 1)?;
                *val = Val::Other;
            }
            6 => {
                let l = c.message(wt, ctx)?;
                kv_list(l, ctx - 1)?;
                *val = Val::Other;
            }
            7 => {
                c.bytes(wt)?;
                *val = Val::Other;
            }
            _ => c.skip(wt, tag, ctx)?,
        }
    }
    Ok(())
}

fn array_value(b: &[u8], ctx: u32) -> R<()> {
    let mut c = Cur::new(b);
    while !c.done() {
        let (tag, wt) = c.key()?;
        if tag == 1 {
            let a = c.message(wt, ctx)?;
            any_value(a, ctx - 1, &mut Val::Absent)?;
        } else {
            c.skip(wt, tag, ctx)?;
        }
    }
    Ok(())
}

fn kv_list(b: &[u8], ctx: u32) -> R<()> {
    let mut c = Cur::new(b);
    while !c.done() {
        let (tag, wt) = c.key()?;
        if tag == 1 {
            let kv = c.message(wt, ctx)?;
            key_value(kv, ctx - 1)?;
        } else {
            c.skip(wt, tag, ctx)?;
        }
    }
    Ok(())
}

/// The fields of a message the mapping does not read, by kind.
#[derive(Clone, Copy)]
enum Field {
    Str,
    Bytes,
    Varint,
    Fixed64,
    Fixed32,
    Attribute,
    Unknown,
}

/// Checks a message the mapping does not read, given what its fields are.
fn check(b: &[u8], ctx: u32, field: fn(u32) -> Field) -> R<()> {
    let mut c = Cur::new(b);
    while !c.done() {
        let (tag, wt) = c.key()?;
        match field(tag) {
            Field::Str => {
                c.string(wt)?;
            }
            Field::Bytes => {
                c.bytes(wt)?;
            }
            Field::Varint => {
                c.varint_field(wt)?;
            }
            Field::Fixed64 => {
                c.fixed64(wt)?;
            }
            Field::Fixed32 => {
                c.fixed32(wt)?;
            }
            Field::Attribute => {
                let kv = c.message(wt, ctx)?;
                key_value(kv, ctx - 1)?;
            }
            Field::Unknown => c.skip(wt, tag, ctx)?,
        }
    }
    Ok(())
}

/// `InstrumentationScope`: name, version, attributes, dropped count.
fn scope(b: &[u8], ctx: u32) -> R<()> {
    check(b, ctx, |tag| match tag {
        1 | 2 => Field::Str,
        3 => Field::Attribute,
        4 => Field::Varint,
        _ => Field::Unknown,
    })
}

/// `EntityRef`: schema URL, type, id keys, description keys (all strings).
fn entity_ref(b: &[u8], ctx: u32) -> R<()> {
    check(b, ctx, |tag| match tag {
        1..=4 => Field::Str,
        _ => Field::Unknown,
    })
}

/// `Span.Event`: time, name, attributes, dropped count.
fn event(b: &[u8], ctx: u32) -> R<()> {
    check(b, ctx, |tag| match tag {
        1 => Field::Fixed64,
        2 => Field::Str,
        3 => Field::Attribute,
        4 => Field::Varint,
        _ => Field::Unknown,
    })
}

/// `Span.Link`: trace and span ids, trace state, attributes, dropped count, flags.
fn link(b: &[u8], ctx: u32) -> R<()> {
    check(b, ctx, |tag| match tag {
        1 | 2 => Field::Bytes,
        3 => Field::Str,
        4 => Field::Attribute,
        5 => Field::Varint,
        6 => Field::Fixed32,
        _ => Field::Unknown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use prost::Message;

    fn encoded(key: &str, value: Option<Value>) -> Vec<u8> {
        KeyValue { key: key.into(), value: value.map(|v| AnyValue { value: Some(v) }), ..Default::default() }
            .encode_to_vec()
    }

    #[test]
    fn the_plain_attribute_shape_reads_as_the_field_walk_does() {
        let long = "k".repeat(127);
        let longer = "v".repeat(128);
        let ints = [0, 1, 127, 128, 200, 503, i64::from(u32::MAX), (1 << 62) + 5, i64::MAX, -1, i64::MIN];
        let mut cases: Vec<(Vec<u8>, bool)> = vec![
            (encoded("cell.id", Some(Value::StringValue("cell-01".into()))), true),
            // An empty key is not on the wire.
            (encoded("", Some(Value::StringValue(String::new()))), false),
            (encoded("k", Some(Value::StringValue(String::new()))), true),
            (encoded(&long, Some(Value::StringValue("x".into()))), true),
            (encoded("k", Some(Value::StringValue("v".repeat(123)))), true),
            (encoded("k", Some(Value::StringValue(longer))), false),
            (encoded(&format!("{long}k"), Some(Value::StringValue("x".into()))), false),
            (encoded("k", Some(Value::StringValue("zürich".into()))), false),
            (encoded("clé", Some(Value::StringValue("x".into()))), false),
            (encoded("k", Some(Value::DoubleValue(2.5))), false),
            (encoded("k", Some(Value::BoolValue(true))), false),
            (encoded("k", None), false),
        ];
        for i in ints {
            // Up to nine varint bytes (63 bits) take the plain path.
            cases.push((encoded("http.response.status_code", Some(Value::IntValue(i))), i >= 0));
        }
        // The same key twice, a value then a key, a value sent twice: the walk's merges.
        let twice = [encoded("a", None), encoded("b", Some(Value::IntValue(3)))].concat();
        let value_first = [vec![0x12, 2, 0x18, 7], vec![0x0a, 1, b'k']].concat();
        let value_twice = [encoded("k", Some(Value::IntValue(1))), vec![0x12, 3, 0x0a, 1, b'x']].concat();
        cases.extend([(twice, false), (value_first, false), (value_twice, false)]);
        for (b, plain) in cases {
            let fast = plain_key_value(&b);
            assert_eq!(fast.is_some(), plain, "{b:?}");
            if let Some(fast) = fast {
                assert_eq!(Ok(fast), key_value_walk(&b, 5), "{b:?}");
            }
        }
    }
}
