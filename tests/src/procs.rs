//! Processes, ports and waiting.

use anyhow::{Context, Result, bail};
use std::future::Future;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process, killed (SIGKILL) and reaped when dropped. Output goes to `<dir>/<name>.log`.
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    pub fn spawn(name: &str, dir: &Path, cmd: &mut Command) -> Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_string(),
            log,
            child: Some(child),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Sends `sig` (`-STOP`, `-CONT`, `-TERM`, …) with kill(1).
    pub fn signal(&self, sig: &str) -> Result<()> {
        // Never pid 0: kill(1) would signal the whole process group.
        let Some(pid) = self.child.as_ref().map(Child::id) else {
            bail!("kill {sig}: the process has already been reaped");
        };
        let ok = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()?
            .success();
        if !ok {
            bail!("kill {sig} {pid} failed");
        }
        Ok(())
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL.
    pub fn terminate(&mut self, grace: Duration) {
        if self.child.is_some() {
            let _ = self.signal("-TERM");
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                    self.child = None;
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.kill();
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// An encoder pushing 640x360 H.264 at 25 fps (a keyframe a second), and 48 kHz mono AAC when
/// `audio`, to `url` (RTSP RECORD over TCP, GStreamer's `rtspclientsink`) as `user`; over
/// RTSPS for an `rtsps://` url, without validating the server's certificate.
pub fn rtsp_pusher(
    dir: &Path,
    name: &str,
    url: &str,
    (user, password): (&str, &str),
    audio: bool,
) -> Result<Proc> {
    let mut args: Vec<String> = Vec::new();
    if audio {
        args.extend(
            "audiotestsrc is-live=true ! audio/x-raw,rate=48000,channels=1 ! audioconvert \
             ! avenc_aac ! aacparse ! push."
                .split_whitespace()
                .map(String::from),
        );
    }
    args.extend(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=25/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 ! h264parse \
         ! rtspclientsink name=push protocols=tcp"
            .split_whitespace()
            .map(String::from),
    );
    args.extend([
        format!("location={url}"),
        format!("user-id={user}"),
        format!("user-pw={password}"),
    ]);
    if url.starts_with("rtsps://") {
        // As an encoder given a URL and nothing to validate its certificate with would.
        args.push("tls-validation-flags=no-flags".into());
    }
    Proc::spawn(name, dir, Command::new("gst-launch-1.0").args(&args))
}

impl Proc {
    /// Waits until the process has exited by itself (a refused client ends, say).
    pub async fn wait_exit(&mut self, what: &str, timeout: Duration) -> Result<()> {
        wait_for(what, timeout, || {
            let alive = self.alive();
            async move { (!alive).then_some(()) }
        })
        .await
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP port nobody listens on right now (and whose UDP twin is free too).
pub fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = l.local_addr().expect("local addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A run of `n` consecutive free UDP ports, for mountpoints.
pub fn free_udp_range(n: u16) -> u16 {
    for _ in 0..200 {
        let base = 20000 + (rand_u16() % 9000);
        if (base..base + n).all(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
    panic!("no free UDP port range");
}

fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    (nanos ^ std::process::id().wrapping_mul(2654435761)) as u16
}

/// Polls `check` every 100 ms until it yields `Some`, or fails after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until something accepts TCP connections on `port`.
pub async fn wait_tcp(what: &str, port: u16, timeout: Duration) -> Result<()> {
    wait_for(what, timeout, || async move {
        TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
    })
    .await
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
