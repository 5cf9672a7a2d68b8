// The operator view: the service's requests, errors, p95s, SLOs and cost per day and per team
// (GET /api/admin/overview). The page is public; the figures are for operators only, asked
// with the token the main page keeps (sign in there first).
import { getAdminOverview } from "../lib/api.js";
import { html, useEffect, useState } from "../lib/html.js";
import { loadTokens } from "../lib/session.js";
import { BarChart, LineChart, RankChart } from "./charts.js";

const WINDOWS = [7, 30, 90];

const usd = (v) => `$${v < 0.01 && v > 0 ? v.toFixed(4) : v.toFixed(2)}`;
const count = (v) => Math.round(v).toLocaleString();
const seconds = (v) => (v === null || v === undefined ? "–" : `${v < 10 ? v.toFixed(2) : v.toFixed(1)} s`);
const percent = (v) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(v < 0.1 ? 2 : 1)} %`);
const shortDay = (day) => day.slice(5);

function Card({ label, value, testid }) {
  return html`<div class="admin-card" data-testid=${testid}>
    <div class="label">${label}</div><div class="value">${value}</div></div>`;
}

function Refused({ status, detail }) {
  const signedOut = status === 401;
  return html`<div class="admin-refused" data-testid="admin-refused" data-status=${status}>
    <strong>${signedOut ? "Sign in first." : "This page is for the service's operators."}</strong>
    <p>${detail}</p>
    <p><a href="/">Back to Fragments</a>${signedOut ? " (sign in there, then come back)" : ""}</p>
  </div>`;
}

function Live({ live }) {
  if (!live) {
    return html`<p class="note" data-testid="admin-no-live">This process has no metrics yet
      (they count from its start); the figures below come from the stored usage.</p>`;
  }
  return html`
    <div class="admin-cards" data-testid="admin-live">
      <${Card} label="HTTP requests" value=${count(live.http_requests)} />
      <${Card} label="HTTP errors (5xx)" value=${`${count(live.http_errors)} · ${percent(live.http_error_ratio)}`} />
      <${Card} label="HTTP p95" value=${seconds(live.http_p95_seconds)} />
      <${Card} label="Model requests" value=${count(live.llm_requests)} />
      <${Card} label="Model errors" value=${`${count(live.llm_errors)} · ${percent(live.llm_error_ratio)}`} />
      <${Card} label="Answer p95" value=${seconds(live.answer_p95_seconds)} />
      <${Card} label="First token p95" value=${seconds(live.first_token_p95_seconds)} />
      <${Card} label="Sandbox runs" value=${`${count(live.sandbox_runs)} · ${percent(live.sandbox_error_ratio)} errors`} />
      <${Card} label="Sandbox create p95" value=${seconds(live.sandbox_create_p95_seconds)} />
      <${Card} label="Sandbox run p95" value=${seconds(live.sandbox_run_p95_seconds)} />
    </div>
    <table data-testid="admin-slos">
      <thead><tr><th>Objective</th><th class="num">Target</th><th class="num">Measured</th><th>Status</th></tr></thead>
      <tbody>${live.slos.map((slo) => html`<tr data-testid="slo-row" data-slo=${slo.name}>
        <td>${slo.objective}</td><td class="num">${percent(slo.target)}</td>
        <td class="num">${percent(slo.value)}</td>
        <td class=${slo.met === null ? "" : slo.met ? "slo-met" : "slo-missed"}>
          ${slo.met === null ? "no data" : slo.met ? "met" : "missed"}</td></tr>`)}</tbody>
    </table>`;
}

function Overview({ data }) {
  const days = data.daily;
  const t = data.totals;
  return html`
    <section>
      <h2>Last ${data.days} days (since ${data.since}, UTC)</h2>
      <div class="admin-cards" data-testid="admin-totals">
        <${Card} label="Model calls" value=${count(t.llm_calls)} testid="total-llm-calls" />
        <${Card} label="Tokens" value=${count(t.tokens)} />
        <${Card} label="Platform cost" value=${usd(t.cost_usd)} testid="total-cost" />
        <${Card} label="Own-key cost (not charged)" value=${usd(t.own_key_cost_usd)} />
        <${Card} label="Sandbox runs" value=${count(t.sandbox_runs)} testid="total-sandbox-runs" />
        <${Card} label="Sandbox time p95" value=${seconds(t.sandbox_p95_seconds)} />
        <${Card} label="Teams" value=${count(t.teams)} />
        <${Card} label="People" value=${count(t.users)} />
      </div>
    </section>
    <section>
      <h2>Service since start</h2>
      <${Live} live=${data.live} />
    </section>
    <section class="admin-charts">
      <${BarChart} title="Platform cost per day" testid="chart-cost-per-day" format=${usd}
        items=${days.map((d) => ({ label: shortDay(d.day), value: d.cost_usd }))} />
      <${RankChart} title="Platform cost per team" testid="chart-cost-per-team" format=${usd}
        items=${data.teams.map((team) => ({ label: team.name || team.team_id, value: team.cost_usd }))} />
      <${BarChart} title="Model calls per day" testid="chart-calls-per-day" format=${count}
        items=${days.map((d) => ({ label: shortDay(d.day), value: d.llm_calls }))} />
      <${BarChart} title="Sandbox runs per day" testid="chart-runs-per-day" format=${count}
        items=${days.map((d) => ({ label: shortDay(d.day), value: d.sandbox_runs }))} />
      <${LineChart} title="Sandbox time p95 per day" testid="chart-sandbox-p95" format=${seconds}
        items=${days.map((d) => ({ label: shortDay(d.day), value: d.sandbox_p95_seconds }))} />
      <${RankChart} title="Platform cost per model" testid="chart-cost-per-model" format=${usd}
        items=${data.models.map((m) => ({ label: m.model, value: m.cost_usd }))} />
    </section>
    <section>
      <h2>Teams</h2>
      <table data-testid="admin-teams">
        <thead><tr><th>Team</th><th>Tier</th><th class="num">Model calls</th><th class="num">Tokens</th>
          <th class="num">Cost</th><th class="num">Own-key cost</th><th class="num">Sandbox runs</th>
          <th class="num">Sandbox time</th></tr></thead>
        <tbody>${data.teams.map((team) => html`<tr data-testid="team-row" data-team=${team.team_id}>
          <td title=${team.team_id}>${team.name || team.team_id}</td><td>${team.tier}</td>
          <td class="num">${count(team.llm_calls)}</td><td class="num">${count(team.tokens)}</td>
          <td class="num">${usd(team.cost_usd)}</td><td class="num">${usd(team.own_key_cost_usd)}</td>
          <td class="num">${count(team.sandbox_runs)}</td><td class="num">${seconds(team.sandbox_seconds)}</td>
        </tr>`)}</tbody>
      </table>
    </section>`;
}

export function AdminPage() {
  const [days, setDays] = useState(30);
  const [state, setState] = useState({ loading: true });

  useEffect(() => {
    let alive = true;
    if (!loadTokens()?.access_token) {
      setState({ refused: { status: 401, detail: "The operator view needs an operator's account." } });
      return undefined;
    }
    setState((s) => ({ ...s, loading: true }));
    getAdminOverview(days)
      .then((data) => alive && setState({ data }))
      .catch((error) => {
        if (!alive) return;
        if (error.status === 401 || error.status === 403) {
          setState({ refused: { status: error.status, detail: error.detail } });
        } else setState({ error: error.detail || String(error) });
      });
    return () => { alive = false; };
  }, [days]);

  return html`
    <main class="admin" data-testid="admin-page">
      <header class="admin-head">
        <h1>Fragments · Operator view</h1>
        ${state.data && html`<label>Window
          <select data-testid="admin-days" value=${days}
            onChange=${(e) => setDays(Number(e.currentTarget.value))}>
            ${WINDOWS.map((n) => html`<option value=${n}>${n} days</option>`)}
          </select></label>`}
        <a href="/">Back to Fragments</a>
      </header>
      ${state.refused && html`<${Refused} ...${state.refused} />`}
      ${state.error && html`<div class="error-banner" data-testid="admin-error">${state.error}</div>`}
      ${state.loading && !state.data && html`<p class="note">Loading…</p>`}
      ${state.data && html`<${Overview} data=${state.data} />`}
    </main>`;
}
