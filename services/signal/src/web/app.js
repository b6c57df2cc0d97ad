// cloudcam web UI: sign in, list cameras with live status, add/rename/delete/share cameras, watch
// one live over WebRTC (full resolution, or its substream), a live wall of every camera (their
// substreams where they have them), users (administrators). All signalling goes through signal's WebSocket;
// the page never talks to Janus. The token travels only in the Authorization header: where the
// browser cannot send one (<img>, <video>, the WebSocket) it uses a short-lived signed URL.
"use strict";

const $ = (id) => document.getElementById(id);
// `unsent`: messages sent before the WebSocket opened (a Watch clicked as the page loads).
const state = { token: localStorage.getItem("cloudcam.token"), me: null, cameras: new Map(), sites: new Map(), ws: null, unsent: [], view: null, muted: true, tiles: new Map(), wall: false, snapshotEpoch: 0, rec: null, signed: new Map() };
// Snapshots on the camera list refresh every 30 s.
setInterval(() => { state.snapshotEpoch += 1; if (state.token && !$("main-view").hidden) render(); }, 30000);

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(`/api/v1${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 401 && path !== "/login") { signOut(); throw new Error("session expired"); }
  if (res.status === 204) return null;
  const data = await res.json();
  if (!res.ok) throw new Error(data.error ? data.error.message : res.statusText);
  return data;
}

// A signed URL for `path` (cached until a minute before it expires).
async function signed(path) {
  const hit = state.signed.get(path);
  if (hit && hit.expires_at_ms - 60000 > Date.now()) return hit.url;
  const fresh = await api("POST", "/signed-urls", { path });
  state.signed.set(path, fresh);
  return fresh.url;
}

function show(signedIn) {
  $("login-view").hidden = signedIn;
  $("main-view").hidden = !signedIn;
  $("logout").hidden = !signedIn;
  $("account").hidden = !signedIn;
  $("users-open").hidden = !signedIn || !state.me || state.me.role !== "admin";
  $("add-form").hidden = !signedIn || !state.me || state.me.role === "viewer";
  $("sites-section").hidden = !signedIn || !state.me || state.me.role === "viewer";
}

function signOut() {
  hidePushCredential();
  localStorage.removeItem("cloudcam.token");
  state.token = null;
  state.me = null;
  state.signed.clear();
  state.unsent = [];
  if (state.wall) closeWall(false);
  if (state.ws) state.ws.close();
  show(false);
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("login-error").textContent = "";
  try {
    const res = await fetch("/api/v1/login", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: $("login-user").value, password: $("login-password").value }),
    });
    const data = await res.json();
    if (!res.ok) throw new Error(data.error.message);
    state.token = data.token;
    localStorage.setItem("cloudcam.token", data.token);
    await start();
  } catch (err) { $("login-error").textContent = err.message; }
});

$("logout").addEventListener("click", async () => { try { await api("POST", "/logout"); } catch (_) {} signOut(); });

$("add-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("add-error").textContent = "";
  const site = $("add-site").value;
  const push = !site && $("add-push").checked;
  const body = push ? { name: $("add-name").value, push } : { name: $("add-name").value, url: $("add-url").value };
  if (site) body.site = site;
  const pulled = !push && !site;
  if (pulled && $("add-sub-url").value) body.sub_url = $("add-sub-url").value;
  if (pulled && $("add-username").value) body.username = $("add-username").value;
  if (pulled && $("add-password").value) body.password = $("add-password").value;
  body.recording = $("add-recording").checked;
  body.always_on = $("add-always-on").checked;
  body.retention_hours = Number($("add-retention").value || 0);
  try {
    const cam = await api("POST", "/cameras", body);
    // Its first status may have come over the WebSocket before this reply.
    const known = state.cameras.get(cam.id);
    if (known) cam.status = known.status;
    state.cameras.set(cam.id, cam);
    e.target.reset();
    showPull();
    render();
    if (cam.push_credential) showPushCredential(cam);
  } catch (err) { $("add-error").textContent = err.message; }
});

// A pushed camera has no URL or credentials of its own to give; a camera on a site has its URL
// there, and its credentials stay on the site (in the agent's configuration).
const showPull = () => {
  const site = $("add-site").value;
  const push = !site && $("add-push").checked;
  $("add-push-label").hidden = !!site;
  $("add-pull").hidden = push;
  $("add-url").required = !push;
  $("add-pull-extra").hidden = !!site;
  $("add-url-hint").textContent = site ? "(its address on the site, without credentials)" : "";
};
$("add-push").addEventListener("change", showPull);
$("add-site").addEventListener("change", showPull);

// Sites and their agents (refreshed every few seconds: an agent's presence is not an event).
async function loadSites() {
  if (!state.token || !state.me || state.me.role === "viewer") return;
  try {
    const sites = await api("GET", "/sites");
    state.sites = new Map(sites.map((s) => [s.id, s]));
  } catch (_) { return; }
  renderSites();
  render();
}
setInterval(loadSites, 3000);

const bitrate = (bps) => bps >= 1e6 ? `${(bps / 1e6).toFixed(1)} Mb/s` : `${Math.round(bps / 1e3)} kb/s`;

function renderSites() {
  const list = $("sites");
  list.replaceChildren();
  $("sites-section").hidden = !state.me || state.me.role === "viewer";
  const select = $("add-site");
  const chosen = select.value;
  select.replaceChildren(new Option("Reachable from the cloud", ""));
  for (const site of state.sites.values()) {
    select.appendChild(new Option(`On site ${site.name} (its edge agent pushes it)`, site.id));
    const row = document.createElement("div");
    row.className = "site card";
    row.dataset.id = site.id;
    const a = site.agent;
    const status = site.online
      ? `<span class="badge live site-online">agent online</span><span class="meta"> v${a.version} · from ${a.address} · pushing ${a.pushing.length} of ${site.cameras.length} cameras · uplink ${bitrate(a.uplink_bps)}</span>`
      : `<span class="badge offline site-offline">${site.enrolled ? "agent offline" : "no agent enrolled"}</span><span class="meta"> ${site.cameras.length} cameras</span>`;
    row.innerHTML = `<div class="name"></div><div>${status}</div><div class="reason"></div><div class="actions">
      <button class="site-enroll">New enrollment</button><button class="site-revoke">Revoke agent</button><button class="site-delete">Delete</button></div>`;
    row.querySelector(".name").textContent = site.name;
    const failing = a ? Object.entries(a.failing || {}) : [];
    row.querySelector(".reason").textContent = failing.map(([id, why]) => `${(state.cameras.get(id) || { name: id }).name}: ${why}`).join(" · ");
    row.querySelector(".site-revoke").hidden = !site.enrolled;
    row.querySelector(".site-enroll").addEventListener("click", async () => {
      if (site.enrolled && !confirm(`A new agent enrolled for ${site.name} replaces the current one. Go on?`)) return;
      try { showEnrollment(await api("POST", `/sites/${site.id}/enrollment`)); } catch (err) { alert(err.message); }
    });
    row.querySelector(".site-revoke").addEventListener("click", async () => {
      if (!confirm(`Revoke the agent of ${site.name}? Its cameras go offline until a new agent is enrolled.`)) return;
      try { await api("POST", `/sites/${site.id}/revoke`); loadSites(); } catch (err) { alert(err.message); }
    });
    row.querySelector(".site-delete").addEventListener("click", async () => {
      if (!confirm(`Delete the site ${site.name}?`)) return;
      try { await api("DELETE", `/sites/${site.id}`); loadSites(); } catch (err) { alert(err.message); }
    });
    list.appendChild(row);
  }
  select.value = state.sites.has(chosen) ? chosen : "";
}

$("site-add").addEventListener("click", async () => {
  const name = prompt("Name of the site (a shop, a home, a building)");
  if (!name) return;
  try { showEnrollment(await api("POST", "/sites", { name })); loadSites(); } catch (err) { alert(err.message); }
});

// An enrollment token is in the one answer that made it.
function showEnrollment(site) {
  $("enroll-site").textContent = site.name;
  $("enroll-command").textContent = site.enrollment.command;
  $("enroll-info").hidden = false;
}
$("enroll-done").addEventListener("click", () => { $("enroll-command").textContent = ""; $("enroll-info").hidden = true; });

// A push credential is in the one answer that made it: shown until the user says they have it.
function showPushCredential(cam) {
  const url = cam.status.push_url || `rtsp://<ingest worker>/push/${cam.id}`;
  const { username, password } = cam.push_credential;
  $("push-camera").textContent = cam.name;
  $("push-url").textContent = url;
  $("push-user").textContent = username;
  $("push-password").textContent = password;
  const withAuth = url.replace(/^(rtsps?):\/\//, `$1://${username}:${password}@`);
  $("push-example").textContent = `ffmpeg -re -i input.mp4 -c copy -f rtsp -rtsp_transport tcp ${withAuth}`;
  $("push-info").hidden = false;
  delete cam.push_credential;
}
function hidePushCredential() {
  for (const id of ["push-url", "push-user", "push-password", "push-example"]) $(id).textContent = "";
  $("push-info").hidden = true;
}
$("push-done").addEventListener("click", hidePushCredential);

function render() {
  const grid = $("cameras");
  grid.replaceChildren();
  $("no-cameras").hidden = state.cameras.size > 0;
  for (const cam of state.cameras.values()) {
    const card = document.createElement("div");
    card.className = "camera";
    card.dataset.id = cam.id;
    // A camera on a site whose agent is away cannot be reached, whatever its worker last said.
    const site = cam.site && state.sites.get(cam.site);
    const st = site && !site.online
      ? { ...cam.status, state: "offline", reason: `the edge agent of site ${site.name} is not connected; the camera comes back when it is` }
      : cam.status;
    card.dataset.state = st.state;
    const extra = st.state === "live" ? ` · ${st.width}×${st.height} · ${st.fps} fps` : "";
    card.innerHTML = `<img class="snapshot" alt=""><div class="name"></div><div class="url"></div>
      <div><span class="badge ${st.state}">${st.state.replace("_", " ")}</span>${cam.recording ? '<span class="badge rec">REC</span>' : ""}<span class="meta">${extra}</span></div>
      <div class="reason"></div><div class="served"></div>
      <div class="actions"></div>`;
    // Only what the user may do with this camera.
    const can = cam.access;
    const actions = card.querySelector(".actions");
    const button = (cls, label, allowed) => {
      if (!allowed) return;
      const b = document.createElement("button");
      b.className = cls; b.textContent = label;
      actions.appendChild(b);
    };
    // A camera whose video no browser here can play (H.265) is watched through its substream;
    // without one it is recorded, not watched.
    const watchable = can.live && (playable(st) || !!cam.sub_url);
    button("watch", "Watch", watchable);
    button("recordings", "Recordings", can.playback);
    button("record", cam.recording ? "Stop recording" : "Record", can.manage);
    button("push-credential", "New push credential", can.manage && cam.push && !cam.site);
    button("rename", "Rename", can.manage);
    button("share", "Share", can.manage);
    button("delete", "Delete", can.manage);
    card.querySelector(".name").textContent = cam.name;
    card.querySelector(".url").textContent = cam.site
      ? `on site ${site ? site.name : cam.site}: ${cam.url}`
      : cam.push
      ? `pushes to ${st.push_url || "its ingest worker"}`
      : cam.url + (cam.sub_url ? ` · substream ${cam.sub_url}` : "") + (cam.username ? ` (as ${cam.username})` : "");
    const by = cam.served_by || {};
    const unavailable = by.gateway_error || (!watchable && st.live_unavailable);
    card.querySelector(".reason").textContent = unavailable ? `live view unavailable: ${unavailable}` : st.reason;
    card.querySelector(".served").textContent = [
      by.ingest && `ingest ${by.ingest}`, by.gateway && `gateway ${by.gateway}`, by.recorder && `recorder ${by.recorder}`,
    ].filter(Boolean).join(" · ");
    const on = (cls, fn) => {
      const b = card.querySelector(`.${cls}`);
      if (b) b.addEventListener("click", (e) => { e.stopPropagation(); fn(); });
    };
    on("watch", () => watch(cam.id));
    on("recordings", () => openRecordings(cam.id));
    on("record", async () => {
      try { state.cameras.set(cam.id, await api("PATCH", `/cameras/${cam.id}`, { recording: !cam.recording })); render(); } catch (err) { alert(err.message); }
    });
    // The image keeps its space while it loads (no layout shift under the pointer); a
    // camera without playback rights shows none.
    const img = card.querySelector(".snapshot");
    if (can.playback) {
      img.onload = () => { img.classList.add("loaded"); };
      signed(`/api/v1/cameras/${cam.id}/snapshot`).then((u) => { img.src = `${u}&t=${state.snapshotEpoch}`; }).catch(() => {});
    } else {
      img.remove();
    }
    on("rename", async () => {
      const name = prompt("New name", cam.name);
      if (!name) return;
      try { state.cameras.set(cam.id, await api("PATCH", `/cameras/${cam.id}`, { name })); render(); } catch (err) { alert(err.message); }
    });
    on("share", () => openShares(cam.id));
    on("push-credential", async () => {
      if (!confirm(`Replace the push credential of ${cam.name}? The old one stops working.`)) return;
      try {
        const fresh = await api("POST", `/cameras/${cam.id}/push-credential`);
        fresh.status = cam.status;
        state.cameras.set(cam.id, fresh);
        render();
        showPushCredential(fresh);
      } catch (err) { alert(err.message); }
    });
    on("delete", async () => {
      if (!confirm(`Delete ${cam.name}?`)) return;
      try { await api("DELETE", `/cameras/${cam.id}`); state.cameras.delete(cam.id); render(); } catch (err) { alert(err.message); }
    });
    if (watchable) card.addEventListener("click", () => watch(cam.id));
    grid.appendChild(card);
  }
}

async function connectWs() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  state.signed.delete("/api/v1/ws");
  const ws = new WebSocket(`${proto}://${location.host}${await signed("/api/v1/ws")}`);
  state.ws = ws;
  ws.onmessage = (ev) => onServerMessage(JSON.parse(ev.data));
  ws.onclose = () => {
    // What a reconnect needs (the open view) is sent again once it is back.
    state.unsent = [];
    if (state.ws !== ws || !state.token) return;
    setTimeout(async () => {
      if (!state.token) return;
      try { await api("GET", "/me"); } catch (_) { return; }
      await connectWs();
      if (state.view) watch(state.view.cameraId, state.view.asked);
      if (state.wall) openWall();
    }, 1000);
  };
  return new Promise((resolve) => {
    ws.onopen = () => {
      for (const msg of state.unsent.splice(0)) ws.send(JSON.stringify(msg));
      resolve();
    };
  });
}

