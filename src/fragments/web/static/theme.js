// Runs before the first paint (a classic script, allowed by script-src 'self') so a dark-theme
// user never sees a white flash. The app keeps the attribute up to date afterwards.
(function () {
  var theme = "";
  try {
    theme = JSON.parse(localStorage.getItem("fragments.prefs.v1") || "{}").theme || "";
  } catch (e) {
    theme = "";
  }
  if (!theme) {
    theme = window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }
  document.documentElement.dataset.theme = theme;
})();
