//! Release events.

use choreo::Payload;
use serde::{Deserialize, Serialize};

/// A release to ship (starts the saga).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRequested {
    /// Release id (also the correlation).
    pub release: String,
    /// Version.
    pub version: String,
}
impl Payload for ReleaseRequested {
    const TYPE: &'static str = "release.requested.v1";
}

/// Deploy to an environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRequested {
    /// Release id.
    pub release: String,
    /// Environment.
    pub env: String,
}
impl Payload for DeployRequested {
    const TYPE: &'static str = "deploy.requested.v1";
}

/// Deployed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployCompleted {
    /// Release id.
    pub release: String,
    /// Environment.
    pub env: String,
}
impl Payload for DeployCompleted {
    const TYPE: &'static str = "deploy.completed.v1";
}

/// Undo a deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackRequested {
    /// Release id.
    pub release: String,
    /// Environment.
    pub env: String,
}
impl Payload for RollbackRequested {
    const TYPE: &'static str = "rollback.requested.v1";
}

/// Rolled back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackCompleted {
    /// Release id.
    pub release: String,
    /// Environment.
    pub env: String,
}
impl Payload for RollbackCompleted {
    const TYPE: &'static str = "rollback.completed.v1";
}
