//! The dispatcher: the one place that touches both the store and the destinations.
//!
//! claim (a batch, under a lease, committed before any network call) → send (concurrently,
//! bounded) → record the attempt and the new state (batched writes) → wake again.
//!
//! A committed event wakes the dispatcher at once through [`Waker`]; a slow poll and the
//! earliest due time are the safety net. A process that dies mid-delivery leaves leases that
//! simply expire: the delivery is due again and another claim takes it.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn, Instrument};

use crate::{
    destinations::{Destination, SendError},
    domain::{self, new_id, Attempt, AttemptOutcome, BreakerPolicy, DeliveryStatus},
    ops::Ops,
    store::{
        ops::{BatchStats, EndpointMinute, MinuteStats},
        Claimed, Completion, Store, TenantShare,
    },
};
use crate::{domain::retry::RetryPolicy, wake::Waker};

/// Dispatcher tuning.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    pub concurrency: usize,
    /// Most deliveries in flight to one endpoint.
    pub endpoint_concurrency: usize,
    /// Most deliveries in flight for one tenant; `None`: three quarters of `concurrency` (see
    /// [`DispatchConfig::tenant_limit`]).
    pub tenant_concurrency: Option<usize>,
    /// Deliveries claimed per store round trip.
    pub batch_size: usize,
    pub lease: Duration,
    pub poll_interval: Duration,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// `host:port` of a Pub/Sub emulator: from `PUBSUB_EMULATOR_HOST`, as Google's clients
    /// read it; `pubsub://` destinations then go there, without credentials.
    pub pubsub_emulator_host: Option<String>,
}

impl DispatchConfig {
    /// Most deliveries in flight for one tenant in this process: `tenant_concurrency`, or
    /// three quarters of `concurrency` (rounded up: above the default `endpoint_concurrency`,
    /// half, so one slow endpoint does not take its tenant's every slot either), never more
    /// than `concurrency`.
    pub fn tenant_limit(&self) -> usize {
        self.tenant_concurrency
            .unwrap_or((self.concurrency.saturating_mul(3)).div_ceil(4))
            .clamp(1, self.concurrency.max(1))
    }
}

