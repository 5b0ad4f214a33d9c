//! Transactions: `END_TRANSACTION` (37) and `CHECK_TRANSACTION_STATE` (39).

use serde::{Deserialize, Serialize};

/// The producer's decision on a half message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransactionDecision {
    /// Make it visible.
    Commit,
    /// Drop it.
    Rollback,
    /// Not known yet; the broker will ask again.
    #[default]
    Unknown,
}

/// Producer → broker: commit or roll back a half message (also the answer
/// to a [`CheckTransactionStateRequest`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndTransactionRequest {
    /// Producer group.
    pub producer_group: String,
    /// Queue offset of the half message in the half topic.
    pub tran_state_table_offset: u64,
    /// Commit log offset of the half message.
    pub commit_log_offset: u64,
    /// The decision.
    pub decision: TransactionDecision,
    /// Whether this answers a broker check.
    #[serde(default)]
    pub from_transaction_check: bool,
    /// Message id of the half message.
    pub msg_id: String,
    /// Transaction id (the message's unique key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
}

/// Broker → producer (oneway): what is the state of this transaction? The
/// producer answers with an [`EndTransactionRequest`]. Body: a batch of one
/// stored message, the half message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckTransactionStateRequest {
    /// Producer group asked.
    pub producer_group: String,
    /// Queue offset of the half message in the half topic.
    pub tran_state_table_offset: u64,
    /// Commit log offset of the half message.
    pub commit_log_offset: u64,
    /// Message id of the half message.
    pub msg_id: String,
    /// Transaction id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
}
