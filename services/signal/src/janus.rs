//! A typed client of the Janus gateway's HTTP API, and the streaming-plugin requests cloudcam
//! uses. Only this module speaks Janus's wire format.

use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

pub const STREAMING: &str = "janus.plugin.streaming";

#[derive(Debug, thiserror::Error)]
pub enum JanusError {
    /// Without the request's URL (it names the gateway's internal address and session).
    #[error("cannot reach Janus: {0}")]
    Http(reqwest::Error),
    #[error("Janus error {code}: {reason}")]
    Janus { code: i64, reason: String },
    #[error("streaming plugin error {code}: {reason}")]
    Plugin { code: i64, reason: String },
    #[error("unexpected Janus reply: {0}")]
    Unexpected(String),
}

impl From<reqwest::Error> for JanusError {
    fn from(e: reqwest::Error) -> Self {
        Self::Http(e.without_url())
    }
}

/// Every reply and event of the Janus API that cloudcam looks at, tagged by `janus`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "janus", rename_all = "lowercase")]
pub enum Reply {
    Success {
        #[serde(default)]
        data: Option<Value>,
        #[serde(default)]
        plugindata: Option<PluginData>,
    },
    Ack,
    Error {
        error: ErrorBody,
    },
    Event {
        #[serde(default)]
        plugindata: Option<PluginData>,
        #[serde(default)]
        jsep: Option<Jsep>,
    },
    Webrtcup,
    Media {
        #[serde(default)]
        receiving: bool,
    },
    Hangup {
        #[serde(default)]
        reason: String,
    },
    Slowlink,
    Detached,
    Keepalive,
    Timeout,
    Trickle,
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ErrorBody {
    pub code: i64,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PluginData {
    #[serde(default)]
    pub data: Value,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
pub struct Jsep {
    #[serde(rename = "type")]
    pub kind: String,
    pub sdp: String,
}

impl PluginData {
    /// The plugin's own error, if its data carries one.
    fn error(&self) -> Option<JanusError> {
        let code = self.data.get("error_code")?.as_i64()?;
        let reason = self.data.get("error").and_then(Value::as_str).unwrap_or("");
        Some(JanusError::Plugin {
            code,
            reason: reason.to_string(),
        })
    }
}

/// A Janus gateway, addressed by the URL of its HTTP API.
#[derive(Clone)]
pub struct Janus {
    http: reqwest::Client,
    url: String,
    /// The gateway's `api_secret` (empty: none), sent with every request.
    api_secret: String,
}

impl Janus {
    pub fn new(url: &str, api_secret: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(40))
            .build()
            .expect("HTTP client");
        Self {
            http,
            url: url.trim_end_matches('/').to_string(),
            api_secret: api_secret.to_string(),
        }
    }

    async fn post(&self, path: &str, mut body: Value) -> Result<Reply, JanusError> {
        body["transaction"] = json!(cloudcam_core::random_hex(8));
        if !self.api_secret.is_empty() {
            body["apisecret"] = json!(self.api_secret);
        }
        let reply: Reply = self
            .http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .timeout(Duration::from_secs(10))
            .send()
            .await?
            .json()
            .await?;
        match reply {
            Reply::Error { error } => Err(JanusError::Janus {
                code: error.code,
                reason: error.reason,
            }),
            other => Ok(other),
        }
    }

    /// Creates a session and attaches the streaming plugin.
    pub async fn open(&self) -> Result<Handle, JanusError> {
        let session = id_of(self.post("", json!({"janus": "create"})).await?)?;
        let reply = self
            .post(
                &format!("/{session}"),
                json!({"janus": "attach", "plugin": STREAMING}),
            )
            .await;
        match reply.and_then(id_of) {
            Ok(handle) => Ok(Handle {
                janus: self.clone(),
                session,
                handle,
            }),
            Err(e) => {
                let _ = self
                    .post(&format!("/{session}"), json!({"janus": "destroy"}))
                    .await;
                Err(e)
            }
        }
    }
}

fn id_of(reply: Reply) -> Result<u64, JanusError> {
    match reply {
        Reply::Success { data: Some(d), .. } => d
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| JanusError::Unexpected(d.to_string())),
        other => Err(JanusError::Unexpected(format!("{other:?}"))),
    }
}

/// A session with the streaming plugin attached.
#[derive(Clone)]
pub struct Handle {
    janus: Janus,
    pub session: u64,
    pub handle: u64,
}

impl Handle {
    /// A synchronous plugin request (create, destroy, list, info): its plugin data.
    pub async fn request(&self, body: Value) -> Result<Value, JanusError> {
        let reply = self.message(body, None).await?;
        match reply {
            Reply::Success {
                plugindata: Some(pd),
                ..
            } => match pd.error() {
                Some(e) => Err(e),
                None => Ok(pd.data),
            },
            other => Err(JanusError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Sends a plugin message (with an optional JSEP); asynchronous ones answer `Ack`.
    pub async fn message(&self, body: Value, jsep: Option<&Jsep>) -> Result<Reply, JanusError> {
        let mut msg = json!({"janus": "message", "body": body});
        if let Some(jsep) = jsep {
            msg["jsep"] = json!(jsep);
        }
        self.janus
            .post(&format!("/{}/{}", self.session, self.handle), msg)
            .await
    }

    /// Forwards a browser's ICE candidate; `None` ends gathering.
    pub async fn trickle(&self, candidate: Option<Value>) -> Result<(), JanusError> {
        let body = match candidate {
            Some(c) => json!({"janus": "trickle", "candidate": c}),
            None => json!({"janus": "trickle", "candidate": {"completed": true}}),
        };
        self.janus
            .post(&format!("/{}/{}", self.session, self.handle), body)
            .await
            .map(|_| ())
    }

    /// Waits (long poll, up to ~30 s) for the session's next events.
    pub async fn poll(&self) -> Result<Vec<Reply>, JanusError> {
        let mut req = self
            .janus
            .http
            .get(format!("{}/{}", self.janus.url, self.session))
            .query(&[("maxev", "10")]);
        if !self.janus.api_secret.is_empty() {
            req = req.query(&[("apisecret", &self.janus.api_secret)]);
        }
        let res = req.send().await?;
        let value: Value = res.json().await?;
        let items = match value {
            Value::Array(items) => items,
            single => vec![single],
        };
        items
            .into_iter()
            .map(|v| serde_json::from_value(v).map_err(|e| JanusError::Unexpected(e.to_string())))
            .map(|r| match r {
                Ok(Reply::Error { error }) => Err(JanusError::Janus {
                    code: error.code,
                    reason: error.reason,
                }),
                other => other,
            })
            .collect()
    }

    /// Destroys the session (and with it the handle and any PeerConnection).
    pub async fn destroy(&self) -> Result<(), JanusError> {
        self.janus
            .post(&format!("/{}", self.session), json!({"janus": "destroy"}))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies_recorded_from_janus() {
        // Shapes as Janus 1.1.2 sends them.
        let offer: Reply = serde_json::from_str(
            r#"{"janus":"event","session_id":1,"transaction":"t","sender":2,
                "plugindata":{"plugin":"janus.plugin.streaming","data":{"streaming":"event","result":{"status":"preparing"}}},
                "jsep":{"type":"offer","sdp":"v=0\r\n"}}"#,
        )
        .unwrap();
        match offer {
            Reply::Event { jsep: Some(j), .. } => assert_eq!(j.kind, "offer"),
            other => panic!("{other:?}"),
        }
        let err: Reply = serde_json::from_str(
            r#"{"janus":"error","session_id":1,"transaction":"t","error":{"code":458,"reason":"No such session 1"}}"#,
        )
        .unwrap();
        assert!(matches!(err, Reply::Error { error } if error.code == 458));
        let other: Reply = serde_json::from_str(r#"{"janus":"server_info"}"#).unwrap();
        assert!(matches!(other, Reply::Other));
    }

    #[test]
    fn plugin_errors_are_errors() {
        let pd = PluginData {
            data: json!({"streaming":"event","error_code":455,"error":"No such mountpoint/stream 9"}),
        };
        assert!(matches!(
            pd.error(),
            Some(JanusError::Plugin { code: 455, .. })
        ));
    }
}
