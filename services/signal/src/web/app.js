// cloudcam web UI: sign in, list cameras with live status, add/rename/delete cameras, watch one
// live over WebRTC. All signalling goes through signal's WebSocket; the page never talks to Janus.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { token: localStorage.getItem("cloudcam.token"), cameras: new Map(), ws: null, view: null, snapshotEpoch: 0, rec: null };
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

function show(signedIn) {
  $("login-view").hidden = signedIn;
  $("main-view").hidden = !signedIn;
  $("logout").hidden = !signedIn;
}

function signOut() {
  localStorage.removeItem("cloudcam.token");
  state.token = null;
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
  const body = { name: $("add-name").value, url: $("add-url").value };
  if ($("add-username").value) body.username = $("add-username").value;
  if ($("add-password").value) body.password = $("add-password").value;
  body.recording = $("add-recording").checked;
  body.always_on = $("add-always-on").checked;
  body.retention_hours = Number($("add-retention").value || 0);
  try {
    const cam = await api("POST", "/cameras", body);
    state.cameras.set(cam.id, cam);
    e.target.reset();
    render();
  } catch (err) { $("add-error").textContent = err.message; }
});

function render() {
  const grid = $("cameras");
  grid.replaceChildren();
  $("no-cameras").hidden = state.cameras.size > 0;
  for (const cam of state.cameras.values()) {
    const card = document.createElement("div");
    card.className = "camera";
    card.dataset.id = cam.id;
    card.dataset.state = cam.status.state;
    const st = cam.status;
    const extra = st.state === "live" ? ` · ${st.width}×${st.height} · ${st.fps} fps` : "";
    card.innerHTML = `<img class="snapshot" alt="" hidden><div class="name"></div><div class="url"></div>
      <div><span class="badge ${st.state}">${st.state.replace("_", " ")}</span>${cam.recording ? '<span class="badge rec">REC</span>' : ""}<span class="meta">${extra}</span></div>
      <div class="reason"></div><div class="served"></div>
      <div class="actions"><button class="watch">Watch</button><button class="recordings">Recordings</button><button class="record">${cam.recording ? "Stop recording" : "Record"}</button><button class="rename">Rename</button><button class="delete">Delete</button></div>`;
    card.querySelector(".name").textContent = cam.name;
    card.querySelector(".url").textContent = cam.url + (cam.username ? ` (as ${cam.username})` : "");
    const by = cam.served_by || {};
    card.querySelector(".reason").textContent = by.gateway_error ? `live view unavailable: ${by.gateway_error}` : st.reason;
    card.querySelector(".served").textContent = [
      by.ingest && `ingest ${by.ingest}`, by.gateway && `gateway ${by.gateway}`, by.recorder && `recorder ${by.recorder}`,
    ].filter(Boolean).join(" · ");
    card.querySelector(".watch").addEventListener("click", (e) => { e.stopPropagation(); watch(cam.id); });
    card.querySelector(".recordings").addEventListener("click", (e) => { e.stopPropagation(); openRecordings(cam.id); });
    card.querySelector(".record").addEventListener("click", async (e) => {
      e.stopPropagation();
      try { state.cameras.set(cam.id, await api("PATCH", `/cameras/${cam.id}`, { recording: !cam.recording })); render(); } catch (err) { alert(err.message); }
    });
    const img = card.querySelector(".snapshot");
    img.onload = () => { img.hidden = false; };
    img.src = `/api/v1/cameras/${cam.id}/snapshot?token=${encodeURIComponent(state.token)}&t=${state.snapshotEpoch}`;
    card.querySelector(".rename").addEventListener("click", async (e) => {
      e.stopPropagation();
      const name = prompt("New name", cam.name);
      if (!name) return;
      try { state.cameras.set(cam.id, await api("PATCH", `/cameras/${cam.id}`, { name })); render(); } catch (err) { alert(err.message); }
    });
    card.querySelector(".delete").addEventListener("click", async (e) => {
      e.stopPropagation();
      if (!confirm(`Delete ${cam.name}?`)) return;
      try { await api("DELETE", `/cameras/${cam.id}`); state.cameras.delete(cam.id); render(); } catch (err) { alert(err.message); }
    });
    card.addEventListener("click", () => watch(cam.id));
    grid.appendChild(card);
  }
}

