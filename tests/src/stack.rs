//! The components of a test, each started as a real process.

use crate::procs::{Proc, free_port, free_udp_range, wait_for, wait_tcp};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "test-admin-password";

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A built binary of the workspace: the debug build, or the profile named by
/// `CLOUDCAM_BIN_PROFILE` (benchmarks measure `release`).
pub fn binary(name: &str) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let profile = std::env::var("CLOUDCAM_BIN_PROFILE").unwrap_or_else(|_| "debug".into());
    let path = target.join(profile).join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build the workspace first (cargo build --workspace)",
            path.display()
        );
    }
    Ok(path)
}

/// One test's directory of logs and artifacts.
pub struct TestEnv {
    pub dir: PathBuf,
}

impl TestEnv {
    pub fn new(name: &str) -> Result<Self> {
        let dir = workspace().join("artifacts").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// A single-node Apache Kafka (KRaft, broker and controller in one JVM).
    pub async fn kafka(&self) -> Result<Kafka> {
        let mut kafka = self.kafka_unstarted()?;
        kafka.start().await?;
        Ok(kafka)
    }

    /// A formatted single-node broker with its ports chosen, not running yet ([`Kafka::start`]).
    pub fn kafka_unstarted(&self) -> Result<Kafka> {
        let libs = std::env::var_os("CLOUDCAM_KAFKA_LIBS")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join(".cache/kafka/libs"));
        if !libs.is_dir() {
            bail!(
                "Kafka jars not found in {}: run scripts/install-deps.sh",
                libs.display()
            );
        }
        let port = free_port();
        let cport = free_port();
        let dir = self.dir.join("kafka");
        std::fs::create_dir_all(&dir)?;
        let props = dir.join("server.properties");
        std::fs::write(
            &props,
            format!(
                "process.roles=broker,controller\n\
                 node.id=1\n\
                 controller.quorum.voters=1@127.0.0.1:{cport}\n\
                 listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
                 controller.listener.names=CONTROLLER\n\
                 inter.broker.listener.name=PLAINTEXT\n\
                 listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
                 log.dirs={data}\n\
                 offsets.topic.replication.factor=1\n\
                 offsets.topic.num.partitions=4\n\
                 transaction.state.log.replication.factor=1\n\
                 transaction.state.log.min.isr=1\n\
                 share.coordinator.state.topic.replication.factor=1\n\
                 share.coordinator.state.topic.min.isr=1\n\
                 group.initial.rebalance.delay.ms=0\n\
                 group.min.session.timeout.ms=500\n\
                 auto.create.topics.enable=false\n",
                data = dir.join("data").display()
            ),
        )?;
        // The broker's log goes to its artifact: what the group coordinator did is the first
        // thing to read when a test about ownership fails.
        let log4j = dir.join("log4j2.properties");
        std::fs::write(
            &log4j,
            "appender.out.type=Console\n\
             appender.out.name=out\n\
             appender.out.layout.type=PatternLayout\n\
             appender.out.layout.pattern=[%d] %p %m (%c)%n\n\
             rootLogger.level=INFO\n\
             rootLogger.appenderRef.out.ref=out\n",
        )?;
        let cp = format!("{}/*", libs.display());
        let status = Command::new("java")
            .args(["-cp", &cp, "kafka.tools.StorageTool", "format", "-t"])
            .arg("MkU3OEVBNTcwNTJENDM2Qk")
            .arg("-c")
            .arg(&props)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .context("java (Kafka storage format)")?;
        if !status.success() {
            bail!("formatting Kafka storage failed");
        }
        Ok(Kafka {
            proc: None,
            brokers: format!("127.0.0.1:{port}"),
            port,
            cp,
            props,
            log4j,
            dir: self.dir.clone(),
        })
    }

    pub async fn redis(&self) -> Result<Redis> {
        let mut redis = self.redis_unstarted();
        redis.start().await?;
        Ok(redis)
    }

    /// A Redis with its port and password chosen, not running yet ([`Redis::start`]).
    pub fn redis_unstarted(&self) -> Redis {
        let port = free_port();
        Redis {
            proc: None,
            url: format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/"),
            port,
            dir: self.dir.clone(),
        }
    }

    pub async fn janus(&self) -> Result<Janus> {
        self.janus_named("janus").await
    }

    /// A Janus gateway whose configuration and log are named `name` (for a pool of several).
    pub async fn janus_named(&self, name: &str) -> Result<Janus> {
        let port = free_port();
        let admin_port = free_port();
        let dir = self.dir.join(name);
        let status = Command::new(workspace().join("scripts/janus-config.sh"))
            .env("JANUS_ADMIN_KEY", JANUS_ADMIN_KEY)
            .env("JANUS_API_SECRET", JANUS_API_SECRET)
            .arg(&dir)
            .arg(port.to_string())
            .arg(admin_port.to_string())
            .status()?;
        if !status.success() {
            bail!("janus-config.sh failed");
        }
        let proc = Proc::spawn(name, &self.dir, Command::new("janus").arg("-F").arg(&dir))?;
        let url = format!("http://127.0.0.1:{port}/janus");
        let http = reqwest::Client::new();
        wait_for("Janus HTTP API", Duration::from_secs(30), || {
            let http = http.clone();
            let url = url.clone();
            async move {
                let res = http
                    .post(&url)
                    .json(&serde_json::json!({"janus": "ping", "transaction": "t", "apisecret": JANUS_API_SECRET}))
                    .send()
                    .await
                    .ok()?;
                res.status().is_success().then_some(())
            }
        })
        .await?;
        Ok(Janus {
            name: name.to_string(),
            proc,
            url,
            admin_url: format!("http://127.0.0.1:{admin_port}/admin"),
        })
    }