function send(msg) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(msg));
  else if (!state.ws || state.ws.readyState === WebSocket.CONNECTING) state.unsent.push(msg);
}

async function onServerMessage(msg) {
  const view = state.view;
  switch (msg.type) {
    case "camera_status": {
      const cam = state.cameras.get(msg.camera_id);
      if (msg.stream === "sub") {
        // The substream's own status: it never stands for the camera's.
        if (cam) cam.sub_status = msg.status;
        const tile = state.tiles.get(msg.camera_id);
        if (tile && tile.ended && msg.status.state === "live") openTile(tile.cameraId);
        break;
      }
      if (cam) { cam.status = msg.status; render(); }
      // A camera this page does not know yet (just added, here or elsewhere, or shared with
      // this user): fetch it.
      else api("GET", `/cameras/${msg.camera_id}`).then((c) => {
        if (!state.cameras.has(c.id)) { state.cameras.set(c.id, c); render(); }
      }).catch(() => {});
      // The main stream turned out to be one this browser cannot play (H.265): a camera with a
      // substream is watched through it (the server picks it now), one without says why.
      if (view && view.cameraId === msg.camera_id && !playable(msg.status) && view.stream === "main") {
        if (cam && cam.sub_url) watch(view.cameraId, view.asked);
        else {
          closeView(false);
          $("player-state").textContent = `live view unavailable: ${msg.status.live_unavailable}`;
        }
      } else if (view && view.cameraId === msg.camera_id && msg.status.state === "live" && view.ended) watch(view.cameraId, view.asked);
      const tile = state.tiles.get(msg.camera_id);
      if (tile && tile.stream === "main" && !playable(msg.status)) {
        stopStream(tile);
        tile.ended = true;
        tile.say(`live view unavailable: ${msg.status.live_unavailable}`);
      } else if (tile && tile.ended && tile.asked === "main" && msg.status.state === "live") openTile(tile.cameraId);
      break;
    }
    case "offer": {
      // The server names the view in its offer.
      const target = viewFor(msg);
      if (target && !target.viewId) {
        target.viewId = msg.view_id;
        for (const c of target.pending.splice(0)) send({ type: "candidate", view_id: target.viewId, candidate: c });
      }
      if (!target) { send({ type: "stop", view_id: msg.view_id }); return; }
      target.stream = msg.stream;
      if (target === view) showStream(view);
      await target.pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
      const answer = await target.pc.createAnswer();
      await target.pc.setLocalDescription(answer);
      send({ type: "answer", view_id: msg.view_id, sdp: answer.sdp });
      break;
    }
    case "view_state": {
      const target = viewFor(msg);
      if (target) {
        target.say(msg.state);
        if (msg.state === "ended") retry(target, "the view ended");
      }
      break;
    }
    case "error": {
      const target = viewFor(msg);
      if (!target) break;
      if (["forbidden", "camera_not_found", "too_many_views", "live_unavailable", "no_substream"].includes(msg.code)) {
        if (!target.viewId) { target.ended = true; target.say(msg.message); }
        break;
      }
      retry(target, msg.message);
      break;
    }
  }
}

