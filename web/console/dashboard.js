// The dashboard: VMs and containers, redrawn from /api/state every two seconds, with
// start, stop and suspend buttons.
import { api, bytes, forgetToken, notice } from "/assets/console/common.js";

forgetToken();

function cell(text, cls) {
  const td = document.createElement("td");
  if (text instanceof Node) td.append(text); else td.textContent = text ?? "";
  if (cls) td.className = cls;
  return td;
}

function link(href, text) {
  const a = document.createElement("a");
  a.href = href;
  a.textContent = text;
  return a;
}

function badge(state) {
  const s = document.createElement("span");
  s.className = `state ${state}`;
  s.textContent = state;
  return s;
}

const busy = new Set();

function button(label, kind, name, action, storage) {
  const b = document.createElement("button");
  b.textContent = label;
  b.dataset.action = action;
  const key = `${kind}/${name}`;
  b.disabled = busy.has(key);
  b.onclick = async () => {
    busy.add(key);
    b.disabled = true;
    try {
      const query = storage ? `?storage=${encodeURIComponent(storage)}` : "";
      await api("POST", `/api/${kind}/${encodeURIComponent(name)}/${action}${query}`);
    } catch (e) {
      notice(`${label} ${name}: ${e.message}`);
    } finally {
      busy.delete(key);
      refresh();
    }
  };
  return b;
}

function diskCell(d) {
  const wrap = document.createElement("span");
  if (!d || !d.total) return wrap;
  const bar = document.createElement("span");
  bar.className = "bar";
  const fill = document.createElement("span");
  fill.style.width = `${Math.min(100, (100 * d.allocated) / d.total).toFixed(1)}%`;
  bar.append(fill);
  wrap.append(bar, `${bytes(d.allocated)} / ${bytes(d.total)}`);
  return wrap;
}

function row(cells) {
  const tr = document.createElement("tr");
  tr.append(...cells);
  return tr;
}

function empty(cols, text) {
  const td = cell(text, "empty");
  td.colSpan = cols;
  return row([td]);
}

async function refresh() {
  let state;
  try {
    state = await api("GET", "/api/state");
  } catch (e) {
    document.getElementById("updated").textContent = `not updated: ${e.message}`;
    return;
  }
  const vms = document.querySelector("#vms tbody");
  vms.replaceChildren(...(state.vms.length ? state.vms.map((v) => {
    const running = v.status === "running";
    const suspended = v.status === "suspended";
    const actions = cell(button(running ? "Stop" : suspended ? "Resume" : "Start", "vms", v.name, running ? "stop" : "start", v.locationName));
    // A running VM can be suspended (its memory saved; Resume goes on from there), a
    // suspended one stopped (its saved state discarded).
    if (running) actions.append(" ", button("Suspend", "vms", v.name, "suspend", v.locationName));
    if (suspended) actions.append(" ", button("Stop", "vms", v.name, "stop", v.locationName));
    const name = cell(link(`/vm/${encodeURIComponent(v.name)}?storage=${encodeURIComponent(v.locationName)}`, v.name));
    name.dataset.vm = v.name;
    const status = cell(badge(v.status));
    if (v.startError) status.append(" ", Object.assign(document.createElement("span"), { className: "error", textContent: v.startError }));
    return row([name, status, cell(v.ipAddress || ""), cell(v.cpuCount), cell(bytes(v.memorySize)),
      cell(diskCell(v.diskSize)), cell(v.locationName), actions]);
  }) : [empty(8, "No VMs. Make one with cabin vm create, or pull one with cabin vm pull.")]));
  const cs = document.querySelector("#containers tbody");
  cs.replaceChildren(...(state.containers.length ? state.containers.map((c) => {
    const running = c.state === "running";
    const label = c.state === "exited" ? `exited (${c.exit_code})` : c.state;
    const name = cell(link(`/container/${encodeURIComponent(c.name)}`, c.name));
    name.dataset.container = c.name;
    const b = badge(c.state);
    b.textContent = label;
    return row([name, cell(c.image), cell(b), cell(c.ports.join(", ")), cell(c.id),
      cell(button(running ? "Stop" : "Start", "containers", c.name, running ? "stop" : "start"))]);
  }) : [empty(6, "No containers. Run one with cabin run or docker run.")]));
  const transfers = document.querySelector("#transfers tbody");
  transfers.replaceChildren(...state.transfers.map((t) => {
    const progress = document.createElement("span");
    if (t.error) {
      progress.className = "error";
      progress.textContent = `failed: ${t.error}`;
    } else {
      const bar = document.createElement("span");
      bar.className = "bar";
      const fill = document.createElement("span");
      fill.style.width = `${t.percent.toFixed(1)}%`;
      bar.append(fill);
      progress.append(bar, `${t.percent.toFixed(0)}%`);
    }
    const name = cell(t.vm);
    name.dataset.transfer = t.vm;
    return row([name, cell(t.direction), cell(t.image), cell(progress)]);
  }));
  document.getElementById("transfers-section").hidden = state.transfers.length === 0;
  const problems = document.getElementById("problems");
  problems.replaceChildren(...state.problems.map((p) => Object.assign(document.createElement("li"), { textContent: p })));
  document.getElementById("problems-section").hidden = state.problems.length === 0;
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  document.body.dataset.ready = "1";
}

refresh();
setInterval(refresh, 2000);
