//! Configuration of the signal service. Reference: `config/signal.toml` (parsed by a test).

use cloudcam_core::bus::KafkaSettings;
use cloudcam_core::config::{RedisSettings, Validate};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalConfig {
    /// Address of the public HTTP server (API, WebSocket, web UI, `/healthz`).
    pub listen: String,
    /// Address of the internal one (`/metrics`, `/readyz`, `/healthz`): for Prometheus and
    /// the orchestrator, not for the internet.
    pub internal_listen: String,
    pub auth: AuthSettings,
    pub janus: JanusSettings,
    pub kafka: KafkaSettings,
    pub redis: RedisSettings,
    /// Where recordings and snapshots are (S3, or a local directory).
    pub media: cloudcam_core::media::MediaSettings,
    /// Largest accepted JSON body.
    pub max_body_bytes: usize,
    /// A camera nobody watches (and that does not record) stops being pulled this long after
    /// its last viewer left.
    pub demand_grace_ms: u64,
    /// A viewer session expires unless refreshed within this time (a signal instance that died
    /// stops counting its viewers after it).
    pub viewer_ttl_ms: u64,
    /// Live views one WebSocket may have open at once (each holds a Janus session and ICE
    /// ports).
    pub max_views_per_socket: usize,
    /// Live views one user may have open at once, over all their connections and every
    /// signal instance.
    pub max_views_per_user: usize,
    /// A view whose offer the browser has not answered by then is closed (its Janus session
    /// and ports freed).
    pub offer_timeout_ms: u64,
    /// Clip exports one signal instance runs at once (each downloads and remuxes up to an
    /// hour of video); more are answered 503 `busy`.
    pub max_clip_exports: usize,
    /// How long browsers may hold live video before showing it.
    pub playout: PlayoutSettings,
}

/// The playout delay a view asks the browser for (the RTP playout-delay extension, sent by
/// Janus on every video packet of the view).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlayoutSettings {
    /// Views are low-latency unless the browser's `watch` says otherwise.
    pub low_latency: bool,
    /// A low-latency view's largest delay, in ms (10 ms steps). Chrome renders at once when
    /// the minimum is 0 and this is at most 500; 0 would make it drop every frame but the
    /// newest, which breaks H.264 reference chains.
    pub max_delay_ms: u32,
}

impl Default for PlayoutSettings {
    fn default() -> Self {
        Self {
            low_latency: true,
            max_delay_ms: 100,
        }
    }
}

impl Default for SignalConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            internal_listen: "127.0.0.1:9100".into(),
            auth: AuthSettings::default(),
            janus: JanusSettings::default(),
            kafka: KafkaSettings::default(),
            redis: RedisSettings::default(),
            media: Default::default(),
            max_body_bytes: 64 * 1024,
            demand_grace_ms: 30_000,
            viewer_ttl_ms: 30_000,
            max_views_per_socket: 17,
            max_views_per_user: 34,
            offer_timeout_ms: 20_000,
            max_clip_exports: 2,
            playout: PlayoutSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// The bootstrap administrator.
    pub admin_user: String,
    pub admin_password: String,
    /// Lifetime of a session token.
    pub token_ttl_s: u64,
    /// Lifetime of a signed URL (snapshot, clip, WebSocket).
    pub signed_url_ttl_s: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            admin_user: "admin".into(),
            admin_password: String::new(),
            token_ttl_s: 12 * 3600,
            signed_url_ttl_s: 300,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JanusSettings {
    /// The Janus pool: one entry per gateway. When empty, the single gateway of `url`,
    /// `rtp_host` and `rtp_iface` below (named `janus-1`).
    pub gateways: Vec<GatewaySettings>,
    /// A gateway that fails its health checks for this long has its mountpoints re-created on
    /// the other gateways (viewers reconnect by themselves).
    pub failover_after_ms: u64,
    /// Janus HTTP API endpoint.
    pub url: String,
    /// Address ingest workers send RTP to (where Janus receives it).
    pub rtp_host: String,
    /// Interface Janus binds mountpoint ports on.
    pub rtp_iface: String,
    /// Port range for mountpoints (one port per camera).
    pub rtp_port_min: u16,
    pub rtp_port_max: u16,
    /// How often mountpoints are checked and re-created on the gateway.
    pub reconcile_interval_ms: u64,
    /// The streaming plugin's `admin_key` (the same on every gateway). With it a health pass
    /// lists the private mountpoints and creates only the missing ones; without it every
    /// pass asks Janus to create each mountpoint and reads "already exists" from the error.
    pub admin_key: String,
    /// The gateways' `api_secret` (the same on every gateway): Janus refuses API requests
    /// without it.
    pub api_secret: String,
}