/// Delivers due deliveries until shut down.
pub struct Dispatcher {
    store: Arc<dyn Store>,
    /// Every destination, by URL scheme (see [`crate::destinations::Destinations`]).
    destination: Arc<dyn Destination>,
    retry: RetryPolicy,
    breaker: BreakerPolicy,
    config: DispatchConfig,
    waker: Waker,
    ops: Option<Arc<Ops>>,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        destination: Arc<dyn Destination>,
        retry: RetryPolicy,
        breaker: BreakerPolicy,
        config: DispatchConfig,
        waker: Waker,
    ) -> Self {
        Self {
            store,
            destination,
            retry,
            breaker,
            config,
            waker,
            ops: None,
        }
    }

    /// Reports to these metrics and per-minute statistics (under the process's dispatcher
    /// id); without them the dispatcher only delivers.
    pub fn with_ops(mut self, ops: Arc<Ops>) -> Self {
        self.ops = Some(ops);
        self
    }

    /// Runs until `shutdown` turns true, then finishes what is in flight and returns.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(this.config.concurrency));
        // A slot is held from the claim until the attempt is written: a crash can repeat at
        // most `concurrency` sends that reached their destination but not the store.
        let (done_tx, done_rx) = mpsc::channel::<Written>(this.config.concurrency);
        let writer = tokio::spawn(write_completions(
            this.store.clone(),
            this.breaker,
            this.waker.clone(),
            this.ops.as_ref().map(|o| o.dispatcher_id.clone()),
            done_rx,
        ));
        let mut store_errors = 0u32;
        let in_flight = InFlight::new(
            this.config.tenant_limit(),
            this.config.endpoint_concurrency.max(1),
        );

        while !*shutdown.borrow() {
            // Wait for a free slot before claiming: never lease more than can be sent.
            let first = tokio::select! {
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = shutdown.changed() => continue,
            };
            let room = permits.available_permits() + 1;
            let limit = room.min(this.config.batch_size);
            let now = domain::now();
            let lease_until = domain::after(now, this.config.lease);
            let lease_id = new_id("lse");
            // Tenants at their cap are left out of the claim: their backlog is not read, let
            // alone leased and handed back.
            let share = in_flight.share();
            let capped = share.room.iter().any(|(_, n)| *n == 0);
            let claimed = match this
                .store
                .claim(
                    now,
                    lease_until,
                    &lease_id,
                    u32::try_from(limit).unwrap_or(1),
                    &share,
                )
                .instrument(tracing::info_span!("claim", limit, lease_id = %lease_id))
                .await
            {
                Ok(c) => {
                    store_errors = 0;
                    c
                }
                Err(e) => {
                    store_errors += 1;
                    warn!(error = %e, "claim failed; the store may be down");
                    drop(first);
                    let pause = Duration::from_millis(100 * u64::from(store_errors.min(50)));
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
            };
            let got = claimed.len();
            let claimed = this.admit(claimed).await;
            let mut first = Some(first);
            // Deliveries to an endpoint that is at its cap and has lately been too slow to
            // free a slot in time go straight back.
            let mut back = Vec::new();
            for c in claimed {
                let mut slot = in_flight.enter(&c.endpoint.id, &c.delivery.tenant_id);
                if !slot.may_send() {
                    back.push((c.delivery.id, c.lease_id, later()));
                    continue;
                }
                let permit = match first.take() {
                    Some(p) => p,
                    // `room` permits were free and only this loop takes them.
                    None => match permits.clone().try_acquire_owned() {
                        Ok(p) => p,
                        Err(_) => match permits.clone().acquire_owned().await {
                            Ok(p) => p,
                            Err(_) => break,
                        },
                    },
                };
                let this = this.clone();
                let done = done_tx.clone();
                tokio::spawn(async move {
                    if !slot.send_within(ENDPOINT_WAIT).await {
                        // The endpoint stayed at its cap: hand the delivery back, due a
                        // little later, without an attempt.
                        this.hand_back(vec![(c.delivery.id, c.lease_id, later())])
                            .await;
                        return;
                    }
                    let completion = this.deliver(c).await;
                    drop(slot);
                    // The writer lives until every sender is gone; a failed send means the
                    // process is stopping and the lease will hand the delivery on. The
                    // writer frees the slot once the attempt is in the store.
                    let _ = done.send((completion, permit)).await;
                });
            }
            this.hand_back(back).await;
            if got >= limit {
                continue; // more may be due right now
            }
            this.idle(&mut shutdown, &in_flight, capped).await;
        }

        // Let in-flight deliveries finish and their results reach the store.
        let _ = permits
            .acquire_many(u32::try_from(this.config.concurrency).unwrap_or(u32::MAX))
            .await;
        drop(done_tx);
        let _ = writer.await;
    }

    /// Applies each endpoint's rate limit (shared through the store) to a claimed batch. What
    /// may not go now is handed back, due at its turn, without an attempt. The cap of
    /// `endpoint_concurrency` deliveries being sent to one endpoint at once is applied per
    /// delivery when it is sent (see [`Slot::send_within`]).
    async fn admit(&self, claimed: Vec<Claimed>) -> Vec<Claimed> {
        let now = domain::now();
        let mut groups: Vec<(String, Vec<Claimed>)> = Vec::new();
        for c in claimed {
            match groups.iter_mut().find(|(id, _)| *id == c.endpoint.id) {
                Some((_, g)) => g.push(c),
                None => groups.push((c.endpoint.id.clone(), vec![c])),
            }
        }
        let mut go = Vec::new();
        let mut back: Vec<(String, String, DateTime<Utc>)> = Vec::new();
        for (endpoint_id, mut group) in groups {
            let rate = group.first().and_then(|c| c.endpoint.rate());
            if let (Some(rate), false) = (rate, group.is_empty()) {
                let want = u32::try_from(group.len()).unwrap_or(u32::MAX);
                match self
                    .store
                    .reserve_sends(&endpoint_id, rate, want, now)
                    .await
                {
                    Ok((allowed, later)) => {
                        let keep = usize::try_from(allowed).unwrap_or(0).min(group.len());
                        for (c, at) in group.split_off(keep).into_iter().zip(later) {
                            back.push((c.delivery.id, c.lease_id, at));
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, endpoint_id = %endpoint_id, "rate limit check failed");
                        for c in group.drain(..) {
                            back.push((
                                c.delivery.id,
                                c.lease_id,
                                now + chrono::Duration::seconds(1),
                            ));
                        }
                    }
                }
            }
            go.extend(group);
        }
        self.hand_back(back).await;
        go
    }

    /// Hands claimed deliveries back to the store, each due at its time, without an attempt.
    async fn hand_back(&self, back: Vec<(String, String, DateTime<Utc>)>) {
        if back.is_empty() {
            return;
        }
        if let Err(e) = self.store.release(&back).await {
            // The leases run out and the deliveries come back then.
            warn!(error = %e, count = back.len(), "handing back deferred deliveries failed");
        }
    }

    /// Sleeps until woken, until the earliest pending delivery is due, or the poll interval.
    /// With a tenant at its cap (`capped`), what is due now may be only that tenant's
    /// backlog: a slot of a capped tenant coming free wakes the loop instead of a fast poll.
    async fn idle(&self, shutdown: &mut watch::Receiver<bool>, in_flight: &InFlight, capped: bool) {
        // Woken while claiming (an event committed meanwhile): claim again at once, without
        // the round trip that asks when the next delivery is due.
        if self.waker.take_pending() {
            return;
        }
        let mut wait = self.config.poll_interval;
        let horizon = domain::after(Utc::now(), wait);
        if let Ok(Some(due)) = self.store.next_due(horizon).await {
            let until = (due - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            wait = wait.min(until);
        }
        if wait.is_zero() {
            // Due now but nothing was claimable (all leased, or of capped tenants): avoid a
            // hot loop.
            wait = Duration::from_millis(if capped { 250 } else { 20 });
        }
        tokio::select! {
            _ = self.waker.woken() => {}
            _ = in_flight.freed() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }

    /// One attempt of one claimed delivery; never fails: every outcome is a completion.
    async fn deliver(&self, claimed: Claimed) -> Done {
        let metrics = self.ops.as_ref().map(|o| &o.metrics);
        attempt(self.destination.as_ref(), &self.retry, claimed, metrics).await
    }
}

/// An attempt's result on its way to the completion writer.
pub struct Done {
    pub completion: Completion,
    /// End-to-end latency, when the attempt delivered the message.
    pub e2e_ms: Option<u64>,
}

/// What the endpoint test needs of the running process.
pub struct TestSend<'a> {
    pub store: &'a dyn Store,
    pub ops: &'a crate::ops::Ops,
    pub retry: &'a RetryPolicy,
    pub breaker: &'a BreakerPolicy,
    /// How long the test delivery is leased to the caller, so no dispatcher takes it.
    pub lease: Duration,
}

