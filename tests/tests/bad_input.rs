//! Bad requests get a 4xx with a JSON error naming the problem, and change nothing.

use cloudcam_tests::Api;
use cloudcam_tests::stack::TestEnv;
use serde_json::{Value, json};

async fn raw(
    api: &Api,
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
    token: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let mut req = api
        .http
        .request(method.parse()?, format!("{}/api/v1{path}", api.base))
        .header("content-type", content_type)
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await?;
    let status = res.status().as_u16();
    let text = res.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

fn assert_error(what: &str, got: &(u16, Value), status: u16, code: &str, mentions: &str) {
    let (s, body) = got;
    assert_eq!(*s, status, "{what}: {body}");
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains(mentions),
        "{what}: message {message:?} should mention {mentions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_json_errors() -> anyhow::Result<()> {
    let env = TestEnv::new("bad_input")?;
    let kafka = env.kafka().await?;
    let redis = env.redis().await?;
    let janus = env.janus().await?;
    let signal = env.signal(Some(&kafka), Some(&redis), &janus, None).await?;
    let api = Api::login(&signal.base).await?;
    let t = Some(api.token.as_str());
    let json_ct = "application/json";

    let got = raw(
        &api,
        "POST",
        "/cameras",
        json_ct,
        b"{\"name\": \"x\", ".to_vec(),
        t,
    )
    .await?;
    assert_error("malformed JSON", &got, 400, "malformed_json", "JSON");

    let got = raw(
        &api,
        "POST",
        "/cameras",
        json_ct,
        br#"{"name": "x"}"#.to_vec(),
        t,
    )
    .await?;
    assert_error("missing url", &got, 400, "invalid_field", "url");

    let got = raw(
        &api,
        "POST",
        "/cameras",
        json_ct,
        br#"{"name": "x", "url": 5}"#.to_vec(),
        t,
    )
    .await?;
    assert_error("url of the wrong type", &got, 400, "invalid_field", "url");

    let got = api
        .call(
            "POST",
            "/cameras",
            Some(json!({"name": "x", "url": "http://cam/stream"})),
        )
        .await?;
    assert_error("http URL", &got, 400, "invalid_url", "rtsp://");

    let got = api
        .call(
            "POST",
            "/cameras",
            Some(json!({"name": "x", "url": "not a url"})),
        )
        .await?;
    assert_error("no URL at all", &got, 400, "invalid_url", "url");

    // A substream is pulled with the camera's credentials: one of its own is refused, and the
    // answer does not repeat it.
    let got = api
        .call(
            "POST",
            "/cameras",
            Some(json!({"name": "x", "url": "rtsp://cam/main", "sub_url": "rtsp://u:hunter2@cam/sub"})),
        )
        .await?;
    assert_error(
        "credentials in sub_url",
        &got,
        400,
        "invalid_sub_url",
        "credentials",
    );
    assert!(!got.1.to_string().contains("hunter2"), "{}", got.1);
    let got = api
        .call(
            "POST",
            "/cameras",
            Some(json!({"name": "x", "url": "rtsp://cam/main", "sub_url": "http://cam/sub"})),
        )
        .await?;
    assert_error("http sub_url", &got, 400, "invalid_sub_url", "sub_url");

    let got = api
        .call(
            "POST",
            "/cameras",
            Some(json!({"name": "  ", "url": "rtsp://cam/x"})),
        )
        .await?;
    assert_error("blank name", &got, 400, "invalid_name", "name");

    let got = api
        .call(
            "POST",
            "/cameras",
            Some(json!({"name": "x", "url": "rtsp://cam/x", "colour": "red"})),
        )
        .await?;
    assert_error("unknown field", &got, 400, "invalid_field", "colour");

    let big = format!(
        r#"{{"name": "x", "url": "rtsp://cam/x", "username": "{}"}}"#,
        "a".repeat(200_000)
    );
    let got = raw(&api, "POST", "/cameras", json_ct, big.into_bytes(), t).await?;
    assert_error("oversized body", &got, 413, "body_too_large", "larger than");

    let got = raw(&api, "POST", "/cameras", "text/plain", b"hello".to_vec(), t).await?;
    assert_error(
        "not JSON",
        &got,
        400,
        "bad_content_type",
        "application/json",
    );

    let got = api.call("GET", "/cameras/nope", None).await?;
    assert_error("unknown camera", &got, 404, "camera_not_found", "nope");
    let got = api
        .call("PATCH", "/cameras/nope", Some(json!({"name": "y"})))
        .await?;
    assert_error(
        "patch unknown camera",
        &got,
        404,
        "camera_not_found",
        "nope",
    );
    let got = api.call("DELETE", "/cameras/nope", None).await?;
    assert_error(
        "delete unknown camera",
        &got,
        404,
        "camera_not_found",
        "nope",
    );

    let got = raw(&api, "GET", "/cameras", json_ct, Vec::new(), None).await?;
    assert_error("no token", &got, 401, "unauthorized", "token");
    let got = raw(&api, "GET", "/cameras", json_ct, Vec::new(), Some("forged")).await?;
    assert_error("forged token", &got, 401, "unauthorized", "token");
    let got = raw(&api, "GET", "/ws", json_ct, Vec::new(), None).await?;
    assert_error(
        "websocket without token",
        &got,
        401,
        "unauthorized",
        "token",
    );
    let got = raw(
        &api,
        "POST",
        "/login",
        json_ct,
        br#"{"username": "admin", "password": "guess"}"#.to_vec(),
        None,
    )
    .await?;
    assert_error("wrong sign-in", &got, 401, "bad_credentials", "password");

    // Nothing was created by any of that.
    let (status, list) = api.call("GET", "/cameras", None).await?;
    assert_eq!(status, 200);
    assert_eq!(list, json!([]));
    Ok(())
}
