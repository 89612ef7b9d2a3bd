//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`): m2m-guard records, your exporter (Prometheus, StatsD,
//! OpenTelemetry, ...) exports. Without a recorder installed every call is
//! a no-op; without the feature they compile to nothing.
//!
//! Every label value comes from the configuration or from a closed set:
//! `issuer` is the configured issuer (an issuer template, not a tenant's
//! `iss`), `reason` a stable reason code, `outcome` one of a few words;
//! `tenant` only when turned on ([`VerifierBuilder::metrics_tenant_label`](crate::VerifierBuilder::metrics_tenant_label)).
//! Never a value a caller sends.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `m2m_guard_decisions_total` | counter | `outcome` (`accepted`, `rejected`), `reason`, `issuer` (+ `tenant`) | every decision of the layer and of the guards; `reason` is `ok` when accepted, else the stable reason code (`expired`, `invalid_audience`, `missing_token`, `insufficient_scope`, `keys_unavailable`, `revoked`, ...) |
//! | `m2m_guard_token_cache_hits_total` / `_misses_total` / `_admissions_total` | counter | – | the verified-token cache |
//! | `m2m_guard_key_set_fetches_total` | counter | `issuer`, `outcome` (`ok`, `error`, `warm_start`) | key-set fetches (with discovery) |
//! | `m2m_guard_key_set_fetch_duration_seconds` | histogram | `issuer` | how long each took |
//! | `m2m_guard_key_set_age_seconds` | gauge | `issuer` | age of the key set in use (since it was fetched) |
//! | `m2m_guard_key_set_stale` | gauge | `issuer` | 1 while the keys are past their TTL and used within `max_stale` |
//! | `m2m_guard_key_set_usable_seconds` | gauge | `issuer` | seconds until the keys become unusable (0: none usable) |
//! | `m2m_guard_unknown_kid_total` | counter | `issuer`, `action` (`refetch`, `refused_cooldown`) | tokens naming a `kid` the keys lack (or without `kid`, failing against the one key held) |
//! | `m2m_guard_revocations` | gauge | – | revocations held |
//! | `m2m_guard_revocations_sync_age_seconds` | gauge | – | since the fleet's list was last confirmed current |
//! | `m2m_guard_client_token_requests_total` | counter | `client_id`, `outcome` (`ok`, `oauth_error`, `unavailable`, `error`) | the client side's token requests |
//! | `m2m_guard_client_token_age_seconds` | gauge | `client_id` | age of the cached token handed out |
//!
//! Key-set gauges are per issuer with one key set; they are set after
//! every fetch, once a second by the verifier's metrics task, and by every
//! [`Verifier::health`](crate::Verifier::health) call.
//!
//! A request the layer accepts and a guard then refuses (403) counts twice:
//! `accepted` by the layer, `rejected` with the guard's reason. A request
//! without a token that an optional layer lets through is not a decision
//! and is not counted. A key set taken from the fleet after a failed fetch
//! counts as `error` (the fetch) and as `warm_start` (what was used).
//!
//! Why the `metrics` facade rather than the OpenTelemetry API: it is to
//! metrics what `log` is to logging, a small, stable facade with no exporter
//! in it, so a library can record without choosing one for you; exporters
//! exist for Prometheus, StatsD, and OpenTelemetry itself
//! (`metrics-exporter-*`).
//!
//! Cost: the two counters every cached request moves, accepted decisions
//! (without the tenant label) and token-cache hits, are counted in atomics
//! (eight per counter, each thread adding to its own, on cache lines of
//! their own) and handed to the recorder in use in batches, as are the
//! gauges refreshed: once a second by a task the verifier spawns when it
//! is built (on the tokio runtime it is built on; it ends with the
//! verifier), on every [`Verifier::health`](crate::Verifier::health) call,
//! and when the verifier is dropped. A request pays one atomic add per
//! counter instead of a recorder lookup (0.2–0.45 µs with a Prometheus
//! recorder; BENCHMARKS.md §9). So:
//! - a scrape sees counts at most a second old; call `health()` first (the
//!   `serve` example's `/metrics` does) and it is exact;
//! - each batch goes to the recorder in use at its hand-over (for the task,
//!   the global recorder, or the thread-local one of the runtime thread it
//!   runs on), and labels a recorder adds from the caller's context
//!   (`metrics-tracing-context`) are those of the hand-over;
//! - a verifier built outside a tokio runtime has no task: its batches
//!   are handed over by `health()` and on drop only;
//! - before a push exporter's last flush at shutdown, call `health()`.
//!
//! Every other series (rejections, cache misses and admissions, fetches,
//! the accepted decisions of [`VerifierBuilder::metrics_tenant_label`](crate::VerifierBuilder::metrics_tenant_label)) is recorded as it
//! happens. Handles are never kept. Without the feature, nothing.

