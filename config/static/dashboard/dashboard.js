// Live updates without a framework: an element with data-poll-url is replaced, every
// data-poll-seconds, by what that URL answers (a server-rendered fragment). Polling pauses
// while the tab is hidden, and stops if the session ended (the answer is then the login page).
(function () {
  "use strict";
  function poll(element) {
    var url = element.getAttribute("data-poll-url");
    var seconds = parseFloat(element.getAttribute("data-poll-seconds") || "5");
    function tick() {
      if (document.hidden) { window.setTimeout(tick, seconds * 1000); return; }
      window.fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (response) {
          if (!response.ok || response.redirected) { element.setAttribute("data-poll-stopped", String(response.status)); return null; }
          return response.text();
        })
        .then(function (html) {
          if (html === null) { return; }
          element.innerHTML = html;
          element.setAttribute("data-polled-at", new Date().toISOString());
          window.setTimeout(tick, seconds * 1000);
        })
        .catch(function () { window.setTimeout(tick, seconds * 2000); });
    }
    window.setTimeout(tick, seconds * 1000);
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll-url]").forEach(poll);
  });
})();
