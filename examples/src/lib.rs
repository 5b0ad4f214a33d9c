//! # actormq-examples
//!
//! Runnable scenarios. Each scenario is a library function here, a short
//! `main` under `examples/`, and a test that runs it, so examples cannot rot.
//! Every scenario starts its own combined node in-process ([`node`]), so
//! none needs a running node. The book includes their code by
//! `{{#include}}` anchors.
//!
//! | Example | What it shows |
//! |---|---|
//! | [`quickstart`] | start a node, produce, push-consume everything, shut down |
//! | [`producer`] | building a producer, sync and ordered sends |
//! | [`async_oneway`] | async (future) and oneway sends, read back |
//! | [`batch`] | a batch send, read back at its queue and offsets |
//! | [`broadcast`] | two broadcasting consumers of one group each get everything |
//! | [`pull_consumer`] | explicit queues and offsets, commit and read back |
//! | [`tag_filter`] | a push consumer with `paid \|\| shipped` |
//! | [`fast_consumer`] | a push consumer of borrowed messages (`view_listener`) totals readings |
//! | [`orderly`] | two orderly consumers get each order's created / paid / shipped in order; a failed event is retried in place |
//! | [`queries`] | messages looked up by id, by key and by queue offset |
//! | [`subscription_group`] | a group's config: auto-created by its first consumer, updated by an admin |
//! | [`offset_reset`] | a running group reset to a time gets the messages from there again |
//! | [`sql_filter`] | a push consumer with a SQL92 expression over properties |
//! | [`delayed`] | an order-timeout check sent with a delay level arrives after it |
//! | [`retry_dlq`] | failed messages retried by the broker, then a dead letter |
//! | [`idempotent`] | an idempotent producer behind a link that loses replies: each message stored once |
//! | [`simple_consumer`] | a simple (pop) consumer acks jobs, extends one, and gets an unacked one back with its reconsume times one higher |
//! | [`transfer`] | a money transfer as a transactional message, with a check-back from the ledger |
//! | [`custom_actor`] | a custom actor plugged into a broker |
//! | [`grpc_client`] | the RocketMQ 5 gRPC API called with its generated tonic client: a gRPC send read natively, a native send received and acked over gRPC |
//! | [`operations`] | a node's `/metrics` and `/api/groups/{group}` read over HTTP: messages in, a group's lag |
//!
//! **Place in the layering:** a user of `sdk`, with `cluster` to start an
//! in-process node.
#![forbid(unsafe_code)]

pub mod async_oneway;
pub mod batch;
pub mod broadcast;
pub mod custom_actor;
pub mod delayed;
pub mod fast_consumer;
pub mod grpc_client;
pub mod ha;
pub mod idempotent;
pub mod node;
pub mod offset_reset;
pub mod operations;
pub mod orderly;
pub mod producer;
pub mod pull_consumer;
pub mod queries;
pub mod quickstart;
pub mod retry_dlq;
pub mod simple_consumer;
pub mod sql_filter;
pub mod subscription_group;
pub mod tag_filter;
pub mod transfer;
pub mod wait;