#[cfg(feature = "metrics")]
mod on {
    use metrics::{Key, Label, Metadata, SharedString};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::time::Duration;

    /// A counter whose key (name, labels and their hash) is built once.
    /// Each hand-over still asks the recorder in use for the handle: a
    /// handle kept across calls would miss a recorder installed later or a
    /// test's local recorder, and keep counting into a series the exporter
    /// dropped as idle (Prometheus' `idle_timeout`).
    struct PreparedCounter(Key);

    static METADATA: Metadata<'static> =
        Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

    /// A hot counter counted here and handed to the recorder in use in
    /// batches: by the verifier's metrics task once a second, by every
    /// [`crate::Verifier::health`] call, and when it is dropped. Counting
    /// is one relaxed atomic add; the recorder's lookup (0.2–0.45 µs per
    /// series with a Prometheus recorder) leaves the request path.
    pub(crate) struct BatchedCounter {
        counter: PreparedCounter,
        /// Counted per thread's stripe: two cores adding to one atomic
        /// would pass its cache line back and forth on every request.
        pending: Box<[Pending; STRIPES]>,
    }

    /// Stripes of a batched counter; threads take them in turn.
    pub(crate) const STRIPES: usize = 8;

    /// On a cache line of its own: its thread writes it on every request,
    /// and its neighbours are read or written by other threads.
    #[repr(align(128))]
    #[derive(Default)]
    struct Pending(AtomicU64);

