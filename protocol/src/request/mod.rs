//! Typed fields of every request code and of its reply.
//!
//! Each request struct implements [`Request`], naming its code and its
//! reply type; [`Frame::request`](crate::Frame::request) and
//! [`Frame::decode_request`](crate::Frame::decode_request) convert. Structs
//! travel as MessagePack maps keyed by the field names shown; optional
//! fields are `#[serde(default)]` and omitted when absent, so a field can
//! be added later without breaking older peers. Where a code carries
//! messages, they go in the frame body, as noted on each struct: one raw
//! message body, or a batch ([`crate::batch`]).
//!
//! One file per area: [`send`], [`pull`], [`query`], [`offset`],
//! [`consumer`], [`heartbeat`], [`transaction`], [`pop`], [`topic`],
//! [`subscription_group`], [`route`], [`broker`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::code::RequestCode;

pub mod broker;
pub mod consumer;
pub mod heartbeat;
pub mod offset;
pub mod pop;
pub mod pull;
pub mod query;
pub mod route;
pub mod send;
pub mod subscription_group;
pub mod topic;
pub mod transaction;

pub use broker::*;
pub use consumer::*;
pub use heartbeat::*;
pub use offset::*;
pub use pop::*;
pub use pull::*;
pub use query::*;
pub use route::*;
pub use send::*;
pub use subscription_group::*;
pub use topic::*;
pub use transaction::*;

/// The typed fields of a request code.
pub trait Request: Serialize + DeserializeOwned {
    /// The code this request travels under.
    const CODE: RequestCode;
    /// The typed fields of a successful reply.
    type Response: Serialize + DeserializeOwned;
}

/// Typed fields of a request or reply that has none (an empty map).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

macro_rules! request {
    ($($req:ty => $code:ident, $resp:ty;)*) => {
        $(
            impl Request for $req {
                const CODE: RequestCode = RequestCode::$code;
                type Response = $resp;
            }
        )*
    };
}

