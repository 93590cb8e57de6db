//! The gRPC half of the hostile-client suite: a tonic server behind
//! `grpc_layer` on 127.0.0.1, called by a tonic client and, where the
//! client must misbehave in ways tonic will not, by a raw hyper HTTP/2
//! client. Long and stalled server streams, half-open probes decided by
//! their trailers, calls cancelled mid-way, client streams that stall or
//! are reset, and refusals. After each: every admission unit and probe
//! permit back, the breaker where it should be, the right `grpc-status`
//! and the right `hardening_requests_total` outcome.
//!
//! Real sockets need real time: every deadline is a few hundred
//! milliseconds, so the suite runs in seconds.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use futures_util::Stream;
use http::uri::PathAndQuery;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder, Streaming};
use tonic::server::NamedService;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Status};
use tower::{Service, service_fn};
use tower_hardening::breaker::BreakerSnapshot;
use tower_hardening::config::SystemHardeningConfig;
use tower_hardening::core::CircuitState;
use tower_hardening::limit::ResourcePool;
use tower_hardening::{HardeningHandle, SystemHardening};

const SERVICE: &str = "grpc";

// ---------------------------------------------------------------------
// The service: raw bytes in and out (no protoc), its behaviour chosen by
// the request message ("ok", "unavailable", "hang"; for streams
// "messages=N gap=MS size=BYTES end=ok|unavailable|hang").
// ---------------------------------------------------------------------

/// A codec of raw bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

type Messages = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    Ok,
    Unavailable,
    Hang,
}

#[derive(Debug, Clone, Copy)]
struct StreamPlan {
    messages: u64,
    gap: Duration,
    size: usize,
    end: End,
}

impl StreamPlan {
    fn parse(text: &str) -> Self {
        let mut plan = StreamPlan {
            messages: 1,
            gap: Duration::ZERO,
            size: 8,
            end: End::Ok,
        };
        for pair in text.split_whitespace() {
            let (key, value) = pair.split_once('=').expect("key=value");
            match key {
                "messages" if value == "inf" => plan.messages = u64::MAX,
                "messages" => plan.messages = value.parse().unwrap(),
                "gap" => plan.gap = Duration::from_millis(value.parse().unwrap()),
                "size" => plan.size = value.parse().unwrap(),
                "end" => {
                    plan.end = match value {
                        "ok" => End::Ok,
                        "unavailable" => End::Unavailable,
                        _ => End::Hang,
                    }
                }
                _ => panic!("unknown key {key}"),
            }
        }
        plan
    }

    fn into_stream(self) -> Messages {
        let payload = Bytes::from(vec![b'x'; self.size]);
        Box::pin(futures_util::stream::unfold(0u64, move |sent| {
            let payload = payload.clone();
            async move {
                if sent < self.messages {
                    if sent > 0 && !self.gap.is_zero() {
                        tokio::time::sleep(self.gap).await;
                    }
                    return Some((Ok(payload), sent + 1));
                }
                match self.end {
                    End::Ok => None,
                    End::Unavailable if sent == self.messages => Some((
                        Err(Status::unavailable("the dependency went away")),
                        sent + 1,
                    )),
                    End::Unavailable => None,
                    End::Hang => {
                        std::future::pending::<()>().await;
                        None
                    }
                }
            }
        }))
    }
}

async fn unary(request: tonic::Request<Bytes>) -> Result<tonic::Response<Bytes>, Status> {
    match &request.into_inner()[..] {
        b"unavailable" => Err(Status::unavailable("the dependency went away")),
        b"hang" => std::future::pending().await,
        _ => Ok(tonic::Response::new(Bytes::from_static(b"ok"))),
    }
}

async fn server_stream(
    request: tonic::Request<Bytes>,
) -> Result<tonic::Response<Messages>, Status> {
    let plan = StreamPlan::parse(std::str::from_utf8(request.get_ref()).unwrap());
    Ok(tonic::Response::new(plan.into_stream()))
}