    /// camsim serving `streams` (see `camsim --help`), optionally behind RTSP auth
    /// `(user, password, "basic"|"digest")`.
    pub async fn camsim(
        &self,
        streams: &[&str],
        auth: Option<(&str, &str, &str)>,
    ) -> Result<Camsim> {
        let port = free_port();
        let mut c = Camsim {
            proc: None,
            port,
            stats_port: free_port(),
            streams: streams.iter().map(|s| s.to_string()).collect(),
            auth: auth.map(|(u, p, m)| (u.to_string(), p.to_string(), m.to_string())),
            dir: self.dir.clone(),
        };
        c.start().await?;
        Ok(c)
    }

    pub async fn signal(
        &self,
        kafka: Option<&Kafka>,
        redis: Option<&Redis>,
        janus: &Janus,
        garage: Option<&Garage>,
    ) -> Result<Signal> {
        self.signal_with(kafka, redis, &[janus], garage, &[]).await
    }

    /// signal with a pool of Janus gateways (named after them) and extra `CLOUDCAM_SIGNAL_*`
    /// settings.
    pub async fn signal_with(
        &self,
        kafka: Option<&Kafka>,
        redis: Option<&Redis>,
        gateways: &[&Janus],
        garage: Option<&Garage>,
        extra: &[(&str, &str)],
    ) -> Result<Signal> {
        self.signal_named("signal", kafka, redis, gateways, garage, extra)
            .await
    }

    /// [`TestEnv::signal_with`] whose log is `<name>.log` (for several signal instances).
    pub async fn signal_named(
        &self,
        name: &str,
        kafka: Option<&Kafka>,
        redis: Option<&Redis>,
        gateways: &[&Janus],
        garage: Option<&Garage>,
        extra: &[(&str, &str)],
    ) -> Result<Signal> {
        let mut signal = self.signal_unstarted(name, kafka, redis, gateways, garage, extra)?;
        signal.start().await?;
        Ok(signal)
    }

    /// [`TestEnv::signal_named`], configured and not started ([`Signal::start`]).
    pub fn signal_unstarted(
        &self,
        name: &str,
        kafka: Option<&Kafka>,
        redis: Option<&Redis>,
        gateways: &[&Janus],
        garage: Option<&Garage>,
        extra: &[(&str, &str)],
    ) -> Result<Signal> {
        // A test that has signal listen elsewhere (on every interface, say) names the port.
        let port = extra
            .iter()
            .find(|(k, _)| *k == "CLOUDCAM_SIGNAL_LISTEN")
            .and_then(|(_, v)| v.rsplit(':').next()?.parse().ok())
            .unwrap_or_else(free_port);
        let internal = free_port();
        let rtp = free_udp_range(100);
        // Clip scratch directories land under the test's directory.
        let tmp = self.dir.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        let mut env: Vec<(String, String)> = vec![
            ("RUST_LOG".into(), "info".into()),
            ("TMPDIR".into(), tmp.display().to_string()),
            ("CLOUDCAM_SIGNAL_LISTEN".into(), format!("127.0.0.1:{port}")),
            (
                "CLOUDCAM_SIGNAL_INTERNAL_LISTEN".into(),
                format!("127.0.0.1:{internal}"),
            ),
            ("CLOUDCAM_SIGNAL_AUTH__ADMIN_USER".into(), ADMIN_USER.into()),
            (
                "CLOUDCAM_SIGNAL_AUTH__ADMIN_PASSWORD".into(),
                ADMIN_PASSWORD.into(),
            ),
            ("CLOUDCAM_SIGNAL_JANUS__URL".into(), gateways[0].url.clone()),
            (
                "CLOUDCAM_SIGNAL_JANUS__ADMIN_KEY".into(),
                JANUS_ADMIN_KEY.into(),
            ),
            (
                "CLOUDCAM_SIGNAL_JANUS__API_SECRET".into(),
                JANUS_API_SECRET.into(),
            ),
            (
                "CLOUDCAM_SIGNAL_JANUS__RTP_PORT_MIN".into(),
                rtp.to_string(),
            ),
            (
                "CLOUDCAM_SIGNAL_JANUS__RTP_PORT_MAX".into(),
                (rtp + 99).to_string(),
            ),
            (
                "CLOUDCAM_SIGNAL_JANUS__RECONCILE_INTERVAL_MS".into(),
                "1000".into(),
            ),
            // Test clients open views they never answer (a watch alone registers a viewer),
            // many on one socket; the bounds have their own test (hardening).
            ("CLOUDCAM_SIGNAL_OFFER_TIMEOUT_MS".into(), "600000".into()),
            ("CLOUDCAM_SIGNAL_MAX_VIEWS_PER_SOCKET".into(), "64".into()),
            ("CLOUDCAM_SIGNAL_MAX_VIEWS_PER_USER".into(), "256".into()),
        ];
        if let Some(k) = kafka {
            env.push(("CLOUDCAM_SIGNAL_KAFKA__BROKERS".into(), k.brokers.clone()));
        }
        if let Some(r) = redis {
            env.push(("CLOUDCAM_SIGNAL_REDIS__URL".into(), r.url.clone()));
        }
        if let Some(g) = garage {
            env.extend(g.env("CLOUDCAM_SIGNAL_MEDIA__"));
        } else {
            env.push((
                "CLOUDCAM_SIGNAL_MEDIA__LOCAL_DIR".into(),
                self.dir.join("media").display().to_string(),
            ));
        }
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut args = Vec::new();
        if gateways.len() > 1 {
            // A pool is a list of tables: configuration-file material.
            let mut toml = String::from("[janus]\n");
            for g in gateways {
                toml.push_str(&format!(
                    "[[janus.gateways]]\nname = \"{}\"\nurl = \"{}\"\nrtp_host = \"127.0.0.1\"\nrtp_iface = \"127.0.0.1\"\n",
                    g.name, g.url
                ));
            }
            let file = self.dir.join("signal.toml");
            std::fs::write(&file, toml)?;
            args = vec!["--config".to_string(), file.display().to_string()];
        }
        Ok(Signal {
            name: name.to_string(),
            proc: None,
            base: format!("http://127.0.0.1:{port}"),
            internal: format!("http://127.0.0.1:{internal}"),
            env,
            args,
            dir: self.dir.clone(),
        })
    }

