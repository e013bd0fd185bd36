// floe-gateway in a real browser: Debian's Chromium, headless, driven by playwright-core.
//
// Usage: CHROMIUM=/usr/bin/chromium node browser.cjs GATEWAY_URL OUT_DIR
//
// The browser makes the media itself (a PNG from a canvas, a WebM from MediaRecorder), Node's own
// fetch stores them through the publisher (the video as a blob, the page and the image as a quilt
// with their content types), then Chromium opens the page from the aggregator and loads the
// <img> and the <video> the way it loads any site: its media stack issues its own Range requests.
// It waits for the elements' load events (no sleeps), keeps a screenshot and the media it stored
// in OUT_DIR, and prints one JSON line for the calling test (operator/tests/gateway_clients.rs).
'use strict';
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const [url, outDir] = [process.argv[2].replace(/\/$/, ''), process.argv[3]];
const TIMEOUT = 120_000;

async function put(route, body, headers = {}) {
  const r = await fetch(`${url}${route}`, { method: 'PUT', body, headers });
  const text = await r.text();
  if (r.status !== 200) throw new Error(`PUT ${route}: ${r.status} ${text}`);
  return JSON.parse(text);
}

// A still image and a short video, made by the browser's own encoders.
async function makeMedia(page) {
  return page.evaluate(async () => {
    const c = document.createElement('canvas');
    c.width = 96;
    c.height = 64;
    const g = c.getContext('2d');
    g.fillStyle = '#1f6feb';
    g.fillRect(0, 0, 96, 64);
    g.fillStyle = '#f0b400';
    g.fillRect(16, 16, 64, 32);
    const png = c.toDataURL('image/png').split(',')[1];

    const v = document.createElement('canvas');
    v.width = 160;
    v.height = 120;
    const vg = v.getContext('2d');
    let frame = 0;
    const draw = () => {
      vg.fillStyle = `hsl(${(frame * 37) % 360}, 70%, 50%)`;
      vg.fillRect(0, 0, 160, 120);
      vg.fillStyle = '#fff';
      vg.fillRect((frame * 7) % 160, 40, 20, 40);
      frame += 1;
    };
    draw();
    const rec = new MediaRecorder(v.captureStream(25), { mimeType: 'video/webm;codecs=vp8' });
    const chunks = [];
    rec.ondataavailable = (e) => chunks.push(e.data);
    const stopped = new Promise((resolve) => (rec.onstop = resolve));
    rec.start(250);
    // record until 30 frames were drawn, then stop: the count, not the clock, ends it
    await new Promise((resolve) => {
      const tick = () => {
        draw();
        if (frame >= 30) resolve();
        else requestAnimationFrame(tick);
      };
      requestAnimationFrame(tick);
    });
    rec.stop();
    await stopped;
    const buf = new Uint8Array(await new Blob(chunks).arrayBuffer());
    let s = '';
    for (let i = 0; i < buf.length; i += 0x8000) {
      s += String.fromCharCode.apply(null, buf.subarray(i, i + 0x8000));
    }
    return { png, webm: btoa(s) };
  });
}

function page(videoId) {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>Floe gateway in Chromium</title></head>
<body style="font-family: sans-serif">
<h1>Served by floe-gateway</h1>
<p>An image from this quilt, a video from its own blob.</p>
<img id="img" src="image.png" width="192" height="128">
<video id="video" src="/v1/blobs/${videoId}" preload="auto" muted width="320" height="240"></video>
<pre id="result"></pre>
<script>
const img = document.getElementById('img');
const video = document.getElementById('video');
const seen = { image: null, video: null };
const settle = () => {
  if (seen.image && seen.video) {
    window.floeResult = seen;
    document.getElementById('result').textContent = JSON.stringify(seen);
  }
};
const imageDone = () => {
  seen.image = { ok: img.naturalWidth > 0, width: img.naturalWidth, height: img.naturalHeight };
  settle();
};
if (img.complete) imageDone(); else { img.onload = imageDone; img.onerror = imageDone; }
video.addEventListener('loadeddata', () => {
  seen.video = { ok: true, readyState: video.readyState, width: video.videoWidth, height: video.videoHeight };
  settle();
});
video.addEventListener('error', () => {
  seen.video = { ok: false, error: video.error && video.error.message };
  settle();
});
</script></body></html>`;
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    // this machine's network is closed: keep Chromium from dialling out on its own
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    timeout: TIMEOUT,
  });
  try {
    const p = await browser.newPage();
    p.setDefaultTimeout(TIMEOUT);
    const media = await makeMedia(p);
    const png = Buffer.from(media.png, 'base64');
    const webm = Buffer.from(media.webm, 'base64');
    fs.writeFileSync(path.join(outDir, 'image.png'), png);
    fs.writeFileSync(path.join(outDir, 'video.webm'), webm);

    const v = await put('/v1/blobs?epochs=5', webm);
    const videoId = v.newlyCreated ? v.newlyCreated.blobObject.blobId : v.alreadyCertified.blobId;
    const form = new FormData();
    form.append('index.html', new Blob([page(videoId)], { type: 'text/html' }), 'index.html');
    form.append('image.png', new Blob([png], { type: 'image/png' }), 'image.png');
    const q = await put('/v1/quilts?epochs=5', form);
    const quiltId = q.blobStoreResult.newlyCreated.blobObject.blobId;

    // every request the page makes, with the Range header the browser chose and the status
    const requests = [];
    p.on('response', async (resp) => {
      const req = resp.request();
      const headers = await req.allHeaders().catch(() => ({}));
      requests.push({ url: req.url(), range: headers.range || null, status: resp.status() });
    });
    const pageUrl = `${url}/v1/blobs/by-quilt-id/${quiltId}/index.html`;
    const nav = await p.goto(pageUrl);
    const result = await (await p.waitForFunction(() => window.floeResult)).jsonValue();
    await p.screenshot({ path: path.join(outDir, 'gateway-browser.png') });
    console.log(JSON.stringify({
      page: pageUrl,
      page_status: nav.status(),
      page_type: nav.headers()['content-type'],
      quilt_id: quiltId,
      video_id: videoId,
      ...result,
      requests,
    }));
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
