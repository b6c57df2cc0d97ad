//! The Janus pool: several gateways, each health-checked; mountpoints (id, RTP port, secret,
//! pin) placed on the healthy gateway with the fewest, and re-created — on the same gateway after
//! a restart, or on another when one stays down. Only this module and [`crate::viewer`] talk to
//! Janus.
//!
//! Exactness: with the streaming plugin's `admin_key` configured, `list` shows private
//! mountpoints too, so a pass creates only what is missing. Janus answers 456 both for "id
//! already exists" and for "could not create" (an RTP port that cannot be bound, say): the
//! error text tells them apart, and only the first counts as present. A mountpoint that cannot
//! be created is reported for its camera; it does not mark the gateway down.

use crate::config::{GatewaySettings, JanusSettings};
use crate::janus::{Janus, JanusError};
use crate::model::Mountpoint;
use serde::Serialize;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Janus's streaming plugin answers this when it cannot create a mountpoint (for any reason).
const CANT_CREATE: i64 = 456;
/// … and this when it does not exist.
const NO_SUCH_MOUNTPOINT: i64 = 455;

/// Whether a failed create means the mountpoint is there already.
fn exists(e: &JanusError) -> bool {
    matches!(e, JanusError::Plugin { code, reason } if *code == CANT_CREATE && reason.contains("already exists"))
}

/// What one reconcile pass did for the mountpoints of a gateway.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Mountpoints created now.
    pub created: usize,
    /// Mountpoints in place (found, or created now), by mountpoint id.
    pub present: HashSet<u64>,
    /// Mountpoints Janus refused to create, with its reason.
    pub failed: HashMap<u64, String>,
}

/// One gateway and what its health checks found.
pub struct Gateway {
    pub settings: GatewaySettings,
    pub janus: Janus,
    /// The streaming plugin's admin key (lists private mountpoints), if configured.
    admin_key: String,
    health: Mutex<Health>,
}

struct Health {
    up: bool,
    /// When the gateway started failing its checks.
    down_since: Option<Instant>,
    mountpoints: usize,
}

/// What the API shows of a gateway.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GatewayView {
    pub name: String,
    pub up: bool,
    pub mountpoints: usize,
}

impl Gateway {
    pub fn is_up(&self) -> bool {
        self.health.lock().unwrap().up
    }

    /// Down for longer than `after`: its cameras should move.
    pub fn failed_for(&self, after: Duration) -> bool {
        let h = self.health.lock().unwrap();
        !h.up && h.down_since.is_some_and(|t| t.elapsed() >= after)
    }

    pub fn view(&self) -> GatewayView {
        let h = self.health.lock().unwrap();
        GatewayView {
            name: self.settings.name.clone(),
            up: h.up,
            mountpoints: h.mountpoints,
        }
    }

    fn record(&self, result: Result<usize, &JanusError>) {
        let mut h = self.health.lock().unwrap();
        match result {
            Ok(n) => {
                if !h.up {
                    tracing::info!(gateway = %self.settings.name, mountpoints = n, "janus gateway healthy");
                }
                h.up = true;
                h.down_since = None;
                h.mountpoints = n;
            }
            Err(e) => {
                if h.up || h.down_since.is_none() {
                    tracing::warn!(gateway = %self.settings.name, error = %e, "janus gateway unhealthy");
                }
                h.up = false;
                h.down_since.get_or_insert_with(Instant::now);
            }
        }
        crate::metrics::JANUS_UP
            .with_label_values(&[&self.settings.name])
            .set(f64::from(u8::from(h.up)));
        crate::metrics::JANUS_MOUNTPOINTS
            .with_label_values(&[&self.settings.name])
            .set(h.mountpoints as f64);
    }

