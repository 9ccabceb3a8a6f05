// While a fast day is live its dashboard keeps itself current: every 30 seconds it asks the
// JSON figures endpoint whether anything changed and, if so, fetches the page again and
// swaps in the new figures, chart and tables. The server draws everything; without
// JavaScript the page is complete and has a Refresh link.
(function () {
  "use strict";
  var region = document.getElementById("dashboard-live");
  if (!region || !region.hasAttribute("data-live")) { return; }
  var jsonUrl = region.dataset.jsonUrl;
  var interval = (parseInt(region.dataset.interval, 10) || 30) * 1000;
  var timer = null;

  function schedule() {
    window.clearTimeout(timer);
    timer = window.setTimeout(check, interval);
  }

  // "Updated at 14:03:30" in the day's own time zone, after every successful check.
  function stamp(isoTime) {
    var label = document.querySelector("[data-updated]");
    if (!label || !label.dataset.template || !window.Intl) { return; }
    try {
      var time = new Intl.DateTimeFormat(document.documentElement.lang || undefined, {
        hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
        timeZone: label.dataset.timezone
      }).format(new Date(isoTime));
      label.textContent = label.dataset.template.replace("{time}", time);
    } catch (e) { /* an unknown zone in an old browser: keep the server's stamp */ }
  }

  // The parts of the page that are redrawn: the header (status, time) and the figures.
  var parts = ["dash-head", "dashboard-live"];

  function focusInside() {
    var active = document.activeElement;
    return parts.some(function (id) {
      var part = document.getElementById(id);
      return part && active && active !== document.body && part.contains(active);
    });
  }

  function swap(html) {
    var page = new DOMParser().parseFromString(html, "text/html");
    var fresh = page.getElementById("dashboard-live");
    if (!fresh) { return; }
    parts.forEach(function (id) {
      var mine = document.getElementById(id);
      var theirs = page.getElementById(id);
      if (mine && theirs) { mine.innerHTML = theirs.innerHTML; }
    });
    region.dataset.state = fresh.dataset.state;
    if (!fresh.hasAttribute("data-live")) {
      // The day has closed: one last picture, then stop.
      region.removeAttribute("data-live");
      window.clearTimeout(timer);
      timer = null;
    }
  }

  function check() {
    if (document.hidden) { return; }  // resumed by visibilitychange
    fetch(jsonUrl, {headers: {"Accept": "application/json"}, credentials: "same-origin"})
      .then(function (response) {
        if (!response.ok) { throw new Error(response.status); }
        return response.json();
      })
      .then(function (figures) {
        var closed = figures.fast_day.status !== "live";
        stamp(figures.generated_at);
        // Never pull the page out from under someone using a link or control in it.
        if ((figures.state !== region.dataset.state || closed) && !focusInside()) {
          return fetch(window.location.href, {credentials: "same-origin"})
            .then(function (response) { return response.text(); })
            .then(swap);
        }
      })
      .catch(function () { /* a missed beat; the next one tries again */ })
      .then(function () { if (region.hasAttribute("data-live")) { schedule(); } });
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && region.hasAttribute("data-live")) { check(); }
  });
  schedule();
})();
