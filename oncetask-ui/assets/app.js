// oncetask dashboard: live updates of the overview, by polling the server's
// fragment (already escaped HTML) every 2 seconds. No other script runs.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) { return; }
  var status = document.getElementById("live-status");
  var url = live.getAttribute("data-src");
  function say(text) { if (status) { status.textContent = text; } }
  function tick() {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        return response.text().then(function (html) {
          live.innerHTML = html;
          say(response.ok ? "" : "The store answered with an error; retrying.");
        });
      })
      .catch(function () { say("The dashboard cannot be reached; retrying."); })
      .then(function () { window.setTimeout(tick, 2000); });
  }
  window.setTimeout(tick, 2000);
})();
