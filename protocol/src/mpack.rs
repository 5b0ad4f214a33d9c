//! A minimal MessagePack writer and borrowing reader for the batch hot
//! path, where going through serde would cost allocations and give vague
//! errors. It emits and accepts standard MessagePack: any MessagePack
//! library can read a batch entry's meta map.

use bytes::{BufMut, BytesMut};

use crate::error::{Error, Result};

/// Max nesting the reader accepts when skipping unknown values.
const MAX_DEPTH: u32 = 32;

/// Where the writer functions put bytes: a growing `BytesMut`, or a
/// [`SliceWriter`] over a buffer sized beforehand (the batch hot path).
pub(crate) trait Sink {
    fn write_bytes(&mut self, b: &[u8]);
    fn write_u8(&mut self, v: u8) {
        self.write_bytes(&[v]);
    }
}

impl Sink for BytesMut {
    #[inline(always)]
    fn write_bytes(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
    #[inline(always)]
    fn write_u8(&mut self, v: u8) {
        self.put_u8(v);
    }
}

#[inline(always)]
pub(crate) fn put_map_len(dst: &mut impl Sink, n: usize) {
    if n < 16 {
        dst.write_u8(0x80 | n as u8);
    } else if n <= 0xFFFF {
        dst.write_u8(0xde);
        dst.write_bytes(&(n as u16).to_be_bytes());
    } else {
        dst.write_u8(0xdf);
        dst.write_bytes(&(n as u32).to_be_bytes());
    }
}

/// Strings longer than `u32::MAX` cannot occur: frames are capped far
/// below that.
#[inline(always)]
pub(crate) fn put_str(dst: &mut impl Sink, s: &str) {
    put_str_bytes(dst, s.as_bytes());
}

/// [`put_str`] for bytes the caller knows to be UTF-8.
pub(crate) fn put_str_bytes(dst: &mut impl Sink, s: &[u8]) {
    let n = s.len();
    if n < 32 {
        dst.write_u8(0xa0 | n as u8);
    } else if n <= 0xFF {
        dst.write_bytes(&[0xd9, n as u8]);
    } else if n <= 0xFFFF {
        dst.write_u8(0xda);
        dst.write_bytes(&(n as u16).to_be_bytes());
    } else {
        dst.write_u8(0xdb);
        dst.write_bytes(&(n as u32).to_be_bytes());
    }
    dst.write_bytes(s);
}

#[inline(always)]
pub(crate) fn put_bin(dst: &mut impl Sink, b: &[u8]) {
    let n = b.len();
    if n <= 0xFF {
        dst.write_bytes(&[0xc4, n as u8]);
    } else if n <= 0xFFFF {
        dst.write_u8(0xc5);
        dst.write_bytes(&(n as u16).to_be_bytes());
    } else {
        dst.write_u8(0xc6);
        dst.write_bytes(&(n as u32).to_be_bytes());
    }
    dst.write_bytes(b);
}

#[inline(always)]
pub(crate) fn put_uint(dst: &mut impl Sink, v: u64) {
    if v < 0x80 {
        dst.write_u8(v as u8);
    } else if v <= 0xFF {
        dst.write_bytes(&[0xcc, v as u8]);
    } else if v <= 0xFFFF {
        dst.write_u8(0xcd);
        dst.write_bytes(&(v as u16).to_be_bytes());
    } else if v <= 0xFFFF_FFFF {
        dst.write_u8(0xce);
        dst.write_bytes(&(v as u32).to_be_bytes());
    } else {
        dst.write_u8(0xcf);
        dst.write_bytes(&v.to_be_bytes());
    }
}

/// A [`Sink`] over a slice the caller sized to an upper bound of what is
/// written (hot path: no capacity check per value, constant-size copies
/// inline). Writing past the end is a bug in that bound and panics on the
/// slice index.
pub(crate) struct SliceWriter<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> SliceWriter<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> SliceWriter<'a> {
        SliceWriter { buf, pos: 0 }
    }

    /// Bytes written so far.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    #[inline(always)]
    pub(crate) fn skip(&mut self, n: usize) {
        self.pos += n;
    }
}

impl Sink for SliceWriter<'_> {
    #[inline(always)]
    fn write_bytes(&mut self, b: &[u8]) {
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
    #[inline(always)]
    fn write_u8(&mut self, v: u8) {
        self.buf[self.pos] = v;
        self.pos += 1;
    }
}

