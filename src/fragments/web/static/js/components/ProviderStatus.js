// A quiet banner while the chosen model's provider is degraded or down, from the shared
// health checks (GET /api/status: on load, then every 60 s). Answers may then come from
// another provider; the banner only says why they might be slower or different.
import { getStatus } from "../lib/api.js";
import { html, useEffect, useState } from "../lib/html.js";

const POLL_MS = 60_000;

export function ProviderBanner({ providerId, providerName }) {
  const [providers, setProviders] = useState([]);

  useEffect(() => {
    let alive = true;
    const load = () => getStatus()
      .then((body) => alive && setProviders(body.providers || []))
      .catch(() => alive && setProviders([])); // a nicety: no error banner when it fails
    load();
    const timer = setInterval(load, POLL_MS);
    return () => {
      alive = false;
      clearInterval(timer);
    };
  }, []);

  const health = providers.find((p) => p.provider === providerId);
  if (!health || health.status === "up") return null;
  const name = providerName || providerId;
  const text = health.status === "down"
    ? `${name} is not answering right now; replies may come from another model.`
    : `${name} is slow or limited right now; replies may take longer.`;
  return html`
    <div class="banner banner-quiet small" role="status" data-testid="provider-banner"
      data-status=${health.status}>
      <span class="banner-text">${text}</span>
    </div>`;
}
