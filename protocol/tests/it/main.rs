//! Integration tests of actormq-protocol: round trips (`t10`), a table of
//! malformed frames (`t20`), random input (`t30`).
//!
//! [`serve`] is a miniature server pipeline used by `t20` and `t30`: cut a
//! frame, check the code, decode the typed fields of that code, decode and
//! validate the messages in the body. Every error it returns is one a real
//! server would answer with `Error::response_code()`.

mod t10_roundtrip;
mod t20_malformed;
mod t30_fuzz;

use actormq_protocol::batch::{decode_messages, decode_stored};
use actormq_protocol::request::*;
use actormq_protocol::{
    Frame, FrameCodec, MessageId, RequestCode, Result, validate_batch, validate_message,
};
use bytes::BytesMut;
use tokio_util::codec::Decoder;

/// Frame cap used by the test pipeline.
pub const TEST_MAX_FRAME: u32 = 1024;
/// Max message size used by the test pipeline.
pub const TEST_MAX_MESSAGE: usize = 64;

/// Decodes one frame from `bytes` as a server would; `Ok(None)` when the
/// bytes are an incomplete frame.
pub fn serve(bytes: &[u8]) -> Result<Option<Frame>> {
    let mut codec = FrameCodec::with_max_frame_len(TEST_MAX_FRAME);
    let mut src = BytesMut::from(bytes);
    let Some(frame) = codec.decode(&mut src)? else {
        return Ok(None);
    };
    if frame.is_response() {
        frame.response_code()?;
        return Ok(Some(frame));
    }
    let code = frame.request_code()?;
    macro_rules! plain {
        ($($t:ty),*) => {
            match code {
                $(c if c == <$t as Request>::CODE => { frame.decode_request::<$t>()?; })*
                _ => {}
            }
        };
    }
    match code {
        RequestCode::SendMessage => {
            let req: SendMessageRequest = frame.decode_request()?;
            let msg = req.into_message(frame.body.clone())?;
            validate_message(&msg, TEST_MAX_MESSAGE)?;
        }
        RequestCode::SendBatchMessage => {
            frame.decode_request::<SendBatchMessageRequest>()?;
            validate_batch(&decode_messages(&frame.body)?, TEST_MAX_MESSAGE)?;
        }
        RequestCode::CheckTransactionState => {
            frame.decode_request::<CheckTransactionStateRequest>()?;
            decode_stored(&frame.body)?;
        }
        RequestCode::ConsumerSendMsgBack => {
            let req: ConsumerSendMsgBackRequest = frame.decode_request()?;
            MessageId::decode(&req.origin_msg_id)?;
        }
        _ => plain!(
            PullMessageRequest,
            QueryMessageRequest,
            ViewMessageByIdRequest,
            QueryConsumerOffsetRequest,
            UpdateConsumerOffsetRequest,
            GetMaxOffsetRequest,
            GetMinOffsetRequest,
            SearchOffsetByTimestampRequest,
            ResetOffsetRequest,
            GetConsumerListByGroupRequest,
            NotifyConsumerIdsChangedRequest,
            LockBatchMqRequest,
            UnlockBatchMqRequest,
            ResendDeadLettersRequest,
            HeartbeatRequest,
            EndTransactionRequest,
            PopMessageRequest,
            AckMessageRequest,
            BatchAckMessageRequest,
            ChangeInvisibleTimeRequest,
            CreateTopicRequest,
            DeleteTopicInBrokerRequest,
            DeleteTopicInNamesrvRequest,
            GetAllTopicListFromNamesrvRequest,
            GetAllTopicConfigRequest,
            GetRouteInfoByTopicRequest,
            GetBrokerClusterInfoRequest,
            RegisterBrokerRequest,
            UnregisterBrokerRequest
        ),
    }
    Ok(Some(frame))
}

/// splitmix64: a tiny deterministic PRNG for seeds and fuzz loops.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
