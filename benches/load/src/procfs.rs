//! What `/proc` tells about a process: CPU time, resident memory, the open-files limit.

use std::fs;
use std::io;
use std::process::Command;

/// Clock ticks per second of the `utime`/`stime` fields (`getconf CLK_TCK`, 100 on Linux).
pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t: &u64| t > 0)
        .unwrap_or(100)
}

/// `pid` as a `/proc` directory name; `None` is this process.
fn dir(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_string(),
    }
}

/// User plus system CPU time of all the process's threads, in clock ticks.
pub fn cpu_ticks(pid: Option<u32>) -> io::Result<u64> {
    cpu_ticks_split(pid).map(|(user, system)| user + system)
}

/// User and system CPU time of all the process's threads, in clock ticks.
pub fn cpu_ticks_split(pid: Option<u32>) -> io::Result<(u64, u64)> {
    let stat = fs::read_to_string(format!("{}/stat", dir(pid)))?;
    // The command name (field 2) is in parentheses and may hold spaces: count from its end.
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| io::Error::other("unexpected /proc/PID/stat format"))?;
    // After the name: state(3) ppid(4) ... utime(14) stime(15).
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> io::Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other("unexpected /proc/PID/stat format"))
    };
    Ok((field(14)?, field(15)?))
}

/// Busy CPU time of the whole machine (all CPUs, everything but idle and I/O wait), in clock
/// ticks.
pub fn machine_busy_ticks() -> io::Result<u64> {
    let stat = fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| io::Error::other("no cpu line in /proc/stat"))?;
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    if values.len() < 8 {
        return Err(io::Error::other("short cpu line in /proc/stat"));
    }
    Ok(values.iter().sum::<u64>() - values[3] - values[4])
}

/// Resident memory now (`VmRSS`) and at its peak (`VmHWM`), in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss: u64,
    pub hwm: u64,
}

pub fn memory(pid: Option<u32>) -> io::Result<Memory> {
    let status = fs::read_to_string(format!("{}/status", dir(pid)))?;
    let kib = |key: &str| -> io::Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|v| v * 1024)
            .ok_or_else(|| io::Error::other(format!("no {key} in /proc/PID/status")))
    };
    Ok(Memory {
        rss: kib("VmRSS:")?,
        hwm: kib("VmHWM:")?,
    })
}

/// The soft limit on open files of this process (`ulimit -n`), if it has one.
pub fn open_files_limit() -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        assert!(cpu_ticks(None).is_ok());
        assert!(machine_busy_ticks().is_ok());
        let memory = memory(None).unwrap();
        assert!(memory.rss > 0 && memory.hwm >= memory.rss);
        assert!(clock_ticks_per_second() > 0);
    }
}