// The open view (the player's, or a wall tile's) a server message is about: by its view id,
// or — before the server has named it — the one of the message's camera still waiting.
function viewFor(msg) {
  const views = [state.view, ...state.tiles.values()].filter(Boolean);
  return views.find((v) => v.viewId && v.viewId === msg.view_id)
    || views.find((v) => !v.viewId && v.cameraId === msg.camera_id);
}

// A view the server ended (gateway lost, camera moved) is opened again until the user closes it.
function retry(view, why) {
  if (view.ended) return;
  view.ended = true;
  view.say(`reconnecting: ${why}`);
  setTimeout(() => {
    if (state.view === view) watch(view.cameraId, view.asked);
    else if (state.tiles.get(view.cameraId) === view) openTile(view.cameraId);
  }, 2000);
}

// Whether this browser decodes H.265: it then watches an H.265 camera's main stream as it is.
const decodesH265 = typeof RTCRtpReceiver !== "undefined" && !!RTCRtpReceiver.getCapabilities
  && (RTCRtpReceiver.getCapabilities("video") || { codecs: [] }).codecs.some((c) => /^video\/(h265|hevc)$/i.test(c.mimeType));
// Whether this browser can play a stream whose status is `st`.
const playable = (st) => !st.live_unavailable || (decodesH265 && st.codec === "H265");