    /// This thread's stripe, given on its first count.
    fn stripe() -> usize {
        use std::cell::Cell;
        use std::sync::atomic::AtomicUsize;
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
        }
        STRIPE.with(|s| {
            if s.get() == usize::MAX {
                s.set(NEXT.fetch_add(1, Relaxed) % STRIPES);
            }
            s.get()
        })
    }

    impl BatchedCounter {
        pub(crate) fn new(key: Key) -> Self {
            BatchedCounter {
                counter: PreparedCounter(key),
                pending: Box::default(),
            }
        }

        /// Count one.
        pub(crate) fn add(&self) {
            self.pending[stripe()].0.fetch_add(1, Relaxed);
        }

        /// Hand what was counted to the recorder in use now.
        pub(crate) fn flush(&self) {
            let n: u64 = self.pending.iter().map(|p| p.0.swap(0, Relaxed)).sum();
            if n > 0 {
                metrics::with_recorder(|r| {
                    r.register_counter(&self.counter.0, &METADATA).increment(n);
                });
            }
        }
    }

    impl Drop for BatchedCounter {
        fn drop(&mut self) {
            self.flush();
        }
    }

    /// What one configured issuer needs to count its decisions.
    pub(crate) struct IssuerMetrics {
        /// The configured issuer (a template for a multi-tenant one).
        pub(crate) issuer: Arc<str>,
        /// Label decisions with the tenant ([`crate::VerifierBuilder::metrics_tenant_label`]).
        pub(crate) tenant_label: bool,
        /// Accepted decisions without the tenant label, batched.
        accepted: BatchedCounter,
    }

    impl IssuerMetrics {
        /// Hand the batched accepted decisions to the recorder in use.
        pub(crate) fn flush(&self) {
            self.accepted.flush();
        }
    }

    impl IssuerMetrics {
        pub(crate) fn new(issuer: &Arc<str>, tenant_label: bool) -> Self {
            let key = Key::from_parts(
                "m2m_guard_decisions_total",
                vec![
                    Label::from_static_parts("outcome", "accepted"),
                    Label::from_static_parts("reason", "ok"),
                    Label::new("issuer", SharedString::from(issuer.clone())),
                ],
            );
            IssuerMetrics {
                issuer: issuer.clone(),
                tenant_label,
                accepted: BatchedCounter::new(key),
            }
        }
    }

    /// An accepted decision on a token of `issuer`.
    pub(crate) fn accepted(metrics: &IssuerMetrics, tenant: Option<&str>) {
        match tenant {
            Some(_) => decision("accepted", "ok", Some(&metrics.issuer), tenant),
            None => metrics.accepted.add(),
        }
    }

    /// The token cache's hit counter (batched: one per cached request).
    pub(crate) fn cache_hits() -> BatchedCounter {
        BatchedCounter::new(Key::from_static_name("m2m_guard_token_cache_hits_total"))
    }

    /// `issuer` is shared, not copied (the label set itself is built per
    /// call; an accepted decision without the tenant label uses its
    /// issuer's prepared key instead).
    pub(crate) fn decision(
        outcome: &'static str,
        reason: &'static str,
        issuer: Option<&Arc<str>>,
        tenant: Option<&str>,
    ) {
        let issuer = issuer.map_or(SharedString::const_str(""), |i| {
            SharedString::from(i.clone())
        });
        match tenant {
            Some(t) => metrics::counter!(
                "m2m_guard_decisions_total",
                "outcome" => outcome, "reason" => reason, "issuer" => issuer, "tenant" => t.to_owned()
            )
            .increment(1),
            None => metrics::counter!(
                "m2m_guard_decisions_total",
                "outcome" => outcome, "reason" => reason, "issuer" => issuer
            )
            .increment(1),
        }
    }

    pub(crate) fn cache(event: &'static str) {
        match event {
            "miss" => metrics::counter!("m2m_guard_token_cache_misses_total").increment(1),
            _ => metrics::counter!("m2m_guard_token_cache_admissions_total").increment(1),
        }
    }

    pub(crate) fn key_fetch(issuer: &str, outcome: &'static str, took: Option<Duration>) {
        metrics::counter!("m2m_guard_key_set_fetches_total", "issuer" => issuer.to_owned(), "outcome" => outcome)
            .increment(1);
        if let Some(took) = took {
            metrics::histogram!("m2m_guard_key_set_fetch_duration_seconds", "issuer" => issuer.to_owned())
                .record(took.as_secs_f64());
        }
    }

    pub(crate) fn key_state(issuer: &str, age: Option<Duration>, stale: bool, usable: Duration) {
        let issuer = issuer.to_owned();
        if let Some(age) = age {
            metrics::gauge!("m2m_guard_key_set_age_seconds", "issuer" => issuer.clone())
                .set(age.as_secs_f64());
        }
        metrics::gauge!("m2m_guard_key_set_stale", "issuer" => issuer.clone()).set(if stale {
            1.0
        } else {
            0.0
        });
        metrics::gauge!("m2m_guard_key_set_usable_seconds", "issuer" => issuer)
            .set(usable.as_secs_f64());
    }

    pub(crate) fn unknown_kid(issuer: &str, action: &'static str) {
        metrics::counter!("m2m_guard_unknown_kid_total", "issuer" => issuer.to_owned(), "action" => action)
            .increment(1);
    }

    pub(crate) fn revocations(held: usize, sync_age: Option<Duration>) {
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!("m2m_guard_revocations").set(held as f64);
        if let Some(age) = sync_age {
            metrics::gauge!("m2m_guard_revocations_sync_age_seconds").set(age.as_secs_f64());
        }
    }

    #[cfg_attr(not(feature = "client"), allow(dead_code))]
    pub(crate) fn client_token_request(client_id: &str, outcome: &'static str) {
        metrics::counter!("m2m_guard_client_token_requests_total", "client_id" => client_id.to_owned(), "outcome" => outcome)
            .increment(1);
    }

    #[cfg_attr(not(feature = "client"), allow(dead_code))]
    pub(crate) fn client_token_age(client_id: &str, age: Duration) {
        metrics::gauge!("m2m_guard_client_token_age_seconds", "client_id" => client_id.to_owned())
            .set(age.as_secs_f64());
    }
}

