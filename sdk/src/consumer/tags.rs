//! A consumer's subscription filter: a tag expression (`*`, `A || B`) or
//! SQL92 over properties, compiled by [`actormq_protocol::filter`] (the
//! one grammar the broker uses too). It goes to the broker in heartbeats
//! and pulls (the broker filters: by tag hash, or by evaluating the SQL92
//! expression on each message), and the client rechecks each message
//! (tag hashes may collide, and a pull the broker answers
//! `PULL_RETRY_IMMEDIATELY` is followed by an unfiltered one).

use actormq_protocol::Message;
use actormq_protocol::filter::{Filter, SqlExpr, TagExpr};
use actormq_protocol::request::SubscriptionData;

use super::ConsumerError;

/// A compiled subscription expression: tags or SQL92.
#[derive(Debug, Clone, PartialEq)]
pub struct TagFilter {
    filter: Filter,
}

impl TagFilter {
    /// Parses `*` / empty (everything) or `A || B || ...`; a list with no
    /// tag (`||`) is refused.
    pub fn parse(expr: &str) -> Result<TagFilter, ConsumerError> {
        TagExpr::parse(expr)
            .map(|t| TagFilter {
                filter: Filter::Tag(t),
            })
            .map_err(|e| ConsumerError::Config(e.to_string()))
    }

    /// Compiles a SQL92 expression (grammar: [`actormq_protocol::filter`]).
    pub fn sql(expr: &str) -> Result<TagFilter, ConsumerError> {
        SqlExpr::compile(expr)
            .map(|s| TagFilter {
                filter: Filter::Sql(s),
            })
            .map_err(|e| ConsumerError::Config(e.to_string()))
    }

    /// The expression as sent to the broker.
    pub fn expression(&self) -> &str {
        self.filter.expression()
    }

    /// `TAG` or `SQL92`.
    pub fn expression_type(&self) -> &'static str {
        self.filter.expression_type()
    }

    /// Whether every message matches.
    pub fn is_all(&self) -> bool {
        self.filter.is_all()
    }

    /// The client-side check of a message.
    pub fn matches(&self, m: &Message) -> bool {
        self.filter.matches(|k| m.property(k))
    }

    /// [`matches`](Self::matches) for a message still in its pull reply.
    pub fn matches_view(&self, m: &actormq_protocol::StoredView) -> bool {
        self.filter.matches(|k| m.property(k))
    }

    /// The subscription announced in heartbeats.
    pub fn subscription(&self, topic: &str) -> SubscriptionData {
        let (tags_set, code_set) = match &self.filter {
            Filter::Tag(t) => (
                t.tags().map(str::to_string).collect(),
                t.tags().map(actormq_protocol::tag_hash).collect(),
            ),
            Filter::Sql(_) => (Vec::new(), Vec::new()),
        };
        SubscriptionData {
            topic: topic.to_string(),
            sub_string: self.expression().to_string(),
            expression_type: self.expression_type().into(),
            tags_set,
            code_set,
            sub_version: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actormq_protocol::tag_hash;

    #[test]
    fn parse_and_match() {
        let tagged = |t: Option<&str>| Message {
            tags: t.map(str::to_string),
            ..Message::default()
        };
        let all = TagFilter::parse(" * ").unwrap();
        assert!(all.is_all() && all.matches(&tagged(None)) && all.matches(&tagged(Some("x"))));
        let f = TagFilter::parse("A || B").unwrap();
        assert!(f.matches(&tagged(Some("A"))) && f.matches(&tagged(Some("B"))));
        assert!(!f.matches(&tagged(Some("C"))) && !f.matches(&tagged(None)));
        assert_eq!(f.subscription("t").tags_set, vec!["A", "B"]);
        assert_eq!(f.subscription("t").code_set[0], tag_hash("A"));
        assert_eq!(f.subscription("t").expression_type, "TAG");
        assert!(TagFilter::parse("A || *").unwrap().is_all());
        assert!(TagFilter::parse("").unwrap().is_all());
        assert!(TagFilter::parse("||").is_err());
    }

    #[test]
    fn sql_subscription_and_recheck() {
        let f = TagFilter::sql("a > 1 AND TAGS = 'x'").unwrap();
        assert!(!f.is_all());
        let s = f.subscription("t");
        assert_eq!(
            (s.expression_type.as_str(), s.sub_string.as_str()),
            ("SQL92", "a > 1 AND TAGS = 'x'")
        );
        assert!(s.tags_set.is_empty() && s.code_set.is_empty());
        let mut m = Message {
            tags: Some("x".into()),
            ..Message::default()
        };
        m.properties.insert("a".into(), "2".into());
        assert!(f.matches(&m));
        m.properties.insert("a".into(), "1".into());
        assert!(!f.matches(&m));
        let e = TagFilter::sql("a > 5; DROP TABLE t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("after the expression"), "{e}");
    }
}