    pub async fn ingest(
        &self,
        name: &str,
        kafka: &Kafka,
        redis: &Redis,
        garage: Option<&Garage>,
    ) -> Result<Ingest> {
        self.ingest_with(name, kafka, redis, garage, &[]).await
    }

    /// An ingest worker with extra `CLOUDCAM_INGEST_*` settings.
    pub async fn ingest_with(
        &self,
        name: &str,
        kafka: &Kafka,
        redis: &Redis,
        garage: Option<&Garage>,
        extra: &[(&str, &str)],
    ) -> Result<Ingest> {
        let port = free_port();
        let mut cmd = Command::new(binary("cloudcam-ingest")?);
        cmd.env("RUST_LOG", "info")
            .env("CLOUDCAM_INGEST_WORKER_ID", name)
            .env(
                "CLOUDCAM_INGEST_RESTREAM_LISTEN",
                format!("127.0.0.1:{}", free_port()),
            )
            .env(
                "CLOUDCAM_INGEST_PUSH__LISTEN",
                format!("127.0.0.1:{}", free_port()),
            )
            .env(
                "CLOUDCAM_INGEST_METRICS_LISTEN",
                format!("127.0.0.1:{port}"),
            )
            .env("CLOUDCAM_INGEST_RESTREAM_AUTH__PASSWORD", RESTREAM_PASSWORD)
            .env("CLOUDCAM_INGEST_KAFKA__BROKERS", &kafka.brokers)
            .env("CLOUDCAM_INGEST_REDIS__URL", &redis.url)
            .env("CLOUDCAM_INGEST_CAMERA__STALL_TIMEOUT_MS", "3000")
            .env("CLOUDCAM_INGEST_CAMERA__BACKOFF_MAX_MS", "2000")
            .env("CLOUDCAM_INGEST_CAMERA__SNAPSHOT_INTERVAL_MS", "0")
            .envs(extra.iter().copied());
        if let Some(g) = garage {
            g.configure(&mut cmd, "CLOUDCAM_INGEST_MEDIA__");
        } else {
            cmd.env("CLOUDCAM_INGEST_MEDIA__LOCAL_DIR", self.dir.join("media"));
        }
        let proc = Proc::spawn(name, &self.dir, &mut cmd)?;
        let metrics = format!("http://127.0.0.1:{port}/metrics");
        wait_http(&format!("http://127.0.0.1:{port}/healthz"), name).await?;
        Ok(Ingest { proc, metrics })
    }
}

impl TestEnv {
    /// The edge agent (`cloudcam-edge`) with `args`, inside `site` when given (logs in
    /// `<name>.log`).
    pub fn edge_agent(
        &self,
        name: &str,
        site: Option<&crate::netns::NatSite>,
        args: &[&str],
    ) -> Result<Proc> {
        self.edge_agent_with(name, site, args, &[])
    }

