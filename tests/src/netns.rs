//! A site behind NAT, made of a Linux network namespace: a veth pair links it to this
//! machine (the cloud side gets `.1`, the site `.2` of a /30), and the site's firewall drops
//! every connection opened from outside (conntrack state NEW), as a NAT router would: the
//! site reaches the cloud only through connections it opens. Needs root (`ip`, `iptables`).
//! Removed, with its links, when dropped.

use anyhow::{Context, Result, bail};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

pub struct NatSite {
    pub name: String,
    /// The cloud side's interface (down: the site's uplink is cut).
    pub cloud_if: String,
    /// This machine's address as the site sees it.
    pub cloud_ip: String,
    /// The site's address as this machine sees it.
    pub site_ip: String,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl NatSite {
    /// A fresh site (its names and subnet from this process's id, so parallel test binaries
    /// do not collide).
    pub fn create() -> Result<Self> {
        let n = std::process::id() % 60000;
        let name = format!("ccsite{n}");
        let (a, b) = ((n / 64) % 250, (n % 64) * 4);
        let cloud_if = format!("ccc{n}");
        let site_if = format!("ccs{n}");
        let site = Self {
            name: name.clone(),
            cloud_if: cloud_if.clone(),
            cloud_ip: format!("10.{}.{a}.{}", 200 + (n / 16000), b + 1),
            site_ip: format!("10.{}.{a}.{}", 200 + (n / 16000), b + 2),
        };
        // Leftovers of an earlier run with the same id.
        let _ = ip(&["netns", "del", &name]);
        let _ = ip(&["link", "del", &cloud_if]);
        ip(&["netns", "add", &name])?;
        ip(&[
            "link", "add", &cloud_if, "type", "veth", "peer", "name", &site_if,
        ])?;
        ip(&["link", "set", &site_if, "netns", &name])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", site.cloud_ip),
            "dev",
            &cloud_if,
        ])?;
        ip(&["link", "set", &cloud_if, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &name];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["ip", "link", "set", "lo", "up"])?;
        inside(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", site.site_ip),
            "dev",
            &site_if,
        ])?;
        inside(&["ip", "link", "set", &site_if, "up"])?;
        inside(&[
            "iptables",
            "-A",
            "INPUT",
            "-i",
            &site_if,
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-j",
            "DROP",
        ])?;
        Ok(site)
    }

    /// `program` run inside the site.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Whether a TCP connection from inside the site to `127.0.0.1:port` opens.
    pub fn listening(&self, port: u16) -> bool {
        self.command("bash")
            .args(["-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{port}")])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Whether this machine can open a TCP connection to the site's `port`.
    pub fn reachable_from_cloud(&self, port: u16) -> bool {
        let addr: SocketAddr = format!("{}:{port}", self.site_ip)
            .parse()
            .expect("an address");
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
    }

    /// Cuts the site's uplink (its link goes down; connections stall, nothing is closed).
    pub fn cut(&self) -> Result<()> {
        ip(&["link", "set", &self.cloud_if, "down"])
    }

    /// Brings the uplink back.
    pub fn restore(&self) -> Result<()> {
        ip(&["link", "set", &self.cloud_if, "up"])
    }
}

impl Drop for NatSite {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.cloud_if]);
    }
}