async fn upload(
    request: tonic::Request<Streaming<Bytes>>,
) -> Result<tonic::Response<Bytes>, Status> {
    let mut messages = request.into_inner();
    let mut count = 0u64;
    // A broken or stalled request stream ends the call with tonic's status.
    while messages.message().await?.is_some() {
        count += 1;
    }
    Ok(tonic::Response::new(Bytes::from(count.to_string())))
}

/// The service under test, routed by hand (what tonic-build generates).
#[derive(Debug, Clone, Copy)]
struct Hostile;

impl NamedService for Hostile {
    const NAME: &'static str = "hostile.Hostile";
}

impl Service<http::Request<tonic::body::Body>> for Hostile {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(Raw);
            Ok(match request.uri().path() {
                "/hostile.Hostile/Unary" => grpc.unary(service_fn(unary), request).await,
                "/hostile.Hostile/Stream" => {
                    grpc.server_streaming(service_fn(server_stream), request)
                        .await
                }
                "/hostile.Hostile/Upload" => {
                    grpc.client_streaming(service_fn(upload), request).await
                }
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

// ---------------------------------------------------------------------
// The app and its clients.
// ---------------------------------------------------------------------

/// Retries on or off, a per-call timeout set or not.
#[derive(Debug, Clone, Copy)]
struct Variant {
    retries: bool,
    timeout: bool,
}

const VARIANTS: [Variant; 4] = [
    Variant {
        retries: false,
        timeout: false,
    },
    Variant {
        retries: true,
        timeout: false,
    },
    Variant {
        retries: false,
        timeout: true,
    },
    Variant {
        retries: true,
        timeout: true,
    },
];

const RETRY_SECTION: &str = r#"
[retry]
max_attempts = 3
initial_backoff = "1ms"
max_backoff = "1ms"
"#;

struct App {
    address: SocketAddr,
    handle: HardeningHandle,
    pool: ResourcePool,
    channel: Channel,
    variant: Variant,
}

/// A tonic server with [`Hostile`] behind `grpc_layer(SERVICE)`: the
/// `[services.grpc]` table is `top` (keys) then `sections` (tables written
/// as `[limit]`, `[breaker]`), with `timeout = "100ms"` and a `[retry]`
/// section added as `variant` says. With retries on, the application
/// declares every call idempotent (a tonic request has no length, so
/// only a raw client's bodies are kept for replay).
async fn start(variant: Variant, top: &str, sections: &str) -> App {
    let mut sections = sections.to_owned();
    if variant.retries {
        sections.push_str(RETRY_SECTION);
    }
    let timeout = if variant.timeout {
        "timeout = \"100ms\"\n"
    } else {
        ""
    };
    let sections = sections.replace("\n[", &format!("\n[services.{SERVICE}."));
    let toml = format!("[services.{SERVICE}]\n{timeout}{top}\n{sections}");
    let config = SystemHardeningConfig::from_toml_str(&toml).unwrap();
    let hardening = SystemHardening::builder(config).build().unwrap();
    let layer = hardening
        .grpc_layer(SERVICE)
        .unwrap()
        .idempotent(move |_, _, _| variant.retries)
        .map_body(tonic::body::Body::new);
    let pool = layer.pool().clone();
    let handle = hardening.start();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let incoming = futures_util::stream::unfold(listener, |listener| async move {
        Some((listener.accept().await.map(|(s, _)| s), listener))
    });
    tokio::spawn(
        Server::builder()
            .layer(layer)
            .add_service(Hostile)
            .serve_with_incoming(incoming),
    );
    let channel = connect(address, None).await;
    App {
        address,
        handle,
        pool,
        channel,
        variant,
    }
}

/// A tonic channel (one HTTP/2 connection); `window` bounds what the
/// client buffers unread.
async fn connect(address: SocketAddr, window: Option<u32>) -> Channel {
    Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .initial_stream_window_size(window)
        .initial_connection_window_size(window)
        .connect()
        .await
        .unwrap()
}

fn path(method: &'static str) -> PathAndQuery {
    PathAndQuery::from_static(method)
}

async fn grpc_unary(channel: &Channel, command: &'static str) -> Result<Bytes, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(e.to_string()))?;
    grpc.unary(
        tonic::Request::new(Bytes::from_static(command.as_bytes())),
        path("/hostile.Hostile/Unary"),
        Raw,
    )
    .await
    .map(tonic::Response::into_inner)
}

async fn grpc_stream(channel: &Channel, plan: &'static str) -> Result<Streaming<Bytes>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(e.to_string()))?;
    grpc.server_streaming(
        tonic::Request::new(Bytes::from_static(plan.as_bytes())),
        path("/hostile.Hostile/Stream"),
        Raw,
    )
    .await
    .map(tonic::Response::into_inner)
}

/// Reads `stream` to its end: the messages, then the final status.
async fn drain(stream: &mut Streaming<Bytes>) -> (u64, Result<(), Status>) {
    let mut count = 0;
    loop {
        match stream.message().await {
            Ok(Some(_)) => count += 1,
            Ok(None) => return (count, Ok(())),
            Err(status) => return (count, Err(status)),
        }
    }
}

impl App {
    fn in_use(&self) -> u64 {
        self.pool.stats().in_use
    }

    fn breaker(&self) -> BreakerSnapshot {
        self.handle.breaker(SERVICE).unwrap().snapshot()
    }

    fn outcome(&self, outcome: &str) -> f64 {
        self.handle
            .metrics()
            .query("hardening_requests_total")
            .label("service", SERVICE)
            .label("outcome", outcome)
            .sum()
    }

    async fn unary(&self, command: &'static str) -> Result<Bytes, Status> {
        bounded(grpc_unary(&self.channel, command)).await
    }

    async fn stream(&self, plan: &'static str) -> Result<Streaming<Bytes>, Status> {
        bounded(grpc_stream(&self.channel, plan)).await
    }

    /// Waits (a bounded while) until `condition` holds.
    async fn eventually(&self, what: &str, condition: impl Fn(&App) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !condition(self) {
            assert!(
                Instant::now() < deadline,
                "{:?}: not within 2s: {what}; {} units in use, {:?}",
                self.variant,
                self.in_use(),
                self.breaker()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every admission unit and probe permit back.
    async fn assert_all_back(&self) {
        self.eventually("every unit and permit back", |app| {
            app.in_use() == 0 && app.breaker().probes_in_flight == 0
        })
        .await;
    }

    /// Trips the breaker with two UNAVAILABLE answers, then waits out
    /// `wait_in_open`: the next call is the half-open probe.
    async fn trip(&self) {
        for _ in 0..2 {
            let status = self.unary("unavailable").await.unwrap_err();
            assert_eq!(status.code(), Code::Unavailable);
        }
        assert_eq!(self.breaker().state, CircuitState::Open);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// A call that must be answered within 5 s.
async fn bounded<T>(call: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("answered within 5s")
}

// ---------------------------------------------------------------------
// The raw HTTP/2 client, for what tonic's client will not do: stall or
// reset a request stream, and read a refusal's headers as sent.
// ---------------------------------------------------------------------

type RawFrames = Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send>>;
type RawBody = StreamBody<RawFrames>;

/// One gRPC length-prefixed message.
fn grpc_message(payload: &[u8]) -> Bytes {
    let mut framed = Vec::with_capacity(5 + payload.len());
    framed.push(0);
    framed.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(payload);
    Bytes::from(framed)
}

/// A raw HTTP/2 connection to the app.
async fn raw_h2(app: &App) -> hyper::client::conn::http2::SendRequest<RawBody> {
    let tcp = tokio::net::TcpStream::connect(app.address).await.unwrap();
    let (send, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    send
}

/// A gRPC request to `method` whose body the test feeds frame by frame
/// through the returned sender (an `Err` resets the stream). `length`
/// declares a `content-length`.
fn raw_request(
    app: &App,
    method: &str,
    length: Option<usize>,
) -> (
    http::Request<RawBody>,
    mpsc::UnboundedSender<Result<Frame<Bytes>, std::io::Error>>,
) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let frames: RawFrames = Box::pin(futures_util::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|frame| (frame, receiver)) },
    ));
    let mut request = http::Request::post(format!("http://{}{method}", app.address))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(length) = length {
        request = request.header("content-length", length);
    }
    (request.body(StreamBody::new(frames)).unwrap(), sender)
}

/// What a gRPC response said: its HTTP status, and its head with its
/// trailers (if any) merged in.
async fn grpc_answer(response: http::Response<Incoming>) -> (http::StatusCode, http::HeaderMap) {
    let (parts, body) = response.into_parts();
    let mut headers = parts.headers;
    let collected = bounded(body.collect()).await.unwrap();
    if let Some(trailers) = collected.trailers() {
        headers.extend(trailers.clone());
    }
    (parts.status, headers)
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

// ---------------------------------------------------------------------
// Item 18: a server stream holds its units until it ends.
// ---------------------------------------------------------------------

const TWO_STREAMS: &str = r#"
[limit]
max_concurrency = 2
max_queue = 4
queue_timeout = "150ms"
[breaker]
wait_in_open = "30s"
"#;

// With `max_concurrency = 2`, two open server streams make a third call
// wait and time out in the queue; when one stream is dropped by its
// client, and when the other ends, their units come back. A stream that
// outlives the per-call `timeout` is not cut by it (its head was on time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stream_holds_its_units_until_it_ends_or_is_dropped() {
    for variant in VARIANTS {
        let app = start(variant, "stream_timeout = \"10s\"", TWO_STREAMS).await;
        let mut first = app
            .stream("messages=4 gap=100 end=ok")
            .await
            .expect("served");
        let mut second = app
            .stream("messages=100 gap=50 end=ok")
            .await
            .expect("served");
        assert!(first.message().await.unwrap().is_some());
        assert!(second.message().await.unwrap().is_some());
        assert_eq!(
            app.in_use(),
            2,
            "{variant:?}: two open streams hold two units"
        );

        let started = Instant::now();
        let refused = app.unary("ok").await.unwrap_err();
        assert_eq!(
            refused.code(),
            Code::DeadlineExceeded,
            "{variant:?}: {refused:?}"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(140),
            "{variant:?}: it waited for a unit"
        );
        assert!(
            refused.message().contains("waiting for `grpc`"),
            "{refused:?}"
        );
        assert_eq!(app.outcome("rejected"), 1.0, "{variant:?}");

        // The client walks away from the long stream: RST_STREAM.
        drop(second);
        app.eventually("the dropped stream's unit back", |app| app.in_use() == 1)
            .await;
        assert_eq!(app.unary("ok").await.unwrap(), "ok", "{variant:?}");

        // The other runs 300 ms, past `timeout`, and ends OK.
        let (messages, end) = drain(&mut first).await;
        assert_eq!(
            (messages, end.map_err(|s| s.code())),
            (3, Ok(())),
            "{variant:?}"
        );
        app.assert_all_back().await;
        assert_eq!(
            app.outcome("success"),
            2.0,
            "{variant:?}: the stream and the unary"
        );
        assert_eq!(app.outcome("failure"), 0.0, "{variant:?}");
        let breaker = app.breaker();
        assert_eq!(breaker.state, CircuitState::Closed);
        assert_eq!(
            breaker.failures, 0,
            "{variant:?}: a dropped stream is no failure"
        );
    }
}

// A client that stops reading a server stream (flow control stalls it)
// holds its units no longer than `stream_timeout`; the stream itself may
// go on, uncounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_stream_gives_its_units_back_after_stream_timeout() {
    for variant in VARIANTS {
        let app = start(variant, "stream_timeout = \"300ms\"", TWO_STREAMS).await;
        // A client of its own with a small window: it stalls early.
        let reader = connect(app.address, Some(65_535)).await;
        let mut stalled = bounded(grpc_stream(&reader, "messages=inf size=16384 end=ok"))
            .await
            .expect("served");
        assert!(stalled.message().await.unwrap().is_some());
        assert_eq!(app.in_use(), 1, "{variant:?}");
        // ... and reads no more.
        let started = Instant::now();
        app.eventually("the stalled stream's unit back", |app| app.in_use() == 0)
            .await;
        let held = started.elapsed();
        assert!(
            held < Duration::from_millis(800),
            "{variant:?}: held {held:?}"
        );
        // Two other calls get both units.
        let a = app.stream("messages=3 gap=50 end=ok").await.unwrap();
        let b = app.stream("messages=3 gap=50 end=ok").await.unwrap();
        for mut stream in [a, b] {
            assert!(drain(&mut stream).await.1.is_ok(), "{variant:?}");
        }
        drop(stalled);
        app.assert_all_back().await;
        assert_eq!(app.outcome("failure"), 0.0, "{variant:?}");
        assert_eq!(app.breaker().failures, 0, "{variant:?}");
        assert_eq!(app.breaker().state, CircuitState::Closed);
    }
}

// ---------------------------------------------------------------------
// Item 5 over the wire: a half-open probe is decided by its trailers,
// within `probe_timeout`.
// ---------------------------------------------------------------------

const HALF_OPEN: &str = r#"
[breaker]
sliding_window = { count = 2 }
minimum_calls = 2
wait_in_open = "100ms"
max_wait_in_open = "100ms"
half_open_permits = 1
probe_timeout = "200ms"
"#;

// A probe whose stream ends with `grpc-status: 14` in its trailers (the
// head said nothing) reopens the breaker; one ending OK closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_is_decided_by_its_trailers() {
    for variant in VARIANTS {
        let app = start(variant, "", HALF_OPEN).await;
        app.trip().await;
        let mut probe = app
            .stream("messages=2 gap=20 end=unavailable")
            .await
            .expect("the head is OK");
        assert_eq!(app.breaker().state, CircuitState::HalfOpen, "{variant:?}");
        assert_eq!(app.breaker().probes_in_flight, 1, "{variant:?}");
        let (messages, end) = drain(&mut probe).await;
        assert_eq!(messages, 2);
        assert_eq!(end.unwrap_err().code(), Code::Unavailable, "{variant:?}");
        app.eventually("the probe's trailers reopen the breaker", |app| {
            app.breaker().state == CircuitState::Open
        })
        .await;
        app.assert_all_back().await;
        assert_eq!(
            app.outcome("failure"),
            3.0,
            "{variant:?}: two trips and the probe"
        );

        // Next probe: the stream ends OK.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let mut probe = app.stream("messages=2 gap=20 end=ok").await.unwrap();
        assert_eq!(app.breaker().state, CircuitState::HalfOpen);
        assert!(drain(&mut probe).await.1.is_ok());
        app.eventually("the probe's trailers close the breaker", |app| {
            app.breaker().state == CircuitState::Closed
        })
        .await;
        app.assert_all_back().await;
        assert_eq!(app.outcome("success"), 1.0, "{variant:?}");
        assert_eq!(app.unary("ok").await.unwrap(), "ok");
    }
}

// A probe that stalls past `probe_timeout` is a failed probe and frees
// its permit: after its head (a stream that goes quiet), and before it
// (a call that never answers, which the client sees as
// DEADLINE_EXCEEDED).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_probe_fails_at_probe_timeout_and_frees_its_permit() {
    for variant in VARIANTS {
        let app = start(variant, "", HALF_OPEN).await;
        app.trip().await;
        let started = Instant::now();
        let mut quiet = app.stream("messages=1 end=hang").await.unwrap();
        assert!(quiet.message().await.unwrap().is_some());
        assert_eq!(app.breaker().probes_in_flight, 1, "{variant:?}");
        app.eventually("the quiet probe fails", |app| {
            app.breaker().state == CircuitState::Open && app.breaker().probes_in_flight == 0
        })
        .await;
        let late = started.elapsed();
        assert!(
            late >= Duration::from_millis(190) && late < Duration::from_millis(600),
            "{variant:?}: decided after {late:?}"
        );
        drop(quiet);
        app.assert_all_back().await;

        // A unary probe that never answers. With `timeout = 100ms` the
        // call's own timeout fails it first; either way it is a failed
        // probe, answered DEADLINE_EXCEEDED.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let status = app.unary("hang").await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::DeadlineExceeded,
            "{variant:?}: {status:?}"
        );
        assert_eq!(app.breaker().state, CircuitState::Open, "{variant:?}");
        app.assert_all_back().await;

        // And the service, recovered, is let back in by the next probe.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(app.unary("ok").await.unwrap(), "ok");
        assert_eq!(app.breaker().state, CircuitState::Closed, "{variant:?}");
        app.assert_all_back().await;
    }
}

// ---------------------------------------------------------------------
// A client that cancels mid-call.
// ---------------------------------------------------------------------

const ONE_AT_A_TIME: &str = r#"
[limit]
max_concurrency = 1
max_queue = 4
queue_timeout = "150ms"
[breaker]
sliding_window = { count = 2 }
minimum_calls = 2
wait_in_open = "100ms"
max_wait_in_open = "100ms"
half_open_permits = 1
probe_timeout = "10s"
"#;

// A unary call the client gives up on (its future dropped: RST_STREAM)
// gives its unit back and records nothing against the service, closed
// or half-open (the probe permit comes back, the breaker stays
// half-open and lets the next call probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_client_cancels_gives_everything_back_and_records_nothing() {
    for variant in VARIANTS {
        let app = start(variant, "", ONE_AT_A_TIME).await;
        let gave_up =
            tokio::time::timeout(Duration::from_millis(50), grpc_unary(&app.channel, "hang")).await;
        assert!(gave_up.is_err(), "{variant:?}: still waiting when dropped");
        app.assert_all_back().await;
        assert_eq!(app.unary("ok").await.unwrap(), "ok", "{variant:?}");
        let breaker = app.breaker();
        assert_eq!((breaker.calls, breaker.failures), (1, 0), "{variant:?}");
        assert_eq!(app.outcome("failure"), 0.0, "{variant:?}");
        assert_eq!(app.outcome("success"), 1.0, "{variant:?}");

        // Half-open: the cancelled probe's permit comes back. (The first
        // UNAVAILABLE opens the breaker: one failure in two calls.)
        let status = app.unary("unavailable").await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(app.breaker().state, CircuitState::Open);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let gave_up =
            tokio::time::timeout(Duration::from_millis(50), grpc_unary(&app.channel, "hang")).await;
        assert!(gave_up.is_err());
        app.assert_all_back().await;
        assert_eq!(
            app.breaker().state,
            CircuitState::HalfOpen,
            "{variant:?}: a cancelled probe is no evidence"
        );
        assert_eq!(app.unary("ok").await.unwrap(), "ok");
        assert_eq!(app.breaker().state, CircuitState::Closed, "{variant:?}");
        assert_eq!(app.outcome("failure"), 1.0, "{variant:?}: the trip only");
        app.assert_all_back().await;
    }
}