// Low latency (the default): the browser shows each frame once decoded. Remembered per browser.
const lowLatency = () => localStorage.getItem("cloudcam.lowLatency") !== "false";
$("low-latency").checked = lowLatency();
$("low-latency").addEventListener("change", (ev) => {
  localStorage.setItem("cloudcam.lowLatency", String(ev.target.checked));
  if (state.view) watch(state.view.cameraId, state.view.asked);
});

// A view the browser holds back longer than this, three checks in a row, is opened again.
const DELAY_LIMIT_MS = 1000;
const DELAY_CHECK_MS = 2000;

// The browser's own delay (jitter buffer) over the last interval. When it stays high — a
// stream that keeps arriving later, a buffer that never drains — the view is opened again,
// which starts it at the live edge.
async function checkDelay(view) {
  if (state.view !== view || view.ended) return;
  const stats = await view.pc.getStats();
  stats.forEach((r) => {
    // The sound control shows once the camera's audio arrives.
    if (r.type === "inbound-rtp" && r.kind === "audio" && r.packetsReceived > 0) $("player-mute").hidden = false;
    if (r.type !== "inbound-rtp" || r.kind !== "video") return;
    const last = view.jitter;
    view.jitter = { delay: r.jitterBufferDelay, count: r.jitterBufferEmittedCount };
    if (!last || !(r.jitterBufferEmittedCount > last.count)) return;
    view.delayMs = (1000 * (r.jitterBufferDelay - last.delay)) / (r.jitterBufferEmittedCount - last.count);
    const limit = window.cloudcamDelayLimitMs || DELAY_LIMIT_MS;
    view.late = view.delayMs > limit ? (view.late || 0) + 1 : 0;
  });
  if (view.late >= 3 && state.view === view) {
    view.ended = true;
    console.warn(`view of ${view.cameraId}: ${Math.round(view.delayMs)} ms behind; opening it again`);
    watch(view.cameraId, view.asked);
    $("player-state").textContent = `reopened: video was ${Math.round(view.delayMs)} ms behind`;
  }
}

