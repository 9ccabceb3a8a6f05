// The embeddable counter: fetch this same page every minute and swap in its fresh figures.
// Without JavaScript the counter still shows the figures as of its loading.
(function () {
  "use strict";
  var main = document.querySelector("[data-refresh]");
  if (!main || !window.fetch || !window.DOMParser) return;
  var url = main.getAttribute("data-refresh");
  setInterval(function () {
    fetch(url, { credentials: "omit" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("[data-refresh]");
        if (fresh) main.innerHTML = fresh.innerHTML;
      })
      .catch(function () { /* offline for a moment: keep the last figures */ });
  }, 60000);
})();
