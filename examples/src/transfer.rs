//! A money transfer with a transactional message: the sender's bank debits
//! the account locally and commits a "credit" message for the receiver's
//! bank, or rolls it back when the debit fails. When the producer cannot
//! tell (it crashed between its local commit and `END_TRANSACTION`), the
//! broker asks back and the answer comes from the local ledger. The book's
//! "Transactional messages" chapter includes this file.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actormq_sdk::consumer::{ConsumeFrom, ConsumeResult, PushConsumerBuilder};
use actormq_sdk::protocol::{Message, StoredMessage};
use actormq_sdk::{ProducerBuilder, TransactionListener, TransactionState};
use tokio::sync::mpsc::unbounded_channel;

use crate::wait::{body_text, recv_n, rest};

/// What the scenario saw.
#[derive(Debug, Clone, Default)]
pub struct TransferReport {
    /// The local transaction's answer per transfer id.
    pub local: BTreeMap<String, TransactionState>,
    /// Balances of the sender's bank at the end.
    pub balances: BTreeMap<String, i64>,
    /// Credit messages the receiver's bank got (bodies), in order.
    pub credited: Vec<String>,
    /// Checks the broker made.
    pub checks: usize,
}

// ANCHOR: ledger
/// The sender's bank: balances and the transfers it has debited, kept in
/// one local transaction (here a mutex; a database transaction in life).
#[derive(Debug, Default)]
pub struct Ledger {
    balances: BTreeMap<String, i64>,
    debited: BTreeMap<String, i64>,
}

/// A transfer travels as `id from to amount`.
fn parse(body: &[u8]) -> Option<(String, String, String, i64)> {
    let text = std::str::from_utf8(body).ok()?;
    let mut parts = text.split(' ');
    let id = parts.next()?.to_owned();
    let from = parts.next()?.to_owned();
    let to = parts.next()?.to_owned();
    let amount = parts.next()?.parse().ok()?;
    Some((id, from, to, amount))
}

/// The transaction listener of the sender's bank.
#[derive(Clone)]
pub struct Bank {
    ledger: Arc<Mutex<Ledger>>,
    checks: Arc<Mutex<usize>>,
}

impl TransactionListener for Bank {
    /// Debit the sender, in one local transaction with the record of the
    /// transfer; refuse (roll back) when the balance is short.
    fn execute_local_transaction(&self, msg: &Message) -> TransactionState {
        let Some((id, from, _, amount)) = parse(&msg.body) else {
            return TransactionState::Rollback;
        };
        let mut ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        let balance = ledger.balances.get(&from).copied().unwrap_or(0);
        if balance < amount {
            return TransactionState::Rollback;
        }
        ledger.balances.insert(from, balance - amount);
        ledger.debited.insert(id.clone(), amount);
        if id.ends_with("-crash") {
            // The debit is done, but the process "dies" before it can say
            // so: the broker will ask.
            return TransactionState::Unknown;
        }
        TransactionState::Commit
    }

    /// The broker asks about a transfer left undecided: the ledger knows.
    fn check_local_transaction(&self, msg: &StoredMessage) -> TransactionState {
        *self.checks.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        let Some((id, ..)) = parse(&msg.message.body) else {
            return TransactionState::Rollback;
        };
        let ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        if ledger.debited.contains_key(&id) {
            TransactionState::Commit
        } else {
            TransactionState::Rollback
        }
    }
}
// ANCHOR_END: ledger

/// Runs the scenario: three transfers from an account holding 100.
pub async fn run() -> Result<TransferReport, Box<dyn std::error::Error>> {
    // Checks after 500 ms, every 200 ms (defaults: 6 s and 60 s).
    let settings = [
        ("ACTORMQ_BROKER__TRANSACTION_TIMEOUT_MS", "500"),
        ("ACTORMQ_BROKER__TRANSACTION_CHECK_INTERVAL_MS", "200"),
    ];
    let example = crate::node::start_with(Vec::new(), &settings).await?;
    let namesrv = example.namesrv()?;
    let mut ledger = Ledger::default();
    ledger.balances.insert("alice".into(), 100);
    let bank = Bank {
        ledger: Arc::new(Mutex::new(ledger)),
        checks: Arc::new(Mutex::new(0)),
    };

    // ANCHOR: send
    let producer = ProducerBuilder::new("bank-a")
        .namesrv([namesrv.clone()])
        .build_transactional(bank.clone())
        .await?;
    let mut report = TransferReport::default();
    for transfer in [
        "t-1 alice bob 30",
        "t-2 alice bob 500", // more than alice has: rolled back
        "t-3-crash alice carol 20",
    ] {
        let r = producer
            .send_in_transaction(Message::new("transfers", transfer))
            .await?;
        let id = transfer.split(' ').next().unwrap_or_default();
        report.local.insert(id.to_owned(), r.state);
    }
    // ANCHOR_END: send

    // ANCHOR: receive
    // The receiver's bank: a push consumer of the credits.
    let (tx, mut rx) = unbounded_channel();
    let consumer = PushConsumerBuilder::new("bank-b")
        .namesrv(&namesrv)
        .subscribe("transfers", "*")
        .consume_from(ConsumeFrom::First)
        .listener(move |msgs| {
            for m in msgs {
                let _ = tx.send(body_text(m));
            }
            ConsumeResult::Success
        })
        .start()
        .await?;
    // t-1 at once, t-3 once the broker's check found it in the ledger.
    report.credited = recv_n(&mut rx, 2, Duration::from_secs(20)).await;
    consumer.shutdown().await;
    report.credited.extend(rest(&mut rx));
    // ANCHOR_END: receive

    producer.shutdown().await;
    report.balances = bank
        .ledger
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .balances
        .clone();
    report.checks = *bank.checks.lock().unwrap_or_else(|p| p.into_inner());
    example.node.shutdown().await;
    Ok(report)
}
