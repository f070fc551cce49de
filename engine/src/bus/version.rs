//! The minimum nats-server version, checked from the server's INFO at connect.

/// Oldest supported nats-server (major, minor).
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 12);

/// Parse `major.minor[.patch][-suffix]` into (major, minor, patch).
pub(crate) fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let v = v.trim().trim_start_matches('v');
    let core = v.split(['-', '+', ' ']).next()?;
    let mut it = core.split('.');
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    let patch = it.next().map_or(Some(0), |p| p.parse().ok())?;
    Some((major, minor, patch))
}

/// Whether a reported version is supported.
pub(crate) fn is_supported(v: &str) -> bool {
    parse_version(v).is_some_and(|(major, minor, _)| (major, minor) >= MIN_SERVER_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_versions() {
        assert_eq!(parse_version("2.15.1"), Some((2, 15, 1)));
        assert_eq!(parse_version("v2.12.0-beta.1"), Some((2, 12, 0)));
        assert!(is_supported("2.12.0"));
        assert!(is_supported("3.0.0"));
        assert!(!is_supported("2.9.10"));
        assert!(!is_supported("2.11.99"));
        assert!(!is_supported("garbage"));
    }
}
