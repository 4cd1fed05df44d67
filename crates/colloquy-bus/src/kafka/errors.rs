//! librdkafka's errors sorted by what a caller should do about them.

use crate::{BusError, ErrorKind};
use rdkafka::error::{KafkaError, RDKafkaErrorCode as Code};

/// Whether a failure with `code` may pass if the request is simply tried
/// again later. Unknown codes count as fatal: an operator should look.
pub(crate) fn kind_of(code: Code) -> ErrorKind {
    match code {
        Code::QueueFull => ErrorKind::Full,
        // The cluster is unreachable, slow or moving leadership around.
        Code::BrokerTransportFailure
        | Code::Resolve
        | Code::MessageTimedOut
        | Code::AllBrokersDown
        | Code::OperationTimedOut
        | Code::TimedOutQueue
        | Code::WaitingForCoordinator
        | Code::ISRInsufficient
        | Code::Retry
        | Code::LeaderNotAvailable
        | Code::NotLeaderForPartition
        | Code::RequestTimedOut
        | Code::BrokerNotAvailable
        | Code::ReplicaNotAvailable
        | Code::NetworkException
        | Code::CoordinatorLoadInProgress
        | Code::CoordinatorNotAvailable
        | Code::NotCoordinator
        | Code::NotEnoughReplicas
        | Code::NotEnoughReplicasAfterAppend
        | Code::NotController
        | Code::KafkaStorageError
        | Code::FencedLeaderEpoch
        | Code::UnknownLeaderEpoch
        | Code::OffsetNotAvailable
        | Code::PreferredLeaderNotAvailable
        | Code::EligibleLeadersNotAvailable
        | Code::ThrottlingQuotaExceeded
        | Code::RebalanceInProgress
        | Code::UnstableOffsetCommit
        | Code::ReassignmentInProgress
        | Code::FetchSessionIdNotFound
        | Code::InvalidFetchSessionEpoch
        | Code::RebootstrapRequired => ErrorKind::Transient,
        // The request itself is wrong; sending it again fails again.
        Code::InvalidArgument
        | Code::UnknownTopic
        | Code::UnknownPartition
        | Code::UnknownTopicOrPartition
        | Code::OffsetOutOfRange
        | Code::InvalidMessage
        | Code::InvalidMessageSize
        | Code::MessageSizeTooLarge
        | Code::MessageBatchTooLarge
        | Code::InvalidTopic
        | Code::InvalidTimestamp
        | Code::InvalidPartitions
        | Code::InvalidReplicationFactor
        | Code::InvalidConfig
        | Code::InvalidRequest
        | Code::InvalidRecord
        | Code::InvalidGroupId
        | Code::PolicyViolation
        | Code::TopicAlreadyExists => ErrorKind::Invalid,
        _ => ErrorKind::Fatal,
    }
}

/// `source` as a [`BusError`], classified by its code; errors without one
/// (client creation, bad configuration) are fatal.
pub(crate) fn kafka_error(context: impl Into<String>, source: KafkaError) -> BusError {
    let kind = source
        .rdkafka_error_code()
        .map_or(ErrorKind::Fatal, kind_of);
    BusError::Kafka {
        context: context.into(),
        kind,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_code() {
        let transient = kafka_error(
            "publish",
            KafkaError::MessageProduction(Code::NotLeaderForPartition),
        );
        assert_eq!(transient.kind(), ErrorKind::Transient);
        assert!(transient.is_retryable());
        let too_big = kafka_error(
            "publish",
            KafkaError::MessageProduction(Code::MessageSizeTooLarge),
        );
        assert_eq!(too_big.kind(), ErrorKind::Invalid);
        let denied = kafka_error(
            "publish",
            KafkaError::MessageProduction(Code::TopicAuthorizationFailed),
        );
        assert_eq!(denied.kind(), ErrorKind::Fatal);
        let config = kafka_error("create", KafkaError::ClientCreation("bad".into()));
        assert_eq!(config.kind(), ErrorKind::Fatal);
    }
}
