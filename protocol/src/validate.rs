//! Rules a message must pass before it is sent or stored (RocketMQ's
//! `Validators` / `TopicValidator`).

use crate::batch::MessageRef;
use crate::error::{Error, Result};
use crate::message::{Delay, Message};

/// Longest topic name, in chars (RocketMQ: 127).
pub const MAX_TOPIC_LEN: usize = 127;

/// Default max message size: 4 MiB of body + properties.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// A topic is non-empty, at most 127 chars, of `[%|a-zA-Z0-9_-]` only
/// (`%` and `|` appear in system topics such as `%RETRY%group`).
pub fn validate_topic(topic: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidTopic {
            topic: topic.chars().take(MAX_TOPIC_LEN + 1).collect(),
            reason,
        })
    };
    if topic.is_empty() {
        return bad("empty");
    }
    if topic.len() > MAX_TOPIC_LEN {
        return bad("longer than 127 chars");
    }
    if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'%' | b'|' | b'_' | b'-'))
    {
        return bad("only [%|a-zA-Z0-9_-] allowed");
    }
    Ok(())
}

/// What validation looks at, so owned [`Message`]s and borrowed
/// [`MessageRef`]s (a batch read without allocating) pass the same rules.
pub trait MessageView {
    /// Topic name.
    fn topic(&self) -> &str;
    /// Body plus property keys and values, in bytes.
    fn size(&self) -> usize;
    /// Delivery delay.
    fn delay(&self) -> Delay;
}

impl MessageView for Message {
    fn topic(&self) -> &str {
        &self.topic
    }
    fn size(&self) -> usize {
        Message::size(self)
    }
    fn delay(&self) -> Delay {
        self.delay
    }
}

impl MessageView for MessageRef<'_> {
    fn topic(&self) -> &str {
        self.topic
    }
    fn size(&self) -> usize {
        MessageRef::size(self)
    }
    fn delay(&self) -> Delay {
        self.delay
    }
}

/// Topic rules, and body + properties within `max_size`.
pub fn validate_message<M: MessageView + ?Sized>(msg: &M, max_size: usize) -> Result<()> {
    validate_topic(msg.topic())?;
    let size = msg.size();
    if size > max_size {
        return Err(Error::MessageTooLarge {
            size,
            max: max_size,
        });
    }
    Ok(())
}

/// A batch: non-empty, one topic, no delay, each message valid, and the
/// total size within `max_size`.
pub fn validate_batch<M: MessageView>(msgs: &[M], max_size: usize) -> Result<()> {
    let mut check = BatchCheck::new(max_size);
    for m in msgs {
        check.add(m)?;
    }
    check.finish()
}

/// [`validate_batch`] one message at a time, for a caller that walks a
/// batch once (e.g. while encoding it): [`BatchCheck::add`] each message,
/// then [`BatchCheck::finish`].
#[derive(Debug, Clone, Default)]
pub struct BatchCheck {
    max_size: usize,
    first_topic: Option<String>,
    total: usize,
}

impl BatchCheck {
    /// A check of a batch whose messages may hold `max_size` bytes in all.
    pub fn new(max_size: usize) -> BatchCheck {
        BatchCheck {
            max_size,
            first_topic: None,
            total: 0,
        }
    }

    /// Checks the next message of the batch.
    pub fn add<M: MessageView + ?Sized>(&mut self, m: &M) -> Result<()> {
        self.add_parts(m.topic(), m.delay(), m.size())
    }

    /// [`BatchCheck::add`] for a message known by its topic, delay and
    /// size ([`MessageView::size`]).
    pub fn add_parts(&mut self, topic: &str, delay: Delay, size: usize) -> Result<()> {
        match &self.first_topic {
            // The first message's topic was validated: equal ones are too.
            Some(first) if first != topic => {
                return Err(Error::InvalidMessage(
                    "a batch holds messages of one topic only",
                ));
            }
            Some(_) => {}
            None => {
                validate_topic(topic)?;
                self.first_topic = Some(topic.to_owned());
            }
        }
        if delay != Delay::None {
            return Err(Error::InvalidMessage(
                "a batch cannot carry delayed messages",
            ));
        }
        if size > self.max_size {
            return Err(Error::MessageTooLarge {
                size,
                max: self.max_size,
            });
        }
        self.total = self.total.saturating_add(size);
        Ok(())
    }

    /// The verdict on the whole batch: not empty, total within the limit.
    pub fn finish(self) -> Result<()> {
        if self.first_topic.is_none() {
            return Err(Error::InvalidMessage("empty batch"));
        }
        if self.total > self.max_size {
            return Err(Error::MessageTooLarge {
                size: self.total,
                max: self.max_size,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        for ok in [
            "a",
            "Orders_2024-x",
            "%RETRY%group",
            "a|b",
            &"x".repeat(127),
        ] {
            assert!(validate_topic(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a/b", "tópico", "a.b", &"x".repeat(128)] {
            assert!(
                matches!(validate_topic(bad), Err(Error::InvalidTopic { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn sizes() {
        let mut m = Message::new("t", vec![0u8; 10]);
        assert!(validate_message(&m, 10).is_ok());
        m.properties.insert("k".into(), "v".into());
        assert_eq!(
            validate_message(&m, 10),
            Err(Error::MessageTooLarge { size: 12, max: 10 })
        );
    }

    #[test]
    fn borrowed_batches_pass_the_same_rules() {
        let mut d = Message::new("a", &b"1"[..]);
        d.delay = Delay::Level(2);
        let bytes = crate::batch::messages_to_bytes(&[Message::new("a", &b"1"[..]), d]);
        let refs: Vec<MessageRef<'_>> = crate::batch::iter_messages(&bytes)
            .collect::<Result<_>>()
            .unwrap();
        assert!(validate_batch(&refs[..1], 10).is_ok());
        assert!(validate_batch(&refs, 10).is_err());
    }

    #[test]
    fn batches() {
        let a = Message::new("a", &b"1"[..]);
        let b = Message::new("b", &b"1"[..]);
        assert!(validate_batch(&[a.clone(), a.clone()], 10).is_ok());
        assert!(validate_batch::<Message>(&[], 10).is_err());
        assert!(validate_batch(&[a.clone(), b], 10).is_err());
        let mut d = a.clone();
        d.delay = Delay::Level(2);
        assert!(validate_batch(&[a.clone(), d], 10).is_err());
        assert!(matches!(
            validate_batch(&[a.clone(), a.clone(), a], 2),
            Err(Error::MessageTooLarge { size: 3, max: 2 })
        ));
    }
}
