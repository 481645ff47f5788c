// apflow dashboard: countdowns, times in the viewer's zone, and in-place refresh of the parts
// of a page marked data-live. No library, nothing sent anywhere but this server.
(function () {
  "use strict";
  var REFRESH_MS = 5000;
  var viewerZone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

  function countdownText(ms) {
    if (ms <= 0) return "due";
    var s = Math.floor(ms / 1000), d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600),
        m = Math.floor(s % 3600 / 60), r = s % 60;
    if (d > 0) return "in " + d + "d " + h + "h";
    if (h > 0) return "in " + h + "h " + String(m).padStart(2, "0") + "m";
    return "in " + m + "m " + String(r).padStart(2, "0") + "s";
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll(".countdown[data-until]").forEach(function (el) {
      var text = countdownText(Date.parse(el.getAttribute("data-until")) - now);
      if (el.textContent !== text) el.textContent = text;
    });
  }

  // "Sun 2026-12-06 08:00:00 CET", as the server writes the task's own zone.
  var parts = new Intl.DateTimeFormat("en-US", {
    weekday: "short", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
    minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZoneName: "short"
  });
  function viewerText(date) {
    var p = {};
    parts.formatToParts(date).forEach(function (part) { p[part.type] = part.value; });
    return p.weekday + " " + p.year + "-" + p.month + "-" + p.day + " " + p.hour + ":" +
      p.minute + ":" + p.second + " " + p.timeZoneName;
  }

  function localTimes(root) {
    root.querySelectorAll(".viewer-time[data-utc]").forEach(function (el) {
      if (el.getAttribute("data-zone") === viewerZone) return; // the same zone: said once
      el.textContent = "your time: " + viewerText(new Date(el.getAttribute("data-utc")));
    });
    document.querySelectorAll(".viewer-zone").forEach(function (el) { el.textContent = "your zone (" + viewerZone + ")"; });
  }

  function refresh() {
    var live = document.querySelectorAll("[data-live][id]");
    if (!live.length || document.hidden || document.body.hasAttribute("data-no-refresh")) return;
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (response.redirected || !response.ok) return null; // signed out or gone: leave it
        return response.text();
      })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html");
        live.forEach(function (el) {
          var replacement = fresh.getElementById(el.id);
          if (replacement && replacement.innerHTML !== el.innerHTML) {
            el.innerHTML = replacement.innerHTML;
            localTimes(el);
          }
        });
        tick();
      })
      .catch(function () { /* offline for a moment: the next round tries again */ });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    tick();
    setInterval(tick, 1000);
    setInterval(refresh, REFRESH_MS);
  });
})();