// A WebRTC view of one of a camera's streams ("main" or "sub"), shown in `video`; `say` shows
// its state. The server answers with an offer naming the view and the stream it shows.
function openStream(cameraId, stream, video, say, isCurrent) {
  const pc = new RTCPeerConnection({ iceServers: [] });
  const view = { cameraId, asked: stream, stream, pc, viewId: null, ended: false, pending: [], say };
  pc.ontrack = (ev) => { video.srcObject = ev.streams[0] || new MediaStream([ev.track]); };
  pc.onicecandidate = (ev) => {
    const c = ev.candidate ? ev.candidate.toJSON() : null;
    if (view.viewId) send({ type: "candidate", view_id: view.viewId, candidate: c }); else view.pending.push(c);
  };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === "failed" && isCurrent(view)) retry(view, "connection failed");
  };
  send({ type: "watch", camera_id: cameraId, low_latency: lowLatency(), stream, codecs: decodesH265 ? ["h265"] : [] });
  return view;
}

function stopStream(view) {
  if (view.viewId) send({ type: "stop", view_id: view.viewId });
  view.pc.close();
}

// Opens (or re-opens) the full view of a camera: its main stream unless `stream` says "sub".
// The live wall is closed meanwhile (its tiles would watch the same cameras twice).
function watch(cameraId, stream = "main") {
  closeView(false);
  if (state.wall) closeWall(true);
  const cam = state.cameras.get(cameraId);
  $("player-title").textContent = cam ? cam.name : cameraId;
  $("player-state").textContent = "connecting";
  $("player").hidden = false;
  const say = (text) => { if (state.view === view) $("player-state").textContent = text; };
  $("player-mute").hidden = true;
  $("video").muted = state.muted;
  const view = openStream(cameraId, stream, $("video"), say, (v) => state.view === v);
  state.view = view;
  showStream(view);
  view.watchdog = setInterval(() => checkDelay(view).catch(() => {}), DELAY_CHECK_MS);
  window.cloudcamView = view;
}