request! {
    SendMessageRequest => SendMessage, SendMessageResponse;
    SendBatchMessageRequest => SendBatchMessage, SendBatchMessageResponse;
    PullMessageRequest => PullMessage, PullMessageResponse;
    QueryMessageRequest => QueryMessage, QueryMessageResponse;
    ViewMessageByIdRequest => ViewMessageById, Empty;
    ViewMessagesByQueueOffsetRequest => ViewMessagesByQueueOffset, Empty;
    QueryConsumerOffsetRequest => QueryConsumerOffset, OffsetResponse;
    UpdateConsumerOffsetRequest => UpdateConsumerOffset, Empty;
    GetMaxOffsetRequest => GetMaxOffset, OffsetResponse;
    GetMinOffsetRequest => GetMinOffset, OffsetResponse;
    SearchOffsetByTimestampRequest => SearchOffsetByTimestamp, OffsetResponse;
    ResetOffsetRequest => InvokeBrokerToResetOffset, ResetOffsetResponse;
    ResetConsumerClientOffsetRequest => ResetConsumerClientOffset, Empty;
    GetConsumerListByGroupRequest => GetConsumerListByGroup, GetConsumerListByGroupResponse;
    NotifyConsumerIdsChangedRequest => NotifyConsumerIdsChanged, Empty;
    LockBatchMqRequest => LockBatchMq, LockBatchMqResponse;
    UnlockBatchMqRequest => UnlockBatchMq, Empty;
    ConsumerSendMsgBackRequest => ConsumerSendMsgBack, Empty;
    ResendDeadLettersRequest => ResendDeadLetters, ResendDeadLettersResponse;
    HeartbeatRequest => HeartBeat, HeartbeatResponse;
    EndTransactionRequest => EndTransaction, Empty;
    CheckTransactionStateRequest => CheckTransactionState, Empty;
    PopMessageRequest => PopMessage, PopMessageResponse;
    AckMessageRequest => AckMessage, Empty;
    BatchAckMessageRequest => BatchAckMessage, BatchAckMessageResponse;
    ChangeInvisibleTimeRequest => ChangeMessageInvisibleTime, ChangeInvisibleTimeResponse;
    CreateTopicRequest => UpdateAndCreateTopic, Empty;
    DeleteTopicInBrokerRequest => DeleteTopicInBroker, Empty;
    DeleteTopicInNamesrvRequest => DeleteTopicInNamesrv, Empty;
    GetAllTopicListFromNamesrvRequest => GetAllTopicListFromNameserver, TopicList;
    GetAllTopicConfigRequest => GetAllTopicConfig, AllTopicConfig;
    CreateSubscriptionGroupRequest => UpdateAndCreateSubscriptionGroup, Empty;
    GetAllSubscriptionGroupRequest => GetAllSubscriptionGroupConfig, AllSubscriptionGroupConfig;
    DeleteSubscriptionGroupRequest => DeleteSubscriptionGroup, Empty;
    GetRouteInfoByTopicRequest => GetRouteInfoByTopic, TopicRouteData;
    GetBrokerClusterInfoRequest => GetBrokerClusterInfo, ClusterInfo;
    RegisterBrokerRequest => RegisterBroker, RegisterBrokerResponse;
    UnregisterBrokerRequest => UnregisterBroker, Empty;
    PromoteBrokerRequest => PromoteBroker, PromoteBrokerResponse;
    GetBrokerConfigRequest => GetBrokerConfig, BrokerConfigResponse;
    GetBrokerRuntimeInfoRequest => GetBrokerRuntimeInfo, BrokerRuntimeInfo;
    GetConsumerConnectionListRequest => GetConsumerConnectionList, ConnectionList;
    GetProducerConnectionListRequest => GetProducerConnectionList, ConnectionList;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_code_has_a_type() {
        // Keep in step with `request!` above: one type per code.
        let codes = [
            SendMessageRequest::CODE,
            SendBatchMessageRequest::CODE,
            PullMessageRequest::CODE,
            QueryMessageRequest::CODE,
            ViewMessageByIdRequest::CODE,
            ViewMessagesByQueueOffsetRequest::CODE,
            QueryConsumerOffsetRequest::CODE,
            UpdateConsumerOffsetRequest::CODE,
            GetMaxOffsetRequest::CODE,
            GetMinOffsetRequest::CODE,
            SearchOffsetByTimestampRequest::CODE,
            ResetOffsetRequest::CODE,
            ResetConsumerClientOffsetRequest::CODE,
            GetConsumerListByGroupRequest::CODE,
            NotifyConsumerIdsChangedRequest::CODE,
            LockBatchMqRequest::CODE,
            UnlockBatchMqRequest::CODE,
            ConsumerSendMsgBackRequest::CODE,
            ResendDeadLettersRequest::CODE,
            HeartbeatRequest::CODE,
            EndTransactionRequest::CODE,
            CheckTransactionStateRequest::CODE,
            PopMessageRequest::CODE,
            AckMessageRequest::CODE,
            BatchAckMessageRequest::CODE,
            ChangeInvisibleTimeRequest::CODE,
            CreateTopicRequest::CODE,
            DeleteTopicInBrokerRequest::CODE,
            DeleteTopicInNamesrvRequest::CODE,
            GetAllTopicListFromNamesrvRequest::CODE,
            GetAllTopicConfigRequest::CODE,
            CreateSubscriptionGroupRequest::CODE,
            GetAllSubscriptionGroupRequest::CODE,
            DeleteSubscriptionGroupRequest::CODE,
            GetRouteInfoByTopicRequest::CODE,
            GetBrokerClusterInfoRequest::CODE,
            RegisterBrokerRequest::CODE,
            UnregisterBrokerRequest::CODE,
            PromoteBrokerRequest::CODE,
            GetBrokerConfigRequest::CODE,
            GetBrokerRuntimeInfoRequest::CODE,
            GetConsumerConnectionListRequest::CODE,
            GetProducerConnectionListRequest::CODE,
        ];
        let mut sorted = codes.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), codes.len(), "two types share a code");
        let mut all = RequestCode::ALL.to_vec();
        all.sort();
        assert_eq!(sorted, all, "a code has no type");
    }
}
