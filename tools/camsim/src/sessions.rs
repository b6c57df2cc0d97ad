//! Counts the RTSP sessions playing each path and serves the counts as JSON over HTTP, so a
//! test can see how many clients pull a camera at any moment (a real camera's session limit).

use anyhow::Result;
use gstreamer_rtsp_server as rtsp_server;
use gstreamer_rtsp_server::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// path → ids of the clients playing it.
type Playing = Arc<Mutex<HashMap<String, HashSet<u64>>>>;

fn path_of(ctx: &rtsp_server::RTSPContext) -> Option<String> {
    let uri = ctx.uri()?.request_uri();
    // rtsp://host:port/path[/control]
    let after_host = uri.split("://").nth(1)?.split_once('/')?.1;
    after_host
        .trim_matches('/')
        .split('/')
        .next()
        .map(str::to_string)
}

/// Tracks PLAY, TEARDOWN and closed connections on `server`; serves the counts on `port`.
pub fn serve(server: &rtsp_server::RTSPServer, address: &str, port: u16) -> Result<()> {
    let playing: Playing = Arc::default();
    let next_id = Arc::new(AtomicU64::new(1));
    let p = playing.clone();
    server.connect_client_connected(move |_, client| {
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let on_play = p.clone();
        client.connect_play_request(move |_, ctx| {
            if let Some(path) = path_of(ctx) {
                on_play.lock().unwrap().entry(path).or_default().insert(id);
            }
        });
        let on_teardown = p.clone();
        client.connect_teardown_request(move |_, ctx| {
            if let Some(path) = path_of(ctx)
                && let Some(set) = on_teardown.lock().unwrap().get_mut(&path)
            {
                set.remove(&id);
            }
        });
        let on_closed = p.clone();
        client.connect_closed(move |_| {
            for set in on_closed.lock().unwrap().values_mut() {
                set.remove(&id);
            }
        });
    });
    let http = tiny_http::Server::http((address, port))
        .map_err(|e| anyhow::anyhow!("stats port {port}: {e}"))?;
    std::thread::spawn(move || {
        for req in http.incoming_requests() {
            let counts: HashMap<String, usize> = playing
                .lock()
                .unwrap()
                .iter()
                .map(|(path, ids)| (path.clone(), ids.len()))
                .collect();
            let body = serde_json::to_string(&counts).unwrap_or_default();
            let header = tiny_http::Header::from_bytes("content-type", "application/json")
                .expect("valid header");
            let _ = req.respond(tiny_http::Response::from_string(body).with_header(header));
        }
    });
    println!("camsim: sessions at http://{address}:{port}/sessions");
    Ok(())
}