// The player's stream choice, for a camera with a substream.
function showStream(view) {
  const cam = state.cameras.get(view.cameraId);
  const select = $("player-stream");
  select.hidden = !(cam && cam.sub_url);
  select.value = view.stream;
  if (view.stream !== view.asked) {
    $("player-state").textContent = "substream: the main stream cannot be played in this browser";
  }
}

// Live audio starts muted (as browsers require without a click); the choice holds for the page.
function showMuted() {
  $("video").muted = state.muted;
  $("player-mute").textContent = state.muted ? "Unmute" : "Mute";
}
$("player-mute").addEventListener("click", () => { state.muted = !state.muted; showMuted(); });

$("player-stream").addEventListener("change", (ev) => {
  if (state.view) watch(state.view.cameraId, ev.target.value);
});

// The live wall: every camera the user may watch, each in a tile showing its substream where
// it has one (cheap to pull and decode by the dozen); a click opens its main stream.
function openTile(cameraId) {
  const cam = state.cameras.get(cameraId);
  const old = state.tiles.get(cameraId);
  if (old) stopStream(old);
  let el = old && old.el;
  if (!el) {
    el = document.createElement("div");
    el.className = "tile";
    el.dataset.id = cameraId;
    el.innerHTML = `<video autoplay muted playsinline></video><span class="label"></span><span class="tile-state"></span>`;
    el.querySelector(".label").textContent = cam ? cam.name : cameraId;
    el.addEventListener("click", () => watch(cameraId, "main"));
    $("wall").appendChild(el);
  }
  const say = (text) => { el.querySelector(".tile-state").textContent = text; };
  const stream = cam && cam.sub_url ? "sub" : "main";
  const tile = openStream(cameraId, stream, el.querySelector("video"), say, (v) => state.tiles.get(cameraId) === v);
  tile.el = el;
  state.tiles.set(cameraId, tile);
  say("connecting");
}

function openWall() {
  closeWall(false);
  state.wall = true;
  $("wall").hidden = false;
  $("wall-toggle").textContent = "Close wall";
  for (const cam of state.cameras.values()) {
    const st = cam.status || {};
    if (cam.access && cam.access.live && (playable(st) || cam.sub_url)) openTile(cam.id);
  }
}

// Stops every tile; `resume` keeps the wall to be opened again when the player closes.
function closeWall(resume) {
  for (const tile of state.tiles.values()) stopStream(tile);
  state.tiles.clear();
  $("wall").replaceChildren();
  $("wall").hidden = true;
  state.wall = false;
  state.wallResume = resume;
  $("wall-toggle").textContent = "Live wall";
}

$("wall-toggle").addEventListener("click", () => { if (state.wall) closeWall(false); else openWall(); });
window.cloudcamTiles = state.tiles;

function closeView(hide = true) {
  const view = state.view;
  if (view) {
    stopStream(view);
    clearInterval(view.watchdog);
    state.view = null;
  }
  $("video").srcObject = null;
  if (hide) {
    $("player").hidden = true;
    if (state.wallResume) openWall();
  }
}

$("player-close").addEventListener("click", () => closeView(true));

// Recordings: a day's timeline of recorded spans; click to play from there; export a clip.
const DAY_MS = 24 * 3600 * 1000;
const clipQuery = (from, to, download) => `from=${Math.round(from)}&to=${Math.round(to)}${download ? "&download=true" : ""}`;
const localInput = (ms) => { const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000); return d.toISOString().slice(0, 19); };

