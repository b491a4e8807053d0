//! The table of rules.

use crate::context::Context;
use crate::finding::{Finding, RuleInfo};

/// A rule: its documentation and its check over the facts. Checks return
/// findings at the rule's default level; [`crate::evaluate`] applies the
/// configured level.
pub trait Rule: Sync {
    fn info(&self) -> &'static RuleInfo;
    fn check(&self, cx: &Context<'_>) -> Vec<Finding>;
}

/// Every rule, in id order.
pub fn all_rules() -> &'static [&'static dyn Rule] {
    crate::rules::ALL
}

/// A rule by id (`CC001`) or name (`gnu-openmp-after-fork`), ignoring case.
pub fn find_rule(key: &str) -> Option<&'static dyn Rule> {
    all_rules()
        .iter()
        .copied()
        .find(|r| r.info().id.eq_ignore_ascii_case(key) || r.info().name.eq_ignore_ascii_case(key))
}
