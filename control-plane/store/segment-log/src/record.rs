//! On-disk record framing: encoding, header parsing and validation.
//!
//! Pure functions over byte slices, no I/O. A record is
//!
//! ```text
//! +-------------+-------------+-------------+-----------------+
//! | len u32 LE  | crc u32 LE  | index u64 LE| payload (len B) |
//! +-------------+-------------+-------------+-----------------+
//! ```
//!
//! where `crc` is CRC-32C over the index bytes followed by the payload. Covering the index means a
//! record copied to the wrong place (or a stale record left behind by a truncation) never passes as
//! the expected one. Decisions about what an invalid record *means* (torn tail vs corruption) live
//! in `recovery.rs`, not here.

use std::fmt;
use std::ops::Range;

/// Bytes before the payload: length, checksum, index.
pub(crate) const HEADER_LEN: usize = 16;

/// Largest payload a record may carry (64 MiB). Lengths above it are rejected on append and treated
/// as invalid on read, so a corrupted length field never makes us allocate gigabytes.
pub const MAX_PAYLOAD: usize = 64 << 20;

/// The fixed-size part of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub len: u32,
    pub crc: u32,
    pub index: u64,
}

impl Header {
    pub(crate) fn parse(bytes: &[u8; HEADER_LEN]) -> Header {
        let [
            l0,
            l1,
            l2,
            l3,
            c0,
            c1,
            c2,
            c3,
            i0,
            i1,
            i2,
            i3,
            i4,
            i5,
            i6,
            i7,
        ] = *bytes;
        Header {
            len: u32::from_le_bytes([l0, l1, l2, l3]),
            crc: u32::from_le_bytes([c0, c1, c2, c3]),
            index: u64::from_le_bytes([i0, i1, i2, i3, i4, i5, i6, i7]),
        }
    }

    /// Checks the header against the bytes that remain in the file (`available`, counted from the
    /// start of this record) before any payload is read.
    pub(crate) fn check_len(&self, available: u64) -> Result<(), Invalid> {
        let len = self.len as usize;
        if len > MAX_PAYLOAD {
            return Err(Invalid::TooLong { len });
        }
        if (HEADER_LEN + len) as u64 > available {
            return Err(Invalid::PastEnd { len, available });
        }
        Ok(())
    }

    /// Checks the checksum (computed by the caller over index and payload) and the index.
    pub(crate) fn check_body(&self, crc: u32, expected_index: u64) -> Result<(), Invalid> {
        if crc != self.crc {
            return Err(Invalid::Checksum {
                stored: self.crc,
                computed: crc,
            });
        }
        if self.index != expected_index {
            return Err(Invalid::WrongIndex {
                expected: expected_index,
                got: self.index,
            });
        }
        Ok(())
    }
}

/// Why a record failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Invalid {
    ShortHeader { available: u64 },
    TooLong { len: usize },
    PastEnd { len: usize, available: u64 },
    Checksum { stored: u32, computed: u32 },
    WrongIndex { expected: u64, got: u64 },
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::ShortHeader { available } => {
                write!(f, "short record header ({available} of {HEADER_LEN} bytes)")
            }
            Invalid::TooLong { len } => {
                write!(f, "record length {len} exceeds the limit of {MAX_PAYLOAD}")
            }
            Invalid::PastEnd { len, available } => write!(
                f,
                "record of {} bytes extends past the end of the file ({available} bytes left)",
                HEADER_LEN + len
            ),
            Invalid::Checksum { stored, computed } => {
                write!(
                    f,
                    "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
                )
            }
            Invalid::WrongIndex { expected, got } => {
                write!(f, "unexpected record index {got} (expected {expected})")
            }
        }
    }
}

/// CRC-32C of a record's index and payload.
pub(crate) fn checksum(index: u64, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&index.to_le_bytes()), payload)
}

