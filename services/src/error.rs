//! Errors of the services.

use thiserror::Error;

/// A service operation failed.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] choreo::BusError),
    /// The key-value store failed.
    #[error("key-value store {bucket}: {reason}")]
    Kv {
        /// The bucket.
        bucket: String,
        /// What failed.
        reason: String,
    },
    /// Encoding or decoding failed.
    #[error(transparent)]
    Codec(#[from] choreo::CodecError),
    /// A value is not what it should be.
    #[error("{0}")]
    Invalid(String),
}
