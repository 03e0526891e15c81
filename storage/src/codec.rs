//! The one place values are turned into bytes: a format-version byte, then bincode 2 (serde).
//!
//! bincode is unmaintained (RUSTSEC-2025-0141) and 3.0 is a tombstone; keeping it behind this
//! module and a version byte means it can be swapped without a silent misread of old files.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Written as the first byte of every encoded value. 2: an instance's event ids are kept in
/// two generations (state written by version 1 is refused, with this error, not misread).
pub const FORMAT_VERSION: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty value: no format-version byte")]
    Empty,
    #[error("value has format version {found}, this build reads version {FORMAT_VERSION}")]
    Version { found: u8 },
    #[error("cannot decode value: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("cannot encode value: {0}")]
    Encode(#[from] bincode::error::EncodeError),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `value`, appending to `buf`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> Result<(), CodecError> {
    buf.push(FORMAT_VERSION);
    bincode::serde::encode_into_writer(value, Appender(buf), config())?;
    Ok(())
}

/// bincode's writer for a `Vec`: appends, where `std::io::Write` goes through `write_all`
/// and its byte count for every field.
struct Appender<'a>(&'a mut Vec<u8>);

impl bincode::enc::write::Writer for Appender<'_> {
    /// bincode writes a value field by field, in pieces of 1, 3, 5 or 9 bytes (its varints)
    /// but for strings and byte strings. Those lengths are copied as arrays of that size:
    /// `extend_from_slice` with a length known only at run time calls `memcpy`, which was
    /// most of this function's time.
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
            bytes.try_into().expect("matched on the length")
        }
        let out = &mut *self.0;
        match bytes.len() {
            1 => out.push(bytes[0]),
            3 => out.extend_from_slice(&array::<3>(bytes)),
            5 => out.extend_from_slice(&array::<5>(bytes)),
            9 => out.extend_from_slice(&array::<9>(bytes)),
            _ => out.extend_from_slice(bytes),
        }
        Ok(())
    }
}

/// Encodes `value` into a fresh buffer.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    encode_into(value, &mut buf).expect("encoding into memory cannot fail for serde-derived types");
    buf
}

/// Decodes a value written by [`encode`], checking its format version.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, _) = bincode::serde::decode_from_slice(body(bytes)?, config())?;
    Ok(value)
}

/// Decodes a value that borrows from `bytes` (`&str`, `&[u8]`): nothing is copied. The value
/// may be a prefix of what was encoded: what follows it is not read.
pub fn decode_borrowed<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, CodecError> {
    let (value, _) = bincode::serde::borrow_decode_from_slice(body(bytes)?, config())?;
    Ok(value)
}

/// The bytes after the format-version byte, once it is checked.
fn body(bytes: &[u8]) -> Result<&[u8], CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::Version { found: version });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        count: u32,
        seen: Vec<u64>,
    }

    #[test]
    fn round_trips_and_checks_the_version() {
        let value = Sample {
            name: "ORD-1".into(),
            count: 2,
            seen: vec![7, 9],
        };
        let mut bytes = encode(&value);
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<Sample>(&bytes).unwrap(), value);
        bytes[0] = FORMAT_VERSION + 1;
        assert!(matches!(
            decode::<Sample>(&bytes),
            Err(CodecError::Version { .. })
        ));
        assert!(matches!(decode::<Sample>(&[]), Err(CodecError::Empty)));
        assert!(decode::<Sample>(&[FORMAT_VERSION, 200]).is_err());
    }
}