function connectWs() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/api/v1/ws?token=${encodeURIComponent(state.token)}`);
  state.ws = ws;
  ws.onmessage = (ev) => onServerMessage(JSON.parse(ev.data));
  ws.onclose = () => {
    if (state.ws !== ws || !state.token) return;
    setTimeout(() => { if (state.token) { connectWs(); if (state.view) watch(state.view.cameraId); } }, 1000);
  };
  return new Promise((resolve) => { ws.onopen = resolve; });
}

function send(msg) { if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(msg)); }

async function onServerMessage(msg) {
  const view = state.view;
  switch (msg.type) {
    case "camera_status": {
      const cam = state.cameras.get(msg.camera_id);
      if (cam) { cam.status = msg.status; render(); }
      if (view && view.cameraId === msg.camera_id && msg.status.state === "live" && view.ended) watch(view.cameraId);
      break;
    }
    case "offer": {
      // The server names the view in its offer.
      if (view && !view.viewId && view.cameraId === msg.camera_id) {
        view.viewId = msg.view_id;
        for (const c of view.pending.splice(0)) send({ type: "candidate", view_id: view.viewId, candidate: c });
      }
      if (!view || view.viewId !== msg.view_id) { send({ type: "stop", view_id: msg.view_id }); return; }
      await view.pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
      const answer = await view.pc.createAnswer();
      await view.pc.setLocalDescription(answer);
      send({ type: "answer", view_id: msg.view_id, sdp: answer.sdp });
      break;
    }
    case "view_state":
      if (view && view.viewId === msg.view_id) {
        $("player-state").textContent = msg.state;
        if (msg.state === "ended") retry(view, "the view ended");
      }
      break;
    case "error":
      if (view && (msg.view_id === view.viewId || (!view.viewId && msg.view_id))) retry(view, msg.message);
      break;
  }
}

// A view the server ended (gateway lost, camera moved) is opened again until the user closes it.
function retry(view, why) {
  if (view.ended) return;
  view.ended = true;
  $("player-state").textContent = `reconnecting: ${why}`;
  setTimeout(() => { if (state.view === view) watch(view.cameraId); }, 2000);
}

// Opens (or re-opens) the live view of a camera.
function watch(cameraId) {
  closeView(false);
  const cam = state.cameras.get(cameraId);
  $("player-title").textContent = cam ? cam.name : cameraId;
  $("player-state").textContent = "connecting";
  $("player").hidden = false;
  const pc = new RTCPeerConnection({ iceServers: [] });
  const view = { cameraId, pc, viewId: null, ended: false, pending: [] };
  state.view = view;
  pc.ontrack = (ev) => { $("video").srcObject = ev.streams[0] || new MediaStream([ev.track]); };
  pc.onicecandidate = (ev) => {
    const c = ev.candidate ? ev.candidate.toJSON() : null;
    if (view.viewId) send({ type: "candidate", view_id: view.viewId, candidate: c }); else view.pending.push(c);
  };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === "failed" && state.view === view) retry(view, "connection failed");
  };
  send({ type: "watch", camera_id: cameraId });
  window.cloudcamView = view;
}

function closeView(hide = true) {
  const view = state.view;
  if (view) {
    if (view.viewId) send({ type: "stop", view_id: view.viewId });
    view.pc.close();
    state.view = null;
  }
  $("video").srcObject = null;
  if (hide) $("player").hidden = true;
}

$("player-close").addEventListener("click", () => closeView(true));

// Recordings: a day's timeline of recorded spans; click to play from there; export a clip.
const DAY_MS = 24 * 3600 * 1000;
const clipUrl = (id, from, to, download) =>
  `/api/v1/cameras/${id}/clip?from=${Math.round(from)}&to=${Math.round(to)}&token=${encodeURIComponent(state.token)}${download ? "&download=true" : ""}`;
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
  video.src = clipUrl(rec.cameraId, from, to, false);
  video.play().catch(() => {});
});

$("export-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const rec = state.rec;
  const from = new Date($("export-from").value).getTime();
  const to = new Date($("export-to").value).getTime();
  $("export-result").textContent = "exporting…";
  try {
    const res = await fetch(clipUrl(rec.cameraId, from, to, true));
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

async function start() {
  try {
    const cams = await api("GET", "/cameras");
    state.cameras = new Map(cams.map((c) => [c.id, c]));
    $("whoami").textContent = "";
    show(true);
    render();
    await connectWs();
  } catch (err) { signOut(); }
}

if (state.token) start(); else show(false);
