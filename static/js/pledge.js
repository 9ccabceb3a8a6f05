// The thank-you page asks for its pledge's status until Stripe's webhook settles it,
// then reloads so the page shows what was recorded.
(function () {
  "use strict";
  var root = document.getElementById("pledge");
  if (!root) { return; }
  var url = root.dataset.statusUrl;
  var delay = 1500;
  var started = Date.now();

  function poll() {
    fetch(url, {headers: {"Accept": "application/json"}, credentials: "same-origin"})
      .then(function (response) { return response.json(); })
      .then(function (state) {
        if (state.status !== root.dataset.status) { window.location.reload(); return; }
        schedule();
      })
      .catch(schedule);
  }

  function schedule() {
    // Poll quickly at first, then back off; stop after ten minutes.
    if (Date.now() - started > 600000) { return; }
    delay = Math.min(delay * 1.3, 10000);
    window.setTimeout(poll, delay);
  }

  window.setTimeout(poll, delay);
})();
