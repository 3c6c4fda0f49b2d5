//! The protobuf wire format: varints, tags and length-delimited fields, bounds-checked.

/// How a field is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    /// A varint.
    Varint,
    /// Eight bytes.
    Fixed64,
    /// A length, then that many bytes.
    Len,
    /// Four bytes.
    Fixed32,
}

/// Reads fields from a buffer.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads `buf`.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    /// Whether everything was read.
    pub fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// A varint.
    pub fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than ten bytes".into())
    }

    /// The next field's number and wire type; `None` at the end.
    pub fn field(&mut self) -> Result<Option<(u32, WireType)>, String> {
        if self.done() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let number = u32::try_from(tag >> 3).map_err(|_| "field number out of range")?;
        if number == 0 {
            return Err("field number 0".into());
        }
        let wire = match tag & 7 {
            0 => WireType::Varint,
            1 => WireType::Fixed64,
            2 => WireType::Len,
            5 => WireType::Fixed32,
            other => return Err(format!("unsupported wire type {other}")),
        };
        Ok(Some((number, wire)))
    }

    /// A length-delimited field's bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = usize::try_from(self.varint()?).map_err(|_| "length out of range")?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|end| *end <= self.buf.len())
            .ok_or("truncated field")?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    /// A length-delimited UTF-8 string.
    pub fn string(&mut self) -> Result<String, String> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "a string is not UTF-8".into())
    }

    /// Skips a field's value.
    pub fn skip(&mut self, wire: WireType) -> Result<(), String> {
        let skip = match wire {
            WireType::Varint => return self.varint().map(|_| ()),
            WireType::Len => return self.bytes().map(|_| ()),
            WireType::Fixed64 => 8,
            WireType::Fixed32 => 4,
        };
        if self.pos + skip > self.buf.len() {
            return Err("truncated field".into());
        }
        self.pos += skip;
        Ok(())
    }
}
