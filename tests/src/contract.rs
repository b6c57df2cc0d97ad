//! The API contract: signal's OpenAPI 3.1 document (`/api/v1/openapi.json`), against which
//! [`crate::api::Api`] checks every response a scenario test receives. A response whose status
//! is not documented for its operation, or whose JSON body does not match the documented
//! schema, fails the call.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

pub struct Contract {
    doc: Value,
}

impl Contract {
    pub async fn fetch(http: &reqwest::Client, base: &str) -> Result<Self> {
        let doc: Value = http
            .get(format!("{base}/api/v1/openapi.json"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        anyhow::ensure!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1")),
            "not an OpenAPI 3.1 document"
        );
        Ok(Self { doc })
    }

    /// The documented path template `path` (without query) falls under.
    fn template(&self, path: &str) -> Option<&str> {
        let want: Vec<&str> = path.split('/').collect();
        self.doc["paths"].as_object()?.keys().find_map(|t| {
            let have: Vec<&str> = t.split('/').collect();
            let same = have.len() == want.len()
                && have
                    .iter()
                    .zip(&want)
                    .all(|(h, w)| h == w || (h.starts_with('{') && h.ends_with('}')));
            same.then_some(t.as_str())
        })
    }

    /// Checks one response: its status is documented for the operation and its JSON body
    /// matches the documented schema. `path` is the full path (`/api/v1/…`, query allowed).
    pub fn check(&self, method: &str, path: &str, status: u16, body: &Value) -> Result<()> {
        let path = path.split('?').next().unwrap_or_default();
        let error_body = json!({"$ref": "#/components/schemas/ErrorBody"});
        let schema = match self.template(path) {
            None if status >= 400 => Some(error_body),
            None => bail!("{method} {path} answered {status} but is not in the API contract"),
            Some(t) => {
                let op = &self.doc["paths"][t][method.to_lowercase()];
                if !op.is_object() {
                    if status >= 400 {
                        return self.validate(&error_body, body, method, path, status);
                    }
                    bail!("{method} {t} is not in the API contract");
                }
                let res = &op["responses"][status.to_string()];
                if res.is_null() {
                    // Failures any endpoint can give (unavailable state, bad gateway, …) are
                    // all `ErrorBody`; a success must be documented.
                    if status >= 400 {
                        Some(error_body)
                    } else {
                        bail!("{method} {t}: status {status} is not documented");
                    }
                } else {
                    res["content"]["application/json"]["schema"].clone().into()
                }
            }
        };
        match schema {
            Some(Value::Null) | None => Ok(()),
            Some(s) => self.validate(&s, body, method, path, status),
        }
    }

    fn validate(
        &self,
        schema: &Value,
        body: &Value,
        method: &str,
        path: &str,
        status: u16,
    ) -> Result<()> {
        let mut root = schema.clone();
        root["components"] = self.doc["components"].clone();
        let validator = jsonschema::validator_for(&root).context("the contract's schema")?;
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        if !errors.is_empty() {
            bail!(
                "{method} {path} answered {status} with a body that breaks the API contract: {}\nbody: {body}",
                errors.join("; ")
            );
        }
        Ok(())
    }
}
