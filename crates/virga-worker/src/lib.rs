//! The instance side of virga: a client loop for the AWS Lambda Runtime API.
//!
//! [`run`] is what a custom-runtime `bootstrap` does: read `AWS_LAMBDA_RUNTIME_API`,
//! initialise the handler once, then loop on `invocation/next`, posting each
//! result to `invocation/{id}/response` or `invocation/{id}/error`. It works
//! against virga's platform and against AWS Lambda alike. Blocking, no async
//! runtime: each polling thread serves one invocation at a time.
//!
//! When `AWS_LAMBDA_MAX_CONCURRENCY=n` is set (a virga service, or a Lambda
//! Managed Instance), [`run`] builds n handlers and polls `invocation/next`
//! from n threads, so the instance serves up to n invocations at once.

mod conn;
pub mod model;
pub mod template;

use std::time::Duration;

/// The per-invocation facts the Runtime API hands over in headers.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub request_id: String,
    /// Unix milliseconds by which the invocation must finish.
    pub deadline_ms: u64,
    pub invoked_function_arn: String,
    pub trace_id: String,
    /// With batching: how many events the `{"batch": [...]}` payload holds
    /// (the `Virga-Batch-Size` header).
    pub batch_size: Option<usize>,
}

/// An error the handler reports for one invocation; the instance stays up.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionError {
    /// Lambda's `errorType`, e.g. `InvalidInput`.
    pub error_type: String,
    pub message: String,
}

impl FunctionError {
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        FunctionError {
            error_type: error_type.into(),
            message: message.into(),
        }
    }

    fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "errorType": self.error_type,
            "errorMessage": self.message,
            "stackTrace": [],
        }))
        .unwrap_or_default()
    }
}

/// A function body hosted by the worker.
pub trait Handler {
    /// Handles one event; the returned bytes are the response payload.
    fn handle(&mut self, event: &[u8], ctx: &Context) -> Result<Vec<u8>, FunctionError>;
}

/// Why the worker loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// AWS_LAMBDA_RUNTIME_API is not set: this program runs inside a Lambda-compatible platform
    #[error("AWS_LAMBDA_RUNTIME_API is not set: run this program as a function of a Lambda-compatible platform")]
    NoRuntimeApi,
    /// the Runtime API at {base} failed: {source}
    #[error("the Runtime API at {base} failed: {source}")]
    Api {
        base: String,
        /// The HTTP client's error, a read's, or what the answer lacked.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// the handler failed to initialise
    #[error("initialisation failed: {0}")]
    Init(String),
}

/// A handler that returns its event unchanged: the no-op runtime used to
/// measure the platform itself.
#[derive(Debug, Default)]
pub struct Echo;

impl Handler for Echo {
    fn handle(&mut self, event: &[u8], _ctx: &Context) -> Result<Vec<u8>, FunctionError> {
        Ok(event.to_vec())
    }
}

/// A Runtime API client bound to one endpoint (`host:port`): its
/// `init/error`; invocations go over a pipelining `conn::Connection`.
pub struct RuntimeClient {
    /// `host:port`.
    api: String,
    agent: ureq::Agent,
}

impl RuntimeClient {
    /// Reads the endpoint from `AWS_LAMBDA_RUNTIME_API`.
    pub fn from_env() -> Result<Self, WorkerError> {
        let api = std::env::var("AWS_LAMBDA_RUNTIME_API").map_err(|_| WorkerError::NoRuntimeApi)?;
        Ok(Self::new(&api))
    }

    pub fn new(api: &str) -> Self {
        RuntimeClient {
            api: api.to_string(),
            agent: Self::agent(),
        }
    }

    fn agent() -> ureq::Agent {
        // `next` is a long poll: no read timeout; connects are local and quick.
        ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .build()
    }

