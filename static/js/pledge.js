// The thank-you page asks for its pledge's status until Stripe's webhook settles it,
// then reloads so the page shows what was recorded. When a charge made on the fast day waits
// for the bank's confirmation, its button opens Stripe.js's confirmCardPayment.
(function () {
  "use strict";
  var box = document.getElementById("confirm-payment");
  if (!box || typeof Stripe === "undefined") { return; }
  var button = document.getElementById("confirm-button");
  var errorBox = document.getElementById("payment-error");
  var stripe = Stripe(box.dataset.publishableKey);
  button.addEventListener("click", async function () {
    button.disabled = true;
    errorBox.hidden = true;
    try {
      var result = await stripe.confirmCardPayment(box.dataset.clientSecret);
      if (result.error) {
        errorBox.textContent = result.error.message || box.dataset.errorGeneric;
        errorBox.hidden = false;
        button.disabled = false;
      }
      // On success the webhook records the gift; the polling below reloads the page.
    } catch (err) {
      errorBox.textContent = box.dataset.errorGeneric;
      errorBox.hidden = false;
      button.disabled = false;
    }
  });
})();
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