function openRecordings(cameraId) {
  const cam = state.cameras.get(cameraId);
  state.rec = { cameraId, spans: [] };
  $("rec-title").textContent = `${cam ? cam.name : cameraId}: recordings`;
  const today = new Date(); today.setHours(0, 0, 0, 0);
  $("rec-day").valueAsDate = new Date(today.getTime() - today.getTimezoneOffset() * 60000);
  $("recordings").hidden = false;
  loadDay();
}

function dayStart() {
  const [y, m, d] = $("rec-day").value.split("-").map(Number);
  return new Date(y, m - 1, d).getTime();
}

async function loadDay() {
  const rec = state.rec;
  const from = dayStart();
  const data = await api("GET", `/cameras/${rec.cameraId}/recordings?from=${from}&to=${from + DAY_MS}`);
  rec.spans = data.spans;
  const tl = $("timeline");
  tl.replaceChildren();
  for (const sp of data.spans) {
    const el = document.createElement("div");
    el.className = "span";
    el.dataset.i = String(data.spans.indexOf(sp));
    el.style.left = `${Math.max(0, (sp.start_ms - from) / DAY_MS) * 100}%`;
    el.style.width = `${((Math.min(sp.end_ms, from + DAY_MS) - Math.max(sp.start_ms, from)) / DAY_MS) * 100}%`;
    el.title = `${new Date(sp.start_ms).toLocaleTimeString()} – ${new Date(sp.end_ms).toLocaleTimeString()}`;
    tl.appendChild(el);
  }
  const total = data.spans.reduce((a, s) => a + (s.end_ms - s.start_ms), 0);
  $("rec-info").textContent = data.spans.length
    ? `${data.segments.length} segments, ${(total / 60000).toFixed(1)} min recorded in ${data.spans.length} span(s); gaps are grey.`
    : "Nothing recorded on this day.";
  if (data.spans.length) {
    const last = data.spans[data.spans.length - 1];
    $("export-from").value = localInput(Math.max(last.start_ms, last.end_ms - 30000));
    $("export-to").value = localInput(last.end_ms);
  }
}

$("rec-day").addEventListener("change", loadDay);
$("rec-close").addEventListener("click", () => { $("playback").removeAttribute("src"); $("playback").load(); $("recordings").hidden = true; state.rec = null; });

$("timeline").addEventListener("click", (e) => {
  const rec = state.rec;
  const rect = $("timeline").getBoundingClientRect();
  let t = dayStart() + ((e.clientX - rect.left) / rect.width) * DAY_MS;
  // A pixel is about two minutes of the day: a click on a span plays that span, from the clicked
  // moment when it falls inside it (and leaves something to watch), else from its start.
  const hit = e.target.closest(".span");
  const span = hit ? rec.spans[Number(hit.dataset.i)] : rec.spans.find((s) => s.end_ms > t);
  if (!span) return;
  if (t < span.start_ms || t > span.end_ms - 10000) t = span.start_ms;
  const from = Math.max(t, span.start_ms);
  const to = Math.min(span.end_ms, from + 10 * 60000);
  $("rec-info").textContent = `Playing from ${new Date(from).toLocaleTimeString()}`;
  const video = $("playback");
  signed(`/api/v1/cameras/${rec.cameraId}/clip`).then((u) => {
    video.src = `${u}&${clipQuery(from, to, false)}`;
    video.play().catch(() => {});
  });
});

$("export-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const rec = state.rec;
  const from = new Date($("export-from").value).getTime();
  const to = new Date($("export-to").value).getTime();
  $("export-result").textContent = "exporting…";
  try {
    const res = await fetch(`/api/v1/cameras/${rec.cameraId}/clip?${clipQuery(from, to, true)}`,
      { headers: { Authorization: `Bearer ${state.token}` } });
    if (!res.ok) throw new Error((await res.json()).error.message);
    const start = Number(res.headers.get("X-Cloudcam-Clip-Start-Ms"));
    const end = Number(res.headers.get("X-Cloudcam-Clip-End-Ms"));
    const url = URL.createObjectURL(await res.blob());
    const a = document.createElement("a");
    a.href = url; a.download = `${rec.cameraId}-${start}-${end}.mp4`; a.textContent = "download";
    $("export-result").replaceChildren(
      `Clip ${new Date(start).toLocaleTimeString()} – ${new Date(end).toLocaleTimeString()} (${((end - start) / 1000).toFixed(1)} s, rounded out to keyframes): `, a);
  } catch (err) { $("export-result").textContent = `export failed: ${err.message}`; }
});

