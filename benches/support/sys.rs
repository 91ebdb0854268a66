//! What Linux says about this process: CPU time of one thread, resident memory.

use std::time::Duration;

/// A thread whose CPU time can be read from any thread.
#[derive(Debug, Clone)]
pub struct ThreadCpu {
    path: String,
}

impl ThreadCpu {
    /// The calling thread.
    pub fn current() -> Self {
        // `/proc/thread-self` links to `<pid>/task/<tid>`.
        let link = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
        ThreadCpu {
            path: format!("/proc/{}/schedstat", link.display()),
        }
    }

    /// Time the thread has run on a CPU (user and system), in nanoseconds: the scheduler's own
    /// accounting, not tick-sampled.
    pub fn ns(&self) -> u64 {
        let text = std::fs::read_to_string(&self.path).expect("schedstat");
        text.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .expect("schedstat: time on cpu")
    }
}

/// Runs `f` on a new thread with its own current-thread tokio runtime, its allocations counted
/// under `role`. Returns the thread's CPU clock once the runtime is up.
pub fn spawn_runtime_thread<F, Fut>(name: &str, role: super::alloc::Role, f: F) -> ThreadCpu
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            super::alloc::set_role(role);
            let rt = runtime();
            tx.send(ThreadCpu::current()).unwrap();
            rt.block_on(f());
        })
        .expect("spawn a bench thread");
    rx.recv().expect("the thread started")
}

/// A current-thread runtime with timers and IO.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A field of `/proc/self/status` in bytes (`VmRSS`, `VmHWM`).
pub fn status_bytes(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// The machine, for the tables.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} × {cpu}, Linux {}", kernel.trim())
}

pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
