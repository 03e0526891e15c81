//! Byte layouts of table keys, chosen so that redb's byte order is the order we scan in.

use crate::StorageError;
use smallvec::SmallVec;
use std::sync::Arc;

/// One process instance: the template (process) it belongs to and its correlation key.
/// Encoded as `template: u16 BE ++ key bytes`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId {
    pub template: u16,
    /// Shared with the event's route key: an id costs no copy of the key per delivery.
    pub key: Arc<str>,
}

impl InstanceId {
    pub fn new(template: u16, key: impl Into<Arc<str>>) -> InstanceId {
        InstanceId {
            template,
            key: key.into(),
        }
    }

    /// Inline for keys up to 62 bytes: looking an instance up allocates nothing.
    pub fn encode(&self) -> SmallVec<[u8; 64]> {
        let mut out = SmallVec::with_capacity(self.encoded_len());
        out.extend_from_slice(&self.template.to_be_bytes());
        out.extend_from_slice(self.key.as_bytes());
        out
    }

    /// The length of [`InstanceId::encode`]'s bytes.
    pub fn encoded_len(&self) -> usize {
        2 + self.key.len()
    }

    /// Appends [`InstanceId::encode`]'s bytes to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.encode());
    }

    /// The template and key bytes of an encoded id, without building an `InstanceId`.
    pub(crate) fn encoded_parts(bytes: &[u8]) -> Result<(u16, &[u8]), StorageError> {
        match bytes {
            [high, low, key @ ..] => Ok((u16::from_be_bytes([*high, *low]), key)),
            _ => Err(StorageError::CorruptKey { table: "instances" }),
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<InstanceId, StorageError> {
        let (template, key) = InstanceId::encoded_parts(bytes)?;
        let key = std::str::from_utf8(key)
            .map_err(|_| StorageError::CorruptKey { table: "instances" })?;
        Ok(InstanceId::new(template, key))
    }
}

/// A timer's name. Inline up to 24 bytes (every name the built-in templates use): setting,
/// comparing or copying one allocates nothing and follows no pointer. Encoded as a string.
pub type TimerName = compact_str::CompactString;

/// A durable timer of one instance: fires when the watermark reaches `time`.
/// Encoded as `time (sign-flipped u64 BE) ++ template u16 BE ++ key length u32 BE ++ key ++ name`
/// so a range scan from the smallest key yields due timers in time order.
/// The key and name are kept as an instance keeps them (a shared key, an inline name): firing
/// a timer makes one allocation, its key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerKey {
    pub time: i64,
    pub template: u16,
    pub key: Arc<str>,
    pub name: TimerName,
}

impl TimerKey {
    pub fn new(
        time: i64,
        template: u16,
        key: impl Into<Arc<str>>,
        name: impl Into<TimerName>,
    ) -> TimerKey {
        TimerKey {
            time,
            template,
            key: key.into(),
            name: name.into(),
        }
    }

    pub(crate) fn time_prefix(time: i64) -> [u8; 8] {
        ((time as u64) ^ (1 << 63)).to_be_bytes()
    }

    /// The time of a key's first 8 bytes, read as one big-endian integer.
    pub(crate) fn decode_time(prefix: u64) -> i64 {
        (prefix ^ (1 << 63)) as i64
    }

    #[cfg(test)]
    pub(crate) fn encode(&self) -> Vec<u8> {
        Self::encode_parts(self.time, self.template, self.key.as_bytes(), &self.name)
    }

    /// The encoding of `TimerKey::new(time, template, key, name)`, without building one.
    pub(crate) fn encode_parts(time: i64, template: u16, key: &[u8], name: &str) -> Vec<u8> {
        let mut out = vec![0; 8 + Self::rest_len(key, name)];
        out[..8].copy_from_slice(&Self::time_prefix(time));
        Self::write_rest(&mut out[8..], template, key, name);
        out
    }

    /// The length of what follows the time in an encoded key.
    pub(crate) fn rest_len(key: &[u8], name: &str) -> usize {
        6 + key.len() + name.len()
    }

    /// Writes what follows the time in an encoded key into `out`, [`TimerKey::rest_len`]
    /// bytes. (Into a slice of the final length: extending a buffer piece by piece took a
    /// tenth of the cost of setting or removing a timer in memory.)
    pub(crate) fn write_rest(out: &mut [u8], template: u16, key: &[u8], name: &str) {
        let (template_bytes, out) = out.split_at_mut(2);
        template_bytes.copy_from_slice(&template.to_be_bytes());
        let (len_bytes, out) = out.split_at_mut(4);
        len_bytes.copy_from_slice(&(key.len() as u32).to_be_bytes());
        let (key_bytes, name_bytes) = out.split_at_mut(key.len());
        key_bytes.copy_from_slice(key);
        name_bytes.copy_from_slice(name.as_bytes());
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<TimerKey, StorageError> {
        if bytes.len() < 8 {
            return Err(StorageError::CorruptKey { table: "timers" });
        }
        let (time, rest) = bytes.split_at(8);
        TimerKey::decode_parts(u64::from_be_bytes(time.try_into().unwrap()), rest)
    }

    /// The template and key of an encoded key's rest (what follows its time), borrowed;
    /// `None` if it is not one.
    pub(crate) fn instance_of_rest(rest: &[u8]) -> Option<(u16, &str)> {
        let template = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?);
        let key_len = u32::from_be_bytes(rest.get(2..6)?.try_into().ok()?) as usize;
        let key = std::str::from_utf8(rest.get(6..6 + key_len)?).ok()?;
        Some((template, key))
    }

    /// Decodes a key from its first 8 bytes, as one big-endian integer, and the rest.
    pub(crate) fn decode_parts(time: u64, rest: &[u8]) -> Result<TimerKey, StorageError> {
        let corrupt = || StorageError::CorruptKey { table: "timers" };
        let (template, key) = TimerKey::instance_of_rest(rest).ok_or_else(corrupt)?;
        let name = std::str::from_utf8(&rest[6 + key.len()..]).map_err(|_| corrupt())?;
        let time = TimerKey::decode_time(time);
        Ok(TimerKey::new(time, template, key, name))
    }
}

/// A timer's parts, borrowed: what setting or removing one takes (a `&TimerKey` converts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerRef<'a> {
    pub time: i64,
    pub template: u16,
    pub key: &'a str,
    pub name: &'a str,
}

impl<'a> From<&'a TimerKey> for TimerRef<'a> {
    fn from(timer: &'a TimerKey) -> TimerRef<'a> {
        TimerRef {
            time: timer.time,
            template: timer.template,
            key: &timer.key,
            name: &timer.name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn timer_key_bytes_sort_like_timer_keys(
            a in (any::<i64>(), any::<u16>(), ".{0,8}", ".{0,4}"),
            b in (any::<i64>(), any::<u16>(), ".{0,8}", ".{0,4}"),
        ) {
            let a = TimerKey::new(a.0, a.1, a.2, a.3);
            let b = TimerKey::new(b.0, b.1, b.2, b.3);
            prop_assert_eq!(TimerKey::decode(&a.encode()).unwrap(), a.clone());
            // Byte order agrees with time order (the only order the scan relies on).
            if a.time != b.time {
                prop_assert_eq!(a.encode() < b.encode(), a.time < b.time);
            }
        }

        #[test]
        fn instance_ids_round_trip(template in any::<u16>(), key in ".{0,20}") {
            let id = InstanceId::new(template, key);
            prop_assert_eq!(InstanceId::decode(&id.encode()).unwrap(), id);
        }
    }
}