// Sharing: who else may watch, play back or manage a camera.
async function openShares(cameraId) {
  const cam = state.cameras.get(cameraId);
  state.sharing = cameraId;
  $("share-title").textContent = `Share ${cam ? cam.name : cameraId}`;
  $("share-error").textContent = "";
  $("shares").hidden = false;
  try { renderShares(await api("GET", `/cameras/${cameraId}/shares`)); } catch (err) { $("share-error").textContent = err.message; }
}

function renderShares(shares) {
  const list = $("share-list");
  list.replaceChildren();
  for (const s of shares) {
    const li = document.createElement("li");
    const grants = ["live", "playback", "manage"].filter((g) => s[g]).join(", ");
    li.textContent = `${s.user}: ${grants} `;
    const rm = document.createElement("button");
    rm.textContent = "Remove"; rm.className = "unshare";
    rm.addEventListener("click", async () => {
      try { renderShares(await api("DELETE", `/cameras/${state.sharing}/shares/${encodeURIComponent(s.user)}`)); } catch (err) { $("share-error").textContent = err.message; }
    });
    li.appendChild(rm);
    list.appendChild(li);
  }
  if (!shares.length) list.textContent = "Not shared with anyone.";
}

$("share-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("share-error").textContent = "";
  const grant = { live: $("share-live").checked, playback: $("share-playback").checked, manage: $("share-manage").checked };
  try {
    renderShares(await api("PUT", `/cameras/${state.sharing}/shares/${encodeURIComponent($("share-user").value)}`, grant));
    e.target.reset();
  } catch (err) { $("share-error").textContent = err.message; }
});
$("share-close").addEventListener("click", () => { $("shares").hidden = true; state.sharing = null; });

// Users (administrators): create, change role, disable, reset password, sign out everywhere.
async function openUsers() {
  $("users").hidden = false;
  $("user-error").textContent = "";
  try { renderUsers(await api("GET", "/users")); } catch (err) { $("user-error").textContent = err.message; }
}

function renderUsers(users) {
  const body = $("user-list");
  body.replaceChildren();
  for (const u of users) {
    const tr = document.createElement("tr");
    tr.dataset.user = u.name;
    tr.innerHTML = `<td class="uname"></td><td>${u.role}</td><td>${u.disabled ? "disabled" : "active"}</td><td class="actions"></td>`;
    tr.querySelector(".uname").textContent = u.name;
    const act = async (label, fn) => {
      const b = document.createElement("button");
      b.textContent = label;
      b.addEventListener("click", async () => {
        try { await fn(); renderUsers(await api("GET", "/users")); } catch (err) { $("user-error").textContent = err.message; }
      });
      tr.querySelector(".actions").appendChild(b);
    };
    const self = state.me && state.me.user === u.name;
    if (!self) act(u.disabled ? "Enable" : "Disable", () => api("PATCH", `/users/${encodeURIComponent(u.name)}`, { disabled: !u.disabled }));
    act("Reset password", async () => {
      const password = prompt(`New password for ${u.name} (at least 8 characters)`);
      if (password) await api("PATCH", `/users/${encodeURIComponent(u.name)}`, { password });
    });
    if (!self) act("Sign out everywhere", () => api("POST", `/users/${encodeURIComponent(u.name)}/signout`));
    body.appendChild(tr);
  }
}

$("user-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("user-error").textContent = "";
  try {
    await api("POST", "/users", { name: $("user-name").value, password: $("user-password").value, role: $("user-role").value });
    e.target.reset();
    renderUsers(await api("GET", "/users"));
  } catch (err) { $("user-error").textContent = err.message; }
});
$("users-open").addEventListener("click", openUsers);
$("users-close").addEventListener("click", () => { $("users").hidden = true; });

// Your own password: changing it signs out every session of yours, this one included.
$("password-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("password-error").textContent = "";
  try {
    await api("POST", "/me/password", { current: $("password-current").value, new: $("password-new").value });
    signOut();
    $("login-error").textContent = "Password changed: sign in again.";
  } catch (err) { $("password-error").textContent = err.message; }
});

async function start() {
  try {
    state.me = await api("GET", "/me");
    const cams = await api("GET", "/cameras");
    state.cameras = new Map(cams.map((c) => [c.id, c]));
    $("whoami").textContent = `${state.me.user} (${state.me.role})`;
    show(true);
    render();
    await loadSites();
    await connectWs();
  } catch (err) { signOut(); }
}

if (state.token) start(); else show(false);
