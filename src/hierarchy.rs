//! Scope hierarchies: a broader scope implies narrower ones.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::guard::is_scope_token;

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
#[derive(Debug, Clone, Default)]
pub struct ScopeHierarchy {
    /// broader → the narrower scopes it implies directly.
    edges: BTreeMap<String, Vec<String>>,
    separator: Option<char>,
    /// broader → everything it implies, through any chain of rules;
    /// computed once, on the first check.
    closure: OnceLock<BTreeMap<String, Vec<String>>>,
}

impl PartialEq for ScopeHierarchy {
    fn eq(&self, other: &Self) -> bool {
        self.edges == other.edges && self.separator == other.separator
    }
}

impl Eq for ScopeHierarchy {}

/// Most explicit rules a hierarchy may hold (bounds the work per check
/// and the one-time closure).
const MAX_RULES: usize = 256;

impl ScopeHierarchy {
    /// A hierarchy with no rules: every scope implies only itself.
    pub fn new() -> Self {
        ScopeHierarchy::default()
    }

    /// `broader` implies each of `narrower` (and whatever they imply).
    ///
    /// # Panics
    /// When a scope is not an RFC 6749 scope token (empty, a space, a `"`,
    /// a `\\`, a control or non-ASCII character), or past 256 rules: a
    /// wiring mistake, found when the hierarchy is built.
    pub fn implies<I, S>(mut self, broader: impl Into<String>, narrower: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let broader = broader.into();
        assert_scope(&broader);
        let narrower: Vec<String> = narrower.into_iter().map(Into::into).collect();
        if narrower.is_empty() {
            return self;
        }
        let entry = self.edges.entry(broader).or_default();
        for n in narrower {
            assert_scope(&n);
            if !entry.contains(&n) {
                entry.push(n);
            }
        }
        self.closure = OnceLock::new();
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
    /// When `separator` cannot appear in a scope (a space, a `"`, a `\\`, a
    /// control or non-ASCII character): the rule would never apply.
    pub fn prefix(mut self, separator: char) -> Self {
        assert!(
            is_scope_token(separator.encode_utf8(&mut [0; 4])),
            "m2m-guard: {separator:?} cannot appear in a scope, so it cannot separate one"
        );
        self.separator = Some(separator);
        self.closure = OnceLock::new();
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
        let closure = self.closure.get_or_init(|| self.close());
        // The rules `granted` reaches: its own, and those of the scopes it
        // extends by prefix; each already closed over every chain.
        self.edges
            .keys()
            .filter(|k| self.reaches(granted, k))
            .any(|k| {
                closure[k.as_str()]
                    .iter()
                    .any(|n| n == required || self.extends(n, required))
            })
    }

    /// Close the rules now (at build) rather than on the first check.
    pub(crate) fn prepare(&self) {
        if !self.edges.is_empty() {
            self.closure.get_or_init(|| self.close());
        }
    }

    /// `x` holds rule `key` directly: it is `key`, or extends it.
    fn reaches(&self, x: &str, key: &str) -> bool {
        x == key || self.extends(x, key)
    }

    /// For every rule's broader scope, everything it implies through any
    /// chain of rules (bounded: at most [`MAX_RULES`] scopes per entry).
    fn close(&self) -> BTreeMap<String, Vec<String>> {
        self.edges
            .keys()
            .map(|start| {
                let mut reached: Vec<&str> = Vec::new();
                let mut queue: Vec<&str> = vec![start];
                while let Some(x) = queue.pop() {
                    for (key, narrower) in &self.edges {
                        if self.reaches(x, key) {
                            for n in narrower {
                                if !reached.contains(&n.as_str()) {
                                    reached.push(n);
                                    queue.push(n);
                                }
                            }
                        }
                    }
                }
                (
                    start.clone(),
                    reached.into_iter().map(str::to_owned).collect(),
                )
            })
            .collect()
    }

    /// `narrow` extends `broad` after the separator.
    fn extends(&self, broad: &str, narrow: &str) -> bool {
        let Some(sep) = self.separator else {
            return false;
        };
        !broad.ends_with(sep)
            && narrow
                .strip_prefix(broad)
                .is_some_and(|rest| rest.starts_with(sep) && rest.len() > sep.len_utf8())
    }
}

fn assert_scope(s: &str) {
    assert!(
        is_scope_token(s),
        "m2m-guard: {s:?} is not a scope (empty, whitespace or a non-printable character)"
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
        assert!(
            !h.grants("mcp:", "mcp::x"),
            "a scope ending in the separator extends nothing"
        );
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
    fn a_long_chain_is_closed_once() {
        let mut h = ScopeHierarchy::new();
        for i in 0..255 {
            h = h.implies(format!("s{i}"), [format!("s{}", i + 1)]);
        }
        assert!(h.grants("s0", "s255"));
        assert!(!h.grants("s255", "s0"));
        assert!(h.grants("s100", "s200"));
    }

    #[test]
    #[should_panic(expected = "at most 256 rules")]
    fn rules_are_bounded() {
        let mut h = ScopeHierarchy::new();
        for i in 0..257 {
            h = h.implies(format!("s{i}"), ["x"]);
        }
    }

    #[test]
    #[should_panic(expected = "cannot separate")]
    fn a_separator_no_scope_can_hold_is_refused() {
        let _ = ScopeHierarchy::new().prefix('→');
    }

    #[test]
    #[should_panic(expected = "is not a scope")]
    fn a_scope_with_a_space_is_a_wiring_mistake() {
        let _ = ScopeHierarchy::new().implies("a b", ["c"]);
    }
}