/// Size of a record with a payload of `payload_len` bytes.
pub(crate) fn encoded_len(payload_len: usize) -> usize {
    HEADER_LEN + payload_len
}

/// Appends one framed record to `buf`. The caller has checked `payload.len() <= MAX_PAYLOAD`.
pub(crate) fn encode_into(buf: &mut Vec<u8>, index: u64, payload: &[u8]) {
    // `MAX_PAYLOAD` fits in u32; the append path enforces it before records reach the writer.
    let len = payload.len() as u32;
    buf.reserve(encoded_len(payload.len()));
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&checksum(index, payload).to_le_bytes());
    buf.extend_from_slice(&index.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Decodes the record at the start of `buf`, which must be `expected_index`. Returns the payload's
/// byte range within `buf` and the record's total length.
pub(crate) fn decode(buf: &[u8], expected_index: u64) -> Result<(Range<usize>, usize), Invalid> {
    let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
        return Err(Invalid::ShortHeader {
            available: buf.len() as u64,
        });
    };
    let header = Header::parse(head);
    header.check_len(buf.len() as u64)?;
    let payload = HEADER_LEN..HEADER_LEN + header.len as usize;
    header.check_body(
        checksum(header.index, &buf[payload.clone()]),
        expected_index,
    )?;
    Ok((payload.clone(), payload.end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(index: u64, payload: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_into(&mut buf, index, payload);
        buf
    }

    #[test]
    fn round_trip() {
        let mut buf = encode(7, b"hello");
        encode_into(&mut buf, 8, b"");
        assert_eq!(buf.len(), encoded_len(5) + encoded_len(0));
        let (payload, len) = decode(&buf, 7).unwrap();
        assert_eq!(&buf[payload], b"hello");
        let (payload, len2) = decode(&buf[len..], 8).unwrap();
        assert!(payload.is_empty());
        assert_eq!(len + len2, buf.len());
    }

    #[test]
    fn layout_is_stable() {
        let buf = encode(0x0102_0304_0506_0708, b"ab");
        assert_eq!(&buf[0..4], &2u32.to_le_bytes());
        assert_eq!(
            &buf[4..8],
            &checksum(0x0102_0304_0506_0708, b"ab").to_le_bytes()
        );
        assert_eq!(&buf[8..16], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&buf[16..], b"ab");
    }

    #[test]
    fn short_header() {
        let buf = encode(1, b"x");
        assert_eq!(
            decode(&buf[..10], 1),
            Err(Invalid::ShortHeader { available: 10 })
        );
    }

    #[test]
    fn truncated_payload() {
        let buf = encode(1, b"payload");
        assert!(matches!(
            decode(&buf[..buf.len() - 1], 1),
            Err(Invalid::PastEnd { .. })
        ));
    }

    #[test]
    fn absurd_length_is_rejected_before_reading() {
        let mut buf = encode(1, b"x");
        buf[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&buf, 1), Err(Invalid::TooLong { .. })));
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let good = encode(42, b"some payload bytes");
        for byte in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                assert!(decode(&bad, 42).is_err(), "flip of byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn wrong_index_with_valid_checksum() {
        let buf = encode(5, b"x");
        assert_eq!(
            decode(&buf, 6),
            Err(Invalid::WrongIndex {
                expected: 6,
                got: 5
            })
        );
    }

    #[test]
    fn messages_are_lowercase_without_period() {
        let all = [
            Invalid::ShortHeader { available: 3 },
            Invalid::TooLong { len: 1 << 30 },
            Invalid::PastEnd {
                len: 10,
                available: 4,
            },
            Invalid::Checksum {
                stored: 1,
                computed: 2,
            },
            Invalid::WrongIndex {
                expected: 1,
                got: 2,
            },
        ];
        for invalid in all {
            let msg = invalid.to_string();
            assert!(msg.starts_with(|c: char| c.is_lowercase()), "{msg}");
            assert!(!msg.ends_with('.'), "{msg}");
        }
    }
}
