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
    stat_cpu_time(&format!("/proc/self/task/{tid}/stat"))
}

/// User + system CPU time from a /proc `stat` file (a process's or a thread's).
fn stat_cpu_time(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
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

/// The whole machine's CPU time since boot, by what it was spent on, from /proc/stat: so that a
/// benchmark can tell cores left idle from cores taken by the kernel or by other processes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct MachineTimes {
    /// User and system time of every process (nice included).
    pub(crate) processes: Duration,
    pub(crate) idle: Duration,
    /// Interrupts and soft interrupts (loopback TCP's receive path runs partly there).
    pub(crate) interrupts: Duration,
    /// Time the hypervisor gave to other guests while this one wanted to run.
    pub(crate) steal: Duration,
}

impl MachineTimes {
    pub(crate) fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        Self::parse(stat.lines().next()?)
    }

    fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let ticks: Vec<u64> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
        let at = |i: usize| Duration::from_millis(ticks.get(i).copied().unwrap_or(0) * 10);
        Some(Self {
            processes: at(0) + at(1) + at(2),
            idle: at(3) + at(4),
            interrupts: at(5) + at(6),
            steal: at(7),
        })
    }

    /// What was spent between `before` and `self`.
    pub(crate) fn since(&self, before: &Self) -> Self {
        Self {
            processes: self.processes.saturating_sub(before.processes),
            idle: self.idle.saturating_sub(before.idle),
            interrupts: self.interrupts.saturating_sub(before.interrupts),
            steal: self.steal.saturating_sub(before.steal),
        }
    }

    pub(crate) fn add(&mut self, other: &Self) {
        self.processes += other.processes;
        self.idle += other.idle;
        self.interrupts += other.interrupts;
        self.steal += other.steal;
    }
}

/// User + system CPU time of this whole process.
pub(crate) fn process_cpu_time() -> Option<Duration> {
    stat_cpu_time("/proc/self/stat")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_times_come_from_the_first_line_of_proc_stat() {
        let t = MachineTimes::parse("cpu  100 2 30 400 5 0 6 7 0 0").unwrap();
        assert_eq!(t.processes, Duration::from_millis(1320));
        assert_eq!(t.idle, Duration::from_millis(4050));
        assert_eq!(t.interrupts, Duration::from_millis(60));
        assert_eq!(t.steal, Duration::from_millis(70));
        assert_eq!(MachineTimes::parse("cpu0 1 2 3"), None);
        assert_eq!(MachineTimes::parse("cpu 1 x 3"), None);
    }

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
