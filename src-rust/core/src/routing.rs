//! Task routing: a route table compiled once, then matched per published task.
//!
//! Rules keep their order and the first matching rule wins. Exact names are looked up in a
//! hash map, but only rules *before* the first exact hit can win over it, so a table of mixed
//! kinds behaves as if every rule were tried in order. Unmatched tasks go to the default queue.

use std::collections::HashMap;

use globset::{Glob, GlobMatcher};
use regex::Regex;

use crate::error::{Error, Result};

/// How a rule's pattern is matched against a task name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// The task name equals the pattern.
    Exact,
    /// Shell-style glob: `tasks.*`, `app.?.run`, `[ab].x`.
    Glob,
    /// A regular expression that must match the whole task name.
    Regex,
}

impl RuleKind {
    /// Parses `"exact" | "glob" | "regex"`.
    pub fn parse(kind: &str) -> Result<Self> {
        match kind {
            "exact" => Ok(RuleKind::Exact),
            "glob" => Ok(RuleKind::Glob),
            "regex" => Ok(RuleKind::Regex),
            other => Err(Error::Config(format!(
                "unknown route kind {other:?}; use \"exact\", \"glob\" or \"regex\""
            ))),
        }
    }
}

/// One entry of a route table as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    pub kind: RuleKind,
    pub pattern: String,
    /// Target queue; `None` means the default queue.
    pub queue: Option<String>,
    /// Exchange; `None` means `""` (the default exchange).
    pub exchange: Option<String>,
    /// Routing key; `None` means the queue name.
    pub routing_key: Option<String>,
    pub priority: Option<u8>,
}

/// Where a task goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub queue: String,
    pub exchange: String,
    pub routing_key: String,
    pub priority: Option<u8>,
}

#[derive(Debug)]
enum Matcher {
    Exact,
    Glob(GlobMatcher),
    Regex(Regex),
}

#[derive(Debug)]
struct Compiled {
    matcher: Matcher,
    route: Route,
}

/// A compiled route table.
#[derive(Debug)]
pub struct Router {
    rules: Vec<Compiled>,
    /// Exact pattern → index of its first rule.
    exact: HashMap<String, usize>,
    /// Indexes of the pattern (glob/regex) rules, in order.
    patterns: Vec<usize>,
    default: Route,
}

impl Router {
    /// Compiles `rules`; fails with [`Error::Config`] naming the first invalid pattern.
    pub fn new(rules: Vec<RouteRule>, default_queue: &str) -> Result<Self> {
        if default_queue.is_empty() {
            return Err(Error::Config(
                "the default queue name must not be empty".into(),
            ));
        }
        let default = Route {
            queue: default_queue.to_owned(),
            exchange: String::new(),
            routing_key: default_queue.to_owned(),
            priority: None,
        };
        let mut compiled = Vec::with_capacity(rules.len());
        let mut exact = HashMap::new();
        let mut patterns = Vec::new();
        for (index, rule) in rules.into_iter().enumerate() {
            let matcher = match rule.kind {
                RuleKind::Exact => {
                    exact.entry(rule.pattern.clone()).or_insert(index);
                    Matcher::Exact
                }
                RuleKind::Glob => {
                    let glob = Glob::new(&rule.pattern).map_err(|e| {
                        Error::Config(format!(
                            "invalid glob route pattern {:?}: {e}",
                            rule.pattern
                        ))
                    })?;
                    patterns.push(index);
                    Matcher::Glob(glob.compile_matcher())
                }
                RuleKind::Regex => {
                    // Anchored so that `tasks\.a` does not also route `tasks.abc`.
                    let re = Regex::new(&format!("^(?:{})$", rule.pattern)).map_err(|e| {
                        Error::Config(format!(
                            "invalid regex route pattern {:?}: {e}",
                            rule.pattern
                        ))
                    })?;
                    patterns.push(index);
                    Matcher::Regex(re)
                }
            };
            if let Some(p) = rule.priority {
                if p > 9 {
                    return Err(Error::Config(format!(
                        "route {:?} has priority {p}; priorities are 0 (highest) to 9",
                        rule.pattern
                    )));
                }
            }
            let queue = rule.queue.unwrap_or_else(|| default_queue.to_owned());
            let routing_key = rule.routing_key.unwrap_or_else(|| queue.clone());
            compiled.push(Compiled {
                matcher,
                route: Route {
                    queue,
                    exchange: rule.exchange.unwrap_or_default(),
                    routing_key,
                    priority: rule.priority,
                },
            });
        }
        Ok(Router {
            rules: compiled,
            exact,
            patterns,
            default,
        })
    }

