//! The identity of a cumulative metric stream, as WAL checkpoints persist it.
//!
//! A stream is its resource attributes, scope name and version, metric name and point
//! attributes. [`StreamKey::encode`] writes them in an explicit canonical form (version
//! [`ENCODING`]) that depends on nothing but the values: every string is length-prefixed, every
//! value tagged, attribute sets sorted. A test pins its bytes, so a change to it is deliberate
//! and comes with a new version. [`StreamKey::legacy`] rebuilds the key of checkpoints written
//! before versioning, so their streams continue instead of starting over from a baseline.

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value};
use std::fmt::Write;

/// Version of the canonical encoding written by [`StreamKey::encode`].
pub const ENCODING: u32 = 1;

/// The parts of a metric stream's identity, borrowed from the request.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamKey<'a> {
    /// Resource attributes.
    pub resource: &'a [KeyValue],
    /// Instrumentation scope (its name and version count; absent is the same as empty).
    pub scope: Option<&'a InstrumentationScope>,
    /// Metric name.
    pub metric: &'a str,
    /// Data point attributes.
    pub attrs: &'a [KeyValue],
}

impl<'a> StreamKey<'a> {
    /// A stream of metric `name` with no attributes and no scope.
    pub fn named(metric: &'a str) -> Self {
        StreamKey { metric, ..Default::default() }
    }

    /// The canonical encoding (version [`ENCODING`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        string(&mut out, self.scope.map_or("", |s| &s.name));
        string(&mut out, self.scope.map_or("", |s| &s.version));
        string(&mut out, self.metric);
        attributes(&mut out, self.resource);
        attributes(&mut out, self.attrs);
        out
    }

    /// The key checkpoints carried before the encoding was versioned (prost's `Debug` text).
    pub fn legacy(&self) -> String {
        let scope = self.scope.map(|s| format!("{}@{}", s.name, s.version)).unwrap_or_default();
        format!("{}|{scope}|{}|{}", legacy_attrs(self.resource), self.metric, legacy_attrs(self.attrs))
    }
}

/// `<byte length>:<bytes>`.
fn string(out: &mut String, s: &str) {
    let _ = write!(out, "{}:{s}", s.len());
}

/// `<count>{` key value ... `}`, entries in byte order of their encoding: the order a client
/// sends them in does not matter.
fn attributes(out: &mut String, attrs: &[KeyValue]) {
    let mut entries: Vec<String> = attrs
        .iter()
        .map(|kv| {
            let mut e = String::new();
            string(&mut e, &kv.key);
            value(&mut e, kv.value.as_ref());
            e
        })
        .collect();
    entries.sort_unstable();
    let _ = write!(out, "{}{{", entries.len());
    entries.iter().for_each(|e| out.push_str(e));
    out.push('}');
}

/// One tag letter, then the value: `-` absent, `s` string, `b0`/`b1`, `i<decimal>;`,
/// `d<IEEE-754 bits, 16 hex digits>`, `y<byte length>:<hex>`, `a<count>[values]`, `k` attributes, `x<index>;` a profiles
/// string-table index.
fn value(out: &mut String, v: Option<&AnyValue>) {
    match v.and_then(|v| v.value.as_ref()) {
        None => out.push('-'),
        Some(Value::StringValue(s)) => {
            out.push('s');
            string(out, s);
        }
        Some(Value::BoolValue(b)) => out.push_str(if *b { "b1" } else { "b0" }),
        Some(Value::IntValue(i)) => {
            let _ = write!(out, "i{i};");
        }
        Some(Value::DoubleValue(d)) => {
            let _ = write!(out, "d{:016x}", d.to_bits());
        }
        Some(Value::BytesValue(b)) => {
            let _ = write!(out, "y{}:", b.len());
            b.iter().for_each(|x| {
                let _ = write!(out, "{x:02x}");
            });
        }
        Some(Value::ArrayValue(a)) => {
            let _ = write!(out, "a{}[", a.values.len());
            a.values.iter().for_each(|v| value(out, Some(v)));
            out.push(']');
        }
        Some(Value::KvlistValue(kv)) => {
            out.push('k');
            attributes(out, &kv.values);
        }
        Some(Value::StringValueStrindex(i)) => {
            let _ = write!(out, "x{i};");
        }
    }
}

