//! Protobuf wire format, read as prost reads it: a cursor over one message's bytes that checks
//! every varint, length, wire type, UTF-8 string and the recursion limit, and borrows what it
//! reads. The trace scanner and the pre-scan read through it.

pub(crate) const VARINT: u8 = 0;
pub(crate) const FIXED64: u8 = 1;
pub(crate) const LEN: u8 = 2;
pub(crate) const START_GROUP: u8 = 3;
pub(crate) const END_GROUP: u8 = 4;
pub(crate) const FIXED32: u8 = 5;

/// Why the scanner refused a body (prost refuses it too; its error is what the client reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub &'static str);

pub(crate) type R<T> = std::result::Result<T, Refused>;

/// The refusal of a message or group nested past the recursion limit.
pub(crate) const TOO_DEEP: &str = "recursion limit reached";
/// The refusal of an end-group tag with no group open.
pub(crate) const STRAY_END_GROUP: &str = "unexpected end of group";

/// A read position in one message's bytes.
pub(crate) struct Cur<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Self { b, pos: 0 }
    }

    #[inline(always)]
    pub(crate) fn done(&self) -> bool {
        self.pos >= self.b.len()
    }

    #[inline(always)]
    pub(crate) fn varint(&mut self) -> R<u64> {
        match self.b.get(self.pos) {
            Some(&byte) if byte < 0x80 => {
                self.pos += 1;
                Ok(u64::from(byte))
            }
            _ => self.varint_long(),
        }
    }

    /// A varint of more than one byte; its tenth byte may only hold the top bit, as prost checks.
    #[inline(never)]
    pub(crate) fn varint_long(&mut self) -> R<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let byte = *self.b.get(self.pos).ok_or(Refused("truncated varint"))?;
            self.pos += 1;
            if i == 9 && byte >= 0x02 {
                return Err(Refused("varint past 64 bits"));
            }
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(v);
            }
        }
        Err(Refused("varint past 64 bits"))
    }

    /// A field's key: its number and wire type.
    #[inline(always)]
    pub(crate) fn key(&mut self) -> R<(u32, u8)> {
        let key = self.varint()?;
        let key = u32::try_from(key).map_err(|_| Refused("key past 32 bits"))?;
        let wt = (key & 7) as u8;
        if wt > FIXED32 {
            return Err(Refused("invalid wire type"));
        }
        let tag = key >> 3;
        if tag == 0 {
            return Err(Refused("field number 0"));
        }
        Ok((tag, wt))
    }

    #[inline(always)]
    pub(crate) fn expect(wt: u8, want: u8) -> R<()> {
        if wt == want { Ok(()) } else { Err(Refused("unexpected wire type")) }
    }

    #[inline(always)]
    pub(crate) fn take(&mut self, n: u64) -> R<&'a [u8]> {
        let end = usize::try_from(n).ok().and_then(|n| self.pos.checked_add(n)).filter(|&e| e <= self.b.len());
        let end = end.ok_or(Refused("a length runs past the end"))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// A bytes field.
    #[inline(always)]
    pub(crate) fn bytes(&mut self, wt: u8) -> R<&'a [u8]> {
        Self::expect(wt, LEN)?;
        let n = self.varint()?;
        self.take(n)
    }

    /// A string field, checked to be UTF-8; its bytes (turned into `str` only where read).
    #[inline(always)]
    pub(crate) fn text(&mut self, wt: u8) -> R<&'a [u8]> {
        let b = self.bytes(wt)?;
        // Attribute keys and values are short and nearly always ASCII: a word-at-a-time check
        // settles those (a validator pays a call and its setup per string).
        if b.is_ascii() || simdutf8::basic::from_utf8(b).is_ok() {
            Ok(b)
        } else {
            Err(Refused("a string is not UTF-8"))
        }
    }

    /// A string field read only to be checked.
    #[inline(always)]
    pub(crate) fn string(&mut self, wt: u8) -> R<()> {
        self.text(wt).map(|_| ())
    }

    /// A message field's bytes, where `ctx` is what is left of the recursion limit.
    #[inline(always)]
    pub(crate) fn message(&mut self, wt: u8, ctx: u32) -> R<&'a [u8]> {
        Self::expect(wt, LEN)?;
        if ctx == 0 {
            return Err(Refused(TOO_DEEP));
        }
        let n = self.varint()?;
        self.take(n)
    }

    /// A varint-typed field (integers, enums, bools).
    #[inline(always)]
    pub(crate) fn varint_field(&mut self, wt: u8) -> R<u64> {
        Self::expect(wt, VARINT)?;
        self.varint()
    }

    #[inline(always)]
    pub(crate) fn fixed64(&mut self, wt: u8) -> R<u64> {
        Self::expect(wt, FIXED64)?;
        let b = self.take(8)?;
        Ok(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }

    #[inline(always)]
    pub(crate) fn fixed32(&mut self, wt: u8) -> R<u32> {
        Self::expect(wt, FIXED32)?;
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Skips an unknown field as prost does: it counts against the recursion limit, and a group
    /// is read to its matching end.
    pub(crate) fn skip(&mut self, wt: u8, tag: u32, ctx: u32) -> R<()> {
        if ctx == 0 {
            return Err(Refused(TOO_DEEP));
        }
        match wt {
            VARINT => {
                self.varint()?;
            }
            FIXED64 => {
                self.take(8)?;
            }
            LEN => {
                let n = self.varint()?;
                self.take(n)?;
            }
            FIXED32 => {
                self.take(4)?;
            }
            START_GROUP => loop {
                let (inner, inner_wt) = self.key()?;
                if inner_wt == END_GROUP {
                    if inner != tag {
                        return Err(Refused("unmatched end of group"));
                    }
                    break;
                }
                self.skip(inner_wt, inner, ctx - 1)?;
            },
            _ => return Err(Refused(STRAY_END_GROUP)),
        }
        Ok(())
    }
}