/// Sends a test event to `endpoint` now, once, outside the claim loop (the endpoint test of
/// the API and the dashboard): the event and its one delivery are written leased to the
/// caller, sent through this process's destination like any delivery (whatever the
/// endpoint's breaker or enabled state), and the attempt is recorded. Returns the event id
/// and the completion written.
pub async fn send_test(
    ctx: TestSend<'_>,
    endpoint: domain::Endpoint,
    event_type: &str,
    data: serde_json::Value,
    traceparent: Option<String>,
) -> Result<(String, Completion), crate::store::StoreError> {
    let now = domain::now();
    let event = domain::Event {
        id: domain::new_id_at(domain::prefix::EVENT, now),
        tenant_id: endpoint.tenant_id.clone(),
        event_type: event_type.into(),
        data,
        actor: None,
        idempotency_key: None,
        traceparent: Some(crate::telemetry::trace::event_traceparent(traceparent)),
        created_at: now,
        deliver_at: None,
    };
    let lease_id = new_id("lse");
    let delivery = domain::Delivery {
        id: domain::new_id_at(domain::prefix::DELIVERY, now),
        tenant_id: endpoint.tenant_id.clone(),
        event_id: event.id.clone(),
        endpoint_id: endpoint.id.clone(),
        status: DeliveryStatus::Pending,
        attempts: 0,
        // One attempt: a test is not retried.
        max_attempts: 1,
        // Leased to this caller, so no dispatcher takes it meanwhile.
        next_attempt_at: Some(domain::after(now, ctx.lease)),
        last_error: None,
        ordering_key: None,
        ordering_blocks: false,
        created_at: now,
        updated_at: now,
    };
    ctx.store
        .insert_leased(&event, &delivery, &lease_id)
        .await?;
    let event_id = event.id.clone();
    let claimed = Claimed {
        delivery,
        event,
        endpoint,
        lease_id,
        unreadable: None,
    };
    let done = attempt(
        ctx.ops.destination.as_ref(),
        ctx.retry,
        claimed,
        Some(&ctx.ops.metrics),
    )
    .await;
    let stats = batch_stats(std::slice::from_ref(&done));
    ctx.store
        .complete_with_stats(
            std::slice::from_ref(&done.completion),
            ctx.breaker,
            &ctx.ops.dispatcher_id,
            &stats,
        )
        .await?;
    Ok((event_id, done.completion))
}

