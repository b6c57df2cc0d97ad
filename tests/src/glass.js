// Glass-to-glass in the browser: reads camsim's pixel clock (tools/camsim/src/stamp.rs) back
// from decoded WebRTC frames, and opens views through signal's WebSocket API. Defines
// window.cloudcamGlass; evaluated once per page by the Rust side (tests/src/glass.rs).
(() => {
  if (window.cloudcamGlass) return;
  const BITS = 64, BAND = 16, MARKER = 0xb2;
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });

  // The time (ms since the epoch) stamped in the frame `source` (a video, canvas or image of
  // w x h) shows now, or null when it carries no valid code.
  function read(source, w, h) {
    if (w < BITS * 2 || h < BAND) return null;
    canvas.width = w;
    canvas.height = 1;
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(source, 0, h - BAND / 2, w, 1, 0, 0, w, 1);
    const px = ctx.getImageData(0, 0, w, 1).data;
    const block = Math.floor(w / BITS);
    const bytes = [0, 0, 0, 0, 0, 0, 0, 0];
    for (let i = 0; i < BITS; i++) {
      const x = i * block + (block >> 1);
      const luma = (px[4 * x] + px[4 * x + 1] + px[4 * x + 2]) / 3;
      bytes[i >> 3] = (bytes[i >> 3] << 1) | (luma > 128 ? 1 : 0);
    }
    if (bytes[0] !== MARKER) return null;
    let ms = 0, check = 0;
    for (let k = 1; k <= 6; k++) { ms = ms * 256 + bytes[k]; check ^= bytes[k]; }
    return check === bytes[7] ? ms : null;
  }

  // Draws the code for `ms` as camsim does, on a w x h canvas (to test `read` in isolation).
  function draw(ms, w, h) {
    const c = document.createElement('canvas');
    c.width = w; c.height = h;
    const g = c.getContext('2d');
    g.fillStyle = 'rgb(128,128,128)';
    g.fillRect(0, 0, w, h);
    const bytes = [MARKER];
    let check = 0;
    for (let k = 5; k >= 0; k--) { const b = Math.floor(ms / 2 ** (8 * k)) % 256; bytes.push(b); check ^= b; }
    bytes.push(check);
    const block = Math.floor(w / BITS);
    for (let i = 0; i < BITS; i++) {
      const on = (bytes[i >> 3] >> (7 - (i & 7))) & 1;
      g.fillStyle = on ? 'rgb(235,235,235)' : 'rgb(16,16,16)';
      g.fillRect(i * block, h - BAND, block, BAND);
    }
    return c;
  }

  let ws = null;
  const handlers = new Set();
  async function socket(token) {
    if (ws && ws.readyState === WebSocket.OPEN) return ws;
    const signed = (await (await fetch('/api/v1/signed-urls', { method: 'POST', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' }, body: JSON.stringify({ path: '/api/v1/ws' }) })).json()).url;
    ws = await new Promise((resolve, reject) => {
      const s = new WebSocket(`ws://${location.host}${signed}`);
      s.onopen = () => resolve(s);
      s.onerror = () => reject(new Error('websocket refused'));
    });
    ws.onmessage = (ev) => { const msg = JSON.parse(ev.data); for (const h of handlers) h(msg); };
    return ws;
  }

  // Opens a view of `cameraId` and records every decoded frame: its stamp (null when none),
  // size, and when (ms since the epoch) its last packet arrived, it was presented (decoded)
  // and is expected on screen. `watch` is extra fields of the watch message.
  async function open(token, cameraId, watch) {
    const s = await socket(token);
    const pc = new RTCPeerConnection();
    const video = document.createElement('video');
    video.muted = true; video.autoplay = true; video.playsInline = true;
    document.body.appendChild(video);
    const view = { pc, video, viewId: null, frames: [], errors: [], clickedAt: Date.now(), on: true };
    const t0 = performance.timeOrigin;
    const step = (now, meta) => {
      if (!view.on) return;
      view.frames.push({
        stamp: read(video, meta.width, meta.height),
        width: meta.width, height: meta.height,
        receive: meta.receiveTime !== undefined ? t0 + meta.receiveTime : null,
        decode: t0 + meta.presentationTime,
        display: t0 + meta.expectedDisplayTime,
      });
      video.requestVideoFrameCallback(step);
    };
    video.requestVideoFrameCallback(step);
    pc.ontrack = (e) => { video.srcObject = e.streams[0] || new MediaStream([e.track]); };
    pc.onicecandidate = (e) => { if (view.viewId) s.send(JSON.stringify({ type: 'candidate', view_id: view.viewId, candidate: e.candidate ? e.candidate.toJSON() : null })); };
    const handler = async (msg) => {
      if (msg.type === 'error' && (msg.view_id === view.viewId || !view.viewId)) view.errors.push(msg);
      if (msg.type === 'offer' && msg.camera_id === cameraId && !view.viewId) {
        view.viewId = msg.view_id;
        view.offer = msg.sdp;
        await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
        const answer = await pc.createAnswer();
        await pc.setLocalDescription(answer);
        s.send(JSON.stringify({ type: 'answer', view_id: view.viewId, sdp: answer.sdp }));
      }
    };
    handlers.add(handler);
    view.close = () => {
      view.on = false;
      handlers.delete(handler);
      if (view.viewId) s.send(JSON.stringify({ type: 'stop', view_id: view.viewId }));
      pc.close();
      video.remove();
    };
    view.clickedAt = Date.now();
    s.send(JSON.stringify(Object.assign({ type: 'watch', camera_id: cameraId }, watch || {})));
    return view;
  }

  const views = new Map();
  let next = 1;
  window.cloudcamGlass = {
    read, draw,
    // Opens a view; resolves with its handle (a number).
    async open(token, cameraId, watch) { const v = await open(token, cameraId, watch); const id = next++; views.set(id, v); return id; },
    // The frames recorded since the last call (and the view's click time, offer and errors).
    take(id) { const v = views.get(id); const frames = v.frames; v.frames = []; return { clickedAt: v.clickedAt, offer: v.offer || null, errors: v.errors, frames }; },
    close(id) { const v = views.get(id); if (v) { v.close(); views.delete(id); } return true; },
  };
})();
