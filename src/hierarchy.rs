//! Scope hierarchies: a broader scope implies narrower ones.

use std::collections::BTreeMap;

/// Which scopes imply which: a broader scope grants the narrower ones it
/// implies, wherever a scope is checked ([`Scopes::contains`](crate::Scopes::contains),
/// [`RequireScope`](crate::RequireScope), the [`Scoped`](crate::Scoped)
/// extractor, per-tool MCP scopes). The MCP authorization spec (2026-07-28)
/// requires servers to honour such hierarchies.
///
/// Two kinds of rule, combined and transitive:
/// - explicit: [`ScopeHierarchy::implies`]`("mcp:admin", ["mcp:write"])`;
/// - by prefix: with [`ScopeHierarchy::prefix`]`(':')`, a scope implies every
///   scope that extends it after the separator (`mcp` implies `mcp:read` and
///   `mcp:tools:run`; `mcp:read` does not imply `mcp:readers`).
///
/// ```
/// use m2m_guard::ScopeHierarchy;
///
/// let h = ScopeHierarchy::new()
///     .implies("mcp:admin", ["mcp:write"])
///     .implies("mcp:write", ["mcp:read"]);
/// assert!(h.grants("mcp:admin", "mcp:read"));
/// assert!(!h.grants("mcp:read", "mcp:write"));
/// ```
///
/// Set it with [`VerifierBuilder::scope_hierarchy`](crate::VerifierBuilder::scope_hierarchy).
/// A principal's [`Scopes::iter`](crate::Scopes::iter) still lists only
/// the scopes the token was granted; challenges name the scopes a route
/// requires, never broader ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeHierarchy {
    /// broader → the narrower scopes it implies directly.
    edges: BTreeMap<String, Vec<String>>,
    separator: Option<char>,
}

/// Most explicit rules a hierarchy may hold (bounds the work per check).
const MAX_RULES: usize = 1024;

impl ScopeHierarchy {
    /// A hierarchy with no rules: every scope implies only itself.
    pub fn new() -> Self {
        ScopeHierarchy::default()
    }

    /// `broader` implies each of `narrower` (and whatever they imply).
    ///
    /// # Panics
    /// When a scope is empty or holds a space or a control character, or
    /// past 1024 rules: a wiring mistake, found when the hierarchy is built.
    pub fn implies<I, S>(mut self, broader: impl Into<String>, narrower: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let broader = broader.into();
        assert_scope(&broader);
        let entry = self.edges.entry(broader).or_default();
        for n in narrower {
            let n = n.into();
            assert_scope(&n);
            if !entry.contains(&n) {
                entry.push(n);
            }
        }
        let rules: usize = self.edges.values().map(Vec::len).sum();
        assert!(
            rules <= MAX_RULES,
            "m2m-guard: a ScopeHierarchy holds at most {MAX_RULES} rules"
        );
        self
    }

    /// A scope implies every scope that extends it after `separator`
    /// (`mcp` implies `mcp:read` with `':'`).
    ///
    /// # Panics
    /// When `separator` is a space or a control character.
    pub fn prefix(mut self, separator: char) -> Self {
        assert!(
            !separator.is_whitespace() && !separator.is_control(),
            "m2m-guard: a scope separator cannot be a space or a control character"
        );
        self.separator = Some(separator);
        self
    }

    /// Whether holding `granted` grants `required`.
    pub fn grants(&self, granted: &str, required: &str) -> bool {
        if granted == required || self.extends(granted, required) {
            return true;
        }
        if self.edges.is_empty() {
            return false;
        }
        // Everything `granted` implies, breadth first; bounded by the rules.
        let mut reached: Vec<&str> = vec![granted];
        let mut i = 0;
        while i < reached.len() {
            let x = reached[i];
            i += 1;
            for (broader, narrower) in &self.edges {
                if x == broader || self.extends(x, broader) {
                    for n in narrower {
                        if n == required || self.extends(n, required) {
                            return true;
                        }
                        if !reached.contains(&n.as_str()) {
                            reached.push(n);
                        }
                    }
                }
            }
        }
        false
    }

    /// `narrow` extends `broad` after the separator.
    fn extends(&self, broad: &str, narrow: &str) -> bool {
        let Some(sep) = self.separator else {
            return false;
        };
        narrow
            .strip_prefix(broad)
            .is_some_and(|rest| rest.starts_with(sep) && rest.len() > sep.len_utf8())
    }
}

fn assert_scope(s: &str) {
    assert!(
        !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control()),
        "m2m-guard: {s:?} is not a scope (empty, whitespace or a control character)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_rules_are_transitive_and_one_way() {
        let h = ScopeHierarchy::new()
            .implies("admin", ["write"])
            .implies("write", ["read", "list"]);
        assert!(h.grants("admin", "read"));
        assert!(h.grants("admin", "list"));
        assert!(h.grants("write", "read"));
        assert!(!h.grants("read", "write"));
        assert!(!h.grants("write", "admin"));
        assert!(!h.grants("admin", "delete"));
        assert!(h.grants("delete", "delete"));
        // A cycle ends.
        let cyclic = ScopeHierarchy::new()
            .implies("a", ["b"])
            .implies("b", ["a"]);
        assert!(cyclic.grants("a", "b") && cyclic.grants("b", "a"));
        assert!(!cyclic.grants("a", "c"));
    }

    #[test]
    fn prefix_rules_stop_at_the_separator() {
        let h = ScopeHierarchy::new().prefix(':');
        assert!(h.grants("mcp", "mcp:read"));
        assert!(h.grants("mcp", "mcp:tools:run"));
        assert!(h.grants("mcp:tools", "mcp:tools:run"));
        assert!(!h.grants("mcp:read", "mcp:readers"));
        assert!(!h.grants("mcp", "mcpx:read"));
        assert!(!h.grants("mcp", "mcp:"));
        assert!(!h.grants("mcp:read", "mcp"));
        assert!(!ScopeHierarchy::new().grants("mcp", "mcp:read"));
        // Both kinds combine: a prefix reaches an explicit rule's broader scope.
        let both = ScopeHierarchy::new()
            .prefix(':')
            .implies("mcp:admin", ["files:read"]);
        assert!(both.grants("mcp", "files:read"));
        assert!(both.grants("mcp:admin", "files:read:all"));
        let both = both.implies("files", ["audit"]);
        assert!(both.grants("mcp:admin", "files:read"));
        assert!(
            !both.grants("mcp:admin", "audit"),
            "files:read does not imply files"
        );
    }

    #[test]
    #[should_panic(expected = "is not a scope")]
    fn a_scope_with_a_space_is_a_wiring_mistake() {
        let _ = ScopeHierarchy::new().implies("a b", ["c"]);
    }
}
