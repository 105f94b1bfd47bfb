// oncetask dashboard: live updates of the overview, by polling the server's
// fragment (already escaped HTML) at the page's refresh interval. While the
// store or the dashboard cannot be reached, the retries back off (doubling,
// up to data-max-retry-ms), and the first success goes back to the
// interval. No other script runs.
(function () {
  "use strict";
  // The page of a store that cannot be read: ask for it again with backoff
  // (doubling up to data-max-retry-ms), reload once it answers.
  var retry = document.getElementById("retry");
  if (retry) {
    var page = new URL(window.location.pathname + window.location.search, window.location.origin).href;
    var wait = parseInt(retry.getAttribute("data-retry-ms"), 10) || 2000;
    var cap = Math.max(parseInt(retry.getAttribute("data-max-retry-ms"), 10) || 30000, wait);
    var again = function () {
      fetch(page, { credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          if (response.ok) { window.location.reload(); return; }
          wait = Math.min(wait * 2, cap);
          retry.setAttribute("data-next-ms", String(wait));
          window.setTimeout(again, wait);
        })
        .catch(function () {
          wait = Math.min(wait * 2, cap);
          retry.setAttribute("data-next-ms", String(wait));
          window.setTimeout(again, wait);
        });
    };
    retry.setAttribute("data-next-ms", String(wait));
    window.setTimeout(again, wait);
    return;
  }
  var live = document.getElementById("live");
  if (!live) { return; }
  var status = document.getElementById("live-status");
  // Against the origin, not the page's address: a page opened as
  // http://user:token@host/ would give a URL with credentials, which fetch
  // refuses.
  var url = new URL(live.getAttribute("data-src"), window.location.origin).href;
  var every = parseInt(live.getAttribute("data-refresh-ms"), 10) || 2000;
  var longest = Math.max(parseInt(live.getAttribute("data-max-retry-ms"), 10) || 30000, every);
  var delay = every;
  var failures = 0;
  function say(text) {
    if (status) {
      status.textContent = text;
      status.className = text ? "bad" : "";
    }
  }
  function seconds(ms) {
    return ms < 1000 ? ms + " ms" : (Math.round(ms / 100) / 10) + " s";
  }
  // Schedules the next read: the interval after a success, else twice the
  // last wait (the first retry waits the interval).
  function next(problem) {
    if (problem) {
      delay = failures === 0 ? every : Math.min(delay * 2, longest);
      failures += 1;
      say(problem + " Retrying in " + seconds(delay) + ".");
    } else {
      delay = every;
      failures = 0;
      say("");
    }
    live.setAttribute("data-next-ms", String(delay));
    window.setTimeout(tick, delay);
  }
  function tick() {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        var type = response.headers.get("Content-Type") || "";
        // Only the fragment is HTML (200, or 503 saying what the store
        // answered); anything else (a refused token, a proxy's error page)
        // keeps the last counts on the page and is only said.
        if (type.indexOf("text/html") !== 0) {
          return next("The dashboard answered " + response.status + ".");
        }
        return response.text().then(function (html) {
          live.innerHTML = html;
          next(response.ok ? null : "The store cannot be read.");
        });
      })
      .catch(function () { next("The dashboard cannot be reached."); });
  }
  window.setTimeout(tick, delay);
})();
