//! Logging for binaries that host choreo actors: `choreo::logging::init()` logs to stderr with
//! the filter in `CHOREO_LOG` (the `choreo` command's own variable), so a user's node logs like
//! `choreo node` does. A binary with its own `tracing` subscriber does not need it.

/// The environment variable holding the filter (`tracing-subscriber` `EnvFilter` syntax, e.g.
/// `info`, `warn,choreo=debug`).
pub const ENV_LOG: &str = "CHOREO_LOG";

/// The filter when `CHOREO_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info";

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `CHOREO_LOG` is not a valid filter.
    #[error("{ENV_LOG}={filter:?} is not a valid log filter: {source}")]
    Filter {
        /// The value.
        filter: String,
        /// The parser's error.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber is set already (by this process, earlier).
    #[error("a tracing subscriber is already installed")]
    AlreadySet,
}

/// Log to stderr with the filter in `CHOREO_LOG` (default [`DEFAULT_FILTER`]). Call once,
/// early in `main`.
pub fn init() -> Result<(), LoggingError> {
    let filter = std::env::var(ENV_LOG).unwrap_or_else(|_| DEFAULT_FILTER.to_owned());
    init_with(&filter)
}

/// Log to stderr with `filter`.
pub fn init_with(filter: &str) -> Result<(), LoggingError> {
    let env_filter =
        tracing_subscriber::EnvFilter::try_new(filter).map_err(|source| LoggingError::Filter {
            filter: filter.to_owned(),
            source,
        })?;
    tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|_| LoggingError::AlreadySet)
}

#[cfg(test)]
mod tests {
    use super::{init_with, LoggingError};

    #[test]
    fn a_bad_filter_is_named_and_a_second_init_refused() {
        let err = init_with("info,[[").expect_err("not a filter");
        assert!(
            matches!(&err, LoggingError::Filter { filter, .. } if filter == "info,[["),
            "{err}"
        );
        // Either this test installed it now, or another test of this binary did before.
        let _ = init_with("warn");
        assert!(matches!(init_with("warn"), Err(LoggingError::AlreadySet)));
    }
}
