// Live stats for the stream page: polls /api/stats and /api/detections once a
// second and draws FPS and inference time over the last five minutes.
(function () {
  "use strict";
  var panel = document.getElementById("panel");
  var token = panel.dataset.token;
  var HISTORY = 300;
  var history = [];

  function url(path, query) {
    var params = new URLSearchParams(query);
    if (token) { params.set("token", token); }
    var text = params.toString();
    return text ? path + "?" + text : path;
  }

  function text(id, value) {
    document.getElementById(id).textContent = value;
  }

  function drawChart() {
    var canvas = document.getElementById("chart");
    var ctx = canvas.getContext("2d");
    var w = canvas.width, h = canvas.height;
    ctx.clearRect(0, 0, w, h);
    var maxFps = 1, maxMs = 1;
    history.forEach(function (p) { maxFps = Math.max(maxFps, p.fps); maxMs = Math.max(maxMs, p.ms); });
    [["fps", maxFps * 1.2, "#5fd35f"], ["ms", maxMs * 1.2, "#ffb347"]].forEach(function (series) {
      ctx.strokeStyle = series[2];
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      history.forEach(function (p, i) {
        var x = w - (history.length - 1 - i) * (w / (HISTORY - 1));
        var y = h - (p[series[0]] / series[1]) * (h - 14) - 2;
        if (i === 0) { ctx.moveTo(x, y); } else { ctx.lineTo(x, y); }
      });
      ctx.stroke();
    });
    ctx.fillStyle = "#8a96a3";
    ctx.font = "11px sans-serif";
    ctx.fillText("max " + maxFps.toFixed(1) + " FPS · " + maxMs.toFixed(0) + " ms", 4, 11);
  }

  function showStats(s) {
    text("state", s.state);
    text("fps", s.fps.toFixed(1));
    text("inference", !s.frames_inferred ? "–" : s.inference_ms.toFixed(1) + " ms" +  // none yet: no 0.0 ms
         (s.frames_in_flight > 1 ? " · " + s.frames_in_flight + " frames at once" : ""));
    text("viewers", s.viewers);
    text("backend", s.backend);
    text("model", s.model);
    text("source", s.source + (s.width ? " · " + s.width + "×" + s.height : ""));
    var error = document.getElementById("error");
    var full = streamRefused && s.max_viewers && s.viewers >= s.max_viewers;
    var message = full ? "no place to watch is free (--max-viewers " + s.max_viewers + "); this page tries " +
      "again every 2 s" : s.last_error;
    error.hidden = !message;
    error.textContent = message || "";
    history.push({ fps: s.fps, ms: s.inference_ms });
    if (history.length > HISTORY) { history.shift(); }
    drawChart();
  }

  function showDetections(d) {
    var list = document.getElementById("detections");
    list.innerHTML = "";
    if (!d.detections.length) {
      list.innerHTML = "<li>none</li>";
      return;
    }
    d.detections.forEach(function (det) {
      var li = document.createElement("li");
      li.textContent = det.label + (det.id ? " #" + det.id : "") + " " + (det.score * 100).toFixed(0) + "% at [" +
        det.box.map(function (v) { return Math.round(v); }).join(", ") + "]";
      list.appendChild(li);
    });
  }

  // A stream that broke (server restart, network) is reopened: on the image's error
  // event, and when the stats come back after an outage, show a restarted pipeline
  // (another started_at), or say twice that the server no longer streams to this
  // page's viewer name (a laptop that slept, a phone that changed networks), since a
  // stream cut after its first frame just freezes without an error event. Each
  // opening has a new name, which also makes the browser open a new connection
  // rather than reuse the old picture.
  // A hidden page (a background tab, a minimised window) takes no stream and asks
  // for no stats: browsers keep downloading the stream, which costs the device
  // bandwidth and a viewer's place, and either keeps --idle-stop from pausing the
  // detector. The stream is reopened when the page is shown again.
  var img = document.getElementById("stream");
  var streamUrl = new URL(img.src);
  var viewer = streamUrl.searchParams.get("viewer");
  // Whether the stats have said that the server streams to `viewer`: the picture cannot tell,
  // as Chromium fires its load event once, at the first frame, maybe before this script ran.
  var streamed = false;
  var streamRefused = false;  // the image failed and has not streamed since (the server full?)
  var notStreamed = 0;  // polls in a row that found the server not streaming to `viewer`
  var outage = false;
  var startedAt = null;

  function reopenStream() {
    if (document.hidden) { return; }
    viewer = Math.random().toString(36).slice(2) + Date.now().toString(36);
    streamUrl.searchParams.set("viewer", viewer);
    streamed = false;
    notStreamed = 0;
    img.src = streamUrl.href;
  }

  function streamFailed() {
    streamRefused = true;
    setTimeout(reopenStream, 2000);
  }
  img.addEventListener("load", function () { streamRefused = false; });
  img.addEventListener("error", streamFailed);
  if (img.complete && !img.naturalWidth && img.getAttribute("src")) {
    streamFailed();  // refused before this script was there to hear it
  }
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) { img.removeAttribute("src"); } else { reopenStream(); }
  });
  if (document.hidden) { img.removeAttribute("src"); }  // opened in a background tab

  function poll() {
    if (document.hidden) {  // nobody sees it; and /api/detections would keep --idle-stop from pausing
      setTimeout(poll, 1000);
      return;
    }
    var asked = viewer;
    Promise.all([
      fetch(url(panel.dataset.stats, {viewer: asked})).then(function (r) { return r.json(); }),
      fetch(url(panel.dataset.detections)).then(function (r) { return r.json(); })
    ]).then(function (results) {
      if (results[0].error) { throw new Error(results[0].error); }
      var current = asked === viewer;
      if (current && results[0].viewer_connected === true) {
        streamed = true;
        streamRefused = false;
      }
      var cut = streamed && current && results[0].viewer_connected === false;
      notStreamed = cut ? notStreamed + 1 : 0;
      if (outage || (startedAt !== null && results[0].started_at !== startedAt) || notStreamed >= 2) {
        reopenStream();
      }
      outage = false;
      startedAt = results[0].started_at;
      showStats(results[0]);
      showDetections(results[1]);
    }).catch(function (err) {
      outage = true;
      var error = document.getElementById("error");
      error.hidden = false;
      error.textContent = "stats unavailable: " + err.message;
    }).then(function () { setTimeout(poll, 1000); });
  }

  poll();
})();