// ---------------------------------------------------------------------
// A client stream that stalls or is reset.
// ---------------------------------------------------------------------

const UPLOADS: &str = r#"
body_timeout = "300ms"
upload_timeout = "300ms"
"#;

// A client-streaming call whose request stream stalls mid-message is
// answered DEADLINE_EXCEEDED naming the client's body, at
// `upload_timeout` (streamed) or `body_timeout` (a body of known length
// kept for retries); `ignored`, nothing charged to the breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_stream_is_deadline_exceeded_and_ignored() {
    for variant in VARIANTS {
        for length in [None, Some(20)] {
            let app = start(variant, UPLOADS, ONE_AT_A_TIME).await;
            let mut send = raw_h2(&app).await;
            let (request, frames) = raw_request(&app, "/hostile.Hostile/Upload", length);
            // One whole message, then half of the next: and nothing more.
            frames
                .send(Ok(Frame::data(grpc_message(b"first"))))
                .unwrap();
            frames
                .send(Ok(Frame::data(grpc_message(b"second").slice(..6))))
                .unwrap();
            let started = Instant::now();
            let response = bounded(send.send_request(request)).await.unwrap();
            let (status, headers) = grpc_answer(response).await;
            let took = started.elapsed();
            let context = format!("{variant:?} length {length:?}: {headers:?}");
            assert_eq!(status, http::StatusCode::OK, "{context}");
            assert_eq!(header(&headers, "grpc-status"), Some("4"), "{context}");
            let message = header(&headers, "grpc-message").unwrap_or_default();
            assert!(
                !message.contains("service did not answer"),
                "{context}: the client's stall, not the service's"
            );
            assert!(
                took >= Duration::from_millis(250) && took < Duration::from_millis(1_500),
                "{context}: answered after {took:?}"
            );
            drop(frames);
            app.assert_all_back().await;
            assert_eq!(app.outcome("ignored"), 1.0, "{context}");
            assert_eq!(app.outcome("failure"), 0.0, "{context}");
            let breaker = app.breaker();
            assert_eq!((breaker.calls, breaker.failures), (0, 0), "{context}");
            assert_eq!(app.unary("ok").await.unwrap(), "ok", "{context}");
        }
    }
}