/// Sends one claimed delivery once, through `destination`, and says what follows: the
/// attempt to record and the delivery's new state. Logs one line per attempt and counts it
/// in `metrics`. The dispatcher and the test endpoint both send through here.
pub async fn attempt(
    destination: &dyn Destination,
    retry: &RetryPolicy,
    claimed: Claimed,
    metrics: Option<&crate::ops::metrics::Metrics>,
) -> Done {
    let Claimed {
        delivery,
        event,
        endpoint,
        lease_id,
        unreadable,
    } = claimed;
    let attempt_number = delivery.attempts + 1;
    let kind = crate::ops::metrics::destination_kind(&endpoint.url);
    let span =
        crate::telemetry::trace::attempt_span(&event, &endpoint.id, &delivery.id, attempt_number);
    async move {
        let started_at = domain::now();
        let clock = std::time::Instant::now();
        let message = match unreadable {
            Some(reason) => Err(reason),
            None => crate::destinations::Message::new(&event, &endpoint, started_at),
        };
        let result = match message {
            Ok(mut message) => {
                message.ordering_key = delivery.ordering_key.clone();
                // With traces exported, the receiver's spans join the trace under this
                // attempt.
                if let Some(tp) =
                    crate::telemetry::trace::outgoing_traceparent(&tracing::Span::current())
                {
                    message.headers.insert("traceparent".into(), tp);
                }
                destination.send(&endpoint, &message).await
            }
            // The event cannot be read, or the endpoint's routing cannot make this message
            // (unusable as stored, or a body beyond the bounds): nothing is sent, and no
            // retry can help.
            Err(reason) => Err(SendError::Permanent {
                reason,
                status_code: None,
                response: None,
                disable_endpoint: false,
            }),
        };
        let duration_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);

        let (outcome, status, next_attempt_at, disable, error, status_code, response) = match result
        {
            Ok(ack) => (
                AttemptOutcome::Success,
                DeliveryStatus::Delivered,
                None,
                None,
                None,
                ack.status_code,
                ack.response,
            ),
            Err(err) => {
                let status_code = err.status_code();
                let response = err.response().map(str::to_owned);
                let reason = err.to_string();
                match err {
                    SendError::Retryable { retry_after, .. } => {
                        match retry.next_delay(attempt_number, delivery.max_attempts, retry_after) {
                            Some(delay) => (
                                AttemptOutcome::Retry,
                                DeliveryStatus::Pending,
                                Some(domain::after(started_at, delay)),
                                None,
                                Some(reason),
                                status_code,
                                response,
                            ),
                            None => (
                                AttemptOutcome::Failed,
                                DeliveryStatus::Failed,
                                None,
                                None,
                                Some(format!(
                                    "{reason} (gave up after {attempt_number} attempts)"
                                )),
                                status_code,
                                response,
                            ),
                        }
                    }
                    SendError::Permanent {
                        disable_endpoint, ..
                    } => (
                        AttemptOutcome::Failed,
                        DeliveryStatus::Failed,
                        None,
                        disable_endpoint.then(|| reason.clone()),
                        Some(reason),
                        status_code,
                        response,
                    ),
                }
            }
        };
        // End to end: from when the event was due (created, or its deliver_at) to now.
        let e2e_ms = (status == DeliveryStatus::Delivered).then(|| {
            let due = event
                .deliver_at
                .unwrap_or(event.created_at)
                .max(event.created_at);
            let finished = domain::after(started_at, Duration::from_millis(duration_ms));
            u64::try_from((finished - due).num_milliseconds()).unwrap_or(0)
        });
        if let Some(m) = metrics {
            m.attempt(kind, outcome, status, duration_ms, e2e_ms);
        }
        info!(
            event_id = %event.id,
            endpoint_id = %endpoint.id,
            delivery_id = %delivery.id,
            tenant = %event.tenant_id,
            destination = kind,
            attempt = attempt_number,
            outcome = outcome.as_str(),
            status = status_code,
            latency_ms = duration_ms,
            trace_id = crate::telemetry::trace::trace_id(event.traceparent.as_deref()),
            error = error.as_deref(),
            "attempt"
        );
        Done {
            e2e_ms,
            completion: Completion {
                ordered: delivery.ordering_key.is_some(),
                delivery_id: delivery.id.clone(),
                endpoint_id: endpoint.id.clone(),
                lease_id,
                status,
                next_attempt_at,
                disable_endpoint: disable,
                attempt: Attempt {
                    id: new_id(domain::prefix::ATTEMPT),
                    delivery_id: delivery.id,
                    attempt_number,
                    started_at,
                    duration_ms,
                    status_code,
                    response,
                    error,
                    outcome,
                    next_attempt_at,
                },
            },
        }
    }
    .instrument(span)
    .await
}