    /// [`Self::edge_agent`] with extra `CLOUDCAM_EDGE_*` settings.
    pub fn edge_agent_with(
        &self,
        name: &str,
        site: Option<&crate::netns::NatSite>,
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> Result<Proc> {
        let binary = binary("cloudcam-edge")?;
        let mut cmd = match site {
            Some(site) => site.command(binary),
            None => Command::new(binary),
        };
        cmd.env("RUST_LOG", "info")
            .args(args)
            .envs(extra.iter().copied());
        Proc::spawn(name, &self.dir, &mut cmd)
    }
}

/// Adds an edge site named `name`; returns its id and one-time enrollment token.
pub async fn add_site(api: &crate::Api, name: &str) -> Result<(String, String)> {
    let (status, made) = api
        .call("POST", "/sites", Some(serde_json::json!({ "name": name })))
        .await?;
    anyhow::ensure!(status == 201, "POST /sites answered {status}: {made}");
    let id = made["id"].as_str().unwrap_or_default().to_string();
    let token = made["enrollment"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok((id, token))
}

/// The distributed platform on one machine: Kafka, Redis, Janus, signal and one ingest worker.
pub struct Platform {
    pub kafka: Kafka,
    pub redis: Redis,
    pub janus: Janus,
    pub signal: Signal,
    pub ingest: Ingest,
}

impl TestEnv {
    pub async fn platform(&self) -> Result<Platform> {
        self.platform_with(None).await
    }

    /// The platform, with media (snapshots, recordings) in `garage` when given.
    pub async fn platform_with(&self, garage: Option<&Garage>) -> Result<Platform> {
        self.platform_tuned(garage, &[], &[]).await
    }

    /// The platform, with extra `CLOUDCAM_SIGNAL_*` and `CLOUDCAM_INGEST_*` settings.
    pub async fn platform_tuned(
        &self,
        garage: Option<&Garage>,
        signal_env: &[(&str, &str)],
        ingest_env: &[(&str, &str)],
    ) -> Result<Platform> {
        let kafka = self.kafka().await?;
        let redis = self.redis().await?;
        let janus = self.janus().await?;
        let signal = self
            .signal_with(Some(&kafka), Some(&redis), &[&janus], garage, signal_env)
            .await?;
        let ingest = self
            .ingest_with("ingest-1", &kafka, &redis, garage, ingest_env)
            .await?;
        Ok(Platform {
            kafka,
            redis,
            janus,
            signal,
            ingest,
        })
    }
}

impl TestEnv {
    /// Janus, signal and one ingest worker started before their Kafka and Redis, which are
    /// returned unstarted: the services wait for them (`kafka.start()` and `redis.start()`).
    pub async fn platform_before_deps(&self, garage: Option<&Garage>) -> Result<Platform> {
        let kafka = self.kafka_unstarted()?;
        let redis = self.redis_unstarted();
        let janus = self.janus().await?;
        let mut signal =
            self.signal_unstarted("signal", Some(&kafka), Some(&redis), &[&janus], garage, &[])?;
        signal.start_waiting().await?;
        let ingest = self.ingest("ingest-1", &kafka, &redis, garage).await?;
        Ok(Platform {
            kafka,
            redis,
            janus,
            signal,
            ingest,
        })
    }
}

/// The streaming plugin's admin key of every test gateway (signal lists private mountpoints
/// with it).
pub const JANUS_ADMIN_KEY: &str = "cloudcam-test-admin-key";
/// The re-stream credential ingest workers require and recorders present, in tests (user
/// `cloudcam`).
pub const RESTREAM_PASSWORD: &str = "cloudcam-test-restream";
/// Redis in tests requires this password (as compose's does).
pub const REDIS_PASSWORD: &str = "cloudcam-test-redis-password";
/// The Janus HTTP API's `api_secret` in tests: requests without it are refused.
pub const JANUS_API_SECRET: &str = "cloudcam-test-api-secret";

pub const S3_ACCESS_KEY: &str = "GK0123456789abcdef01234567";
pub const S3_SECRET_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
pub const S3_BUCKET: &str = "cloudcam";

impl TestEnv {
    /// A single-node Garage (S3) with a ready bucket and key. Its data survives a restart.
    pub async fn garage(&self) -> Result<Garage> {
        let dir = self.dir.join("garage");
        std::fs::create_dir_all(&dir)?;
        let (s3_port, rpc_port) = (free_port(), free_port());
        let toml = dir.join("garage.toml");
        std::fs::write(
            &toml,
            format!(
                "metadata_dir = \"{meta}\"\n\
                 data_dir = \"{data}\"\n\
                 db_engine = \"sqlite\"\n\
                 replication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
                 rpc_secret = \"{secret}\"\n\
                 [s3_api]\n\
                 s3_region = \"garage\"\n\
                 api_bind_addr = \"127.0.0.1:{s3_port}\"\n",
                meta = dir.join("meta").display(),
                data = dir.join("data").display(),
                secret = S3_SECRET_KEY,
            ),
        )?;
        let mut g = Garage {
            proc: None,
            toml,
            endpoint: format!("http://127.0.0.1:{s3_port}"),
            port: s3_port,
            dir: self.dir.clone(),
        };
        g.start().await?;
        Ok(g)
    }

    pub async fn recorder(
        &self,
        name: &str,
        kafka: &Kafka,
        redis: &Redis,
        garage: &Garage,
        segment_seconds: u32,
    ) -> Result<Recorder> {
        self.recorder_with(name, kafka, redis, garage, segment_seconds, &[])
            .await
    }

    /// [`TestEnv::recorder`] with more environment (`CLOUDCAM_RECORDER_…` settings).
    pub async fn recorder_with(
        &self,
        name: &str,
        kafka: &Kafka,
        redis: &Redis,
        garage: &Garage,
        segment_seconds: u32,
        extra: &[(&str, String)],
    ) -> Result<Recorder> {
        let port = free_port();
        let spool = self.dir.join(format!("{name}-spool"));
        let mut cmd = Command::new(binary("cloudcam-recorder")?);
        cmd.env("RUST_LOG", "info,cloudcam_recorder=debug")
            .env("CLOUDCAM_RECORDER_ID", name)
            .env(
                "CLOUDCAM_RECORDER_METRICS_LISTEN",
                format!("127.0.0.1:{port}"),
            )
            .env(
                "CLOUDCAM_RECORDER_RECORDER__RESTREAM_AUTH__PASSWORD",
                RESTREAM_PASSWORD,
            )
            .env("CLOUDCAM_RECORDER_KAFKA__BROKERS", &kafka.brokers)
            .env("CLOUDCAM_RECORDER_REDIS__URL", &redis.url)
            .env(
                "CLOUDCAM_RECORDER_RECORDER__SEGMENT_SECONDS",
                segment_seconds.to_string(),
            )
            .env("CLOUDCAM_RECORDER_RECORDER__SPOOL_DIR", &spool)
            .env("CLOUDCAM_RECORDER_RECORDER__RETENTION_INTERVAL_MS", "1000");
        cmd.envs(extra.iter().map(|(k, v)| (k, v)));
        garage.configure(&mut cmd, "CLOUDCAM_RECORDER_MEDIA__");
        let proc = Proc::spawn(name, &self.dir, &mut cmd)?;
        wait_http(&format!("http://127.0.0.1:{port}/healthz"), name).await?;
        Ok(Recorder {
            proc,
            metrics: format!("http://127.0.0.1:{port}/metrics"),
            spool,
        })
    }
}

pub struct Garage {
    proc: Option<Proc>,
    toml: PathBuf,
    pub endpoint: String,
    pub port: u16,
    dir: PathBuf,
}

impl Garage {
    pub async fn start(&mut self) -> Result<()> {
        let garage = std::env::var("CLOUDCAM_GARAGE").unwrap_or_else(|_| "garage".into());
        let mut cmd = Command::new(garage);
        cmd.arg("-c")
            .arg(&self.toml)
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", S3_ACCESS_KEY)
            .env("GARAGE_DEFAULT_SECRET_KEY", S3_SECRET_KEY)
            .env("GARAGE_DEFAULT_BUCKET", S3_BUCKET)
            .env("RUST_LOG", "garage=warn");
        self.proc = Some(Proc::spawn("garage", &self.dir, &mut cmd)?);
        let store = self.store()?;
        wait_for(
            "Garage to serve the bucket",
            Duration::from_secs(60),
            || {
                let store = store.clone();
                async move {
                    use futures::TryStreamExt;
                    use object_store::ObjectStore;
                    store
                        .list(None)
                        .try_collect::<Vec<_>>()
                        .await
                        .ok()
                        .map(|_| ())
                }
            },
        )
        .await
    }

    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Points a service at this store through its `<prefix>S3_*` environment.
    /// The `<prefix>S3_*` settings that point a service at this store.
    pub fn env(&self, prefix: &str) -> Vec<(String, String)> {
        [
            ("S3_ENDPOINT", self.endpoint.as_str()),
            ("S3_BUCKET", S3_BUCKET),
            ("S3_REGION", "garage"),
            ("S3_ACCESS_KEY", S3_ACCESS_KEY),
            ("S3_SECRET_KEY", S3_SECRET_KEY),
        ]
        .into_iter()
        .map(|(k, v)| (format!("{prefix}{k}"), v.to_string()))
        .collect()
    }

    pub fn configure(&self, cmd: &mut Command, prefix: &str) {
        cmd.envs(self.env(prefix));
    }

    /// A client of the bucket, as a test inspects it.
    /// Camera `id`'s objects in the bucket, once checked to be exactly the segments its index
    /// lists (compare at rest: [`Recorder::stop_and_drain`]).
    pub async fn objects_matching_index(
        &self,
        api: &crate::Api,
        id: &str,
    ) -> Result<Vec<object_store::ObjectMeta>> {
        use futures::TryStreamExt;
        let v = api.recordings(id).await?;
        let mut indexed: Vec<String> = v["segments"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["key"].as_str().map(str::to_string))
            .collect();
        indexed.sort();
        let prefix = object_store::path::Path::from(format!("recordings/{id}"));
        let mut objects: Vec<_> = self.store()?.list(Some(&prefix)).try_collect().await?;
        objects.sort_by(|a, b| a.location.cmp(&b.location));
        let stored: Vec<String> = objects.iter().map(|o| o.location.to_string()).collect();
        anyhow::ensure!(
            stored == indexed,
            "S3 and the index disagree: {} objects, {} indexed; only in S3: {:?}; only indexed: {:?}",
            stored.len(),
            indexed.len(),
            stored
                .iter()
                .filter(|k| !indexed.contains(k))
                .collect::<Vec<_>>(),
            indexed
                .iter()
                .filter(|k| !stored.contains(k))
                .collect::<Vec<_>>()
        );
        Ok(objects)
    }

    pub fn store(&self) -> Result<std::sync::Arc<dyn object_store::ObjectStore>> {
        Ok(std::sync::Arc::new(
            object_store::aws::AmazonS3Builder::new()
                .with_endpoint(&self.endpoint)
                .with_allow_http(true)
                .with_virtual_hosted_style_request(false)
                .with_region("garage")
                .with_bucket_name(S3_BUCKET)
                .with_access_key_id(S3_ACCESS_KEY)
                .with_secret_access_key(S3_SECRET_KEY)
                .build()?,
        ))
    }
}

pub struct Recorder {
    pub proc: Proc,
    pub metrics: String,
    pub spool: PathBuf,
}

impl Recorder {
    /// The value of a metric line starting with `series` (name and labels), if present.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        metric(&self.metrics, series).await
    }

    /// Turns the cameras' recording off and waits until this recorder has stopped them and
    /// uploaded its whole spool, so that the index and the bucket can be compared at rest.
    pub async fn stop_and_drain(&self, api: &crate::Api, ids: &[&str]) -> Result<()> {
        for id in ids {
            let (status, body) = api
                .call(
                    "PATCH",
                    &format!("/cameras/{id}"),
                    Some(serde_json::json!({"recording": false})),
                )
                .await?;
            anyhow::ensure!(status == 200, "turning recording off: {status} {body}");
        }
        wait_for(
            "the recorder to stop and drain",
            Duration::from_secs(30),
            || async {
                let recording = self.metric("cloudcam_recorder_cameras ").await?;
                let spooled = self
                    .metric("cloudcam_recorder_spool{unit=\"segments\"}")
                    .await?;
                (recording == 0.0 && spooled == 0.0).then_some(())
            },
        )
        .await
    }
}

/// The value of the line starting with `series` (name and labels) in the `/metrics` page at
/// `url`, if present.
pub async fn metric(url: &str, series: &str) -> Option<f64> {
    let text = reqwest::get(url).await.ok()?.text().await.ok()?;
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A Prometheus server (Debian's package) scraping the given targets every second.
pub struct Prometheus {
    pub proc: Proc,
    pub url: String,
}

impl TestEnv {
    /// Starts Prometheus with one job per `(job, metrics URL)`.
    pub async fn prometheus(&self, targets: &[(&str, &str)]) -> Result<Prometheus> {
        let dir = self.dir.join("prometheus");
        std::fs::create_dir_all(&dir)?;
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
        );
        for (job, url) in targets {
            let url = reqwest::Url::parse(url)?;
            let host = format!(
                "{}:{}",
                url.host_str().unwrap_or_default(),
                url.port().unwrap_or(80)
            );
            config.push_str(&format!(
                "  - job_name: {job}\n    metrics_path: {}\n    static_configs:\n      - targets: [\"{host}\"]\n",
                url.path()
            ));
        }
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config)?;
        let port = free_port();
        let proc = Proc::spawn(
            "prometheus",
            &self.dir,
            Command::new("prometheus")
                .arg(format!("--config.file={}", file.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}")),
        )?;
        let url = format!("http://127.0.0.1:{port}");
        wait_http(&format!("{url}/-/ready"), "Prometheus").await?;
        Ok(Prometheus { proc, url })
    }
}

impl Prometheus {
    /// Evaluates an instant PromQL query; returns the result vector.
    pub async fn query(&self, expr: &str) -> Result<Vec<serde_json::Value>> {
        let v: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await?
            .json()
            .await?;
        anyhow::ensure!(v["status"] == "success", "query {expr}: {v}");
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The scrape targets with their health (`up`, `down`, `unknown`), by job.
    pub async fn targets(&self) -> Result<Vec<(String, String)>> {
        let v: serde_json::Value = reqwest::get(format!("{}/api/v1/targets", self.url))
            .await?
            .json()
            .await?;
        Ok(v["data"]["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    t["labels"]["job"].as_str().unwrap_or_default().to_string(),
                    t["health"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect())
    }
}

async fn wait_http(url: &str, what: &str) -> Result<()> {
    let http = reqwest::Client::new();
    wait_for(what, Duration::from_secs(30), || {
        let http = http.clone();
        async move {
            let res = http.get(url).send().await.ok()?;
            res.status().is_success().then_some(())
        }
    })
    .await
}

pub struct Kafka {
    pub proc: Option<Proc>,
    pub brokers: String,
    port: u16,
    cp: String,
    props: PathBuf,
    log4j: PathBuf,
    dir: PathBuf,
}

impl Kafka {
    /// Starts the broker (again, on the same port and data: a restart after [`Kafka::kill`]).
    pub async fn start(&mut self) -> Result<()> {
        self.proc = Some(Proc::spawn(
            "kafka",
            &self.dir,
            Command::new("java")
                .arg("-Xmx512m")
                .arg(format!(
                    "-Dlog4j2.configurationFile={}",
                    self.log4j.display()
                ))
                .args(["-cp", &self.cp, "kafka.Kafka"])
                .arg(&self.props),
        )?);
        wait_tcp("Kafka", self.port, Duration::from_secs(60)).await
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }
}

pub struct Redis {
    pub proc: Option<Proc>,
    pub url: String,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    pub async fn start(&mut self) -> Result<()> {
        self.proc = Some(Proc::spawn(
            "redis",
            &self.dir,
            Command::new("redis-server").args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--requirepass",
                REDIS_PASSWORD,
            ]),
        )?);
        wait_tcp("Redis", self.port, Duration::from_secs(20)).await
    }

    fn running(&self) -> Result<&Proc> {
        self.proc
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("Redis is not running"))
    }

    pub fn pid(&self) -> Result<u32> {
        Ok(self.running()?.pid())
    }

    /// SIGSTOP: Redis keeps its connections open and stops answering.
    pub fn pause(&self) -> Result<()> {
        self.running()?.signal("-STOP")
    }

    /// SIGCONT after [`Redis::pause`].
    pub fn resume(&self) -> Result<()> {
        self.running()?.signal("-CONT")
    }

    /// Writes `count` indexed 10 s segments of `camera_id` from `t0_ms` straight into its
    /// segment index (as a recorder would after a long time), in pipelined batches.
    pub async fn fill_index(&self, camera_id: &str, t0_ms: i64, count: i64) -> Result<()> {
        let mut con = redis::Client::open(self.url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        for batch in (0..count).collect::<Vec<_>>().chunks(10_000) {
            let mut pipe = redis::pipe();
            for i in batch {
                let start = t0_ms + i * 10_000;
                let seg = serde_json::json!({"camera_id": camera_id,
                    "key": format!("recordings/{camera_id}/{start}.mp4"),
                    "start_ms": start, "end_ms": start + 10_000, "bytes": 1_000_000, "codec": "H264"});
                pipe.cmd("ZADD")
                    .arg(format!("cloudcam:segments:{camera_id}"))
                    .arg(start)
                    .arg(seg.to_string())
                    .ignore();
            }
            let () = pipe.query_async(&mut con).await?;
        }
        Ok(())
    }

    /// A camera's Janus mountpoint as signal keeps it: `(gateway, id, secret)`. Secrets never
    /// leave the services, so a test reads them where they live.
    pub async fn mountpoint(&self, camera_id: &str) -> Result<(String, u64, String)> {
        use redis::AsyncCommands;
        let client = redis::Client::open(self.url.as_str())?;
        let mut con = client.get_multiplexed_async_connection().await?;
        let raw: String = con.get(format!("cloudcam:mountpoint:{camera_id}")).await?;
        let mp: serde_json::Value = serde_json::from_str(&raw)?;
        Ok((
            mp["gateway"].as_str().unwrap_or_default().to_string(),
            mp["id"].as_u64().context("mountpoint id")?,
            mp["secret"].as_str().unwrap_or_default().to_string(),
        ))
    }
}

pub struct Janus {
    pub name: String,
    pub proc: Proc,
    pub url: String,
    pub admin_url: String,
}

impl Janus {
    /// One streaming-plugin request in a session of its own (destroyed afterwards); the
    /// plugin's reply.
    async fn streaming(&self, body: serde_json::Value) -> Result<serde_json::Value> {
        let http = reqwest::Client::new();
        let post = |url: String, mut body: serde_json::Value| {
            let http = http.clone();
            body["apisecret"] = serde_json::json!(JANUS_API_SECRET);
            async move {
                let v: serde_json::Value = http.post(url).json(&body).send().await?.json().await?;
                Ok::<_, anyhow::Error>(v)
            }
        };
        let created = post(
            self.url.clone(),
            serde_json::json!({"janus": "create", "transaction": "c"}),
        )
        .await?;
        let sid = created["data"]["id"].as_u64().context("no Janus session")?;
        let session = format!("{}/{sid}", self.url);
        let attached = post(
            session.clone(),
            serde_json::json!({"janus": "attach", "plugin": "janus.plugin.streaming", "transaction": "a"}),
        )
        .await?;
        let hid = attached["data"]["id"].as_u64().context("no Janus handle")?;
        let reply = post(
            format!("{session}/{hid}"),
            serde_json::json!({"janus": "message", "transaction": "m", "body": body}),
        )
        .await;
        let _ = post(
            session,
            serde_json::json!({"janus": "destroy", "transaction": "d"}),
        )
        .await;
        Ok(reply?["plugindata"]["data"].clone())
    }

    /// Milliseconds since a mountpoint last received RTP, as Janus's streaming plugin reports
    /// it (`None` before any packet arrived).
    pub async fn media_age_ms(&self, mountpoint: u64, secret: &str) -> Result<Option<u64>> {
        let reply = self
            .streaming(serde_json::json!({"request": "info", "id": mountpoint, "secret": secret}))
            .await?;
        let media = &reply["info"]["media"][0];
        anyhow::ensure!(media.is_object(), "no mountpoint {mountpoint}: {reply}");
        Ok(media["age_ms"].as_u64())
    }

    /// Every mountpoint on the gateway as its `list` shows it (private ones too: listed with
    /// the admin key), with `id` and `media[].age_ms`.
    pub async fn mountpoints(&self) -> Result<Vec<serde_json::Value>> {
        let reply = self
            .streaming(serde_json::json!({"request": "list", "admin_key": JANUS_ADMIN_KEY}))
            .await?;
        reply["list"]
            .as_array()
            .cloned()
            .with_context(|| format!("no mountpoint list: {reply}"))
    }

    /// Ids of every mountpoint on the gateway.
    pub async fn mountpoint_ids(&self) -> Result<Vec<u64>> {
        Ok(self
            .mountpoints()
            .await?
            .iter()
            .filter_map(|m| m["id"].as_u64())
            .collect())
    }

    /// Ids of the gateway's open sessions, from its admin API.
    pub async fn sessions(&self) -> Result<Vec<u64>> {
        let res: serde_json::Value = reqwest::Client::new()
            .post(&self.admin_url)
            .json(&serde_json::json!({"janus": "list_sessions", "transaction": "t"}))
            .send()
            .await?
            .json()
            .await?;
        Ok(res["sessions"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
            .unwrap_or_default())
    }
}

pub struct Signal {
    name: String,
    pub proc: Option<Proc>,
    pub base: String,
    /// The internal listener: `/metrics`, `/readyz`.
    pub internal: String,
    env: Vec<(String, String)>,
    args: Vec<String>,
    dir: PathBuf,
}

impl Signal {
    /// Starts (or restarts) the service with the same settings and port.
    pub async fn start(&mut self) -> Result<()> {
        self.start_waiting().await?;
        wait_http(&format!("{}/healthz", self.base), &self.name).await
    }

    /// Starts the service and waits only for its internal listener (`/healthz`, `/readyz`):
    /// enough for a signal that is still waiting for Kafka or Redis.
    pub async fn start_waiting(&mut self) -> Result<()> {
        let mut cmd = Command::new(binary("cloudcam-signal")?);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        self.proc = Some(Proc::spawn(&self.name, &self.dir, &mut cmd)?);
        wait_http(&format!("{}/healthz", self.internal), &self.name).await
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    pub fn log_text(&self) -> String {
        self.proc.as_ref().map(Proc::log_text).unwrap_or_default()
    }
}

pub struct Ingest {
    pub proc: Proc,
    pub metrics: String,
}

pub struct Camsim {
    proc: Option<Proc>,
    pub port: u16,
    stats_port: u16,
    streams: Vec<String>,
    auth: Option<(String, String, String)>,
    dir: PathBuf,
}

impl Camsim {
    /// `rtsp://127.0.0.1:<port>/<path>`
    pub fn url(&self, path: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{path}", self.port)
    }

    pub async fn start(&mut self) -> Result<()> {
        let mut cmd = Command::new(binary("camsim")?);
        cmd.arg("--port").arg(self.port.to_string());
        cmd.arg("--stats-port").arg(self.stats_port.to_string());
        for s in &self.streams {
            cmd.arg("--stream").arg(s);
        }
        if let Some((u, p, m)) = &self.auth {
            cmd.args(["--username", u, "--password", p, "--auth", m]);
        }
        self.proc = Some(Proc::spawn("camsim", &self.dir, &mut cmd)?);
        wait_tcp("camsim", self.port, Duration::from_secs(60)).await
    }

    /// RTSP sessions playing each path now.
    pub async fn sessions(&self) -> Result<std::collections::HashMap<String, u64>> {
        Ok(
            reqwest::get(format!("http://127.0.0.1:{}/sessions", self.stats_port))
                .await?
                .json()
                .await?,
        )
    }

    /// RTSP sessions playing `path` now (0 when camsim cannot tell).
    pub async fn playing(&self, path: &str) -> u64 {
        self.sessions()
            .await
            .ok()
            .and_then(|s| s.get(path).copied())
            .unwrap_or(0)
    }

    /// SIGKILL, as a camera losing power.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    pub fn log_text(&self) -> String {
        self.proc.as_ref().map(Proc::log_text).unwrap_or_default()
    }
}