// A client-streaming call the client resets mid-message (RST_STREAM):
// no answer can reach it, but its unit comes back, nothing is charged to
// the breaker, and it is not counted a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_client_stream_gives_everything_back_and_is_no_failure() {
    for variant in VARIANTS {
        let app = start(variant, UPLOADS, ONE_AT_A_TIME).await;
        let mut send = raw_h2(&app).await;
        let (request, frames) = raw_request(&app, "/hostile.Hostile/Upload", None);
        frames
            .send(Ok(Frame::data(grpc_message(b"first"))))
            .unwrap();
        frames
            .send(Ok(Frame::data(grpc_message(b"second").slice(..6))))
            .unwrap();
        let response = tokio::spawn(send.send_request(request));
        app.eventually("the call admitted", |app| app.in_use() == 1)
            .await;
        frames
            .send(Err(std::io::Error::other("the client gives up")))
            .unwrap();
        let answered = bounded(response).await.unwrap();
        assert!(answered.is_err(), "{variant:?}: the stream was reset");
        app.assert_all_back().await;
        // The handler saw the body break first: the client's, `ignored`.
        app.eventually("counted ignored", |app| app.outcome("ignored") == 1.0)
            .await;
        assert_eq!(app.outcome("failure"), 0.0, "{variant:?}");
        assert_eq!(app.outcome("success"), 0.0, "{variant:?}");
        let breaker = app.breaker();
        assert_eq!((breaker.calls, breaker.failures), (0, 0), "{variant:?}");
        assert_eq!(app.unary("ok").await.unwrap(), "ok", "{variant:?}");
    }
}