/// Deliveries in flight per endpoint and per tenant in this process.
#[derive(Clone)]
struct InFlight(Arc<InFlightState>);

struct InFlightState {
    counts: std::sync::Mutex<Counts>,
    /// Most deliveries in flight for one tenant.
    tenant_limit: usize,
    /// Most deliveries being sent to one endpoint at once.
    endpoint_limit: usize,
    /// Signalled when a tenant at its cap gets a slot back.
    freed: tokio::sync::Notify,
}

#[derive(Default)]
struct Counts {
    endpoints: HashMap<String, EndpointSlots>,
    tenants: HashMap<String, usize>,
}

/// The sending slots of one endpoint with deliveries in flight.
struct EndpointSlots {
    /// `endpoint_limit` permits; waiters are served in claim order, one wake-up per permit.
    slots: Arc<Semaphore>,
    /// Until when a claimed delivery finding no slot goes straight back instead of waiting:
    /// set when one waited [`ENDPOINT_WAIT`] in vain, so that a slow endpoint's backlog
    /// does not hold the process's slots while others' deliveries wait behind it.
    congested_until: Option<std::time::Instant>,
}

impl InFlightState {
    /// The counts. They are plain numbers, each changed in one step under the lock, so a
    /// panic elsewhere while the lock was held cannot have left them half-changed: a
    /// poisoned lock still holds true counts.
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One claimed delivery: counted against its tenant from the claim on, and against its
/// endpoint (a permit of the endpoint's semaphore) while it is being sent. Dropping it
/// gives both back.
struct Slot {
    in_flight: InFlight,
    endpoint_id: String,
    tenant_id: String,
    endpoint: Arc<Semaphore>,
    sending: Option<OwnedSemaphorePermit>,
    /// Whether it may wait for a sending slot (the endpoint is not congested).
    may_wait: bool,
}

impl InFlight {
    fn new(tenant_limit: usize, endpoint_limit: usize) -> Self {
        Self(Arc::new(InFlightState {
            counts: Default::default(),
            tenant_limit,
            endpoint_limit,
            freed: tokio::sync::Notify::new(),
        }))
    }

    /// What the next claim may take of each tenant: up to the cap, less what is in flight.
    fn share(&self) -> TenantShare {
        let limit = self.0.tenant_limit;
        let room = self
            .0
            .counts()
            .tenants
            .iter()
            .map(|(t, n)| {
                let left = limit.saturating_sub(*n);
                (t.clone(), u32::try_from(left).unwrap_or(u32::MAX))
            })
            .collect();
        TenantShare {
            per_tenant: u32::try_from(limit).unwrap_or(u32::MAX),
            room,
        }
    }

    /// Resolves when a slot of a tenant at its cap comes free (or one already did since the
    /// last call).
    async fn freed(&self) {
        self.0.freed.notified().await
    }