#[cfg(not(feature = "metrics"))]
#[allow(clippy::unnecessary_wraps, unused_variables, dead_code)]
mod on {
    use std::sync::Arc;
    use std::time::Duration;
    pub(crate) struct IssuerMetrics {
        pub(crate) issuer: Arc<str>,
        pub(crate) tenant_label: bool,
    }
    impl IssuerMetrics {
        pub(crate) fn new(issuer: &Arc<str>, tenant_label: bool) -> Self {
            IssuerMetrics {
                issuer: issuer.clone(),
                tenant_label,
            }
        }
    }
    impl IssuerMetrics {
        pub(crate) fn flush(&self) {}
    }
    pub(crate) struct BatchedCounter;
    impl BatchedCounter {
        pub(crate) fn add(&self) {}
        pub(crate) fn flush(&self) {}
    }
    pub(crate) fn cache_hits() -> BatchedCounter {
        BatchedCounter
    }
    pub(crate) fn accepted(metrics: &IssuerMetrics, tenant: Option<&str>) {}
    pub(crate) fn decision(
        outcome: &'static str,
        reason: &'static str,
        issuer: Option<&Arc<str>>,
        tenant: Option<&str>,
    ) {
    }
    pub(crate) fn cache(event: &'static str) {}
    pub(crate) fn key_fetch(issuer: &str, outcome: &'static str, took: Option<Duration>) {}
    pub(crate) fn key_state(issuer: &str, age: Option<Duration>, stale: bool, usable: Duration) {}
    pub(crate) fn unknown_kid(issuer: &str, action: &'static str) {}
    pub(crate) fn revocations(held: usize, sync_age: Option<Duration>) {}
    pub(crate) fn client_token_request(client_id: &str, outcome: &'static str) {}
    pub(crate) fn client_token_age(client_id: &str, age: Duration) {}
}

pub(crate) use on::*;

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use super::*;

    /// The value of an unlabelled counter in the recorder's text.
    fn value(handle: &metrics_exporter_prometheus::PrometheusHandle, name: &str) -> Option<u64> {
        handle.render().lines().find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.parse().unwrap())
        })
    }

    #[test]
    fn a_batched_counter_holds_its_counts_until_handed_over() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let _guard = metrics::set_default_local_recorder(&recorder);
        let counter = BatchedCounter::new(metrics::Key::from_static_name("batched_total"));
        counter.flush();
        assert_eq!(
            value(&handle, "batched_total"),
            None,
            "nothing pending, no series"
        );
        counter.add();
        counter.add();
        counter.add();
        assert_eq!(value(&handle, "batched_total"), None, "held back");
        counter.flush();
        assert_eq!(value(&handle, "batched_total"), Some(3));
        counter.flush();
        assert_eq!(value(&handle, "batched_total"), Some(3), "nothing twice");
        counter.add();
        drop(counter);
        assert_eq!(
            value(&handle, "batched_total"),
            Some(4),
            "handed over on drop"
        );
    }

    /// Counts from many more threads than stripes all arrive, once (and
    /// the 65th thread still gets a stripe of the eight).
    #[test]
    fn every_threads_counts_are_handed_over() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let _guard = metrics::set_default_local_recorder(&recorder);
        let counter = BatchedCounter::new(metrics::Key::from_static_name("striped_total"));
        std::thread::scope(|s| {
            for _ in 0..8 * STRIPES + 1 {
                s.spawn(|| (0..1_000).for_each(|_| counter.add()));
            }
        });
        counter.add();
        counter.flush();
        let expected = 1_000 * (8 * STRIPES as u64 + 1) + 1;
        assert_eq!(value(&handle, "striped_total"), Some(expected));
        counter.flush();
        assert_eq!(value(&handle, "striped_total"), Some(expected));
    }
}