    /// The route of `task`: the first matching rule, else the default queue.
    pub fn route(&self, task: &str) -> &Route {
        self.lookup(task).unwrap_or(&self.default)
    }

    /// The route of the first rule matching `task`, or `None` when no rule matches.
    pub fn lookup(&self, task: &str) -> Option<&Route> {
        let exact_hit = self.exact.get(task).copied();
        for &index in &self.patterns {
            if exact_hit.is_some_and(|e| e < index) {
                break;
            }
            let rule = &self.rules[index];
            let hit = match &rule.matcher {
                Matcher::Glob(g) => g.is_match(task),
                Matcher::Regex(r) => r.is_match(task),
                Matcher::Exact => false,
            };
            if hit {
                return Some(&rule.route);
            }
        }
        exact_hit.map(|index| &self.rules[index].route)
    }

    /// The default route.
    pub fn default_route(&self) -> &Route {
        &self.default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: RuleKind, pattern: &str, queue: &str) -> RouteRule {
        RouteRule {
            kind,
            pattern: pattern.into(),
            queue: Some(queue.into()),
            exchange: None,
            routing_key: None,
            priority: None,
        }
    }

    #[test]
    fn test_route_default_when_nothing_matches() {
        let r = Router::new(vec![rule(RuleKind::Exact, "a", "qa")], "celery").unwrap();
        let route = r.route("b");
        assert_eq!(route.queue, "celery");
        assert_eq!(route.exchange, "");
        assert_eq!(route.routing_key, "celery");
        assert_eq!(route.priority, None);
    }

    #[test]
    fn test_route_exact_glob_regex() {
        let r = Router::new(
            vec![
                rule(RuleKind::Exact, "tasks.add", "math"),
                rule(RuleKind::Glob, "video.*", "video"),
                rule(RuleKind::Regex, r"img\.(resize|crop)", "images"),
            ],
            "celery",
        )
        .unwrap();
        assert_eq!(r.route("tasks.add").queue, "math");
        assert_eq!(r.route("video.encode").queue, "video");
        assert_eq!(r.route("img.crop").queue, "images");
        assert_eq!(r.route("img.cropx").queue, "celery");
        assert_eq!(r.route("tasks.mul").queue, "celery");
    }

    #[test]
    fn test_route_first_match_wins_across_kinds() {
        let r = Router::new(
            vec![
                rule(RuleKind::Glob, "tasks.*", "glob"),
                rule(RuleKind::Exact, "tasks.add", "exact"),
                rule(RuleKind::Exact, "other", "exact2"),
                rule(RuleKind::Regex, "oth.*", "regex"),
            ],
            "celery",
        )
        .unwrap();
        assert_eq!(r.route("tasks.add").queue, "glob");
        assert_eq!(r.route("other").queue, "exact2");
        assert_eq!(r.route("otherwise").queue, "regex");
    }

    #[test]
    fn test_route_fields_and_defaults() {
        let r = Router::new(
            vec![
                RouteRule {
                    kind: RuleKind::Exact,
                    pattern: "a".into(),
                    queue: Some("q".into()),
                    exchange: Some("ex".into()),
                    routing_key: Some("rk".into()),
                    priority: Some(3),
                },
                RouteRule {
                    kind: RuleKind::Exact,
                    pattern: "b".into(),
                    queue: None,
                    exchange: None,
                    routing_key: None,
                    priority: None,
                },
            ],
            "default",
        )
        .unwrap();
        assert_eq!(
            r.route("a"),
            &Route {
                queue: "q".into(),
                exchange: "ex".into(),
                routing_key: "rk".into(),
                priority: Some(3)
            }
        );
        assert_eq!(r.route("b").queue, "default");
        assert_eq!(r.route("b").routing_key, "default");
    }

    #[test]
    fn test_route_invalid_patterns_name_the_pattern() {
        let err = Router::new(vec![rule(RuleKind::Regex, "a(", "q")], "celery").unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains("\"a(\"")),
            "{err}"
        );
        let err = Router::new(vec![rule(RuleKind::Glob, "a[", "q")], "celery").unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains("\"a[\"")),
            "{err}"
        );
        assert!(RuleKind::parse("fuzzy").is_err());
    }
}
