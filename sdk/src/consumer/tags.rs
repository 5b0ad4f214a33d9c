//! Tag expressions (`*`, `A || B`): what goes to the broker in the pull
//! (which filters by tag hash) and the client-side recheck of the string
//! (hashes may collide).

use std::collections::BTreeSet;

use actormq_protocol::request::SubscriptionData;
use actormq_protocol::tag_hash;

/// A parsed tag expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFilter {
    expr: String,
    /// `None` = every message.
    tags: Option<BTreeSet<String>>,
}

impl TagFilter {
    /// Parses `*` / empty (everything) or `A || B || ...`.
    pub fn parse(expr: &str) -> TagFilter {
        let trimmed = expr.trim();
        if trimmed.is_empty() || trimmed == "*" {
            return TagFilter {
                expr: "*".into(),
                tags: None,
            };
        }
        let tags: BTreeSet<String> = trimmed
            .split("||")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        if tags.is_empty() || tags.contains("*") {
            return TagFilter {
                expr: "*".into(),
                tags: None,
            };
        }
        TagFilter {
            expr: trimmed.to_string(),
            tags: Some(tags),
        }
    }

    /// The expression as sent to the broker.
    pub fn expression(&self) -> &str {
        &self.expr
    }

    /// Whether every message matches.
    pub fn is_all(&self) -> bool {
        self.tags.is_none()
    }

    /// The client-side check of a message's tag.
    pub fn matches(&self, tag: Option<&str>) -> bool {
        match &self.tags {
            None => true,
            Some(set) => tag.is_some_and(|t| set.contains(t)),
        }
    }

    /// The subscription announced in heartbeats.
    pub fn subscription(&self, topic: &str) -> SubscriptionData {
        let tags: Vec<String> = self.tags.iter().flatten().cloned().collect();
        SubscriptionData {
            topic: topic.to_string(),
            sub_string: self.expr.clone(),
            expression_type: "TAG".into(),
            code_set: tags.iter().map(|t| tag_hash(t)).collect(),
            tags_set: tags,
            sub_version: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_match() {
        let all = TagFilter::parse(" * ");
        assert!(all.is_all() && all.matches(None) && all.matches(Some("x")));
        let f = TagFilter::parse("A || B");
        assert!(f.matches(Some("A")) && f.matches(Some("B")));
        assert!(!f.matches(Some("C")) && !f.matches(None));
        assert_eq!(f.subscription("t").tags_set, vec!["A", "B"]);
        assert_eq!(f.subscription("t").code_set[0], tag_hash("A"));
        assert!(TagFilter::parse("A || *").is_all());
        assert!(TagFilter::parse("").is_all());
    }
}