// ---------------------------------------------------------------------
// Refusals: HTTP 200 trailers-only answers with the documented status,
// naming the rejection, with a retry hint where the HTTP stack sends
// `Retry-After`; counted `rejected`, not retried, not charged.
// ---------------------------------------------------------------------

async fn raw_unary(app: &App, command: &[u8]) -> (http::StatusCode, http::HeaderMap) {
    let mut send = raw_h2(app).await;
    let (request, frames) = raw_request(app, "/hostile.Hostile/Unary", None);
    frames.send(Ok(Frame::data(grpc_message(command)))).unwrap();
    drop(frames);
    let response = bounded(send.send_request(request)).await.unwrap();
    grpc_answer(response).await
}

/// The hint a refusal carries, in milliseconds.
fn pushback_ms(headers: &http::HeaderMap) -> u64 {
    header(headers, "grpc-retry-pushback-ms")
        .unwrap_or_else(|| panic!("no grpc-retry-pushback-ms: {headers:?}"))
        .parse()
        .unwrap()
}

// The breaker open (and half-open with its probe out): UNAVAILABLE, the
// state named, a non-zero `grpc-retry-pushback-ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_refusal_names_its_state_and_says_when_to_come_back() {
    for variant in VARIANTS {
        let app = start(
            variant,
            "",
            r#"
[breaker]
sliding_window = { count = 2 }
minimum_calls = 2
wait_in_open = "1500ms"
max_wait_in_open = "1500ms"
half_open_permits = 1
probe_timeout = "10s"
"#,
        )
        .await;
        for _ in 0..2 {
            app.unary("unavailable").await.unwrap_err();
        }
        let (status, headers) = raw_unary(&app, b"ok").await;
        assert_eq!(status, http::StatusCode::OK, "{variant:?}: trailers-only");
        assert_eq!(header(&headers, "content-type"), Some("application/grpc"));
        assert_eq!(header(&headers, "grpc-status"), Some("14"), "{headers:?}");
        let message = header(&headers, "grpc-message").unwrap();
        assert!(
            message.contains("circuit breaker `grpc` is open"),
            "{message}"
        );
        let pushback = pushback_ms(&headers);
        assert!(
            (1..=1_500).contains(&pushback),
            "{variant:?}: {pushback} ms, at most the open wait"
        );
        assert_eq!(app.outcome("rejected"), 1.0, "{variant:?}");
        assert_eq!(
            app.outcome("failure"),
            2.0,
            "{variant:?}: the two trips only"
        );

        // Half-open, the one probe out: refused as half-open, with a hint.
        app.handle.breaker(SERVICE).unwrap().half_open();
        let channel = app.channel.clone();
        let probe = tokio::spawn(async move { grpc_unary(&channel, "hang").await });
        app.eventually("the probe out", |app| app.breaker().probes_in_flight == 1)
            .await;
        let (_, headers) = raw_unary(&app, b"ok").await;
        assert_eq!(header(&headers, "grpc-status"), Some("14"), "{headers:?}");
        let message = header(&headers, "grpc-message").unwrap();
        assert!(message.contains("half-open"), "{variant:?}: {message}");
        assert!(pushback_ms(&headers) >= 1, "{variant:?}");
        probe.abort();
        app.assert_all_back().await;
        assert_eq!(app.outcome("rejected"), 2.0, "{variant:?}");
    }
}

