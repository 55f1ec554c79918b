/* The operators' page: reads the JSON endpoints, draws with uPlot, changes nothing. */
"use strict";
(function () {
  const token = new URLSearchParams(location.search).get("token");
  const charts = {};
  const COLOURS = ["#2563eb", "#9ca3af", "#b6bcc6", "#c9ced6", "#d8dce2", "#e4e7ec"];

  function url(path, params) {
    const q = new URLSearchParams(params || {});
    if (token) q.set("token", token);
    const s = q.toString();
    return s ? path + "?" + s : path;
  }
  async function api(path, params) {
    const r = await fetch(url(path, params), { cache: "no-store" });
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return r.json();
  }
  function fmt(v, digits) {
    if (v === null || v === undefined || Number.isNaN(v)) return "\u2013";
    return typeof v === "number" ? v.toFixed(digits === undefined ? 1 : digits) : String(v);
  }
  function rows(el, pairs) {
    el.replaceChildren(...pairs.map(([k, v, cls]) => {
      const tr = document.createElement("tr");
      const a = document.createElement("td"); a.textContent = k;
      const b = document.createElement("td"); b.textContent = v;
      if (cls) b.className = cls;
      tr.append(a, b); return tr;
    }));
  }

  /* payload readers for the last batches' Q3 and statistics (schema 1 and 2); the trends
     come as rows the server reads with edge/web/payloads.py */
  const P = {
    q3(p) {  // schema 2: Q3 cumulative (q3 the fraction per class); schema 1: q3 cumulative
      const c = p.classes || {};
      return { x: c.upper_edges_um || [], y: c.Q3 || (p.schema_version === 1 ? c.q3 : null) || [] };
    },
    stat(p, k) { const s = p.statistics || {}; const v = s[k]; return typeof v === "number" ? v : null; },
    ci(p) { const c = (p.statistics || {}).x50_3_ci95_um; return Array.isArray(c) ? c : [null, null]; },
  };
  // erf (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7): the log-normal Q3 of the fit
  function erf(x) {
    const s = Math.sign(x); x = Math.abs(x);
    const t = 1 / (1 + 0.3275911 * x);
    const y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t
      + 0.254829592) * t * Math.exp(-x * x);
    return s * y;
  }
  function lognormalQ3(x, x50, s) { return 0.5 * (1 + erf(Math.log(x / x50) / (Math.SQRT2 * s))); }

  function draw(id, opts, data) {
    const el = document.getElementById(id);
    const width = Math.max(300, el.clientWidth || 420);
    const old = charts[id];
    if (old && old.series.length === opts.series.length) { old.setData(data); }
    else {
      if (old) old.destroy();
      el.replaceChildren();
      charts[id] = new uPlot({ width: width, height: 240, ...opts }, data, el);
    }
    el.dataset.points = String(data[0].length);
  }

  function drawQ3(batches) {
    // a batch without crystals has no distribution (its Q3 is all zeros): not a curve
    const last = batches.filter(b => P.q3(b).y.some(v => v > 0)).slice(-6);
    document.getElementById("chart-q3").dataset.batches = last.map(b => b.batch_id).join(",");
    if (!last.length) return;
    let xs = [...new Set(last.flatMap(b => P.q3(b).x))].filter(x => x > 0).sort((a, b) => a - b);
    // show the classes where something happens: from just below the first rise of any
    // batch to just above where every batch reaches 1
    const curves = last.map(b => { const c = P.q3(b); return new Map(c.x.map((x, j) => [x, c.y[j]])); });
    const lo = xs.findIndex(x => curves.some(m => (m.get(x) || 0) > 0.001));
    let hi = xs.findIndex(x => curves.every(m => !m.has(x) || m.get(x) >= 0.999));
    if (hi < 0) hi = xs.length - 1;
    if (lo >= 0) xs = xs.slice(Math.max(0, lo - 1), Math.min(xs.length, hi + 2));
    const series = [{ label: "x (\u00b5m)" }], data = [xs];
    last.slice().reverse().forEach((b, i) => {
      const c = P.q3(b), m = new Map(c.x.map((x, j) => [x, c.y[j]]));
      series.push({ label: "batch " + b.batch_id, stroke: COLOURS[Math.min(i, COLOURS.length - 1)],
                    width: i === 0 ? 2.5 : 1.2, spanGaps: true });
      data.push(xs.map(x => (m.has(x) ? m.get(x) : null)));
    });
    const lg = last[last.length - 1].lognormal || {};
    if (lg.x50_3_um && lg.s_lnd) {
      series.push({ label: "log-normal fit", stroke: "#dc2626", width: 1.5, dash: [6, 4] });
      data.push(xs.map(x => lognormalQ3(x, lg.x50_3_um, lg.s_lnd)));
    }
    draw("chart-q3", {
      scales: { x: { time: false, distr: 3 }, y: { range: [0, 1] } },
      axes: [{ label: "x (\u00b5m)" }, { label: "Q3" }], series: series,
    }, data);
  }

  function drawTrends(rows) {
    const t = rows.map(r => r.t_end_s), col = k => rows.map(r => r[k]);
    draw("chart-trend", {
      series: [{}, { label: "x10,3", stroke: "#60a5fa", width: 1.5 },
        { label: "x50,3", stroke: "#1d4ed8", width: 2.5 },
        { label: "x90,3", stroke: "#7c3aed", width: 1.5 },
        { label: "95 % low", stroke: "rgba(29,78,216,.3)", width: 1 },
        { label: "95 % high", stroke: "rgba(29,78,216,.3)", width: 1 }],
      bands: [{ series: [5, 4], fill: "rgba(29,78,216,.15)" }],
      axes: [{}, { label: "\u00b5m" }],
    }, [t, col("x10_3_um"), col("x50_3_um"), col("x90_3_um"), col("x50_3_ci95_low_um"),
        col("x50_3_ci95_high_um")]);
    draw("chart-process", {
      scales: { frac: { range: [0, 1] } },
      series: [{}, { label: "crystals / frame", stroke: "#059669", width: 2 },
        { label: "agglomerate fraction", stroke: "#d97706", width: 2, scale: "frac" }],
      axes: [{}, { label: "crystals / frame" },
        { scale: "frac", side: 1, label: "agglomerate fraction", grid: { show: false } }],
    }, [t, col("crystals_per_frame"), col("agglomerate_fraction")]);
  }

  function showBatch(b, row) {
    document.getElementById("x50").textContent = fmt(P.stat(b, "x50_3_um"));
    const ci = P.ci(b), lg = b.lognormal || {};
    rows(document.getElementById("now"), [
      ["batch", b.batch_id + ", ended " + new Date(b.batch_end).toLocaleString()],
      ["x10,3 / x90,3", fmt(P.stat(b, "x10_3_um")) + " / " + fmt(P.stat(b, "x90_3_um")) + " \u00b5m"],
      ["x50,3 95 % interval", fmt(ci[0]) + " \u2013 " + fmt(ci[1]) + " \u00b5m"],
      ["log-normal", "x50,3 " + fmt(lg.x50_3_um) + " \u00b5m, s_LND " + fmt(lg.s_lnd, 3)],
      ["crystals", fmt((b.crystals || {}).measured, 0) + " in " + fmt((b.frames || {}).used, 0) + " frames"],
      ["crystals / frame", fmt(row.crystals_per_frame)],
      ["agglomerate fraction", fmt(row.agglomerate_fraction, 3)],
    ]);
  }

  function showHealth(s) {
    const badge = document.getElementById("state");
    badge.textContent = (s.state || "?") + (s.healthy === false ? " \u2013 unhealthy" : "");
    badge.className = "badge " + (s.healthy ? "ok" : "bad");
    const src = s.source || {}, be = s.backend || {};
    const conn = "connected" in src ? (src.connected ? "yes" : "no") : (src.type || "\u2013");
    rows(document.getElementById("health"), [
      ["source connected", conn, src.connected === false ? "error" : ""],
      ["backend", (be.name || "\u2013") + (be.precision ? " " + be.precision : "") +
        (be.device ? " on " + be.device : "")],
      ["frames / s", fmt(s.frames_per_s, 2)],
      ["frames analysed", fmt(s.frames_total, 0)],
      ["batches", fmt(s.batches_total, 0) + " closed, " + fmt(s.batches_published, 0) + " published"],
      ["outbox depth", s.outbox_depth === null || s.outbox_depth === undefined ? "no MQTT sink" : String(s.outbox_depth)],
      ["last error", s.last_error || "none", s.last_error ? "error" : ""],
      ["problems", (s.problems || []).join("; ") || "none", (s.problems || []).length ? "error" : ""],
    ]);
  }

  function showOptics(info) {
    document.getElementById("device").textContent = info.device_id + (info.description ? " \u2013 " + info.description : "");
    rows(document.getElementById("optics"), [
      ["pixel size", fmt(info.px_size_um, 4) + " \u00b5m/px"],
      ["calibrated", info.calibrated_at
        ? new Date(info.calibrated_at).toISOString().replace("T", " ").slice(0, 16) + " UTC"
        : "not recorded"],
      ["calibration", info.calibration || "\u2013"],
    ]);
  }

  function showRejected(r) {
    const el = document.getElementById("rejected");
    const reasons = Object.keys(r.counts || {});
    if (!reasons.length) { el.textContent = "none rejected"; return; }
    el.replaceChildren(...reasons.sort().map(reason => {
      const div = document.createElement("div"); div.className = "reason";
      const h = document.createElement("h3");
      h.textContent = reason + ": " + r.counts[reason] + " since start";
      const thumbs = document.createElement("div"); thumbs.className = "thumbs";
      for (const f of (r.frames || {})[reason] || []) {
        const fig = document.createElement("figure");
        const img = document.createElement("img");
        img.src = url("api/rejected/" + encodeURIComponent(reason) + "/" + f.index + ".png",
                      { t: f.time });
        img.alt = f.name;
        const cap = document.createElement("figcaption"); cap.textContent = f.name;
        fig.append(img, cap); thumbs.append(fig);
      }
      div.append(h, thumbs); return div;
    }));
  }

  let info = null;
  // what the last refresh drew: batches, trends and rejected frames are read again only
  // when the status says they changed (the appliance serves a second-by-second page cheaply)
  let shownBatch, shownRejected;
  async function refresh() {
    if (document.hidden) {  // a tab in the background costs the appliance nothing
      setTimeout(refresh, 1000);
      return;
    }
    try {
      // read every time: a reload (SIGHUP, `calibrate --write-config`) changes the pixel
      // size and its calibration under a page that stays open at the skid
      info = await api("api/info");
      showOptics(info);
      const status = await api("api/status");
      showHealth(status);
      const rejectedKey = JSON.stringify(status.frames_rejected_total || {});
      if (rejectedKey !== shownRejected) {
        showRejected(await api("api/rejected"));
        shownRejected = rejectedKey;
      }
      const batchKey = String(status.last_batch_id) + "/" + String(status.batches_total);
      if (batchKey !== shownBatch) {
        const [batches, trend] = await Promise.all([
          api("api/batches", { limit: 6 }), api("api/trend", { hours: info.trend_hours })]);
        if (batches.length) {
          const last = batches[batches.length - 1];
          showBatch(last, trend.find(r => r.batch_id === last.batch_id) || {});
          drawQ3(batches);
        }
        if (trend.length) drawTrends(trend);
        shownBatch = batchKey;
      }
      const img = document.getElementById("frame");
      img.onerror = () => { document.getElementById("frame-note").textContent = "no frame yet"; };
      img.onload = () => {
        img.dataset.width = String(img.naturalWidth);
        document.getElementById("frame-note").textContent = "";
      };
      img.src = url("api/frames/latest.jpg", { t: Date.now() });
      document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (e) {
      document.getElementById("updated").textContent = String(e);
    }
    setTimeout(refresh, 1000 * ((info && info.refresh_s) || 2));
  }
  refresh();
})();
