// The grid of cameras: each tile's state and FPS from /api/stats once a second; a
// stream that failed (the server restarting, --max-viewers) is opened again after 2 s.
(function () {
  "use strict";
  var grid = document.getElementById("grid");
  var token = grid.dataset.token;
  var statsUrl = grid.dataset.stats + (token ? "?token=" + encodeURIComponent(token) : "");

  Array.prototype.forEach.call(grid.querySelectorAll(".tile img"), function (img) {
    var src = img.src;
    img.addEventListener("error", function () {
      setTimeout(function () { img.src = src; }, 2000);
    });
  });

  function poll() {
    fetch(statsUrl).then(function (r) { return r.json(); }).then(function (stats) {
      Object.keys(stats.cameras || {}).forEach(function (name) {
        var tile = grid.querySelector('[data-camera="' + name + '"]');
        if (!tile) { return; }
        var camera = stats.cameras[name];
        tile.querySelector(".state").textContent = camera.state;
        tile.querySelector(".fps").textContent = camera.fps.toFixed(1);
        tile.classList.toggle("down", camera.state !== "streaming" && camera.state !== "idle");
        tile.title = camera.last_error || camera.source;
      });
    }).catch(function () {}).then(function () { setTimeout(poll, 1000); });
  }
  poll();
})();
