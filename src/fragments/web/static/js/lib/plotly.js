// Plotly is big (1.5 MB), so it loads only when a notebook shows a Plotly figure. It is a
// classic script that sets window.Plotly; a <script src> from 'self' passes the CSP.

let loading = null;

export function loadPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!loading) {
    loading = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = new URL("../../vendor/plotly-cartesian.js", import.meta.url).href;
      script.async = true;
      script.onload = () =>
        window.Plotly ? resolve(window.Plotly) : reject(new Error("Plotly did not load."));
      script.onerror = () => {
        loading = null;
        reject(new Error("Plotly could not be loaded."));
      };
      document.head.appendChild(script);
    });
  }
  return loading;
}

/** A figure spec as plotly's `application/vnd.plotly.v1+json` output carries it. */
export const isPlotlyFigure = (value) =>
  Boolean(value && typeof value === "object" && Array.isArray(value.data));
