//! CPU time of live processes, read from `/proc` (Linux): user + system time of a process, of
//! the children it has reaped, and of its live descendants (a launcher script's JVM counts as
//! the launcher's). Used where `getrusage(RUSAGE_CHILDREN)` cannot separate the processes:
//! several processors, the driver and the checker run at the same time, and the broker is never
//! reaped.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Clock ticks per second of the `/proc` times.
fn ticks_per_s() -> f64 {
    use nix::unistd::{sysconf, SysconfVar};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// `(ppid, utime + stime + cutime + cstime)` of one process, in ticks.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: fields resume after
    // the last ')'. Then: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17).
    let rest = s.get(s.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    let ppid = num(1)? as u32;
    let ticks = num(11)? + num(12)? + num(13)? + num(14)?;
    Some((ppid, ticks))
}

/// Every live process: pid → (ppid, ticks).
fn snapshot() -> HashMap<u32, (u32, u64)> {
    let mut all = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return all;
    };
    for e in dir.flatten() {
        if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
            if let Some(s) = stat(pid) {
                all.insert(pid, s);
            }
        }
    }
    all
}

/// CPU seconds of `root` and its live descendants in `all`; `None` if `root` is gone.
fn tree_s(all: &HashMap<u32, (u32, u64)>, root: u32, per_s: f64) -> Option<f64> {
    let (_, own) = all.get(&root)?;
    let mut total = *own;
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (pid, (ppid, t)) in all {
            if *ppid == p && *pid != root {
                total += t;
                frontier.push(*pid);
            }
        }
    }
    Some(total as f64 / per_s)
}

/// CPU seconds of one process tree now (`None` if the process is gone).
pub fn cpu_s(pid: u32) -> Option<f64> {
    tree_s(&snapshot(), pid, ticks_per_s())
}

/// Samples named processes every 500 ms, so that the CPU time of a process is known even after
/// it was killed (its last sample). A name can be several processes one after the other (an
/// instance killed and restarted): their times add up.
#[derive(Clone)]
pub struct CpuTracker {
    inner: Arc<Mutex<Tracked>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

#[derive(Default)]
struct Tracked {
    /// name → pid → (CPU seconds when counting started, last sample).
    procs: BTreeMap<String, BTreeMap<u32, (f64, f64)>>,
}

impl Drop for CpuTracker {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

impl CpuTracker {
    pub fn start() -> CpuTracker {
        let inner: Arc<Mutex<Tracked>> = Arc::default();
        let weak = Arc::downgrade(&inner);
        let task = tokio::spawn(async move {
            let per_s = ticks_per_s();
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Some(inner) = weak.upgrade() else { return };
                let all = tokio::task::spawn_blocking(snapshot)
                    .await
                    .unwrap_or_default();
                let mut t = inner.lock().unwrap();
                for pids in t.procs.values_mut() {
                    for (pid, (_, last)) in pids.iter_mut() {
                        if let Some(s) = tree_s(&all, *pid, per_s) {
                            *last = s;
                        }
                    }
                }
            }
        });
        CpuTracker {
            inner,
            task: Arc::new(task),
        }
    }

    /// Tracks `pid` under `name`. `from_zero`: a process we just started (its whole CPU time
    /// counts); otherwise only what it spends from now on.
    pub fn track(&self, name: &str, pid: u32, from_zero: bool) {
        let now = cpu_s(pid).unwrap_or(0.0);
        let mut t = self.inner.lock().unwrap();
        t.procs
            .entry(name.to_string())
            .or_default()
            .insert(pid, (if from_zero { 0.0 } else { now }, now));
    }

    /// Starts counting every tracked live process from now (keeps finished ones out).
    pub fn reset(&self) {
        let all = snapshot();
        let per_s = ticks_per_s();
        let mut t = self.inner.lock().unwrap();
        for pids in t.procs.values_mut() {
            pids.retain(|pid, _| all.contains_key(pid));
            for (pid, (first, last)) in pids.iter_mut() {
                let now = tree_s(&all, *pid, per_s).unwrap_or(*last);
                *first = now;
                *last = now;
            }
        }
    }

    /// Takes a sample of every tracked process now (call before stopping them).
    pub fn sample(&self) {
        let all = snapshot();
        let per_s = ticks_per_s();
        let mut t = self.inner.lock().unwrap();
        for pids in t.procs.values_mut() {
            for (pid, (_, last)) in pids.iter_mut() {
                if let Some(s) = tree_s(&all, *pid, per_s) {
                    *last = s;
                }
            }
        }
    }

    /// CPU seconds of `name` since it was tracked (or since the last reset).
    pub fn seconds(&self, name: &str) -> f64 {
        let t = self.inner.lock().unwrap();
        t.procs
            .get(name)
            .map_or(0.0, |p| p.values().map(|(a, b)| (b - a).max(0.0)).sum())
    }

    /// CPU seconds of every name starting with `prefix`.
    pub fn seconds_of_prefix(&self, prefix: &str) -> f64 {
        let names: Vec<String> = {
            let t = self.inner.lock().unwrap();
            t.procs
                .keys()
                .filter(|k| k.starts_with(prefix))
                .cloned()
                .collect()
        };
        names.iter().map(|n| self.seconds(n)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_is_read_and_grows() {
        let me = std::process::id();
        let a = cpu_s(me).expect("our own /proc entry");
        // Burn a little CPU.
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let b = cpu_s(me).unwrap();
        assert!(b > a, "{a} -> {b}");
        assert!(cpu_s(u32::MAX).is_none());
    }

    #[test]
    fn a_child_counts_in_its_parents_tree() {
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 5",
            ])
            .spawn()
            .expect("sh");
        std::thread::sleep(Duration::from_millis(1500));
        let all = snapshot();
        let per_s = ticks_per_s();
        let child_s = tree_s(&all, child.id(), per_s).unwrap();
        let me = tree_s(&all, std::process::id(), per_s).unwrap();
        let alone = all.get(&std::process::id()).unwrap().1 as f64 / per_s;
        let _ = child.kill();
        let _ = child.wait();
        assert!(child_s > 0.0, "the shell loop burned CPU");
        assert!(me >= alone + child_s - 0.02, "{me} vs {alone} + {child_s}");
    }
}