    fn create_body(&self, mp: &Mountpoint) -> serde_json::Value {
        let mut video = json!({
            "type": "video",
            "mid": "v",
            "port": mp.port,
            "iface": self.settings.rtp_iface,
            "pt": 96,
            "codec": "h264",
            // Constrained baseline is what every browser accepts; High-profile streams
            // decode fine advertised this way.
            "fmtp": "profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1",
            "bufferkf": true
        });
        if mp.h265 {
            video["codec"] = json!("h265");
            video.as_object_mut().expect("an object").remove("fmtp");
        }
        let mut body = json!({
            "request": "create",
            "type": "rtp",
            "id": mp.id,
            "description": format!("cloudcam {}", mp.id),
            "secret": mp.secret,
            "pin": mp.pin,
            "is_private": true,
            "permanent": false,
            // Lets each view ask the browser for its playout delay (see `viewer`).
            "playoutdelay_ext": true,
            "media": [video]
        });
        if let Some(port) = mp.audio_port {
            // The live view's audio: the G.711 the camera sends as it is, or Opus (ingest
            // encodes AAC to it; audio is the only thing ever encoded).
            let (codec, pt) = match mp.audio_codec.as_str() {
                "PCMU" => ("pcmu", 0),
                "PCMA" => ("pcma", 8),
                _ => ("opus", 111),
            };
            body["media"]
                .as_array_mut()
                .expect("media is a list")
                .push(json!({
                    "type": "audio",
                    "mid": "a",
                    "port": port,
                    "iface": self.settings.rtp_iface,
                    "pt": pt,
                    "codec": codec
                }));
        }
        if !self.admin_key.is_empty() {
            body["admin_key"] = json!(self.admin_key);
        }
        body
    }

    /// The ids of the mountpoints the gateway has, if it can tell (private ones are listed
    /// only with the admin key).
    async fn listed(&self, h: &crate::janus::Handle) -> Result<Option<HashSet<u64>>, JanusError> {
        if self.admin_key.is_empty() {
            return Ok(None);
        }
        let listed = h
            .request(json!({"request": "list", "admin_key": self.admin_key}))
            .await?;
        Ok(Some(
            listed
                .get("list")
                .and_then(|l| l.as_array())
                .map(|l| l.iter().filter_map(|m| m.get("id")?.as_u64()).collect())
                .unwrap_or_default(),
        ))
    }

