//! Certificates for RTSPS pushes in tests: a certificate authority of the test's own, and an
//! ingest worker's push certificate signed by it, made with the `openssl` command.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// PEM files: the certificate authority (what pushers trust), and the push certificate and its
/// key (what the ingest workers serve).
pub struct PushCertificate {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl PushCertificate {
    /// The `CLOUDCAM_INGEST_PUSH__*` settings of a worker taking pushes over RTSPS on
    /// `listen` with this certificate.
    pub fn ingest_env(&self, listen: &str) -> Vec<(&'static str, String)> {
        vec![
            ("CLOUDCAM_INGEST_PUSH__LISTEN", listen.to_string()),
            (
                "CLOUDCAM_INGEST_PUSH__CERT",
                self.cert.display().to_string(),
            ),
            ("CLOUDCAM_INGEST_PUSH__KEY", self.key.display().to_string()),
        ]
    }
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .context("run openssl")?;
    if !out.status.success() {
        bail!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A certificate authority and a push certificate for the IP addresses `ips`, in `dir`.
pub fn push_certificate(dir: &Path, ips: &[&str]) -> Result<PushCertificate> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut args = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=cloudcam test CA",
    ];
    args.extend(ec);
    args.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &args)?;
    let mut args = vec!["req", "-subj", "/CN=cloudcam ingest"];
    args.extend(ec);
    args.extend(["-keyout", "push.key", "-out", "push.csr"]);
    openssl(dir, &args)?;
    let names: Vec<String> = ips.iter().map(|ip| format!("IP:{ip}")).collect();
    std::fs::write(
        dir.join("push.ext"),
        format!("subjectAltName={}\n", names.join(",")),
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            "push.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            "push.ext",
            "-out",
            "push.pem",
        ],
    )?;
    Ok(PushCertificate {
        ca: dir.join("ca.pem"),
        cert: dir.join("push.pem"),
        key: dir.join("push.key"),
    })
}