    fn err(&self, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> WorkerError {
        WorkerError::Api {
            base: format!("http://{}/2018-06-01/runtime", self.api),
            source: e.into(),
        }
    }

    pub fn init_error(&self, error: &FunctionError) -> Result<(), WorkerError> {
        self.agent
            .post(&format!(
                "http://{}/2018-06-01/runtime/init/error",
                self.api
            ))
            .set("Lambda-Runtime-Function-Error-Type", &error.error_type)
            .set("Content-Type", "application/json")
            .send_bytes(&error.to_json())
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

/// How many invocations this instance may serve at once: the
/// `AWS_LAMBDA_MAX_CONCURRENCY` it was given, else 1.
pub fn max_concurrency() -> usize {
    std::env::var("AWS_LAMBDA_MAX_CONCURRENCY")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(1)
}

/// Runs the Runtime API loop: `init` builds a handler (its error is reported
/// through `init/error`), then every event goes to a handler. With
/// `AWS_LAMBDA_MAX_CONCURRENCY=n`, `init` runs n times in parallel and n
/// threads poll at once, each with its own handler (handlers need not be
/// shareable, only sendable). Returns only when the Runtime API fails.
pub fn run<H, F>(init: F) -> Result<(), WorkerError>
where
    H: Handler + Send,
    F: Fn() -> Result<H, FunctionError> + Sync,
{
    run_shared(init, |_| None)
}

/// As [`run`], but with `AWS_LAMBDA_MAX_CONCURRENCY=n` `init` runs once and
/// `share` makes the other n - 1 handlers from the first (e.g. on the same
/// loaded model); where it answers `None`, those are built by `init`, in
/// parallel.
pub fn run_shared<H, F, S>(init: F, share: S) -> Result<(), WorkerError>
where
    H: Handler + Send,
    F: Fn() -> Result<H, FunctionError> + Sync,
    S: Fn(&H) -> Option<H>,
{
    let n = max_concurrency();
    let client = RuntimeClient::from_env()?;
    let first = init();
    let shared: Vec<H> = match &first {
        Ok(h) if n > 1 => (1..n).map_while(|_| share(h)).collect(),
        _ => Vec::new(),
    };
    let mut built: Vec<Result<H, FunctionError>> = vec![first];
    built.extend(shared.into_iter().map(Ok));
    let missing = n - built.len();
    if missing > 0 && built[0].is_ok() {
        built.extend(std::thread::scope(|s| {
            let threads: Vec<_> = (0..missing).map(|_| s.spawn(&init)).collect();
            threads
                .into_iter()
                .map(|t| {
                    t.join().unwrap_or_else(|_| {
                        Err(FunctionError::new(
                            "Runtime.InitError",
                            "initialisation panicked",
                        ))
                    })
                })
                .collect::<Vec<_>>()
        }));
    }
    let mut handlers = Vec::with_capacity(n);
    for h in built {
        match h {
            Ok(h) => handlers.push(h),
            Err(e) => {
                let _ = client.init_error(&e);
                return Err(WorkerError::Init(format!(
                    "{}: {}",
                    e.error_type, e.message
                )));
            }
        }
    }
    if n == 1 {
        let handler = handlers.pop().expect("one handler");
        return serve(&client, handler);
    }
    let api = client.api.clone();
    std::thread::scope(|s| {
        let threads: Vec<_> = handlers
            .into_iter()
            .map(|h| {
                let client = RuntimeClient::new(&api);
                s.spawn(move || serve(&client, h))
            })
            .collect();
        // The first thread to stop (the Runtime API failed) ends the loop.
        let mut result = Ok(());
        for t in threads {
            if let Ok(Err(e)) = t.join() {
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        result
    })
}

/// Serves invocations with a handler built before (a forked instance's,
/// loaded by its template), one at a time.
///
/// A forked instance shares its template's pages; what it owns is its
/// heap, where glibc keeps every freed activation buffer. So once it has
/// been idle for `VIRGA_HEAP_TRIM_IDLE_MS` (default 10000; `off` never) it
/// gives the free heap back to the kernel: a warm child idle that long
/// holds little more than the template, and invocations closer together
/// pay nothing. The first invocation after a trim faults its buffers in
/// again (tens of ms for an image model at a fraction of a vCPU).
pub fn serve_built<H: Handler>(handler: H) -> Result<(), WorkerError> {
    let client = RuntimeClient::from_env()?;
    let trimmer = heap::trim_after().map(heap::Trimmer::start);
    serve_with(&client, handler, trimmer.as_ref())
}

/// One polling loop: next, handle, reply, forever.
fn serve<H: Handler>(client: &RuntimeClient, handler: H) -> Result<(), WorkerError> {
    serve_with(client, handler, None)
}

/// As [`serve`], telling `trimmer` when the instance is busy and idle.
/// Each answer is posted together with the next poll, on one connection
/// (`conn`): one exchange per invocation.
fn serve_with<H: Handler>(
    client: &RuntimeClient,
    mut handler: H,
    trimmer: Option<&heap::Trimmer>,
) -> Result<(), WorkerError> {
    let mut conn = conn::Connection::new(&client.api);
    let mut next = conn.next().map_err(|e| client.err(e))?;
    loop {
        let (event, ctx) = next;
        if let Some(t) = trimmer {
            t.busy();
        }
        let result = handler.handle(&event, &ctx);
        if let Some(t) = trimmer {
            t.idle();
        }
        let answer = match &result {
            Ok(body) => conn::Answer::Response(body),
            Err(e) => conn::Answer::Error(e),
        };
        next = conn
            .answer_and_next(&ctx.request_id, answer)
            .map_err(|e| client.err(e))?;
    }
}

/// Giving an idle instance's free heap back.
mod heap {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::{Duration, Instant};

    const IDLE_VAR: &str = "VIRGA_HEAP_TRIM_IDLE_MS";
    const DEFAULT_IDLE: Duration = Duration::from_secs(10);

    /// How long an instance stays idle before it trims, from the
    /// environment; `None` when trimming is off.
    pub fn trim_after() -> Option<Duration> {
        parse(std::env::var(IDLE_VAR).ok().as_deref())
    }

    fn parse(v: Option<&str>) -> Option<Duration> {
        match v.map(str::trim) {
            None | Some("") => Some(DEFAULT_IDLE),
            Some("off") => None,
            Some(ms) => Some(
                ms.parse()
                    .map(Duration::from_millis)
                    .unwrap_or(DEFAULT_IDLE),
            ),
        }
    }

    /// `Some(since)` while idle and not yet trimmed.
    type State = Mutex<Option<Instant>>;

    /// A thread that trims once per idle spell of at least `after`.
    pub struct Trimmer {
        state: Arc<(State, Condvar)>,
        /// Trims so far: what the tests watch.
        #[cfg_attr(not(test), allow(dead_code))]
        trims: Arc<AtomicUsize>,
    }

    impl Trimmer {
        pub fn start(after: Duration) -> Trimmer {
            let state: Arc<(State, Condvar)> = Arc::new((Mutex::new(None), Condvar::new()));
            let trims = Arc::new(AtomicUsize::new(0));
            let (s, n) = (state.clone(), trims.clone());
            std::thread::Builder::new()
                .name("heap-trim".into())
                .spawn(move || watch(&s, after, &n))
                .ok();
            Trimmer { state, trims }
        }

        pub fn busy(&self) {
            *lock(&self.state.0) = None;
        }

        pub fn idle(&self) {
            *lock(&self.state.0) = Some(Instant::now());
            self.state.1.notify_one();
        }
    }

    fn lock(m: &State) -> std::sync::MutexGuard<'_, Option<Instant>> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn watch(state: &(State, Condvar), after: Duration, trims: &AtomicUsize) {
        let (m, cv) = state;
        let mut idle = lock(m);
        loop {
            match *idle {
                None => idle = cv.wait(idle).unwrap_or_else(|e| e.into_inner()),
                Some(since) if since.elapsed() >= after => {
                    // Trimmed for this spell; the lock is not held while
                    // trimming, so the next invocation never waits on it.
                    *idle = None;
                    drop(idle);
                    trim();
                    trims.fetch_add(1, Ordering::SeqCst);
                    idle = lock(m);
                }
                Some(since) => {
                    idle = cv
                        .wait_timeout(idle, after - since.elapsed())
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }

    #[allow(unsafe_code)]
    fn trim() {
        // SAFETY: mi_collect and malloc_trim only return free heap pages to
        // the kernel, under their allocator's locks. Both: Rust allocates
        // from mimalloc in the `virga` binary, the engines' C++ (onnxruntime)
        // from glibc.
        unsafe {
            libmimalloc_sys::mi_collect(true);
            libc::malloc_trim(0);
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_idle_time_comes_from_the_environment() {
            assert_eq!(parse(None), Some(DEFAULT_IDLE));
            assert_eq!(parse(Some("250")), Some(Duration::from_millis(250)));
            assert_eq!(parse(Some("0")), Some(Duration::ZERO));
            assert_eq!(parse(Some("off")), None);
            assert_eq!(parse(Some("soon")), Some(DEFAULT_IDLE));
        }

        #[test]
        fn an_idle_spell_trims_once_and_a_busy_one_never() {
            let t = Trimmer::start(Duration::from_millis(20));
            let trims = || t.trims.load(Ordering::SeqCst);
            t.idle();
            std::thread::sleep(Duration::from_millis(150));
            assert_eq!(trims(), 1, "one trim per idle spell");
            // Busy again before the idle time is up: no trim.
            t.idle();
            t.busy();
            std::thread::sleep(Duration::from_millis(150));
            assert_eq!(trims(), 1);
            t.idle();
            std::thread::sleep(Duration::from_millis(150));
            assert_eq!(trims(), 2);
        }
    }
}