    /// Creates every one of `mountpoints` the gateway is missing. Fails only when the gateway
    /// itself does not answer; a refused create is reported in the outcome.
    async fn reconcile(&self, mountpoints: &[&Mountpoint]) -> Result<Outcome, JanusError> {
        let h = self.janus.open().await?;
        let result = async {
            let listed = self.listed(&h).await?;
            let mut out = Outcome::default();
            for mp in mountpoints {
                if listed.as_ref().is_some_and(|l| l.contains(&mp.id)) {
                    out.present.insert(mp.id);
                    continue;
                }
                match h.request(self.create_body(mp)).await {
                    Ok(_) => {
                        out.created += 1;
                        out.present.insert(mp.id);
                    }
                    Err(e) if exists(&e) => {
                        out.present.insert(mp.id);
                    }
                    Err(JanusError::Plugin { reason, .. }) => {
                        out.failed.insert(mp.id, reason);
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(out)
        }
        .await;
        let _ = h.destroy().await;
        result
    }
}

pub struct Pool {
    pub gateways: Vec<Gateway>,
    settings: JanusSettings,
}

impl Pool {
    pub fn new(settings: JanusSettings) -> Self {
        let gateways = settings
            .pool()
            .into_iter()
            .map(|g| Gateway {
                janus: Janus::new(&g.url, &settings.api_secret),
                settings: g,
                admin_key: settings.admin_key.clone(),
                // Assumed up until a check says otherwise, so cameras can be placed at start.
                health: Mutex::new(Health {
                    up: true,
                    down_since: None,
                    mountpoints: 0,
                }),
            })
            .collect();
        Self { gateways, settings }
    }

    /// The gateway a mountpoint is on (records from before the pool name none: the first).
    pub fn gateway(&self, name: &str) -> &Gateway {
        self.gateways
            .iter()
            .find(|g| g.settings.name == name)
            .unwrap_or(&self.gateways[0])
    }

    /// Whether `mp` is on `gateway`.
    fn hosts(&self, gateway: &Gateway, mp: &Mountpoint) -> bool {
        std::ptr::eq(self.gateway(&mp.gateway), gateway)
    }

    /// The healthy gateway with the fewest of `existing`, other than `not`.
    pub fn place(&self, existing: &[&Mountpoint], not: Option<&str>) -> Option<&Gateway> {
        let load = |g: &Gateway| existing.iter().filter(|mp| self.hosts(g, mp)).count();
        self.gateways
            .iter()
            .filter(|g| g.is_up() && Some(g.settings.name.as_str()) != not)
            .min_by_key(|g| load(g))
    }

    /// Where a new mountpoint goes: the least loaded healthy gateway (the first when none is
    /// healthy; the reconciler moves it later).
    pub fn place_new(&self, existing: &[&Mountpoint]) -> &Gateway {
        self.place(existing, None).unwrap_or(&self.gateways[0])
    }

    /// The RTP port range mountpoints are allocated from.
    pub fn ports(&self) -> std::ops::RangeInclusive<u16> {
        self.settings.rtp_port_min..=self.settings.rtp_port_max
    }

    /// Creates the camera's mountpoints (its main stream's and its substream's) on its
    /// gateway unless they are there already.
    pub async fn ensure(&self, mp: &Mountpoint) -> Result<(), JanusError> {
        let g = self.gateway(&mp.gateway);
        let h = g.janus.open().await?;
        let mut res = Ok(());
        for part in mp.parts() {
            res = match h.request(g.create_body(&part)).await {
                Err(e) if !exists(&e) => Err(e),
                _ => Ok(()),
            };
            if res.is_err() {
                break;
            }
        }
        let _ = h.destroy().await;
        res
    }

    /// Destroys the camera's mountpoints (or the one stream's that `mp` is).
    pub async fn remove(&self, mp: &Mountpoint) -> Result<(), JanusError> {
        let h = self.gateway(&mp.gateway).janus.open().await?;
        let mut res = Ok(());
        for part in mp.parts() {
            res = match h
                .request(json!({"request": "destroy", "id": part.id, "secret": part.secret}))
                .await
            {
                Err(JanusError::Plugin { code, .. }) if code == NO_SUCH_MOUNTPOINT => Ok(()),
                Err(e) => Err(e),
                Ok(_) => Ok(()),
            };
            if res.is_err() {
                break;
            }
        }
        let _ = h.destroy().await;
        res
    }

    /// Health-checks every gateway, re-creating the mountpoints each is missing (after a
    /// restart, say). Returns what each answering gateway did.
    pub async fn reconcile(&self, mountpoints: &[&Mountpoint]) -> Vec<Outcome> {
        let checks = self.gateways.iter().map(|g| async move {
            let mine: Vec<Mountpoint> = mountpoints
                .iter()
                .filter(|mp| self.hosts(g, mp))
                .flat_map(|mp| mp.parts())
                .collect();
            let res = g.reconcile(&mine.iter().collect::<Vec<_>>()).await;
            g.record(res.as_ref().map(|o| o.present.len()));
            match res {
                Ok(o) => {
                    if o.created > 0 {
                        tracing::info!(gateway = %g.settings.name, created = o.created, "janus mountpoints created");
                    }
                    Some(o)
                }
                Err(_) => None,
            }
        });
        futures::future::join_all(checks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Whether any gateway passed its last check.
    pub fn any_up(&self) -> bool {
        self.gateways.iter().any(Gateway::is_up)
    }

    pub fn failover_after(&self) -> Duration {
        Duration::from_millis(self.settings.failover_after_ms)
    }

    pub fn views(&self) -> Vec<GatewayView> {
        self.gateways.iter().map(Gateway::view).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Janus 1.1.2's answers to `create`, recorded: an id that is taken, and an RTP port that
    /// another socket holds. Both are 456.
    const TAKEN_ID: &str = "A stream with the provided ID already exists";
    const PORT_TAKEN: &str = "Can't add 'rtp' stream, error creating data source stream";

    /// A fake Janus streaming plugin over HTTP: sessions, `list` (private mountpoints only with
    /// the admin key), `create` answering as Janus 1.1.2 does for a taken id or port.
    #[derive(Default)]
    struct FakeJanus {
        /// mountpoint id → port
        mountpoints: Mutex<HashMap<u64, u64>>,
        /// ports another socket holds
        taken_ports: HashSet<u64>,
        /// create requests per mountpoint id
        creates: Mutex<HashMap<u64, usize>>,
    }

    async fn fake_janus(
        fake: actix_web::web::Data<FakeJanus>,
        body: actix_web::web::Json<serde_json::Value>,
    ) -> actix_web::HttpResponse {
        let ok = |data: serde_json::Value| {
            actix_web::HttpResponse::Ok().json(json!({"janus": "success", "data": data}))
        };
        let plugin = |data: serde_json::Value| {
            actix_web::HttpResponse::Ok().json(json!({"janus": "success",
                "plugindata": {"plugin": "janus.plugin.streaming", "data": data}}))
        };
        match body["janus"].as_str() {
            Some("create") => ok(json!({"id": 1})),
            Some("attach") => ok(json!({"id": 2})),
            Some("destroy") => ok(json!({})),
            Some("message") => {
                let req = &body["body"];
                match req["request"].as_str() {
                    Some("list") => {
                        let list: Vec<_> = if req["admin_key"] == "k" {
                            let mps = fake.mountpoints.lock().unwrap();
                            mps.keys().map(|id| json!({"id": id})).collect()
                        } else {
                            Vec::new()
                        };
                        plugin(json!({"streaming": "list", "list": list}))
                    }
                    Some("create") => {
                        let id = req["id"].as_u64().unwrap();
                        let port = req["media"][0]["port"].as_u64().unwrap();
                        *fake.creates.lock().unwrap().entry(id).or_default() += 1;
                        let mut mps = fake.mountpoints.lock().unwrap();
                        if fake.taken_ports.contains(&port) && !mps.contains_key(&id) {
                            return plugin(json!({"error_code": 456, "error": PORT_TAKEN}));
                        }
                        match mps.entry(id) {
                            std::collections::hash_map::Entry::Occupied(_) => {
                                plugin(json!({"error_code": 456, "error": TAKEN_ID}))
                            }
                            std::collections::hash_map::Entry::Vacant(v) => {
                                v.insert(port);
                                plugin(json!({"streaming": "created"}))
                            }
                        }
                    }
                    _ => plugin(json!({"error_code": 499, "error": "unexpected request"})),
                }
            }
            _ => actix_web::HttpResponse::BadRequest().finish(),
        }
    }

    fn pool_on(fake: FakeJanus, admin_key: &str) -> (Pool, actix_web::web::Data<FakeJanus>) {
        let fake = actix_web::web::Data::new(fake);
        let data = fake.clone();
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(data.clone())
                .default_service(actix_web::web::post().to(fake_janus))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let addr = server.addrs()[0];
        actix_rt::spawn(server.run());
        let settings = JanusSettings {
            url: format!("http://{addr}/janus"),
            admin_key: admin_key.into(),
            ..Default::default()
        };
        (Pool::new(settings), fake)
    }

    fn mountpoint(id: u64, port: u16) -> Mountpoint {
        Mountpoint {
            id,
            port,
            secret: "s".into(),
            pin: "p".into(),
            gateway: "janus-1".into(),
            sub: None,
            audio_port: None,
            h265: false,
            audio_codec: String::new(),
        }
    }

    #[actix_web::test]
    async fn a_pass_creates_only_what_is_missing_and_reports_what_janus_refuses() {
        let (pool, fake) = pool_on(
            FakeJanus {
                taken_ports: HashSet::from([2]),
                ..Default::default()
            },
            "k",
        );
        let (a, b) = (mountpoint(1001, 1), mountpoint(1002, 2));
        for _ in 0..3 {
            let outcomes = pool.reconcile(&[&a, &b]).await;
            assert_eq!(outcomes.len(), 1, "the gateway answered");
            assert!(outcomes[0].present.contains(&1001));
            assert_eq!(
                outcomes[0].failed.get(&1002).map(String::as_str),
                Some(PORT_TAKEN)
            );
        }
        assert!(
            pool.any_up(),
            "a refused create does not mark the gateway down"
        );
        let creates = fake.creates.lock().unwrap().clone();
        assert_eq!(
            creates.get(&1001),
            Some(&1),
            "a listed mountpoint is not created again"
        );
        assert_eq!(
            creates.get(&1002),
            Some(&3),
            "a refused one is retried every pass"
        );
    }

    #[actix_web::test]
    async fn without_the_admin_key_a_taken_id_still_counts_as_present() {
        let (pool, fake) = pool_on(FakeJanus::default(), "");
        let a = mountpoint(1001, 1);
        pool.ensure(&a).await.unwrap();
        let outcomes = pool.reconcile(&[&a]).await;
        assert!(outcomes[0].present.contains(&1001));
        assert!(outcomes[0].failed.is_empty());
        assert_eq!(fake.creates.lock().unwrap().get(&1001), Some(&2));
    }

    #[test]
    fn only_a_taken_id_counts_as_present() {
        let err = |reason: &str| JanusError::Plugin {
            code: 456,
            reason: reason.into(),
        };
        assert!(exists(&err(TAKEN_ID)));
        assert!(!exists(&err(PORT_TAKEN)));
        assert!(!exists(&JanusError::Plugin {
            code: 455,
            reason: TAKEN_ID.into()
        }));
    }
}
