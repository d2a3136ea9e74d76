// The status page's script (an ES module, no build step): polls `/_/stats` and draws
// the page. Bytes and ages are formatted by the same code as the CLI (src/format.ts),
// served at `_/assets/format.js`.
import { formatAge, formatBytes as bytes, formatPct as pct } from "./format.js";
const $ = (id) => document.getElementById(id);
const COLORS = { lan: "#2e7d32", peer: "#66bb6a", upstream: "#1565c0", unknown: "#757575" };
// Bytes that came over the LAN: from LAN caches and from peers (other machines' shares; absent before peers).
const local = (x) => x.lanBytes + (x.peerBytes || 0);
const PALETTE = ["#2e7d32", "#66bb6a", "#1565c0", "#42a5f5", "#6a1b9a", "#ef6c00", "#757575"];

const ago = (iso) => formatAge(iso, Date.now());
function setText(id, text, value) {
  const el = $(id);
  el.textContent = text;
  if (value !== undefined) el.dataset.value = String(value);
}

function canvas2d(el) {
  const dpr = window.devicePixelRatio || 1;
  const w = el.clientWidth, h = el.clientHeight;
  el.width = Math.round(w * dpr); el.height = Math.round(h * dpr);
  const ctx = el.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px system-ui, sans-serif";
  return { ctx, w, h };
}

function drawBytes(origins) {
  const { ctx, w, h } = canvas2d($("chart-bytes"));
  const rows = origins.map((o) => ({ name: o.name, kind: o.kind, v: o.bytes }));
  const max = Math.max(1, ...rows.map((r) => r.v));
  const rowH = Math.min(36, (h - 10) / Math.max(1, rows.length));
  rows.forEach((r, i) => {
    const y = 5 + i * rowH;
    const bw = (w - 220) * (r.v / max);
    ctx.fillStyle = COLORS[r.kind] || COLORS.unknown;
    ctx.fillRect(120, y + 4, Math.max(bw, r.v > 0 ? 2 : 0), rowH - 10);
    ctx.fillStyle = "#1b1b1b";
    ctx.textBaseline = "middle";
    ctx.fillText(r.name.length > 18 ? r.name.slice(0, 17) + "…" : r.name, 4, y + rowH / 2);
    ctx.fillText(bytes(r.v), 124 + bw + 4, y + rowH / 2);
  });
  $("chart-bytes").dataset.drawn = String(rows.length);
}

function drawRate(hourly) {
  const { ctx, w, h } = canvas2d($("chart-rate"));
  const left = 40, right = 40, top = 8, bottom = 22;
  const pw = w - left - right, ph = h - top - bottom;
  const max = Math.max(1, ...hourly.map((x) => local(x) + x.upstreamBytes));
  const bw = pw / hourly.length;
  ctx.strokeStyle = "#ccc"; ctx.beginPath(); ctx.moveTo(left, top + ph); ctx.lineTo(left + pw, top + ph); ctx.stroke();
  hourly.forEach((x, i) => {
    const lanH = ph * (local(x) / max), upH = ph * (x.upstreamBytes / max);
    const bx = left + i * bw + 1;
    ctx.fillStyle = COLORS.lan; ctx.fillRect(bx, top + ph - lanH, bw - 2, lanH);
    ctx.fillStyle = COLORS.upstream; ctx.fillRect(bx, top + ph - lanH - upH, bw - 2, upH);
  });
  ctx.strokeStyle = "#ff8f00"; ctx.lineWidth = 2; ctx.beginPath();
  let started = false;
  hourly.forEach((x, i) => {
    const t = local(x) + x.upstreamBytes;
    if (!t) return;
    const px = left + (i + 0.5) * bw, py = top + ph * (1 - local(x) / t);
    if (!started) { ctx.moveTo(px, py); started = true; } else ctx.lineTo(px, py);
    ctx.fillStyle = "#ff8f00"; ctx.fillRect(px - 2, py - 2, 4, 4);
  });
  ctx.stroke(); ctx.lineWidth = 1;
  ctx.fillStyle = "#666"; ctx.textBaseline = "alphabetic";
  ctx.fillText(bytes(max), 2, top + 10);
  ctx.fillText("100%", w - right + 4, top + 10);
  ctx.fillText("0%", w - right + 4, top + ph);
  for (let i = 0; i < hourly.length; i += 6) ctx.fillText(hourly[i].hour.slice(11) + "h", left + i * bw, h - 6);
  $("chart-rate").dataset.drawn = String(hourly.filter((x) => local(x) + x.upstreamBytes > 0).length);
}

function drawHealth(origins) {
  const { ctx, w, h } = canvas2d($("chart-health"));
  const live = origins.filter((o) => o.configured);
  const cw = Math.min(150, w / Math.max(1, live.length));
  live.forEach((o, i) => {
    const cx = i * cw + cw / 2, cy = h / 2 - 10, r = Math.min(28, h / 4);
    ctx.beginPath(); ctx.arc(cx, cy, r, 0, Math.PI * 2);
    ctx.fillStyle = o.state === "up" ? "#2e7d32" : "#c62828"; ctx.fill();
    ctx.fillStyle = "#fff"; ctx.textAlign = "center"; ctx.textBaseline = "middle";
    ctx.font = "bold 12px system-ui, sans-serif"; ctx.fillText(o.state.toUpperCase(), cx, cy);
    ctx.fillStyle = "#1b1b1b"; ctx.font = "11px system-ui, sans-serif";
    ctx.fillText(o.name.length > 22 ? o.name.slice(0, 21) + "…" : o.name, cx, cy + r + 12);
    ctx.textAlign = "start";
  });
  $("chart-health").dataset.drawn = String(live.length);
}