fn legacy_attrs(attrs: &[KeyValue]) -> String {
    let mut parts: Vec<String> =
        attrs.iter().map(|kv| format!("{}={:?}", kv.key, kv.value.as_ref().and_then(|v| v.value.as_ref()))).collect();
    parts.sort();
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn kv(key: &str, v: Option<Value>) -> KeyValue {
        KeyValue { key: key.into(), value: v.map(|v| AnyValue { value: Some(v) }), ..Default::default() }
    }

    fn every_kind() -> Vec<KeyValue> {
        vec![
            kv("s", Some(Value::StringValue("a:b|c".into()))),
            kv("b", Some(Value::BoolValue(true))),
            kv("i", Some(Value::IntValue(-42))),
            kv("d", Some(Value::DoubleValue(1.5))),
            kv("y", Some(Value::BytesValue(vec![0, 255]))),
            kv(
                "a",
                Some(Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue { value: Some(Value::IntValue(1)) }, AnyValue { value: None }],
                })),
            ),
            kv(
                "k",
                Some(Value::KvlistValue(KeyValueList {
                    values: vec![kv("z", Some(Value::BoolValue(false))), kv("x", None)],
                })),
            ),
            kv("n", None),
        ]
    }

    /// The bytes are the contract with checkpoints already on disk: changing them needs a new
    /// [`ENCODING`] and a reader for the old one.
    #[test]
    fn the_encoding_is_pinned() {
        let resource = [kv("service.name", Some(Value::StringValue("checkout".into())))];
        let attrs = every_kind();
        let scope = InstrumentationScope { name: "io.otel".into(), version: "1.2".into(), ..Default::default() };
        let key = StreamKey {
            resource: &resource,
            scope: Some(&scope),
            metric: "http.server.request.duration",
            attrs: &attrs,
        };
        assert_eq!(
            key.encode(),
            "7:io.otel3:1.228:http.server.request.duration\
             1{12:service.names8:checkout}\
             8{1:aa2[i1;-]1:bb11:dd3ff80000000000001:ii-42;1:kk2{1:x-1:zb0}1:n-1:ss5:a:b|c1:yy2:00ff}"
        );
        assert_eq!(ENCODING, 1);
    }

    #[test]
    fn order_does_not_matter_and_boundaries_do() {
        let mut attrs = every_kind();
        let a = StreamKey { attrs: &attrs, ..StreamKey::named("m") }.encode();
        attrs.reverse();
        assert_eq!(StreamKey { attrs: &attrs, ..StreamKey::named("m") }.encode(), a);
        // The same characters split differently between key and value are different streams.
        let x = [kv("a=b", Some(Value::StringValue("c".into())))];
        let y = [kv("a", Some(Value::StringValue("b=c".into())))];
        let (x, y) =
            (StreamKey { attrs: &x, ..StreamKey::named("m") }, StreamKey { attrs: &y, ..StreamKey::named("m") });
        assert_ne!(x.encode(), y.encode());
        assert_eq!(x.legacy(), "||m|a=b=Some(StringValue(\"c\"))");
        // Resource and point attributes are kept apart.
        let r = [kv("a", Some(Value::IntValue(1)))];
        let on_resource = StreamKey { resource: &r, ..StreamKey::named("m") };
        let on_point = StreamKey { attrs: &r, ..StreamKey::named("m") };
        assert_ne!(on_resource.encode(), on_point.encode());
    }

    #[test]
    fn the_legacy_key_matches_what_checkpoints_carried() {
        let r = [kv("service.name", Some(Value::StringValue("svc".into())))];
        let p = [kv("cell.id", Some(Value::StringValue("bj".into()))), kv("code", Some(Value::IntValue(500)))];
        let scope = InstrumentationScope { name: "s".into(), version: "1".into(), ..Default::default() };
        let key = StreamKey { resource: &r, scope: Some(&scope), metric: "lat", attrs: &p };
        assert_eq!(
            key.legacy(),
            "service.name=Some(StringValue(\"svc\"))|s@1|lat|cell.id=Some(StringValue(\"bj\")),code=Some(IntValue(500))"
        );
        assert_eq!(StreamKey::named("lat").legacy(), "||lat|");
        let empty = InstrumentationScope::default();
        assert_eq!(StreamKey { scope: Some(&empty), ..StreamKey::named("lat") }.legacy(), "|@|lat|");
        assert_eq!(
            StreamKey { scope: Some(&empty), ..StreamKey::named("lat") }.encode(),
            StreamKey::named("lat").encode()
        );
    }
}
