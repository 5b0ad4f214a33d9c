//! The tag hash stored in consume queue units and used by the broker to
//! filter by tag before the client rechecks the string.
//!
//! It is exactly RocketMQ's `MessageExtBrokerInner.tagsString2tagsCode`:
//! Java's `String.hashCode()` (`h = 31 * h + c` over the UTF-16 code units,
//! wrapping in `i32`) widened to `i64` with sign extension; an empty or
//! absent tag hashes to 0. Keeping RocketMQ's function means tag codes
//! written by either system agree.

/// Java `String.hashCode()` of `tag` as `i64`; 0 for the empty string.
pub fn tag_hash(tag: &str) -> i64 {
    let mut h: i32 = 0;
    for unit in tag.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    i64::from(h)
}

/// [`tag_hash`] of an optional tag; `None` hashes to 0.
pub fn tag_hash_opt(tag: Option<&str>) -> i64 {
    tag.map_or(0, tag_hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_java_string_hash_code() {
        assert_eq!(tag_hash(""), 0);
        assert_eq!(tag_hash_opt(None), 0);
        assert_eq!(tag_hash("a"), 97);
        assert_eq!(tag_hash("hello"), 99_162_322);
        assert_eq!(tag_hash("TagA"), 2_598_919);
        // Classic Java collision and the famous Integer.MIN_VALUE hash.
        assert_eq!(tag_hash("Aa"), tag_hash("BB"));
        assert_eq!(tag_hash("polygenelubricants"), i64::from(i32::MIN));
        // Non-BMP chars count as two UTF-16 units: "😀" = D83D DE00.
        assert_eq!(tag_hash("😀"), 0xD83D * 31 + 0xDE00);
    }
}
