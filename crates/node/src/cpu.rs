//! CPU time of individual threads, read from Linux's /proc (no-op elsewhere), so that a
//! benchmark can charge each node only for the CPU it used.

use std::time::Duration;

/// The calling thread's kernel thread id.
pub(crate) fn current_thread_id() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// User + system CPU time of thread `tid` of this process. /proc counts in clock ticks of
/// 1/100 s (USER_HZ on Linux).
pub(crate) fn thread_cpu_time(tid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The kernel thread ids of this process's threads whose name starts with `prefix` (names are
/// cut to 15 bytes by the kernel).
pub(crate) fn threads_named(prefix: &str) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Vec::new() };
    tasks
        .filter_map(|task| {
            let task = task.ok()?;
            let tid: u32 = task.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(task.path().join("comm")).ok()?;
            name.starts_with(prefix).then_some(tid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_threads_cpu_time_on_linux() {
        let Some(tid) = current_thread_id() else { return };
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(120) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let cpu = thread_cpu_time(tid).expect("stat readable");
        assert!(cpu >= Duration::from_millis(50), "{cpu:?}");
    }
}
