//! `Debug` output for byte strings: a name and a hex prefix, enough to tell values apart in logs.

use core::fmt;

/// Writes `name(0011223344556677…)`, with at most `shown` bytes (all of them, no ellipsis, if
/// `bytes` is no longer).
pub(crate) fn fmt_hex(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    bytes: &[u8],
    shown: usize,
) -> fmt::Result {
    write!(f, "{name}(")?;
    for b in bytes.iter().take(shown) {
        write!(f, "{b:02x}")?;
    }
    f.write_str(if bytes.len() > shown { "…)" } else { ")" })
}
