// The month's tokens and cost in the top bar (GET /api/usage), refreshed after every answer;
// for a team admin, the team's usage against its monthly budget too.
import { getBudget, getUsage } from "../lib/api.js";
import { html, useEffect, useState } from "../lib/html.js";

export const formatCount = (n) =>
  n >= 1e6 ? `${(n / 1e6).toFixed(n >= 1e7 ? 0 : 1)}M`
    : n >= 1e4 ? `${(n / 1e3).toFixed(0)}k`
      : n >= 1e3 ? `${(n / 1e3).toFixed(1)}k` : `${n}`;

const formatCost = (usd) => `$${usd < 0.01 ? usd.toFixed(4) : usd.toFixed(2)}`;

const ADMINS = new Set(["admin", "owner"]);

export function UsageMeter({ me, tick }) {
  const [month, setMonth] = useState(null);
  const [budget, setBudget] = useState(null);
  const role = me?.teams?.find((t) => t.id === me.team_id)?.role;
  const admin = Boolean(me && !me.guest && ADMINS.has(role));

  useEffect(() => {
    if (!me) return undefined;
    let alive = true;
    getUsage()
      .then((body) => alive && setMonth(body.month))
      .catch(() => alive && setMonth(null)); // the meter is a nicety: no error banner
    if (admin) {
      getBudget(me.team_id)
        .then((body) => alive && setBudget(body))
        .catch(() => alive && setBudget(null));
    } else {
      setBudget(null);
    }
    return () => { alive = false; };
  }, [me?.id, me?.team_id, admin, tick]);

  if (!month) return null;
  const tokens = (month.input_tokens || 0) + (month.output_tokens || 0);
  const title = `This month (since ${month.start}): ${tokens.toLocaleString()} tokens in `
    + `${month.requests} requests, ${formatCost(month.cost_usd || 0)}`;
  return html`
    <div class="usage-meter small" data-testid="usage-meter" title=${title}>
      <span data-testid="month-usage">${formatCount(tokens)} tokens · ${formatCost(month.cost_usd || 0)}
        <span class="muted"> this month</span></span>
      ${budget && budget.monthly_tokens != null && html`
        <span class="usage-budget" data-testid="team-budget"
          title=${`Team ${budget.tier} budget: ${budget.used_tokens.toLocaleString()} of `
            + `${budget.monthly_tokens.toLocaleString()} tokens; resets ${budget.resets_at}`}>
          <span class="muted">Team</span> ${formatCount(budget.used_tokens)} / ${formatCount(budget.monthly_tokens)}
          <meter min="0" max=${budget.monthly_tokens} value=${budget.used_tokens}
            high=${budget.monthly_tokens * 0.8} optimum="0"></meter>
        </span>`}
    </div>`;
}
