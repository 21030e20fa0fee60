//! The varint byte layout of WAL span batches and checkpoints: a writer, and a reader that
//! checks every length against the bytes left before anything is allocated, so damaged or
//! forged bytes are an error, never a huge allocation or a panic.

/// Why bytes could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {at}")]
pub struct CodecError {
    /// What was wrong.
    pub what: &'static str,
    /// Where, counted from the start of the bytes read.
    pub at: usize,
}

/// Appends the LEB128 encoding of `v`.
pub(crate) fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends the zigzag LEB128 encoding of `v`.
pub(crate) fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_u64(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Appends a length-prefixed byte string.
pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u64(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Reads what the `put_*` functions wrote.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub(crate) fn err(&self, what: &'static str) -> CodecError {
        CodecError { what, at: self.pos }
    }

    /// Whether every byte was read.
    pub(crate) fn is_done(&self) -> bool {
        self.pos == self.bytes.len()
    }

    /// The bytes not read yet (all of them are taken).
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.pos..];
        self.pos = self.bytes.len();
        rest
    }

    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn u8(&mut self) -> Result<u8, CodecError> {
        let b = *self.bytes.get(self.pos).ok_or_else(|| self.err("unexpected end"))?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn u64(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                if shift == 63 && b > 1 {
                    return Err(self.err("varint overflows 64 bits"));
                }
                return Ok(v);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, CodecError> {
        let z = self.u64()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    /// A value below `bound` (an index into something already read).
    pub(crate) fn below(&mut self, bound: usize, what: &'static str) -> Result<usize, CodecError> {
        let v = self.u64()?;
        usize::try_from(v).ok().filter(|&v| v < bound).ok_or_else(|| self.err(what))
    }

    /// A count of items that take at least `min_bytes` each: more than the bytes left can hold
    /// is damage, so a caller may allocate for it.
    pub(crate) fn count(&mut self, min_bytes: usize) -> Result<usize, CodecError> {
        let n = self.u64()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n.saturating_mul(min_bytes.max(1)) <= self.left())
            .ok_or_else(|| self.err("a count larger than the bytes left"))
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.count(1)?;
        let b = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }

    pub(crate) fn str(&mut self) -> Result<&'a str, CodecError> {
        let at = self.pos;
        let b = self.bytes()?;
        std::str::from_utf8(b).map_err(|_| CodecError { what: "a name that is not UTF-8", at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_damage_is_an_error() {
        let mut out = Vec::new();
        let values = [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX];
        for &v in &values {
            put_u64(&mut out, v);
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            put_i64(&mut out, v);
        }
        put_bytes(&mut out, "héllo".as_bytes());
        let mut r = Reader::new(&out);
        for &v in &values {
            assert_eq!(r.u64().unwrap(), v);
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(r.i64().unwrap(), v);
        }
        assert_eq!(r.str().unwrap(), "héllo");
        assert!(r.is_done());
        assert!(Reader::new(&[0xff; 11]).u64().is_err(), "too long");
        assert!(Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]).u64().is_err());
        assert!(Reader::new(&[5, b'a']).bytes().is_err(), "longer than the bytes left");
        assert!(Reader::new(&[200, 1]).count(1).is_err());
        assert!(Reader::new(&[2, 0xc3, 0x28]).str().is_err(), "not UTF-8");
        assert!(Reader::new(&[3]).below(3, "index").is_err());
    }
}
