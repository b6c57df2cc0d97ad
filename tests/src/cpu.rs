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

/// One `gst-launch-1.0` process running every pipeline of `chains`.
fn gst_launch(
    dir: &std::path::Path,
    name: &str,
    chains: impl Iterator<Item = String>,
) -> anyhow::Result<crate::procs::Proc> {
    let args: Vec<String> = chains
        .flat_map(|c| c.split_whitespace().map(String::from).collect::<Vec<_>>())
        .collect();
    crate::procs::Proc::spawn(
        name,
        dir,
        Command::new("gst-launch-1.0").arg("-q").args(&args),
    )
}

/// CPU (percent of one core) and RSS of one `gst-launch-1.0` process running `chain(i)` for
/// `i < n`, over `window` once `flowing` says media passes through every chain.
pub async fn measure_gst_launch(
    dir: &std::path::Path,
    n: usize,
    window: Duration,
    chain: impl Fn(usize) -> String,
    flowing: impl AsyncFn() -> bool,
) -> anyhow::Result<(f64, f64)> {
    let mut baseline = start_gst_launch(dir, "gst-launch", n, chain, flowing).await?;
    let cpu = cpu_percent(baseline.pid(), window).await?;
    let rss = rss_mib(baseline.pid());
    baseline.kill();
    Ok((cpu, rss))
}

/// One `gst-launch-1.0` process running `chain(i)` for `i < n`, returned once `flowing` says
/// media passes through every chain.
pub async fn start_gst_launch(
    dir: &std::path::Path,
    name: &str,
    n: usize,
    chain: impl Fn(usize) -> String,
    flowing: impl AsyncFn() -> bool,
) -> anyhow::Result<crate::procs::Proc> {
    // A baseline that is not doing its work looks cheap. Now and then one gst-launch process
    // of many live chains never gets going (seen with 8 splitmuxsink chains: nothing written
    // in 60 s); it is started again.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut p = gst_launch(dir, name, (0..n).map(&chain))?;
        let flows =
            crate::procs::wait_for("gst-launch to run", Duration::from_secs(30), || async {
                (ticks(p.pid()) > 50 && flowing().await).then_some(())
            })
            .await;
        match flows {
            Ok(()) => return Ok(p),
            Err(e) if attempt == 3 => return Err(e),
            Err(_) => {
                eprintln!("gst-launch baseline: media not flowing after 30 s; starting it again");
                p.kill();
            }
        }
    }
}

/// go2rtc's release the relay benchmark compares with.
const GO2RTC: &str = "github.com/AlexxIT/go2rtc@v1.9.14";

/// A go2rtc binary, built once from its Go module into `target/go2rtc/` (about a minute).
pub fn go2rtc_binary() -> anyhow::Result<std::path::PathBuf> {
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/go2rtc");
    let bin = out.join("go2rtc");
    if bin.exists() {
        return Ok(bin);
    }
    // `go install …@version` fails on the module proxy's version list; download, then build.
    let download = Command::new("go")
        .args(["mod", "download", "-json", GO2RTC])
        .output()?;
    anyhow::ensure!(
        download.status.success(),
        "go mod download {GO2RTC}: {}",
        String::from_utf8_lossy(&download.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&download.stdout)?;
    let dir = info["Dir"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no Dir in go mod download's answer"))?;
    std::fs::create_dir_all(&out)?;
    // With cgo on, a stray C file in the module breaks the build.
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(dir)
        .env("CGO_ENABLED", "0")
        .status()?;
    anyhow::ensure!(built.success(), "building go2rtc failed");
    Ok(bin)
}

/// The other baseline: go2rtc relaying `urls` (each pulled only while consumed), each read by
/// one RTSP client (`gst-launch-1.0 rtspsrc ! fakesink`, not measured). Returns go2rtc's CPU
/// (% of one core) over `window` (once `flowing` says media flows) and its resident memory;
/// both processes are then killed.
pub async fn measure_go2rtc(
    dir: &std::path::Path,
    urls: &[String],
    window: Duration,
    flowing: impl AsyncFn() -> bool,
) -> anyhow::Result<(f64, f64)> {
    let bin = go2rtc_binary()?;
    let (api, rtsp) = (crate::free_port(), crate::free_port());
    let streams: String = urls
        .iter()
        .enumerate()
        .map(|(i, u)| format!("  r{i}: {u}\n"))
        .collect();
    let config = dir.join("go2rtc.yaml");
    std::fs::write(
        &config,
        format!(
            "api:\n  listen: \"127.0.0.1:{api}\"\nrtsp:\n  listen: \"127.0.0.1:{rtsp}\"\n\
             webrtc:\n  listen: \"\"\nstreams:\n{streams}"
        ),
    )?;
    let mut go2rtc = crate::procs::Proc::spawn(
        "go2rtc",
        dir,
        Command::new(&bin).arg("-config").arg(&config),
    )?;
    crate::procs::wait_for("go2rtc to listen", Duration::from_secs(30), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", rtsp))
            .await
            .ok()
            .map(|_| ())
    })
    .await?;
    let mut readers = gst_launch(
        dir,
        "go2rtc-readers",
        (0..urls.len()).map(|i| {
            format!("rtspsrc location=rtsp://127.0.0.1:{rtsp}/r{i} protocols=tcp ! fakesink")
        }),
    )?;
    // Every stream connected and flowing: go2rtc has done a few seconds of relaying.
    crate::procs::wait_for("go2rtc to relay", Duration::from_secs(60), || async {
        (ticks(go2rtc.pid()) > 50 && ticks(readers.pid()) > 50 && flowing().await).then_some(())
    })
    .await?;
    let cpu = cpu_percent(go2rtc.pid(), window).await?;
    let rss = rss_mib(go2rtc.pid());
    readers.kill();
    go2rtc.kill();
    Ok((cpu, rss))
}

/// A CPU benchmark's command line: `[N [SECONDS]]`, the number of cameras (default `cameras`)
/// and the length of each measuring window (default 20 s).
pub fn bench_args(cameras: usize) -> anyhow::Result<(usize, u64)> {
    let mut args = std::env::args().skip(1);
    let n = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(cameras);
    let secs = args.next().map(|a| a.parse()).transpose()?.unwrap_or(20);
    Ok((n, secs))
}
