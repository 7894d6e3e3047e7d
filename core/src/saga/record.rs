//! The persisted saga instance and its step log.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::definition::SagaMode;

/// The collection holding saga instances.
pub const SAGAS: &str = "sagas";

/// Where a saga instance stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SagaStatus {
    /// Steps are being executed.
    Running,
    /// Every step completed.
    Completed,
    /// A step failed; completed steps are being undone.
    Compensating,
    /// A step failed and every completed step was undone.
    Compensated,
    /// An undo failed even after its retries: someone must look (terminal).
    CompensationFailed,
    /// A transaction-mode saga failed and its transaction rolled back.
    Failed,
}

impl SagaStatus {
    /// Whether the saga will not change any more.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Running | Self::Compensating)
    }

    /// The stored spelling, for filters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Completed => "COMPLETED",
            Self::Compensating => "COMPENSATING",
            Self::Compensated => "COMPENSATED",
            Self::CompensationFailed => "COMPENSATION_FAILED",
            Self::Failed => "FAILED",
        }
    }
}

/// Where one step stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepStatus {
    /// Not started.
    Pending,
    /// Started; if the saga is found in this state after a crash the
    /// outcome is unknown and the step runs again (by its idempotency key).
    Started,
    /// Executed successfully.
    Completed,
    /// Failed after its retries.
    Failed,
    /// Being undone; after a crash the undo runs again.
    Compensating,
    /// Undone.
    Compensated,
    /// The undo failed after its retries.
    CompensationFailed,
}

/// One line of the step log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's name.
    pub name: String,
    /// Where it stands.
    pub status: StepStatus,
    /// Attempts of the last action (execute or compensate).
    pub attempts: u32,
    /// The last failure.
    pub error: Option<String>,
    /// What `execute` returned, handed to later steps and to the undo.
    pub output: Option<Value>,
    /// When the last action started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the last action ended.
    pub finished_at: Option<DateTime<Utc>>,
}

impl StepRecord {
    pub(crate) fn pending(name: String) -> Self {
        Self {
            name,
            status: StepStatus::Pending,
            attempts: 0,
            error: None,
            output: None,
            started_at: None,
            finished_at: None,
        }
    }
}

/// A saga instance as stored in [`SAGAS`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SagaRecord {
    /// The instance id (a UUIDv7 unless the caller chose one), so listing
    /// by id is listing by start time.
    #[serde(rename = "_id")]
    pub id: String,
    /// The definition's name.
    pub name: String,
    /// The definition's mode.
    pub mode: SagaMode,
    /// Where the saga stands.
    pub status: SagaStatus,
    /// The input it was started with.
    pub input: Value,
    /// One entry per step, in definition order.
    pub steps: Vec<StepRecord>,
    /// The failure that ended or is undoing the saga.
    pub error: Option<String>,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}
