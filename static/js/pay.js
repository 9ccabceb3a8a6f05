// The card step: save the card with Stripe (confirmCardSetup), then ask our server to
// charge it, and authenticate with confirmCardPayment only if the bank asks for it. For a
// pledge charged on the fast day, the server is told the card is saved, and nothing more.
(function () {
  "use strict";
  var form = document.getElementById("payment");
  if (!form) { return; }

  var data = form.dataset;
  if (typeof Stripe === "undefined") {
    // Stripe.js did not load (blocked or offline): say so, rather than letting the
    // button submit the form and quietly reload the page.
    var missing = document.getElementById("payment-error");
    missing.textContent = data.errorGeneric;
    missing.hidden = false;
    form.addEventListener("submit", function (event) { event.preventDefault(); });
    return;
  }
  var stripe = Stripe(data.publishableKey);
  var card = stripe.elements().create("card");
  card.mount("#card-element");

  var button = document.getElementById("pay-button");
  var errorBox = document.getElementById("payment-error");
  var busy = document.getElementById("payment-busy");
  var clientSecret = data.clientSecret;
  // After a network failure at the charge step the card is already saved: charge again
  // without asking for it (the server's idempotency key makes a second charge impossible).
  var cardSaved = false;
  // Once the gift is charged the page is leaving: keep the button disabled so a second
  // click cannot ask for the charge again while the thank-you page loads.
  var leaving = false;

  function showError(message) {
    errorBox.textContent = message || "";
    errorBox.hidden = !message;
    if (message) { errorBox.focus && errorBox.focus(); }
  }

  function setBusy(on) {
    button.disabled = on;
    busy.hidden = !on;
  }

  function post(url) {
    return fetch(url, {
      method: "POST",
      headers: {"X-CSRFToken": data.csrfToken, "Accept": "application/json"},
      credentials: "same-origin"
    }).then(function (response) {
      return response.json().catch(function () { return {status: "unavailable", message: data.errorGeneric}; });
    });
  }

  function newCardAttempt() {
    cardSaved = false;
    return post(data.setupUrl).then(function (result) {
      if (result.client_secret) { clientSecret = result.client_secret; }
    });
  }

  async function submit(event) {
    event.preventDefault();
    showError("");
    setBusy(true);
    try {
      if (!cardSaved) {
        var setup = await stripe.confirmCardSetup(clientSecret, {payment_method: {card: card}});
        if (setup.error) {
          showError(setup.error.message || data.errorGeneric);
          await newCardAttempt();
          return;
        }
        cardSaved = true;
      }
      if (data.scheduleUrl) {
        // A pledge for the fast day: the card is saved; the server records the pledge and the
        // scheduler charges it on the day. No PaymentIntent is made from this page.
        var scheduled = await post(data.scheduleUrl);
        if (scheduled.status !== "scheduled" || !scheduled.next) {
          showError(scheduled.message || data.errorGeneric);
          if (scheduled.status === "failed") { await newCardAttempt(); }
          return;
        }
        leaving = true;
        window.location.assign(scheduled.next);
        return;
      }
      var result = await post(data.chargeUrl);
      if (result.status === "requires_action") {
        var auth = await stripe.confirmCardPayment(result.client_secret);
        if (auth.error) {
          showError(auth.error.message || data.errorGeneric);
          await newCardAttempt();
          return;
        }
      } else if (result.status === "failed") {
        showError(result.message || data.errorGeneric);
        await newCardAttempt();
        return;
      } else if (result.status === "unavailable" || !result.next) {
        showError(result.message || data.errorGeneric);
        return;
      }
      leaving = true;
      window.location.assign(result.next);
    } catch (err) {
      showError(data.errorGeneric);
    } finally {
      if (!leaving) { setBusy(false); }
    }
  }

  form.addEventListener("submit", submit);
})();
