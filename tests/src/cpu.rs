//! CPU and memory of a process, from /proc, for the benchmarks.

use std::process::Command;
use std::time::{Duration, Instant};

fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

/// Clock ticks of CPU `pid` has used so far.
pub fn ticks(pid: u32) -> u64 {
    cpu_ticks(pid).unwrap_or(0)
}

/// Resident memory of `pid`, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

/// CPU used by `pid` over `window`, in percent of one core.
pub async fn cpu_percent(pid: u32, window: Duration) -> anyhow::Result<f64> {
    let hz: f64 = String::from_utf8(Command::new("getconf").arg("CLK_TCK").output()?.stdout)?
        .trim()
        .parse()?;
    let t0 = cpu_ticks(pid)?;
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let t1 = cpu_ticks(pid)?;
    Ok((t1 - t0) as f64 / hz / start.elapsed().as_secs_f64() * 100.0)
}

/// A baseline measured beside cloudcam: `gst-launch-1.0` running one pipeline `chain(i)` per
/// stream `0..n` in a single process. Returns its CPU (% of one core) over `window` and its
/// resident memory, once every chain has connected and settled; the process is then killed.
pub async fn measure_gst_launch(
    dir: &std::path::Path,
    n: usize,
    window: Duration,
    chain: impl Fn(usize) -> String,
) -> anyhow::Result<(f64, f64)> {
    let args: Vec<String> = (0..n)
        .flat_map(|i| {
            chain(i)
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    let mut baseline = crate::procs::Proc::spawn(
        "gst-launch",
        dir,
        Command::new("gst-launch-1.0").arg("-q").args(&args),
    )?;
    crate::procs::wait_for("gst-launch to run", Duration::from_secs(30), || async {
        (ticks(baseline.pid()) > 50).then_some(())
    })
    .await?;
    let cpu = cpu_percent(baseline.pid(), window).await?;
    let rss = rss_mib(baseline.pid());
    baseline.kill();
    Ok((cpu, rss))
}