function render(s) {
  const p = s.periods;
  setText("rate-today", pct(p.today.lanHitRate.byBytes), p.today.lanHitRate.byBytes);
  setText("rate-week", pct(p.last7Days.lanHitRate.byBytes), p.last7Days.lanHitRate.byBytes);
  setText("rate-install", pct(p.sinceInstall.lanHitRate.byBytes), p.sinceInstall.lanHitRate.byBytes);
  setText("rate-today-narinfo", "by narinfo hits: " + pct(p.today.lanHitRate.byNarinfo));
  setText("rate-week-narinfo", "by narinfo hits: " + pct(p.last7Days.lanHitRate.byNarinfo));
  setText("rate-install-narinfo", "by narinfo hits: " + pct(p.sinceInstall.lanHitRate.byNarinfo), p.sinceInstall.lanHitRate.byNarinfo);
  setText("bytes-kept", bytes(p.sinceInstall.bytesKeptOffInternet), p.sinceInstall.bytesKeptOffInternet);
  setText("bytes-upstream", bytes(p.sinceInstall.nar.upstreamBytes), p.sinceInstall.nar.upstreamBytes);
  setText("narinfo-requests", String(p.sinceInstall.client.narinfoRequests), p.sinceInstall.client.narinfoRequests);
  $("meta").textContent = "up " + s.uptimeSeconds + " s · stats since " + new Date(s.installedAt).toLocaleString() + (s.persistence.file ? " · saved to " + s.persistence.file : " · not saved");

  const tbody = $("origins").querySelector("tbody");
  tbody.textContent = "";
  const rows = s.origins.map((o) => {
    const c = p.sinceInstall.origins[o.name];
    return { ...o, bytes: c ? c.nar.bytes : 0, hits: c ? c.narinfo.hit : 0 };
  });
  for (const o of rows) {
    const tr = document.createElement("tr");
    tr.dataset.origin = o.name;
    const cells = [o.name, o.kind, null, ago(o.since) + (o.reason ? " (" + o.reason + ")" : ""), String(o.hits), bytes(o.bytes)];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      if (i === 2) {
        const b = document.createElement("span");
        b.className = "badge " + o.state; b.textContent = o.state; td.appendChild(b);
        td.dataset.field = "state";
      } else td.textContent = text;
      if (i === 4) { td.className = "num"; td.dataset.field = "hits"; td.dataset.value = String(o.hits); }
      if (i === 5) { td.className = "num"; td.dataset.field = "bytes"; td.dataset.value = String(o.bytes); }
      tr.appendChild(td);
    });
    tbody.appendChild(tr);
  }
  drawHealth(s.origins);
  drawBytes(rows);
  drawRate(s.hourly);

  const ol = $("fallbacks");
  ol.textContent = "";
  for (const f of s.recentFallbacks.slice(0, 20)) {
    const li = document.createElement("li");
    const why = f.what === "nar"
      ? "NAR download moved from " + f.from + " to " + f.to
      : f.what === "quarantine"
      ? "NAR from " + f.from + " quarantined: " + f.reason
      : "narinfo from " + f.to + (f.lan && f.lan.length ? " (" + f.lan.map((l) => l.origin + ": " + l.outcome).join(", ") + ")" : "");
    li.textContent = new Date(f.at).toLocaleTimeString() + " · " + (f.storeHash ? f.storeHash.slice(0, 12) + " · " : "") + why;
    li.dataset.what = f.what;
    ol.appendChild(li);
  }
  $("no-fallbacks").hidden = s.recentFallbacks.length > 0;
  document.body.dataset.generatedAt = s.generatedAt;
}

// This machine's share (GET /_/share; docs/sharing.md): what it gave other machines, and to whom.
function renderShare(share) {
  $("share").hidden = !share.enabled;
  if (!share.enabled) return;
  const t = share.totals;
  const refused = t.refused.network + t.refused.busy + t.refused.rate;
  setText("share-summary", "on " + (share.urls.join(", ") || "no private address yet") + " · paths signed by " + share.keyNames.join(", ") +
    " · " + t.nars + " NARs (" + bytes(t.bytes) + ") to " + share.clients.length + " machines · " + t.narinfoNotShared + " asked for paths not shared" +
    (refused ? " · " + refused + " requests refused" : ""), t.bytes);
  const tbody = $("share-clients").querySelector("tbody");
  tbody.textContent = "";
  for (const c of share.clients) {
    const tr = document.createElement("tr");
    tr.dataset.client = c.client;
    [c.client, String(c.narinfoServed), String(c.nars), bytes(c.bytes), String(c.refused), ago(c.lastSeen)].forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (i > 0 && i < 5) td.className = "num";
      if (i === 3) { td.dataset.field = "bytes"; td.dataset.value = String(c.bytes); }
      tr.appendChild(td);
    });
    tbody.appendChild(tr);
  }
}

const refreshMs = Math.max(500, Number(new URLSearchParams(location.search).get("refresh")) || 5000);
async function tick() {
  try {
    const res = await fetch("_/stats", { cache: "no-store" });
    if (!res.ok) throw new Error("HTTP " + res.status);
    const share = await fetch("_/share", { cache: "no-store" }).then((r) => (r.ok ? r.json() : { enabled: false }), () => ({ enabled: false }));
    renderShare(share);
    render(await res.json());
    $("error").textContent = "";
  } catch (err) {
    $("error").textContent = "cannot reach the proxy: " + err.message;
  } finally {
    setTimeout(tick, refreshMs);
  }
}
tick();