    /// Counts a claimed delivery against its tenant, and against its endpoint when the
    /// endpoint has room now (see [`Slot::send_within`] otherwise).
    fn enter(&self, endpoint_id: &str, tenant_id: &str) -> Slot {
        let mut counts = self.0.counts();
        *counts.tenants.entry(tenant_id.to_owned()).or_default() += 1;
        let endpoint = counts
            .endpoints
            .entry(endpoint_id.to_owned())
            .or_insert_with(|| EndpointSlots {
                slots: Arc::new(Semaphore::new(self.0.endpoint_limit)),
                congested_until: None,
            });
        let may_wait = endpoint
            .congested_until
            .is_none_or(|t| t <= std::time::Instant::now());
        let slots = endpoint.slots.clone();
        drop(counts);
        let sending = slots.clone().try_acquire_owned().ok();
        Slot {
            in_flight: self.clone(),
            endpoint_id: endpoint_id.to_owned(),
            tenant_id: tenant_id.to_owned(),
            endpoint: slots,
            sending,
            may_wait,
        }
    }
}

impl Slot {
    /// Whether it is being sent, or may wait for a slot at its endpoint.
    fn may_send(&self) -> bool {
        self.sending.is_some() || self.may_wait
    }

    /// Waits, at most `wait`, for a sending slot at the endpoint (in claim order); false
    /// when none came in time, and the endpoint counts as congested for a while.
    async fn send_within(&mut self, wait: Duration) -> bool {
        if self.sending.is_none() && self.may_wait {
            let acquire = self.endpoint.clone().acquire_owned();
            self.sending = tokio::time::timeout(wait, acquire)
                .await
                .ok()
                .and_then(Result::ok);
            if self.sending.is_none() {
                let mut counts = self.in_flight.0.counts();
                if let Some(e) = counts.endpoints.get_mut(&self.endpoint_id) {
                    e.congested_until = Some(std::time::Instant::now() + CONGESTED_FOR);
                }
            }
        }
        self.sending.is_some()
    }
}

/// Takes one off `key`'s count; returns the count it had.
fn leave(counts: &mut HashMap<String, usize>, key: &str) -> usize {
    let Some(n) = counts.get_mut(key) else {
        return 0;
    };
    let had = *n;
    *n = n.saturating_sub(1);
    if *n == 0 {
        counts.remove(key);
    }
    had
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.sending = None;
        let state = &self.in_flight.0;
        let mut counts = state.counts();
        // Every other slot of this endpoint holds a clone of its semaphore: when only the
        // map's and this one's are left, no other delivery to it is in flight.
        if Arc::strong_count(&self.endpoint) == 2 {
            counts.endpoints.remove(&self.endpoint_id);
        }
        if leave(&mut counts.tenants, &self.tenant_id) >= state.tenant_limit {
            state.freed.notify_one();
        }
    }
}

/// How long a claimed delivery waits for room at an endpoint that has
/// `endpoint_concurrency` deliveries being sent. An endpoint that answers quickly frees a slot
/// well within it; one that does not gets its surplus handed back (see [`later`]), so a slow
/// endpoint holds the process's slots for no longer than this.
const ENDPOINT_WAIT: Duration = Duration::from_millis(100);

/// How long an endpoint that left a delivery waiting [`ENDPOINT_WAIT`] in vain counts as
/// congested: its deliveries that find no slot meanwhile are handed back at once.
const CONGESTED_FOR: Duration = Duration::from_secs(1);

/// When a delivery handed back for want of room at its endpoint is due again.
fn later() -> DateTime<Utc> {
    domain::now() + chrono::Duration::milliseconds(200)
}

/// Most completions written in one transaction.
const WRITE_BATCH: usize = 512;

/// A finished attempt on its way to the store, with the concurrency slot it still holds.
type Written = (Done, OwnedSemaphorePermit);

