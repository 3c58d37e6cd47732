//! `Router`: the compiled route table of `rqueue_core::routing`.

use pyo3::prelude::*;
use rqueue_core::routing::{Route, RouteRule, Router as CoreRouter, RuleKind};
use rqueue_core::Error;

use crate::errors::IntoPyResult;

type RuleTuple = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

type RouteTuple = (String, String, String, Option<u8>);

fn as_tuple(r: &Route) -> RouteTuple {
    (
        r.queue.clone(),
        r.exchange.clone(),
        r.routing_key.clone(),
        r.priority,
    )
}

/// A compiled route table: the first matching rule wins, else the default queue.
#[pyclass(module = "rqueue._rqueue", frozen)]
pub struct Router {
    inner: CoreRouter,
}

fn to_rule(
    (kind, pattern, queue, exchange, routing_key, priority): RuleTuple,
) -> Result<RouteRule, Error> {
    let kind = RuleKind::parse(&kind)?;
    let priority = match priority {
        None => None,
        Some(p) => Some(u8::try_from(p).ok().filter(|p| *p <= 9).ok_or_else(|| {
            Error::Config(format!(
                "route {pattern:?} has priority {p}; priorities are 0 (highest) to 9"
            ))
        })?),
    };
    Ok(RouteRule {
        kind,
        pattern,
        queue,
        exchange,
        routing_key,
        priority,
    })
}

#[pymethods]
impl Router {
    #[new]
    #[pyo3(signature = (rules, default_queue = "celery"))]
    fn new(py: Python<'_>, rules: Vec<RuleTuple>, default_queue: &str) -> PyResult<Self> {
        let rules = rules
            .into_iter()
            .map(to_rule)
            .collect::<Result<Vec<_>, _>>()
            .map_py(py)?;
        let inner = CoreRouter::new(rules, default_queue).map_py(py)?;
        Ok(Router { inner })
    }

    /// `(queue, exchange, routing_key, priority)` for a task name.
    fn route(&self, task: &str) -> RouteTuple {
        as_tuple(self.inner.route(task))
    }

    /// Like `route`, but `None` when no rule matches (the default queue is not applied).
    fn lookup(&self, task: &str) -> Option<RouteTuple> {
        self.inner.lookup(task).map(as_tuple)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Router>()
}
