//! Reading OTLP attribute values: strings and integers as the semantic conventions use them.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

/// The string form of a value, for identifiers (cell, route); empty strings count as missing.
pub(crate) fn as_str(v: Option<&AnyValue>) -> Option<&str> {
    match v?.value.as_ref()? {
        Value::StringValue(s) if !s.is_empty() => Some(s.as_str()),
        _ => None,
    }
}

/// An integer attribute, also accepted as a decimal string (some SDKs send status codes as strings).
pub(crate) fn as_i64(v: Option<&AnyValue>) -> Option<i64> {
    match v?.value.as_ref()? {
        Value::IntValue(i) => Some(*i),
        Value::StringValue(s) => s.trim().parse().ok(),
        Value::DoubleValue(d) if d.fract() == 0.0 => Some(*d as i64),
        _ => None,
    }
}

/// The first of `keys` present (non-empty) in `attrs`, as a string.
pub(crate) fn first_str<'a>(attrs: &'a [KeyValue], keys: &[String]) -> Option<&'a str> {
    keys.iter().find_map(|k| attrs.iter().find(|kv| kv.key == *k).and_then(|kv| as_str(kv.value.as_ref())))
}

/// The string value of `key` in `attrs`.
pub(crate) fn get_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| as_str(kv.value.as_ref()))
}

/// gRPC status code names, for `grpc:<CODE_NAME>` causes.
pub(crate) fn grpc_code_name(code: i64) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN_CODE",
    }
}