/// Writes completions in batches: whatever has arrived while the previous batch was being
/// written goes into the next transaction, so the store sees few, large commits under load
/// and an immediate one when idle.
async fn write_completions(
    store: Arc<dyn Store>,
    policy: BreakerPolicy,
    waker: Waker,
    dispatcher_id: Option<String>,
    mut rx: mpsc::Receiver<Written>,
) {
    let mut received = Vec::with_capacity(WRITE_BATCH);
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let mut slots = Vec::with_capacity(WRITE_BATCH);
    while rx.recv_many(&mut received, WRITE_BATCH).await > 0 {
        let (done, held): (Vec<Done>, Vec<_>) = received.drain(..).unzip();
        slots.extend(held);
        let stats = batch_stats(&done);
        batch.extend(done.into_iter().map(|d| d.completion));
        let mut failures = 0u32;
        loop {
            let written = match &dispatcher_id {
                Some(id) => store.complete_with_stats(&batch, &policy, id, &stats).await,
                None => store.complete(&batch, &policy).await,
            };
            match written {
                Ok(()) => break,
                Err(e) => {
                    failures += 1;
                    // The leases stay valid for a while; keep trying. If they run out the
                    // deliveries are claimed again (at least once, never lost).
                    warn!(error = %e, batch = batch.len(), failures, "writing attempts failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.min(25))))
                        .await;
                    if failures >= 300 {
                        warn!(batch = batch.len(), "dropping attempt results; leases will expire and the deliveries will be retried");
                        break;
                    }
                }
            }
        }
        if batch
            .iter()
            .any(|c| c.status == DeliveryStatus::Pending || c.ordered)
        {
            // A retry may be due sooner than the claim loop's current sleep, and a finished
            // ordered delivery lets the next one of its key go.
            waker.wake();
        }
        batch.clear();
        // Written (or given up on, to expire as leases): the slots are free for new claims.
        slots.clear();
    }
}

/// The per-minute counters of a batch of attempts (by the minute each attempt finished),
/// the dispatcher's and each endpoint's.
pub fn batch_stats(done: &[Done]) -> BatchStats {
    let mut by_minute: std::collections::BTreeMap<i64, MinuteStats> = Default::default();
    let mut by_endpoint: std::collections::BTreeMap<(&str, i64), EndpointMinute> =
        Default::default();
    for d in done {
        let c = &d.completion;
        let a = &c.attempt;
        let finished = domain::after(a.started_at, Duration::from_millis(a.duration_ms));
        let minute = crate::store::ops::minute_of(finished);
        by_minute
            .entry(minute)
            .or_insert_with(|| MinuteStats {
                minute,
                ..Default::default()
            })
            .add(c.status, a.duration_ms, d.e2e_ms);
        let at = finished.timestamp_millis();
        let success = a.outcome == crate::domain::AttemptOutcome::Success;
        let mut one = EndpointMinute {
            endpoint_id: c.endpoint_id.clone(),
            stats: MinuteStats {
                minute,
                ..Default::default()
            },
            last_success_at: success.then_some(at),
            last_failure_at: (!success).then_some(at),
            last_error: if success { None } else { a.error.clone() },
        };
        one.stats.add(c.status, a.duration_ms, d.e2e_ms);
        by_endpoint
            .entry((&c.endpoint_id, minute))
            .and_modify(|e| e.merge(&one))
            .or_insert(one);
    }
    BatchStats {
        minutes: by_minute.into_values().collect(),
        endpoints: by_endpoint.into_values().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_delivery_over_the_endpoint_cap_waits_for_a_slot_in_order() {
        let in_flight = InFlight::new(10, 1);
        let first = in_flight.enter("ep_1", "t_1");
        let mut second = in_flight.enter("ep_1", "t_1");
        assert!(first.sending.is_some() && second.sending.is_none());
        assert!(second.may_send(), "a fresh endpoint is not congested");
        // Another endpoint has its own slots.
        assert!(in_flight.enter("ep_2", "t_1").sending.is_some());
        let waiting = tokio::spawn(async move { second.send_within(Duration::from_secs(5)).await });
        drop(first);
        assert!(waiting.await.unwrap(), "the freed slot went to the waiter");
    }

    #[tokio::test]
    async fn an_endpoint_that_frees_no_slot_in_time_is_congested_for_a_while() {
        let in_flight = InFlight::new(10, 1);
        let _busy = in_flight.enter("ep_1", "t_1");
        let mut waiter = in_flight.enter("ep_1", "t_1");
        assert!(!waiter.send_within(Duration::from_millis(10)).await);
        let next = in_flight.enter("ep_1", "t_1");
        assert!(
            !next.may_send(),
            "a congested endpoint's surplus goes straight back"
        );
        // Its tenant still counts every claimed delivery.
        assert_eq!(in_flight.share().room, vec![("t_1".to_owned(), 7)]);
    }

    #[tokio::test]
    async fn slots_leave_no_trace_once_every_delivery_is_done() {
        let in_flight = InFlight::new(2, 1);
        let slots: Vec<Slot> = (0..3).map(|_| in_flight.enter("ep_1", "t_1")).collect();
        assert_eq!(in_flight.share().room, vec![("t_1".to_owned(), 0)]);
        drop(slots);
        let counts = in_flight.0.counts();
        assert!(counts.endpoints.is_empty() && counts.tenants.is_empty());
    }
}
