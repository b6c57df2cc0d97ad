//! Users, roles and per-camera shares, driven from outside (REST and WebSocket) on the real
//! platform: an administrator, a member M who owns cameras A and B and shares A with a viewer
//! V for live only. Every endpoint and WebSocket message is checked for each; revoking a share,
//! disabling a user, changing a password and signing out everywhere take effect on open
//! WebSockets within a second.

use cloudcam_tests::stack::TestEnv;
use cloudcam_tests::{Api, Browser, WsClient};
use serde_json::{Value, json};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const M_PASSWORD: &str = "member-password-1";
const V_PASSWORD: &str = "viewer-password-1";
/// How soon a revocation reaches an open WebSocket.
const REVOKED_WITHIN: Duration = Duration::from_secs(1);

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap_or_default().to_string()
}

/// Asserts `(status, body)` is an error with `code`.
fn refused(what: &str, got: (u16, Value), status: u16, code: &str) {
    assert_eq!(got.0, status, "{what}: {}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{what}: {}", got.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_account_sees_and_does_only_what_it_may() -> anyhow::Result<()> {
    let env = TestEnv::new("access")?;
    let camsim = env
        .camsim(
            &[
                "a:width=320,height=240,fps=15,gop=15",
                "b:width=320,height=240,fps=15,gop=15",
            ],
            None,
        )
        .await?;
    let p = env.platform().await?;
    let base = &p.signal.base;
    let admin = Api::login(base).await?;
    for (name, password, role) in [("m", M_PASSWORD, "member"), ("v", V_PASSWORD, "viewer")] {
        let (status, body) = admin
            .call(
                "POST",
                "/users",
                Some(json!({"name": name, "password": password, "role": role})),
            )
            .await?;
        assert_eq!(status, 201, "{body}");
        assert!(body.get("password").is_none() && body.get("hash").is_none());
    }
    let m = Api::login_as(base, "m", M_PASSWORD).await?;
    let v = Api::login_as(base, "v", V_PASSWORD).await?;

    // Sockets first, so they see the cameras' statuses from the start.
    let mut v_ws = WsClient::connect(base, &v.token).await?;
    let mut admin_ws = WsClient::connect(base, &admin.token).await?;
    let a = id_of(
        &m.create_camera(json!({"name": "A", "url": camsim.url("a"), "always_on": true}))
            .await?,
    );
    let (status, shares) = m
        .call(
            "PUT",
            &format!("/cameras/{a}/shares/v"),
            Some(json!({"live": true})),
        )
        .await?;
    assert_eq!(status, 200, "{shares}");
    assert_eq!(
        shares,
        json!([{"user": "v", "live": true, "playback": false, "manage": false}])
    );
    let b = id_of(
        &m.create_camera(json!({"name": "B", "url": camsim.url("b"), "always_on": true}))
            .await?,
    );

    // V hears A go live; B's statuses reach the administrator and never V.
    let seen_by_v = Mutex::new(Vec::<Value>::new());
    let live = |id: &str, msg: &Value| {
        msg["type"] == "camera_status" && msg["camera_id"] == id && msg["status"]["state"] == "live"
    };
    v_ws.next_where(Duration::from_secs(30), |msg| {
        seen_by_v.lock().unwrap().push(msg.clone());
        live(&a, msg)
    })
    .await?;
    admin_ws
        .next_where(Duration::from_secs(30), |msg| live(&b, msg))
        .await?;
    v_ws.send(json!({"type": "watch", "camera_id": b})).await?;
    let refusal = v_ws
        .next_where(Duration::from_secs(10), |msg| {
            seen_by_v.lock().unwrap().push(msg.clone());
            msg["type"] == "error" || msg["type"] == "offer"
        })
        .await?;
    assert_eq!(refusal["type"], "error", "V was offered B: {refusal}");
    assert_eq!(refusal["code"], "camera_not_found", "{refusal}");
    {
        let seen = seen_by_v.lock().unwrap();
        let leaked: Vec<&Value> = seen
            .iter()
            // The refusal names the camera V asked for (its own request echoed): nothing else
            // may.
            .filter(|msg| msg["camera_id"] == b.as_str() && msg["type"] != "error")
            .collect();
        assert!(leaked.is_empty(), "V received B's messages: {leaked:?}");
    }
    // V watches A.
    let view = v_ws.watch(&a).await?;

    // REST, as V: A only, live only; B does not exist.
    let (status, list) = v.call("GET", "/cameras", None).await?;
    assert_eq!(status, 200);
    let ids: Vec<String> = list.as_array().unwrap().iter().map(id_of).collect();
    assert_eq!(ids, std::slice::from_ref(&a), "V lists {list}");
    assert_eq!(
        list[0]["access"],
        json!({"live": true, "playback": false, "manage": false})
    );
    assert_eq!(list[0]["owner"], "m");
    let range = "from=0&to=1000";
    for (method, path) in [
        ("GET", format!("/cameras/{b}")),
        ("PATCH", format!("/cameras/{b}")),
        ("DELETE", format!("/cameras/{b}")),
        ("GET", format!("/cameras/{b}/recordings?{range}")),
        ("GET", format!("/cameras/{b}/clip?{range}")),
        ("GET", format!("/cameras/{b}/snapshot")),
        ("POST", format!("/cameras/{b}/snapshot")),
        ("GET", format!("/cameras/{b}/shares")),
        ("PUT", format!("/cameras/{b}/shares/v")),
    ] {
        let body = matches!(method, "PATCH" | "PUT").then(|| json!({"name": "x"}));
        let body = if method == "PUT" {
            Some(json!({"live": true}))
        } else {
            body
        };
        refused(
            &format!("V: {method} {path}"),
            v.call(method, &path, body).await?,
            404,
            "camera_not_found",
        );
    }
    let (status, got) = v.call("GET", &format!("/cameras/{a}"), None).await?;
    assert_eq!((status, got["id"].as_str()), (200, Some(a.as_str())));
    for (method, path, body) in [
        ("GET", format!("/cameras/{a}/recordings?{range}"), None),
        ("GET", format!("/cameras/{a}/clip?{range}"), None),
        ("GET", format!("/cameras/{a}/snapshot"), None),
        ("POST", format!("/cameras/{a}/snapshot"), None),
        (
            "PATCH",
            format!("/cameras/{a}"),
            Some(json!({"name": "mine"})),
        ),
        ("DELETE", format!("/cameras/{a}"), None),
        ("GET", format!("/cameras/{a}/shares"), None),
        (
            "PUT",
            format!("/cameras/{a}/shares/v"),
            Some(json!({"live": true, "manage": true})),
        ),
        (
            "POST",
            "/cameras".to_string(),
            Some(json!({"name": "V's", "url": camsim.url("a")})),
        ),
        ("GET", "/workers".to_string(), None),
        ("GET", "/users".to_string(), None),
        (
            "POST",
            "/users".to_string(),
            Some(json!({"name": "x", "password": "long-enough-1", "role": "admin"})),
        ),
        (
            "PATCH",
            "/users/v".to_string(),
            Some(json!({"role": "admin"})),
        ),
    ] {
        refused(
            &format!("V: {method} {path}"),
            v.call(method, &path, body).await?,
            403,
            "forbidden",
        );
    }

    // As M: both cameras, everything with them; no workers, no users.
    let (_, list) = m.call("GET", "/cameras", None).await?;
    let mut ids: Vec<String> = list.as_array().unwrap().iter().map(id_of).collect();
    ids.sort();
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(ids, both);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|c| c["access"] == json!({"live": true, "playback": true, "manage": true}))
    );
    for (method, path) in [
        ("GET", "/workers"),
        ("GET", "/users"),
        ("PATCH", "/users/v"),
    ] {
        let body = (method == "PATCH").then(|| json!({"disabled": true}));
        refused(
            &format!("M: {method} {path}"),
            m.call(method, path, body).await?,
            403,
            "forbidden",
        );
    }
    let (status, recs) = m
        .call("GET", &format!("/cameras/{a}/recordings?{range}"), None)
        .await?;
    assert_eq!(status, 200, "{recs}");
    // The administrator sees everything.
    let (_, list) = admin.call("GET", "/cameras", None).await?;
    assert_eq!(list.as_array().unwrap().len(), 2);
    let (status, _) = admin.call("GET", "/workers", None).await?;
    assert_eq!(status, 200);
    let (status, users) = admin.call("GET", "/users", None).await?;
    assert_eq!(status, 200);
    assert_eq!(users.as_array().unwrap().len(), 3, "{users}");

    // The web UI shows V only A, and only what V may do with it: watch.
    let browser = Browser::launch(&env.dir).await?;
    browser.sign_in_as(base, "v", V_PASSWORD).await?;
    browser
        .wait_element(&format!(".camera[data-id='{a}']"), Duration::from_secs(10))
        .await?;
    let ui: Value = browser
        .eval(
            "({cards: document.querySelectorAll('.camera').length, \
              buttons: [...document.querySelectorAll('.camera .actions button')].map(b => b.className), \
              users: !document.getElementById('users-open').hidden, \
              add: !document.getElementById('add-form').hidden})",
        )
        .await?;
    assert_eq!(
        ui,
        json!({"cards": 1, "buttons": ["watch"], "users": false, "add": false}),
        "what V's UI offers"
    );
    browser.close().await;

    // Revoking V's share ends V's running view of A within a second.
    let revoked = Instant::now();
    let (status, shares) = m
        .call("DELETE", &format!("/cameras/{a}/shares/v"), None)
        .await?;
    assert_eq!((status, shares), (200, json!([])));
    let ended = v_ws
        .next_where(REVOKED_WITHIN, |msg| {
            msg["type"] == "view_state" && msg["view_id"] == view && msg["state"] == "ended"
        })
        .await?;
    println!(
        "share revoked -> view ended in {} ms: {ended}",
        revoked.elapsed().as_millis()
    );
    refused(
        "V after the revocation",
        v.call("GET", &format!("/cameras/{a}"), None).await?,
        404,
        "camera_not_found",
    );
    let (_, list) = v.call("GET", "/cameras", None).await?;
    assert_eq!(list, json!([]));

    // Disabling V closes V's socket within a second and voids V's token; enabling V again
    // does not bring the old token back.
    let t = Instant::now();
    let (status, body) = admin
        .call("PATCH", "/users/v", Some(json!({"disabled": true})))
        .await?;
    assert_eq!(status, 200, "{body}");
    assert!(
        v_ws.closed_within(REVOKED_WITHIN).await,
        "V's socket stayed open"
    );
    println!(
        "user disabled -> socket closed in {} ms",
        t.elapsed().as_millis()
    );
    refused(
        "V disabled",
        v.call("GET", "/me", None).await?,
        401,
        "unauthorized",
    );
    let login = json!({"username": "v", "password": V_PASSWORD});
    let res = reqwest::Client::new()
        .post(format!("{base}/api/v1/login"))
        .json(&login)
        .send()
        .await?;
    assert_eq!(res.status(), 401, "a disabled user signed in");
    admin
        .call("PATCH", "/users/v", Some(json!({"disabled": false})))
        .await?;
    refused(
        "V's old token",
        v.call("GET", "/me", None).await?,
        401,
        "unauthorized",
    );

    // V changes their own password: the old token and open sockets go.
    let v = Api::login_as(base, "v", V_PASSWORD).await?;
    let mut v_ws = WsClient::connect(base, &v.token).await?;
    refused(
        "a wrong current password",
        v.call(
            "POST",
            "/me/password",
            Some(json!({"current": "nope-nope", "new": "viewer-password-2"})),
        )
        .await?,
        403,
        "forbidden",
    );
    let (status, body) = v
        .call(
            "POST",
            "/me/password",
            Some(json!({"current": V_PASSWORD, "new": "viewer-password-2"})),
        )
        .await?;
    assert_eq!(status, 204, "{body}");
    assert!(v_ws.closed_within(REVOKED_WITHIN).await);
    refused(
        "V's token",
        v.call("GET", "/me", None).await?,
        401,
        "unauthorized",
    );
    let v = Api::login_as(base, "v", "viewer-password-2").await?;
    let (_, me) = v.call("GET", "/me", None).await?;
    assert_eq!(me, json!({"user": "v", "role": "viewer"}));

    // An administrator resets M's password and signs M out everywhere.
    let mut m_ws = WsClient::connect(base, &m.token).await?;
    let (status, _) = admin.call("POST", "/users/m/signout", None).await?;
    assert_eq!(status, 204);
    assert!(m_ws.closed_within(REVOKED_WITHIN).await);
    refused(
        "M's token",
        m.call("GET", "/cameras", None).await?,
        401,
        "unauthorized",
    );
    let (status, _) = admin
        .call(
            "PATCH",
            "/users/m",
            Some(json!({"password": "member-password-2"})),
        )
        .await?;
    assert_eq!(status, 200);
    assert!(Api::login_as(base, "m", M_PASSWORD).await.is_err());
    let m = Api::login_as(base, "m", "member-password-2").await?;
    let (_, list) = m.call("GET", "/cameras", None).await?;
    assert_eq!(list.as_array().unwrap().len(), 2, "M's cameras stay M's");

    // The user passwords appear nowhere: not in responses above, not in signal's log.
    let log = p.signal.log_text();
    for secret in [
        M_PASSWORD,
        V_PASSWORD,
        "viewer-password-2",
        "member-password-2",
    ] {
        assert!(!log.contains(secret), "a user password in signal's log");
    }
    Ok(())
}