/// A cursor over a byte slice; every read checks bounds.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

/// A marker of the wrong type: `WrongType`, except the reserved marker
/// 0xc1, which is not MessagePack at all.
fn unexpected(m: u8, what: &str, expected: &str) -> Error {
    if m == 0xc1 {
        Error::BadMsgPack(format!("{what}: reserved marker 0xc1"))
    } else {
        Error::WrongType(format!("{what}: expected {expected}, got marker {m:#04x}"))
    }
}

fn truncated() -> Error {
    Error::BadMsgPack("truncated value".into())
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.buf.len() {
            return Err(truncated());
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    #[inline(always)]
    fn u8(&mut self) -> Result<u8> {
        let (&b, tail) = self.buf.split_first().ok_or_else(truncated)?;
        self.buf = tail;
        Ok(b)
    }

    fn be(&mut self, n: usize) -> Result<u64> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn len_of(&mut self, marker: u8, base8: u8) -> Result<usize> {
        // base8 is the 8-bit-length marker; 16 and 32 follow it.
        let n = match marker.wrapping_sub(base8) {
            0 => self.be(1)?,
            1 => self.be(2)?,
            _ => self.be(4)?,
        };
        usize::try_from(n).map_err(|_| truncated())
    }

    #[inline(always)]
    pub(crate) fn map_len(&mut self, what: &str) -> Result<usize> {
        match self.u8()? {
            m @ 0x80..=0x8f => Ok(usize::from(m & 0x0f)),
            0xde => Ok(self.be(2)? as usize),
            0xdf => usize::try_from(self.be(4)?).map_err(|_| truncated()),
            m => Err(unexpected(m, what, "a map")),
        }
    }

    /// The raw bytes of a string value (no UTF-8 check): for map keys,
    /// which are only compared against known names.
    #[inline(always)]
    pub(crate) fn str_bytes(&mut self, what: &str) -> Result<&'a [u8]> {
        let m = self.u8()?;
        let n = if m & 0xe0 == 0xa0 {
            usize::from(m & 0x1f)
        } else if (0xd9..=0xdb).contains(&m) {
            self.len_of(m, 0xd9)?
        } else {
            return Err(unexpected(m, what, "a string"));
        };
        self.take(n)
    }

    #[inline(always)]
    pub(crate) fn str(&mut self, what: &str) -> Result<&'a str> {
        std::str::from_utf8(self.str_bytes(what)?).map_err(|_| Error::InvalidUtf8)
    }

    pub(crate) fn bin(&mut self, what: &str) -> Result<&'a [u8]> {
        let n = match self.u8()? {
            m @ 0xc4..=0xc6 => self.len_of(m, 0xc4)?,
            m => return Err(unexpected(m, what, "bin")),
        };
        self.take(n)
    }

    #[inline(always)]
    pub(crate) fn uint(&mut self, what: &str) -> Result<u64> {
        match self.u8()? {
            m @ 0x00..=0x7f => Ok(u64::from(m)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            m => Err(unexpected(m, what, "an unsigned integer")),
        }
    }

    pub(crate) fn uint_as<T: TryFrom<u64>>(&mut self, what: &str) -> Result<T> {
        let v = self.uint(what)?;
        T::try_from(v).map_err(|_| Error::WrongType(format!("{what}: {v} out of range")))
    }

    /// Whether the next value is nil (consumed if so).
    #[inline(always)]
    pub(crate) fn nil(&mut self) -> bool {
        if self.buf.first() == Some(&0xc0) {
            self.buf = &self.buf[1..];
            true
        } else {
            false
        }
    }

    /// Skips one value of any type (a field this version does not know).
    pub(crate) fn skip(&mut self) -> Result<()> {
        self.skip_depth(MAX_DEPTH)
    }

    fn skip_depth(&mut self, depth: u32) -> Result<()> {
        let Some(depth) = depth.checked_sub(1) else {
            return Err(Error::BadMsgPack("nesting too deep".into()));
        };
        let m = self.u8()?;
        let (bytes, items) = match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * usize::from(m & 0x0f)),
            0x90..=0x9f => (0, usize::from(m & 0x0f)),
            0xa0..=0xbf => (usize::from(m & 0x1f), 0),
            0xc4..=0xc6 => (self.len_of(m, 0xc4)?, 0),
            0xd9..=0xdb => (self.len_of(m, 0xd9)?, 0),
            0xc7..=0xc9 => (self.len_of(m, 0xc7)?.saturating_add(1), 0),
            0xca | 0xce | 0xd2 => (4, 0),
            0xcb | 0xcf | 0xd3 => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (0, self.be(2)? as usize),
            0xdd => (0, usize::try_from(self.be(4)?).map_err(|_| truncated())?),
            0xde => (0, 2 * self.be(2)? as usize),
            0xdf => (
                0,
                usize::try_from(self.be(4)?.saturating_mul(2)).map_err(|_| truncated())?,
            ),
            _ => return Err(Error::BadMsgPack(format!("reserved marker {m:#04x}"))),
        };
        self.take(bytes)?;
        for _ in 0..items {
            self.skip_depth(depth)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_writer_matches_the_bytes_writer_at_every_width() {
        let lens = [0usize, 1, 31, 32, 255, 256, 65_535, 65_536];
        let uints = [
            0u64,
            0x7f,
            0x80,
            0xff,
            0x100,
            0xffff,
            0x1_0000,
            0xffff_ffff,
            1 << 32,
            u64::MAX,
        ];
        let maps = [0usize, 15, 16, 0xffff, 0x1_0000];
        let mut a = BytesMut::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut w = SliceWriter::new(&mut buf);
        for &n in &lens {
            let s = "y".repeat(n);
            put_str(&mut a, &s);
            put_str(&mut w, &s);
            put_bin(&mut a, s.as_bytes());
            put_bin(&mut w, s.as_bytes());
        }
        for &v in &uints {
            put_uint(&mut a, v);
            put_uint(&mut w, v);
        }
        for &n in &maps {
            put_map_len(&mut a, n);
            put_map_len(&mut w, n);
        }
        let n = w.pos();
        assert_eq!(&buf[..n], &a[..]);
    }

    #[test]
    fn writer_output_is_standard_msgpack() {
        let mut buf = [0u8; 128];
        let mut w = SliceWriter::new(&mut buf);
        put_map_len(&mut w, 3);
        put_str(&mut w, "a");
        put_uint(&mut w, 300);
        put_str(&mut w, &"x".repeat(40));
        put_bin(&mut w, &[1, 2, 3]);
        put_str(&mut w, "n");
        put_uint(&mut w, u64::MAX);
        let n = w.pos();
        let b = &buf[..n];
        // The reference implementation (rmp) reads it back.
        let mut rd: &[u8] = b;
        assert_eq!(rmp::decode::read_map_len(&mut rd).unwrap(), 3);
        let (k, rest) = rmp::decode::read_str_from_slice(rd).unwrap();
        assert_eq!(k, "a");
        rd = rest;
        assert_eq!(rmp::decode::read_int::<u64, _>(&mut rd).unwrap(), 300);
        let (k, rest) = rmp::decode::read_str_from_slice(rd).unwrap();
        assert_eq!(k.len(), 40);
        rd = rest;
        assert_eq!(rmp::decode::read_bin_len(&mut rd).unwrap(), 3);
        // And our reader agrees.
        let mut r = Reader::new(b);
        assert_eq!(r.map_len("m").unwrap(), 3);
        assert_eq!(r.str("k").unwrap(), "a");
        assert_eq!(r.uint("v").unwrap(), 300);
        r.skip().unwrap();
        assert_eq!(r.bin("b").unwrap(), &[1, 2, 3]);
        r.skip().unwrap();
        assert_eq!(r.uint("v").unwrap(), u64::MAX);
        assert!(r.is_empty());
    }

    #[test]
    fn reader_errors_not_panics() {
        assert!(Reader::new(&[]).uint("x").is_err());
        assert!(
            Reader::new(&[0xdb, 0xff, 0xff, 0xff, 0xff])
                .str("x")
                .is_err()
        );
        assert_eq!(Reader::new(&[0xa1, 0xff]).str("x"), Err(Error::InvalidUtf8));
        // 40 nested one-element arrays exceed the depth limit.
        assert!(Reader::new(&[0x91; 40]).skip().is_err());
        assert!(Reader::new(&[0xc1]).skip().is_err());
    }
}