/// One gateway of the Janus pool.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// Shown in the API, the UI and metrics.
    pub name: String,
    /// Janus HTTP API endpoint.
    pub url: String,
    /// Address ingest workers send RTP to.
    pub rtp_host: String,
    /// Interface (or address) Janus binds mountpoint ports on.
    pub rtp_iface: String,
}

impl JanusSettings {
    /// The gateways of the pool, in configuration order.
    pub fn pool(&self) -> Vec<GatewaySettings> {
        if self.gateways.is_empty() {
            vec![GatewaySettings {
                name: "janus-1".into(),
                url: self.url.clone(),
                rtp_host: self.rtp_host.clone(),
                rtp_iface: self.rtp_iface.clone(),
            }]
        } else {
            self.gateways.clone()
        }
    }
}

impl Default for JanusSettings {
    fn default() -> Self {
        Self {
            gateways: Vec::new(),
            failover_after_ms: 3000,
            url: "http://127.0.0.1:8088/janus".into(),
            rtp_host: "127.0.0.1".into(),
            rtp_iface: "127.0.0.1".into(),
            rtp_port_min: 30000,
            rtp_port_max: 30999,
            reconcile_interval_ms: 3000,
            admin_key: String::new(),
            api_secret: String::new(),
        }
    }
}

/// The example password of `config/signal.toml`: known to everyone, so never accepted.
const REFERENCE_PASSWORD: &str = "change-me-please";

impl Validate for SignalConfig {
    fn validate(&self) -> Result<(), String> {
        self.listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| format!("listen {:?}: {e}", self.listen))?;
        self.internal_listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| format!("internal_listen {:?}: {e}", self.internal_listen))?;
        if self.auth.admin_password == REFERENCE_PASSWORD {
            return Err(
                "auth.admin_password is the reference configuration's example: set your own \
                 (CLOUDCAM_SIGNAL_AUTH__ADMIN_PASSWORD)"
                    .into(),
            );
        }
        if self.auth.admin_user.is_empty() || self.auth.admin_password.len() < 8 {
            return Err(
                "auth.admin_user must be set and auth.admin_password must have at least 8 characters"
                    .into(),
            );
        }
        if !(10..=500).contains(&self.playout.max_delay_ms) {
            return Err(format!(
                "playout.max_delay_ms must be between 10 and 500, not {}",
                self.playout.max_delay_ms
            ));
        }
        if self.janus.rtp_port_min == 0 || self.janus.rtp_port_max <= self.janus.rtp_port_min {
            return Err("janus.rtp_port_min must be > 0 and below janus.rtp_port_max".into());
        }
        let pool = self.janus.pool();
        for g in &pool {
            url::Url::parse(&g.url).map_err(|e| format!("janus gateway {}: url: {e}", g.name))?;
            if g.name.is_empty() || pool.iter().filter(|o| o.name == g.name).count() > 1 {
                return Err(format!(
                    "janus gateway names must be set and unique: {:?}",
                    g.name
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_config_parses_and_validates_once_given_a_password() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/signal.toml");
        // As shipped, its example password is refused.
        let err = cloudcam_core::config::load::<SignalConfig>(
            "signal-reference-test",
            Some(path.as_ref()),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("reference configuration's example"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let own = cloudcam_core::config::edited_copy(
            path.as_ref(),
            REFERENCE_PASSWORD,
            "a-password-of-mine",
            dir.path(),
        )
        .unwrap();
        let cfg: SignalConfig = cloudcam_core::config::load("signal-reference-test", Some(&own))
            .expect("config/signal.toml loads");
        assert_eq!(cfg.listen, SignalConfig::default().listen);
        assert_eq!(
            cfg.janus.rtp_port_max,
            JanusSettings::default().rtp_port_max
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:1\"\nlisten_port = 5\n").unwrap();
        let err = cloudcam_core::config::load::<SignalConfig>("signal-reference-test", Some(&file))
            .unwrap_err();
        assert!(err.to_string().contains("listen_port"), "{err}");
    }

    #[test]
    fn a_playout_delay_a_browser_cannot_honour_is_invalid() {
        let mut cfg = SignalConfig::default();
        cfg.auth.admin_password = "a-password-of-mine".into();
        cfg.validate().unwrap();
        for bad in [0, 501] {
            cfg.playout.max_delay_ms = bad;
            let err = cfg.validate().unwrap_err();
            assert!(err.contains("playout.max_delay_ms"), "{err}");
        }
    }

    #[test]
    fn a_missing_admin_password_is_invalid() {
        let err = SignalConfig::default().validate().unwrap_err();
        assert!(err.contains("admin_password"), "{err}");
    }
}
