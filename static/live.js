// Live stats for the stream page: polls /api/stats and /api/detections once a
// second and draws FPS and inference time over the last five minutes.
(function () {
  "use strict";
  var panel = document.getElementById("panel");
  var token = panel.dataset.token;
  var HISTORY = 300;
  var history = [];

  function url(path) {
    return token ? path + "?token=" + encodeURIComponent(token) : path;
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
    text("inference", s.inference_ms.toFixed(1) + " ms" +
         (s.frames_in_flight > 1 ? " · " + s.frames_in_flight + " frames at once" : ""));
    text("viewers", s.viewers);
    text("backend", s.backend);
    text("model", s.model);
    text("source", s.source + (s.width ? " · " + s.width + "×" + s.height : ""));
    var error = document.getElementById("error");
    error.hidden = !s.last_error;
    error.textContent = s.last_error || "";
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
      li.textContent = det.label + " " + (det.score * 100).toFixed(0) + "% at [" +
        det.box.map(function (v) { return Math.round(v); }).join(", ") + "]";
      list.appendChild(li);
    });
  }

  // A stream that broke (server restart, network) is reopened: on the image's error
  // event, and when the stats come back after an outage or show a restarted
  // pipeline (another started_at), since a stream cut after its first frame just
  // freezes without an error event. A changed query string makes the browser open
  // a new connection rather than reuse the old picture.
  // A hidden page (a background tab, a minimised window) takes no stream and asks
  // for no stats: browsers keep downloading the stream, which costs the device
  // bandwidth and a viewer's place, and either keeps --idle-stop from pausing the
  // detector. The stream is reopened when the page is shown again.
  var img = document.getElementById("stream");
  var streamUrl = img.src;
  var outage = false;
  var startedAt = null;

  function reopenStream() {
    if (document.hidden) { return; }
    img.src = streamUrl + (streamUrl.indexOf("?") < 0 ? "?" : "&") + "reopen=" + Date.now();
  }

  img.addEventListener("error", function () { setTimeout(reopenStream, 2000); });
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) { img.removeAttribute("src"); } else { reopenStream(); }
  });
  if (document.hidden) { img.removeAttribute("src"); }  // opened in a background tab

  function poll() {
    if (document.hidden) {  // nobody sees it; and /api/detections would keep --idle-stop from pausing
      setTimeout(poll, 1000);
      return;
    }
    Promise.all([
      fetch(url(panel.dataset.stats)).then(function (r) { return r.json(); }),
      fetch(url(panel.dataset.detections)).then(function (r) { return r.json(); })
    ]).then(function (results) {
      if (results[0].error) { throw new Error(results[0].error); }
      if (outage || (startedAt !== null && results[0].started_at !== startedAt)) { reopenStream(); }
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
