// A container's page: its logs, followed, and a shell in it (exec with a terminal).
import { api, forgetToken, notice, openTerminal, whyRefused } from "/assets/console/common.js";

forgetToken();
const name = decodeURIComponent(window.location.pathname.replace(/^\/container\//, ""));
document.getElementById("name").textContent = name;
document.title = `cabin: ${name}`;
const enc = encodeURIComponent(name);

function setStatus(id, text, state) {
  const el = document.getElementById(id);
  el.textContent = text;
  el.className = `status ${state || ""}`;
  document.body.dataset[id.replace("-status", "")] = state;
}

const open = {};

function connect(kind, input) {
  if (open[kind]) open[kind].close();
  const el = document.getElementById(kind);
  el.replaceChildren();
  open[kind] = openTerminal(el, `/ws/container/${enc}/${kind}`, {
    input,
    convertEol: !input,
    onStatus: async (text, state) => {
      if (state === "failed") text = await whyRefused(`/ws/container/${enc}/${kind}`);
      setStatus(`${kind}-status`, text, state);
    },
  });
  const { term } = open[kind];
  if (input) term.focus();
  window[`cabin_${kind}`] = term;
}

async function loadState() {
  try {
    const s = await api("GET", "/api/state");
    const c = s.containers.find((x) => x.name === name);
    const el = document.getElementById("state");
    el.textContent = c ? c.state : "not found";
    el.className = `state ${c ? c.state : ""}`;
  } catch (e) {
    notice(e.message);
  }
}

document.getElementById("shell-again").onclick = () => connect("shell", true);
loadState();
setInterval(loadState, 5000);
connect("logs", false);
connect("shell", true);
