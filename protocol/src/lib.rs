//! actormq wire protocol: frames, headers, request/response codes, typed
//! request structs, the message model and the batch encoding.
//!
//! This crate is the bottom of the layering
//! (`protocol <- store <- actors <- cluster`, `protocol <- sdk`): everyone
//! who sends or stores messages speaks these types. It does **no I/O**: it
//! turns bytes into typed values and back, through a tokio-util
//! [`FrameCodec`] that a session plugs into its own socket.
//!
//! # Frame layout
//!
//! All integers are big-endian. A frame on the wire:
//!
//! ```text
//! offset        size  field
//! 0             4     frame length F = 4 + H + B (every byte after this field)
//! 4             4     header length H
//! 8             H     header: common header map, then typed-fields map (MessagePack)
//! 8 + H         B     body: raw bytes (a message body or a batch), B = F - 4 - H
//! ```
//!
//! - `F >= 4`, else [`Error::FrameTooShort`]; `F <= cap` (default 16 MiB,
//!   [`DEFAULT_MAX_FRAME_LEN`]), else [`Error::FrameTooLarge`];
//!   `H <= F - 4`, else [`Error::HeaderTooLong`]. A whole frame takes
//!   `4 + F` bytes.
//! - The header is two MessagePack maps back to back (see [`header`]): the
//!   common [`Header`] (`code`, `id`, `flags`, `ver`, `remark`) and the
//!   typed fields of the code ([`request`]). The codec decodes the first and
//!   keeps the second as bytes ([`Frame::fields`]) for
//!   [`Frame::decode_fields`].
//! - The body is never MessagePack: a single message's body as is, or a
//!   batch ([`batch`]). Decoding slices it out of the read buffer without
//!   copying.
//!
//! A worked example: `GET_MAX_OFFSET` for topic `t`, queue 1, request id 1,
//! body `hi` (checked by the test `worked_example_frame` in `tests/it`; the
//! book chapter "Wire protocol" walks through it):
//!
//! ```text
//! 00 00 00 2d                     frame length 45 = 4 + 39 + 2
//! 00 00 00 27                     header length 39
//! 83 a4 "code" 1e                 {"code": 30,
//!    a2 "id" 01                    "id": 1,
//!    a3 "ver" ce 00 01 00 00       "ver": 1.0}
//! 82 a5 "topic" a1 "t"            {"topic": "t",
//!    a8 "queue_id" 01              "queue_id": 1}
//! 68 69                           body "hi"
//! ```
//!
//! # Where things are
//!
//! | file | what |
//! |---|---|
//! | [`frame`] | [`Frame`] and typed conversions |
//! | [`codec`] | [`FrameCodec`] (tokio-util `Decoder`/`Encoder`) |
//! | [`header`] | [`Header`], [`Flags`], [`Version`], the versioning rule |
//! | [`code`] | [`RequestCode`], [`ResponseCode`] |
//! | [`request`] | typed fields of every code, the [`Request`] trait |
//! | [`message`] | [`Message`], [`StoredMessage`], [`Delay`], [`MessageQueue`] |
//! | [`message_id`] | [`MessageId`] hex encoding |
//! | [`unique_key`] | [`UniqueKeyGenerator`] |
//! | [`system_topic`] | `%RETRY%`, `%DLQ%`, `SCHEDULE_TOPIC_XXXX` and their properties |
//! | [`tag_hash`](mod@tag_hash) | [`tag_hash()`](fn@tag_hash) (Java `String.hashCode`) |
//! | [`filter`] | subscription filters: tags and SQL92, compiled once |
//! | [`batch`] | the batch body encoding; [`batch::MessageRef`] borrowed view |
//! | [`validate`] | topic / size / batch rules |
//! | [`error`] | [`Error`] and its response codes |

#![forbid(unsafe_code)]

pub mod batch;
pub mod code;
pub mod codec;
pub mod error;
pub mod filter;
pub mod frame;
pub mod header;
pub mod message;
pub mod message_id;
mod mpack;
pub mod records;
pub mod request;
pub mod system_topic;
pub mod tag_hash;
pub mod unique_key;
pub mod validate;

/// Re-exported so users (and the book's doc-tests) need no direct `bytes`
/// or `tokio-util` dependency to build frames and drive the codec.
pub use bytes::{Bytes, BytesMut};
pub use tokio_util::codec::{Decoder, Encoder};

pub use code::{RequestCode, ResponseCode};
pub use codec::{DEFAULT_MAX_FRAME_LEN, FrameCodec};
pub use error::{Error, Result};
pub use frame::{Frame, to_frame};
pub use header::{Flags, Header, PROTOCOL_VERSION, Version};
pub use message::{Delay, Message, MessageQueue, StoredMessage};
pub use message_id::{MessageId, MessageIdEncoder};
pub use records::StoredView;
pub use request::Request;
pub use tag_hash::tag_hash;
pub use unique_key::UniqueKeyGenerator;
pub use validate::{
    BatchCheck, DEFAULT_MAX_MESSAGE_SIZE, MessageView, validate_batch, validate_message,
    validate_topic,
};
