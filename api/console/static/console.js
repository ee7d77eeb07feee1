// The gateway's console: one page, its views drawn from the API's own endpoints with the
// key the person signed in with. The key lives in this tab's sessionStorage only, and
// goes to this origin only, in the Authorization header of fetch (never a URL, never a
// cookie). What a key may not read, the API refuses, and the view says so: the walls
// are the API's. Nothing here is written into the page as HTML: every text is a text
// node, so nothing an answer holds (a job's id, a model's name) can run as script.
"use strict";

(() => {
  const KEY = "llm-console-key";
  const LIVE_EVERY_MS = 5000;
  const DAY_MS = 86400000;
  const MINUTE_MS = 60000;
  const number = new Intl.NumberFormat("en");

  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

  // ---- The API, asked with the signed-in key.

  class Refused extends Error {
    constructor(status, message, body = null) {
      super(message);
      this.status = status;
      this.body = body; // the answer's JSON, when it was JSON
    }
  }

  function storedKey() {
    return sessionStorage.getItem(KEY);
  }

  async function api(path, options = {}, key = storedKey()) {
    const headers = new Headers(options.headers || {});
    if (key) headers.set("Authorization", `Bearer ${key}`);
    let response;
    try {
      response = await fetch(path, { ...options, headers, cache: "no-store", credentials: "omit" });
    } catch (error) {
      throw new Refused(0, `the gateway did not answer (${error.message})`);
    }
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      let body = null;
      try {
        body = await response.json();
        const said = body.detail ?? body.error?.message;
        if (typeof said === "string") message = said;
        else if (Array.isArray(said)) message = said.map((each) => each.msg).join("; ");
      } catch (_) {
        // not JSON: the status says it
      }
      throw new Refused(response.status, message, body);
    }
    return response;
  }

  const json = async (path, options, key) => (await api(path, options, key)).json();

  // ---- Building the page: elements with text, never HTML.

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attributes = {}, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value !== null && value !== undefined) node.setAttribute(name, String(value));
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function say(message, isError = false) {
    const status = $("#status");
    status.textContent = message || "";
    status.classList.toggle("error", Boolean(message) && isError);
  }

  function refusedBox(error) {
    const why = error instanceof Refused && error.status ? `The gateway answered ${error.status}: ` : "";
    return el("p", { class: "refused", role: "alert", "data-refused": error.status ?? "" }, why + error.message);
  }

  const utc = (seconds) => (seconds ? new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "—");

  const counted = (n, what) => `${number.format(n)} ${what}${n === 1 ? "" : "s"}`;

  function duration(seconds) {
    if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
    if (seconds === 0) return "0 s";
    if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
    if (seconds < 120) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
    return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  }

  // ---- Who is signed in.

  // GET /tenants: {tenant, admin, keyed, data}, and the key's role: "tenant" (a project's
  // or a keys file tenant's key), "admin" (a keys file admin's) or "organization" (an
  // admin API key: /v1/organization/*, /scaling and /metrics, and no tenant's endpoint).
  let who = null;

  async function whoIs(key) {
    try {
      const tenants = await json("/tenants", {}, key);
      return { ...tenants, role: tenants.admin ? "admin" : "tenant" };
    } catch (refused) {
      // An admin API key calls no tenant's endpoint (403): it is one if the organization's answer it.
      if (refused.status !== 403) throw refused;
      try {
        await json("/v1/organization/projects?limit=1", {}, key);
      } catch (_) {
        throw refused;
      }
      return { tenant: "organization", admin: false, keyed: true, data: [], role: "organization" };
    }
  }

  function showWho() {
    const signedIn = who !== null;
    $("#who").hidden = !signedIn;
    $("#nav").hidden = !signedIn;
    $("#who-name").textContent = signedIn ? `${who.tenant}` : "";
    const organization = signedIn && who.role === "organization";
    $("#who-admin").hidden = !(signedIn && (who.admin || organization));
    $("#who-admin").textContent = organization ? "admin API key" : "admin";
    for (const node of $$("[data-admin]")) node.hidden = !(signedIn && who.admin);
    // The views a key is offered: those whose endpoints answer it.
    for (const node of $$("[data-for]")) node.hidden = !(signedIn && node.dataset.for.split(" ").includes(who.role));
  }

  function firstView() {
    const offered = $$("#nav li").find((item) => !item.hidden);
    return offered ? $("a", offered).dataset.view : "overview";
  }

  async function signIn(event) {
    event.preventDefault();
    const input = $("#signin-key");
    const key = input.value.trim();
    const error = $("#signin-error");
    error.textContent = "";
    try {
      who = await whoIs(key);
    } catch (refused) {
      error.textContent = `Not signed in: ${refused.message}`;
      input.focus();
      return;
    }
    sessionStorage.setItem(KEY, key);
    input.value = "";
    showWho();
    if (!location.hash || location.hash === "#signin") location.hash = `#${firstView()}`;
    else route();
  }

  function signOut() {
    sessionStorage.removeItem(KEY);
    who = null;
    forgetProject();
    showWho();
    say("");
    location.hash = "";
    route();
  }

  // ---- Views, by the address's fragment (#overview, #jobs?id=…).

  const VIEWS = {
    overview: showOverview,
    live: showLive,
    jobs: showJobs,
    batches: showBatches,
    "dead-letters": showDeadLetters,
    projects: showProjects,
  };
  let current = null;
  let told = ""; // what the next view says first (an action that moved to it)

  function route() {
    stopLive();
    hideTip();
    const signedIn = storedKey() !== null && who !== null;
    const [name, query] = location.hash.slice(1).split("?");
    const view = !signedIn ? "signin" : VIEWS[name] ? name : firstView();
    for (const section of $$(".view")) section.hidden = section.id !== `view-${view}`;
    for (const link of $$("#nav a")) {
      if (link.dataset.view === view) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    const changed = current !== null && current !== view;
    current = view;
    document.title = `${view === "signin" ? "Sign in" : $(`#view-${view} h2`).textContent} · LLM gateway console`;
    if (changed) $(`#view-${view} h2`).focus();
    if (view === "signin") {
      $("#signin-key").focus();
      return;
    }
    // A key's value is shown once, in the view it was made in; leaving it forgets it.
    if (view !== "projects") forgetProject();
    say(told);
    told = "";
    VIEWS[view](new URLSearchParams(query || ""));
  }

  // ---- Overview: requests, tokens and errors over time (GET /usage), latency (GET /metrics).

  const FIGURES = {
    requests: { of: (row) => row.jobs + row.failed, label: "requests" },
    tokens: { of: (row) => row.total_tokens, label: "tokens" },
    errors: { of: (row) => row.failed, label: "errors" },
  };
  let overviewAsked = 0;

  function isoDay(ms) {
    return new Date(ms).toISOString().slice(0, 10);
  }

  function bucketsBetween(start, end, per) {
    // The buckets from the API's own start to its end (its clock, not this browser's).
    const step = per === "minute" ? MINUTE_MS : DAY_MS;
    const first = Date.parse(per === "minute" ? start : `${start}T00:00Z`);
    const last = Date.parse(per === "minute" ? end : `${end}T00:00Z`);
    const buckets = [];
    for (let at = first; at <= last; at += step) {
      buckets.push(per === "minute" ? new Date(at).toISOString().slice(0, 16) + "Z" : isoDay(at));
    }
    return buckets;
  }

  async function showOverview() {
    const asked = ++overviewAsked;
    const per = $("#overview-period").value;
    const group = $("#overview-group").value;
    const view = $("#view-overview");
    view.dataset.state = "loading";
    const query = per === "minute" ? "per=minute" : `start=${isoDay(Date.now() - 29 * DAY_MS)}`;
    let usage;
    try {
      usage = await json(`/usage?${query}`);
    } catch (error) {
      if (asked !== overviewAsked) return;
      for (const plot of $$(".plot", view)) plot.replaceChildren(refusedBox(error));
      view.dataset.state = "refused";
      return;
    }
    if (asked !== overviewAsked) return; // a later choice was made meanwhile
    const buckets = bucketsBetween(usage.start, usage.end, per);
    const series = [...new Set(usage.data.map((row) => row[group]))].sort();
    $("#overview-range").textContent =
      (per === "minute"
        ? `Each UTC minute from ${bucketLabel(usage.start, per)} to ${usage.end.slice(11, 16)} UTC`
        : `Each UTC day from ${usage.start} to ${usage.end}`) +
      (who.admin ? ", every tenant's." : `, tenant ${who.tenant}'s.`);
    drawCharts(usage, buckets, series, per, group);
    drawTotals(usage.data, series, group);
    drawn = { buckets, series, per, usage, group };
    view.dataset.state = "ready";
    view.dataset.per = per;
    view.dataset.group = group;
    view.dataset.start = usage.start;
    view.dataset.end = usage.end;
    if (who.admin) showLatency();
  }

  let drawn = null; // what the charts show, to draw again at a new width

  function drawCharts(usage, buckets, series, per, group) {
    const bucketOf = (row) => (per === "minute" ? row.minute : row.date);
    for (const [name, figure] of Object.entries(FIGURES)) {
      const values = new Map(buckets.map((bucket) => [bucket, new Map()]));
      for (const row of usage.data) {
        const cell = values.get(bucketOf(row));
        if (!cell) continue;
        cell.set(row[group], (cell.get(row[group]) || 0) + figure.of(row));
      }
      drawChart($(`.chart[data-chart="${name}"]`), name, buckets, series, values, per, figure.label);
    }
  }

  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => {
      if (current === "overview" && drawn) drawCharts(drawn.usage, drawn.buckets, drawn.series, drawn.per, drawn.group);
    }, 150);
  });

  function scale(value) {
    // The axis: a round step (1, 2 or 5 times a power of ten) and at most 5 of them.
    if (value <= 0) return { most: 1, step: 1 };
    const rough = value / 5;
    const power = 10 ** Math.floor(Math.log10(rough));
    const step = [1, 2, 5, 10].map((m) => m * power).find((m) => m >= rough && m >= 1) || 1;
    return { most: Math.ceil(value / step) * step, step };
  }

  function bucketLabel(bucket, per) {
    return per === "minute" ? `${bucket.slice(0, 10)} ${bucket.slice(11, 16)} UTC` : bucket;
  }

  function drawChart(figure, name, buckets, series, values, per, label) {
    const plot = $(".plot", figure);
    const totals = buckets.map((bucket) => [...values.get(bucket).values()].reduce((a, b) => a + b, 0));
    const total = totals.reduce((a, b) => a + b, 0);
    const caption = $("figcaption", figure);
    caption.replaceChildren(caption.firstChild.textContent.split(" ")[0], el("span", { class: "total", "data-total": total }, number.format(total)));
    // Drawn at the plot's own width (and again when the window's changes): its text stays
    // the page's size rather than scaled with the picture.
    const W = Math.max(260, Math.round(plot.clientWidth || 600)), H = 200, left = 48, right = 8, top = 10, bottom = 24;
    const innerW = W - left - right, innerH = H - top - bottom;
    const { most, step } = scale(Math.max(...totals, 0));
    const band = innerW / buckets.length;
    const y = (v) => top + innerH - (v / most) * innerH;
    const chart = svg("svg", {
      viewBox: `0 0 ${W} ${H}`, role: "img", tabindex: 0, "data-chart": name,
      "aria-label": `${label}: ${number.format(total)} in all, over ${buckets.length} ${per}s. Arrow keys read each ${per}.`,
    });
    const grid = svg("g", { class: "grid axis" });
    for (let v = 0; v <= most; v += step) {
      grid.append(
        svg("line", { x1: left, x2: W - right, y1: y(v), y2: y(v) }),
        svg("text", { x: left - 6, y: y(v) + 3, "text-anchor": "end" }, number.format(v)),
      );
    }
    chart.append(grid);
    const ticks = svg("g", { class: "axis" });
    const every = Math.max(1, Math.ceil(buckets.length / Math.max(2, Math.floor(innerW / 64))));
    buckets.forEach((bucket, i) => {
      if ((buckets.length - 1 - i) % every !== 0) return;
      const text = per === "minute" ? bucket.slice(11, 16) : bucket.slice(5);
      const last = i === buckets.length - 1; // kept inside the picture
      ticks.append(svg("text", { x: last ? W - right : left + band * (i + 0.5), y: H - 6,
        "text-anchor": last ? "end" : "middle" }, text));
    });
    chart.append(ticks);
    const bars = svg("g", { class: "bars" });
    buckets.forEach((bucket, i) => {
      const x = left + band * i;
      const group = svg("g", { class: "bucket", "data-bucket": bucket, "data-total": totals[i] });
      group.append(svg("rect", { class: "bucket-hit", x, y: top, width: band, height: innerH }));
      let base = 0;
      series.forEach((name, n) => {
        const value = values.get(bucket).get(name) || 0;
        if (!value) return;
        const width = Math.max(1, band * 0.78);
        group.append(svg("rect", {
          class: `s${(n % 10) + 1}`, x: x + (band - width) / 2, y: y(base + value),
          width, height: Math.max(0.5, y(base) - y(base + value)), "data-series": name, "data-value": value,
        }));
        base += value;
      });
      bars.append(group);
    });
    chart.append(bars);
    const spoken = el("p", { class: "sr", "aria-live": "polite" });
    let active = -1;
    const activate = (i, from) => {
      if (active >= 0) bars.children[active].classList.remove("active");
      active = Math.max(0, Math.min(buckets.length - 1, i));
      const group = bars.children[active];
      group.classList.add("active");
      const bucket = buckets[active];
      const lines = series
        .map((name) => [name, values.get(bucket).get(name) || 0])
        .filter(([, value]) => value)
        .map(([name, value]) => `${name}: ${number.format(value)}`);
      const text = [bucketLabel(bucket, per), `${number.format(totals[active])} ${label}`, ...lines];
      const box = from || group.firstChild.getBoundingClientRect();
      showTip(text, box);
      spoken.textContent = text.join(", ");
    };
    chart.addEventListener("pointermove", (event) => {
      const box = chart.getBoundingClientRect();
      const at = ((event.clientX - box.left) / box.width) * W;
      if (at < left || at > W - right) return hideTip();
      activate(Math.floor((at - left) / band), { left: event.clientX, right: event.clientX, top: event.clientY, bottom: event.clientY });
    });
    chart.addEventListener("pointerleave", hideTip);
    chart.addEventListener("blur", hideTip);
    chart.addEventListener("focus", () => activate(active >= 0 ? active : buckets.length - 1));
    chart.addEventListener("keydown", (event) => {
      const moves = { ArrowLeft: active - 1, ArrowRight: active + 1, Home: 0, End: buckets.length - 1 };
      if (!(event.key in moves)) return;
      event.preventDefault();
      activate(moves[event.key]);
    });
    const legend = el("ul", { class: "legend" },
      series.map((name, n) => el("li", {}, el("i", { class: `s${(n % 10) + 1}`, "aria-hidden": "true" }), name)));
    plot.replaceChildren(total ? chart : el("p", { class: "empty" }, `No ${label} in this period.`), total ? legend : "", spoken);
  }

  function showTip(lines, box) {
    const tip = $("#tip");
    tip.replaceChildren(el("b", {}, lines[0]), ...lines.slice(1).map((line) => el("div", {}, line)));
    tip.hidden = false;
    const width = tip.offsetWidth, height = tip.offsetHeight;
    let x = box.right + 12;
    if (x + width > window.innerWidth - 4) x = Math.max(4, box.left - width - 12);
    let y = Math.max(4, Math.min(box.top - height / 2, window.innerHeight - height - 4));
    tip.style.left = `${x}px`;
    tip.style.top = `${y}px`;
  }

  function hideTip() {
    $("#tip").hidden = true;
  }

  function drawTotals(rows, series, group) {
    $("#totals-series").textContent = group === "model" ? "Model" : "Tenant";
    const sums = new Map(series.map((name) => [name, { requests: 0, tokens: 0, prompt: 0, completion: 0, errors: 0 }]));
    const all = { requests: 0, tokens: 0, prompt: 0, completion: 0, errors: 0 };
    for (const row of rows) {
      for (const sum of [sums.get(row[group]), all]) {
        sum.requests += row.jobs + row.failed;
        sum.tokens += row.total_tokens;
        sum.prompt += row.prompt_tokens;
        sum.completion += row.completion_tokens;
        sum.errors += row.failed;
      }
    }
    const line = (name, sum, head) =>
      el("tr", { "data-series": head ? "" : name },
        el("th", { scope: "row" }, name),
        ["requests", "tokens", "prompt", "completion", "errors"].map((figure) =>
          el("td", { class: "num", "data-figure": figure, "data-value": sum[figure] }, number.format(sum[figure]))));
    const body = $("#overview-totals tbody");
    body.replaceChildren(...series.map((name) => line(name, sums.get(name))), line("All", all, true));
    if (!series.length) body.replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "empty" }, "Nothing in this period.")));
  }

  // Latency: the histograms of GET /metrics (this API process's), per model.

  function parseMetrics(text) {
    const samples = [];
    for (const line of text.split("\n")) {
      if (!line || line.startsWith("#")) continue;
      const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
      if (!match) continue;
      const labels = {};
      for (const [, name, value] of (match[2] || "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
        labels[name] = value.replace(/\\n/g, "\n").replace(/\\"/g, '"').replace(/\\\\/g, "\\");
      }
      samples.push({ name: match[1], labels, value: Number(match[3]) });
    }
    return samples;
  }

  function histograms(samples, metric) {
    // Cumulative buckets per model, every tenant's summed: Map(model -> Map(le -> count)).
    const byModel = new Map();
    for (const sample of samples) {
      if (sample.name !== `${metric}_bucket`) continue;
      const model = sample.labels.model;
      const buckets = byModel.get(model) || new Map();
      const le = sample.labels.le === "+Inf" ? Infinity : Number(sample.labels.le);
      buckets.set(le, (buckets.get(le) || 0) + sample.value);
      byModel.set(model, buckets);
    }
    return byModel;
  }

  function quantile(q, buckets) {
    // As Prometheus's histogram_quantile: linear within the bucket the rank falls in.
    const sorted = [...buckets.entries()].sort((a, b) => a[0] - b[0]);
    const count = sorted.length ? sorted[sorted.length - 1][1] : 0;
    if (!count) return null;
    const rank = q * count;
    let previousLe = 0, previousCount = 0;
    for (let i = 0; i < sorted.length; i++) {
      const [le, cumulative] = sorted[i];
      if (cumulative >= rank) {
        if (le === Infinity) return i > 0 ? sorted[i - 1][0] : null;
        if (i === 0 && le <= 0) return le;
        const inBucket = cumulative - previousCount;
        return previousLe + (le - previousLe) * ((rank - previousCount) / inBucket);
      }
      previousLe = le;
      previousCount = cumulative;
    }
    return null;
  }

  async function showLatency() {
    const section = $("#latency");
    section.hidden = false;
    section.dataset.state = "loading";
    const body = $("#latency-table tbody");
    let samples;
    try {
      samples = parseMetrics(await (await api("/metrics")).text());
    } catch (error) {
      body.replaceChildren(el("tr", {}, el("td", { colspan: 8 }, refusedBox(error))));
      section.dataset.state = "refused";
      return;
    }
    const jobs = histograms(samples, "llm_api_job_seconds");
    const queued = histograms(samples, "llm_api_queue_seconds");
    const models = [...new Set([...jobs.keys(), ...queued.keys()])].sort();
    const cell = (value) =>
      el("td", { class: "num", "data-value": value === null ? "" : value.toFixed(6) }, duration(value));
    body.replaceChildren(...models.map((model) => {
      const job = jobs.get(model) || new Map(), wait = queued.get(model) || new Map();
      const count = job.get(Infinity) || 0;
      return el("tr", { "data-model": model },
        el("th", { scope: "row" }, model),
        el("td", { class: "num", "data-value": count }, number.format(count)),
        [0.5, 0.95, 0.99].map((q) => cell(quantile(q, job))),
        [0.5, 0.95, 0.99].map((q) => cell(quantile(q, wait))));
    }));
    if (!models.length) body.replaceChildren(el("tr", {}, el("td", { colspan: 8, class: "empty" }, "No job answered by this API process yet.")));
    section.dataset.state = "ready";
  }

  // ---- Live: each model's queue, workers and servers (GET /scaling), every few seconds.

  let liveTimer = null;
  let livePaused = false;

  function stopLive() {
    clearTimeout(liveTimer);
    liveTimer = null;
  }

  function showLive() {
    refreshLive();
  }

  async function refreshLive() {
    stopLive();
    const box = $("#live-models");
    try {
      const scaling = await json("/scaling?bands=true");
      if (current !== "live") return;
      const models = Object.entries(scaling.models).sort(([a], [b]) => a.localeCompare(b));
      box.replaceChildren(...models.map(([name, signals]) => liveCard(name, signals)));
      if (!models.length) box.replaceChildren(el("p", { class: "empty" }, "No model configured."));
      $("#live-updated").textContent = `Updated ${utc(scaling.at)}`;
      $("#view-live").dataset.at = scaling.at;
    } catch (error) {
      if (current !== "live") return;
      box.replaceChildren(refusedBox(error));
      $("#view-live").dataset.at = "";
      if (error.status === 401 || error.status === 403) return; // asking again changes nothing
    }
    if (current === "live" && !livePaused && !document.hidden) liveTimer = setTimeout(refreshLive, LIVE_EVERY_MS);
  }

  function liveCard(name, s) {
    const figure = (label, field, value, shown = number.format(value)) =>
      [el("dt", {}, label), el("dd", { "data-field": field, "data-value": value }, shown)];
    const busy = s.slots ? Math.round((s.busy_slots / s.slots) * 100) : 0;
    const card = el("article", { class: "card", "data-model": name, "aria-label": `model ${name}` },
      el("h3", {}, name),
      el("p", { class: "note queue" }, "queue ", el("span", { class: "mono", "data-field": "queue" }, s.queue)),
      el("div", { class: "meter", role: "img", "aria-label": `${s.busy_slots} of ${s.slots} slots busy` },
        el("span", { class: "bar" })),
      el("dl", {},
        figure("Slots busy", "busy_slots", s.busy_slots, `${number.format(s.busy_slots)} of ${number.format(s.slots)}`),
        figure("Jobs waiting", "waiting", s.waiting),
        figure("Oldest waiting", "oldest_waiting_seconds", s.oldest_waiting_seconds, duration(s.oldest_waiting_seconds)),
        figure("Running", "running", s.running),
        figure("Workers", "workers", s.workers),
        figure("Demand (slots)", "demand", s.demand),
        s.waiting_for_server !== undefined ? figure("Waiting for a server", "waiting_for_server", s.waiting_for_server) : []));
    // Width set through the CSSOM: the page allows no inline style attribute.
    $(".bar", card).style.width = `${busy}%`;
    if (s.waiting_by_band) card.append(bandsOf(s.waiting_by_band, "Waiting, by priority", "band"));
    if (s.servers) {
      card.append(el("h4", {}, "Servers"), el("ul", { class: "servers" }, s.servers.map((server) =>
        el("li", { "data-server": server.name },
          el("span", { class: "name" }, server.name),
          el("span", { class: `state state-${server.state}`, "data-field": "state" }, server.state),
          el("span", { class: "num", "data-field": "busy", "data-value": server.busy },
            `${number.format(server.busy)} of ${number.format(server.slots)} busy`),
          el("span", { class: "detail" },
            `${counted(server.jobs, "job")}, ${counted(server.failures_in_a_row, "failure")} in a row` +
            (server.last_failure ? `; last: ${server.last_failure}` : ""))))));
      if (s.waiting_for_server_by_band) {
        card.append(bandsOf(s.waiting_for_server_by_band, "In line for a server's slot, by priority", "server-band"));
      }
    }
    return card;
  }

  const BANDS = [["high", "High (7–9)"], ["normal", "Normal (4–6)"], ["low", "Low (0–3)"]];

  function bandsOf(waiting, title, attribute) {
    // The jobs waiting in each priority band: a bar of the three, and their figures.
    const total = BANDS.reduce((sum, [band]) => sum + (waiting[band] || 0), 0);
    const bar = el("div", { class: "bands", role: "img",
      "aria-label": BANDS.map(([band, label]) => `${label}: ${waiting[band] || 0}`).join(", ") },
      BANDS.map(([band]) => el("span", { class: `band band-${band}` })));
    BANDS.forEach(([band], n) => {
      bar.children[n].style.width = `${total ? ((waiting[band] || 0) / total) * 100 : 0}%`;
    });
    return el("section", { class: "by-band", "aria-label": title },
      el("h4", {}, title),
      bar,
      el("dl", {}, BANDS.flatMap(([band, label]) =>
        [el("dt", {}, label), el("dd", { [`data-${attribute}`]: band, "data-value": waiting[band] || 0 }, number.format(waiting[band] || 0))])));
  }

  // ---- Jobs: one looked up by id (GET /jobs/{id}).

  function showJobs(params) {
    if (params.get("id")) {
      $("#job-id").value = params.get("id");
      $("#job-tenant").value = params.get("tenant") || "";
      lookUpJob();
    }
  }

  async function lookUpJob(event) {
    if (event) event.preventDefault();
    const id = $("#job-id").value.trim();
    const tenant = who.admin ? $("#job-tenant").value.trim() : "";
    const box = $("#job-result");
    if (!id) return;
    box.replaceChildren(el("p", { class: "note" }, "Asking…"));
    try {
      const query = tenant ? `?tenant=${encodeURIComponent(tenant)}` : "";
      const job = await json(`/jobs/${encodeURIComponent(id)}${query}`);
      box.replaceChildren(jobDetails(job));
    } catch (error) {
      box.replaceChildren(refusedBox(error));
    }
  }

  function jobDetails(job) {
    const result = job.result || {};
    const timing = result.timing || {};
    const usage = result.usage || {};
    const field = (label, name, value, raw) =>
      value === undefined || value === null || value === ""
        ? []
        : [el("dt", {}, label), el("dd", { "data-field": name, "data-value": raw }, value)];
    const seconds = (value) => (typeof value === "number" ? duration(value) : undefined);
    // Its times as the status gives them (ISO 8601); the time between two of them.
    const at = (iso) => (iso ? Date.parse(iso.replace(/(\.\d{3})\d+/, "$1")) / 1000 : null);
    const between = (from, to) => (at(from) !== null && at(to) !== null ? Math.max(0, at(to) - at(from)) : undefined);
    const span = (label, name, from, to) => {
      const value = between(from, to);
      return field(label, name, seconds(value), value === undefined ? undefined : value.toFixed(3));
    };
    return el("dl", { class: "job", "data-job": job.job_id },
      field("Job", "job_id", job.job_id),
      field("Tenant", "tenant", job.tenant),
      field("Status", "status", job.status),
      field("Place in queue", "queue_position", job.queue_position),
      field("Accepted", "accepted_at", job.accepted_at),
      field("Started", "started_at", job.started_at),
      field("Finished", "finished_at", job.finished_at),
      span("Waited in queue", "queued_seconds", job.accepted_at, job.started_at),
      span("Ran", "run_seconds", job.started_at, job.finished_at),
      span("In all", "total_seconds", job.accepted_at, job.finished_at),
      // The model server's part, when the result still holds its run's timing.
      field("Model server", "model_seconds", seconds(timing.model_seconds)),
      field("First token", "first_token_seconds", seconds(timing.first_token_seconds)),
      field("Model (its server's name)", "model", result.model),
      field("Served by model", "served_model", result.served_model),
      field("Server", "server", result.server),
      field("Trace", "trace_id", result.trace_id),
      field("Finish", "finish_reason", result.finish_reason),
      field("Tokens", "usage", usage.total_tokens !== undefined
        ? `${number.format(usage.prompt_tokens || 0)} prompt + ${number.format(usage.completion_tokens || 0)} completion`
        : undefined),
      field("Error", "error", job.error ? `${job.error.type || "error"} (${job.error.status_code}): ${job.error.message}` : undefined));
  }

  // ---- Batches (GET /v1/batches), with their files.

  let batchesAfter = null;

  async function showBatches() {
    batchesAfter = null;
    $("#batches-table tbody").replaceChildren();
    await moreBatches();
  }

  async function moreBatches() {
    const body = $("#batches-table tbody");
    const more = $("#batches-more");
    try {
      const page = await json(`/v1/batches?limit=20${batchesAfter ? `&after=${encodeURIComponent(batchesAfter)}` : ""}`);
      body.append(...page.data.map(batchRow));
      if (!body.children.length) body.append(el("tr", {}, el("td", { colspan: 5, class: "empty" }, "No batch yet.")));
      batchesAfter = page.data.length ? page.data[page.data.length - 1].id : batchesAfter;
      more.hidden = !page.has_more;
      $("#view-batches").dataset.state = "ready";
    } catch (error) {
      body.replaceChildren(el("tr", {}, el("td", { colspan: 5 }, refusedBox(error))));
      more.hidden = true;
    }
  }

  function batchRow(batch) {
    const counts = batch.request_counts || { total: 0, completed: 0, failed: 0 };
    const done = counts.completed + counts.failed;
    const files = [
      ["output", batch.output_file_id, "Output"],
      ["errors", batch.error_file_id, "Errors"],
    ].filter(([, id]) => id);
    return el("tr", { "data-batch": batch.id },
      el("th", { scope: "row" }, el("span", { class: "mono" }, batch.id), el("div", { class: "note" }, batch.endpoint)),
      el("td", { "data-field": "status" }, batch.status),
      el("td", {},
        el("progress", { max: counts.total || 1, value: done, "aria-label": `${batch.id}: ${done} of ${counts.total} lines done` }),
        el("div", { class: "progress-text", "data-field": "counts", "data-completed": counts.completed,
          "data-failed": counts.failed, "data-total": counts.total },
          `${number.format(counts.completed)} done, ${number.format(counts.failed)} failed, of ${number.format(counts.total)}`)),
      el("td", {}, utc(batch.created_at)),
      el("td", {}, files.length
        ? el("div", { class: "files" }, files.map(([kind, id, label]) => el("button", {
          type: "button", class: "quiet", "data-file": kind, "data-file-id": id,
          "aria-label": `Download the ${label.toLowerCase()} file of ${batch.id}`,
          onclick: () => download(id, `${batch.id}-${kind}.jsonl`),
        }, label)))
        : "—"));
  }

  async function download(fileId, name) {
    // The file is asked for with the key (a plain link could not carry it), then saved
    // from memory: a blob: address of this page's own.
    try {
      const blob = await (await api(`/v1/files/${encodeURIComponent(fileId)}/content`)).blob();
      const address = URL.createObjectURL(blob);
      const link = el("a", { href: address, download: name });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(address), 10000);
    } catch (error) {
      say(`The file could not be downloaded: ${error.message}`, true);
    }
  }

  // ---- Dead letters (GET /dead_letters), replayed after a confirmation.

  async function showDeadLetters() {
    const body = $("#dead-table tbody");
    const view = $("#view-dead-letters");
    view.dataset.state = "loading";
    try {
      const dead = await json("/dead_letters?limit=200");
      body.replaceChildren(...dead.data.map(deadRow));
      if (!dead.data.length) body.append(el("tr", {}, el("td", { colspan: 6, class: "empty" }, "No dead letter.")));
      view.dataset.state = "ready";
    } catch (error) {
      body.replaceChildren(el("tr", {}, el("td", { colspan: 6 }, refusedBox(error))));
      view.dataset.state = "refused";
    }
  }

  function deadRow(entry) {
    const jobId = entry.job_id || "";
    const own = entry.tenant && jobId.startsWith(`${entry.tenant}~`) ? jobId.slice(entry.tenant.length + 1) : jobId;
    const lookUp = `#jobs?id=${encodeURIComponent(own)}${entry.tenant ? `&tenant=${encodeURIComponent(entry.tenant)}` : ""}`;
    return el("tr", { "data-job": jobId },
      el("th", { scope: "row" }, jobId ? el("a", { href: lookUp, class: "mono" }, jobId) : "—"),
      el("td", {}, entry.tenant || "—"),
      el("td", {}, entry.task || "—"),
      el("td", { class: "why" }, entry.reason || "—"),
      el("td", {}, entry.dead_at || "—"),
      el("td", {}, jobId
        ? el("button", { type: "button", class: "danger", "aria-label": `Replay ${jobId}`, onclick: () => replay(jobId) }, "Replay")
        : ""));
  }

  function confirmed(title, text, action) {
    const dialog = $("#confirm");
    $("#confirm-title").textContent = title;
    $("#confirm-text").textContent = text;
    $("#confirm-ok").textContent = action;
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.returnValue = "";
      dialog.showModal();
      $("#confirm-cancel").focus(); // the safe choice first
    });
  }

  async function replay(jobId) {
    const ok = await confirmed(
      "Replay this job?",
      `Job ${jobId} runs again under the same id: its failure is forgotten and it goes back to its queue.`,
      "Replay",
    );
    if (!ok) return;
    try {
      const done = await json("/dead_letters/replay", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ job_ids: [jobId] }),
      });
      const skipped = Object.entries(done.skipped).map(([id, why]) => `${id} skipped: ${why}`);
      say([done.replayed.length ? `Replayed ${done.replayed.join(", ")}.` : "",
        ...skipped, done.missing.length ? `Not among the dead letters any more: ${done.missing.join(", ")}.` : ""]
        .filter(Boolean).join(" "));
    } catch (error) {
      say(`Not replayed: ${error.message}`, true);
    }
    showDeadLetters();
  }

  // ---- Projects and keys.
  //
  // Where they come from, by the key: an admin API key's, the control plane's
  // (/v1/organization/projects, with the keys file's tenants among them, read-only), with
  // its actions; any other key's, the keys file's tenants it may see (GET /tenants),
  // read-only. The view shows the actions its source has, and nothing else.

  const ORG = "/v1/organization/projects";
  const MADE_HERE = /^proj_[0-9a-f]{24}$/; // a project made here; any other id is a keys file tenant's
  const limit = (value) => (value === null || value === undefined ? "—" : number.format(value));

  const keysFileProjects = {
    describe: "The tenants of the keys file (API_KEYS_FILE) this key may see, read-only: they are changed in the file.",
    head: ["Project", "Admin", "Weight", "Keys", "Requests/min", "Tokens/min", "Tokens/day", "Jobs in flight", "Top priority"],
    numeric: (n) => n >= 2,
    async list() {
      const answer = await json("/tenants");
      return answer.data.map((tenant) => ({ id: tenant.name, name: tenant.name, admin: tenant.admin,
        weight: tenant.weight, keys: tenant.keys, quotas: tenant.quotas }));
    },
    row: (p) => [
      el("th", { scope: "row" }, p.name),
      el("td", {}, p.admin ? "yes" : "no"),
      el("td", { class: "num" }, number.format(p.weight)),
      el("td", { class: "num", "data-field": "keys" }, number.format(p.keys)),
      ...["requests_per_minute", "tokens_per_minute", "tokens_per_day", "jobs_in_flight", "max_priority"]
        .map((name) => el("td", { class: "num" }, limit(p.quotas[name]))),
    ],
    actions: false,
  };

  async function everyPage(path, first = null) {
    // Every item of a list, page after page (from `first`, the first page, when it was read already).
    const found = [];
    let after = null;
    if (first) {
      found.push(...first.data);
      if (!first.has_more || !first.data.length) return found;
      after = first.data[first.data.length - 1].id;
    }
    for (;;) {
      const page = await json(`${path}${path.includes("?") ? "&" : "?"}limit=100${after ? `&after=${encodeURIComponent(after)}` : ""}`);
      found.push(...page.data);
      if (!page.has_more || !page.data.length) return found;
      after = page.data[page.data.length - 1].id;
    }
  }

  const controlPlaneProjects = {
    describe: "The projects of the control plane (/v1/organization/projects): those made here, with their keys;"
      + " the keys file's tenants among them, read-only (they are changed in the file).",
    head: ["Project", "Id", "From", "Keys", ""],
    numeric: (n) => n === 3,
    async list() {
      const projects = await everyPage(ORG);
      const keys = await Promise.all(projects.map((p) =>
        MADE_HERE.test(p.id) ? json(`${ORG}/${p.id}/api_keys?limit=100`) : null));
      return projects.map((p, n) => ({ ...p, readOnly: !MADE_HERE.test(p.id),
        keys: keys[n] ? `${keys[n].data.length}${keys[n].has_more ? "+" : ""}` : "—" }));
    },
    row: (p) => [
      el("th", { scope: "row" }, p.name),
      el("td", { class: "mono" }, p.id),
      el("td", {}, p.readOnly ? "the keys file (read-only)" : `made ${utc(p.created_at)}`),
      el("td", { class: "num", "data-field": "keys" }, p.keys),
      el("td", {}, p.readOnly ? "" : el("a", { href: `#projects?id=${encodeURIComponent(p.id)}`, "data-manage": p.id,
        "aria-label": `Keys and limits of ${p.name}` }, "Keys and limits")),
    ],
    actions: true,
  };

  const projectsSource = () => (who.role === "organization" ? controlPlaneProjects : keysFileProjects);

  async function showProjects(params) {
    const source = projectsSource();
    const view = $("#view-projects");
    const body = $("#projects-table tbody");
    view.dataset.state = "loading";
    $("#projects-source").textContent = source.describe;
    $("#project-new").hidden = !source.actions;
    $("#projects-table thead").replaceChildren(el("tr", {}, source.head.map((name, n) =>
      el("th", { scope: "col", class: source.numeric(n) ? "num" : null }, name || el("span", { class: "sr" }, "Actions")))));
    const chosen = source.actions ? params.get("id") : null;
    let projects;
    try {
      projects = await source.list();
    } catch (error) {
      body.replaceChildren(el("tr", {}, el("td", { colspan: source.head.length }, refusedBox(error))));
      $("#project").hidden = true;
      view.dataset.state = "refused";
      return;
    }
    body.replaceChildren(...projects.map((p) => el("tr", { "data-project": p.id }, source.row(p))));
    if (!projects.length) body.append(el("tr", {}, el("td", { colspan: source.head.length, class: "empty" }, "No project yet.")));
    const project = projects.find((p) => p.id === chosen && !p.readOnly);
    $("#project").hidden = !project;
    if (project) {
      const opened = !shownProject || shownProject.id !== project.id;
      await showProject(project);
      if (opened) $("#project-title").focus(); // the keyboard goes on from the project's heading
    }
    view.dataset.state = "ready";
  }

  async function createProject(event) {
    event.preventDefault();
    const name = $("#project-name").value.trim();
    if (!name) return;
    try {
      const made = await json(ORG, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name }) });
      $("#project-name").value = "";
      told = `Project ${made.name} made (${made.id}).`;
      location.hash = `#projects?id=${encodeURIComponent(made.id)}`;
    } catch (error) {
      say(`No project made: ${error.message}`, true);
    }
  }

  let shownProject = null; // the project whose keys and limits are shown

  async function showProject(project) {
    if (!shownProject || shownProject.id !== project.id) hideSecret();
    shownProject = project;
    $("#project-title").textContent = project.name;
    $("#project-id").textContent = project.id;
    const at = `${ORG}/${project.id}`;
    await Promise.all([showKeys(at), showRateLimits(at), showModelPermissions(at), showSpendLimit(at)]);
  }

  function forgetProject() {
    shownProject = null;
    hideSecret();
  }

  function hideSecret() {
    $("#key-made").hidden = true;
    $("#key-value").textContent = "";
    $("#key-copied").textContent = "";
  }

  async function showKeys(at) {
    const body = $("#keys-table tbody");
    try {
      const keys = await everyPage(`${at}/api_keys`);
      body.replaceChildren(...keys.map((key) => el("tr", { "data-key": key.id },
        el("th", { scope: "row" }, key.name || key.id),
        el("td", { class: "mono" }, key.redacted_value),
        el("td", {}, key.owner?.service_account?.name || "—"),
        el("td", {}, utc(key.created_at)),
        el("td", {}, key.expires_at ? utc(key.expires_at) : "never"),
        el("td", {}, el("button", { type: "button", class: "danger", "aria-label": `Revoke ${key.redacted_value}`,
          onclick: () => revokeKey(key) }, "Revoke")))));
      if (!keys.length) body.append(el("tr", {}, el("td", { colspan: 6, class: "empty" }, "No key.")));
    } catch (error) {
      body.replaceChildren(el("tr", {}, el("td", { colspan: 6 }, refusedBox(error))));
    }
  }

  async function createKey(event) {
    event.preventDefault();
    const name = $("#key-name").value.trim();
    const project = shownProject;
    if (!name || !project) return;
    try {
      // A service account and its key: the key's value is in this answer, and never again.
      const made = await json(`${ORG}/${project.id}/service_accounts`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name }),
      });
      $("#key-name").value = "";
      $("#key-value").textContent = made.api_key.value;
      $("#key-made").hidden = false;
      $("#key-made").dataset.key = made.api_key.id;
      $("#key-copy").focus();
      say(`Key made for ${made.name}: copy it now, it is not shown again.`);
      await showKeys(`${ORG}/${project.id}`);
    } catch (error) {
      say(`No key made: ${error.message}`, true);
    }
  }

  async function copyKey() {
    const value = $("#key-value").textContent;
    try {
      await navigator.clipboard.writeText(value);
    } catch (_) {
      // No clipboard for this page (an address that is not localhost nor https): the key
      // is selected, for the person to copy.
      const range = document.createRange();
      range.selectNodeContents($("#key-value"));
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      $("#key-copied").textContent = "Selected: copy it with your keyboard.";
      return;
    }
    $("#key-copied").textContent = "Copied.";
  }

  async function revokeKey(key) {
    const project = shownProject;
    const ok = await confirmed("Revoke this key?",
      `The key ${key.redacted_value} (${key.name || key.id}) of project ${project.name} is refused from now on, by every API process.`,
      "Revoke");
    if (!ok) return;
    try {
      await json(`${ORG}/${project.id}/api_keys/${encodeURIComponent(key.id)}`, { method: "DELETE" });
      say(`Key ${key.redacted_value} revoked.`);
      if ($("#key-made").dataset.key === key.id) hideSecret();
    } catch (error) {
      say(`Not revoked: ${error.message}`, true);
    }
    await showKeys(`${ORG}/${project.id}`);
  }

  async function archiveProject() {
    const project = shownProject;
    const ok = await confirmed("Archive this project?",
      `Project ${project.name} (${project.id}) is archived: every key of it is refused from now on, and nothing more is made in it.`,
      "Archive");
    if (!ok) return;
    try {
      await json(`${ORG}/${project.id}/archive`, { method: "POST" });
      told = `Project ${project.name} archived.`;
      location.hash = "#projects";
    } catch (error) {
      say(`Not archived: ${error.message}`, true);
    }
  }

  // Rate limits, model access and the monthly budget: each form shown once its endpoint
  // is served (a gateway that has no such route answers 404 without OpenAI's error body).

  async function served(path) {
    try {
      return { served: true, value: await json(path) };
    } catch (error) {
      if (error.status === 404 && !(error.body && error.body.error)) return { served: false, value: null };
      if (error.status === 404) return { served: true, value: null }; // served; nothing set
      throw error;
    }
  }

  const RATE_FIELDS = ["max_requests_per_1_minute", "max_tokens_per_1_minute", "max_requests_per_1_day", "batch_1_day_max_input_tokens"];

  async function showRateLimits(at) {
    const form = $("#rate-limits");
    const body = $("#rate-limits-table tbody");
    try {
      const { served: here, value } = await served(`${at}/rate_limits?limit=100`);
      form.hidden = !here;
      if (!here) return;
      const limits = await everyPage(`${at}/rate_limits`, value);
      body.replaceChildren(...limits.map((rl) => el("tr", { "data-rate-limit": rl.id, "data-model": rl.model },
        el("th", { scope: "row" }, rl.model),
        RATE_FIELDS.map((name) => el("td", { class: "num" }, el("input", {
          type: "number", min: 0, step: 1, name, "data-was": rl[name] ?? "", value: rl[name] ?? "",
          "aria-label": `${rl.model}: ${name.replaceAll("_", " ")}`, class: "num",
        }))))));
      if (!limits.length) body.append(el("tr", {}, el("td", { colspan: 5, class: "empty" }, "No model to limit.")));
    } catch (error) {
      form.hidden = false;
      body.replaceChildren(el("tr", {}, el("td", { colspan: 5 }, refusedBox(error))));
    }
  }

  async function saveRateLimits(event) {
    event.preventDefault();
    const at = `${ORG}/${shownProject.id}`;
    const changed = [];
    for (const row of $$("#rate-limits-table tr[data-rate-limit]")) {
      const body = {};
      for (const input of $$("input", row)) {
        if (input.value !== "" && input.value !== input.dataset.was) body[input.name] = Number(input.value);
      }
      if (Object.keys(body).length) changed.push([row.dataset.rateLimit, row.dataset.model, body]);
    }
    try {
      for (const [id, , body] of changed) {
        await json(`${at}/rate_limits/${encodeURIComponent(id)}`, {
          method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
        });
      }
      say(changed.length ? `Rate limits saved: ${changed.map(([, model]) => model).join(", ")}.` : "No rate limit changed.");
    } catch (error) {
      say(`Rate limits not saved: ${error.message}`, true);
    }
    await showRateLimits(at);
  }

  async function showModelPermissions(at) {
    const form = $("#model-permissions");
    try {
      const { served: here, value } = await served(`${at}/model_permissions`);
      form.hidden = !here;
      if (!here) return;
      const mode = value ? value.mode : "deny_list";
      for (const radio of $$("input[name=mode]", form)) radio.checked = radio.value === mode;
      $("#model-ids").value = value ? value.model_ids.join(", ") : "";
      form.dataset.set = value ? "true" : "false";
    } catch (error) {
      form.hidden = true;
      say(`Model access not read: ${error.message}`, true);
    }
  }

  async function saveModelPermissions(event) {
    event.preventDefault();
    const at = `${ORG}/${shownProject.id}`;
    const mode = ($("#model-permissions input[name=mode]:checked") || {}).value || "deny_list";
    const ids = $("#model-ids").value.split(",").map((id) => id.trim()).filter(Boolean);
    try {
      await json(`${at}/model_permissions`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ mode, model_ids: ids }),
      });
      say("Model access saved.");
    } catch (error) {
      say(`Model access not saved: ${error.message}`, true);
    }
    await showModelPermissions(at);
  }

  async function clearModelPermissions() {
    const at = `${ORG}/${shownProject.id}`;
    try {
      await json(`${at}/model_permissions`, { method: "DELETE" });
      say("Every model allowed.");
    } catch (error) {
      say(`Model access not changed: ${error.message}`, true);
    }
    await showModelPermissions(at);
  }

  async function showSpendLimit(at) {
    const form = $("#spend-limit");
    try {
      const { served: here, value } = await served(`${at}/spend_limit`);
      form.hidden = !here;
      if (!here) return;
      // OpenAI's shape: threshold_amount in cents, USD, per month.
      $("#spend-amount").value = value ? (value.threshold_amount / 100).toFixed(2) : "";
      $("#spend-state").textContent = value
        ? `${value.enforcement?.status === "enforcing" ? "reached: its requests are refused" : "not reached"} this month`
        : "none set";
      form.dataset.set = value ? "true" : "false";
    } catch (error) {
      form.hidden = true;
      say(`Budget not read: ${error.message}`, true);
    }
  }

  async function saveSpendLimit(event) {
    event.preventDefault();
    const at = `${ORG}/${shownProject.id}`;
    const cents = Math.round(Number($("#spend-amount").value) * 100);
    try {
      await json(`${at}/spend_limit`, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ currency: "USD", interval: "month", threshold_amount: cents }),
      });
      say(`Budget saved: ${number.format(cents / 100)} USD a month.`);
    } catch (error) {
      say(`Budget not saved: ${error.message}`, true);
    }
    await showSpendLimit(at);
  }

  async function clearSpendLimit() {
    const at = `${ORG}/${shownProject.id}`;
    try {
      await json(`${at}/spend_limit`, { method: "DELETE" });
      say("No budget.");
    } catch (error) {
      say(`Budget not changed: ${error.message}`, true);
    }
    await showSpendLimit(at);
  }

  // ---- Start.

  async function start() {
    $("#signin-form").addEventListener("submit", signIn);
    $("#sign-out").addEventListener("click", signOut);
    $("#overview-period").addEventListener("change", () => showOverview());
    $("#overview-group").addEventListener("change", () => showOverview());
    $("#overview-refresh").addEventListener("click", () => showOverview());
    $("#job-form").addEventListener("submit", lookUpJob);
    $("#batches-refresh").addEventListener("click", showBatches);
    $("#batches-more").addEventListener("click", moreBatches);
    $("#dead-refresh").addEventListener("click", showDeadLetters);
    $("#project-new").addEventListener("submit", createProject);
    $("#key-new").addEventListener("submit", createKey);
    $("#key-copy").addEventListener("click", copyKey);
    $("#project-archive").addEventListener("click", archiveProject);
    $("#rate-limits").addEventListener("submit", saveRateLimits);
    $("#model-permissions").addEventListener("submit", saveModelPermissions);
    $("#model-permissions-clear").addEventListener("click", clearModelPermissions);
    $("#spend-limit").addEventListener("submit", saveSpendLimit);
    $("#spend-clear").addEventListener("click", clearSpendLimit);
    $("#live-pause").addEventListener("click", (event) => {
      livePaused = !livePaused;
      event.currentTarget.setAttribute("aria-pressed", String(livePaused));
      event.currentTarget.textContent = livePaused ? "Resume" : "Pause";
      if (!livePaused && current === "live") refreshLive();
      else stopLive();
    });
    document.addEventListener("visibilitychange", () => {
      if (current === "live" && !document.hidden && !livePaused) refreshLive();
    });
    window.addEventListener("hashchange", route);
    window.addEventListener("scroll", hideTip, { passive: true });
    if (storedKey() !== null) {
      try {
        who = await whoIs(storedKey());
      } catch (error) {
        sessionStorage.removeItem(KEY);
        $("#signin-error").textContent = `Signed out: ${error.message}`;
      }
    }
    showWho();
    route();
    document.body.dataset.ready = "true";
  }

  start();
})();