// Admission refusals: shed (the queue full) is RESOURCE_EXHAUSTED with a
// hint; a queue timeout is DEADLINE_EXCEEDED naming the queue. Both
// `rejected`, neither charged to the breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_refusals_name_the_rejection_and_carry_their_hint() {
    for variant in VARIANTS {
        let app = start(
            variant,
            "stream_timeout = \"10s\"",
            r#"
[limit]
max_concurrency = 1
max_queue = 0
queue_timeout = "150ms"
"#,
        )
        .await;
        let mut holder = app.stream("messages=1 end=hang").await.expect("served");
        assert!(holder.message().await.unwrap().is_some());
        assert_eq!(app.in_use(), 1);
        let (status, headers) = raw_unary(&app, b"ok").await;
        assert_eq!(status, http::StatusCode::OK, "{variant:?}");
        assert_eq!(header(&headers, "grpc-status"), Some("8"), "{headers:?}");
        let message = header(&headers, "grpc-message").unwrap();
        assert!(message.contains("grpc"), "{variant:?}: {message}");
        assert!(pushback_ms(&headers) >= 1, "{variant:?}");
        assert_eq!(app.outcome("rejected"), 1.0, "{variant:?}");
        drop(holder);
        app.assert_all_back().await;
        let breaker = app.breaker();
        assert_eq!((breaker.calls, breaker.failures), (0, 0), "{variant:?}");
    }

    // With a queue: a call that waits past `queue_timeout`.
    for variant in VARIANTS {
        let app = start(
            variant,
            "stream_timeout = \"10s\"",
            r#"
[limit]
max_concurrency = 1
max_queue = 4
queue_timeout = "150ms"
"#,
        )
        .await;
        let mut holder = app.stream("messages=1 end=hang").await.unwrap();
        assert!(holder.message().await.unwrap().is_some());
        let (status, headers) = raw_unary(&app, b"ok").await;
        assert_eq!(status, http::StatusCode::OK, "{variant:?}");
        assert_eq!(header(&headers, "grpc-status"), Some("4"), "{headers:?}");
        let message = header(&headers, "grpc-message").unwrap();
        assert!(
            message.contains("waiting for `grpc`"),
            "{variant:?}: {message}"
        );
        assert_eq!(app.outcome("rejected"), 1.0, "{variant:?}");
        drop(holder);
        app.assert_all_back().await;
        assert_eq!(app.breaker().failures, 0, "{variant:?}");
    }
}
