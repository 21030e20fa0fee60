//! Reading OTLP attribute values: strings and integers as the semantic conventions use them.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

/// An attribute value as the mapping reads it: what a decoded `AnyValue` and the wire scanner
/// both reduce to, so both paths share one reading of it. Strings are kept as their (valid
/// UTF-8) bytes and turned into `str` only when a rule reads them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Val<'a> {
    /// No value (or an `AnyValue` with no field set).
    Absent,
    /// `string_value`, checked to be UTF-8.
    Str(&'a [u8]),
    /// `int_value`.
    Int(i64),
    /// `double_value`.
    Double(f64),
    /// Any other kind (bool, bytes, array, key-value list, string index).
    Other,
}

impl<'a> Val<'a> {
    /// The value of a decoded attribute.
    pub(crate) fn of(v: Option<&'a AnyValue>) -> Self {
        match v.and_then(|v| v.value.as_ref()) {
            None => Val::Absent,
            Some(Value::StringValue(s)) => Val::Str(s.as_bytes()),
            Some(Value::IntValue(i)) => Val::Int(*i),
            Some(Value::DoubleValue(d)) => Val::Double(*d),
            Some(_) => Val::Other,
        }
    }

    /// The string form, for identifiers (cell, route); empty strings count as missing.
    pub(crate) fn str(self) -> Option<&'a str> {
        match self {
            Val::Str(s) if !s.is_empty() => std::str::from_utf8(s).ok(),
            _ => None,
        }
    }

    /// An integer, also accepted as a decimal string (some SDKs send status codes as strings).
    pub(crate) fn int(self) -> Option<i64> {
        match self {
            Val::Int(i) => Some(i),
            Val::Str(s) => std::str::from_utf8(s).ok()?.trim().parse().ok(),
            Val::Double(d) if d.fract() == 0.0 => Some(d as i64),
            _ => None,
        }
    }
}

/// The string form of a value, for identifiers (cell, route); empty strings count as missing.
pub(crate) fn as_str(v: Option<&AnyValue>) -> Option<&str> {
    Val::of(v).str()
}

/// The first of `keys` present (non-empty) in `attrs`, as a string: the first attribute of each
/// key decides.
pub(crate) fn first_str_of<'a>(attrs: &[(&[u8], Val<'a>)], keys: &[String]) -> Option<&'a str> {
    keys.iter().find_map(|k| attrs.iter().find(|(key, _)| *key == k.as_bytes()).and_then(|(_, v)| v.str()))
}

/// The string value of `key` in `attrs` (its first attribute decides).
pub(crate) fn get_str_of<'a>(attrs: &[(&[u8], Val<'a>)], key: &str) -> Option<&'a str> {
    attrs.iter().find(|(k, _)| *k == key.as_bytes()).and_then(|(_, v)| v.str())
}

/// The first of `keys` present (non-empty) in `attrs`, as a string.
pub(crate) fn first_str<'a>(attrs: &'a [KeyValue], keys: &[String]) -> Option<&'a str> {
    keys.iter().find_map(|k| attrs.iter().find(|kv| kv.key == *k).and_then(|kv| as_str(kv.value.as_ref())))
}

/// The string value of `key` in `attrs`.
pub(crate) fn get_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| as_str(kv.value.as_ref()))
}

/// The cause of a failed gRPC call, `grpc:<CODE_NAME>`.
pub(crate) fn grpc_cause(code: i64) -> &'static str {
    match code {
        0 => "grpc:OK",
        1 => "grpc:CANCELLED",
        2 => "grpc:UNKNOWN",
        3 => "grpc:INVALID_ARGUMENT",
        4 => "grpc:DEADLINE_EXCEEDED",
        5 => "grpc:NOT_FOUND",
        6 => "grpc:ALREADY_EXISTS",
        7 => "grpc:PERMISSION_DENIED",
        8 => "grpc:RESOURCE_EXHAUSTED",
        9 => "grpc:FAILED_PRECONDITION",
        10 => "grpc:ABORTED",
        11 => "grpc:OUT_OF_RANGE",
        12 => "grpc:UNIMPLEMENTED",
        13 => "grpc:INTERNAL",
        14 => "grpc:UNAVAILABLE",
        15 => "grpc:DATA_LOSS",
        16 => "grpc:UNAUTHENTICATED",
        _ => "grpc:UNKNOWN_CODE",
    }
}
